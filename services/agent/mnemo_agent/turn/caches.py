"""What turns keep between them: recently active agents' context windows, and the built-in tools."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from mnemo.common.v1 import message_pb2
from mnemo.tools.v1 import tool_pb2
from mnemo_agent.conversation import ChatHistory
from mnemo_agent.memory_tools import BUILTIN_PREFIX
from mnemo_agent.turn.ports import ToolSource
from mnemo_core.errors import FailedPrecondition, NotFound


class WindowCache:
    """The in-context messages of recently active agents, kept between their turns.

    Only for deployments where this process is the only one that runs an agent's turns (the agent
    service on SQLite): every change to an agent's window then passes through this process, under the
    agent's lock. A turn that fails or is cancelled drops its entry, since what the memory service
    stored is then uncertain; the next turn reads the window again.

    Bounded by agents and by bytes: the least recently used windows go first when either bound is passed
    (bytes are the messages' serialized size; in memory, with their chat form, they take a few times that).
    A window alone larger than the byte bound, or longer than `max_messages`, is not kept.
    """

    def __init__(
        self,
        *,
        enabled: bool,
        agents: int = 1000,
        max_messages: int = 2000,
        max_bytes: int = 32 * 2**20,
    ) -> None:
        self._enabled = enabled
        self._agents = agents
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._windows: OrderedDict[str, tuple[list[message_pb2.Message], int, ChatHistory]] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._windows)

    def get(self, agent_id: str) -> tuple[list[message_pb2.Message], int, ChatHistory] | None:
        found = self._windows.get(agent_id)
        if found is None:
            return None
        self._windows.move_to_end(agent_id)
        return list(found[0]), found[1], found[2]

    def put(
        self, agent_id: str, messages: list[message_pb2.Message], history_count: int, chat: ChatHistory
    ) -> None:
        if not self._enabled or len(messages) > self._max_messages:
            self.drop(agent_id)
            return
        size = self._size(agent_id, messages)
        self.drop(agent_id)
        if size > self._max_bytes:
            return
        self._windows[agent_id] = (list(messages), history_count, chat)
        self._sizes[agent_id] = size
        self.bytes += size
        while len(self._windows) > self._agents or self.bytes > self._max_bytes:
            oldest, _ = self._windows.popitem(last=False)
            self.bytes -= self._sizes.pop(oldest)

    def drop(self, agent_id: str) -> None:
        if self._windows.pop(agent_id, None) is not None:
            self.bytes -= self._sizes.pop(agent_id)

    def _size(self, agent_id: str, messages: list[message_pb2.Message]) -> int:
        """The serialized size of `messages`, measuring only those the cached window does not hold."""
        cached = self._windows.get(agent_id)
        if cached is None:
            return sum(m.ByteSize() for m in messages)
        # The cached list holds its messages, so their ids are theirs for as long as it is cached.
        known = {id(m) for m in cached[0]}
        kept = {id(m) for m in messages}
        added = sum(m.ByteSize() for m in messages if id(m) not in known)
        removed = sum(m.ByteSize() for m in cached[0] if id(m) not in kept)
        return self._sizes[agent_id] + added - removed


class ToolCatalog:
    """An agent's tools by id; the built-ins (fixed ids, immutable) are fetched once, the rest every time."""

    def __init__(self, source: ToolSource) -> None:
        self._source = source
        self._builtin: dict[str, tool_pb2.Tool] = {}

    async def tools(self, tool_ids: Sequence[str]) -> list[tool_pb2.Tool]:
        """The tools, in the order of `tool_ids`; FAILED_PRECONDITION when one no longer exists."""
        if not tool_ids:
            return []
        missing = [i for i in tool_ids if i not in self._builtin]
        fetched: dict[str, tool_pb2.Tool] = {}
        if missing:
            try:
                found = await self._source.get(missing)
            except NotFound as exc:
                raise FailedPrecondition(
                    f"the agent refers to tools that no longer exist ({exc.message}); update its tool_ids",
                    reason="AGENT_TOOLS_MISSING",
                ) from None
            fetched = {tool.id: tool for tool in found}
            for tool in found:
                if tool.id.startswith(BUILTIN_PREFIX):
                    self._builtin[tool.id] = tool
        return [self._builtin.get(i) or fetched[i] for i in tool_ids]
