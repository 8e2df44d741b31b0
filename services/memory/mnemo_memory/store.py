"""SQL for the memory schema. No business rules here: callers validate, this reads and writes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mnemo_core.db import Database, Store
from mnemo_core.errors import NotFound
from mnemo_memory.blocks import Block, BlockSpec
from mnemo_memory.models import BlockAttachmentRow, BlockRow, HistoryRow, MessageRow


class BlockTx:
    """Block queries within one session (one transaction when writing)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _agent_ids(self, block_ids: Sequence[str]) -> dict[str, list[str]]:
        rows = await self.session.execute(
            select(BlockAttachmentRow.block_id, BlockAttachmentRow.agent_id)
            .where(BlockAttachmentRow.block_id.in_(block_ids))
            .order_by(BlockAttachmentRow.created_at, BlockAttachmentRow.agent_id)
        )
        result: dict[str, list[str]] = {block_id: [] for block_id in block_ids}
        for block_id, agent_id in rows:
            result[block_id].append(agent_id)
        return result

    async def _views(self, rows: Sequence[BlockRow]) -> list[Block]:
        agents = await self._agent_ids([row.id for row in rows]) if rows else {}
        return [
            Block(
                id=row.id,
                label=row.label,
                value=row.value,
                limit=row.char_limit,
                description=row.description,
                read_only=row.read_only,
                metadata=dict(row.metadata_json or {}),
                agent_ids=agents.get(row.id, []),
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
            for row in rows
        ]

    async def get(self, org_id: str, block_id: str) -> Block:
        row = await self.session.scalar(
            select(BlockRow).where(BlockRow.id == block_id, BlockRow.org_id == org_id)
        )
        if row is None:
            raise NotFound(
                f"block {block_id} not found", reason="BLOCK_NOT_FOUND", metadata={"block_id": block_id}
            )
        return (await self._views([row]))[0]

    async def get_by_label(self, org_id: str, agent_id: str, label: str) -> Block | None:
        row = await self.session.scalar(
            select(BlockRow)
            .join(BlockAttachmentRow, BlockAttachmentRow.block_id == BlockRow.id)
            .where(
                BlockAttachmentRow.agent_id == agent_id,
                BlockAttachmentRow.label == label,
                BlockRow.org_id == org_id,
            )
        )
        return None if row is None else (await self._views([row]))[0]

    async def labels_of(self, org_id: str, agent_id: str) -> list[str]:
        rows = await self.session.scalars(
            select(BlockAttachmentRow.label)
            .where(BlockAttachmentRow.agent_id == agent_id, BlockAttachmentRow.org_id == org_id)
            .order_by(BlockAttachmentRow.label)
        )
        return list(rows)

    async def label_taken(self, org_id: str, agent_id: str, label: str) -> bool:
        found = await self.session.scalar(
            select(BlockAttachmentRow.block_id).where(
                BlockAttachmentRow.agent_id == agent_id,
                BlockAttachmentRow.org_id == org_id,
                BlockAttachmentRow.label == label,
            )
        )
        return found is not None

    async def list(
        self, org_id: str, *, agent_id: str, label: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Block]:
        query = select(BlockRow).where(BlockRow.org_id == org_id)
        if agent_id:
            query = query.join(BlockAttachmentRow, BlockAttachmentRow.block_id == BlockRow.id).where(
                BlockAttachmentRow.agent_id == agent_id
            )
        if label:
            query = query.where(BlockRow.label == label)
        if after is not None:
            created, last_id = after
            query = query.where(
                or_(
                    BlockRow.created_at > created,
                    and_(BlockRow.created_at == created, BlockRow.id > last_id),
                )
            )
        rows = await self.session.scalars(query.order_by(BlockRow.created_at, BlockRow.id).limit(limit))
        return await self._views(list(rows))

    async def insert_block(
        self, org_id: str, block_id: str, spec: BlockSpec, *, owner_agent_id: str | None, now: datetime
    ) -> None:
        self.session.add(
            BlockRow(
                id=block_id,
                org_id=org_id,
                label=spec.label,
                value=spec.value,
                char_limit=spec.limit,
                description=spec.description,
                read_only=spec.read_only,
                metadata_json=spec.metadata,
                owner_agent_id=owner_agent_id,
                created_at=now,
                updated_at=now,
            )
        )
        await self.session.flush()

    async def attach(self, org_id: str, block_id: str, agent_id: str, label: str, now: datetime) -> None:
        self.session.add(
            BlockAttachmentRow(
                block_id=block_id, agent_id=agent_id, org_id=org_id, label=label, created_at=now
            )
        )
        await self.session.flush()

    async def detach(self, org_id: str, block_id: str, agent_id: str) -> None:
        await self.session.execute(
            delete(BlockAttachmentRow).where(
                BlockAttachmentRow.block_id == block_id,
                BlockAttachmentRow.agent_id == agent_id,
                BlockAttachmentRow.org_id == org_id,
            )
        )

    async def update_block(
        self,
        org_id: str,
        block_id: str,
        *,
        label: str,
        value: str,
        limit: int,
        description: str,
        read_only: bool,
        metadata: dict[str, Any],
        now: datetime,
    ) -> None:
        await self.session.execute(
            update(BlockRow)
            .where(BlockRow.id == block_id, BlockRow.org_id == org_id)
            .values(
                label=label,
                value=value,
                char_limit=limit,
                description=description,
                read_only=read_only,
                metadata_json=metadata,
                updated_at=now,
            )
        )
        await self.session.execute(
            update(BlockAttachmentRow).where(BlockAttachmentRow.block_id == block_id).values(label=label)
        )

    async def set_value(self, org_id: str, block_id: str, value: str, now: datetime) -> None:
        await self.session.execute(
            update(BlockRow)
            .where(BlockRow.id == block_id, BlockRow.org_id == org_id)
            .values(value=value, updated_at=now)
        )

    async def delete_block(self, org_id: str, block_id: str) -> bool:
        await self.session.execute(delete(BlockAttachmentRow).where(BlockAttachmentRow.block_id == block_id))
        result = await self.session.execute(
            delete(BlockRow).where(BlockRow.id == block_id, BlockRow.org_id == org_id)
        )
        return bool(getattr(result, "rowcount", 0))

    async def detach_agent(self, org_id: str, agent_id: str) -> int:
        await self.session.execute(
            delete(BlockAttachmentRow).where(
                BlockAttachmentRow.agent_id == agent_id, BlockAttachmentRow.org_id == org_id
            )
        )
        still_attached = select(BlockAttachmentRow.block_id).where(BlockAttachmentRow.block_id == BlockRow.id)
        result = await self.session.execute(
            delete(BlockRow).where(
                BlockRow.owner_agent_id == agent_id,
                BlockRow.org_id == org_id,
                ~still_attached.exists(),
            )
        )
        return int(getattr(result, "rowcount", 0))


class MessageTx:
    """History queries within one session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def history(self, org_id: str, agent_id: str) -> HistoryRow | None:
        return await self.session.scalar(
            select(HistoryRow).where(HistoryRow.agent_id == agent_id, HistoryRow.org_id == org_id)
        )

    async def batch(self, org_id: str, agent_id: str, run_id: str, step: int) -> list[MessageRow]:
        rows = await self.session.scalars(
            select(MessageRow)
            .where(
                MessageRow.agent_id == agent_id,
                MessageRow.run_id == run_id,
                MessageRow.step == step,
                MessageRow.org_id == org_id,
            )
            .order_by(MessageRow.position)
        )
        return list(rows)

    async def reserve(self, org_id: str, agent_id: str, count: int) -> int:
        """Reserves `count` history positions for the agent; returns the first."""
        history = await self.history(org_id, agent_id)
        if history is None:
            history = HistoryRow(
                agent_id=agent_id, org_id=org_id, next_seq=1, message_count=0, context_start_seq=1
            )
            self.session.add(history)
            await self.session.flush()
        first = history.next_seq
        history.next_seq = first + count
        history.message_count = history.message_count + count
        await self.session.flush()
        return first

    async def insert(self, rows: Sequence[MessageRow]) -> None:
        self.session.add_all(rows)
        await self.session.flush()

    async def seq_of(self, org_id: str, agent_id: str, message_id: str) -> int | None:
        seq: int | None = await self.session.scalar(
            select(MessageRow.seq).where(
                MessageRow.id == message_id, MessageRow.agent_id == agent_id, MessageRow.org_id == org_id
            )
        )
        return seq

    async def page(
        self,
        org_id: str,
        agent_id: str,
        *,
        descending: bool,
        above: int | None,
        below: int | None,
        run_id: str,
        limit: int,
    ) -> list[MessageRow]:
        query = select(MessageRow).where(MessageRow.agent_id == agent_id, MessageRow.org_id == org_id)
        if above is not None:
            query = query.where(MessageRow.seq > above)
        if below is not None:
            query = query.where(MessageRow.seq < below)
        if run_id:
            query = query.where(MessageRow.run_id == run_id)
        order = MessageRow.seq.desc() if descending else MessageRow.seq
        return list(await self.session.scalars(query.order_by(order).limit(limit)))

    async def count_between(self, org_id: str, agent_id: str, first_seq: int, end_seq: int) -> int:
        """Messages of the agent with first_seq <= seq < end_seq."""
        total = await self.session.scalar(
            select(func.count()).where(
                MessageRow.agent_id == agent_id,
                MessageRow.org_id == org_id,
                MessageRow.seq >= first_seq,
                MessageRow.seq < end_seq,
            )
        )
        return int(total or 0)

    async def by_ids(self, org_id: str, message_ids: Sequence[str]) -> list[MessageRow]:
        rows = await self.session.scalars(
            select(MessageRow).where(MessageRow.id.in_(message_ids), MessageRow.org_id == org_id)
        )
        return list(rows)

    async def purge(self, org_id: str, agent_id: str) -> int:
        result = await self.session.execute(
            delete(MessageRow).where(MessageRow.agent_id == agent_id, MessageRow.org_id == org_id)
        )
        await self.session.execute(
            delete(HistoryRow).where(HistoryRow.agent_id == agent_id, HistoryRow.org_id == org_id)
        )
        return int(getattr(result, "rowcount", 0))


BlockStore = Store[BlockTx]
MessageStore = Store[MessageTx]


def block_store(db: Database) -> BlockStore:
    """Block queries on the memory database."""
    return Store(db, BlockTx)


def message_store(db: Database) -> MessageStore:
    """History queries on the memory database."""
    return Store(db, MessageTx)
