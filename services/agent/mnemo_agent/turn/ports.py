"""What a turn needs of the rest of the mesh, as narrow protocols.

The step loop and the run lifecycle know these, never the gRPC stubs: `mesh_ports` implements them over
the memory, tools and llm-gateway services, and the unit tests with in-memory fakes.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo.memory.v1 import block_pb2
from mnemo.tools.v1 import tool_pb2
from mnemo_agent.context_window import ChatModel
from mnemo_agent.memory_tools import AgentIdentity
from mnemo_agent.runs import Lineage
from mnemo_agent.store import Agent
from mnemo_agent.turn.recorders import Recorder


@dataclass(frozen=True, slots=True)
class Window:
    """An agent's context window: the in-context messages, oldest first, and the size of its history."""

    messages: list[message_pb2.Message]
    history_count: int


class Memory(Recorder, Protocol):
    """The memory service as a turn sees it; as the recorder, it stores the agent's history."""

    async def window(self, agent_id: str) -> Window:
        """The agent's context window now."""

    async def blocks(self, agent_id: str) -> list[block_pb2.Block]:
        """The agent's core memory blocks."""

    async def run_page(
        self, agent_id: str, run_id: str, *, size: int, token: str
    ) -> tuple[list[message_pb2.Message], str]:
        """A page of the messages a run stored, oldest first, and the token of the next page ("" at the end)."""


class ToolSource(Protocol):
    """The tools service as a turn sees it."""

    async def get(self, tool_ids: Sequence[str]) -> list[tool_pb2.Tool]:
        """Tools by id, in any order; raises NotFound when one does not exist."""

    async def run(
        self, tool: tool_pb2.Tool, arguments_json: str, agent_id: str, run_id: str = ""
    ) -> message_pb2.ToolReturnContent:
        """Runs a custom or MCP tool for the agent in its run ("" in ephemeral turns); failures are results."""


class MemoryToolRunner(Protocol):
    """Runs the built-in memory tools against the memory service."""

    async def run(
        self, agent: AgentIdentity, name: str, args: dict[str, Any], *, run_id: str = ""
    ) -> tuple[str, block_pb2.Block | None]:
        """The text the model is told, and the core memory block the tool changed (if any); `run_id` is the
        turn's run, kept in the history of the blocks it edits."""


@dataclass(frozen=True, slots=True)
class TokenCount:
    """The tokens a request takes for its model, how they were counted, and the model's window (0: unknown)."""

    tokens: int
    exact: bool
    method: str
    context_window: int


class TokenCounter(Protocol):
    """Counts the tokens of a request as the model would see it (the llm-gateway's CountTokens)."""

    async def count_tokens(self, request: llm_pb2.ChatRequest) -> TokenCount:
        """The request's token count for its model."""


class Model(ChatModel, TokenCounter, Protocol):
    """The llm-gateway as a turn sees it: whole replies, or a reply as a stream of events; token counts."""

    def stream(self, request: llm_pb2.ChatRequest) -> AsyncIterable[llm_pb2.StreamChatResponse]:
        """Deltas as they come, then the `completed` reply; raises Unimplemented when it cannot stream."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The turn that calls an agent-to-agent tool: its agent, run, tool call and lineage."""

    agent_id: str
    org_id: str
    name: str
    run_id: str
    call_id: str
    lineage: Lineage


class Messenger(Protocol):
    """Runs the built-in agent-to-agent tools (mnemo_agent.turn.messaging)."""

    names: frozenset[str]

    async def run(self, caller: Caller, name: str, args: dict[str, Any]) -> str:
        """The text the model is told; raises ToolError for what the model can fix."""


class AgentRows(Protocol):
    """The agents' configuration (this service's own table)."""

    @property
    def single_writer(self) -> bool:
        """Whether this process alone runs these agents' turns (SQLite), so caches of their state are exact."""

    async def row(self, org_id: str, agent_id: str) -> Agent:
        """An agent of the organization; NotFound otherwise."""

    async def tagged(self, org_id: str, tags: Sequence[str], limit: int) -> list[Agent]:
        """Up to `limit` agents of the organization that have every one of `tags`."""
