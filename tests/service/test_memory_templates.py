"""Block templates over real gRPC: the built-in persona and human, and an organization's own."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from google.protobuf import field_mask_pb2

from mnemo.memory.v1 import block_pb2
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from tests.service.conftest import new_actor, new_agent_id

if TYPE_CHECKING:
    from mnemo.memory.v1.block_pb2_grpc import BlockServiceAsyncStub as Blocks


async def templates_of(blocks: Blocks) -> dict[str, block_pb2.Block]:
    listed = await blocks.ListBlocks(block_pb2.ListBlocksRequest(templates=True, page_size=1000))
    return {block.template_name: block for block in listed.blocks}


async def make_template(blocks: Blocks, name: str, value: str, **fields: object) -> block_pb2.Block:
    response = await blocks.CreateBlock(
        block_pb2.CreateBlockRequest(
            block=block_pb2.Block(label=name, value=value, is_template=True, template_name=name, **fields)
        )
    )
    return response.block


async def test_every_org_sees_the_builtin_persona_and_human_templates(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor):
        templates = await templates_of(blocks)
    assert {"persona", "human"} <= set(templates)
    assert templates["persona"].is_template
    assert templates["persona"].value
    assert templates["human"].label == "human"


async def test_block_created_from_a_template_copies_it_and_is_attached(blocks: Blocks, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        persona = (await templates_of(blocks))["persona"]
        created = await blocks.CreateBlock(
            block_pb2.CreateBlockRequest(block=block_pb2.Block(), agent_id=agent_id, from_template="persona")
        )
        overridden = await blocks.CreateBlock(
            block_pb2.CreateBlockRequest(
                block=block_pb2.Block(value="I am terse."), agent_id=new_agent_id(), from_template="persona"
            )
        )
    assert created.block.label == "persona"
    assert created.block.value == persona.value
    assert created.block.limit == persona.limit
    assert not created.block.is_template
    assert created.block.template_name == "persona"
    assert list(created.block.agent_ids) == [agent_id]
    assert overridden.block.value == "I am terse."


async def test_an_org_template_shadows_the_builtin_one_for_that_org_only(blocks: Blocks) -> None:
    mine, theirs = new_actor(), new_actor()
    with acting_as(mine):
        await make_template(blocks, "persona", "I am a pirate.")
        created = await blocks.CreateBlock(
            block_pb2.CreateBlockRequest(block=block_pb2.Block(), from_template="persona")
        )
        with pytest.raises(AlreadyExists):
            await make_template(blocks, "persona", "again")
    with acting_as(theirs):
        other = await blocks.CreateBlock(
            block_pb2.CreateBlockRequest(block=block_pb2.Block(), from_template="persona")
        )
    assert created.block.value == "I am a pirate."
    assert other.block.value != "I am a pirate."


async def test_builtin_templates_cannot_be_changed_or_deleted(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor):
        persona = (await templates_of(blocks))["persona"]
        with pytest.raises(PermissionDenied):
            await blocks.UpdateBlock(
                block_pb2.UpdateBlockRequest(
                    block=block_pb2.Block(id=persona.id, value="hacked"),
                    update_mask=field_mask_pb2.FieldMask(paths=["value"]),
                )
            )
        with pytest.raises(PermissionDenied):
            await blocks.DeleteBlock(block_pb2.DeleteBlockRequest(block_id=persona.id))
        unchanged = (await blocks.GetBlock(block_pb2.GetBlockRequest(block_id=persona.id))).block
    assert unchanged.value == persona.value


async def test_templates_are_not_attachable_and_not_listed_as_blocks(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor):
        template = await make_template(blocks, "team", "Team notes.")
        with pytest.raises(FailedPrecondition):
            await blocks.AttachBlock(
                block_pb2.AttachBlockRequest(block_id=template.id, agent_id=new_agent_id())
            )
        listed = await blocks.ListBlocks(block_pb2.ListBlocksRequest(page_size=1000))
        with pytest.raises(InvalidArgument):
            await blocks.CreateBlock(
                block_pb2.CreateBlockRequest(
                    block=block_pb2.Block(label="x", is_template=True, template_name="x"),
                    agent_id=new_agent_id(),
                )
            )
    assert template.id not in [b.id for b in listed.blocks]


async def test_template_values_respect_the_limit_and_unknown_templates_are_not_found(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor):
        with pytest.raises(InvalidArgument) as too_long:
            await make_template(blocks, "big", "x" * 11, limit=10)
        await make_template(blocks, "small", "0123456789", limit=10)
        with pytest.raises(InvalidArgument):
            await blocks.CreateBlock(
                block_pb2.CreateBlockRequest(block=block_pb2.Block(value="x" * 11), from_template="small")
            )
        with pytest.raises(NotFound) as unknown:
            await blocks.CreateBlock(
                block_pb2.CreateBlockRequest(block=block_pb2.Block(), from_template="nope")
            )
    assert too_long.value.reason == "BLOCK_LIMIT_EXCEEDED"
    assert unknown.value.reason == "TEMPLATE_NOT_FOUND"
