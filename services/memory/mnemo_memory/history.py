"""Message history: append-only, idempotent per (agent, run, step), paged, with a context window.

The context window is a suffix of the history (from `context_start_seq`), preceded by a summary
message once older messages were evicted. Evicted messages stay in the history.
"""

from __future__ import annotations

from dataclasses import dataclass

from mnemo.common.v1 import message_pb2
from mnemo_core.errors import Aborted, NotFound
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.validation import check_text, invalid
from mnemo_core.wire import to_timestamp, utcnow
from mnemo_memory.models import MessageRow
from mnemo_memory.store import MessageStore, MessageTx

MAX_BATCH = 1000
MAX_TEXT = 1_000_000


def searchable_text(message: message_pb2.Message) -> str:
    """The text of a message that recall search looks at."""
    kind = message.WhichOneof("content")
    if kind == "tool_call":
        call = message.tool_call.tool_call
        return f"{call.name}({call.arguments})"
    if kind == "tool_return":
        return message.tool_return.content
    if kind in ("system", "user", "assistant", "reasoning", "event"):
        text: str = getattr(message, kind).text
        return text
    return ""


def _checked_content(message: message_pb2.Message, field: str) -> message_pb2.Message:
    kind = message.WhichOneof("content")
    if kind is None:
        raise invalid(field, "has no content (set exactly one of system, user, assistant, ...)")
    content = message_pb2.Message()
    getattr(content, kind).CopyFrom(getattr(message, kind))
    for name, value in getattr(content, kind).ListFields():
        if isinstance(value, str):
            check_text(value, f"{field}.{kind}.{name.name}", max_chars=MAX_TEXT)
    if kind == "tool_call":
        for name, value in content.tool_call.tool_call.ListFields():
            check_text(value, f"{field}.tool_call.tool_call.{name.name}", max_chars=MAX_TEXT)
    return content


def to_message(row: MessageRow) -> message_pb2.Message:
    """The wire message for a stored row."""
    message = message_pb2.Message.FromString(row.content)
    message.id = row.id
    message.agent_id = row.agent_id
    message.run_id = row.run_id
    message.step = row.step
    created = to_timestamp(row.created_at)
    if created is not None:
        message.create_time.CopyFrom(created)
    return message


@dataclass(frozen=True, slots=True)
class ContextWindow:
    """The messages an agent sees, and the size of its whole history."""

    messages: list[message_pb2.Message]
    history_count: int


class History:
    """Message histories of one organization at a time."""

    def __init__(self, store: MessageStore) -> None:
        self._store = store

    async def append(
        self, org_id: str, agent_id: str, run_id: str, step: int, messages: list[message_pb2.Message]
    ) -> list[message_pb2.Message]:
        """Stores one step's messages atomically; a retry of the same (run, step) returns the stored ones."""
        require_id(agent_id, "agent_id")
        require_id(run_id, "run_id")
        if step < 0:
            raise invalid("step", "must be >= 0")
        if not messages:
            raise invalid("messages", "must not be empty")
        if len(messages) > MAX_BATCH:
            raise invalid("messages", f"at most {MAX_BATCH} messages per batch")
        contents = [_checked_content(m, f"messages[{i}]") for i, m in enumerate(messages)]
        now = utcnow()
        async with self._store.transaction() as tx:
            stored = await tx.batch(org_id, agent_id, run_id, step)
            if stored:
                return [to_message(row) for row in stored]
            first = await tx.reserve(org_id, agent_id, len(contents))
            rows = [
                MessageRow(
                    id=new_id("message"),
                    org_id=org_id,
                    agent_id=agent_id,
                    seq=first + i,
                    run_id=run_id,
                    step=step,
                    position=i,
                    kind=content.WhichOneof("content") or "",
                    text=searchable_text(content),
                    content=content.SerializeToString(),
                    created_at=now,
                )
                for i, content in enumerate(contents)
            ]
            await tx.insert(rows)
        return [to_message(row) for row in rows]

    async def list(
        self,
        org_id: str,
        agent_id: str,
        *,
        size: int = 0,
        token: str = "",
        descending: bool = False,
        before: str = "",
        after: str = "",
        run_id: str = "",
    ) -> tuple[list[message_pb2.Message], str]:
        """A page of an agent's history; returns (messages, next page token)."""
        require_id(agent_id, "agent_id")
        limit = page_size(size)
        position = decode_token(token, "messages")
        async with self._store.reading() as tx:
            above = await self._seq(tx, org_id, agent_id, after, "after")
            below = await self._seq(tx, org_id, agent_id, before, "before")
            if position is not None:
                last = position.integer("s")
                if descending:
                    below = last if below is None else min(below, last)
                else:
                    above = last if above is None else max(above, last)
            rows = await tx.page(
                org_id,
                agent_id,
                descending=descending,
                above=above,
                below=below,
                run_id=run_id,
                limit=limit + 1,
            )
        next_token = encode_token("messages", s=rows[limit - 1].seq) if len(rows) > limit else ""
        return [to_message(row) for row in rows[:limit]], next_token

    @staticmethod
    async def _seq(tx: MessageTx, org_id: str, agent_id: str, message_id: str, field: str) -> int | None:
        if not message_id:
            return None
        seq = await tx.seq_of(org_id, agent_id, message_id)
        if seq is None:
            raise NotFound(
                f"{field}: message {message_id} is not in this agent's history",
                reason="MESSAGE_NOT_FOUND",
                metadata={"message_id": message_id},
            )
        return seq

    async def context_window(self, org_id: str, agent_id: str) -> ContextWindow:
        """The agent's in-context messages, oldest first, with a summary (if any) in front."""
        require_id(agent_id, "agent_id")
        async with self._store.reading() as tx:
            history = await tx.history(org_id, agent_id)
            if history is None:
                return ContextWindow(messages=[], history_count=0)
            rows = await tx.page(
                org_id,
                agent_id,
                descending=False,
                above=history.context_start_seq - 1,
                below=None,
                run_id="",
                limit=1_000_000,
            )
            summary_id = history.summary_message_id
            summary = await tx.by_ids(org_id, [summary_id]) if summary_id else []
        rows = summary + [row for row in rows if row.id != summary_id]
        return ContextWindow(messages=[to_message(row) for row in rows], history_count=history.message_count)

    async def compact(
        self,
        org_id: str,
        agent_id: str,
        keep_from: str,
        summary: message_pb2.Message | None,
        *,
        expected_first: str = "",
    ) -> tuple[message_pb2.Message | None, int]:
        """Evicts the window's messages older than `keep_from` and shows `summary` before the window.

        Returns the stored summary and how many messages left the window.
        """
        require_id(agent_id, "agent_id")
        require_id(keep_from, "keep_from_message_id")
        content = _checked_content(summary, "summary") if summary is not None else None
        if content is not None and content.WhichOneof("content") != "event":
            raise invalid("summary", "must carry event content")
        async with self._store.transaction() as tx:
            history = await tx.history(org_id, agent_id)
            keep_seq = await self._seq(tx, org_id, agent_id, keep_from, "keep_from_message_id")
            if history is None or keep_seq is None:
                raise NotFound(f"agent {agent_id} has no history", reason="MESSAGE_NOT_FOUND")
            if expected_first:
                first = await tx.page(
                    org_id,
                    agent_id,
                    descending=False,
                    above=history.context_start_seq - 1,
                    below=None,
                    run_id="",
                    limit=1,
                )
                if not first or first[0].id != expected_first:
                    raise Aborted(
                        "the context window changed since it was read; read it again",
                        reason="CONTEXT_WINDOW_CHANGED",
                    )
            if keep_seq < history.context_start_seq:
                raise invalid("keep_from_message_id", "is already outside the context window")
            evicted = await tx.count_between(org_id, agent_id, history.context_start_seq, keep_seq)
            stored = None
            if content is not None:
                seq = await tx.reserve(org_id, agent_id, 1)
                row = MessageRow(
                    id=new_id("message"),
                    org_id=org_id,
                    agent_id=agent_id,
                    seq=seq,
                    run_id=new_id("compaction"),
                    step=0,
                    position=0,
                    kind="event",
                    text=searchable_text(content),
                    content=content.SerializeToString(),
                    created_at=utcnow(),
                )
                await tx.insert([row])
                stored = to_message(row)
            history.context_start_seq = keep_seq
            history.summary_message_id = stored.id if stored is not None else None
        return stored, evicted

    async def purge(self, org_id: str, agent_id: str) -> int:
        """Deletes an agent's whole history; returns how many messages went."""
        require_id(agent_id, "agent_id")
        async with self._store.transaction() as tx:
            return await tx.purge(org_id, agent_id)
