"""/v1/runs and /v1/batches: turns as runs (poll, list, messages, cancel, approve) and batches of turns."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response, status

from mnemo.agent.v1 import batch_pb2, run_pb2
from mnemo.rest.batches import Batch, BatchCreate
from mnemo.rest.messages import Message, SendMessageResponse, StopReason
from mnemo.rest.runs import Approval, Run
from mnemo_gateway import convert
from mnemo_gateway.backends import Backends, acting_actor, backends

router = APIRouter(tags=["runs"], dependencies=[Depends(acting_actor)])
Mesh = Annotated[Backends, Depends(backends)]
RunStatus = Literal["created", "running", "completed", "failed", "cancelled", "awaiting_approval"]


@router.get("/v1/runs", response_model=list[Run])
async def list_runs(
    mesh: Mesh,
    response: Response,
    agent_id: str = "",
    run_status: Annotated[RunStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: str = "",
) -> list[Run]:
    """Lists runs, newest first; the `X-Next-Page-Token` header continues the listing."""
    page = await mesh.runs.ListRuns(
        run_pb2.ListRunsRequest(
            agent_id=agent_id,
            status=convert.RUN_STATUSES.value(run_status or ""),
            page_size=limit,
            page_token=page_token,
        )
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [convert.run_out(run) for run in page.runs]


@router.get("/v1/runs/{run_id}", response_model=Run)
async def get_run(run_id: str, mesh: Mesh) -> Run:
    """Returns one run: its status, stop reason, usage and message ids."""
    response = await mesh.runs.GetRun(run_pb2.GetRunRequest(run_id=run_id))
    return convert.run_out(response.run)


@router.get("/v1/runs/{run_id}/messages", response_model=list[Message])
async def list_run_messages(
    run_id: str,
    mesh: Mesh,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: str = "",
) -> list[Message]:
    """Lists the messages a run stored, oldest first (its input messages included)."""
    page = await mesh.runs.ListRunMessages(
        run_pb2.ListRunMessagesRequest(run_id=run_id, page_size=limit, page_token=page_token)
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return convert.messages_out(list(page.messages))


@router.post("/v1/runs/{run_id}/cancel", response_model=Run)
async def cancel_run(run_id: str, mesh: Mesh) -> Run:
    """Cancels a run that has not finished (stored messages stay); a finished run is returned as is."""
    response = await mesh.runs.CancelRun(run_pb2.CancelRunRequest(run_id=run_id))
    return convert.run_out(response.run)


@router.post("/v1/runs/{run_id}/approval", response_model=SendMessageResponse)
async def approve_run(run_id: str, body: Approval, mesh: Mesh) -> SendMessageResponse:
    """Approves or denies the tool calls a run waits for, resumes the turn and returns what it produced."""
    result = await mesh.runs.ApproveRun(
        run_pb2.ApproveRunRequest(run_id=run_id, approve=body.approve, reason=body.reason)
    )
    return SendMessageResponse(
        messages=convert.messages_out(list(result.messages)),
        stop_reason=StopReason(stop_reason=convert.STOP_REASONS.name(result.stop_reason) or "error"),
        usage=convert.usage_out(result.usage),
        run_id=result.run_id,
    )


@router.post("/v1/batches", status_code=status.HTTP_202_ACCEPTED, response_model=Batch)
async def create_batch(body: BatchCreate, mesh: Mesh) -> Batch:
    """Submits many turns to run in the background (one agent's turns in order); their model calls go
    through the provider's batch API (`mode`: provider, or auto where every model's provider has one) or
    run as ordinary calls a few turns at a time."""
    response = await mesh.batches.CreateBatch(
        batch_pb2.CreateBatchRequest(
            turns=[
                batch_pb2.BatchTurn(
                    agent_id=turn.agent_id,
                    messages=[convert.message_in(m) for m in turn.messages],
                    max_steps=turn.max_steps,
                )
                for turn in body.turns
            ],
            mode=convert.BATCH_MODES.value(body.mode),
        )
    )
    return convert.batch_out(response.batch)


@router.get("/v1/batches/{batch_id}", response_model=Batch)
async def get_batch(batch_id: str, mesh: Mesh) -> Batch:
    """Returns a batch with the current state of its runs."""
    response = await mesh.batches.GetBatch(batch_pb2.GetBatchRequest(batch_id=batch_id))
    return convert.batch_out(response.batch)
