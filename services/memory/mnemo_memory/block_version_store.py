"""SQL for the versions of blocks' values. No rules here: `block_versions` decides, this reads and writes.

Functions take a sync `Connection` and run inside a unit of work (`Database.read` / `Database.write`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from mnemo_core.db import table_of
from mnemo_memory.blocks import BlockVersion, Editor
from mnemo_memory.models import BlockRow, BlockVersionRow

blocks_t = table_of(BlockRow)
versions_t = table_of(BlockVersionRow)

_COLUMNS = (
    versions_t.c.block_id,
    versions_t.c.version,
    versions_t.c.operation,
    versions_t.c.actor_type,
    versions_t.c.actor_id,
    versions_t.c.run_id,
    versions_t.c.before,
    versions_t.c.after,
    versions_t.c.state,
    versions_t.c.target_version,
    versions_t.c.created_at,
)


def _version(row: Any) -> BlockVersion:
    return BlockVersion(
        block_id=row.block_id,
        version=row.version,
        operation=row.operation,
        editor=Editor(row.actor_type, row.actor_id, row.run_id),
        before=row.before,
        after=row.after,
        state=row.state,
        target_version=row.target_version,
        created_at=row.created_at,
    )


class BlockVersionQueries:
    """Version reads and writes on one connection."""

    @staticmethod
    def set_value(
        conn: Connection, org_id: str, block_id: str, value: str, *, expected_version: int, now: datetime
    ) -> bool:
        """Sets the value as the next version, if the block is still at `expected_version`."""
        result = conn.execute(
            update(blocks_t)
            .where(
                blocks_t.c.id == block_id,
                blocks_t.c.org_id == org_id,
                blocks_t.c.version == expected_version,
            )
            .values(value=value, version=expected_version + 1, updated_at=now)
        )
        return bool(result.rowcount)

    @staticmethod
    def insert(
        conn: Connection,
        org_id: str,
        block_id: str,
        version: int,
        *,
        operation: str,
        editor: Editor,
        before: str,
        after: str,
        state: str,
        target_version: int | None,
        now: datetime,
    ) -> BlockVersion:
        values = {
            "block_id": block_id,
            "version": version,
            "org_id": org_id,
            "operation": operation,
            "actor_type": editor.type,
            "actor_id": editor.id,
            "run_id": editor.run_id,
            "before": before,
            "after": after,
            "state": state,
            "target_version": target_version,
            "created_at": now,
        }
        conn.execute(insert(versions_t).values(**values))
        return BlockVersion(
            block_id=block_id,
            version=version,
            operation=operation,
            editor=editor,
            before=before,
            after=after,
            state=state,
            target_version=target_version,
            created_at=now,
        )

    @staticmethod
    def get(conn: Connection, org_id: str, block_id: str, version: int) -> BlockVersion | None:
        row = conn.execute(
            select(*_COLUMNS).where(
                versions_t.c.block_id == block_id,
                versions_t.c.version == version,
                versions_t.c.org_id == org_id,
            )
        ).first()
        return None if row is None else _version(row)

    @staticmethod
    def edge(
        conn: Connection, org_id: str, block_id: str, state: str, *, newest: bool
    ) -> BlockVersion | None:
        """The newest (or oldest) version of the block in `state`."""
        order = versions_t.c.version.desc() if newest else versions_t.c.version
        row = conn.execute(
            select(*_COLUMNS)
            .where(
                versions_t.c.block_id == block_id,
                versions_t.c.org_id == org_id,
                versions_t.c.state == state,
            )
            .order_by(order)
            .limit(1)
        ).first()
        return None if row is None else _version(row)

    @staticmethod
    def set_state(conn: Connection, block_id: str, version: int, state: str) -> None:
        conn.execute(
            update(versions_t)
            .where(versions_t.c.block_id == block_id, versions_t.c.version == version)
            .values(state=state)
        )

    @staticmethod
    def replace_state(conn: Connection, block_id: str, old: str, new: str) -> None:
        conn.execute(
            update(versions_t)
            .where(versions_t.c.block_id == block_id, versions_t.c.state == old)
            .values(state=new)
        )

    @staticmethod
    def page(
        conn: Connection, org_id: str, block_id: str, *, below: int | None, limit: int
    ) -> list[BlockVersion]:
        """Versions of the block, newest first, below version `below` when given."""
        query = select(*_COLUMNS).where(versions_t.c.block_id == block_id, versions_t.c.org_id == org_id)
        if below is not None:
            query = query.where(versions_t.c.version < below)
        rows = conn.execute(query.order_by(versions_t.c.version.desc()).limit(limit))
        return [_version(row) for row in rows]

    @staticmethod
    def of_run(
        conn: Connection, org_id: str, block_id: str, run_id: str, operation: str
    ) -> list[BlockVersion]:
        """The block's versions that a run's memory tools wrote with `operation`."""
        rows = conn.execute(
            select(*_COLUMNS).where(
                versions_t.c.block_id == block_id,
                versions_t.c.org_id == org_id,
                versions_t.c.run_id == run_id,
                versions_t.c.operation == operation,
            )
        )
        return [_version(row) for row in rows]

    @staticmethod
    def prune(
        conn: Connection, block_id: str, *, below_version: int | None, older_than: datetime | None
    ) -> int:
        """Deletes the block's versions under `below_version` and those written before `older_than`."""
        conditions = []
        if below_version is not None:
            conditions.append(versions_t.c.version < below_version)
        if older_than is not None:
            conditions.append(versions_t.c.created_at < older_than)
        if not conditions:
            return 0
        removed = 0
        for condition in conditions:
            result = conn.execute(delete(versions_t).where(versions_t.c.block_id == block_id, condition))
            removed += int(result.rowcount)
        return removed

    @staticmethod
    def sweep(conn: Connection, older_than: datetime) -> int:
        """Deletes every version written before `older_than`, of any block."""
        return int(conn.execute(delete(versions_t).where(versions_t.c.created_at < older_than)).rowcount)

    @staticmethod
    def delete_of(conn: Connection, block_ids: Sequence[str]) -> None:
        """Deletes every version of these blocks (they are being deleted)."""
        if block_ids:
            conn.execute(delete(versions_t).where(versions_t.c.block_id.in_(list(block_ids))))
