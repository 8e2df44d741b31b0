"""The built-in memory tools, run against the memory service on the agent's behalf.

An agent edits its core memory with one of two tool sets: "classic" (core_memory_append, core_memory_replace)
or "lines" (memory_insert, memory_replace, memory_rethink, memory_finish_edits; its blocks are shown with
line numbers). Archival memory and conversation search are the same for both.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf import timestamp_pb2

from mnemo.common.v1 import message_pb2
from mnemo.memory.v1 import block_pb2, passage_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo_agent.mesh import Mesh
from mnemo_core.errors import InvalidArgument
from mnemo_core.proto_enums import EnumNames

DEFAULT_TOP_K = 5
MAX_TOP_K = 50
# What a search result shows of each hit; the tool's return char limit caps the whole.
MAX_HIT_CHARS = 2000
MESSAGE_KINDS = EnumNames(history_pb2.MessageKind)
# The roles conversation_search filters by: the kinds of messages recall search embeds.
SEARCHABLE_ROLES = ("system", "user", "assistant", "reasoning", "event")

CLASSIC, LINES = "classic", "lines"
# The core memory editing tools of each tool set.
EDITING_TOOLS = {
    CLASSIC: ("core_memory_append", "core_memory_replace"),
    LINES: ("memory_insert", "memory_replace", "memory_rethink", "memory_finish_edits"),
}
FINISH_EDITS = "memory_finish_edits"
BUILTIN_PREFIX = "tool-builtin-"
# How the system prompt numbers a block's lines for the line tools (prompt.py); a model that copies them
# into the text it wants replaced is told to leave them out.
_NUMBERED_LINE = re.compile(r"^\s*\d+: ", re.MULTILINE)


def editing_tool_ids(tool_set: str) -> list[str]:
    """The ids of a tool set's built-in editing tools."""
    return [BUILTIN_PREFIX + name for name in EDITING_TOOLS[tool_set]]


def with_tool_set(tool_ids: list[str], tool_set: str) -> list[str]:
    """`tool_ids` with the other tool set's built-in editing tools swapped for `tool_set`'s (when it had any)."""
    others = {i for name, ids in EDITING_TOOLS.items() if name != tool_set for i in editing_tool_ids(name)}
    kept = [i for i in tool_ids if i not in others]
    if len(kept) == len(tool_ids):
        return tool_ids
    return kept + [i for i in editing_tool_ids(tool_set) if i not in kept]


class ToolError(Exception):
    """A tool failed in a way the model should see and can act on."""


def _text(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise ToolError(f"argument '{name}' is required and must be a string")
    return value


def _strings(args: dict[str, Any], name: str) -> list[str]:
    value = args.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ToolError(f"argument '{name}' must be a list of strings")
    return value


def _top_k(args: dict[str, Any]) -> int:
    value = args.get("top_k", DEFAULT_TOP_K)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TOP_K:
        raise ToolError(f"argument 'top_k' must be an integer from 1 to {MAX_TOP_K}")
    return value


def _date(args: dict[str, Any], name: str) -> timestamp_pb2.Timestamp | None:
    value = args.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ToolError(f"argument '{name}' must be an ISO 8601 date, e.g. '2024-05-01'")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ToolError(f"argument '{name}' must be an ISO 8601 date, e.g. '2024-05-01'") from None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when if when.tzinfo else when.replace(tzinfo=UTC))
    return stamp


def _when(stamp: timestamp_pb2.Timestamp) -> str:
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_HIT_CHARS else text[:MAX_HIT_CHARS] + " [...]"


def _message_text(message: message_pb2.Message) -> tuple[str, str]:
    kind = message.WhichOneof("content") or ""
    if kind == "tool_call":
        call = message.tool_call.tool_call
        return "tool call", f"{call.name}({call.arguments})"
    if kind == "tool_return":
        return "tool", message.tool_return.content
    return kind, getattr(message, kind).text if kind else ""


def _line(args: dict[str, Any], name: str) -> int | None:
    value = args.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ToolError(
            f"argument '{name}' must be a whole number (a line number as your memory blocks show it)"
        )
    return value


class AgentIdentity(Protocol):
    """What a memory tool needs to know of the agent it runs for."""

    @property
    def id(self) -> str: ...

    @property
    def embedding_model(self) -> str: ...


def _changed(what: str, block: block_pb2.Block) -> tuple[str, block_pb2.Block]:
    return f"{what} block '{block.label}' (now {len(block.value)}/{block.limit} characters).", block


class MemoryTools:
    """Runs the built-in memory tools; returns what the model is told (and the block changed, if any)."""

    names = frozenset(
        {
            *EDITING_TOOLS[CLASSIC],
            *EDITING_TOOLS[LINES],
            "archival_memory_insert",
            "archival_memory_search",
            "conversation_search",
        }
    )

    # The tools that change memory (refused in ephemeral turns, which persist nothing).
    writing = frozenset(
        {*EDITING_TOOLS[CLASSIC], *EDITING_TOOLS[LINES], "archival_memory_insert"} - {FINISH_EDITS}
    )

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        self._passages = mesh.passages

    async def run(
        self, agent: AgentIdentity, name: str, args: dict[str, Any], *, run_id: str = ""
    ) -> tuple[str, block_pb2.Block | None]:
        """Runs one memory tool for a turn's run; returns its result text and the core memory block it
        changed, if any."""
        blocks = self._mesh.blocks
        if name == "core_memory_append":
            appended = await blocks.AppendBlockValue(
                block_pb2.AppendBlockValueRequest(
                    agent_id=agent.id,
                    label=_text(args, "label"),
                    content=_text(args, "content"),
                    run_id=run_id,
                )
            )
            return _changed("Appended to", appended.block)
        if name == "core_memory_replace":
            replaced = await blocks.ReplaceBlockValue(
                block_pb2.ReplaceBlockValueRequest(
                    agent_id=agent.id,
                    label=_text(args, "label"),
                    old_content=_text(args, "old_content"),
                    new_content=_text(args, "new_content"),
                    run_id=run_id,
                )
            )
            return _changed("Replaced text in", replaced.block)
        if name == "memory_insert":
            request = block_pb2.InsertBlockValueRequest(
                agent_id=agent.id, label=_text(args, "label"), text=_text(args, "new_str"), run_id=run_id
            )
            after = _line(args, "insert_line")
            if after is not None:
                request.after_line = after
            return _changed("Inserted into", (await blocks.InsertBlockValue(request)).block)
        if name == "memory_replace":
            old = _text(args, "old_str")
            try:
                replaced = await blocks.ReplaceBlockValue(
                    block_pb2.ReplaceBlockValueRequest(
                        agent_id=agent.id,
                        label=_text(args, "label"),
                        old_content=old,
                        new_content=_text(args, "new_str"),
                        unique=True,
                        run_id=run_id,
                    )
                )
            except InvalidArgument as exc:
                if exc.reason == "BLOCK_CONTENT_NOT_FOUND" and _NUMBERED_LINE.search(old):
                    raise ToolError(
                        f"{exc.message}. old_str seems to include the line numbers shown before each line "
                        "('3: '); they are not part of the text: leave them out"
                    ) from None
                raise
            return _changed("Replaced text in", replaced.block)
        if name == "memory_rethink":
            rewritten = await blocks.RewriteBlockValue(
                block_pb2.RewriteBlockValueRequest(
                    agent_id=agent.id,
                    label=_text(args, "label"),
                    value=_text(args, "new_memory"),
                    run_id=run_id,
                )
            )
            return _changed("Rewrote", rewritten.block)
        if name == FINISH_EDITS:
            return "Memory edits finished.", None
        if name == "archival_memory_insert":
            return await self._archival_insert(agent, args), None
        if name == "archival_memory_search":
            return await self._archival_search(agent, args), None
        if name == "conversation_search":
            return await self._conversation_search(agent, args), None
        raise ToolError(f"'{name}' is not a memory tool")

    async def _archival_insert(self, agent: AgentIdentity, args: dict[str, Any]) -> str:
        created = await self._passages.CreatePassages(
            passage_pb2.CreatePassagesRequest(
                agent_id=agent.id,
                text=_text(args, "content"),
                tags=_strings(args, "tags"),
                embedding_model=agent.embedding_model,
            )
        )
        count = len(created.passages)
        return f"Saved to archival memory ({count} passage{'s' if count != 1 else ''})."

    async def _archival_search(self, agent: AgentIdentity, args: dict[str, Any]) -> str:
        found = await self._passages.SearchPassages(
            passage_pb2.SearchPassagesRequest(
                agent_id=agent.id,
                query=_text(args, "query"),
                tags=_strings(args, "tags"),
                top_k=_top_k(args),
                embedding_model=agent.embedding_model,
            )
        )
        if not found.matches:
            return "No results in archival memory."
        lines = [f"{len(found.matches)} result(s) from archival memory, best first:"]
        for i, match in enumerate(found.matches, start=1):
            passage = match.passage
            tags = f" [tags: {', '.join(passage.tags)}]" if passage.tags else ""
            lines.append(f"{i}. ({_when(passage.create_time)}){tags} {_clip(passage.text)}")
        return "\n".join(lines)

    async def _conversation_search(self, agent: AgentIdentity, args: dict[str, Any]) -> str:
        roles = _strings(args, "roles")
        unknown = [role for role in roles if role not in SEARCHABLE_ROLES]
        if unknown:
            raise ToolError(f"unknown role(s) {', '.join(unknown)}; use: {', '.join(SEARCHABLE_ROLES)}")
        request = history_pb2.SearchMessagesRequest(
            agent_id=agent.id,
            query=_text(args, "query"),
            top_k=_top_k(args),
            kinds=[MESSAGE_KINDS.value(role) for role in roles],
        )
        start, end = _date(args, "start_date"), _date(args, "end_date")
        if start is not None:
            request.start_time.CopyFrom(start)
        if end is not None:
            request.end_time.CopyFrom(end)
        found = await self._mesh.messages.SearchMessages(request)
        if not found.matches:
            return "No matching messages in the conversation history."
        lines = [f"{len(found.matches)} matching message(s), best first:"]
        for i, match in enumerate(found.matches, start=1):
            role, text = _message_text(match.message)
            lines.append(f"{i}. ({_when(match.message.create_time)}) {role}: {_clip(text)}")
        return "\n".join(lines)
