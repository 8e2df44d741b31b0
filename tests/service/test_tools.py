"""ToolService over real gRPC on a real SQLite file: the registry of built-in tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mnemo.tools.v1 import tool_pb2, tool_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import InvalidArgument, NotFound, Unauthenticated
from mnemo_tools.app import build as build_tools
from mnemo_tools.builtin import BUILTIN_TOOLS
from mnemo_tools.settings import ToolsSettings
from tests.service.conftest import clean_environment, new_actor, serving

if TYPE_CHECKING:
    from mnemo.tools.v1.tool_pb2_grpc import ToolServiceAsyncStub as Tools

APPEND = "tool-builtin-core_memory_append"
REPLACE = "tool-builtin-core_memory_replace"
# Every built-in, by name (the listing order); more built-ins may join the memory tools.
BUILTIN_NAMES = sorted(tool.name for tool in BUILTIN_TOOLS)


def violation_fields(error: InvalidArgument) -> list[str]:
    return [violation.field for violation in error.violations]


async def test_builtin_memory_tools_are_listed_by_name_with_their_schemas(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        listed = await tools.ListTools(tool_pb2.ListToolsRequest())

    assert [t.name for t in listed.tools] == BUILTIN_NAMES
    assert [t.id for t in listed.tools] == [f"tool-builtin-{name}" for name in BUILTIN_NAMES]
    assert listed.next_page_token == ""
    by_id = {t.id: t for t in listed.tools}
    append, replace = by_id[APPEND], by_id[REPLACE]
    for tool in (append, replace):
        assert tool.tool_type == tool_pb2.TOOL_TYPE_MEMORY
        assert list(tool.tags) == ["builtin", "memory"]
        assert tool.return_char_limit == 50_000
        assert tool.description
        assert tool.create_time.seconds > 0
    assert json.loads(append.json_schema) == {
        "type": "object",
        "properties": {
            "label": {"type": "string", "description": "Label of the block to edit, e.g. 'human'."},
            "content": {"type": "string", "description": "Text to append on a new line."},
        },
        "required": ["label", "content"],
        "additionalProperties": False,
    }
    assert json.loads(replace.json_schema)["required"] == ["label", "old_content", "new_content"]


async def test_every_organization_sees_the_builtin_tools(tools: Tools) -> None:
    for actor in (new_actor(), new_actor()):
        with acting_as(actor):
            listed = await tools.ListTools(tool_pb2.ListToolsRequest())
        assert [t.name for t in listed.tools] == BUILTIN_NAMES


async def test_get_tool_returns_the_tool_with_that_id(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        tool = (await tools.GetTool(tool_pb2.GetToolRequest(tool_id=REPLACE))).tool

    assert tool.id == REPLACE
    assert tool.name == "core_memory_replace"


async def test_get_tool_with_unknown_id_is_not_found(tools: Tools, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(NotFound) as missing:
        await tools.GetTool(tool_pb2.GetToolRequest(tool_id="tool-nope"))

    assert missing.value.reason == "TOOL_NOT_FOUND"
    assert missing.value.metadata == {"tool_ids": "tool-nope"}


async def test_get_tool_without_id_is_invalid_argument(tools: Tools, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await tools.GetTool(tool_pb2.GetToolRequest())

    assert violation_fields(refused.value) == ["tool_id"]


async def test_batch_get_tools_returns_tools_in_the_order_asked(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        reversed_order = await tools.BatchGetTools(tool_pb2.BatchGetToolsRequest(tool_ids=[REPLACE, APPEND]))
        repeated = await tools.BatchGetTools(
            tool_pb2.BatchGetToolsRequest(tool_ids=[APPEND, REPLACE, APPEND])
        )
        empty = await tools.BatchGetTools(tool_pb2.BatchGetToolsRequest())

    assert [t.id for t in reversed_order.tools] == [REPLACE, APPEND]
    assert [t.id for t in repeated.tools] == [APPEND, REPLACE, APPEND]
    assert list(empty.tools) == []


async def test_batch_get_tools_with_missing_ids_is_not_found_naming_only_the_missing_ones(
    tools: Tools, actor: Actor
) -> None:
    with acting_as(actor), pytest.raises(NotFound) as missing:
        await tools.BatchGetTools(tool_pb2.BatchGetToolsRequest(tool_ids=["tool-x", APPEND, "tool-y"]))

    assert missing.value.reason == "TOOL_NOT_FOUND"
    assert missing.value.metadata == {"tool_ids": "tool-x,tool-y"}
    assert "tool-x" in missing.value.message
    assert "tool-y" in missing.value.message
    assert APPEND not in missing.value.message


async def test_batch_get_tools_with_more_than_1000_ids_is_invalid_argument(
    tools: Tools, actor: Actor
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await tools.BatchGetTools(tool_pb2.BatchGetToolsRequest(tool_ids=[APPEND] * 1001))

    assert violation_fields(refused.value) == ["tool_ids"]


@pytest.mark.parametrize(
    ("tool_type", "names"),
    [
        (tool_pb2.TOOL_TYPE_UNSPECIFIED, BUILTIN_NAMES),
        (
            tool_pb2.TOOL_TYPE_MEMORY,
            sorted(t.name for t in BUILTIN_TOOLS if t.tool_type == tool_pb2.TOOL_TYPE_MEMORY),
        ),
        (tool_pb2.TOOL_TYPE_CUSTOM, []),
        (tool_pb2.TOOL_TYPE_MCP, []),
        (
            tool_pb2.TOOL_TYPE_CONTROL,
            sorted(t.name for t in BUILTIN_TOOLS if t.tool_type == tool_pb2.TOOL_TYPE_CONTROL),
        ),
    ],
)
async def test_list_tools_filters_by_type(
    tools: Tools, actor: Actor, tool_type: tool_pb2.ToolType.ValueType, names: list[str]
) -> None:
    with acting_as(actor):
        listed = await tools.ListTools(tool_pb2.ListToolsRequest(tool_type=tool_type))

    assert [t.name for t in listed.tools] == names


async def test_list_tools_filters_by_names(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        one = await tools.ListTools(tool_pb2.ListToolsRequest(names=["core_memory_replace"]))
        with_unknown = await tools.ListTools(
            tool_pb2.ListToolsRequest(names=["core_memory_append", "no_such_tool"])
        )
        none = await tools.ListTools(tool_pb2.ListToolsRequest(names=["no_such_tool"]))
        both_filters = await tools.ListTools(
            tool_pb2.ListToolsRequest(names=["core_memory_append"], tool_type=tool_pb2.TOOL_TYPE_CUSTOM)
        )

    assert [t.name for t in one.tools] == ["core_memory_replace"]
    assert [t.name for t in with_unknown.tools] == ["core_memory_append"]
    assert list(none.tools) == []
    assert list(both_filters.tools) == []


async def test_list_tools_pages_by_name_with_page_tokens(tools: Tools, actor: Actor) -> None:
    pages: list[list[str]] = []
    token = ""
    with acting_as(actor):
        for _ in range(len(BUILTIN_NAMES) + 1):
            page = await tools.ListTools(tool_pb2.ListToolsRequest(page_size=1, page_token=token))
            pages.append([t.name for t in page.tools])
            token = page.next_page_token
            if not token:
                break

    assert pages == [[name] for name in BUILTIN_NAMES]
    assert token == ""


async def test_list_tools_with_a_garbage_page_token_is_invalid_argument(tools: Tools, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await tools.ListTools(tool_pb2.ListToolsRequest(page_token="***"))

    assert violation_fields(refused.value) == ["page_token"]


async def test_list_tools_with_a_negative_page_size_is_invalid_argument(tools: Tools, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await tools.ListTools(tool_pb2.ListToolsRequest(page_size=-3))

    assert violation_fields(refused.value) == ["page_size"]


async def test_list_tools_without_actor_is_unauthenticated(tools: Tools) -> None:
    with pytest.raises(Unauthenticated) as anonymous:
        await tools.ListTools(tool_pb2.ListToolsRequest())

    assert anonymous.value.reason == "API_KEY_MISSING"


async def test_restarting_the_tools_service_on_the_same_database_keeps_one_copy_of_each_builtin(
    tmp_path: Path,
) -> None:
    with clean_environment(tmp_path):
        settings = ToolsSettings(home=tmp_path, default_return_char_limit=1234)
    first_app = await build_tools(settings)
    await first_app.aclose()
    with clean_environment(tmp_path):
        settings = ToolsSettings(home=tmp_path, default_return_char_limit=4321)
    second_app = await build_tools(settings)

    async with serving(second_app) as served:
        with acting_as(new_actor()):
            listed = await served.stub(tool_pb2_grpc.ToolServiceStub).ListTools(tool_pb2.ListToolsRequest())

    assert [t.name for t in listed.tools] == BUILTIN_NAMES
    # Built-ins are rewritten at start, so the newest settings win.
    assert {t.return_char_limit for t in listed.tools} == {4321}
    assert (tmp_path / "data" / "tools.db").is_file()
