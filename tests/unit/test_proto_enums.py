"""Enum names come from the generated descriptors: one derivation, the same words in every layer."""

from __future__ import annotations

import re
from typing import get_args

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from mnemo.agent.v1 import agent_pb2, batch_pb2, end_user_pb2, identity_pb2, run_pb2
from mnemo.common.v1 import turn_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo.memory.v1 import block_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo.rest import agents, batches, blocks, identities, runs
from mnemo.tools.v1 import tool_pb2
from mnemo_core.proto_enums import EnumNames


def test_a_values_name_is_its_suffix_after_the_enum_prefix_in_lower_case() -> None:
    stops = EnumNames(turn_pb2.StopReason)

    assert stops.names == (
        "end_turn",
        "max_steps",
        "error",
        "cancelled",
        "requires_approval",
        "context_overflow",
        "tool_rule",
    )
    assert stops.name(turn_pb2.STOP_REASON_REQUIRES_APPROVAL) == "requires_approval"
    assert stops.value("tool_rule") == turn_pb2.STOP_REASON_TOOL_RULE
    assert EnumNames(llm_pb2.ChatBatchState).name(llm_pb2.CHAT_BATCH_STATE_SUCCEEDED) == "succeeded"
    assert EnumNames(history_pb2.MessageKind).value("tool_return") == history_pb2.MESSAGE_KIND_TOOL_RETURN


def test_unspecified_and_unknown_values_have_no_name_and_unknown_names_are_unspecified() -> None:
    kinds = EnumNames(tool_pb2.ToolType)

    assert kinds.name(tool_pb2.TOOL_TYPE_UNSPECIFIED) == ""
    assert kinds.name(99) == ""
    assert kinds.value("unspecified") == tool_pb2.TOOL_TYPE_UNSPECIFIED
    assert kinds.value("") == tool_pb2.TOOL_TYPE_UNSPECIFIED
    assert kinds.value("MEMORY") == tool_pb2.TOOL_TYPE_UNSPECIFIED
    assert "unspecified" not in kinds.names


@pytest.mark.parametrize(
    "enum",
    [
        turn_pb2.StopReason,
        agent_pb2.AgentType,
        agent_pb2.ToolRuleType,
        run_pb2.RunStatus,
        batch_pb2.BatchMode,
        identity_pb2.Role,
        llm_pb2.ChatRole,
        llm_pb2.ToolChoice,
        history_pb2.MessageKind,
        tool_pb2.ToolType,
    ],
)
def test_every_name_maps_back_to_its_value(enum: EnumTypeWrapper) -> None:
    names = EnumNames(enum)

    assert len(names.names) == len(enum.values()) - 1
    for name in names.names:
        assert names.name(names.value(name)) == name


def test_an_enum_whose_values_do_not_carry_its_prefix_is_refused() -> None:
    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name="bad.proto", package="bad", syntax="proto3")
    enum = file.enum_type.add(name="Colour")
    enum.value.add(name="COLOUR_UNSPECIFIED", number=0)
    enum.value.add(name="RED", number=1)
    pool.Add(file)

    with pytest.raises(ValueError, match=re.escape("RED of bad.Colour does not start with COLOUR_")):
        EnumNames(EnumTypeWrapper(pool.FindEnumTypeByName("bad.Colour")))


@pytest.mark.parametrize(
    ("annotation", "enum"),
    [
        (agents.ToolRule.model_fields["type"].annotation, agent_pb2.ToolRuleType),
        (agents.AgentCreate.model_fields["agent_type"].annotation, agent_pb2.AgentType),
        (agents.MemoryToolSet, agent_pb2.MemoryToolSet),
        (identities.IdentityType, end_user_pb2.EndUserType),
        (runs.Run.model_fields["status"].annotation, run_pb2.RunStatus),
        (batches.BatchMode, batch_pb2.BatchMode),
        (blocks.BlockVersion.model_fields["operation"].annotation, block_pb2.BlockOperation),
        (blocks.BlockVersion.model_fields["editor_type"].annotation, block_pb2.BlockEditorType),
        (blocks.BlockVersion.model_fields["state"].annotation, block_pb2.BlockEditState),
    ],
)
def test_the_rest_vocabulary_is_the_contracts(annotation: object, enum: EnumTypeWrapper) -> None:
    literal = next((arg for arg in get_args(annotation) if get_args(arg)), annotation)  # X | None: X
    assert set(get_args(literal)) == set(EnumNames(enum).names)
