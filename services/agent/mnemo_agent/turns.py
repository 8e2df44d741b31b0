"""The step loop: one turn of an agent.

Each step compiles the system prompt from core memory, fits the context into the model's window
(summarizing when needed), calls the model with the agent's tools, runs the tools it asked for
(concurrently when it asks for several), and stores the step's messages in one atomic batch (a
tool call together with its return). The turn ends when the model answers without a tool call, a
terminal tool ran, a tool call needs approval, or at max_steps. Every turn is a run; a turn
retried with the same idempotency key returns the first result, or resumes an interrupted run
from its last stored step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mnemo.agent.v1 import agent_pb2
from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo.memory.v1 import block_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo.tools.v1 import tool_pb2
from mnemo_agent import context_window as cw
from mnemo_agent.agents import Agents
from mnemo_agent.chat_rounds import ChatCaller
from mnemo_agent.conversation import ChatHistory, from_reply, to_chat_messages
from mnemo_agent.memory_tools import MemoryTools, ToolError
from mnemo_agent.mesh import Mesh
from mnemo_agent.models import AgentRow, RunRow
from mnemo_agent.prompt import compile_system_prompt
from mnemo_agent.runs import (
    AWAITING_APPROVAL,
    CANCELLED,
    COMPLETED,
    CREATED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    STOP_REASONS,
    AgentBusy,
    Runs,
    RunStart,
)
from mnemo_agent.settings import AgentSettings
from mnemo_agent.tool_rules import ToolRules
from mnemo_core.actor import Actor, acting_as, current_actor_or_none, remaining_time
from mnemo_core.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    MnemoError,
    NotFound,
    PermissionDenied,
    Unavailable,
    Unimplemented,
)
from mnemo_core.telemetry import tracer
from mnemo_core.tool_calls import ArgumentsInvalid, fit_result, parse_arguments
from mnemo_core.validation import check_text, invalid
from mnemo_core.wire import utcnow

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

MAX_INPUT_MESSAGES = 100
MAX_INPUT_CHARS = 1_000_000
# Errors of a memory tool that the model caused and can fix; anything else fails the turn.
_MODEL_FIXABLE = (InvalidArgument, NotFound, PermissionDenied, FailedPrecondition, AlreadyExists)
# How long to trust that the llm-gateway cannot stream before asking again.
_NO_STREAMING_FOR = 60.0
_INPUT_KINDS = ("user", "system")


@dataclass
class TurnResult:
    """What a turn produced."""

    run_id: str
    messages: list[message_pb2.Message]
    usage: turn_pb2.Usage
    stop_reason: turn_pb2.StopReason.ValueType


@dataclass(frozen=True, slots=True)
class Delta:
    """Model output as it is generated (streaming with tokens)."""

    run_id: str
    step: int
    reasoning: bool
    text: str


class Sink(Protocol):
    """Receives a turn's events as they happen (streaming)."""

    def started(self, run_id: str) -> None:
        """The turn's run is recorded (sent before anything else)."""

    def messages(self, messages: Sequence[message_pb2.Message]) -> None:
        """Stored messages of a step."""

    def delta(self, delta: Delta) -> None:
        """A token delta."""


def check_inputs(messages: Sequence[message_pb2.Message]) -> list[message_pb2.Message]:
    """The input messages of a turn: 1-100 user or system messages of storable text."""
    if not messages:
        raise invalid("messages", "send at least one message")
    if len(messages) > MAX_INPUT_MESSAGES:
        raise invalid("messages", f"at most {MAX_INPUT_MESSAGES} messages per turn")
    inputs = []
    for i, message in enumerate(messages):
        kind = message.WhichOneof("content")
        if kind not in _INPUT_KINDS:
            raise invalid(f"messages[{i}]", "input messages must have user or system content")
        text = message.user.text if kind == "user" else message.system.text
        check_text(text, f"messages[{i}].{kind}.text", max_chars=MAX_INPUT_CHARS, allow_empty=False)
        clean = message_pb2.Message()
        getattr(clean, kind).CopyFrom(getattr(message, kind))
        inputs.append(clean)
    return inputs


class AgentLocks:
    """One lock per agent, so two turns of one agent never interleave their histories (in this process;
    across replicas the unique active run per agent does the same job, see mnemo_agent.runs)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, agent_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(agent_id, (asyncio.Lock(), 0))
        self._locks[agent_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[agent_id]
            if users == 1:
                del self._locks[agent_id]
            else:
                self._locks[agent_id] = (lock, users - 1)


def _add_usage(total: turn_pb2.Usage, step: turn_pb2.Usage) -> None:
    total.prompt_tokens += step.prompt_tokens
    total.completion_tokens += step.completion_tokens
    total.total_tokens += step.total_tokens or (step.prompt_tokens + step.completion_tokens)
    total.step_count += 1


def _kind(message: message_pb2.Message) -> str | None:
    return message.WhichOneof("content")


class Recorder(Protocol):
    """Where a turn's messages go: the agent's history, or nowhere (ephemeral turns)."""

    async def append(
        self, agent_id: str, run_id: str, step: int, messages: list[message_pb2.Message]
    ) -> list[message_pb2.Message]:
        """Stores one step's messages atomically; returns them as stored."""

    async def compact(
        self, agent_id: str, keep_from: str, summary: message_pb2.Message, expected_first: str
    ) -> tuple[message_pb2.Message | None, int]:
        """Moves the window start to `keep_from` with `summary` in front."""


class HistoryRecorder:
    """Stores a turn's messages in the memory service."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    async def append(
        self, agent_id: str, run_id: str, step: int, messages: list[message_pb2.Message]
    ) -> list[message_pb2.Message]:
        appended = await self._mesh.messages.AppendMessages(
            history_pb2.AppendMessagesRequest(agent_id=agent_id, run_id=run_id, step=step, messages=messages)
        )
        return list(appended.messages)

    async def compact(
        self, agent_id: str, keep_from: str, summary: message_pb2.Message, expected_first: str
    ) -> tuple[message_pb2.Message | None, int]:
        response = await self._mesh.messages.CompactContextWindow(
            history_pb2.CompactContextWindowRequest(
                agent_id=agent_id,
                keep_from_message_id=keep_from,
                summary=summary,
                expected_first_message_id=expected_first,
            )
        )
        return (response.summary if response.HasField("summary") else None), response.evicted_count


class EphemeralRecorder:
    """Keeps nothing: messages get their run and step but no id, and compaction is local."""

    async def append(
        self, agent_id: str, run_id: str, step: int, messages: list[message_pb2.Message]
    ) -> list[message_pb2.Message]:
        stored = []
        for message in messages:
            copy = message_pb2.Message()
            copy.CopyFrom(message)
            copy.run_id, copy.step = run_id, step
            stored.append(copy)
        return stored

    async def compact(
        self, agent_id: str, keep_from: str, summary: message_pb2.Message, expected_first: str
    ) -> tuple[message_pb2.Message | None, int]:
        return summary, summary.event.evicted_count


class WindowCache:
    """The in-context messages of recently active agents, kept between their turns.

    Only for deployments where this process is the only one that runs an agent's turns (the agent
    service on SQLite): every change to an agent's window then passes through this process, under the
    agent's lock. A turn that fails or is cancelled drops its entry, since what the memory service
    stored is then uncertain; the next turn reads the window again.
    """

    def __init__(self, *, enabled: bool, agents: int = 1000, max_messages: int = 2000) -> None:
        self._enabled = enabled
        self._agents = agents
        self._max_messages = max_messages
        self._windows: OrderedDict[str, tuple[list[message_pb2.Message], int, ChatHistory]] = OrderedDict()

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
            self._windows.pop(agent_id, None)
            return
        self._windows[agent_id] = (list(messages), history_count, chat)
        self._windows.move_to_end(agent_id)
        if len(self._windows) > self._agents:
            self._windows.popitem(last=False)

    def drop(self, agent_id: str) -> None:
        self._windows.pop(agent_id, None)


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

    @classmethod
    def of(cls, row: AgentRow) -> AgentConfig:
        return cls(
            id=row.id,
            embedding_model=row.embedding_model or "",
            model=row.model,
            system=row.system,
            agent_type=row.agent_type,
            context_window=row.context_window,
            summarizer_model=row.summarizer_model or "",
            llm_options=row.llm_options or {},
            rules=ToolRules.of(row.tool_rules or []),
        )


@dataclass
class _Turn:
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
    pending: list[message_pb2.Message] = field(default_factory=list)
    next_batch: int = 0
    llm_calls: int = 0
    calls_this_turn: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    usage: turn_pb2.Usage = field(default_factory=turn_pb2.Usage)
    produced: list[message_pb2.Message] = field(default_factory=list)
    # Produced messages before this index were returned by an earlier part of the run.
    shown_from: int = 0
    awaiting: list[message_pb2.ToolCall] = field(default_factory=list)
    ephemeral: bool = False
    # Whether `history` holds the agent's context window (read or cached), so it can be cached again.
    loaded: bool = False
    chat: ChatHistory = field(default_factory=ChatHistory)
    # Where model calls go instead of LlmService.Chat (a provider-mode batch), named "<run>:<step>".
    llm: ChatCaller | None = None

    @property
    def voice(self) -> bool:
        return self.agent.agent_type == "voice"

    def emit(self, messages: Sequence[message_pb2.Message]) -> None:
        if self.sink is not None and messages:
            self.sink.messages(messages)

    def result(self, stop: turn_pb2.StopReason.ValueType) -> TurnResult:
        return TurnResult(self.run_id, self.produced[self.shown_from :], self.usage, stop)


@dataclass
class _Decision:
    """The answer to a run's approval request."""

    approve: bool
    reason: str


class Turns:
    """Runs agent turns against the mesh."""

    def __init__(self, agents: Agents, runs: Runs, mesh: Mesh, settings: AgentSettings) -> None:
        self._agents = agents
        self._runs = runs
        self._mesh = mesh
        self._settings = settings
        self._memory_tools = MemoryTools(mesh)
        self._history = HistoryRecorder(mesh)
        self._summarizer = cw.Summarizer(
            mesh.llm,
            cw.SummarizerSettings(
                input_tokens=settings.summarizer_input_tokens,
                timeout=settings.summarizer_timeout,
            ),
        )
        self._locks = AgentLocks()
        # Runs executing in this process, with the task that executes each.
        self._active: dict[str, asyncio.Task[Any]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._builtin_tools: dict[str, tool_pb2.Tool] = {}
        self._no_streaming_until = 0.0
        # Set while the service shuts down: the turns it stops are interrupted, not cancelled by anyone.
        self._stopping = False
        self._windows = WindowCache(enabled=agents.single_writer)
        self.default_max_steps = settings.default_max_steps
        self._max_steps_limit = settings.max_steps_limit
        self._llm_timeout = settings.llm_timeout
        self._cancel_poll = settings.run_cancel_poll_seconds
        self.after_turn: Callable[[Actor, AgentRow, TurnResult], None] | None = None

    # ----- entry points -----

    def _steps(self, agent: AgentRow, max_steps: int) -> int:
        if not 0 <= max_steps <= self._max_steps_limit:
            raise invalid("max_steps", f"must be between 0 and {self._max_steps_limit}")
        return min(max_steps or agent.max_steps or self.default_max_steps, self._max_steps_limit)

    async def send(
        self,
        actor: Actor,
        agent_id: str,
        messages: Sequence[message_pb2.Message],
        *,
        max_steps: int = 0,
        idempotency_key: str = "",
        sink: Sink | None = None,
        stream_tokens: bool = False,
    ) -> TurnResult:
        """Runs one turn (or returns/resumes the run recorded under `idempotency_key`)."""
        inputs = check_inputs(messages)
        check_text(idempotency_key, "idempotency_key", max_chars=256)
        agent = await self._agents.row(actor.org_id, agent_id)
        steps = self._steps(agent, max_steps)
        if agent.agent_type == "voice" and sink is None:
            raise FailedPrecondition(
                "voice agents answer by streaming only; use StreamMessage (or the /messages/stream route)",
                reason="VOICE_AGENT_STREAMS_ONLY",
            )
        # The turn runs in its own task so that CancelRun can stop it and still record the outcome.
        task = asyncio.create_task(
            self._turn(
                actor,
                agent,
                inputs,
                steps,
                idempotency_key,
                sink,
                stream_tokens or agent.agent_type == "voice",
            )
        )
        return await task

    async def stream(
        self,
        actor: Actor,
        agent_id: str,
        messages: Sequence[message_pb2.Message],
        *,
        max_steps: int = 0,
        idempotency_key: str = "",
        stream_tokens: bool = False,
    ) -> AsyncIterator[str | list[message_pb2.Message] | Delta | TurnResult]:
        """Runs one turn and yields its run id, its stored messages and token deltas as they come, the
        result last.

        Closing the iterator early (a client that went away) cancels the turn; its run records that.
        """
        queue: asyncio.Queue[str | list[message_pb2.Message] | Delta | None] = asyncio.Queue()

        class _QueueSink:
            def started(self, run_id: str) -> None:
                queue.put_nowait(run_id)

            def messages(self, messages: Sequence[message_pb2.Message]) -> None:
                queue.put_nowait(list(messages))

            def delta(self, delta: Delta) -> None:
                queue.put_nowait(delta)

        task = asyncio.create_task(
            self.send(
                actor,
                agent_id,
                messages,
                max_steps=max_steps,
                idempotency_key=idempotency_key,
                sink=_QueueSink(),
                stream_tokens=stream_tokens,
            )
        )
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (item := await queue.get()) is not None:
                yield item
            yield task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, MnemoError):
                    await task

    async def send_async(
        self,
        actor: Actor,
        agent_id: str,
        messages: Sequence[message_pb2.Message],
        *,
        max_steps: int = 0,
        idempotency_key: str = "",
        batch_id: str | None = None,
    ) -> RunRow:
        """Records a run for a turn and starts it in the background; returns the run at once."""
        inputs = check_inputs(messages)
        check_text(idempotency_key, "idempotency_key", max_chars=256)
        agent = await self._agents.row(actor.org_id, agent_id)
        steps = self._steps(agent, max_steps)
        request = agent_pb2.SendMessageRequest(agent_id=agent.id, messages=inputs, max_steps=steps)
        serialized = request.SerializeToString(deterministic=True)
        start = await self._runs.start(
            actor.org_id,
            agent.id,
            idempotency_key,
            max_steps=steps,
            status=CREATED,
            request=serialized,
            batch_id=batch_id,
            background=True,
        )
        if start.existing and start.run.request is not None and start.run.request != serialized:
            raise _key_reused(start.run.id)
        if not start.existing:
            self.launch(actor, start.run)
        return start.run

    def launch(self, actor: Actor, run: RunRow) -> asyncio.Task[Any]:
        """Executes a created (or interrupted) background run in its own task, free of any caller deadline."""

        async def background() -> None:
            with acting_as(actor):
                try:
                    await self.run_background(actor, run)
                except MnemoError as exc:
                    log.warning("background run %s failed: %s", run.id, exc.message)
                except Exception:
                    log.exception("background run %s failed", run.id)

        task = asyncio.create_task(background())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def run_background(
        self, actor: Actor, run: RunRow, *, llm: ChatCaller | None = None
    ) -> TurnResult | None:
        """Executes a background run now (used by async sends and batches); `llm` takes its model calls."""
        request = agent_pb2.SendMessageRequest.FromString(run.request or b"")
        try:
            agent = await self._agents.row(actor.org_id, run.agent_id)
        except NotFound:
            await self._runs.finish(
                run.id,
                status=FAILED,
                stop_reason=turn_pb2.STOP_REASON_ERROR,
                usage=turn_pb2.Usage(),
                message_ids=[],
                error="the agent was deleted before the run started",
            )
            return None
        delay = 0.05
        while True:
            async with self._locks.hold(agent.id):
                fresh = await self._runs.get(actor.org_id, run.id)
                if fresh.status not in (CREATED, FAILED):
                    return None  # cancelled before it started, or already done
                try:
                    if not await self._runs.take(fresh.id, agent.id, from_statuses=(CREATED, FAILED)):
                        return None
                except AgentBusy:
                    pass  # another replica holds the agent: nobody waits for this run, so wait too
                else:
                    result = await self._execute(
                        agent,
                        fresh,
                        list(request.messages),
                        fresh.max_steps,
                        resume=fresh.status == FAILED,
                        llm=llm,
                    )
                    break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        if self.after_turn is not None and result.stop_reason != turn_pb2.STOP_REASON_CANCELLED:
            self.after_turn(actor, agent, result)
        return result

    async def approve(self, actor: Actor, run_id: str, *, approve: bool, reason: str = "") -> TurnResult:
        """Approves or denies the tool calls a run waits for, and resumes its turn."""
        check_text(reason, "reason", max_chars=10_000)
        run = await self._runs.get(actor.org_id, run_id)
        agent = await self._agents.row(actor.org_id, run.agent_id)

        async def resume() -> TurnResult:
            async with self._locks.hold(agent.id):
                fresh = await self._runs.get(actor.org_id, run_id)
                if fresh.status != AWAITING_APPROVAL:
                    raise FailedPrecondition(
                        f"run {run_id} is not waiting for approval (it is {fresh.status})",
                        reason="RUN_NOT_AWAITING_APPROVAL",
                    )
                await self._take(fresh, from_statuses=(AWAITING_APPROVAL,))
                return await self._execute(
                    agent, fresh, [], fresh.max_steps, resume=True, decision=_Decision(approve, reason)
                )

        return await asyncio.create_task(resume())

    async def cancel(self, actor: Actor, run_id: str) -> RunRow:
        """Cancels a run that has not finished; returns the run as it is afterwards."""
        run = await self._runs.get(actor.org_id, run_id)
        if run.status in FINISHED:
            return run
        task = self._active.get(run.id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), timeout=10)
        elif run.status == CREATED:
            await self._runs.cancel_unstarted(run.id)
        elif run.status == AWAITING_APPROVAL:
            agent = await self._agents.row(actor.org_id, run.agent_id)
            async with self._locks.hold(agent.id):
                fresh = await self._runs.get(actor.org_id, run_id)
                if fresh.status == AWAITING_APPROVAL and await self._runs.take(
                    fresh.id, fresh.agent_id, from_statuses=(AWAITING_APPROVAL,)
                ):
                    await self._execute(agent, fresh, [], fresh.max_steps, resume=True, cancel_pending=True)
        else:
            # Held by another replica: it sees the request within run_cancel_poll_seconds.
            await self._runs.request_cancel(run.id)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                await asyncio.sleep(min(0.2, self._cancel_poll))
                run = await self._runs.get(actor.org_id, run_id)
                if run.status in FINISHED:
                    return run
        return await self._runs.get(actor.org_id, run_id)

    async def ephemeral(
        self,
        actor: Actor,
        config: AgentConfig,
        blocks: list[block_pb2.Block],
        tool_ids: list[str],
        context: Sequence[message_pb2.Message],
        messages: Sequence[message_pb2.Message],
        max_steps: int,
    ) -> TurnResult:
        """One turn of an agent given inline; nothing is stored anywhere."""
        inputs = check_inputs(messages)
        if not 0 <= max_steps <= self._max_steps_limit:
            raise invalid("max_steps", f"must be between 0 and {self._max_steps_limit}")
        turn = _Turn(
            agent=config,
            run_id="ephemeral",
            max_steps=min(max_steps or self.default_max_steps, self._max_steps_limit),
            recorder=EphemeralRecorder(),
            window_tokens=config.context_window or self._settings.default_context_window,
            history=list(context),
            history_count=len(context),
            blocks=blocks,
            pending=inputs,
            ephemeral=True,
        )
        self._use_tools(turn, await self._tools(tool_ids))
        stop = await self._loop(turn)
        return turn.result(stop)

    async def summarize(self, actor: Actor, agent_id: str) -> tuple[int, message_pb2.Message | None]:
        """Summarizes the oldest part of an agent's context window now."""
        agent = await self._agents.row(actor.org_id, agent_id)
        async with self._locks.hold(agent.id):
            turn = _Turn(
                agent=AgentConfig.of(agent),
                run_id="",
                max_steps=0,
                recorder=self._history,
                window_tokens=agent.context_window or self._settings.default_context_window,
            )
            window = await self._mesh.messages.GetContextWindow(
                history_pb2.GetContextWindowRequest(agent_id=agent.id)
            )
            turn.history = list(window.messages)
            turn.history_count = window.history_count
            try:
                evicted = await self._compact(turn)
            finally:
                self._windows.drop(agent.id)
        summary = (
            turn.history[0] if evicted and turn.history and cw.is_front_summary(turn.history[0]) else None
        )
        return evicted, summary

    async def recompile(self, actor: Actor, agent_id: str) -> str:
        """The system prompt the agent sees on its next step, from its current memory."""
        agent = await self._agents.row(actor.org_id, agent_id)
        window, blocks = await asyncio.gather(
            self._mesh.messages.GetContextWindow(history_pb2.GetContextWindowRequest(agent_id=agent.id)),
            self._agents.blocks_of(agent.id),
        )
        return compile_system_prompt(
            agent.system,
            blocks,
            history_count=window.history_count,
            in_context_count=len(window.messages),
            now=utcnow(),
        )

    async def run_messages(
        self, actor: Actor, run_id: str, *, size: int = 0, token: str = ""
    ) -> tuple[list[message_pb2.Message], str]:
        """A page of the messages a run stored, oldest first."""
        run = await self._runs.get(actor.org_id, run_id)
        page = await self._mesh.messages.ListMessages(
            history_pb2.ListMessagesRequest(
                agent_id=run.agent_id, run_id=run.id, page_size=size, page_token=token
            )
        )
        return list(page.messages), page.next_page_token

    def shutting_down(self) -> None:
        """From now on, a turn that is stopped was interrupted by the shutdown: its run stays resumable."""
        self._stopping = True

    async def aclose(self) -> None:
        """Stops background work (async runs, batches, sleep-time agents); their runs stay resumable."""
        self.shutting_down()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # ----- one turn -----

    async def _turn(
        self,
        actor: Actor,
        agent: AgentRow,
        inputs: list[message_pb2.Message],
        steps: int,
        idempotency_key: str,
        sink: Sink | None,
        stream_tokens: bool,
    ) -> TurnResult:
        async with self._locks.hold(agent.id):
            # Core memory and tools are read while the run is recorded: both are needed before the
            # first model call, and blocks are shared data that the agent's lock does not guard anyway.
            prefetched = asyncio.ensure_future(self._memory_of(agent))
            try:
                result = await self._begin(
                    actor, agent, inputs, steps, idempotency_key, sink, stream_tokens, prefetched
                )
            finally:
                if not prefetched.done():
                    prefetched.cancel()
                with contextlib.suppress(BaseException):
                    await prefetched  # consumed, so a failed read is never reported as unretrieved
        if self.after_turn is not None and result.stop_reason != turn_pb2.STOP_REASON_CANCELLED:
            self.after_turn(actor, agent, result)
        return result

    async def _begin(
        self,
        actor: Actor,
        agent: AgentRow,
        inputs: list[message_pb2.Message],
        steps: int,
        idempotency_key: str,
        sink: Sink | None,
        stream_tokens: bool,
        prefetched: asyncio.Future[tuple[list[block_pb2.Block], list[tool_pb2.Tool]]],
    ) -> TurnResult:
        """Records (or finds) the turn's run and executes, replays or resumes it."""
        request = agent_pb2.SendMessageRequest(agent_id=agent.id, messages=inputs, max_steps=steps)
        start = await self._start(
            actor, agent, idempotency_key, steps, request.SerializeToString(deterministic=True)
        )
        run = start.run
        if sink is not None:
            sink.started(run.id)
        if start.existing:
            if run.status in (COMPLETED, CANCELLED, AWAITING_APPROVAL):
                result = await self._replay(run)
                if sink is not None:
                    sink.messages(result.messages)
                return result
            if run.id in self._active:
                raise Aborted("a turn with this idempotency key is still running", reason="RUN_IN_PROGRESS")
            await self._take(run, from_statuses=(FAILED, RUNNING, CREATED))
        return await self._execute(
            agent,
            run,
            inputs,
            steps,
            resume=start.existing,
            sink=sink,
            stream_tokens=stream_tokens,
            prefetched=prefetched,
        )

    async def _start(self, actor: Actor, agent: AgentRow, key: str, steps: int, request: bytes) -> RunStart:
        """A running run for the turn; waits while another replica holds the agent."""
        delay = 0.02
        while True:
            try:
                start = await self._runs.start(actor.org_id, agent.id, key, max_steps=steps, request=request)
                if start.existing and start.run.request is not None and start.run.request != request:
                    raise _key_reused(start.run.id)
                return start
            except AgentBusy:
                remaining = remaining_time()
                if remaining is not None and remaining < delay:
                    raise Aborted(
                        "another turn of this agent is running elsewhere; retry later", reason="AGENT_BUSY"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def _take(self, run: RunRow, *, from_statuses: Sequence[str]) -> None:
        if run.status == RUNNING and run.lease_expires_at is not None and run.lease_expires_at > utcnow():
            raise Aborted("a turn with this idempotency key is still running", reason="RUN_IN_PROGRESS")
        try:
            taken = await self._runs.take(run.id, run.agent_id, from_statuses=from_statuses)
        except AgentBusy:
            taken = False
        if not taken:
            raise Aborted("the agent is held by another turn; retry later", reason="AGENT_BUSY")

    async def _execute(
        self,
        agent: AgentRow,
        run: RunRow,
        inputs: list[message_pb2.Message],
        max_steps: int,
        *,
        resume: bool,
        sink: Sink | None = None,
        stream_tokens: bool = False,
        decision: _Decision | None = None,
        cancel_pending: bool = False,
        prefetched: asyncio.Future[tuple[list[block_pb2.Block], list[tool_pb2.Tool]]] | None = None,
        llm: ChatCaller | None = None,
    ) -> TurnResult:
        turn = _Turn(
            agent=AgentConfig.of(agent),
            run_id=run.id,
            max_steps=max_steps,
            recorder=self._history,
            window_tokens=agent.context_window or self._settings.default_context_window,
            sink=sink,
            stream_tokens=stream_tokens,
            pending=list(inputs),
            llm=llm,
        )
        current = asyncio.current_task()
        assert current is not None
        self._active[run.id] = current
        # A timer, not a task: most turns end long before their lease needs extending.
        loop = asyncio.get_running_loop()
        beats: list[asyncio.Task[Any]] = []
        heartbeat = loop.call_later(
            self._runs.lease_seconds / 3,
            lambda: beats.append(asyncio.ensure_future(self._heartbeat(run.id))),
        )
        # Another replica cannot cancel this task; it flags the run, which this one checks for.
        watch = None
        if not self._agents.single_writer:
            watch = loop.call_later(
                self._cancel_poll,
                lambda: beats.append(asyncio.ensure_future(self._watch_cancel(run.id, current))),
            )
        try:
            with _tracer.start_as_current_span(
                "agent.turn", attributes={"agent.id": agent.id, "run.id": run.id}
            ):
                stop = await self._run_turn(
                    agent,
                    run,
                    turn,
                    resume=resume,
                    decision=decision,
                    cancel_pending=cancel_pending,
                    prefetched=prefetched,
                )
        except asyncio.CancelledError:
            self._windows.drop(agent.id)
            if self._stopping:
                # Resumable: by the next start (SQLite) or another replica's sweep (Postgres), or by a
                # retry with the same idempotency key.
                await asyncio.shield(
                    self._finish(turn, FAILED, turn_pb2.STOP_REASON_ERROR, error=INTERRUPTED)
                )
                raise
            await asyncio.shield(self._finish(turn, CANCELLED, turn_pb2.STOP_REASON_CANCELLED))
            return turn.result(turn_pb2.STOP_REASON_CANCELLED)
        except BaseException as exc:
            self._windows.drop(agent.id)
            error = exc.message if isinstance(exc, MnemoError) else f"{type(exc).__name__}: {exc}"
            await asyncio.shield(
                self._finish(turn, FAILED, turn_pb2.STOP_REASON_ERROR, error=error or type(exc).__name__)
            )
            raise
        finally:
            heartbeat.cancel()
            if watch is not None:
                watch.cancel()
            for beat in beats:
                beat.cancel()
            self._active.pop(run.id, None)
        if turn.loaded:
            self._windows.put(agent.id, turn.history, turn.history_count, turn.chat)
            if turn.voice:
                self._compact_later(agent, turn)
        if stop == turn_pb2.STOP_REASON_CANCELLED:
            await self._finish(turn, CANCELLED, stop)
        elif stop == turn_pb2.STOP_REASON_REQUIRES_APPROVAL:
            await self._finish(turn, AWAITING_APPROVAL, stop)
        else:
            await self._finish(turn, COMPLETED, stop)
        return turn.result(stop)

    def _compact_later(self, agent: AgentRow, turn: _Turn) -> None:
        """Summarizes a voice agent's window after its turn (never before its first model call)."""
        stored = sum(cw.message_tokens(m) for m in turn.history)
        actor = current_actor_or_none()
        if actor is None or stored < cw.PROACTIVE_THRESHOLD * turn.window_tokens:
            return

        async def compact() -> None:
            try:
                await self.summarize(actor, agent.id)
            except MnemoError as exc:
                log.warning("background summary of voice agent %s failed: %s", agent.id, exc.message)

        task = asyncio.create_task(compact())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish(
        self, turn: _Turn, status: str, stop: turn_pb2.StopReason.ValueType, error: str = ""
    ) -> None:
        await self._runs.finish(
            turn.run_id,
            status=status,
            stop_reason=stop,
            usage=turn.usage,
            message_ids=[m.id for m in turn.produced],
            error=error,
            pending_approvals=[{"id": c.id, "name": c.name, "arguments": c.arguments} for c in turn.awaiting],
        )

    async def _heartbeat(self, run_id: str) -> None:
        """Extends the run's lease while the turn works (cancel requests are `_watch_cancel`'s)."""
        interval = self._runs.lease_seconds / 3
        while True:
            try:
                await self._runs.heartbeat(run_id)
            except MnemoError as exc:
                log.warning("cannot extend the lease of run %s: %s", run_id, exc.message)
            await asyncio.sleep(interval)

    async def _watch_cancel(self, run_id: str, task: asyncio.Task[Any]) -> None:
        """Cancels the turn soon after another replica asked for it (replicas share the database)."""
        while True:
            try:
                if await self._runs.cancel_requested(run_id):
                    task.cancel()
                    return
            except MnemoError as exc:
                log.warning("cannot check run %s for a cancel request: %s", run_id, exc.message)
            await asyncio.sleep(self._cancel_poll)

    async def _replay(self, run: RunRow) -> TurnResult:
        stored = await self._run_messages(run.agent_id, run.id)
        wanted = set(run.message_ids)
        usage = turn_pb2.Usage(
            prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens,
            total_tokens=run.total_tokens,
            step_count=run.step_count,
        )
        return TurnResult(
            run.id,
            [m for m in stored if m.id in wanted],
            usage,
            STOP_REASONS.value(run.stop_reason),
        )

    async def _run_messages(self, agent_id: str, run_id: str) -> list[message_pb2.Message]:
        messages: list[message_pb2.Message] = []
        token = ""
        while True:
            page = await self._mesh.messages.ListMessages(
                history_pb2.ListMessagesRequest(
                    agent_id=agent_id, run_id=run_id, page_size=1000, page_token=token
                )
            )
            messages.extend(page.messages)
            token = page.next_page_token
            if not token:
                return messages

    async def _run_turn(
        self,
        agent: AgentRow,
        run: RunRow,
        turn: _Turn,
        *,
        resume: bool,
        decision: _Decision | None,
        cancel_pending: bool,
        prefetched: asyncio.Future[tuple[list[block_pb2.Block], list[tool_pb2.Tool]]] | None = None,
    ) -> turn_pb2.StopReason.ValueType:
        if resume:
            stored = await self._run_messages(agent.id, run.id)
            if stored:
                turn.pending = []
                turn.usage.CopyFrom(
                    turn_pb2.Usage(
                        prompt_tokens=run.prompt_tokens,
                        completion_tokens=run.completion_tokens,
                        total_tokens=run.total_tokens,
                    )
                )
                stop = self._restore(turn, stored)
                if decision is not None or cancel_pending:
                    turn.shown_from = len(turn.produced)
                elif stop is not None:
                    return stop
        memory = prefetched if prefetched is not None else asyncio.ensure_future(self._memory_of(agent))
        cached = self._windows.get(agent.id)
        if cached is not None:
            blocks, tools = await memory
            turn.history, turn.history_count, turn.chat = cached
        else:
            window, (blocks, tools) = await asyncio.gather(
                self._mesh.messages.GetContextWindow(history_pb2.GetContextWindowRequest(agent_id=agent.id)),
                memory,
            )
            turn.history = list(window.messages)
            turn.history_count = window.history_count
        turn.loaded = True
        turn.blocks = blocks
        self._use_tools(turn, tools)
        if turn.awaiting:
            if decision is None and not cancel_pending:
                return turn_pb2.STOP_REASON_REQUIRES_APPROVAL
            calls, turn.awaiting = turn.awaiting, []
            if cancel_pending:
                returns = [_denied(call, "the run was cancelled") for call in calls]
            else:
                assert decision is not None
                returns = await self._run_tools(turn, calls, first_step=False, decision=decision)
            stored_returns = await self._append(turn, returns)
            turn.produced.extend(stored_returns)
            if cancel_pending:
                return turn_pb2.STOP_REASON_CANCELLED
            if self._terminal(turn, calls, returns):
                return turn_pb2.STOP_REASON_TOOL_RULE
        return await self._loop(turn)

    async def _memory_of(self, agent: AgentRow) -> tuple[list[block_pb2.Block], list[tool_pb2.Tool]]:
        """The agent's core memory blocks and tools, read together."""
        blocks, tools = await asyncio.gather(
            self._mesh.blocks.ListBlocks(block_pb2.ListBlocksRequest(agent_id=agent.id, page_size=1000)),
            self._tools(list(agent.tool_ids or [])),
        )
        return list(blocks.blocks), tools

    def _restore(
        self, turn: _Turn, stored: list[message_pb2.Message]
    ) -> turn_pb2.StopReason.ValueType | None:
        """Rebuilds a run's progress from its stored batches; returns the stop reason if it had ended."""
        turn.produced = [m for m in stored if not (m.step == 0 and _kind(m) in _INPUT_KINDS)]
        turn.next_batch = max(m.step for m in stored) + 1
        replied_steps = {m.step for m in stored if _kind(m) in ("assistant", "reasoning", "tool_call")}
        turn.llm_calls = len(replied_steps)
        turn.usage.step_count = turn.llm_calls
        turn.calls_this_turn = turn.llm_calls
        calls = [m.tool_call.tool_call for m in stored if _kind(m) == "tool_call"]
        turn.calls = Counter(call.name for call in calls)
        answered = {m.tool_return.tool_call_id for m in stored if _kind(m) == "tool_return"}
        turn.awaiting = [call for call in calls if call.id not in answered]
        last = [m for m in stored if m.step == turn.next_batch - 1]
        if (
            not turn.awaiting
            and any(_kind(m) in ("assistant", "reasoning") for m in last)
            and not any(_kind(m) == "tool_call" for m in last)
        ):
            return turn_pb2.STOP_REASON_END_TURN
        return None

    def _use_tools(self, turn: _Turn, tools: list[tool_pb2.Tool]) -> None:
        turn.tools = {tool.name: tool for tool in tools}
        turn.schemas = [
            llm_pb2.ToolSchema(name=t.name, description=t.description, parameters_json=t.json_schema)
            for t in tools
        ]

    async def _append(self, turn: _Turn, messages: list[message_pb2.Message]) -> list[message_pb2.Message]:
        """Stores a batch as the run's next step; returns the stored messages that are not inputs.

        A batch in flight completes even if the turn is cancelled meanwhile, so the run records
        exactly what is stored.
        """
        call = asyncio.ensure_future(
            turn.recorder.append(turn.agent.id, turn.run_id, turn.next_batch, messages)
        )
        try:
            stored = await asyncio.shield(call)
        except asyncio.CancelledError:
            stored = await call
            turn.produced.extend(self._stored(turn, stored))
            raise
        return self._stored(turn, stored)

    @staticmethod
    def _stored(turn: _Turn, stored: list[message_pb2.Message]) -> list[message_pb2.Message]:
        turn.next_batch += 1
        turn.history.extend(stored)
        turn.history_count += len(stored)
        turn.emit([m for m in stored if _kind(m) not in _INPUT_KINDS])
        return [m for m in stored if _kind(m) not in _INPUT_KINDS]

    def _request(
        self, turn: _Turn, tools: list[llm_pb2.ToolSchema], choice: llm_pb2.ToolChoice.ValueType
    ) -> llm_pb2.ChatRequest:
        history = turn.history
        if turn.voice and len(history) > self._settings.voice_max_messages:
            body = history[len(history) - self._settings.voice_max_messages :]
            while body and _kind(body[0]) == "tool_return":
                body = body[1:]
            chat = to_chat_messages([*body, *turn.pending])
        elif turn.pending and _kind(turn.pending[0]) == "tool_return":
            chat = to_chat_messages([*history, *turn.pending])
        else:
            chat = [*turn.chat.of(history), *to_chat_messages(turn.pending)]
        system = compile_system_prompt(
            turn.agent.system,
            turn.blocks,
            history_count=turn.history_count + len(turn.pending),
            in_context_count=len(turn.history) + len(turn.pending),
            now=utcnow(),
        )
        options = turn.agent.llm_options
        request = llm_pb2.ChatRequest(
            model=turn.agent.model,
            messages=[
                llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content=system),
                *chat,
            ],
            tools=tools,
            tool_choice=choice if tools else llm_pb2.TOOL_CHOICE_UNSPECIFIED,
            max_tokens=int(options.get("max_tokens", 0)),
            parallel_tool_calls=bool(options.get("parallel_tool_calls", False)),
            agent_id=turn.agent.id if not turn.ephemeral else "",
        )
        if options.get("temperature") is not None:
            request.temperature = float(options["temperature"])
        return request

    async def _loop(self, turn: _Turn) -> turn_pb2.StopReason.ValueType:
        rules = turn.agent.rules
        while turn.llm_calls < turn.max_steps:
            first_step = turn.calls_this_turn == 0
            offered, choice = rules.offered(turn.schemas, first_step=first_step, calls=turn.calls)
            with _tracer.start_as_current_span(
                "agent.step", attributes={"agent.id": turn.agent.id, "step": turn.next_batch}
            ):
                request = await self._fit(turn, offered, choice)
                reply = await self._chat_fitting(turn, request, offered, choice)
                if reply is None:
                    if turn.pending:
                        turn.produced.extend(await self._append(turn, turn.pending))
                        turn.pending = []
                    return turn_pb2.STOP_REASON_CONTEXT_OVERFLOW
                turn.llm_calls += 1
                turn.calls_this_turn += 1
                _add_usage(turn.usage, reply.usage)
                step_messages = from_reply(reply.message)
                calls = [m.tool_call.tool_call for m in step_messages if m.HasField("tool_call")]
                if any(rules.needs_approval(call.name) for call in calls):
                    turn.produced.extend(await self._append(turn, [*turn.pending, *step_messages]))
                    turn.pending = []
                    turn.awaiting = calls
                    turn.calls.update(call.name for call in calls)
                    return turn_pb2.STOP_REASON_REQUIRES_APPROVAL
                returns = await self._run_tools(turn, calls, first_step=first_step)
                turn.produced.extend(await self._append(turn, [*turn.pending, *step_messages, *returns]))
                turn.pending = []
                if not calls:
                    return turn_pb2.STOP_REASON_END_TURN
                if self._terminal(turn, calls, returns):
                    return turn_pb2.STOP_REASON_TOOL_RULE
        return turn_pb2.STOP_REASON_MAX_STEPS

    @staticmethod
    def _terminal(
        turn: _Turn, calls: Sequence[message_pb2.ToolCall], returns: Sequence[message_pb2.Message]
    ) -> bool:
        return any(
            turn.agent.rules.ends_turn(call.name)
            and ret.tool_return.status == message_pb2.TOOL_RETURN_STATUS_SUCCESS
            for call, ret in zip(calls, returns, strict=True)
        )

    # ----- the context window -----

    async def _fit(
        self, turn: _Turn, offered: list[llm_pb2.ToolSchema], choice: llm_pb2.ToolChoice.ValueType
    ) -> llm_pb2.ChatRequest:
        """The step's request, after summarizing when it would fill >= 90 % of the window."""
        request = self._request(turn, offered, choice)
        window = turn.window_tokens
        estimate = cw.chat_tokens(request)
        # A voice agent's first call goes out at once; its context is kept small instead.
        rounds = 0 if turn.voice and turn.calls_this_turn == 0 else 3
        while estimate >= cw.PROACTIVE_THRESHOLD * window and rounds > 0:
            rounds -= 1
            if not await self._compact(turn):
                break
            request = self._request(turn, offered, choice)
            estimate = cw.chat_tokens(request)
        if (
            estimate >= cw.PRESSURE_THRESHOLD * window
            and not turn.ephemeral
            and not cw.pressure_noted([*turn.history, *turn.pending])
        ):
            turn.pending.append(cw.pressure_event(min(99, estimate * 100 // window)))
            request = self._request(turn, offered, choice)
        return request

    async def _chat_fitting(
        self,
        turn: _Turn,
        request: llm_pb2.ChatRequest,
        offered: list[llm_pb2.ToolSchema],
        choice: llm_pb2.ToolChoice.ValueType,
    ) -> llm_pb2.ChatResponse | None:
        """The model's reply; on a context overflow, summarizes and retries (None when nothing helps)."""
        for _ in range(4):
            try:
                return await self._chat(turn, request)
            except InvalidArgument as exc:
                if exc.reason != cw.CONTEXT_WINDOW_EXCEEDED:
                    raise
                log.info("agent %s: the model reported a context overflow; summarizing", turn.agent.id)
                # The provider's window is smaller than the configured one: trust it from now on.
                turn.window_tokens = min(turn.window_tokens, max(256, cw.chat_tokens(request) * 9 // 10))
                if not await self._compact(turn):
                    return None
                request = self._request(turn, offered, choice)
        return None

    async def _chat(self, turn: _Turn, request: llm_pb2.ChatRequest) -> llm_pb2.ChatResponse:
        if turn.llm is not None:
            return await turn.llm(request, f"{turn.run_id}:{turn.next_batch}")
        if turn.sink is not None and turn.stream_tokens and time.monotonic() >= self._no_streaming_until:
            try:
                return await self._stream_chat(turn, request)
            except Unimplemented:
                log.info("the llm-gateway cannot stream; falling back to whole replies")
                self._no_streaming_until = time.monotonic() + _NO_STREAMING_FOR
        return await self._mesh.llm.Chat(request, timeout=self._llm_timeout)

    async def _stream_chat(self, turn: _Turn, request: llm_pb2.ChatRequest) -> llm_pb2.ChatResponse:
        assert turn.sink is not None
        step = turn.next_batch
        events = self._mesh.llm.StreamChat(llm_pb2.StreamChatRequest(chat=request), timeout=self._llm_timeout)
        completed: llm_pb2.ChatResponse | None = None
        # Read to the end (`completed` is the last event), so the stream closes normally on both sides.
        async for event in events:
            kind = event.WhichOneof("event")
            if kind == "content_delta":
                turn.sink.delta(Delta(turn.run_id, step, False, event.content_delta))
            elif kind == "reasoning_delta":
                turn.sink.delta(Delta(turn.run_id, step, True, event.reasoning_delta))
            elif kind == "completed":
                completed = event.completed
        if completed is None:
            raise Unavailable("the model stream ended without a completed reply", reason="STREAM_INCOMPLETE")
        return completed

    async def _compact(self, turn: _Turn) -> int:
        """Evicts the oldest ~30 % of the window behind a summary; returns how many messages left it."""
        front = 1 if turn.history and cw.is_front_summary(turn.history[0]) else 0
        body = turn.history[front:]
        cut = cw.choose_cut(body)
        if cut is None:
            return 0
        evicted = body[:cut]
        previous = turn.history[0].event.text if front else ""
        limit = max(200, min(self._settings.summary_max_chars, turn.window_tokens * 4 // 10))
        model = turn.agent.summarizer_model or self._settings.summarizer_model or turn.agent.model
        with _tracer.start_as_current_span("agent.summarize", attributes={"agent.id": turn.agent.id}):
            try:
                text = await self._summarizer.summarize(model, turn.agent.id, previous, evicted, limit=limit)
                event = cw.summary_event(text, len(evicted))
            except Cancelled:
                raise
            except MnemoError as exc:
                # The summarizer must never fail the turn: drop the oldest messages and say so.
                log.warning(
                    "agent %s: summarizer failed (%s); truncating instead", turn.agent.id, exc.message
                )
                event = cw.truncation_event(
                    len(evicted), f"the summarizer failed: {exc.message}", previous, limit
                )
            try:
                stored, count = await turn.recorder.compact(turn.agent.id, body[cut].id, event, body[0].id)
            except Aborted:
                window = await self._mesh.messages.GetContextWindow(
                    history_pb2.GetContextWindowRequest(agent_id=turn.agent.id)
                )
                turn.history = list(window.messages)
                return 0
        turn.history = ([stored] if stored is not None else []) + body[cut:]
        if stored is not None:
            turn.emit([stored])
        return max(count, 1)

    # ----- tools -----

    async def _tools(self, tool_ids: list[str]) -> list[tool_pb2.Tool]:
        """The agent's tools; built-ins (fixed ids, immutable) come from a cache, the rest are fetched."""
        if not tool_ids:
            return []
        missing = [i for i in tool_ids if i not in self._builtin_tools]
        if missing:
            try:
                response = await self._mesh.tools.BatchGetTools(
                    tool_pb2.BatchGetToolsRequest(tool_ids=missing)
                )
            except NotFound as exc:
                raise FailedPrecondition(
                    f"the agent refers to tools that no longer exist ({exc.message}); update its tool_ids",
                    reason="AGENT_TOOLS_MISSING",
                ) from None
            fetched = {tool.id: tool for tool in response.tools}
            for tool in response.tools:
                if tool.id.startswith("tool-builtin-"):
                    self._builtin_tools[tool.id] = tool
        else:
            fetched = {}
        return [self._builtin_tools.get(i) or fetched[i] for i in tool_ids]

    async def _run_tools(
        self,
        turn: _Turn,
        calls: Sequence[message_pb2.ToolCall],
        *,
        first_step: bool,
        decision: _Decision | None = None,
    ) -> list[message_pb2.Message]:
        """Runs a step's tool calls, concurrently; returns their results in call order.

        Calls that break a tool rule or were denied get an error result without running. Memory
        tools run one after another in call order (they edit the same blocks); the rest run at once.
        """
        memory_lock = asyncio.Lock()
        jobs: list[asyncio.Task[message_pb2.Message] | message_pb2.Message] = []
        async with asyncio.TaskGroup() as group:
            for call in calls:
                refused = None
                if (
                    decision is not None
                    and turn.agent.rules.needs_approval(call.name)
                    and not decision.approve
                ):
                    jobs.append(_denied(call, decision.reason or "the user denied it"))
                    continue
                if decision is None:
                    refused = turn.agent.rules.refusal(call.name, first_step=first_step, calls=turn.calls)
                    turn.calls[call.name] += 1
                if refused is not None:
                    jobs.append(_tool_message(call, _error_return(refused)))
                    continue
                jobs.append(group.create_task(self._run_tool(turn, call, memory_lock)))
        return [job if isinstance(job, message_pb2.Message) else job.result() for job in jobs]

    async def _run_tool(
        self, turn: _Turn, call: message_pb2.ToolCall, memory_lock: asyncio.Lock
    ) -> message_pb2.Message:
        tool = turn.tools.get(call.name)
        with _tracer.start_as_current_span("agent.tool", attributes={"tool.name": call.name}):
            try:
                if tool is None:
                    raise ToolError(
                        f"there is no tool named '{call.name}'; available: {', '.join(sorted(turn.tools))}"
                    )
                if tool.tool_type == tool_pb2.TOOL_TYPE_MEMORY:
                    async with memory_lock:
                        outcome = await self._invoke(turn, tool, call, turn.blocks)
                else:
                    outcome = await self._invoke(turn, tool, call, turn.blocks)
            except ToolError as exc:
                outcome = _error_return(str(exc))
            except _MODEL_FIXABLE as exc:
                outcome = _error_return(exc.message)
            except Unimplemented as exc:
                outcome = _error_return(exc.message)
        limit = tool.return_char_limit if tool is not None else 0
        outcome.content = fit_result(outcome.content, limit)
        return _tool_message(call, outcome)

    async def _invoke(
        self, turn: _Turn, tool: tool_pb2.Tool, call: message_pb2.ToolCall, blocks: list[block_pb2.Block]
    ) -> message_pb2.ToolReturnContent:
        try:
            args = parse_arguments(call.arguments)
        except ArgumentsInvalid as exc:
            raise ToolError(str(exc)) from None
        agent = turn.agent
        if tool.tool_type == tool_pb2.TOOL_TYPE_MEMORY:
            if turn.ephemeral and tool.name in MemoryTools.writing:
                raise ToolError("memory is read-only in an ephemeral turn; nothing can be saved")
            text, changed = await self._memory_tools.run(agent, tool.name, args)
            for i, block in enumerate(blocks):
                if changed is not None and block.id == changed.id:
                    blocks[i] = changed
            return message_pb2.ToolReturnContent(content=text, status=message_pb2.TOOL_RETURN_STATUS_SUCCESS)
        if tool.tool_type in (tool_pb2.TOOL_TYPE_CUSTOM, tool_pb2.TOOL_TYPE_MCP):
            result = await self._mesh.tools.RunTool(
                tool_pb2.RunToolRequest(
                    tool_id=tool.id,
                    arguments_json=call.arguments or "{}",
                    agent_id="" if turn.ephemeral else agent.id,
                )
            )
            return message_pb2.ToolReturnContent(
                content=result.content, status=result.status, stdout=result.stdout, stderr=result.stderr
            )
        raise ToolError(
            f"tool '{tool.name}' is of type {tool_pb2.ToolType.Name(tool.tool_type)}, which this server cannot run"
        )


def _key_reused(run_id: str) -> InvalidArgument:
    return InvalidArgument(
        "this idempotency key was used for a different request to this agent; use a new key for a new message",
        reason="IDEMPOTENCY_KEY_REUSED",
        metadata={"run_id": run_id},
    )


def _tool_message(call: message_pb2.ToolCall, outcome: message_pb2.ToolReturnContent) -> message_pb2.Message:
    outcome.tool_call_id = call.id
    outcome.name = call.name
    return message_pb2.Message(tool_return=outcome)


def _error_return(text: str) -> message_pb2.ToolReturnContent:
    return message_pb2.ToolReturnContent(
        content=f"Error: {text}", status=message_pb2.TOOL_RETURN_STATUS_ERROR
    )


def _denied(call: message_pb2.ToolCall, reason: str) -> message_pb2.Message:
    return _tool_message(call, _error_return(f"the call was not run: {reason}"))
