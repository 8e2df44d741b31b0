"""SQL for blocks and message histories. No business rules here: callers validate, this reads and writes.

Every function takes a sync SQLAlchemy `Connection` and is run as part of one unit of work by
`Database` (one hop off the event loop per RPC). Statements are Core selects of the needed
columns (no ORM entities to materialise), built once at import so their compiled form is cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, or_, select, text, update

from mnemo_core.db import table_of
from mnemo_core.errors import NotFound
from mnemo_memory.block_version_store import BlockVersionQueries
from mnemo_memory.blocks import Block, BlockSpec
from mnemo_memory.models import BlockAttachmentRow, BlockRow, HistoryRow, MessageRow
from mnemo_memory.ranking import scope_token

BUILTIN_ORG = ""
"""Organization of the built-in templates, which every organization sees."""

blocks_t = table_of(BlockRow)
attachments_t = table_of(BlockAttachmentRow)
messages_t = table_of(MessageRow)
histories_t = table_of(HistoryRow)

_BLOCK_COLUMNS = (
    blocks_t.c.id,
    blocks_t.c.label,
    blocks_t.c.value,
    blocks_t.c.char_limit,
    blocks_t.c.description,
    blocks_t.c.read_only,
    blocks_t.c.metadata_json,
    blocks_t.c.created_at,
    blocks_t.c.updated_at,
    blocks_t.c.is_template,
    blocks_t.c.template_name,
    blocks_t.c.from_template,
    blocks_t.c.org_id,
    blocks_t.c.version,
)

# An agent's blocks with every agent each is attached to, in one statement (the hot path of a turn).
_other = attachments_t.alias("other")
_AGENT_BLOCKS = (
    select(*_BLOCK_COLUMNS, _other.c.agent_id.label("attached_to"))
    .select_from(attachments_t)
    .join(blocks_t, blocks_t.c.id == attachments_t.c.block_id)
    .join(_other, _other.c.block_id == blocks_t.c.id)
    .where(
        attachments_t.c.agent_id == bindparam("agent_id"),
        attachments_t.c.org_id == bindparam("org_id"),
        blocks_t.c.org_id == bindparam("org_id"),
    )
    .order_by(blocks_t.c.created_at, blocks_t.c.id, _other.c.created_at, _other.c.agent_id)
)


def _block(row: Any, agent_ids: list[str]) -> Block:
    return Block(
        id=row.id,
        label=row.label,
        value=row.value,
        limit=row.char_limit,
        description=row.description,
        read_only=row.read_only,
        metadata=dict(row.metadata_json or {}),
        agent_ids=agent_ids,
        created_at=row.created_at,
        updated_at=row.updated_at,
        is_template=row.is_template,
        template_name=(row.template_name or "") if row.is_template else row.from_template,
        builtin=row.org_id == BUILTIN_ORG,
        version=row.version,
    )


def _visible(org_id: str) -> Any:
    """Blocks of the organization, and the built-in templates."""
    return or_(
        blocks_t.c.org_id == org_id, and_(blocks_t.c.org_id == BUILTIN_ORG, blocks_t.c.is_template.is_(True))
    )


class BlockQueries:
    """Block reads and writes on one connection."""

    @staticmethod
    def _views(conn: Connection, rows: Sequence[Any]) -> list[Block]:
        if not rows:
            return []
        attached: dict[str, list[str]] = {row.id: [] for row in rows}
        for block_id, agent_id in conn.execute(
            select(attachments_t.c.block_id, attachments_t.c.agent_id)
            .where(attachments_t.c.block_id.in_(list(attached)))
            .order_by(attachments_t.c.created_at, attachments_t.c.agent_id)
        ):
            attached[block_id].append(agent_id)
        return [_block(row, attached[row.id]) for row in rows]

    @staticmethod
    def get(conn: Connection, org_id: str, block_id: str) -> Block:
        row = conn.execute(select(*_BLOCK_COLUMNS).where(blocks_t.c.id == block_id, _visible(org_id))).first()
        if row is None:
            raise NotFound(
                f"block {block_id} not found", reason="BLOCK_NOT_FOUND", metadata={"block_id": block_id}
            )
        return BlockQueries._views(conn, [row])[0]

    @staticmethod
    def of_agent(conn: Connection, org_id: str, agent_id: str) -> list[Block]:
        """Every block attached to the agent, oldest first, each with all its agents."""
        blocks: dict[str, tuple[Any, list[str]]] = {}
        for row in conn.execute(_AGENT_BLOCKS, {"agent_id": agent_id, "org_id": org_id}):
            entry = blocks.get(row.id)
            if entry is None:
                blocks[row.id] = (row, [row.attached_to])
            else:
                entry[1].append(row.attached_to)
        return [_block(row, agent_ids) for row, agent_ids in blocks.values()]

    @staticmethod
    def get_by_label(conn: Connection, org_id: str, agent_id: str, label: str) -> Block | None:
        row = conn.execute(
            select(*_BLOCK_COLUMNS)
            .join(attachments_t, attachments_t.c.block_id == blocks_t.c.id)
            .where(
                attachments_t.c.agent_id == agent_id,
                attachments_t.c.org_id == org_id,
                attachments_t.c.label == label,
                blocks_t.c.org_id == org_id,
            )
        ).first()
        return None if row is None else BlockQueries._views(conn, [row])[0]

    @staticmethod
    def template(conn: Connection, org_id: str, name: str) -> Block | None:
        """The organization's template `name`, else the built-in one."""
        rows = conn.execute(
            select(*_BLOCK_COLUMNS).where(
                blocks_t.c.is_template.is_(True),
                blocks_t.c.template_name == name,
                blocks_t.c.org_id.in_([org_id, BUILTIN_ORG]),
            )
        ).all()
        if not rows:
            return None
        own = [row for row in rows if row.org_id == org_id]
        return BlockQueries._views(conn, own or rows)[0]

    @staticmethod
    def labels_of(conn: Connection, org_id: str, agent_id: str) -> list[str]:
        return list(
            conn.scalars(
                select(attachments_t.c.label)
                .where(attachments_t.c.agent_id == agent_id, attachments_t.c.org_id == org_id)
                .order_by(attachments_t.c.label)
            )
        )

    @staticmethod
    def label_taken(conn: Connection, org_id: str, agent_id: str, label: str) -> bool:
        found = conn.scalar(
            select(attachments_t.c.block_id).where(
                attachments_t.c.agent_id == agent_id,
                attachments_t.c.org_id == org_id,
                attachments_t.c.label == label,
            )
        )
        return found is not None

    @staticmethod
    def template_name_taken(conn: Connection, org_id: str, name: str) -> bool:
        found = conn.scalar(
            select(blocks_t.c.id).where(blocks_t.c.org_id == org_id, blocks_t.c.template_name == name)
        )
        return found is not None

    @staticmethod
    def list(
        conn: Connection,
        org_id: str,
        *,
        agent_id: str,
        label: str,
        templates: bool,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Block]:
        query = select(*_BLOCK_COLUMNS)
        if templates:
            query = query.where(_visible(org_id), blocks_t.c.is_template.is_(True))
        else:
            query = query.where(blocks_t.c.org_id == org_id, blocks_t.c.is_template.is_(False))
        if agent_id:
            query = query.join(attachments_t, attachments_t.c.block_id == blocks_t.c.id).where(
                attachments_t.c.agent_id == agent_id
            )
        if label:
            query = query.where(blocks_t.c.label == label)
        if after is not None:
            created, last_id = after
            query = query.where(
                or_(
                    blocks_t.c.created_at > created,
                    and_(blocks_t.c.created_at == created, blocks_t.c.id > last_id),
                )
            )
        rows = conn.execute(query.order_by(blocks_t.c.created_at, blocks_t.c.id).limit(limit)).all()
        return BlockQueries._views(conn, rows)

    @staticmethod
    def insert_block(
        conn: Connection,
        org_id: str,
        block_id: str,
        spec: BlockSpec,
        *,
        owner_agent_id: str | None,
        now: datetime,
        template_name: str | None = None,
        from_template: str = "",
        version: int = 1,
    ) -> None:
        conn.execute(
            insert(blocks_t).values(
                version=version,
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
                is_template=template_name is not None,
                template_name=template_name,
                from_template=from_template,
            )
        )

    @staticmethod
    def upsert_builtin_template(
        conn: Connection, block_id: str, name: str, spec: BlockSpec, now: datetime
    ) -> None:
        exists = conn.scalar(select(blocks_t.c.id).where(blocks_t.c.id == block_id))
        if exists is None:
            BlockQueries.insert_block(
                conn, BUILTIN_ORG, block_id, spec, owner_agent_id=None, now=now, template_name=name, version=0
            )
            return
        conn.execute(
            update(blocks_t)
            .where(blocks_t.c.id == block_id)
            .values(
                label=spec.label,
                value=spec.value,
                char_limit=spec.limit,
                description=spec.description,
                template_name=name,
            )
        )

    @staticmethod
    def attach(
        conn: Connection, org_id: str, block_id: str, agent_id: str, label: str, now: datetime
    ) -> None:
        conn.execute(
            insert(attachments_t).values(
                block_id=block_id, agent_id=agent_id, org_id=org_id, label=label, created_at=now
            )
        )

    @staticmethod
    def detach(conn: Connection, org_id: str, block_id: str, agent_id: str) -> None:
        conn.execute(
            delete(attachments_t).where(
                attachments_t.c.block_id == block_id,
                attachments_t.c.agent_id == agent_id,
                attachments_t.c.org_id == org_id,
            )
        )

    @staticmethod
    def update_block(
        conn: Connection,
        org_id: str,
        block_id: str,
        *,
        label: str,
        limit: int,
        description: str,
        read_only: bool,
        metadata: dict[str, Any],
        now: datetime,
    ) -> None:
        """Changes everything but the value (which changes as a new version, see block_versions)."""
        conn.execute(
            update(blocks_t)
            .where(blocks_t.c.id == block_id, blocks_t.c.org_id == org_id)
            .values(
                label=label,
                char_limit=limit,
                description=description,
                read_only=read_only,
                metadata_json=metadata,
                updated_at=now,
            )
        )
        conn.execute(update(attachments_t).where(attachments_t.c.block_id == block_id).values(label=label))

    @staticmethod
    def delete_block(conn: Connection, org_id: str, block_id: str) -> bool:
        if (
            conn.scalar(select(blocks_t.c.id).where(blocks_t.c.id == block_id, blocks_t.c.org_id == org_id))
            is None
        ):
            return False
        conn.execute(delete(attachments_t).where(attachments_t.c.block_id == block_id))
        BlockVersionQueries.delete_of(conn, [block_id])
        result = conn.execute(delete(blocks_t).where(blocks_t.c.id == block_id, blocks_t.c.org_id == org_id))
        return bool(result.rowcount)

    @staticmethod
    def detach_agent(conn: Connection, org_id: str, agent_id: str) -> int:
        conn.execute(
            delete(attachments_t).where(
                attachments_t.c.agent_id == agent_id, attachments_t.c.org_id == org_id
            )
        )
        still_attached = select(attachments_t.c.block_id).where(attachments_t.c.block_id == blocks_t.c.id)
        orphans = list(
            conn.scalars(
                select(blocks_t.c.id).where(
                    blocks_t.c.owner_agent_id == agent_id,
                    blocks_t.c.org_id == org_id,
                    ~still_attached.exists(),
                )
            )
        )
        if not orphans:
            return 0
        BlockVersionQueries.delete_of(conn, orphans)
        result = conn.execute(delete(blocks_t).where(blocks_t.c.id.in_(orphans), blocks_t.c.org_id == org_id))
        return int(result.rowcount)


@dataclass(frozen=True, slots=True)
class HistoryState:
    """Per-agent bookkeeping of a history."""

    next_seq: int
    message_count: int
    context_start_seq: int
    summary_message_id: str | None


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message row to insert; `content` is the whole serialized Message."""

    id: str
    seq: int
    run_id: str
    step: int
    position: int
    kind: str
    text: str
    content: bytes
    created_at: datetime


_HISTORY = select(
    histories_t.c.next_seq,
    histories_t.c.message_count,
    histories_t.c.context_start_seq,
    histories_t.c.summary_message_id,
).where(histories_t.c.org_id == bindparam("org_id"), histories_t.c.agent_id == bindparam("agent_id"))

_BATCH = (
    select(messages_t.c.content)
    .where(
        messages_t.c.org_id == bindparam("org_id"),
        messages_t.c.agent_id == bindparam("agent_id"),
        messages_t.c.run_id == bindparam("run_id"),
        messages_t.c.step == bindparam("step"),
    )
    .order_by(messages_t.c.position)
)

# A range on the (org, agent, seq) index: loading the window never grows with the history.
_WINDOW = (
    select(messages_t.c.id, messages_t.c.content)
    .where(
        messages_t.c.org_id == bindparam("org_id"),
        messages_t.c.agent_id == bindparam("agent_id"),
        messages_t.c.seq >= bindparam("start_seq"),
    )
    .order_by(messages_t.c.seq)
)
_SUMMARY = select(messages_t.c.id, messages_t.c.org_id, messages_t.c.content).where(
    messages_t.c.id == bindparam("summary_id")
)

_INSERT_MESSAGE = insert(messages_t)

# On Postgres, message keys come from a sequence and concurrent appends can commit out of key order,
# while the background embedder's watermark (recall.py) must never pass a key whose row is still
# invisible. Appends hold this advisory lock shared until they commit; the embedder takes it exclusively
# before it reads a batch, so every key drawn before then belongs to a finished transaction.
_APPENDS_LOCK = 0x6D656D6F  # any fixed number; advisory lock keys are per database
_HOLD_APPENDS = text("SELECT pg_advisory_xact_lock_shared(:key)").bindparams(key=_APPENDS_LOCK)
_WAIT_FOR_APPENDS = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=_APPENDS_LOCK)


def wait_for_appends(conn: Connection) -> None:
    """Waits until every message append in progress has committed (Postgres; SQLite has one writer)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_WAIT_FOR_APPENDS)


# Writers of one agent's history (appends, compaction) take this transaction lock first on Postgres: they
# read the history's counters and write them back, and two replicas (or two concurrent calls) appending
# at once would otherwise both create the history row, or both take the same positions. SQLite has one
# writer. Two int4 keys: a space apart from the single-key `_APPENDS_LOCK`.
_LOCK_HISTORY = text("SELECT pg_advisory_xact_lock(hashtext(:org_id), hashtext(:agent_id))")


class MessageQueries:
    """History reads and writes on one connection."""

    @staticmethod
    def lock(conn: Connection, org_id: str, agent_id: str) -> None:
        """Serializes the writers of one agent's history until the transaction ends (Postgres)."""
        if conn.dialect.name == "postgresql":
            conn.execute(_LOCK_HISTORY, {"org_id": org_id, "agent_id": agent_id})

    @staticmethod
    def history(conn: Connection, org_id: str, agent_id: str) -> HistoryState | None:
        row = conn.execute(_HISTORY, {"org_id": org_id, "agent_id": agent_id}).first()
        return None if row is None else HistoryState(*row)

    @staticmethod
    def batch(conn: Connection, org_id: str, agent_id: str, run_id: str, step: int) -> list[bytes]:
        """The stored messages of one (run, step) batch, serialized, in order."""
        return list(
            conn.scalars(_BATCH, {"org_id": org_id, "agent_id": agent_id, "run_id": run_id, "step": step})
        )

    @staticmethod
    def reserve(
        conn: Connection, org_id: str, agent_id: str, count: int, history: HistoryState | None
    ) -> int:
        """Reserves `count` history positions for the agent; returns the first."""
        if history is None:
            conn.execute(
                insert(histories_t).values(
                    org_id=org_id,
                    agent_id=agent_id,
                    next_seq=1 + count,
                    message_count=count,
                    context_start_seq=1,
                )
            )
            return 1
        conn.execute(
            update(histories_t)
            .where(histories_t.c.org_id == org_id, histories_t.c.agent_id == agent_id)
            .values(next_seq=history.next_seq + count, message_count=history.message_count + count)
        )
        return history.next_seq

    @staticmethod
    def insert(conn: Connection, org_id: str, agent_id: str, rows: Sequence[NewMessage]) -> None:
        scope = scope_token("agent", agent_id)
        if conn.dialect.name == "postgresql":
            conn.execute(_HOLD_APPENDS)
        conn.execute(
            _INSERT_MESSAGE,
            [
                {
                    "id": row.id,
                    "org_id": org_id,
                    "agent_id": agent_id,
                    "seq": row.seq,
                    "run_id": row.run_id,
                    "step": row.step,
                    "position": row.position,
                    "kind": row.kind,
                    "text": row.text,
                    "scope": scope,
                    "content": row.content,
                    "created_at": row.created_at,
                }
                for row in rows
            ],
        )

    @staticmethod
    def window(
        conn: Connection, org_id: str, agent_id: str, start_seq: int, summary_id: str | None
    ) -> list[tuple[str, bytes]]:
        """(id, serialized message) of every message from `start_seq` on, and of the summary, by position."""
        rows = [
            (row.id, row.content)
            for row in conn.execute(_WINDOW, {"org_id": org_id, "agent_id": agent_id, "start_seq": start_seq})
        ]
        if summary_id and summary_id not in {message_id for message_id, _ in rows}:
            summary = conn.execute(_SUMMARY, {"summary_id": summary_id}).first()
            if summary is not None and summary.org_id == org_id:
                rows.append((summary.id, summary.content))
        return rows

    @staticmethod
    def set_window(
        conn: Connection, org_id: str, agent_id: str, start_seq: int, summary_id: str | None
    ) -> None:
        conn.execute(
            update(histories_t)
            .where(histories_t.c.org_id == org_id, histories_t.c.agent_id == agent_id)
            .values(context_start_seq=start_seq, summary_message_id=summary_id)
        )

    @staticmethod
    def seq_of(conn: Connection, org_id: str, agent_id: str, message_id: str) -> int | None:
        seq: int | None = conn.scalar(
            select(messages_t.c.seq).where(
                messages_t.c.id == message_id,
                messages_t.c.agent_id == agent_id,
                messages_t.c.org_id == org_id,
            )
        )
        return seq

    @staticmethod
    def first_id_from(conn: Connection, org_id: str, agent_id: str, start_seq: int) -> str | None:
        found: str | None = conn.scalar(
            select(messages_t.c.id)
            .where(
                messages_t.c.org_id == org_id,
                messages_t.c.agent_id == agent_id,
                messages_t.c.seq >= start_seq,
            )
            .order_by(messages_t.c.seq)
            .limit(1)
        )
        return found

    @staticmethod
    def page(
        conn: Connection,
        org_id: str,
        agent_id: str,
        *,
        descending: bool,
        above: int | None,
        below: int | None,
        run_id: str,
        limit: int,
    ) -> list[tuple[int, bytes]]:
        """(seq, serialized message) of a page of the history."""
        query = select(messages_t.c.seq, messages_t.c.content).where(
            messages_t.c.agent_id == agent_id, messages_t.c.org_id == org_id
        )
        if above is not None:
            query = query.where(messages_t.c.seq > above)
        if below is not None:
            query = query.where(messages_t.c.seq < below)
        if run_id:
            query = query.where(messages_t.c.run_id == run_id)
        order = messages_t.c.seq.desc() if descending else messages_t.c.seq
        return [(row.seq, row.content) for row in conn.execute(query.order_by(order).limit(limit))]

    @staticmethod
    def count_between(conn: Connection, org_id: str, agent_id: str, first_seq: int, end_seq: int) -> int:
        """Messages of the agent with first_seq <= seq < end_seq."""
        total = conn.scalar(
            select(func.count()).where(
                messages_t.c.agent_id == agent_id,
                messages_t.c.org_id == org_id,
                messages_t.c.seq >= first_seq,
                messages_t.c.seq < end_seq,
            )
        )
        return int(total or 0)

    @staticmethod
    def by_pks(conn: Connection, org_id: str, pks: Sequence[int]) -> dict[int, bytes]:
        """Serialized messages by integer key."""
        if not pks:
            return {}
        # By key alone (an org_id condition tempts SQLite into another index); the org is checked here.
        rows = conn.execute(
            select(messages_t.c.pk, messages_t.c.org_id, messages_t.c.content).where(
                messages_t.c.pk.in_(list(pks))
            )
        )
        return {row.pk: row.content for row in rows if row.org_id == org_id}

    @staticmethod
    def purge(conn: Connection, org_id: str, agent_id: str) -> int:
        result = conn.execute(
            delete(messages_t).where(messages_t.c.agent_id == agent_id, messages_t.c.org_id == org_id)
        )
        conn.execute(
            delete(histories_t).where(histories_t.c.agent_id == agent_id, histories_t.c.org_id == org_id)
        )
        return int(result.rowcount)
