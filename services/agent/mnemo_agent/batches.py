"""Batches: many agent turns submitted at once, run in the background with bounded concurrency.

Each turn of a batch is a run (status CREATED until it starts, its request stored with it); a
batch is its runs. Turns of one agent run one after another in submission order; turns of
different agents run concurrently, at most `concurrency` at a time. Provider batch APIs are not
used: every turn is a normal multi-step turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from mnemo.agent.v1 import agent_pb2
from mnemo.common.v1 import message_pb2
from mnemo_agent.models import AgentRow, BatchRow, RunRow
from mnemo_agent.runs import CREATED, FINISHED, Runs
from mnemo_agent.turns import Turns, check_inputs
from mnemo_core.actor import Actor, acting_as
from mnemo_core.db import Database
from mnemo_core.errors import MnemoError, NotFound
from mnemo_core.ids import new_id, require_id
from mnemo_core.validation import invalid
from mnemo_core.wire import utcnow

log = logging.getLogger(__name__)

MAX_BATCH_TURNS = 1000


@dataclass(frozen=True, slots=True)
class BatchView:
    """A batch with its runs."""

    row: BatchRow
    runs: list[RunRow]

    @property
    def completed(self) -> bool:
        return all(run.status in FINISHED for run in self.runs)


class Batches:
    """Creates batches and runs their turns."""

    def __init__(
        self, db: Database, runs: Runs, turns: Turns, *, concurrency: int, max_steps_limit: int
    ) -> None:
        self._db = db
        self._runs = runs
        self._turns = turns
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._max_steps_limit = max_steps_limit
        self._tasks: set[asyncio.Task[None]] = set()

    async def create(
        self, actor: Actor, turns: Sequence[tuple[str, list[message_pb2.Message], int]]
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
        async with self._db.read() as session:
            agents = {
                row.id: row
                for row in await session.scalars(
                    select(AgentRow).where(AgentRow.org_id == actor.org_id, AgentRow.id.in_(wanted))
                )
            }
        for i, request in enumerate(requests):
            if request.agent_id not in agents:
                raise NotFound(
                    f"turns[{i}]: agent {request.agent_id} not found",
                    reason="AGENT_NOT_FOUND",
                    metadata={"agent_id": request.agent_id},
                )
        now = utcnow()
        batch = BatchRow(id=new_id("batch"), org_id=actor.org_id, run_ids=[], created_at=now)
        runs = []
        for request in requests:
            agent = agents[request.agent_id]
            steps = min(
                request.max_steps or agent.max_steps or self._turns.default_max_steps, self._max_steps_limit
            )
            runs.append(
                RunRow(
                    id=new_id("run"),
                    org_id=actor.org_id,
                    agent_id=agent.id,
                    status=CREATED,
                    stop_reason="",
                    prompt_tokens=0,
                    completion_tokens=0,
                    total_tokens=0,
                    step_count=0,
                    idempotency_key=None,
                    message_ids=[],
                    error="",
                    created_at=now,
                    cancel_requested=False,
                    max_steps=steps,
                    request=request.SerializeToString(),
                    batch_id=batch.id,
                    pending_approvals=[],
                    background=True,
                )
            )
        batch.run_ids = [run.id for run in runs]
        async with self._db.write() as session:
            session.add(batch)
            session.add_all(runs)
        self.start(actor, runs)
        return BatchView(batch, runs)

    def start(self, actor: Actor, runs: Sequence[RunRow]) -> None:
        """Runs the given created runs in the background: per agent in order, across agents concurrently."""
        by_agent: dict[str, list[RunRow]] = defaultdict(list)
        for run in runs:
            by_agent[run.agent_id].append(run)
        for agent_runs in by_agent.values():
            task = asyncio.create_task(self._run_agent(actor, agent_runs))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_agent(self, actor: Actor, runs: list[RunRow]) -> None:
        with acting_as(actor):
            for run in runs:
                async with self._slots:
                    try:
                        await self._turns.run_background(actor, run)
                    except MnemoError as exc:
                        log.warning("batch run %s failed: %s", run.id, exc.message)
                    except Exception:
                        log.exception("batch run %s failed", run.id)

    async def get(self, org_id: str, batch_id: str) -> BatchView:
        """A batch with the current state of its runs."""
        require_id(batch_id, "batch_id")
        async with self._db.read() as session:
            row = await session.scalar(
                select(BatchRow).where(BatchRow.id == batch_id, BatchRow.org_id == org_id)
            )
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
