"""Runs nobody waits for: async sends, the turns of batches, and runs restarted after a crash.

Such a run is recorded as created with its request, then executed in its own task, free of any
caller's deadline. It waits for its agent (in this process and on other replicas) rather than failing,
since nobody is there to retry it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from mnemo.agent.v1 import agent_pb2
from mnemo.common.v1 import turn_pb2
from mnemo_agent.chat_rounds import ChatCaller
from mnemo_agent.runs import CREATED, FAILED, AgentBusy, Runs
from mnemo_agent.store import Agent, Run
from mnemo_agent.turn.events import TurnResult
from mnemo_agent.turn.lifecycle import Execution, RunLifecycle, key_reused
from mnemo_agent.turn.ports import AgentRows
from mnemo_agent.turn.request import TurnRequest, TurnSettings, check_inputs
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import MnemoError, NotFound
from mnemo_core.validation import check_text

log = logging.getLogger(__name__)

# Told of every turn that ended (sleep-time agents count them).
TurnEnded = Callable[[Actor, Agent, TurnResult], None]


class BackgroundRuns:
    """Records background runs and executes them."""

    def __init__(
        self,
        agents: AgentRows,
        runs: Runs,
        lifecycle: RunLifecycle,
        settings: TurnSettings,
        *,
        on_turn_end: TurnEnded,
    ) -> None:
        self._agents = agents
        self._runs = runs
        self._lifecycle = lifecycle
        self._settings = settings
        self._on_turn_end = on_turn_end

    async def send(self, actor: Actor, request: TurnRequest) -> Run:
        """Records a run for a turn and starts it in the background; returns the run at once."""
        inputs = check_inputs(request.messages)
        check_text(request.idempotency_key, "idempotency_key", max_chars=256)
        agent = await self._agents.row(actor.org_id, request.agent_id)
        steps = self._settings.steps(request.max_steps, agent.max_steps)
        serialized = agent_pb2.SendMessageRequest(
            agent_id=agent.id, messages=inputs, max_steps=steps
        ).SerializeToString(deterministic=True)
        start = await self._runs.start(
            actor.org_id,
            agent.id,
            request.idempotency_key,
            max_steps=steps,
            status=CREATED,
            request=serialized,
            background=True,
            lineage=request.lineage,
        )
        if start.existing and start.run.request is not None and start.run.request != serialized:
            raise key_reused(start.run.id)
        if not start.existing:
            self.launch(actor, start.run)
        elif start.run.status == FAILED and start.run.id not in self._lifecycle.active:
            # Sent again after it failed (a provider outage, a restart): it resumes where it stopped, as a
            # turn sent again with its key does.
            self.launch(actor, start.run)
            return dataclasses.replace(start.run, status=CREATED, error="")
        return start.run

    def launch(self, actor: Actor, run: Run) -> asyncio.Task[None]:
        """Executes a created (or interrupted) background run in its own task."""

        async def background() -> None:
            with acting_as(actor):
                try:
                    await self.run(actor, run)
                except MnemoError as exc:
                    log.warning("background run %s failed: %s", run.id, exc.message)
                except Exception:
                    log.exception("background run %s failed", run.id)

        return self._lifecycle.spawn(background())

    async def run(self, actor: Actor, run: Run, *, llm: ChatCaller | None = None) -> TurnResult | None:
        """Executes a background run now (async sends and batches); `llm` takes its model calls. None when
        there was nothing to execute (cancelled before it started, already done, or its agent is gone)."""
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
            async with self._lifecycle.locks.hold(agent.id):
                fresh = await self._runs.get(actor.org_id, run.id)
                if fresh.status not in (CREATED, FAILED):
                    return None  # cancelled before it started, or already done
                try:
                    if not await self._runs.take(fresh.id, agent.id, from_statuses=(CREATED, FAILED)):
                        return None
                except AgentBusy:
                    pass  # another replica holds the agent: nobody waits for this run, so wait too
                else:
                    result = await self._lifecycle.execute(
                        Execution(
                            agent,
                            fresh,
                            fresh.max_steps,
                            inputs=list(request.messages),
                            resume=fresh.status == FAILED,
                            llm=llm,
                        )
                    )
                    break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        self._on_turn_end(actor, agent, result)
        return result
