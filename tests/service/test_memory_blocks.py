"""BlockService over real gRPC on a real SQLite file: core memory rules as callers see them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from google.protobuf import field_mask_pb2, struct_pb2

from mnemo.common.v1 import message_pb2
from mnemo.memory.v1 import block_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import (
    AlreadyExists,
    Internal,
    InvalidArgument,
    MnemoError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from tests.service.conftest import DEFAULT_BLOCK_LIMIT, new_actor, new_agent_id

if TYPE_CHECKING:
    from mnemo.memory.v1.block_pb2_grpc import BlockServiceAsyncStub as Blocks
    from mnemo.memory.v1.message_pb2_grpc import MessageServiceAsyncStub as Messages


async def create_block(
    blocks: Blocks,
    label: str = "human",
    value: str = "",
    *,
    limit: int = 0,
    agent_id: str = "",
    read_only: bool = False,
    description: str = "",
) -> block_pb2.Block:
    response = await blocks.CreateBlock(
        block_pb2.CreateBlockRequest(
            block=block_pb2.Block(
                label=label, value=value, limit=limit, read_only=read_only, description=description
            ),
            agent_id=agent_id,
        )
    )
    return response.block


async def get_block(blocks: Blocks, block_id: str) -> block_pb2.Block:
    return (await blocks.GetBlock(block_pb2.GetBlockRequest(block_id=block_id))).block


async def list_all(blocks: Blocks, *, agent_id: str = "", label: str = "") -> list[block_pb2.Block]:
    response = await blocks.ListBlocks(
        block_pb2.ListBlocksRequest(agent_id=agent_id, label=label, page_size=1000)
    )
    assert response.next_page_token == ""
    return list(response.blocks)


async def update_block(blocks: Blocks, block: block_pb2.Block, *paths: str) -> block_pb2.Block:
    response = await blocks.UpdateBlock(
        block_pb2.UpdateBlockRequest(block=block, update_mask=field_mask_pb2.FieldMask(paths=list(paths)))
    )
    return response.block


def violation_fields(error: InvalidArgument) -> list[str]:
    return [violation.field for violation in error.violations]


# --- create and get ----------------------------------------------------------------------------------


async def test_created_block_is_returned_with_server_fields_and_reads_back_identically(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    metadata = struct_pb2.Struct()
    metadata.update({"source": "test", "weight": 2})
    with acting_as(actor):
        created = (
            await blocks.CreateBlock(
                block_pb2.CreateBlockRequest(
                    block=block_pb2.Block(
                        id="block-chosen-by-client",
                        label="persona",
                        value="I am helpful.",
                        limit=50,
                        description="who I am",
                        metadata=metadata,
                        agent_ids=["agent-ignored"],
                    ),
                    agent_id=agent_id,
                )
            )
        ).block
        fetched = await get_block(blocks, created.id)

    assert created.id.startswith("block-")
    assert created.id != "block-chosen-by-client"
    assert (created.label, created.value, created.limit, created.description, created.read_only) == (
        "persona",
        "I am helpful.",
        50,
        "who I am",
        False,
    )
    assert list(created.agent_ids) == [agent_id]
    assert dict(created.metadata) == {"source": "test", "weight": 2}
    assert created.create_time.seconds > 0
    assert created.update_time == created.create_time
    assert fetched == created


async def test_block_created_without_a_limit_gets_the_server_default_limit(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor):
        block = await create_block(blocks, "notes", "")

    assert block.limit == DEFAULT_BLOCK_LIMIT
    assert list(block.agent_ids) == []


async def test_block_create_with_value_beyond_limit_is_rejected_and_nothing_is_stored(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await create_block(blocks, "human", "x" * 11, limit=10, agent_id=new_agent_id())

    assert refused.value.reason == "BLOCK_LIMIT_EXCEEDED"
    assert refused.value.metadata == {"label": "human", "length": "11", "limit": "10"}
    assert violation_fields(refused.value) == ["block.value"]
    with acting_as(actor):
        assert await list_all(blocks) == []


async def test_block_create_with_value_beyond_the_default_limit_is_rejected(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await create_block(blocks, "human", "x" * (DEFAULT_BLOCK_LIMIT + 1))

    assert refused.value.reason == "BLOCK_LIMIT_EXCEEDED"
    assert refused.value.metadata["limit"] == str(DEFAULT_BLOCK_LIMIT)


@pytest.mark.parametrize("label", ["", "has space", "a" * 101, "ünïcode", "new\nline"])
async def test_block_create_with_malformed_label_is_rejected_naming_the_label_field(
    blocks: Blocks, actor: Actor, label: str
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await create_block(blocks, label, "v")

    assert violation_fields(refused.value) == ["block.label"]


@pytest.mark.parametrize("limit", [-1, 1_000_001])
async def test_block_create_with_limit_out_of_range_is_rejected_naming_the_limit_field(
    blocks: Blocks, actor: Actor, limit: int
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await create_block(blocks, "human", "", limit=limit)

    assert violation_fields(refused.value) == ["block.limit"]


async def test_block_create_with_nul_character_in_value_is_rejected(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await create_block(blocks, "human", "a\x00b")

    assert violation_fields(refused.value) == ["block.value"]
    with acting_as(actor):
        assert await list_all(blocks) == []


async def test_get_block_with_unknown_id_is_not_found_naming_the_id(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(NotFound) as missing:
        await get_block(blocks, "block-does-not-exist")

    assert missing.value.reason == "BLOCK_NOT_FOUND"
    assert missing.value.metadata == {"block_id": "block-does-not-exist"}


async def test_get_block_without_an_id_is_invalid_argument(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await get_block(blocks, "")

    assert violation_fields(refused.value) == ["block_id"]


async def test_request_without_actor_metadata_is_unauthenticated(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor):
        block = await create_block(blocks, "human", "secret")

    with pytest.raises(Unauthenticated) as anonymous:
        await get_block(blocks, block.id)

    assert anonymous.value.reason == "API_KEY_MISSING"


# --- organization isolation ----------------------------------------------------------------------------


async def test_block_of_another_org_is_not_found_for_every_operation_and_stays_intact(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        block = await create_block(blocks, "human", "Name: Ada", limit=100, agent_id=agent_id)
    stranger = new_actor()

    with acting_as(stranger):
        with pytest.raises(NotFound):
            await get_block(blocks, block.id)
        with pytest.raises(NotFound):
            await update_block(blocks, block_pb2.Block(id=block.id, value="hacked"), "value")
        with pytest.raises(NotFound):
            await blocks.DeleteBlock(block_pb2.DeleteBlockRequest(block_id=block.id))
        with pytest.raises(NotFound):
            await blocks.AppendBlockValue(
                block_pb2.AppendBlockValueRequest(agent_id=agent_id, label="human", content="x")
            )
        with pytest.raises(NotFound):
            await blocks.ReplaceBlockValue(
                block_pb2.ReplaceBlockValueRequest(
                    agent_id=agent_id, label="human", old_content="Ada", new_content="Eve"
                )
            )
        assert await list_all(blocks) == []
        assert await list_all(blocks, agent_id=agent_id) == []
        detached = await blocks.DetachAgentBlocks(block_pb2.DetachAgentBlocksRequest(agent_id=agent_id))
        assert detached.deleted_count == 0

    with acting_as(actor):
        assert await get_block(blocks, block.id) == block


async def test_not_found_for_another_orgs_block_does_not_reveal_the_owners_labels(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        await create_block(blocks, "secret-label", "v", agent_id=agent_id)

    with acting_as(new_actor()), pytest.raises(NotFound) as missing:
        await blocks.AppendBlockValue(
            block_pb2.AppendBlockValueRequest(agent_id=agent_id, label="human", content="x")
        )

    assert "secret-label" not in missing.value.message


async def test_create_block_by_another_org_for_an_agent_id_in_use_fails_cleanly_not_with_internal(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        mine = await create_block(blocks, "human", "private", agent_id=agent_id)

    outcome: MnemoError | None = None
    with acting_as(new_actor()):
        try:
            await create_block(blocks, "human", "intruder", agent_id=agent_id)
        except MnemoError as refused:
            outcome = refused
    with acting_as(actor):
        assert await get_block(blocks, mine.id) == mine

    assert not isinstance(outcome, Internal), f"got {outcome!r}"


# --- list ----------------------------------------------------------------------------------------------


async def test_list_blocks_pages_oldest_first_with_page_tokens(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor):
        created = [await create_block(blocks, f"b{i}", str(i)) for i in range(5)]
        seen: list[str] = []
        tokens: list[str] = []
        token = ""
        while True:
            page = await blocks.ListBlocks(block_pb2.ListBlocksRequest(page_size=2, page_token=token))
            assert len(page.blocks) <= 2
            seen += [b.id for b in page.blocks]
            token = page.next_page_token
            tokens.append(token)
            if not token:
                break

    assert seen == [b.id for b in created]
    assert len(tokens) == 3
    assert all(tokens[:2])
    assert tokens[2] == ""


async def test_list_blocks_default_page_size_is_50(blocks: Blocks, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        await blocks.BatchCreateBlocks(
            block_pb2.BatchCreateBlocksRequest(
                agent_id=agent_id, blocks=[block_pb2.Block(label=f"b{i}") for i in range(51)]
            )
        )
        first = await blocks.ListBlocks(block_pb2.ListBlocksRequest())
        rest = await blocks.ListBlocks(block_pb2.ListBlocksRequest(page_token=first.next_page_token))

    assert len(first.blocks) == 50
    assert first.next_page_token
    assert len(rest.blocks) == 1
    assert rest.next_page_token == ""
    assert {b.id for b in first.blocks}.isdisjoint({b.id for b in rest.blocks})


async def test_list_blocks_filters_by_agent_and_by_label(blocks: Blocks, actor: Actor) -> None:
    ada, bob = new_agent_id(), new_agent_id()
    with acting_as(actor):
        ada_human = await create_block(blocks, "human", "Ada", agent_id=ada)
        ada_persona = await create_block(blocks, "persona", "p", agent_id=ada)
        bob_human = await create_block(blocks, "human", "Bob", agent_id=bob)
        loose = await create_block(blocks, "human", "nobody's")

        by_ada = await list_all(blocks, agent_id=ada)
        by_label = await list_all(blocks, label="human")
        by_both = await list_all(blocks, agent_id=bob, label="human")
        by_nothing = await list_all(blocks, agent_id=ada, label="missing")

    assert [b.id for b in by_ada] == [ada_human.id, ada_persona.id]
    assert [b.id for b in by_label] == [ada_human.id, bob_human.id, loose.id]
    assert [b.id for b in by_both] == [bob_human.id]
    assert by_nothing == []


async def test_list_blocks_with_a_garbage_page_token_is_invalid_argument(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await blocks.ListBlocks(block_pb2.ListBlocksRequest(page_token="not-a-token!"))

    assert violation_fields(refused.value) == ["page_token"]


async def test_list_blocks_with_a_page_token_of_another_listing_is_invalid_argument(
    blocks: Blocks, messages: Messages, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        for step in range(2):
            await messages.AppendMessages(
                history_pb2.AppendMessagesRequest(
                    agent_id=agent_id,
                    run_id="run-1",
                    step=step,
                    messages=[message_pb2.Message(user=message_pb2.UserContent(text="hi"))],
                )
            )
        message_token = (
            await messages.ListMessages(history_pb2.ListMessagesRequest(agent_id=agent_id, page_size=1))
        ).next_page_token
        await create_block(blocks, "human", "h")
        assert message_token
        with pytest.raises(InvalidArgument) as refused:
            await blocks.ListBlocks(block_pb2.ListBlocksRequest(page_token=message_token))

    assert violation_fields(refused.value) == ["page_token"]


async def test_list_blocks_with_a_negative_page_size_is_invalid_argument(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await blocks.ListBlocks(block_pb2.ListBlocksRequest(page_size=-1))

    assert violation_fields(refused.value) == ["page_size"]


# --- update --------------------------------------------------------------------------------------------


async def test_update_changes_only_the_fields_named_in_the_mask(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor):
        block = await create_block(blocks, "human", "old", limit=100, description="about the human")
        updated = await update_block(
            blocks,
            block_pb2.Block(id=block.id, label="ignored", value="new", description="", limit=1),
            "value",
        )
        fetched = await get_block(blocks, block.id)

    assert (updated.label, updated.value, updated.limit, updated.description) == (
        "human",
        "new",
        100,
        "about the human",
    )
    assert fetched == updated
    assert updated.update_time.ToDatetime() >= block.update_time.ToDatetime()


async def test_update_of_several_fields_applies_them_all(blocks: Blocks, actor: Actor) -> None:
    metadata = struct_pb2.Struct()
    metadata.update({"k": "v"})
    with acting_as(actor):
        block = await create_block(blocks, "human", "old", limit=100)
        updated = await update_block(
            blocks,
            block_pb2.Block(
                id=block.id,
                label="person",
                value="new",
                limit=10,
                description="d",
                read_only=True,
                metadata=metadata,
            ),
            "label",
            "value",
            "limit",
            "description",
            "read_only",
            "metadata",
        )

    assert (updated.label, updated.value, updated.limit, updated.description, updated.read_only) == (
        "person",
        "new",
        10,
        "d",
        True,
    )
    assert dict(updated.metadata) == {"k": "v"}


async def test_update_without_a_mask_is_invalid_argument_and_changes_nothing(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor):
        block = await create_block(blocks, "human", "old")
        with pytest.raises(InvalidArgument) as refused:
            await update_block(blocks, block_pb2.Block(id=block.id, value="new"))
        assert (await get_block(blocks, block.id)).value == "old"

    assert violation_fields(refused.value) == ["update_mask"]


@pytest.mark.parametrize("path", ["id", "agent_ids", "create_time", "nonsense"])
async def test_update_of_a_field_outside_the_updatable_set_is_invalid_argument(
    blocks: Blocks, actor: Actor, path: str
) -> None:
    with acting_as(actor):
        block = await create_block(blocks, "human", "old")
        with pytest.raises(InvalidArgument) as refused:
            await update_block(blocks, block_pb2.Block(id=block.id, value="new"), "value", path)
        assert (await get_block(blocks, block.id)).value == "old"

    assert violation_fields(refused.value) == ["update_mask"]
    assert path in refused.value.message


async def test_update_of_unknown_block_is_not_found(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(NotFound) as missing:
        await update_block(blocks, block_pb2.Block(id="block-nope", value="x"), "value")

    assert missing.value.reason == "BLOCK_NOT_FOUND"


async def test_update_value_beyond_limit_is_rejected_and_value_unchanged(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor):
        block = await create_block(blocks, "human", "short", limit=10)
        with pytest.raises(InvalidArgument) as refused:
            await update_block(blocks, block_pb2.Block(id=block.id, value="x" * 11), "value")
        after = await get_block(blocks, block.id)

    assert refused.value.reason == "BLOCK_LIMIT_EXCEEDED"
    assert violation_fields(refused.value) == ["block.value"]
    assert after == block


async def test_update_limit_below_current_length_is_rejected_and_block_unchanged(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor):
        block = await create_block(blocks, "human", "twelve chars", limit=50)
        with pytest.raises(InvalidArgument) as refused:
            await update_block(blocks, block_pb2.Block(id=block.id, limit=11), "limit")
        after = await get_block(blocks, block.id)

    assert refused.value.reason == "BLOCK_LIMIT_EXCEEDED"
    assert refused.value.metadata == {"label": "human", "length": "12", "limit": "11"}
    assert after == block


async def test_update_limit_to_zero_resets_it_to_the_server_default(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor):
        block = await create_block(blocks, "human", "v", limit=10)
        updated = await update_block(blocks, block_pb2.Block(id=block.id, limit=0), "limit")

    assert updated.limit == DEFAULT_BLOCK_LIMIT


async def test_update_of_value_with_a_larger_limit_in_the_same_request_is_accepted(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor):
        block = await create_block(blocks, "human", "", limit=5)
        updated = await update_block(
            blocks, block_pb2.Block(id=block.id, value="x" * 8, limit=8), "value", "limit"
        )

    assert (updated.value, updated.limit) == ("x" * 8, 8)


async def test_update_label_to_one_the_agent_already_has_is_already_exists_and_label_unchanged(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        await create_block(blocks, "human", "h", agent_id=agent_id)
        persona = await create_block(blocks, "persona", "p", agent_id=agent_id)
        with pytest.raises(AlreadyExists) as taken:
            await update_block(blocks, block_pb2.Block(id=persona.id, label="human"), "label")
        after = await get_block(blocks, persona.id)

    assert taken.value.reason == "BLOCK_LABEL_TAKEN"
    assert after.label == "persona"


async def test_renamed_block_is_found_by_its_new_label_only(blocks: Blocks, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        block = await create_block(blocks, "human", "a", agent_id=agent_id)
        await update_block(blocks, block_pb2.Block(id=block.id, label="person"), "label")
        appended = await blocks.AppendBlockValue(
            block_pb2.AppendBlockValueRequest(agent_id=agent_id, label="person", content="b")
        )
        with pytest.raises(NotFound):
            await blocks.AppendBlockValue(
                block_pb2.AppendBlockValueRequest(agent_id=agent_id, label="human", content="c")
            )
        # The old label is free again for this agent.
        reused = await create_block(blocks, "human", "", agent_id=agent_id)

    assert appended.block.id == block.id
    assert appended.block.value == "a\nb"
    assert reused.label == "human"


# --- append / replace ----------------------------------------------------------------------------------


async def test_append_adds_content_on_a_new_line_or_as_the_whole_value_of_an_empty_block(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        await create_block(blocks, "human", "", agent_id=agent_id)
        first = await blocks.AppendBlockValue(
            block_pb2.AppendBlockValueRequest(agent_id=agent_id, label="human", content="Name: Ada")
        )
        second = await blocks.AppendBlockValue(
            block_pb2.AppendBlockValueRequest(agent_id=agent_id, label="human", content="Likes tea")
        )
        stored = await get_block(blocks, second.block.id)

    assert first.block.value == "Name: Ada"
    assert second.block.value == "Name: Ada\nLikes tea"
    assert stored.value == "Name: Ada\nLikes tea"


async def test_block_append_beyond_limit_is_rejected_and_value_unchanged(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        block = await create_block(blocks, "human", "12345", limit=10, agent_id=agent_id)
        # "12345" + "\n" + "abcd" is exactly 10 characters; one more is too many.
        with pytest.raises(InvalidArgument) as refused:
            await blocks.AppendBlockValue(
                block_pb2.AppendBlockValueRequest(agent_id=agent_id, label="human", content="abcde")
            )
        after_refusal = await get_block(blocks, block.id)
        fitting = await blocks.AppendBlockValue(
            block_pb2.AppendBlockValueRequest(agent_id=agent_id, label="human", content="abcd")
        )

    assert refused.value.reason == "BLOCK_LIMIT_EXCEEDED"
    assert refused.value.metadata == {"label": "human", "length": "11", "limit": "10"}
    assert violation_fields(refused.value) == ["content"]
    assert after_refusal == block
    assert fitting.block.value == "12345\nabcd"


async def test_append_of_empty_content_is_invalid_argument(blocks: Blocks, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        await create_block(blocks, "human", "x", agent_id=agent_id)
        with pytest.raises(InvalidArgument) as refused:
            await blocks.AppendBlockValue(
                block_pb2.AppendBlockValueRequest(agent_id=agent_id, label="human", content="")
            )

    assert violation_fields(refused.value) == ["content"]


async def test_append_to_a_label_the_agent_lacks_is_not_found_and_lists_its_labels(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        await create_block(blocks, "persona", "", agent_id=agent_id)
        await create_block(blocks, "human", "", agent_id=agent_id)
        with pytest.raises(NotFound) as missing:
            await blocks.AppendBlockValue(
                block_pb2.AppendBlockValueRequest(agent_id=agent_id, label="notes", content="x")
            )

    assert missing.value.reason == "BLOCK_NOT_FOUND"
    assert missing.value.metadata == {"label": "notes"}
    assert "human, persona" in missing.value.message


async def test_replace_replaces_every_occurrence(blocks: Blocks, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        block = await create_block(blocks, "human", "tea, more tea", agent_id=agent_id)
        replaced = await blocks.ReplaceBlockValue(
            block_pb2.ReplaceBlockValueRequest(
                agent_id=agent_id, label="human", old_content="tea", new_content="coffee"
            )
        )
        deleted = await blocks.ReplaceBlockValue(
            block_pb2.ReplaceBlockValueRequest(
                agent_id=agent_id, label="human", old_content=", more coffee", new_content=""
            )
        )

    assert replaced.block.id == block.id
    assert replaced.block.value == "coffee, more coffee"
    assert deleted.block.value == "coffee"


async def test_block_replace_beyond_limit_is_rejected_and_value_unchanged(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        block = await create_block(blocks, "human", "a-a", limit=5, agent_id=agent_id)
        with pytest.raises(InvalidArgument) as refused:
            await blocks.ReplaceBlockValue(
                block_pb2.ReplaceBlockValueRequest(
                    agent_id=agent_id, label="human", old_content="a", new_content="bbb"
                )
            )
        after = await get_block(blocks, block.id)

    assert refused.value.reason == "BLOCK_LIMIT_EXCEEDED"
    assert refused.value.metadata == {"label": "human", "length": "7", "limit": "5"}
    assert violation_fields(refused.value) == ["new_content"]
    assert after == block


async def test_replace_of_text_absent_from_the_block_is_invalid_argument_and_value_unchanged(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        block = await create_block(blocks, "human", "Name: Ada", agent_id=agent_id)
        with pytest.raises(InvalidArgument) as refused:
            await blocks.ReplaceBlockValue(
                block_pb2.ReplaceBlockValueRequest(
                    agent_id=agent_id, label="human", old_content="name: ada", new_content="x"
                )
            )
        after = await get_block(blocks, block.id)

    assert refused.value.reason == "BLOCK_CONTENT_NOT_FOUND"
    assert violation_fields(refused.value) == ["old_content"]
    assert after == block


async def test_replace_with_empty_old_content_is_invalid_argument(blocks: Blocks, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        await create_block(blocks, "human", "abc", agent_id=agent_id)
        with pytest.raises(InvalidArgument) as refused:
            await blocks.ReplaceBlockValue(
                block_pb2.ReplaceBlockValueRequest(agent_id=agent_id, label="human", old_content="")
            )

    assert violation_fields(refused.value) == ["old_content"]


async def test_read_only_block_refuses_append_and_replace_with_permission_denied(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        block = await create_block(blocks, "policy", "be nice", read_only=True, agent_id=agent_id)
        with pytest.raises(PermissionDenied) as append_refused:
            await blocks.AppendBlockValue(
                block_pb2.AppendBlockValueRequest(agent_id=agent_id, label="policy", content="be mean")
            )
        with pytest.raises(PermissionDenied) as replace_refused:
            await blocks.ReplaceBlockValue(
                block_pb2.ReplaceBlockValueRequest(
                    agent_id=agent_id, label="policy", old_content="nice", new_content="mean"
                )
            )
        after = await get_block(blocks, block.id)

    for refused in (append_refused.value, replace_refused.value):
        assert refused.reason == "BLOCK_READ_ONLY"
        assert refused.metadata == {"label": "policy"}
    assert after == block


async def test_append_without_agent_id_is_invalid_argument(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await blocks.AppendBlockValue(block_pb2.AppendBlockValueRequest(label="human", content="x"))

    assert violation_fields(refused.value) == ["agent_id"]


# --- labels per agent ----------------------------------------------------------------------------------


async def test_labels_are_unique_per_agent_but_reusable_across_agents(blocks: Blocks, actor: Actor) -> None:
    ada, bob = new_agent_id(), new_agent_id()
    with acting_as(actor):
        first = await create_block(blocks, "human", "Ada", agent_id=ada)
        with pytest.raises(AlreadyExists) as taken:
            await create_block(blocks, "human", "Ada again", agent_id=ada)
        other_agent = await create_block(blocks, "human", "Bob", agent_id=bob)
        unattached = await create_block(blocks, "human", "nobody")
        ada_blocks = await list_all(blocks, agent_id=ada)

    assert taken.value.reason == "BLOCK_LABEL_TAKEN"
    assert [b.id for b in ada_blocks] == [first.id]
    assert other_agent.label == unattached.label == "human"


# --- batch create --------------------------------------------------------------------------------------


async def test_batch_create_blocks_creates_all_attached_to_the_agent_in_request_order(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        response = await blocks.BatchCreateBlocks(
            block_pb2.BatchCreateBlocksRequest(
                agent_id=agent_id,
                blocks=[
                    block_pb2.Block(label="persona", value="p", limit=20),
                    block_pb2.Block(label="human", value="h"),
                ],
            )
        )
        listed = await list_all(blocks, agent_id=agent_id)

    assert [b.label for b in response.blocks] == ["persona", "human"]
    assert [b.limit for b in response.blocks] == [20, DEFAULT_BLOCK_LIMIT]
    assert all(list(b.agent_ids) == [agent_id] for b in response.blocks)
    assert {b.id for b in listed} == {b.id for b in response.blocks}


async def test_an_agents_blocks_list_in_the_order_they_were_created_in_one_batch(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    labels = ["persona", "human", "goals", "tasks", "notes", "style", "facts", "plans"]
    with acting_as(actor):
        await blocks.BatchCreateBlocks(
            block_pb2.BatchCreateBlocksRequest(
                agent_id=agent_id, blocks=[block_pb2.Block(label=label) for label in labels]
            )
        )
        listed = await list_all(blocks, agent_id=agent_id)

    # Ids are random: without an order of its own, eight blocks would come back in one of 40,320 orders.
    assert [b.label for b in listed] == labels


@pytest.mark.parametrize(
    ("second", "field"),
    [
        (block_pb2.Block(label="human", value="x" * 11, limit=10), "blocks[1].value"),
        (block_pb2.Block(label="bad label"), "blocks[1].label"),
        (block_pb2.Block(label="human", limit=-5), "blocks[1].limit"),
        (block_pb2.Block(label="persona"), "blocks[1].label"),
    ],
    ids=["over-limit", "bad-label", "bad-limit", "duplicate-label"],
)
async def test_batch_create_blocks_is_all_or_none_and_names_the_invalid_block(
    blocks: Blocks, actor: Actor, second: block_pb2.Block, field: str
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        with pytest.raises(InvalidArgument) as refused:
            await blocks.BatchCreateBlocks(
                block_pb2.BatchCreateBlocksRequest(
                    agent_id=agent_id, blocks=[block_pb2.Block(label="persona", value="ok"), second]
                )
            )
        assert await list_all(blocks) == []

    assert violation_fields(refused.value) == [field]


async def test_batch_create_blocks_with_a_label_the_agent_has_is_already_exists_and_creates_nothing(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        existing = await create_block(blocks, "human", "h", agent_id=agent_id)
        with pytest.raises(AlreadyExists) as taken:
            await blocks.BatchCreateBlocks(
                block_pb2.BatchCreateBlocksRequest(
                    agent_id=agent_id,
                    blocks=[block_pb2.Block(label="persona"), block_pb2.Block(label="human")],
                )
            )
        listed = await list_all(blocks)

    assert taken.value.reason == "BLOCK_LABEL_TAKEN"
    assert [b.id for b in listed] == [existing.id]


async def test_batch_create_blocks_without_agent_id_is_invalid_argument(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await blocks.BatchCreateBlocks(
            block_pb2.BatchCreateBlocksRequest(blocks=[block_pb2.Block(label="human")])
        )

    assert violation_fields(refused.value) == ["agent_id"]


# --- delete / detach -----------------------------------------------------------------------------------


async def test_deleted_block_is_gone_and_its_label_is_free_for_the_agent(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        block = await create_block(blocks, "human", "h", agent_id=agent_id)
        await blocks.DeleteBlock(block_pb2.DeleteBlockRequest(block_id=block.id))
        with pytest.raises(NotFound):
            await get_block(blocks, block.id)
        with pytest.raises(NotFound) as again:
            await blocks.DeleteBlock(block_pb2.DeleteBlockRequest(block_id=block.id))
        assert await list_all(blocks, agent_id=agent_id) == []
        replacement = await create_block(blocks, "human", "new", agent_id=agent_id)

    assert again.value.reason == "BLOCK_NOT_FOUND"
    assert replacement.label == "human"


async def test_delete_of_another_orgs_block_is_not_found_and_keeps_its_attachments(
    blocks: Blocks, actor: Actor
) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        block = await create_block(blocks, "human", "h", agent_id=agent_id)
    with acting_as(new_actor()), pytest.raises(NotFound):
        await blocks.DeleteBlock(block_pb2.DeleteBlockRequest(block_id=block.id))

    with acting_as(actor):
        after = await get_block(blocks, block.id)
        appended = await blocks.AppendBlockValue(
            block_pb2.AppendBlockValueRequest(agent_id=agent_id, label="human", content="still mine")
        )

    assert list(after.agent_ids) == [agent_id]
    assert appended.block.value == "h\nstill mine"


async def test_detach_agent_blocks_deletes_only_the_blocks_created_for_that_agent(
    blocks: Blocks, actor: Actor
) -> None:
    ada, bob = new_agent_id(), new_agent_id()
    with acting_as(actor):
        owned = (
            await blocks.BatchCreateBlocks(
                block_pb2.BatchCreateBlocksRequest(
                    agent_id=ada, blocks=[block_pb2.Block(label="persona"), block_pb2.Block(label="human")]
                )
            )
        ).blocks
        attached_later = await create_block(blocks, "notes", "kept", agent_id=ada)
        bobs = (
            await blocks.BatchCreateBlocks(
                block_pb2.BatchCreateBlocksRequest(agent_id=bob, blocks=[block_pb2.Block(label="persona")])
            )
        ).blocks[0]

        detached = await blocks.DetachAgentBlocks(block_pb2.DetachAgentBlocksRequest(agent_id=ada))

        for block in owned:
            with pytest.raises(NotFound):
                await get_block(blocks, block.id)
        survivor = await get_block(blocks, attached_later.id)
        bobs_after = await get_block(blocks, bobs.id)
        ada_blocks = await list_all(blocks, agent_id=ada)
        again = await blocks.DetachAgentBlocks(block_pb2.DetachAgentBlocksRequest(agent_id=ada))

    assert detached.deleted_count == 2
    assert survivor.value == "kept"
    assert list(survivor.agent_ids) == []
    assert bobs_after == bobs
    assert ada_blocks == []
    assert again.deleted_count == 0


async def test_detach_agent_blocks_without_agent_id_is_invalid_argument(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await blocks.DetachAgentBlocks(block_pb2.DetachAgentBlocksRequest())

    assert violation_fields(refused.value) == ["agent_id"]


# --- addressed through an agent ------------------------------------------------------------------------


async def test_an_agents_block_is_read_and_updated_by_label_in_one_call(blocks: Blocks, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        created = await create_block(blocks, "human", "Name: Ada", agent_id=agent_id)
        fetched = await blocks.GetBlock(block_pb2.GetBlockRequest(agent_id=agent_id, label="human"))
        updated = await blocks.UpdateBlock(
            block_pb2.UpdateBlockRequest(
                agent_id=agent_id,
                label="human",
                block=block_pb2.Block(label="person", value="Name: Ada Lovelace"),
                update_mask=field_mask_pb2.FieldMask(paths=["label", "value"]),
            )
        )
        by_id = await get_block(blocks, created.id)
    assert fetched.block.id == created.id
    assert (updated.block.id, updated.block.label, updated.block.value) == (
        created.id,
        "person",
        "Name: Ada Lovelace",
    )
    assert by_id == updated.block


async def test_a_block_named_with_an_agent_it_is_not_attached_to_is_not_found_and_unchanged(
    blocks: Blocks, actor: Actor
) -> None:
    owner, stranger = new_agent_id(), new_agent_id()
    with acting_as(actor):
        block = await create_block(blocks, "human", "Name: Ada", agent_id=owner)
        attempts = (
            blocks.GetBlock(block_pb2.GetBlockRequest(block_id=block.id, agent_id=stranger)),
            blocks.GetBlock(block_pb2.GetBlockRequest(agent_id=stranger, label="human")),
            blocks.UpdateBlock(
                block_pb2.UpdateBlockRequest(
                    agent_id=stranger,
                    block=block_pb2.Block(id=block.id, value="changed"),
                    update_mask=field_mask_pb2.FieldMask(paths=["value"]),
                )
            ),
            blocks.UpdateBlock(
                block_pb2.UpdateBlockRequest(
                    agent_id=stranger,
                    label="human",
                    block=block_pb2.Block(value="changed"),
                    update_mask=field_mask_pb2.FieldMask(paths=["value"]),
                )
            ),
        )
        for attempt in attempts:
            with pytest.raises(NotFound) as missing:
                await attempt
            assert missing.value.reason == "BLOCK_NOT_FOUND"
        after = await get_block(blocks, block.id)
    assert after == block


# --- shared blocks -------------------------------------------------------------------------------------


async def test_attached_block_is_shared_and_an_edit_through_one_agent_is_seen_by_the_other(
    blocks: Blocks, actor: Actor
) -> None:
    first, second = new_agent_id(), new_agent_id()
    with acting_as(actor):
        shared = await create_block(blocks, "team", "Project: mnemo", agent_id=first)

        attached = await blocks.AttachBlock(block_pb2.AttachBlockRequest(block_id=shared.id, agent_id=second))
        await blocks.AppendBlockValue(
            block_pb2.AppendBlockValueRequest(agent_id=first, label="team", content="Deadline: Friday")
        )

        assert list(attached.block.agent_ids) == [first, second]
        seen_by_second = await list_all(blocks, agent_id=second)
        assert [b.value for b in seen_by_second] == ["Project: mnemo\nDeadline: Friday"]


async def test_attaching_twice_is_a_no_op(blocks: Blocks, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        block = await create_block(blocks, "human", agent_id=agent_id)

        again = await blocks.AttachBlock(block_pb2.AttachBlockRequest(block_id=block.id, agent_id=agent_id))

        assert list(again.block.agent_ids) == [agent_id]


async def test_attach_refuses_a_label_the_agent_already_has(blocks: Blocks, actor: Actor) -> None:
    agent_id = new_agent_id()
    with acting_as(actor):
        await create_block(blocks, "human", "mine", agent_id=agent_id)
        other = await create_block(blocks, "human", "someone else's")

        with pytest.raises(AlreadyExists) as clash:
            await blocks.AttachBlock(block_pb2.AttachBlockRequest(block_id=other.id, agent_id=agent_id))

        assert clash.value.reason == "BLOCK_LABEL_TAKEN"
        assert [b.value for b in await list_all(blocks, agent_id=agent_id)] == ["mine"]


async def test_detach_removes_only_the_attachment(blocks: Blocks, actor: Actor) -> None:
    first, second = new_agent_id(), new_agent_id()
    with acting_as(actor):
        block = await create_block(blocks, "team", "shared", agent_id=first)
        await blocks.AttachBlock(block_pb2.AttachBlockRequest(block_id=block.id, agent_id=second))

        detached = await blocks.DetachBlock(block_pb2.DetachBlockRequest(block_id=block.id, agent_id=first))

        assert list(detached.block.agent_ids) == [second]
        assert await list_all(blocks, agent_id=first) == []
        with pytest.raises(NotFound) as missing:
            await blocks.DetachBlock(block_pb2.DetachBlockRequest(block_id=block.id, agent_id=first))
        assert missing.value.reason == "BLOCK_NOT_ATTACHED"


async def test_attach_of_another_orgs_block_is_not_found(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor):
        block = await create_block(blocks, "human", "private")

    with acting_as(new_actor()), pytest.raises(NotFound):
        await blocks.AttachBlock(block_pb2.AttachBlockRequest(block_id=block.id, agent_id=new_agent_id()))

    with acting_as(actor):
        assert list((await get_block(blocks, block.id)).agent_ids) == []


async def test_deleting_the_owner_keeps_a_block_still_shared_with_another_agent(
    blocks: Blocks, actor: Actor
) -> None:
    owner, friend = new_agent_id(), new_agent_id()
    with acting_as(actor):
        created = await blocks.BatchCreateBlocks(
            block_pb2.BatchCreateBlocksRequest(
                agent_id=owner, blocks=[block_pb2.Block(label="team", value="v")]
            )
        )
        block = created.blocks[0]
        await blocks.AttachBlock(block_pb2.AttachBlockRequest(block_id=block.id, agent_id=friend))

        gone = await blocks.DetachAgentBlocks(block_pb2.DetachAgentBlocksRequest(agent_id=owner))

        assert gone.deleted_count == 0
        assert list((await get_block(blocks, block.id)).agent_ids) == [friend]
