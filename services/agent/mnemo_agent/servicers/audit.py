"""AuditService: proto <-> the audit log."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from mnemo.agent.v1 import audit_pb2, audit_pb2_grpc
from mnemo_agent.audit_log import AuditLog
from mnemo_agent.audit_store import AuditFilter
from mnemo_core.actor import current_actor
from mnemo_core.audit import AuditEvent
from mnemo_core.wire import field_time, utcnow

Context = Any


def event_from_proto(event: audit_pb2.AuditEvent) -> AuditEvent:
    """The domain form of a recorded event (a missing time is now)."""
    return AuditEvent(
        id=event.id[:64],
        org_id=event.org_id[:128],
        user_id=event.user_id[:128],
        key_id=event.key_id[:64],
        action=event.action[:300],
        resource=event.resource[:1000],
        request_id=event.request_id[:128],
        outcome=event.outcome[:128],
        code=event.code,
        surface=event.surface[:8],
        time=event.time.ToDatetime(tzinfo=UTC) if event.HasField("time") else utcnow(),
    )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """AuditService over AuditLog."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: Context
    ) -> audit_pb2.ListAuditEventsResponse:
        keep = AuditFilter(
            org_id=request.org_id,
            user_id=request.user_id,
            key_id=request.key_id,
            action=request.action,
            outcome=request.outcome,
            start_time=field_time(request, "start_time"),
            end_time=field_time(request, "end_time"),
        )
        rows, token = await self._audit.list_page(
            current_actor(), keep, size=request.page_size, token=request.page_token
        )
        return audit_pb2.ListAuditEventsResponse(
            audit_events=[row.to_proto() for row in rows], next_page_token=token
        )

    async def RecordAuditEvents(
        self, request: audit_pb2.RecordAuditEventsRequest, context: Context
    ) -> audit_pb2.RecordAuditEventsResponse:
        await self._audit.record_as(current_actor(), [event_from_proto(e) for e in request.audit_events])
        return audit_pb2.RecordAuditEventsResponse()
