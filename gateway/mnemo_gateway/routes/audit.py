"""/v1/audit-events: the organization's audit log (admin keys; root for any organization)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, cast

from fastapi import APIRouter, Depends, Query, Response

from mnemo.agent.v1 import audit_pb2
from mnemo.rest.audit import AuditEvent
from mnemo.rest.common import ErrorBody
from mnemo_core.wire import field_time, to_timestamp
from mnemo_gateway.backends import Backends, acting_actor, backends

router = APIRouter(
    tags=["audit"],
    dependencies=[Depends(acting_actor)],
    responses={403: {"model": ErrorBody, "description": "Only admin keys read the audit log."}},
)
Mesh = Annotated[Backends, Depends(backends)]
Filter = Annotated[str, Query(max_length=300)]


def _event(event: audit_pb2.AuditEvent) -> AuditEvent:
    return AuditEvent(
        id=event.id,
        org_id=event.org_id,
        user_id=event.user_id,
        key_id=event.key_id,
        action=event.action,
        resource=event.resource,
        request_id=event.request_id,
        outcome=event.outcome,
        code=event.code,
        surface=cast(Literal["rest", "grpc"], event.surface if event.surface == "grpc" else "rest"),
        time=field_time(event, "time"),
    )


@router.get("/v1/audit-events", response_model=list[AuditEvent])
async def list_audit_events(
    mesh: Mesh,
    response: Response,
    org_id: Annotated[
        str, Query(max_length=200, description="Empty: the caller's (another needs root).")
    ] = "",
    user_id: Filter = "",
    key_id: Filter = "",
    action: Filter = "",
    outcome: Filter = "",
    since: Annotated[datetime | None, Query(description="Events at or after this time.")] = None,
    until: Annotated[datetime | None, Query(description="Events before this time.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: str = "",
) -> list[AuditEvent]:
    """Lists the organization's audit events, newest first; X-Next-Page-Token continues."""
    page = await mesh.audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(
            org_id=org_id,
            user_id=user_id,
            key_id=key_id,
            action=action,
            outcome=outcome,
            start_time=to_timestamp(since),
            end_time=to_timestamp(until),
            page_size=limit,
            page_token=page_token,
        )
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [_event(e) for e in page.audit_events]
