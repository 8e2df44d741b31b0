"""Batches: many agent turns submitted at once, run in the background, polled.

Each turn of a batch is a run (status CREATED until it starts, its request stored with it); a
batch is its runs. Turns of one agent run one after another in submission order. Every turn is a
normal multi-step turn; what differs is where its model calls go:

- *concurrent*: ordinary `LlmService.Chat` calls, at most `concurrency` turns at a time;
- *provider*: every agent's turns run at once and their model calls are gathered into provider
  batches (`ChatRounds`), one round per step.

*auto* picks provider mode when the provider of every agent's model has a batch API (the
llm-gateway says so for a `validate_only` CreateChatBatch), else concurrent mode.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from mnemo.agent.v1 import agent_pb2
from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_agent.chat_rounds import ChatCaller, ChatRounds, PendingRound
from mnemo_agent.mesh import Mesh
from mnemo_agent.runs import CREATED, FINISHED, Runs
from mnemo_agent.store import AgentQueries, Batch, BatchQueries, Run
from mnemo_agent.turn import Turns, check_inputs
from mnemo_core.actor import Actor, acting_as
from mnemo_core.db import Database
from mnemo_core.errors import FailedPrecondition, InvalidArgument, MnemoError, NotFound, Unimplemented
from mnemo_core.ids import new_id, require_id
from mnemo_core.validation import invalid
from mnemo_core.wire import utcnow

log = logging.getLogger(__name__)

MAX_BATCH_TURNS = 1000
AUTO, CONCURRENT, PROVIDER = "auto", "concurrent", "provider"


@dataclass(frozen=True, slots=True)
class BatchView:
    """A batch with its runs."""

    row: Batch
    runs: list[Run]

    @property
    def completed(self) -> bool:
        return all(run.status in FINISHED for run in self.runs)


class Batches:
    """Creates batches and runs their turns."""

    def __init__(
        self,
        db: Database,
        runs: Runs,
        turns: Turns,
        mesh: Mesh,
        *,
        concurrency: int,
        max_steps_limit: int,
        collect_window: float = 1.0,
        poll_interval: float = 30.0,
    ) -> None:
        self._db = db
        self._runs = runs
        self._turns = turns
        self._mesh = mesh
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._max_steps_limit = max_steps_limit
        self._collect_window = collect_window
        self._poll_interval = poll_interval
        self._tasks: set[asyncio.Task[None]] = set()

    async def create(
        self,
        actor: Actor,
        turns: Sequence[tuple[str, list[message_pb2.Message], int]],
        *,
        mode: str = AUTO,
    ) -> BatchView:
        """Records the batch and its runs (all or none) and starts them in the background."""
        if not turns:
            raise invalid("turns", "submit at least one turn")
        if len(turns) > MAX_BATCH_TURNS:
            raise invalid("turns", f"at most {MAX_BATCH_TURNS} turns per batch")
        requests = []
        for i, (agent_id, messages, max_steps) in enumerate(turns):
            require_id(agent_id, f"turns[{i}].agent_id")
            try:
                inputs = check_inputs(messages)
            except MnemoError as exc:
                raise invalid(f"turns[{i}].messages", exc.message) from None
            if not 0 <= max_steps <= self._max_steps_limit:
                raise invalid(f"turns[{i}].max_steps", f"must be between 0 and {self._max_steps_limit}")
            requests.append(
                agent_pb2.SendMessageRequest(agent_id=agent_id, messages=inputs, max_steps=max_steps)
            )
        wanted = {r.agent_id for r in requests}
        agents = await self._db.read(AgentQueries.in_org, actor.org_id, list(wanted))
        for i, request in enumerate(requests):
            if request.agent_id not in agents:
                raise NotFound(
                    f"turns[{i}]: agent {request.agent_id} not found",
                    reason="AGENT_NOT_FOUND",
                    metadata={"agent_id": request.agent_id},
                )
        resolved = await self._mode(mode, {agent.model for agent in agents.values()})
        now = utcnow()
        batch_id = new_id("batch")
        runs = []
        for request in requests:
            agent = agents[request.agent_id]
            steps = min(
                request.max_steps or agent.max_steps or self._turns.default_max_steps, self._max_steps_limit
            )
            runs.append(
                Run(
                    id=new_id("run"),
                    org_id=actor.org_id,
                    agent_id=agent.id,
                    status=CREATED,
                    created_at=now,
                    max_steps=steps,
                    request=request.SerializeToString(),
                    batch_id=batch_id,
                    background=True,
                )
            )
        batch = Batch(
            id=batch_id, org_id=actor.org_id, created_at=now, run_ids=[run.id for run in runs], mode=resolved
        )
        await self._db.write(BatchQueries.insert, batch, runs)
        self.start(actor, batch, runs)
        return BatchView(batch, runs)

    async def _mode(self, mode: str, models: set[str]) -> str:
        """The mode a batch runs in: provider mode only where every model's provider has a batch API."""
        if mode == CONCURRENT:
            return CONCURRENT
        by_provider: dict[str, list[str]] = defaultdict(list)
        for model in sorted(models):
            by_provider[model.partition("/")[0].lower()].append(model)
        probe = [llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content="batch")]
        try:
            for provider_models in by_provider.values():
                await self._mesh.llm.CreateChatBatch(
                    llm_pb2.CreateChatBatchRequest(
                        requests=[llm_pb2.ChatRequest(model=m, messages=probe) for m in provider_models],
                        validate_only=True,
                    )
                )
        except (FailedPrecondition, NotFound, InvalidArgument, Unimplemented) as exc:
            if mode == PROVIDER:
                raise
            log.info("batch runs its turns concurrently: %s", exc.message)
            return CONCURRENT
        return PROVIDER

    def start(self, actor: Actor, batch: Batch, runs: Sequence[Run]) -> None:
        """Runs the given created runs in the background: per agent in order, across agents concurrently."""
        by_agent: dict[str, list[Run]] = defaultdict(list)
        for run in runs:
            by_agent[run.agent_id].append(run)
        rounds = None
        if batch.mode == PROVIDER:
            rounds = ChatRounds(
                self._mesh.llm,
                window=self._collect_window,
                poll_interval=self._poll_interval,
                on_change=lambda pending, count: self._record_rounds(batch.id, pending, count),
                rounds_done=batch.round_count or 0,
            )
            with acting_as(actor):
                rounds.adopt(
                    [PendingRound(r["chat_batch_id"], list(r["calls"])) for r in batch.pending_rounds or []]
                )
        task = asyncio.create_task(self._run_batch(actor, list(by_agent.values()), rounds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, actor: Actor, by_agent: list[list[Run]], rounds: ChatRounds | None) -> None:
        if rounds is None:
            await asyncio.gather(*(self._run_agent(actor, runs, None) for runs in by_agent))
            return
        # Each agent is one live turn of the batch until its last turn ends.
        for _ in by_agent:
            rounds.join()
        try:
            await asyncio.gather(*(self._run_agent(actor, runs, rounds) for runs in by_agent))
        finally:
            await rounds.aclose()

    async def _run_agent(self, actor: Actor, runs: list[Run], rounds: ChatRounds | None) -> None:
        with acting_as(actor):
            try:
                for run in runs:
                    if rounds is None:
                        async with self._slots:
                            await self._run(actor, run, None)
                    else:
                        await self._run(actor, run, rounds.chat)
            finally:
                if rounds is not None:
                    rounds.leave()

    async def _run(self, actor: Actor, run: Run, llm: ChatCaller | None) -> None:
        try:
            await self._turns.run_background(actor, run, llm=llm)
        except MnemoError as exc:
            log.warning("batch run %s failed: %s", run.id, exc.message)
        except Exception:
            log.exception("batch run %s failed", run.id)

    async def _record_rounds(self, batch_id: str, pending: list[PendingRound], count: int) -> None:
        """Keeps the rounds waiting for a provider on the batch's record, for a restart to poll again."""
        rounds = [{"chat_batch_id": p.chat_batch_id, "calls": p.calls} for p in pending]
        await self._db.write(BatchQueries.set_rounds, batch_id, rounds, count)

    async def resume(self, actor: Actor, batch_id: str, runs: Sequence[Run]) -> None:
        """Starts a batch's runs again after a restart; provider mode polls the rounds it had submitted."""
        batch = await self._db.read(BatchQueries.get, batch_id)
        if batch is None:
            return
        order = {run_id: i for i, run_id in enumerate(batch.run_ids)}
        self.start(actor, batch, sorted(runs, key=lambda run: order.get(run.id, len(order))))

    async def get(self, org_id: str, batch_id: str) -> BatchView:
        """A batch with the current state of its runs."""
        require_id(batch_id, "batch_id")
        row = await self._db.read(BatchQueries.get, batch_id, org_id)
        if row is None:
            raise NotFound(
                f"batch {batch_id} not found", reason="BATCH_NOT_FOUND", metadata={"batch_id": batch_id}
            )
        return BatchView(row, await self._runs.many(org_id, row.run_ids))

    async def aclose(self) -> None:
        """Stops the batches still running (their runs count as interrupted)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
