"""/v1/groups: groups of agents, messages to them (plain and streamed), their runs, their agent files."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from mnemo.agent.v1 import agent_pb2, group_pb2
from mnemo.rest.common import ErrorBody
from mnemo.rest.groups import (
    Group,
    GroupCreate,
    GroupMessageRequest,
    GroupMessageResponse,
    GroupRun,
    GroupStopReason,
    MemberTurn,
)
from mnemo.rest.messages import ContentDelta, ReasoningDelta, StopReason
from mnemo_core.actor import Actor
from mnemo_gateway import convert
from mnemo_gateway.backends import Backends, acting_actor, backends
from mnemo_gateway.routes.agent_files import AGENT_FILE_BODY, AGENT_FILE_RESPONSE, agent_file_of
from mnemo_gateway.sse import event_stream, sse

router = APIRouter(prefix="/v1/groups", tags=["groups"], dependencies=[Depends(acting_actor)])
Mesh = Annotated[Backends, Depends(backends)]
IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", max_length=256)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Group)
async def create_group(body: GroupCreate, mesh: Mesh) -> Group:
    """Creates a group of agents of the caller's organization, with the blocks they share."""
    response = await mesh.groups.CreateGroup(convert.group_in(body))
    return convert.group_out(response.group)


@router.get("", response_model=list[Group])
async def list_groups(
    mesh: Mesh, response: Response, limit: Annotated[int, Query(ge=1, le=1000)] = 50, page_token: str = ""
) -> list[Group]:
    """Lists groups, newest first; the `X-Next-Page-Token` header continues the listing."""
    page = await mesh.groups.ListGroups(group_pb2.ListGroupsRequest(page_size=limit, page_token=page_token))
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [convert.group_out(group) for group in page.groups]


@router.post(
    "/import",
    status_code=status.HTTP_201_CREATED,
    response_model=Group,
    openapi_extra={"requestBody": AGENT_FILE_BODY},
)
async def import_group(request: Request, mesh: Mesh) -> Group:
    """Imports the group of an agent file (JSON body, or a multipart `file`): its agents are created anew,
    then the group."""
    response = await mesh.groups.ImportGroup(
        group_pb2.ImportGroupRequest(agent_file=await agent_file_of(request))
    )
    return convert.group_out(response.group)


@router.get("/{group_id}", response_model=Group)
async def get_group(group_id: str, mesh: Mesh) -> Group:
    """Returns one group."""
    response = await mesh.groups.GetGroup(group_pb2.GetGroupRequest(group_id=group_id))
    return convert.group_out(response.group)


@router.delete("/{group_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_group(group_id: str, mesh: Mesh) -> Response:
    """Deletes a group; its agents stay (the blocks created for it go)."""
    await mesh.groups.DeleteGroup(group_pb2.DeleteGroupRequest(group_id=group_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{group_id}/messages", response_model=GroupMessageResponse)
async def send_group_message(
    group_id: str, body: GroupMessageRequest, mesh: Mesh, idempotency_key: IdempotencyKey = ""
) -> Response:
    """Sends messages to the group: its members take their turns as its manager policy says. Returns every
    member's new messages in order (each with its `agent_id`). An `Idempotency-Key` makes retries safe."""
    result = await mesh.groups.SendGroupMessage(
        group_pb2.SendGroupMessageRequest(
            group_id=group_id,
            messages=[convert.message_in(m) for m in body.messages],
            max_turns=body.max_turns,
            idempotency_key=idempotency_key,
        )
    )
    out = GroupMessageResponse(
        messages=convert.messages_out(list(result.messages)),
        stop_reason=StopReason(stop_reason=convert.STOP_REASONS.name(result.stop_reason) or "error"),
        usage=convert.usage_out(result.usage),
        group_run_id=result.group_run_id,
        run_ids=list(result.run_ids),
    )
    return Response(out.model_dump_json(), media_type="application/json")


def _event_json(event: group_pb2.StreamGroupMessageResponse) -> list[str]:
    kind = event.WhichOneof("event")
    if kind == "group_run_id":
        return []  # the stop_reason event names the group run
    if kind == "member_turn":
        turn = event.member_turn
        return [sse(MemberTurn(agent_id=turn.agent_id, run_id=turn.run_id, turn=turn.turn))]
    if kind == "message":
        out = convert.message_out(event.message)
        return [] if out is None else [sse(out)]
    if kind == "delta":
        delta = event.delta
        if delta.kind == agent_pb2.DELTA_KIND_REASONING:
            return [sse(ReasoningDelta(run_id=delta.run_id, step=delta.step, reasoning=delta.text))]
        return [sse(ContentDelta(run_id=delta.run_id, step=delta.step, content=delta.text))]
    outcome = event.outcome
    stop = GroupStopReason(
        stop_reason=convert.STOP_REASONS.name(outcome.stop_reason) or "error",
        run_id=outcome.group_run_id,
        group_run_id=outcome.group_run_id,
        run_ids=list(outcome.run_ids),
    )
    return [sse(stop), sse(convert.usage_out(outcome.usage))]


@router.post(
    "/{group_id}/messages/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."}},
)
async def stream_group_message(
    group_id: str,
    body: GroupMessageRequest,
    mesh: Mesh,
    actor: Annotated[Actor, Depends(acting_actor)],
    idempotency_key: IdempotencyKey = "",
) -> StreamingResponse:
    """Sends messages to the group and streams the members' turns as Server-Sent Events: `member_turn` when
    a member begins, its messages as each step is stored (with `agent_id`), token deltas with
    `"stream_tokens": true`, then `stop_reason` (with `group_run_id`) and `usage_statistics`, then
    `data: [DONE]`. A client that disconnects cancels the group run."""
    call = mesh.groups.StreamGroupMessage(
        group_pb2.StreamGroupMessageRequest(
            group_id=group_id,
            messages=[convert.message_in(m) for m in body.messages],
            max_turns=body.max_turns,
            idempotency_key=idempotency_key,
            stream_tokens=body.stream_tokens,
        )
    )
    return await event_stream(call, actor, mesh, _event_json)


@router.get("/{group_id}/runs", response_model=list[GroupRun])
async def list_group_runs(
    group_id: str,
    mesh: Mesh,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: str = "",
) -> list[GroupRun]:
    """Lists the group's runs, newest first."""
    page = await mesh.groups.ListGroupRuns(
        group_pb2.ListGroupRunsRequest(group_id=group_id, page_size=limit, page_token=page_token)
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [convert.group_run_out(run) for run in page.runs]


@router.get("/{group_id}/runs/{run_id}", response_model=GroupRun)
async def get_group_run(group_id: str, run_id: str, mesh: Mesh) -> GroupRun:
    """Returns one run of the group: status, stop reason, usage and its member runs."""
    run = (
        await mesh.groups.GetGroupRun(group_pb2.GetGroupRunRequest(group_run_id=run_id, group_id=group_id))
    ).run
    return convert.group_run_out(run)


@router.post("/{group_id}/runs/{run_id}/cancel", response_model=GroupRun)
async def cancel_group_run(group_id: str, run_id: str, mesh: Mesh) -> GroupRun:
    """Cancels a group run that has not finished: the member turn in progress stops, no other member speaks."""
    response = await mesh.groups.CancelGroupRun(
        group_pb2.CancelGroupRunRequest(group_run_id=run_id, group_id=group_id)
    )
    return convert.group_run_out(response.run)


@router.get(
    "/{group_id}/export",
    response_class=Response,
    responses={200: AGENT_FILE_RESPONSE, 404: {"model": ErrorBody}},
)
async def export_group(group_id: str, mesh: Mesh, include_passages: bool = False) -> Response:
    """The group with its agents as one agent file (docs/schemas/agent-file.v1.json)."""
    response = await mesh.groups.ExportGroup(
        group_pb2.ExportGroupRequest(group_id=group_id, include_passages=include_passages)
    )
    return Response(response.agent_file, media_type="application/json")
