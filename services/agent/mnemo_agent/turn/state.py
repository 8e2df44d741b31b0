"""A turn's state as it advances, and what the loop needs to know of its agent."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo.memory.v1 import block_pb2
from mnemo.tools.v1 import tool_pb2
from mnemo_agent.chat_rounds import ChatCaller
from mnemo_agent.conversation import ChatHistory
from mnemo_agent.memory_tools import CLASSIC
from mnemo_agent.runs import Lineage
from mnemo_agent.store import Agent
from mnemo_agent.tool_rules import StepPlan, ToolOutcome, ToolRules
from mnemo_agent.turn.events import MessagesStored, Sink, TurnEvent, TurnResult
from mnemo_agent.turn.recorders import Recorder
from mnemo_agent.turn.request import INPUT_KINDS


@dataclass
class AgentConfig:
    """What the loop needs of an agent (from its row, or given inline for an ephemeral turn)."""

    id: str
    model: str
    system: str
    agent_type: str
    context_window: int
    summarizer_model: str
    llm_options: dict[str, Any]
    rules: ToolRules
    embedding_model: str = ""
    # The organization and name of a stored agent (agent-to-agent messages name and scope by them).
    org_id: str = ""
    name: str = ""
    memory_tool_set: str = CLASSIC

    @classmethod
    def of(cls, row: Agent) -> AgentConfig:
        return cls(
            memory_tool_set=row.memory_tool_set,
            id=row.id,
            org_id=row.org_id,
            name=row.name,
            embedding_model=row.embedding_model or "",
            model=row.model,
            system=row.system,
            agent_type=row.agent_type,
            context_window=row.context_window,
            summarizer_model=row.summarizer_model or "",
            llm_options=row.llm_options or {},
            rules=ToolRules.of(row.tool_rules or []),
        )


def edit_key(call: message_pb2.ToolCall) -> tuple[str, str]:
    """A call's tool and arguments, with JSON arguments in one canonical form (key order, spacing)."""
    try:
        arguments = json.dumps(json.loads(call.arguments or "{}"), sort_keys=True)
    except ValueError:
        arguments = call.arguments
    return call.name, arguments


def kind(message: message_pb2.Message) -> str | None:
    """The content kind of a stored message ("user", "tool_call", ...)."""
    return message.WhichOneof("content")


def _outcome(result: message_pb2.ToolReturnContent) -> ToolOutcome:
    return ToolOutcome(result.name, result.status == message_pb2.TOOL_RETURN_STATUS_SUCCESS, result.content)


@dataclass
class TurnState:
    """A turn's state as it advances."""

    agent: AgentConfig
    run_id: str
    max_steps: int
    recorder: Recorder
    window_tokens: int
    sink: Sink | None = None
    stream_tokens: bool = False
    history: list[message_pb2.Message] = field(default_factory=list)
    history_count: int = 0
    blocks: list[block_pb2.Block] = field(default_factory=list)
    tools: dict[str, tool_pb2.Tool] = field(default_factory=dict)
    schemas: list[llm_pb2.ToolSchema] = field(default_factory=list)
    # Messages to store with the next step (the inputs, a memory-pressure note).
    pending: list[message_pb2.Message] = field(default_factory=list)
    next_batch: int = 0
    llm_calls: int = 0
    calls_this_turn: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    # The previous step's tool calls (what tool rules look at), and the tools that succeeded in the turn.
    last_step: list[ToolOutcome] = field(default_factory=list)
    succeeded: set[str] = field(default_factory=set)
    # What the current step offers the model, by the tool rules.
    plan: StepPlan | None = None
    usage: turn_pb2.Usage = field(default_factory=turn_pb2.Usage)
    produced: list[message_pb2.Message] = field(default_factory=list)
    # Produced messages before this index were returned by an earlier part of the run.
    shown_from: int = 0
    awaiting: list[message_pb2.ToolCall] = field(default_factory=list)
    ephemeral: bool = False
    # Whether `history` holds the agent's context window (read or cached), so it can be cached again.
    loaded: bool = False
    chat: ChatHistory = field(default_factory=ChatHistory)
    # Where model calls go instead of the llm-gateway's Chat (a provider-mode batch), named "<run>:<step>".
    llm: ChatCaller | None = None
    # Where the run stands in chains of agent-to-agent messages and group runs.
    lineage: Lineage = field(default_factory=Lineage)
    # Calls that succeeded in this turn, as (tool, arguments): a memory edit among them is not made again.
    edits_made: set[tuple[str, str]] = field(default_factory=set)
    # Whether the model repeated one of them: its next step is offered no tools, so that it answers.
    repeated_edit: bool = False

    @property
    def voice(self) -> bool:
        return self.agent.agent_type == "voice"

    def emit(self, event: TurnEvent) -> None:
        if self.sink is not None:
            self.sink(event)

    def result(self, stop: turn_pb2.StopReason.ValueType) -> TurnResult:
        return TurnResult(self.run_id, self.produced[self.shown_from :], self.usage, stop)

    def use_tools(self, tools: Sequence[tool_pb2.Tool]) -> None:
        """The tools the model is offered this turn."""
        self.tools = {tool.name: tool for tool in tools}
        self.schemas = self.schemas_of(tools)

    @staticmethod
    def schemas_of(tools: Sequence[tool_pb2.Tool]) -> list[llm_pb2.ToolSchema]:
        """What the model is told of each tool."""
        return [
            llm_pb2.ToolSchema(name=t.name, description=t.description, parameters_json=t.json_schema)
            for t in tools
        ]

    def ran(self, returns: Sequence[message_pb2.Message]) -> None:
        """Takes in the results of a step's tool calls, for the rules of the next steps."""
        self.last_step = [_outcome(m.tool_return) for m in returns if kind(m) == "tool_return"]
        self.succeeded.update(outcome.name for outcome in self.last_step if outcome.succeeded)

    def add_usage(self, step: turn_pb2.Usage) -> None:
        """Counts one model call."""
        self.usage.prompt_tokens += step.prompt_tokens
        self.usage.completion_tokens += step.completion_tokens
        self.usage.total_tokens += step.total_tokens or (step.prompt_tokens + step.completion_tokens)
        self.usage.step_count += 1

    def stored(self, messages: list[message_pb2.Message]) -> list[message_pb2.Message]:
        """Takes in a step as stored; returns (and emits) its messages that are not inputs."""
        self.next_batch += 1
        self.history.extend(messages)
        self.history_count += len(messages)
        produced = [m for m in messages if kind(m) not in INPUT_KINDS]
        if produced:
            self.emit(MessagesStored(produced))
        return produced

    def restore(self, stored: list[message_pb2.Message]) -> turn_pb2.StopReason.ValueType | None:
        """Rebuilds a run's progress from its stored steps; returns the stop reason if it had ended."""
        self.produced = [m for m in stored if not (m.step == 0 and kind(m) in INPUT_KINDS)]
        self.next_batch = max(m.step for m in stored) + 1
        replied_steps = {m.step for m in stored if kind(m) in ("assistant", "reasoning", "tool_call")}
        self.llm_calls = len(replied_steps)
        self.usage.step_count = self.llm_calls
        self.calls_this_turn = self.llm_calls
        calls = [m.tool_call.tool_call for m in stored if kind(m) == "tool_call"]
        self.calls = Counter(call.name for call in calls)
        returns = [m for m in stored if kind(m) == "tool_return"]
        self.succeeded = {m.tool_return.name for m in returns if _outcome(m.tool_return).succeeded}
        worked = {m.tool_return.tool_call_id for m in returns if _outcome(m.tool_return).succeeded}
        self.edits_made = {edit_key(call) for call in calls if call.id in worked}
        self.last_step = [_outcome(m.tool_return) for m in returns if m.step == self.next_batch - 1]
        answered = {m.tool_return.tool_call_id for m in stored if kind(m) == "tool_return"}
        self.awaiting = [call for call in calls if call.id not in answered]
        last = [m for m in stored if m.step == self.next_batch - 1]
        if (
            not self.awaiting
            and any(kind(m) in ("assistant", "reasoning") for m in last)
            and not any(kind(m) == "tool_call" for m in last)
        ):
            return turn_pb2.STOP_REASON_END_TURN
        return None
