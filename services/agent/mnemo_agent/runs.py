"""Run records: one per turn, unique per (agent, idempotency key)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from mnemo.common.v1 import turn_pb2
from mnemo_agent.models import RunRow
from mnemo_core.db import Database
from mnemo_core.ids import new_id
from mnemo_core.wire import utcnow

RUNNING, COMPLETED, FAILED = "running", "completed", "failed"

STOP_REASON_NAMES = {
    turn_pb2.STOP_REASON_END_TURN: "end_turn",
    turn_pb2.STOP_REASON_MAX_STEPS: "max_steps",
    turn_pb2.STOP_REASON_ERROR: "error",
    turn_pb2.STOP_REASON_CANCELLED: "cancelled",
    turn_pb2.STOP_REASON_REQUIRES_APPROVAL: "requires_approval",
    turn_pb2.STOP_REASON_CONTEXT_OVERFLOW: "context_overflow",
    turn_pb2.STOP_REASON_TOOL_RULE: "tool_rule",
}
STOP_REASONS = {name: value for value, name in STOP_REASON_NAMES.items()}


@dataclass(frozen=True, slots=True)
class RunStart:
    """The run a turn records into; `existing` is set when an idempotency key matched an earlier run."""

    run: RunRow
    existing: bool


class Runs:
    """Creates and finishes run records."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def start(self, org_id: str, agent_id: str, idempotency_key: str) -> RunStart:
        """A new running run, or the earlier run with the same idempotency key."""
        row = RunRow(
            id=new_id("run"),
            org_id=org_id,
            agent_id=agent_id,
            status=RUNNING,
            idempotency_key=idempotency_key or None,
            message_ids=[],
            created_at=utcnow(),
        )
        try:
            async with self._db.write() as session:
                session.add(row)
        except IntegrityError:
            async with self._db.read() as session:
                found = await session.scalar(
                    select(RunRow).where(
                        RunRow.agent_id == agent_id,
                        RunRow.org_id == org_id,
                        RunRow.idempotency_key == idempotency_key,
                    )
                )
            if found is None:
                raise
            return RunStart(found, existing=True)
        return RunStart(row, existing=False)

    async def finish(
        self,
        run_id: str,
        *,
        stop_reason: turn_pb2.StopReason.ValueType,
        usage: turn_pb2.Usage,
        message_ids: list[str],
        error: str = "",
    ) -> None:
        """Records the outcome of a run."""
        async with self._db.write() as session:
            await session.execute(
                update(RunRow)
                .where(RunRow.id == run_id)
                .values(
                    status=FAILED if error else COMPLETED,
                    stop_reason=STOP_REASON_NAMES.get(stop_reason, ""),
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    total_tokens=usage.total_tokens,
                    step_count=usage.step_count,
                    message_ids=message_ids,
                    error=error,
                    completed_at=utcnow(),
                )
            )
