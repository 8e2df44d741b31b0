"""Message history: append-only, idempotent per (agent, run, step), paged, with a context window.

The context window is a suffix of the history (from `context_start_seq`), preceded by a summary
message once older messages were evicted. Evicted messages stay in the history (and searchable).
Each message is stored as its whole serialized `Message`, so a window or a page is answered by
joining stored bytes, without building a Python object per message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import Connection

from mnemo.common.v1 import message_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo_core.db import Database
from mnemo_core.errors import Aborted, NotFound
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.validation import check_text, invalid
from mnemo_core.wire import utcnow
from mnemo_memory.store import HistoryState, MessageQueries, NewMessage

MAX_BATCH = 1000
MAX_TEXT = 1_000_000
# Tag of field 1 (repeated Message messages) of the window and page responses, length-delimited.
_MESSAGES_TAG = b"\x0a"


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


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def framed(blobs: Iterable[bytes]) -> bytes:
    """Serialized messages as the repeated field 1 of a response (the wire form of `messages`)."""
    return b"".join(_MESSAGES_TAG + _varint(len(blob)) + blob for blob in blobs)


def parse_messages(blobs: Iterable[bytes]) -> list[message_pb2.Message]:
    """Messages from their stored bytes, parsed in one call."""
    return list(history_pb2.AppendMessagesResponse.FromString(framed(blobs)).messages)


@dataclass(frozen=True, slots=True)
class ContextWindow:
    """The messages an agent sees (serialized, oldest first) and the size of its whole history."""

    serialized: list[bytes]
    history_count: int

    def response(self) -> history_pb2.GetContextWindowResponse:
        """The GetContextWindow response, parsed from the stored bytes at once."""
        response = history_pb2.GetContextWindowResponse.FromString(framed(self.serialized))
        response.history_count = self.history_count
        return response


class History:
    """Message histories of one organization at a time."""

    def __init__(self, db: Database, *, on_append: Callable[[], None] | None = None) -> None:
        self._db = db
        # Called after new messages are committed (wakes the background embedder).
        self._on_append = on_append

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
        for content in contents:
            content.agent_id = agent_id
            content.run_id = run_id
            content.step = step
            content.create_time.FromDatetime(now)

        def tx(conn: Connection) -> list[bytes] | None:
            MessageQueries.lock(conn, org_id, agent_id)
            stored = MessageQueries.batch(conn, org_id, agent_id, run_id, step)
            if stored:
                return stored
            first = MessageQueries.reserve(
                conn, org_id, agent_id, len(contents), MessageQueries.history(conn, org_id, agent_id)
            )
            rows = []
            for i, content in enumerate(contents):
                content.id = new_id("message")
                rows.append(
                    NewMessage(
                        id=content.id,
                        seq=first + i,
                        run_id=run_id,
                        step=step,
                        position=i,
                        kind=content.WhichOneof("content") or "",
                        text=searchable_text(content),
                        content=content.SerializeToString(),
                        created_at=now,
                    )
                )
            MessageQueries.insert(conn, org_id, agent_id, rows)
            return None

        stored = await self._db.write(tx)
        if stored is not None:
            return parse_messages(stored)
        if self._on_append is not None:
            self._on_append()
        return contents

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

        def read(conn: Connection) -> list[tuple[int, bytes]]:
            above = self._seq(conn, org_id, agent_id, after, "after")
            below = self._seq(conn, org_id, agent_id, before, "before")
            if position is not None:
                last = position.integer("s")
                if descending:
                    below = last if below is None else min(below, last)
                else:
                    above = last if above is None else max(above, last)
            return MessageQueries.page(
                conn,
                org_id,
                agent_id,
                descending=descending,
                above=above,
                below=below,
                run_id=run_id,
                limit=limit + 1,
            )

        rows = await self._db.read(read)
        next_token = encode_token("messages", s=rows[limit - 1][0]) if len(rows) > limit else ""
        return parse_messages(blob for _, blob in rows[:limit]), next_token

    @staticmethod
    def _seq(conn: Connection, org_id: str, agent_id: str, message_id: str, field: str) -> int | None:
        if not message_id:
            return None
        seq = MessageQueries.seq_of(conn, org_id, agent_id, message_id)
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

        def read(conn: Connection) -> ContextWindow:
            history = MessageQueries.history(conn, org_id, agent_id)
            if history is None:
                return ContextWindow(serialized=[], history_count=0)
            summary_id = history.summary_message_id
            rows = MessageQueries.window(conn, org_id, agent_id, history.context_start_seq, summary_id)
            summary = [blob for message_id, blob in rows if message_id == summary_id]
            window = [blob for message_id, blob in rows if message_id != summary_id]
            return ContextWindow(serialized=summary + window, history_count=history.message_count)

        return await self._db.read(read)

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

        def tx(conn: Connection) -> tuple[message_pb2.Message | None, int]:
            MessageQueries.lock(conn, org_id, agent_id)
            history = MessageQueries.history(conn, org_id, agent_id)
            keep_seq = self._seq(conn, org_id, agent_id, keep_from, "keep_from_message_id")
            if history is None or keep_seq is None:
                raise NotFound(f"agent {agent_id} has no history", reason="MESSAGE_NOT_FOUND")
            if expected_first:
                first = MessageQueries.first_id_from(conn, org_id, agent_id, history.context_start_seq)
                if first != expected_first:
                    raise Aborted(
                        "the context window changed since it was read; read it again",
                        reason="CONTEXT_WINDOW_CHANGED",
                    )
            if keep_seq < history.context_start_seq:
                raise invalid("keep_from_message_id", "is already outside the context window")
            evicted = MessageQueries.count_between(
                conn, org_id, agent_id, history.context_start_seq, keep_seq
            )
            stored = None
            if content is not None:
                stored = self._summary_row(conn, org_id, agent_id, content, history)
            MessageQueries.set_window(conn, org_id, agent_id, keep_seq, stored.id if stored else None)
            return stored, evicted

        result = await self._db.write(tx)
        if result[0] is not None and self._on_append is not None:
            self._on_append()
        return result

    @staticmethod
    def _summary_row(
        conn: Connection, org_id: str, agent_id: str, content: message_pb2.Message, history: HistoryState
    ) -> message_pb2.Message:
        seq = MessageQueries.reserve(conn, org_id, agent_id, 1, history)
        now = utcnow()
        content.id = new_id("message")
        content.agent_id = agent_id
        content.run_id = new_id("compaction")
        content.step = 0
        content.create_time.FromDatetime(now)
        MessageQueries.insert(
            conn,
            org_id,
            agent_id,
            [
                NewMessage(
                    id=content.id,
                    seq=seq,
                    run_id=content.run_id,
                    step=0,
                    position=0,
                    kind="event",
                    text=searchable_text(content),
                    content=content.SerializeToString(),
                    created_at=now,
                )
            ],
        )
        return content

    async def purge(self, org_id: str, agent_id: str) -> int:
        """Deletes an agent's whole history; returns how many messages went."""
        require_id(agent_id, "agent_id")
        return await self._db.write(MessageQueries.purge, org_id, agent_id)
