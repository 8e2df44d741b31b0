"""Versions of blocks' values over real gRPC, on SQLite and on Postgres: recording, undo, redo, restore,
the line-aware edits of the memory tools, limits, read-only blocks, concurrent writers and retention."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from google.protobuf import field_mask_pb2

from mnemo.memory.v1 import block_pb2, block_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.db import Database
from mnemo_core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from mnemo_core.migrations import upgrade
from mnemo_core.wire import utcnow
from mnemo_memory.app import MIGRATIONS
from mnemo_memory.app import build as build_memory
from mnemo_memory.block_versions import BlockHistory, Versioning
from mnemo_memory.blocks import BlockSpec, Editor, Retention
from mnemo_memory.core_memory import CoreMemory
from mnemo_memory.settings import MemorySettings
from tests.fakes.llm_provider import free_port
from tests.service.conftest import Served, clean_environment, new_actor, new_agent_id, serving
from tests.service.memory_with_embeddings import memory_database, memory_postgres  # noqa: F401 - fixtures

if TYPE_CHECKING:
    from mnemo.memory.v1.block_pb2_grpc import BlockServiceAsyncStub as Blocks

ADA = Editor("user", "user-ada")


@pytest.fixture(scope="session")
async def versioned_memory(
    tmp_path_factory: pytest.TempPathFactory,
    memory_database: str,  # noqa: F811 - the fixture
) -> AsyncIterator[Served]:
    home = tmp_path_factory.mktemp("memory-versions")
    with clean_environment(home):
        settings = MemorySettings(
            home=home, database_url=memory_database, llm_addr=f"127.0.0.1:{free_port()}"
        )
    app = await build_memory(settings)
    async with serving(app) as served:
        yield served


@pytest.fixture
def blocks(versioned_memory: Served) -> block_pb2_grpc.BlockServiceAsyncStub:
    return versioned_memory.stub(block_pb2_grpc.BlockServiceStub)


async def agent_block(blocks: Blocks, value: str = "", *, limit: int = 500) -> tuple[str, block_pb2.Block]:
    agent_id = new_agent_id()
    created = await blocks.CreateBlock(
        block_pb2.CreateBlockRequest(
            block=block_pb2.Block(label="human", value=value, limit=limit), agent_id=agent_id
        )
    )
    return agent_id, created.block


async def versions(blocks: Blocks, block_id: str) -> list[block_pb2.BlockVersion]:
    found = await blocks.ListBlockVersions(
        block_pb2.ListBlockVersionsRequest(block_id=block_id, page_size=1000)
    )
    return list(found.versions)


async def set_value(blocks: Blocks, block_id: str, value: str) -> block_pb2.Block:
    response = await blocks.UpdateBlock(
        block_pb2.UpdateBlockRequest(
            block=block_pb2.Block(id=block_id, value=value),
            update_mask=field_mask_pb2.FieldMask(paths=["value"]),
        )
    )
    return response.block


async def value_of(blocks: Blocks, block_id: str) -> str:
    return (await blocks.GetBlock(block_pb2.GetBlockRequest(block_id=block_id))).block.value


async def test_every_write_of_a_value_is_a_version_with_its_editor_run_and_before_and_after(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor):
        agent_id, block = await agent_block(blocks, "Name: Ada")
        await set_value(blocks, block.id, "Name: Ada Lovelace")
        await blocks.AppendBlockValue(
            block_pb2.AppendBlockValueRequest(
                agent_id=agent_id, label="human", content="Likes tea", run_id="run-1"
            )
        )
        await blocks.ReplaceBlockValue(
            block_pb2.ReplaceBlockValueRequest(
                agent_id=agent_id,
                label="human",
                old_content="tea",
                new_content="coffee",
                unique=True,
                run_id="run-1",
            )
        )
        await blocks.InsertBlockValue(
            block_pb2.InsertBlockValueRequest(
                agent_id=agent_id, label="human", text="Born 1815", after_line=1, run_id="run-2"
            )
        )
        rewritten = await blocks.RewriteBlockValue(
            block_pb2.RewriteBlockValueRequest(
                agent_id=agent_id, label="human", value="Ada, mathematician", run_id="run-3"
            )
        )
        unchanged = await set_value(blocks, block.id, "Ada, mathematician")
        kept = await versions(blocks, block.id)

    assert rewritten.block.version == unchanged.version == 6
    assert [(v.version, block_pb2.BlockOperation.Name(v.operation)) for v in kept] == [
        (6, "BLOCK_OPERATION_REWRITE"),
        (5, "BLOCK_OPERATION_INSERT"),
        (4, "BLOCK_OPERATION_REPLACE"),
        (3, "BLOCK_OPERATION_APPEND"),
        (2, "BLOCK_OPERATION_UPDATE"),
        (1, "BLOCK_OPERATION_CREATE"),
    ]
    by_version = {v.version: v for v in kept}
    assert (by_version[5].before, by_version[5].after) == (
        "Name: Ada Lovelace\nLikes coffee",
        "Name: Ada Lovelace\nBorn 1815\nLikes coffee",
    )
    assert [
        (v.editor_type, v.editor_id, v.run_id) for v in (by_version[2], by_version[3], by_version[6])
    ] == [
        (block_pb2.BLOCK_EDITOR_TYPE_USER, actor.user_id, ""),
        (block_pb2.BLOCK_EDITOR_TYPE_AGENT, agent_id, "run-1"),
        (block_pb2.BLOCK_EDITOR_TYPE_AGENT, agent_id, "run-3"),
    ]
    assert all(later.before == earlier.after for later, earlier in itertools.pairwise(kept))
    assert by_version[1].state == block_pb2.BLOCK_EDIT_STATE_UNSPECIFIED
    assert {by_version[i].state for i in range(2, 7)} == {block_pb2.BLOCK_EDIT_STATE_APPLIED}


async def test_a_memory_edit_sent_again_by_the_same_run_is_made_once(blocks: Blocks, actor: Actor) -> None:
    # A turn resumed after a crash between a memory edit and the storing of its step runs the call again.
    with acting_as(actor):
        agent_id, block = await agent_block(blocks, "Name: Ada")
        append = block_pb2.AppendBlockValueRequest(
            agent_id=agent_id, label="human", content="Likes tea", run_id="run-resumed"
        )
        first = await blocks.AppendBlockValue(append)
        again = await blocks.AppendBlockValue(append)
        replace = block_pb2.ReplaceBlockValueRequest(
            agent_id=agent_id, label="human", old_content="tea", new_content="tea, tea", run_id="run-resumed"
        )
        await blocks.ReplaceBlockValue(replace)
        await blocks.ReplaceBlockValue(replace)
        other_run = await blocks.AppendBlockValue(
            block_pb2.AppendBlockValueRequest(
                agent_id=agent_id, label="human", content="Likes tea", run_id="run-next"
            )
        )
        kept = await versions(blocks, block.id)

    assert again.block == first.block
    assert other_run.block.value == "Name: Ada\nLikes tea, tea\nLikes tea"
    assert [v.run_id for v in kept] == ["run-next", "run-resumed", "run-resumed", ""]


async def test_versions_page_newest_first(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor):
        _, block = await agent_block(blocks, "v1")
        for i in range(2, 6):
            await set_value(blocks, block.id, f"v{i}")
        first = await blocks.ListBlockVersions(
            block_pb2.ListBlockVersionsRequest(block_id=block.id, page_size=2)
        )
        second = await blocks.ListBlockVersions(
            block_pb2.ListBlockVersionsRequest(
                block_id=block.id, page_size=2, page_token=first.next_page_token
            )
        )
        third = await blocks.ListBlockVersions(
            block_pb2.ListBlockVersionsRequest(
                block_id=block.id, page_size=2, page_token=second.next_page_token
            )
        )

    assert [v.after for page in (first, second, third) for v in page.versions] == [
        "v5",
        "v4",
        "v3",
        "v2",
        "v1",
    ]
    assert third.next_page_token == ""


async def test_undo_and_redo_walk_the_edits_back_and_forth_and_a_new_edit_discards_the_redo(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor):
        _, block = await agent_block(blocks, "a")
        await set_value(blocks, block.id, "ab")
        await set_value(blocks, block.id, "abc")
        undone = await blocks.UndoBlockEdit(block_pb2.UndoBlockEditRequest(block_id=block.id))
        twice = await blocks.UndoBlockEdit(block_pb2.UndoBlockEditRequest(block_id=block.id))
        with pytest.raises(FailedPrecondition) as nothing:
            await blocks.UndoBlockEdit(block_pb2.UndoBlockEditRequest(block_id=block.id))
        redone = await blocks.RedoBlockEdit(block_pb2.RedoBlockEditRequest(block_id=block.id))
        await set_value(blocks, block.id, "ab!")
        with pytest.raises(FailedPrecondition) as discarded:
            await blocks.RedoBlockEdit(block_pb2.RedoBlockEditRequest(block_id=block.id))
        kept = {v.version: v for v in await versions(blocks, block.id)}
        final = await value_of(blocks, block.id)

    assert (undone.block.value, twice.block.value, redone.block.value, final) == ("ab", "a", "ab", "ab!")
    assert nothing.value.reason == "NOTHING_TO_UNDO"
    assert discarded.value.reason == "NOTHING_TO_REDO"
    assert (undone.version.operation, undone.version.target_version) == (block_pb2.BLOCK_OPERATION_UNDO, 3)
    assert (redone.version.operation, redone.version.target_version) == (block_pb2.BLOCK_OPERATION_REDO, 2)
    assert kept[2].state == block_pb2.BLOCK_EDIT_STATE_APPLIED
    assert kept[3].state == block_pb2.BLOCK_EDIT_STATE_DISCARDED
    assert kept[7].operation == block_pb2.BLOCK_OPERATION_UPDATE


async def test_restore_brings_back_a_kept_version_as_an_edit_that_can_be_undone(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor):
        _, block = await agent_block(blocks, "first")
        await set_value(blocks, block.id, "second")
        await set_value(blocks, block.id, "third")
        restored = await blocks.RestoreBlockVersion(
            block_pb2.RestoreBlockVersionRequest(block_id=block.id, version=1)
        )
        again = await blocks.RestoreBlockVersion(
            block_pb2.RestoreBlockVersionRequest(block_id=block.id, version=1)
        )
        undone = await blocks.UndoBlockEdit(block_pb2.UndoBlockEditRequest(block_id=block.id))
        with pytest.raises(NotFound) as missing:
            await blocks.RestoreBlockVersion(
                block_pb2.RestoreBlockVersionRequest(block_id=block.id, version=99)
            )
        with pytest.raises(InvalidArgument):
            await blocks.RestoreBlockVersion(
                block_pb2.RestoreBlockVersionRequest(block_id=block.id, version=0)
            )

    assert restored.block.value == "first"
    assert (restored.version.operation, restored.version.target_version) == (
        block_pb2.BLOCK_OPERATION_RESTORE,
        1,
    )
    assert not again.HasField("version")
    assert again.block.version == restored.block.version
    assert undone.block.value == "third"
    assert missing.value.reason == "BLOCK_VERSION_NOT_FOUND"


async def test_undo_redo_and_restore_keep_the_limit_and_refuse_read_only_blocks_changing_nothing(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor):
        _, block = await agent_block(blocks, "a long first value", limit=100)
        await set_value(blocks, block.id, "short")
        await blocks.UpdateBlock(
            block_pb2.UpdateBlockRequest(
                block=block_pb2.Block(id=block.id, limit=10),
                update_mask=field_mask_pb2.FieldMask(paths=["limit"]),
            )
        )
        with pytest.raises(InvalidArgument) as too_long:
            await blocks.UndoBlockEdit(block_pb2.UndoBlockEditRequest(block_id=block.id))
        with pytest.raises(InvalidArgument) as restore_too_long:
            await blocks.RestoreBlockVersion(
                block_pb2.RestoreBlockVersionRequest(block_id=block.id, version=1)
            )
        await blocks.UpdateBlock(
            block_pb2.UpdateBlockRequest(
                block=block_pb2.Block(id=block.id, limit=100, read_only=True),
                update_mask=field_mask_pb2.FieldMask(paths=["limit", "read_only"]),
            )
        )
        refused = []
        for call in (
            blocks.UndoBlockEdit(block_pb2.UndoBlockEditRequest(block_id=block.id)),
            blocks.RedoBlockEdit(block_pb2.RedoBlockEditRequest(block_id=block.id)),
            blocks.RestoreBlockVersion(block_pb2.RestoreBlockVersionRequest(block_id=block.id, version=1)),
        ):
            with pytest.raises(PermissionDenied) as denied:
                await call
            refused.append(denied.value.reason)
        after = (await blocks.GetBlock(block_pb2.GetBlockRequest(block_id=block.id))).block

    assert too_long.value.reason == restore_too_long.value.reason == "BLOCK_LIMIT_EXCEEDED"
    assert refused == ["BLOCK_READ_ONLY"] * 3
    assert (after.value, after.version) == ("short", 2)


async def test_concurrent_edits_take_consecutive_versions_and_lose_nothing(
    blocks: Blocks, actor: Actor
) -> None:
    writers = 12
    with acting_as(actor):
        agent_id, block = await agent_block(blocks, "start", limit=2000)
        await asyncio.gather(
            *(
                blocks.AppendBlockValue(
                    block_pb2.AppendBlockValueRequest(agent_id=agent_id, label="human", content=f"line {i}")
                )
                for i in range(writers)
            )
        )
        kept = sorted(await versions(blocks, block.id), key=lambda v: v.version)
        final = await value_of(blocks, block.id)

    assert [v.version for v in kept] == list(range(1, writers + 2))
    assert all(later.before == earlier.after for earlier, later in itertools.pairwise(kept))
    assert kept[-1].after == final
    assert sorted(final.split("\n")[1:]) == sorted(f"line {i}" for i in range(writers))


async def test_history_is_the_organizations_own(blocks: Blocks) -> None:
    owner, stranger = new_actor(), new_actor()
    with acting_as(owner):
        _, block = await agent_block(blocks, "private")
        await set_value(blocks, block.id, "still private")
    with acting_as(stranger):
        for call in (
            blocks.ListBlockVersions(block_pb2.ListBlockVersionsRequest(block_id=block.id)),
            blocks.UndoBlockEdit(block_pb2.UndoBlockEditRequest(block_id=block.id)),
            blocks.RestoreBlockVersion(block_pb2.RestoreBlockVersionRequest(block_id=block.id, version=1)),
        ):
            with pytest.raises(NotFound):
                await call
    with acting_as(owner):
        assert await value_of(blocks, block.id) == "still private"


async def test_a_deleted_blocks_versions_go_with_it(blocks: Blocks, actor: Actor) -> None:
    with acting_as(actor):
        agent_id, block = await agent_block(blocks, "x")
        await set_value(blocks, block.id, "y")
        await blocks.DetachAgentBlocks(block_pb2.DetachAgentBlocksRequest(agent_id=agent_id))
        await blocks.DeleteBlock(block_pb2.DeleteBlockRequest(block_id=block.id))
        with pytest.raises(NotFound):
            await blocks.ListBlockVersions(block_pb2.ListBlockVersionsRequest(block_id=block.id))


# ----- the line-aware edits -----


async def test_insert_puts_lines_after_a_line_first_or_last_and_names_the_range_when_out_of_it(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor):
        agent_id, _ = await agent_block(blocks, "one\ntwo")

        async def insert(text: str, after: int | None = None) -> str:
            request = block_pb2.InsertBlockValueRequest(agent_id=agent_id, label="human", text=text)
            if after is not None:
                request.after_line = after
            return (await blocks.InsertBlockValue(request)).block.value

        assert await insert("three") == "one\ntwo\nthree"
        assert await insert("zero", 0) == "zero\none\ntwo\nthree"
        assert await insert("one and a half", 2) == "zero\none\none and a half\ntwo\nthree"
        with pytest.raises(InvalidArgument) as out_of_range:
            await insert("nowhere", 9)

    assert out_of_range.value.reason == "BLOCK_LINE_OUT_OF_RANGE"
    assert "between 0 (insert first) and 5 (insert last)" in out_of_range.value.message


async def test_unique_replace_refuses_no_match_and_several_matches_naming_their_lines(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor):
        agent_id, block = await agent_block(blocks, "likes tea\nhates coffee\nlikes cake")

        async def replace(old: str, new: str) -> str:
            request = block_pb2.ReplaceBlockValueRequest(
                agent_id=agent_id, label="human", old_content=old, new_content=new, unique=True
            )
            return (await blocks.ReplaceBlockValue(request)).block.value

        with pytest.raises(InvalidArgument) as several:
            await replace("likes", "loves")
        with pytest.raises(InvalidArgument) as none:
            await replace("likes juice", "loves juice")
        assert await replace("likes cake", "loves cake") == "likes tea\nhates coffee\nloves cake"
        kept = await versions(blocks, block.id)

    assert several.value.reason == "BLOCK_CONTENT_AMBIGUOUS"
    assert "occurs 2 times" in several.value.message
    assert "lines 1, 3" in several.value.message
    assert several.value.metadata["lines"] == "1,3"
    assert none.value.reason == "BLOCK_CONTENT_NOT_FOUND"
    assert len(kept) == 2


async def test_rewrite_keeps_the_limit_and_read_only_blocks_refuse_every_tool_edit(
    blocks: Blocks, actor: Actor
) -> None:
    with acting_as(actor):
        agent_id, block = await agent_block(blocks, "short", limit=10)
        with pytest.raises(InvalidArgument) as too_long:
            await blocks.RewriteBlockValue(
                block_pb2.RewriteBlockValueRequest(agent_id=agent_id, label="human", value="x" * 11)
            )
        await blocks.UpdateBlock(
            block_pb2.UpdateBlockRequest(
                block=block_pb2.Block(id=block.id, read_only=True),
                update_mask=field_mask_pb2.FieldMask(paths=["read_only"]),
            )
        )
        with pytest.raises(PermissionDenied) as read_only:
            await blocks.InsertBlockValue(
                block_pb2.InsertBlockValueRequest(agent_id=agent_id, label="human", text="x")
            )
        assert await value_of(blocks, block.id) == "short"

    assert too_long.value.reason == "BLOCK_LIMIT_EXCEEDED"
    assert read_only.value.reason == "BLOCK_READ_ONLY"


# ----- retention (the domain on its own SQLite file) -----


@pytest.fixture
async def memory_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}", schema="memory")
    await upgrade(db, MIGRATIONS)
    yield db
    await db.dispose()


async def test_only_the_newest_versions_are_kept_and_older_ones_cannot_be_restored(
    memory_db: Database,
) -> None:
    versioning = Versioning(Retention(max_versions=3))
    core, history = CoreMemory(memory_db, versioning, default_limit=100), BlockHistory(memory_db, versioning)
    org = "org-retention"
    block = await core.create(org, BlockSpec(label="notes", value="v1"), ADA)
    for i in range(2, 7):
        await core.update(org, block.id, {"value": f"v{i}"}, ADA)

    kept, _ = await history.list(org, block.id)
    assert [v.version for v in kept] == [6, 5, 4]
    with pytest.raises(NotFound):
        await history.restore(org, block.id, 3, ADA)
    restored, _ = await history.restore(org, block.id, 4, ADA)
    assert restored.value == "v4"


async def test_the_sweep_deletes_versions_past_the_age_limit(memory_db: Database) -> None:
    versioning = Versioning(Retention(max_versions=0, max_age=timedelta(days=30)))
    core, history = CoreMemory(memory_db, versioning, default_limit=100), BlockHistory(memory_db, versioning)
    org = "org-sweep"
    block = await core.create(org, BlockSpec(label="notes", value="v1"), ADA)
    await core.update(org, block.id, {"value": "v2"}, ADA)

    assert await history.sweep(now=utcnow() + timedelta(days=29)) == 0
    assert await history.sweep(now=utcnow() + timedelta(days=31)) == 2
    kept, _ = await history.list(org, block.id)
    assert kept == []
    with pytest.raises(FailedPrecondition):
        await history.undo(org, block.id, ADA)
