"""The entry points of turns: send, stream, approve, cancel, ephemeral turns, summaries.

A turn is recorded as a run first (unique per agent and idempotency key): a retry with the same key
replays the run's result, or resumes it from its last stored step. The turn itself runs in its own
task, so that CancelRun can stop it and its run still records the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from mnemo.agent.v1 import agent_pb2
from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.memory.v1 import block_pb2
from mnemo_agent import context_window as cw
from mnemo_agent.chat_rounds import ChatCaller
from mnemo_agent.memory_tools import MemoryTools
from mnemo_agent.mesh import Mesh
from mnemo_agent.prompt import compile_system_prompt
from mnemo_agent.runs import (
    AWAITING_APPROVAL,
    CALLER_GONE,
    CANCELLED,
    COMPLETED,
    CREATED,
    FAILED,
    FINISHED,
    RUNNING,
    Runs,
)
from mnemo_agent.settings import AgentSettings
from mnemo_agent.store import Agent, Run
from mnemo_agent.turn.background import BackgroundRuns, TurnEnded
from mnemo_agent.turn.breakdown import ContextBreakdown, context_breakdown
from mnemo_agent.turn.caches import ToolCatalog
from mnemo_agent.turn.context import ContextFitter
from mnemo_agent.turn.dispatch import ToolDispatch
from mnemo_agent.turn.events import MessagesStored, RunStarted, Sink, TurnEvent, TurnResult
from mnemo_agent.turn.lifecycle import Execution, RunLifecycle
from mnemo_agent.turn.loop import StepLoop
from mnemo_agent.turn.mesh_ports import MeshMemory, MeshModel, MeshTools
from mnemo_agent.turn.messaging import AgentMessaging
from mnemo_agent.turn.model_calls import ModelCalls
from mnemo_agent.turn.ports import AgentRows, Memory, MemoryToolRunner, Model, ToolSource
from mnemo_agent.turn.recorders import EphemeralRecorder
from mnemo_agent.turn.request import Decision, TurnRequest, TurnSettings, check_inputs
from mnemo_agent.turn.state import AgentConfig, TurnState
from mnemo_core.actor import Actor
from mnemo_core.errors import Aborted, FailedPrecondition, MnemoError
from mnemo_core.validation import check_text
from mnemo_core.wire import utcnow

# How long CancelRun waits for a cancelled turn to record its outcome.
CANCEL_WAIT = 10.0


class Turns:
    """Runs agent turns."""

    def __init__(
        self,
        agents: AgentRows,
        runs: Runs,
        *,
        memory: Memory,
        tools: ToolSource,
        memory_tools: MemoryToolRunner,
        model: Model,
        settings: TurnSettings,
    ) -> None:
        self._agents = agents
        self._runs = runs
        self._memory = memory
        self._model = model
        self._settings = settings
        self._catalog = ToolCatalog(tools)
        summarizer = cw.Summarizer(
            model,
            cw.SummarizerSettings(
                input_tokens=settings.summarizer_input_tokens, timeout=settings.summarizer_timeout
            ),
        )
        context = ContextFitter(memory, summarizer, settings)
        messenger = AgentMessaging(self, agents, settings)
        self._loop = StepLoop(context, ToolDispatch(tools, memory_tools, messenger), ModelCalls(model))
        self._lifecycle = RunLifecycle(agents, runs, memory, self._catalog, self._loop, context, settings)
        self._background = BackgroundRuns(agents, runs, self._lifecycle, settings, on_turn_end=self._ended)
        self.default_max_steps = settings.default_max_steps
        self.after_turn: TurnEnded | None = None

    @classmethod
    def over_mesh(cls, agents: AgentRows, runs: Runs, mesh: Mesh, settings: AgentSettings) -> Turns:
        """Turns whose memory, tools and model are the mesh's services."""
        return cls(
            agents,
            runs,
            memory=MeshMemory(mesh),
            tools=MeshTools(mesh),
            memory_tools=MemoryTools(mesh),
            model=MeshModel(mesh.llm, timeout=settings.llm_timeout),
            settings=TurnSettings.of(settings),
        )

    # ----- turns of stored agents -----

    async def send(self, actor: Actor, request: TurnRequest, *, sink: Sink | None = None) -> TurnResult:
        """Runs one turn (or returns/resumes the run recorded under its idempotency key)."""
        inputs = check_inputs(request.messages)
        check_text(request.idempotency_key, "idempotency_key", max_chars=256)
        agent = await self._agents.row(actor.org_id, request.agent_id)
        steps = self._settings.steps(request.max_steps, agent.max_steps)
        if agent.agent_type == "voice" and sink is None:
            raise FailedPrecondition(
                "voice agents answer by streaming only; use StreamMessage (or the /messages/stream route)",
                reason="VOICE_AGENT_STREAMS_ONLY",
            )
        stream_tokens = request.stream_tokens or agent.agent_type == "voice"
        # The turn runs in its own task so that CancelRun can stop it and still record the outcome.
        return await asyncio.create_task(
            self._turn(actor, agent, inputs, steps, request, sink, stream_tokens)
        )

    @contextlib.asynccontextmanager
    async def stream(self, actor: Actor, request: TurnRequest) -> AsyncIterator[AsyncIterator[TurnEvent]]:
        """Runs one turn; its events come as they happen: `RunStarted` first, the `TurnResult` last.

        Leaving the block before the end (a client that went away) cancels the turn; its run records that.
        """
        queue: asyncio.Queue[TurnEvent | None] = asyncio.Queue()
        task = asyncio.create_task(self.send(actor, request, sink=queue.put_nowait))
        task.add_done_callback(lambda _: queue.put_nowait(None))

        async def events() -> AsyncIterator[TurnEvent]:
            while (event := await queue.get()) is not None:
                yield event
            yield task.result()

        try:
            yield events()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, MnemoError):
                    await task

    async def send_async(self, actor: Actor, request: TurnRequest) -> Run:
        """Records a run for a turn and starts it in the background; returns the run at once."""
        return await self._background.send(actor, request)

    def launch(self, actor: Actor, run: Run) -> asyncio.Task[None]:
        """Executes a created (or interrupted) background run in its own task, free of any caller deadline."""
        return self._background.launch(actor, run)

    async def run_background(
        self, actor: Actor, run: Run, *, llm: ChatCaller | None = None
    ) -> TurnResult | None:
        """Executes a background run now (used by batches); `llm` takes its model calls."""
        return await self._background.run(actor, run, llm=llm)

    async def approve(self, actor: Actor, run_id: str, decision: Decision) -> TurnResult:
        """Approves or denies the tool calls a run waits for, and resumes its turn."""
        check_text(decision.reason, "reason", max_chars=10_000)
        run = await self._runs.get(actor.org_id, run_id)
        agent = await self._agents.row(actor.org_id, run.agent_id)

        async def resume() -> TurnResult:
            async with self._lifecycle.locks.hold(agent.id):
                fresh = await self._runs.get(actor.org_id, run_id)
                if fresh.status != AWAITING_APPROVAL:
                    raise FailedPrecondition(
                        f"run {run_id} is not waiting for approval (it is {fresh.status})",
                        reason="RUN_NOT_AWAITING_APPROVAL",
                    )
                await self._lifecycle.take(fresh, from_statuses=(AWAITING_APPROVAL,))
                return await self._lifecycle.execute(
                    Execution(agent, fresh, fresh.max_steps, resume=True, decision=decision)
                )

        return await asyncio.create_task(resume())

    async def cancel(self, actor: Actor, run_id: str) -> Run:
        """Cancels a run that has not finished; returns the run as it is afterwards."""
        run = await self._runs.get(actor.org_id, run_id)
        if run.status in FINISHED:
            return run
        task = self._lifecycle.active.get(run.id)
        if task is not None:
            self._lifecycle.ask_cancel(run.id, task)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), timeout=CANCEL_WAIT)
        elif run.status == CREATED:
            await self._runs.cancel_unstarted(run.id)
        elif run.status == AWAITING_APPROVAL:
            agent = await self._agents.row(actor.org_id, run.agent_id)
            async with self._lifecycle.locks.hold(agent.id):
                fresh = await self._runs.get(actor.org_id, run_id)
                if fresh.status == AWAITING_APPROVAL and await self._runs.take(
                    fresh.id, fresh.agent_id, from_statuses=(AWAITING_APPROVAL,)
                ):
                    await self._lifecycle.execute(
                        Execution(agent, fresh, fresh.max_steps, resume=True, cancel_awaiting=True)
                    )
        else:
            # Held by another replica: it sees the request within run_cancel_poll_seconds.
            await self._runs.request_cancel(run.id)
            deadline = time.monotonic() + CANCEL_WAIT
            while time.monotonic() < deadline:
                await asyncio.sleep(min(0.2, self._settings.cancel_poll_seconds))
                run = await self._runs.get(actor.org_id, run_id)
                if run.status in FINISHED:
                    return run
        return await self._runs.get(actor.org_id, run_id)

    async def summarize(self, actor: Actor, agent_id: str) -> tuple[int, message_pb2.Message | None]:
        """Summarizes the oldest part of an agent's context window now."""
        return await self._lifecycle.summarize(await self._agents.row(actor.org_id, agent_id))

    async def recompile(self, actor: Actor, agent_id: str) -> str:
        """The system prompt the agent sees on its next step, from its current memory."""
        agent = await self._agents.row(actor.org_id, agent_id)
        window, blocks = await asyncio.gather(self._memory.window(agent.id), self._memory.blocks(agent.id))
        return compile_system_prompt(
            agent.system,
            blocks,
            history_count=window.history_count,
            in_context_count=len(window.messages),
            now=utcnow(),
            memory_tool_set=agent.memory_tool_set,
        ).text

    async def context(self, actor: Actor, agent_id: str) -> ContextBreakdown:
        """How the agent's next model call would fill its context window now, section by section."""
        agent = await self._agents.row(actor.org_id, agent_id)
        window, blocks, tools = await asyncio.gather(
            self._memory.window(agent.id),
            self._memory.blocks(agent.id),
            self._catalog.tools(list(agent.tool_ids or [])),
        )
        schemas = TurnState.schemas_of(tools)
        return await context_breakdown(
            agent,
            window,
            blocks,
            schemas,
            self._model,
            context_window=agent.context_window or self._settings.default_context_window,
        )

    async def run_messages(
        self, actor: Actor, run_id: str, *, size: int = 0, token: str = ""
    ) -> tuple[list[message_pb2.Message], str]:
        """A page of the messages a run stored, oldest first."""
        run = await self._runs.get(actor.org_id, run_id)
        return await self._memory.run_page(run.agent_id, run.id, size=size, token=token)

    # ----- ephemeral turns -----

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
        turn = TurnState(
            agent=config,
            run_id="ephemeral",
            max_steps=self._settings.steps(max_steps),
            recorder=EphemeralRecorder(),
            window_tokens=config.context_window or self._settings.default_context_window,
            history=list(context),
            history_count=len(context),
            blocks=blocks,
            pending=inputs,
            ephemeral=True,
        )
        turn.use_tools(await self._catalog.tools(tool_ids))
        stop = await self._loop.run(turn)
        return turn.result(stop)

    # ----- stopping -----

    def shutting_down(self) -> None:
        """From now on, a turn that is stopped was interrupted by the shutdown: its run stays resumable."""
        self._lifecycle.stopping = True

    async def aclose(self) -> None:
        """Stops background work (async runs, batches, summaries); their runs stay resumable."""
        await self._lifecycle.aclose()

    # ----- one turn -----

    async def _turn(
        self,
        actor: Actor,
        agent: Agent,
        inputs: list[message_pb2.Message],
        steps: int,
        turn_request: TurnRequest,
        sink: Sink | None,
        stream_tokens: bool,
    ) -> TurnResult:
        async with self._lifecycle.locks.hold(agent.id):
            # Core memory and tools are read while the run is recorded: both are needed before the
            # first model call, and blocks are shared data that the agent's lock does not guard anyway.
            prefetched = asyncio.ensure_future(self._lifecycle.memory_of(agent))
            try:
                request = agent_pb2.SendMessageRequest(agent_id=agent.id, messages=inputs, max_steps=steps)
                start = await self._lifecycle.start(
                    actor,
                    agent,
                    turn_request.idempotency_key,
                    steps,
                    request.SerializeToString(deterministic=True),
                    turn_request.lineage,
                )
                run = start.run
                if sink is not None:
                    sink(RunStarted(run.id))
                result = await self._again(run, sink) if start.existing else None
                if result is None:
                    result = await self._lifecycle.execute(
                        Execution(
                            agent,
                            run,
                            steps,
                            inputs=inputs,
                            resume=start.existing,
                            sink=sink,
                            stream_tokens=stream_tokens,
                            prefetched=prefetched,
                        )
                    )
            finally:
                if not prefetched.done():
                    prefetched.cancel()
                with contextlib.suppress(BaseException):
                    await prefetched  # consumed, so a failed read is never reported as unretrieved
        self._ended(actor, agent, result)
        return result

    async def _again(self, run: Run, sink: Sink | None) -> TurnResult | None:
        """A turn sent again with its idempotency key: the run's result when it ended (or waits for
        approval), else None once the run is taken over to resume it. A run whose caller went away was
        not cancelled by anyone: it resumes."""
        caller_gone = run.status == CANCELLED and run.error == CALLER_GONE
        if run.status in (COMPLETED, CANCELLED, AWAITING_APPROVAL) and not caller_gone:
            result = await self._lifecycle.replay(run)
            if sink is not None:
                sink(MessagesStored(result.messages))
            return result
        if run.id in self._lifecycle.active:
            raise Aborted("a turn with this idempotency key is still running", reason="RUN_IN_PROGRESS")
        await self._lifecycle.take(run, from_statuses=(FAILED, RUNNING, CREATED, CANCELLED))
        return None

    def _ended(self, actor: Actor, agent: Agent, result: TurnResult) -> None:
        if self.after_turn is not None and result.stop_reason != turn_pb2.STOP_REASON_CANCELLED:
            self.after_turn(actor, agent, result)
