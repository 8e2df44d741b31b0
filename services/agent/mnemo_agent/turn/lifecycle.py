"""A run's lifecycle around the step loop: who holds the agent, the lease, cancellation, the outcome.

Every turn is a run (mnemo_agent.runs). Executing one holds the agent's lock in this process and the run's
lease in the database (extended while the turn works); with replicas sharing the database a cancel
request of another replica is noticed by polling. A run that stored steps before it was interrupted
resumes from them; one that ended is replayed from what it stored. The outcome is recorded even when
the turn is cancelled; a turn stopped by a shutdown stays resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.memory.v1 import block_pb2
from mnemo.tools.v1 import tool_pb2
from mnemo_agent import context_window as cw
from mnemo_agent.chat_rounds import ChatCaller
from mnemo_agent.runs import (
    AWAITING_APPROVAL,
    CALLER_GONE,
    CANCELLED,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    RUNNING,
    STOP_REASONS,
    AgentBusy,
    Lineage,
    Runs,
    RunStart,
)
from mnemo_agent.store import Agent, Run
from mnemo_agent.turn import meters
from mnemo_agent.turn.caches import ToolCatalog, WindowCache
from mnemo_agent.turn.context import ContextFitter
from mnemo_agent.turn.events import Sink, TurnResult
from mnemo_agent.turn.loop import StepLoop
from mnemo_agent.turn.ports import AgentRows, Memory
from mnemo_agent.turn.request import Decision, TurnSettings
from mnemo_agent.turn.state import AgentConfig, TurnState
from mnemo_core.actor import Actor, current_actor_or_none, remaining_time
from mnemo_core.errors import Aborted, InvalidArgument, MnemoError
from mnemo_core.telemetry import tracer
from mnemo_core.wire import utcnow

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

# Page size for reading a run's stored messages back.
_RUN_PAGE = 1000


@dataclass(frozen=True, slots=True)
class AgentMemory:
    """What a turn reads of its agent before the first model call: core memory blocks and tools."""

    blocks: list[block_pb2.Block]
    tools: list[tool_pb2.Tool]


@dataclass(frozen=True, slots=True)
class Execution:
    """One execution of a run: a new turn, a resumed one, or one that goes on after an approval request."""

    agent: Agent
    run: Run
    max_steps: int
    inputs: Sequence[message_pb2.Message] = ()
    # Continue from the steps the run stored (a retry, an approval, a restart).
    resume: bool = False
    # The answer to the calls the run waits for.
    decision: Decision | None = None
    # Close the calls the run waits for and end it as cancelled.
    cancel_awaiting: bool = False
    sink: Sink | None = None
    stream_tokens: bool = False
    # The agent's memory, when its read was started before the run was recorded.
    prefetched: asyncio.Future[AgentMemory] | None = None
    # Where model calls go instead of the llm-gateway's Chat (a provider-mode batch).
    llm: ChatCaller | None = None


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


def key_reused(run_id: str) -> InvalidArgument:
    """The error for an idempotency key sent again with a different request."""
    return InvalidArgument(
        "this idempotency key was used for a different request to this agent; use a new key for a new message",
        reason="IDEMPOTENCY_KEY_REUSED",
        metadata={"run_id": run_id},
    )


class RunLifecycle:
    """Starts, executes, replays and finishes the runs of this process."""

    def __init__(
        self,
        agents: AgentRows,
        runs: Runs,
        memory: Memory,
        catalog: ToolCatalog,
        loop: StepLoop,
        context: ContextFitter,
        settings: TurnSettings,
    ) -> None:
        self._agents = agents
        self._runs = runs
        self._memory = memory
        self._catalog = catalog
        self._loop = loop
        self._context = context
        self._settings = settings
        self.locks = AgentLocks()
        self.windows = WindowCache(enabled=agents.single_writer)
        # Runs executing in this process, with the task that executes each.
        self.active: dict[str, asyncio.Task[Any]] = {}
        # Work nobody waits for (async runs, batches, summaries after voice turns); stopped on close.
        self._background: set[asyncio.Task[Any]] = set()
        # Set while the service shuts down: the turns it stops are interrupted, not cancelled by anyone.
        self.stopping = False
        # Runs someone asked to cancel (CancelRun); any other cancelled turn lost its caller.
        self.cancel_asked: set[str] = set()

    def ask_cancel(self, run_id: str, task: asyncio.Task[Any]) -> None:
        """Cancels the task executing `run_id` on request: its run ends cancelled for good."""
        self.cancel_asked.add(run_id)
        task.cancel()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Runs `work` in the background until it ends or the service stops."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def aclose(self) -> None:
        """Stops the background work; its runs stay resumable."""
        self.stopping = True
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # ----- recording a run -----

    async def start(
        self, actor: Actor, agent: Agent, key: str, steps: int, request: bytes, lineage: Lineage
    ) -> RunStart:
        """A running run for the turn (or the earlier run of `key`); waits while another replica holds
        the agent, as long as the caller's deadline allows."""
        delay = 0.02
        while True:
            try:
                start = await self._runs.start(
                    actor.org_id, agent.id, key, max_steps=steps, request=request, lineage=lineage
                )
                if start.existing and start.run.request is not None and start.run.request != request:
                    raise key_reused(start.run.id)
                return start
            except AgentBusy:
                remaining = remaining_time()
                if remaining is not None and remaining < delay:
                    raise Aborted(
                        "another turn of this agent is running elsewhere; retry later", reason="AGENT_BUSY"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def take(self, run: Run, *, from_statuses: Sequence[str]) -> None:
        """Makes an existing run running again in this process, or says why it cannot be."""
        if run.status == RUNNING and run.lease_expires_at is not None and run.lease_expires_at > utcnow():
            raise Aborted("a turn with this idempotency key is still running", reason="RUN_IN_PROGRESS")
        try:
            taken = await self._runs.take(run.id, run.agent_id, from_statuses=from_statuses)
        except AgentBusy:
            taken = False
        if not taken:
            raise Aborted("the agent is held by another turn; retry later", reason="AGENT_BUSY")

    async def replay(self, run: Run) -> TurnResult:
        """The result of a run that ended (or waits for approval), from what it stored."""
        wanted = set(run.message_ids)
        usage = turn_pb2.Usage(
            prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens,
            total_tokens=run.total_tokens,
            step_count=run.step_count,
        )
        stored = await self.stored_messages(run.agent_id, run.id)
        return TurnResult(
            run.id, [m for m in stored if m.id in wanted], usage, STOP_REASONS.value(run.stop_reason)
        )

    async def stored_messages(self, agent_id: str, run_id: str) -> list[message_pb2.Message]:
        """Every message a run stored, oldest first."""
        messages: list[message_pb2.Message] = []
        token = ""
        while True:
            page, token = await self._memory.run_page(agent_id, run_id, size=_RUN_PAGE, token=token)
            messages.extend(page)
            if not token:
                return messages

    async def memory_of(self, agent: Agent) -> AgentMemory:
        """The agent's core memory blocks and tools, read together."""
        blocks, tools = await asyncio.gather(
            self._memory.blocks(agent.id), self._catalog.tools(list(agent.tool_ids or []))
        )
        return AgentMemory(blocks, tools)

    # ----- executing a run -----

    async def execute(self, execution: Execution) -> TurnResult:
        """Executes a run that this process holds (running) and records its outcome."""
        agent, run = execution.agent, execution.run
        turn = TurnState(
            agent=AgentConfig.of(agent),
            run_id=run.id,
            max_steps=execution.max_steps,
            recorder=self._memory,
            window_tokens=agent.context_window or self._settings.default_context_window,
            sink=execution.sink,
            stream_tokens=execution.stream_tokens,
            pending=list(execution.inputs),
            llm=execution.llm,
            lineage=Lineage.of(run),
        )
        current = asyncio.current_task()
        assert current is not None
        self.active[run.id] = current
        meters.runs_held.add(1)
        started = time.perf_counter()
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
                self._settings.cancel_poll_seconds,
                lambda: beats.append(asyncio.ensure_future(self._watch_cancel(run.id, current))),
            )
        try:
            with _tracer.start_as_current_span(
                "agent.turn", attributes={"agent.id": agent.id, "run.id": run.id}
            ):
                stop = await self._advance(execution, turn)
        except asyncio.CancelledError:
            self.windows.drop(agent.id)
            if self.stopping:
                # Resumable: by the next start (SQLite) or another replica's sweep (Postgres), or by a
                # retry with the same idempotency key.
                await asyncio.shield(
                    self._finish(turn, FAILED, turn_pb2.STOP_REASON_ERROR, error=INTERRUPTED)
                )
                raise
            # Cancelled on request, or its caller went away (a dropped connection, a gateway that died):
            # then a retry with the same idempotency key finishes the turn instead of replaying this.
            error = "" if run.id in self.cancel_asked else CALLER_GONE
            await asyncio.shield(self._finish(turn, CANCELLED, turn_pb2.STOP_REASON_CANCELLED, error=error))
            return turn.result(turn_pb2.STOP_REASON_CANCELLED)
        except BaseException as exc:
            self.windows.drop(agent.id)
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
            self.active.pop(run.id, None)
            meters.runs_held.add(-1)
            meters.turn_duration.record(time.perf_counter() - started)
            self.cancel_asked.discard(run.id)
        if turn.loaded:
            self.windows.put(agent.id, turn.history, turn.history_count, turn.chat)
            if turn.voice:
                self._compact_later(agent, turn)
        if stop == turn_pb2.STOP_REASON_CANCELLED:
            await self._finish(turn, CANCELLED, stop)
        elif stop == turn_pb2.STOP_REASON_REQUIRES_APPROVAL:
            await self._finish(turn, AWAITING_APPROVAL, stop)
        else:
            await self._finish(turn, COMPLETED, stop)
        return turn.result(stop)

    async def _advance(self, execution: Execution, turn: TurnState) -> turn_pb2.StopReason.ValueType:
        """Restores what the run stored, loads the agent's context and goes on from there."""
        agent, run = execution.agent, execution.run
        answered = execution.decision is not None or execution.cancel_awaiting
        if execution.resume:
            stored = await self.stored_messages(agent.id, run.id)
            if stored:
                turn.pending = []
                turn.usage.CopyFrom(
                    turn_pb2.Usage(
                        prompt_tokens=run.prompt_tokens,
                        completion_tokens=run.completion_tokens,
                        total_tokens=run.total_tokens,
                    )
                )
                stop = turn.restore(stored)
                if answered:
                    turn.shown_from = len(turn.produced)
                elif stop is not None:
                    return stop
        memory = execution.prefetched
        if memory is None:
            memory = asyncio.ensure_future(self.memory_of(agent))
        cached = self.windows.get(agent.id)
        if cached is not None:
            read = await memory
            turn.history, turn.history_count, turn.chat = cached
        else:
            window, read = await asyncio.gather(self._memory.window(agent.id), memory)
            turn.history = window.messages
            turn.history_count = window.history_count
        turn.loaded = True
        turn.blocks = read.blocks
        turn.use_tools(read.tools)
        if turn.awaiting:
            if not answered:
                return turn_pb2.STOP_REASON_REQUIRES_APPROVAL
            stop = await self._loop.settle(turn, None if execution.cancel_awaiting else execution.decision)
            if stop is not None:
                return stop
        return await self._loop.run(turn)

    async def _finish(
        self, turn: TurnState, status: str, stop: turn_pb2.StopReason.ValueType, error: str = ""
    ) -> None:
        meters.turns.add(1, {"status": status, "stop_reason": STOP_REASONS.name(stop)})
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
                meters.lease_extensions.add(1, {"outcome": "failed"})
                log.warning("cannot extend the lease of run %s: %s", run_id, exc.message)
            else:
                meters.lease_extensions.add(1, {"outcome": "extended"})
            await asyncio.sleep(interval)

    async def _watch_cancel(self, run_id: str, task: asyncio.Task[Any]) -> None:
        """Cancels the turn soon after another replica asked for it (replicas share the database)."""
        while True:
            try:
                if await self._runs.cancel_requested(run_id):
                    self.ask_cancel(run_id, task)
                    return
            except MnemoError as exc:
                log.warning("cannot check run %s for a cancel request: %s", run_id, exc.message)
            await asyncio.sleep(self._settings.cancel_poll_seconds)

    # ----- summaries -----

    async def summarize(self, agent: Agent) -> tuple[int, message_pb2.Message | None]:
        """Summarizes the oldest part of an agent's context window now; returns how many messages left
        it and the summary in front of it."""
        async with self.locks.hold(agent.id):
            turn = TurnState(
                agent=AgentConfig.of(agent),
                run_id="",
                max_steps=0,
                recorder=self._memory,
                window_tokens=agent.context_window or self._settings.default_context_window,
            )
            window = await self._memory.window(agent.id)
            turn.history = window.messages
            turn.history_count = window.history_count
            try:
                evicted = await self._context.compact(turn)
            finally:
                self.windows.drop(agent.id)
        summary = (
            turn.history[0] if evicted and turn.history and cw.is_front_summary(turn.history[0]) else None
        )
        return evicted, summary

    def _compact_later(self, agent: Agent, turn: TurnState) -> None:
        """Summarizes a voice agent's window after its turn (never before its first model call)."""
        stored = sum(cw.message_tokens(m) for m in turn.history)
        if current_actor_or_none() is None or stored < cw.PROACTIVE_THRESHOLD * turn.window_tokens:
            return

        async def compact() -> None:
            try:
                await self.summarize(agent)
            except MnemoError as exc:
                log.warning("background summary of voice agent %s failed: %s", agent.id, exc.message)

        self.spawn(compact())
