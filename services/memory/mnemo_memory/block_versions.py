"""Versions of blocks' values: every change recorded with the change, undo and redo, restoring, retention.

Each change of a value is a new version, written in the transaction that changes the value: the block's
`version` goes up by one, and a row keeps the editor, the run, and the value before and after. Writers of
one block are serialized: SQLite has one writer; on Postgres a write locks the block's row before it reads
the value (`locked`). The version is also checked when it is set (it must still be the one read), so a
writer that skipped the lock could never take a number twice; its unit of work would be run again. A write
that leaves the value as it was records nothing.

Edits (every change but create, undo and redo) form an undo stack: undo takes back the latest applied edit
(a new version with the value before it), redo applies again the one undone last; an edit after an undo
discards what could have been redone. Restoring a version is an edit. Limits and read-only blocks are
enforced as for any write. Versions beyond the retention (a count per block, an age) are deleted when the
block is written and by a periodic sweep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection, select

from mnemo_core.db import Database
from mnemo_core.errors import Aborted, FailedPrecondition, NotFound
from mnemo_core.ids import require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.validation import invalid
from mnemo_core.wire import utcnow
from mnemo_memory.block_version_store import BlockVersionQueries as V
from mnemo_memory.block_version_store import blocks_t
from mnemo_memory.blocks import (
    Block,
    BlockVersion,
    Editor,
    Retention,
    check_changeable,
    check_fits,
    check_not_read_only,
)
from mnemo_memory.store import BlockQueries as Q

log = logging.getLogger(__name__)
T = TypeVar("T")

APPLIED, UNDONE, DISCARDED = "applied", "undone", "discarded"
# Edits that are not themselves on the undo stack.
_NOT_EDITS = frozenset({"create", "undo", "redo"})
# Times a unit of work that lost a race for a block's next version is run again.
_ATTEMPTS = 5
BLOCK_CHANGED = "BLOCK_CHANGED_CONCURRENTLY"


class Versioning:
    """Records versions inside the units of work that change values, and applies the retention."""

    def __init__(self, retention: Retention) -> None:
        self.retention = retention

    @staticmethod
    def locked(conn: Connection, org_id: str, block: Block) -> Block:
        """The block as it is once this transaction holds its row (Postgres; SQLite has one writer)."""
        if conn.dialect.name != "postgresql":
            return block
        conn.execute(select(blocks_t.c.id).where(blocks_t.c.id == block.id).with_for_update())
        return Q.get(conn, org_id, block.id)

    def first(
        self, conn: Connection, org_id: str, block_id: str, value: str, editor: Editor, now: datetime
    ) -> None:
        """Version 1 of a new block (inserted at version 1 by its caller)."""
        V.insert(
            conn,
            org_id,
            block_id,
            1,
            operation="create",
            editor=editor,
            before="",
            after=value,
            state="",
            target_version=None,
            now=now,
        )

    def record(
        self,
        conn: Connection,
        org_id: str,
        block: Block,
        value: str,
        operation: str,
        editor: Editor,
        *,
        now: datetime,
        target_version: int | None = None,
        always: bool = False,
    ) -> BlockVersion | None:
        """Sets the block's value as its next version; None (nothing written) when the value is unchanged,
        unless `always` (an undo or redo moves the undo stack even then).

        Raises Aborted (BLOCK_CHANGED_CONCURRENTLY) when another transaction wrote the block since it was
        read; `write` runs the unit of work again then.
        """
        if value == block.value and not always:
            return None
        if not V.set_value(conn, org_id, block.id, value, expected_version=block.version, now=now):
            raise Aborted(f"block {block.id} changed while it was being written", reason=BLOCK_CHANGED)
        edit = operation not in _NOT_EDITS
        if edit:
            V.replace_state(conn, block.id, UNDONE, DISCARDED)
        version = V.insert(
            conn,
            org_id,
            block.id,
            block.version + 1,
            operation=operation,
            editor=editor,
            before=block.value,
            after=value,
            state=APPLIED if edit else "",
            target_version=target_version,
            now=now,
        )
        self._prune(conn, block.id, version.version, now)
        return version

    def _prune(self, conn: Connection, block_id: str, latest: int, now: datetime) -> None:
        keep = self.retention.max_versions
        max_age = self.retention.max_age
        V.prune(
            conn,
            block_id,
            below_version=latest - keep + 1 if keep > 0 else None,
            older_than=now - max_age if max_age is not None else None,
        )


async def write(db: Database, tx: Callable[[Connection], T]) -> T:
    """Runs a unit of work that writes a value, again when it lost the race for the block's next version."""
    for attempt in range(_ATTEMPTS):
        try:
            return await db.write(tx)
        except Aborted as exc:
            if exc.reason != BLOCK_CHANGED or attempt == _ATTEMPTS - 1:
                raise
            log.debug("block changed concurrently; writing again (attempt %d)", attempt + 2)
    raise AssertionError("unreachable")


class BlockHistory:
    """A block's versions: listing, undo, redo, restore; and the sweep that applies the age limit."""

    def __init__(self, db: Database, versioning: Versioning) -> None:
        self._db = db
        self._versioning = versioning

    async def list(
        self, org_id: str, block_id: str, *, size: int = 0, token: str = ""
    ) -> tuple[list[BlockVersion], str]:
        """A page of the block's kept versions, newest first, and the next page's token."""
        require_id(block_id, "block_id")
        limit = page_size(size)
        position = decode_token(token, "block_versions")
        below = None if position is None else int(position.text("v"))

        def tx(conn: Connection) -> list[BlockVersion]:
            Q.get(conn, org_id, block_id)  # NOT_FOUND for a block the caller cannot see
            return V.page(conn, org_id, block_id, below=below, limit=limit + 1)

        versions = await self._db.read(tx)
        if len(versions) > limit:
            versions = versions[:limit]
            return versions, encode_token("block_versions", v=str(versions[-1].version))
        return versions, ""

    async def undo(self, org_id: str, block_id: str, editor: Editor) -> tuple[Block, BlockVersion]:
        """Takes back the latest applied edit."""
        return await self._move(org_id, block_id, editor, "undo")

    async def redo(self, org_id: str, block_id: str, editor: Editor) -> tuple[Block, BlockVersion]:
        """Applies again the edit undone last."""
        return await self._move(org_id, block_id, editor, "redo")

    async def _move(
        self, org_id: str, block_id: str, editor: Editor, operation: str
    ) -> tuple[Block, BlockVersion]:
        """One step on the undo stack: back (undo: the newest applied edit's value before) or forward
        (redo: the oldest undone edit's value after), written as a new version."""
        undo = operation == "undo"

        def tx(conn: Connection) -> tuple[Block, BlockVersion]:
            block = self._changeable(
                conn, org_id, block_id, f"{operation} is refused; clear read_only to allow it"
            )
            edit = V.edge(conn, org_id, block.id, APPLIED if undo else UNDONE, newest=undo)
            if edit is None:
                why = (
                    "no edit to undo"
                    if undo
                    else "no undone edit to redo (an edit made after an undo discards it)"
                )
                raise FailedPrecondition(
                    f"block {block.id} has {why}",
                    reason="NOTHING_TO_UNDO" if undo else "NOTHING_TO_REDO",
                    metadata={"block_id": block.id},
                )
            value = edit.before if undo else edit.after
            check_fits(block.label, value, block.limit, "block_id")
            V.set_state(conn, block.id, edit.version, UNDONE if undo else APPLIED)
            written = self._versioning.record(
                conn,
                org_id,
                block,
                value,
                operation,
                editor,
                now=utcnow(),
                target_version=edit.version,
                always=True,
            )
            assert written is not None
            return Q.get(conn, org_id, block.id), written

        return await write(self._db, tx)

    async def restore(
        self, org_id: str, block_id: str, version: int, editor: Editor
    ) -> tuple[Block, BlockVersion | None]:
        """Gives the block the value of one of its kept versions (an edit; None when nothing changed)."""
        if version < 1:
            raise invalid("version", "must be a version number, from 1")

        def tx(conn: Connection) -> tuple[Block, BlockVersion | None]:
            block = self._changeable(
                conn, org_id, block_id, "restore is refused; clear read_only to allow it"
            )
            kept = V.get(conn, org_id, block.id, version)
            if kept is None:
                raise NotFound(
                    f"block {block.id} has no version {version} (it never existed, or is older than the "
                    "versions kept); list the block's history for the versions there are",
                    reason="BLOCK_VERSION_NOT_FOUND",
                    metadata={"block_id": block.id, "version": str(version)},
                )
            check_fits(block.label, kept.after, block.limit, "version")
            written = self._versioning.record(
                conn, org_id, block, kept.after, "restore", editor, now=utcnow(), target_version=version
            )
            return Q.get(conn, org_id, block.id), written

        return await write(self._db, tx)

    @property
    def sweeps(self) -> bool:
        """Whether versions expire by age, so a periodic sweep is needed."""
        return self._versioning.retention.max_age is not None

    async def sweep(self, now: datetime | None = None) -> int:
        """Deletes the versions older than the retention's age limit, of every block; returns how many."""
        max_age = self._versioning.retention.max_age
        if max_age is None:
            return 0
        cutoff = (now or utcnow()) - max_age
        return await self._db.write(V.sweep, cutoff)

    async def sweep_every(self, seconds: float) -> None:
        """Sweeps now and then every `seconds`, until cancelled."""
        while True:
            try:
                removed = await self.sweep()
            except Exception:  # the next sweep tries again
                log.exception("the sweep of old block versions failed")
            else:
                if removed:
                    log.info("deleted %d block versions older than the retention", removed)
            await asyncio.sleep(seconds)

    @staticmethod
    def _changeable(conn: Connection, org_id: str, block_id: str, refused: str) -> Block:
        require_id(block_id, "block_id")
        block = Versioning.locked(conn, org_id, Q.get(conn, org_id, block_id))
        check_changeable(block)
        check_not_read_only(block, refused)
        return block
