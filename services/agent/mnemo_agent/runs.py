"""Run records: one per turn, unique per (agent, idempotency key), at most one active per agent.

An active run (running or awaiting approval) is what holds an agent: a unique partial index allows
one per agent, so two replicas can never interleave an agent's turns. A running run carries a lease
that its holder extends while it works; a run whose lease ran out is orphaned (its process died)
and is taken over. On SQLite (one process per database file) runs left running by a previous
process are orphaned by definition and are released at start.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from mnemo.common.v1 import turn_pb2
from mnemo_agent.store import (
    ACTIVE,
    AWAITING_APPROVAL,
    CALLER_GONE,
    CANCELLED,
    COMPLETED,
    CREATED,
    FAILED,
    INTERRUPTED,
    RUNNING,
    Run,
    RunQueries,
)
from mnemo_core.db import Database
from mnemo_core.errors import FailedPrecondition, NotFound, ResourceExhausted
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.proto_enums import EnumNames
from mnemo_core.quotas import RETRY_AFTER_KEY
from mnemo_core.wire import utcnow

__all__ = [
    "ACTIVE",
    "AWAITING_APPROVAL",
    "CALLER_GONE",
    "CANCELLED",
    "COMPLETED",
    "CREATED",
    "FAILED",
    "FINISHED",
    "INTERRUPTED",
    "RUNNING",
    "STOP_REASONS",
    "AgentBusy",
    "Lineage",
    "RunStart",
    "Runs",
]

FINISHED = (COMPLETED, FAILED, CANCELLED)

# Runs store a stop reason by its name in the contract ("end_turn", ...).
STOP_REASONS = EnumNames(turn_pb2.StopReason)


class AgentBusy(Exception):
    """Another replica holds the agent (its run is active and its lease is live)."""


@dataclass(frozen=True, slots=True)
class Lineage:
    """Where a run stands among other runs: in a chain of agent-to-agent messages, in a group run.

    A root run (a caller's message) has no parent. An agent-to-agent message makes a child one level
    deeper in the same chain; `waiting` are the agents whose turns wait for the child's reply (a turn
    of one of them cannot be asked for again: its agent is held until the reply comes).
    """

    root_run_id: str | None = None
    parent_run_id: str | None = None
    depth: int = 0
    waiting: tuple[str, ...] = ()
    group_run_id: str | None = None
    # Most runs the chain may hold, checked when a run of it is recorded (0: no check).
    budget: int = 0

    @classmethod
    def of(cls, run: Run) -> Lineage:
        """The lineage a run was recorded with."""
        return cls(
            root_run_id=run.root_run_id,
            parent_run_id=run.parent_run_id,
            depth=run.depth,
            waiting=tuple(run.waiting_agent_ids or ()),
            group_run_id=run.group_run_id,
        )

    def child(self, run_id: str, agent_id: str, *, waits: bool, budget: int) -> Lineage:
        """The lineage of a turn that the run `run_id` of `agent_id` asks another agent for."""
        return Lineage(
            root_run_id=self.root_run_id or run_id,
            parent_run_id=run_id,
            depth=self.depth + 1,
            waiting=(*self.waiting, agent_id) if waits else (),
            budget=budget,
        )


@dataclass(frozen=True, slots=True)
class RunStart:
    """The run a turn records into; `existing` is set when an idempotency key matched an earlier run."""

    run: Run
    existing: bool


def _not_found(run_id: str) -> NotFound:
    return NotFound(f"run {run_id} not found", reason="RUN_NOT_FOUND", metadata={"run_id": run_id})


class Runs:
    """Creates, leases, finishes and lists run records."""

    def __init__(
        self,
        db: Database,
        *,
        lease_seconds: float = 60.0,
        max_running_per_org: int = 0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self.lease_seconds = lease_seconds
        # Runs one organization may have running at once (0: no cap).
        self.max_running_per_org = max_running_per_org
        # Lease times are read from here, so tests can move time instead of waiting for it.
        self._now = clock

    def _lease(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.lease_seconds)

    async def start(
        self,
        org_id: str,
        agent_id: str,
        idempotency_key: str,
        *,
        max_steps: int,
        status: str = RUNNING,
        request: bytes | None = None,
        batch_id: str | None = None,
        run_id: str | None = None,
        background: bool = False,
        lineage: Lineage | None = None,
    ) -> RunStart:
        """A new run (running, or created for a background turn), or the earlier run with the same key.

        Raises AgentBusy when a new running run cannot hold the agent yet, and ResourceExhausted when the
        chain of agent-to-agent messages it belongs to has taken its budget of turns.
        """
        lineage = lineage or Lineage()
        if lineage.root_run_id and lineage.budget:
            await self._check_budget(org_id, agent_id, idempotency_key, lineage)
        now = self._now()
        run = Run(
            id=run_id or new_id("run"),
            org_id=org_id,
            agent_id=agent_id,
            status=status,
            created_at=now,
            idempotency_key=idempotency_key or None,
            lease_expires_at=self._lease(now) if status == RUNNING else None,
            max_steps=max_steps,
            request=request,
            batch_id=batch_id,
            background=background,
            parent_run_id=lineage.parent_run_id,
            root_run_id=lineage.root_run_id,
            depth=lineage.depth,
            waiting_agent_ids=list(lineage.waiting),
            group_run_id=lineage.group_run_id,
        )
        capped = status == RUNNING and batch_id is None and self.max_running_per_org > 0
        for _ in range(3):
            try:
                if capped:
                    await self._db.write(self._insert_within_cap, run)
                else:
                    await self._db.write(RunQueries.insert, [run])
            except IntegrityError:
                if idempotency_key:
                    found = await self._db.read(RunQueries.by_key, org_id, agent_id, idempotency_key)
                    if found is not None:
                        return RunStart(found, existing=True)
                await self._release_orphan(agent_id)
                continue
            return RunStart(run, existing=False)
        raise AgentBusy(agent_id)

    def _insert_within_cap(self, conn: Connection, run: Run) -> None:
        """Inserts a running run unless its organization has its cap of running runs already.

        Counted in the inserting transaction, so on SQLite (one writer) the cap is exact. A retry with a
        recorded idempotency key is never refused: it finds its run instead of starting one.
        """
        if run.idempotency_key and RunQueries.by_key(conn, run.org_id, run.agent_id, run.idempotency_key):
            RunQueries.insert(conn, [run])  # raises IntegrityError: the caller returns the recorded run
        running = RunQueries.running_in_org(conn, run.org_id, run.created_at)
        if running >= self.max_running_per_org:
            raise ResourceExhausted(
                f"this organization has {running} runs going already (at most "
                f"{self.max_running_per_org} at once); retry when one has finished",
                reason="ORG_RUNS_EXHAUSTED",
                metadata={"max_running_runs": str(self.max_running_per_org), RETRY_AFTER_KEY: "1"},
            )
        RunQueries.insert(conn, [run])

    async def _check_budget(self, org_id: str, agent_id: str, key: str, lineage: Lineage) -> None:
        """Refuses a new run of a chain that holds its budget already (a retry of a recorded one is fine).

        Counted before the insert, not with it: calls of one step run at once and may overshoot the budget
        by the rest of that step's calls, which is bounded; what matters is that the chain ends.
        """
        assert lineage.root_run_id is not None

        def read(conn: Connection) -> tuple[Run | None, int]:
            existing = RunQueries.by_key(conn, org_id, agent_id, key) if key else None
            return existing, RunQueries.in_chain(conn, lineage.root_run_id or "")

        existing, count = await self._db.read(read)
        if existing is None and count >= lineage.budget:
            raise ResourceExhausted(
                f"this chain of agent-to-agent messages has taken its {lineage.budget} turns; "
                "answer with what you have instead of sending more messages",
                reason="MESSAGE_BUDGET_EXHAUSTED",
                metadata={"root_run_id": lineage.root_run_id},
            )

    async def active(self, agent_id: str) -> Run | None:
        """The run that holds the agent now, if any."""
        return await self._db.read(RunQueries.active, agent_id)

    async def _release_orphan(self, agent_id: str) -> None:
        """Fails the agent's active run if its lease ran out; raises when the agent is legitimately held."""
        holder = await self.active(agent_id)
        if holder is None:
            return
        if holder.status == AWAITING_APPROVAL:
            raise FailedPrecondition(
                f"run {holder.id} of this agent waits for a tool call to be approved or denied; "
                "approve, deny or cancel it first",
                reason="APPROVAL_PENDING",
                metadata={"run_id": holder.id},
            )
        expires = holder.lease_expires_at
        if expires is not None and expires > self._now():
            raise AgentBusy(agent_id)
        await self.fail_orphan(holder.id)

    async def fail_orphan(self, run_id: str) -> None:
        """Marks a run whose holder is gone as failed (a retry with its key resumes it)."""
        values = {
            "status": FAILED,
            "error": INTERRUPTED,
            "lease_expires_at": None,
            "completed_at": self._now(),
        }
        await self._db.write(RunQueries.change, run_id, [RUNNING], values)

    async def take(self, run_id: str, agent_id: str, *, from_statuses: Sequence[str]) -> bool:
        """Makes a run running again (resume, approval, background start).

        False if it was in none of `from_statuses`; raises AgentBusy while another run holds the agent.
        """
        for attempt in range(2):
            values = {
                "status": RUNNING,
                "error": "",
                "lease_expires_at": self._lease(self._now()),
                "completed_at": None,
            }
            try:
                return await self._db.write(RunQueries.change, run_id, from_statuses, values)
            except IntegrityError:
                if attempt:
                    raise AgentBusy(agent_id) from None
                await self._release_orphan(agent_id)
        raise AgentBusy(agent_id)

    async def heartbeat(self, run_id: str) -> None:
        """Extends a running run's lease."""
        await self._db.write(
            RunQueries.change, run_id, [RUNNING], {"lease_expires_at": self._lease(self._now())}
        )

    async def cancel_requested(self, run_id: str) -> bool:
        """Whether someone asked to cancel the run (a replica other than its holder)."""
        return await self._db.read(RunQueries.cancel_requested, run_id)

    async def finish(
        self,
        run_id: str,
        *,
        status: str,
        stop_reason: turn_pb2.StopReason.ValueType,
        usage: turn_pb2.Usage,
        message_ids: list[str],
        error: str = "",
        pending_approvals: list[dict[str, str]] | None = None,
    ) -> None:
        """Records the outcome (or the approval stop) of a run."""
        values = {
            "status": status,
            "stop_reason": STOP_REASONS.name(stop_reason),
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "step_count": usage.step_count,
            "message_ids": message_ids,
            "error": error,
            "lease_expires_at": None,
            "pending_approvals": pending_approvals or [],
            "completed_at": None if status == AWAITING_APPROVAL else self._now(),
        }
        await self._db.write(RunQueries.finish, run_id, values)

    async def cancel_unstarted(self, run_id: str) -> bool:
        """Cancels a run that was created but has not started; False if it had started."""
        values = {
            "status": CANCELLED,
            "stop_reason": STOP_REASONS.name(turn_pb2.STOP_REASON_CANCELLED),
            "completed_at": self._now(),
        }
        return await self._db.write(RunQueries.change, run_id, [CREATED], values)

    async def request_cancel(self, run_id: str) -> None:
        """Asks the holder of a running run (maybe another replica) to cancel it."""
        await self._db.write(RunQueries.change, run_id, [], {"cancel_requested": True})

    async def get(self, org_id: str, run_id: str) -> Run:
        """One run of the organization."""
        require_id(run_id, "run_id")
        run = await self._db.read(RunQueries.get, org_id, run_id)
        if run is None:
            raise _not_found(run_id)
        return run

    async def completed_count(self, agent_id: str) -> int:
        """How many turns of the agent completed (kept across restarts and shared by replicas)."""
        return await self._db.read(RunQueries.completed_count, agent_id)

    async def many(self, org_id: str, run_ids: Sequence[str]) -> builtins.list[Run]:
        """Runs by id, in the given order (unknown ids are skipped)."""
        runs = await self._db.read(RunQueries.many, org_id, run_ids)
        return [runs[i] for i in run_ids if i in runs]

    async def list(
        self, org_id: str, *, agent_id: str = "", status: str = "", size: int = 0, token: str = ""
    ) -> tuple[builtins.list[Run], str]:
        """Runs, newest first; returns (page, next token)."""
        limit = page_size(size)
        position = decode_token(token, "runs")
        after = None if position is None else (position.time("t"), position.text("i"))
        runs = await self._db.read(
            lambda conn: RunQueries.page(
                conn, org_id, agent_id=agent_id, status=status, after=after, limit=limit + 1
            )
        )
        next_token = ""
        if len(runs) > limit:
            runs = runs[:limit]
            next_token = encode_token("runs", t=runs[-1].created_at.isoformat(), i=runs[-1].id)
        return runs, next_token

    async def orphaned_background(self, limit: int = 100) -> builtins.list[Run]:
        """Async-send runs whose replica is gone (replicas sharing a database), to be started again.

        Fails the running ones whose lease ran out (as interrupted), then returns those and the ones
        failed as interrupted earlier, plus runs created a whole lease ago and never started. Batch runs
        stay with their batch (ADR 0404).
        """
        now = self._now()
        lease = timedelta(seconds=self.lease_seconds)

        def tx(conn: Connection) -> builtins.list[Run]:
            RunQueries.fail_interrupted(conn, now, background_lease_before=True)
            return RunQueries.restartable(conn, now, lease, limit)

        return await self._db.write(tx)

    async def interrupted_at_start(self) -> builtins.list[Run]:
        """Releases every run a previous process left running (single-process databases only).

        Returns the background runs (async and batch turns) that should be started again.
        """
        now = self._now()

        def tx(conn: Connection) -> builtins.list[Run]:
            runs = RunQueries.unfinished(conn)
            RunQueries.fail_interrupted(conn, now, background_lease_before=False)
            return runs

        return [run for run in await self._db.write(tx) if run.background and run.request is not None]
