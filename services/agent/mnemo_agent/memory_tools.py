"""The built-in memory tools, run against the memory service on the agent's behalf."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf import timestamp_pb2

from mnemo.common.v1 import message_pb2
from mnemo.memory.v1 import block_pb2, passage_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo_agent.mesh import Mesh
from mnemo_core.proto_enums import EnumNames

DEFAULT_TOP_K = 5
MAX_TOP_K = 50
# What a search result shows of each hit; the tool's return char limit caps the whole.
MAX_HIT_CHARS = 2000
MESSAGE_KINDS = EnumNames(history_pb2.MessageKind)
# The roles conversation_search filters by: the kinds of messages recall search embeds.
SEARCHABLE_ROLES = ("system", "user", "assistant", "reasoning", "event")


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


class AgentIdentity(Protocol):
    """What a memory tool needs to know of the agent it runs for."""

    @property
    def id(self) -> str: ...

    @property
    def embedding_model(self) -> str: ...


class MemoryTools:
    """Runs the built-in memory tools; returns what the model is told (and the block changed, if any)."""

    names = frozenset(
        {
            "core_memory_append",
            "core_memory_replace",
            "archival_memory_insert",
            "archival_memory_search",
            "conversation_search",
        }
    )

    # The tools that change memory (refused in ephemeral turns, which persist nothing).
    writing = frozenset({"core_memory_append", "core_memory_replace", "archival_memory_insert"})

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        self._passages = mesh.passages

    async def run(
        self, agent: AgentIdentity, name: str, args: dict[str, Any]
    ) -> tuple[str, block_pb2.Block | None]:
        """Runs one memory tool; returns its result text and the core memory block it changed, if any."""
        if name == "core_memory_append":
            appended = await self._mesh.blocks.AppendBlockValue(
                block_pb2.AppendBlockValueRequest(
                    agent_id=agent.id, label=_text(args, "label"), content=_text(args, "content")
                )
            )
            block = appended.block
            return (
                f"Appended to block '{block.label}' (now {len(block.value)}/{block.limit} characters).",
                block,
            )
        if name == "core_memory_replace":
            replaced = await self._mesh.blocks.ReplaceBlockValue(
                block_pb2.ReplaceBlockValueRequest(
                    agent_id=agent.id,
                    label=_text(args, "label"),
                    old_content=_text(args, "old_content"),
                    new_content=_text(args, "new_content"),
                )
            )
            block = replaced.block
            return (
                f"Replaced text in block '{block.label}' (now {len(block.value)}/{block.limit} characters).",
                block,
            )
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
