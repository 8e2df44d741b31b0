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
from typing import cast

from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from mnemo.common.v1 import turn_pb2
from mnemo_agent.models import RunRow
from mnemo_core.db import Database
from mnemo_core.errors import FailedPrecondition, NotFound
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.proto_enums import EnumNames
from mnemo_core.wire import utcnow

CREATED, RUNNING, COMPLETED, FAILED, CANCELLED, AWAITING_APPROVAL = (
    "created",
    "running",
    "completed",
    "failed",
    "cancelled",
    "awaiting_approval",
)
ACTIVE = (RUNNING, AWAITING_APPROVAL)
FINISHED = (COMPLETED, FAILED, CANCELLED)
INTERRUPTED = "interrupted: the agent service stopped during the turn; retry with the same idempotency key"

# Runs store a stop reason by its name in the contract ("end_turn", ...).
STOP_REASONS = EnumNames(turn_pb2.StopReason)


class AgentBusy(Exception):
    """Another replica holds the agent (its run is active and its lease is live)."""


@dataclass(frozen=True, slots=True)
class RunStart:
    """The run a turn records into; `existing` is set when an idempotency key matched an earlier run."""

    run: RunRow
    existing: bool


# Core statements for the two writes of every turn (start, finish), built once: no ORM unit of work
# and no statement construction on the hot path.
_RUNS = cast(Table, RunRow.__table__)
_INSERT = _RUNS.insert()
_FINISHED_FIELDS = (
    "status",
    "stop_reason",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "step_count",
    "message_ids",
    "error",
    "lease_expires_at",
    "pending_approvals",
    "completed_at",
)
_FINISH = (
    _RUNS.update()
    .where(_RUNS.c.id == bindparam("run_id"))
    .values({name: bindparam(name, type_=_RUNS.c[name].type) for name in _FINISHED_FIELDS})
)


def _not_found(run_id: str) -> NotFound:
    return NotFound(f"run {run_id} not found", reason="RUN_NOT_FOUND", metadata={"run_id": run_id})


class Runs:
    """Creates, leases, finishes and lists run records."""

    def __init__(
        self, db: Database, *, lease_seconds: float = 60.0, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._db = db
        self.lease_seconds = lease_seconds
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
    ) -> RunStart:
        """A new run (running, or created for a background turn), or the earlier run with the same key.

        Raises AgentBusy when a new running run cannot hold the agent yet.
        """
        now = self._now()
        values = {
            "id": run_id or new_id("run"),
            "org_id": org_id,
            "agent_id": agent_id,
            "status": status,
            "stop_reason": "",
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
            "step_count": 0,
            "idempotency_key": idempotency_key or None,
            "message_ids": [],
            "error": "",
            "created_at": now,
            "lease_expires_at": self._lease(now) if status == RUNNING else None,
            "cancel_requested": False,
            "max_steps": max_steps,
            "request": request,
            "batch_id": batch_id,
            "pending_approvals": [],
            "background": background,
        }
        for _ in range(3):
            try:
                await self._db.run_write(lambda connection: connection.execute(_INSERT, [values]))
            except IntegrityError:
                if idempotency_key:
                    found = await self._by_key(org_id, agent_id, idempotency_key)
                    if found is not None:
                        return RunStart(found, existing=True)
                await self._release_orphan(agent_id)
                continue
            return RunStart(RunRow(**values), existing=False)
        raise AgentBusy(agent_id)

    async def _by_key(self, org_id: str, agent_id: str, key: str) -> RunRow | None:
        async with self._db.read() as session:
            found: RunRow | None = await session.scalar(
                select(RunRow).where(
                    RunRow.agent_id == agent_id, RunRow.org_id == org_id, RunRow.idempotency_key == key
                )
            )
        return found

    async def active(self, agent_id: str) -> RunRow | None:
        """The run that holds the agent now, if any."""
        async with self._db.read() as session:
            found: RunRow | None = await session.scalar(
                select(RunRow).where(RunRow.agent_id == agent_id, RunRow.status.in_(ACTIVE))
            )
        return found

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
        async with self._db.write() as session:
            await session.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.status == RUNNING)
                .values(status=FAILED, error=INTERRUPTED, lease_expires_at=None, completed_at=self._now())
            )

    async def take(self, run_id: str, agent_id: str, *, from_statuses: Sequence[str]) -> bool:
        """Makes a run running again (resume, approval, background start).

        False if it was in none of `from_statuses`; raises AgentBusy while another run holds the agent.
        """
        for attempt in range(2):
            try:
                async with self._db.write() as session:
                    result = await session.execute(
                        update(RunRow)
                        .where(RunRow.id == run_id, RunRow.status.in_(from_statuses))
                        .values(
                            status=RUNNING,
                            error="",
                            lease_expires_at=self._lease(self._now()),
                            completed_at=None,
                        )
                    )
            except IntegrityError:
                if attempt:
                    raise AgentBusy(agent_id) from None
                await self._release_orphan(agent_id)
                continue
            return bool(result.rowcount)  # type: ignore[attr-defined]
        raise AgentBusy(agent_id)

    async def heartbeat(self, run_id: str) -> None:
        """Extends a running run's lease."""
        async with self._db.write() as session:
            await session.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.status == RUNNING)
                .values(lease_expires_at=self._lease(self._now()))
            )

    async def cancel_requested(self, run_id: str) -> bool:
        """Whether someone asked to cancel the run (a replica other than its holder)."""
        async with self._db.read() as session:
            return bool(await session.scalar(select(RunRow.cancel_requested).where(RunRow.id == run_id)))

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
            "run_id": run_id,
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
        await self._db.run_write(lambda connection: connection.execute(_FINISH, values))

    async def cancel_unstarted(self, run_id: str) -> bool:
        """Cancels a run that was created but has not started; False if it had started."""
        async with self._db.write() as session:
            result = await session.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.status == CREATED)
                .values(
                    status=CANCELLED,
                    stop_reason=STOP_REASONS.name(turn_pb2.STOP_REASON_CANCELLED),
                    completed_at=self._now(),
                )
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def request_cancel(self, run_id: str) -> None:
        """Asks the holder of a running run (maybe another replica) to cancel it."""
        async with self._db.write() as session:
            await session.execute(update(RunRow).where(RunRow.id == run_id).values(cancel_requested=True))

    async def get(self, org_id: str, run_id: str) -> RunRow:
        """One run of the organization."""
        require_id(run_id, "run_id")
        async with self._db.read() as session:
            row: RunRow | None = await session.scalar(
                select(RunRow).where(RunRow.id == run_id, RunRow.org_id == org_id)
            )
        if row is None:
            raise _not_found(run_id)
        return row

    async def completed_count(self, agent_id: str) -> int:
        """How many turns of the agent completed (kept across restarts and shared by replicas)."""
        async with self._db.read() as session:
            count = await session.scalar(
                select(func.count()).where(RunRow.agent_id == agent_id, RunRow.status == COMPLETED)
            )
        return int(count or 0)

    async def many(self, org_id: str, run_ids: Sequence[str]) -> builtins.list[RunRow]:
        """Runs by id, in the given order (unknown ids are skipped)."""
        async with self._db.read() as session:
            rows = {
                row.id: row
                for row in await session.scalars(
                    select(RunRow).where(RunRow.org_id == org_id, RunRow.id.in_(list(run_ids)))
                )
            }
        return [rows[i] for i in run_ids if i in rows]

    async def list(
        self, org_id: str, *, agent_id: str = "", status: str = "", size: int = 0, token: str = ""
    ) -> tuple[list[RunRow], str]:
        """Runs, newest first; returns (page, next token)."""
        limit = page_size(size)
        position = decode_token(token, "runs")
        query = select(RunRow).where(RunRow.org_id == org_id)
        if agent_id:
            query = query.where(RunRow.agent_id == agent_id)
        if status:
            query = query.where(RunRow.status == status)
        if position is not None:
            created, last_id = position.time("t"), position.text("i")
            query = query.where(
                or_(RunRow.created_at < created, and_(RunRow.created_at == created, RunRow.id < last_id))
            )
        async with self._db.read() as session:
            rows = list(
                await session.scalars(
                    query.order_by(RunRow.created_at.desc(), RunRow.id.desc()).limit(limit + 1)
                )
            )
        next_token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            next_token = encode_token("runs", t=rows[-1].created_at.isoformat(), i=rows[-1].id)
        return rows, next_token

    async def orphaned_background(self, limit: int = 100) -> builtins.list[RunRow]:
        """Async-send runs whose replica is gone (replicas sharing a database), to be started again.

        Fails the running ones whose lease ran out (as interrupted), then returns those and the ones
        failed as interrupted earlier, plus runs created a whole lease ago and never started. Batch runs
        stay with their batch (ADR 0404).
        """
        now = self._now()
        async with self._db.write() as session:
            await session.execute(
                update(RunRow)
                .where(RunRow.status == RUNNING, RunRow.background.is_(True), RunRow.lease_expires_at < now)
                .values(status=FAILED, error=INTERRUPTED, lease_expires_at=None, completed_at=now)
            )
            rows = await session.scalars(
                select(RunRow)
                .where(
                    RunRow.background.is_(True),
                    RunRow.batch_id.is_(None),
                    RunRow.request.is_not(None),
                    or_(
                        and_(RunRow.status == FAILED, RunRow.error == INTERRUPTED),
                        and_(
                            RunRow.status == CREATED,
                            RunRow.created_at < now - timedelta(seconds=self.lease_seconds),
                        ),
                    ),
                )
                .order_by(RunRow.created_at)
                .limit(limit)
            )
            return list(rows)

    async def interrupted_at_start(self) -> builtins.list[RunRow]:
        """Releases every run a previous process left running (single-process databases only).

        Returns the background runs (async and batch turns) that should be started again.
        """
        async with self._db.write() as session:
            rows = list(
                await session.scalars(
                    select(RunRow).where(
                        or_(
                            RunRow.status.in_((RUNNING, CREATED)),
                            # Stopped by the last shutdown, or by a crash another turn noticed.
                            and_(RunRow.status == FAILED, RunRow.error == INTERRUPTED),
                        )
                    )
                )
            )
            await session.execute(
                update(RunRow)
                .where(RunRow.status == RUNNING)
                .values(status=FAILED, error=INTERRUPTED, lease_expires_at=None, completed_at=self._now())
            )
        return [row for row in rows if row.background and row.request is not None]
