"""RunService: proto <-> run records, their messages, cancel and approval."""

from __future__ import annotations

from typing import Any

from mnemo.agent.v1 import run_pb2, run_pb2_grpc
from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo_agent.runs import STOP_REASONS, Runs
from mnemo_agent.store import Run
from mnemo_agent.turn import Decision, Turns
from mnemo_core.actor import current_actor
from mnemo_core.proto_enums import EnumNames
from mnemo_core.wire import to_timestamp

Context = Any

_RUN_STATUSES = EnumNames(run_pb2.RunStatus)


def run_to_proto(row: Run) -> run_pb2.Run:
    """The wire form of a run."""
    return run_pb2.Run(
        id=row.id,
        agent_id=row.agent_id,
        status=_RUN_STATUSES.value(row.status),
        stop_reason=STOP_REASONS.value(row.stop_reason),
        usage=turn_pb2.Usage(
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            total_tokens=row.total_tokens,
            step_count=row.step_count,
        ),
        idempotency_key=row.idempotency_key or "",
        message_ids=list(row.message_ids or []),
        error=row.error or "",
        create_time=to_timestamp(row.created_at),
        complete_time=to_timestamp(row.completed_at),
        pending_approvals=[message_pb2.ToolCall(**call) for call in row.pending_approvals or []],
        batch_id=row.batch_id or "",
        parent_run_id=row.parent_run_id or "",
        group_run_id=row.group_run_id or "",
    )


class RunServicer(run_pb2_grpc.RunServiceServicer):
    """RunService over Runs and Turns."""

    def __init__(self, runs: Runs, turns: Turns) -> None:
        self._runs = runs
        self._turns = turns

    async def GetRun(self, request: run_pb2.GetRunRequest, context: Context) -> run_pb2.GetRunResponse:
        return run_pb2.GetRunResponse(
            run=run_to_proto(await self._runs.get(current_actor().org_id, request.run_id))
        )

    async def ListRuns(self, request: run_pb2.ListRunsRequest, context: Context) -> run_pb2.ListRunsResponse:
        rows, token = await self._runs.list(
            current_actor().org_id,
            agent_id=request.agent_id,
            status=_RUN_STATUSES.name(request.status),
            size=request.page_size,
            token=request.page_token,
        )
        return run_pb2.ListRunsResponse(runs=[run_to_proto(row) for row in rows], next_page_token=token)

    async def ListRunMessages(
        self, request: run_pb2.ListRunMessagesRequest, context: Context
    ) -> run_pb2.ListRunMessagesResponse:
        messages, token = await self._turns.run_messages(
            current_actor(), request.run_id, size=request.page_size, token=request.page_token
        )
        return run_pb2.ListRunMessagesResponse(messages=messages, next_page_token=token)

    async def CancelRun(
        self, request: run_pb2.CancelRunRequest, context: Context
    ) -> run_pb2.CancelRunResponse:
        return run_pb2.CancelRunResponse(
            run=run_to_proto(await self._turns.cancel(current_actor(), request.run_id))
        )

    async def ApproveRun(
        self, request: run_pb2.ApproveRunRequest, context: Context
    ) -> run_pb2.ApproveRunResponse:
        result = await self._turns.approve(
            current_actor(), request.run_id, Decision(approve=request.approve, reason=request.reason)
        )
        return run_pb2.ApproveRunResponse(
            messages=result.messages, usage=result.usage, stop_reason=result.stop_reason, run_id=result.run_id
        )
