"""Audit events of writes, and how they reach the agent service's log without slowing the call down.

A served write is put on an in-memory queue (no I/O on the call's path); a background task sends the
queue in batches to a sink (the agent service's AuditService, or its own log in the agent service).
Closing the recorder sends what is queued, so a clean shutdown loses nothing; a crash loses at most
the last `flush_seconds` of events, and a sink that stays down for longer than the queue holds drops the
oldest events with a warning (docs/adr/0412-limits-quotas-audit-and-secrets-at-rest.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc

from mnemo.agent.v1 import audit_pb2, audit_pb2_grpc
from mnemo_core import errors
from mnemo_core.actor import Actor, acting_as, current_actor_or_none
from mnemo_core.call_hooks import Finish, around_each_call
from mnemo_core.channels import Peers
from mnemo_core.quotas import AUTHORIZATION_KEY
from mnemo_core.rpc_errors import status_code_of
from mnemo_core.wire import to_timestamp, utcnow

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"
OK = "OK"
# gRPC methods whose name starts with one of these read (or compute) without changing anything.
READ_PREFIXES = (
    "Get",
    "List",
    "Search",
    "Count",
    "Check",
    "Authenticate",
    "Export",
    "Embed",
    "Chat",
    "StreamChat",
    "Preview",
    "Compile",
)
MAX_QUEUED = 100_000
# Who the recorder acts as when it hands events to the agent service (inside the mesh).
RECORDER = Actor(org_id="org-default", user_id="audit-recorder", role="root")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One write: who (org, user, key), what (action on resource), which request, how it ended, when."""

    org_id: str
    user_id: str
    key_id: str
    action: str
    resource: str
    request_id: str
    outcome: str
    code: int
    surface: str
    time: datetime
    id: str = ""

    def to_proto(self) -> audit_pb2.AuditEvent:
        return audit_pb2.AuditEvent(
            id=self.id,
            org_id=self.org_id,
            user_id=self.user_id,
            key_id=self.key_id,
            action=self.action,
            resource=self.resource,
            request_id=self.request_id,
            outcome=self.outcome,
            code=self.code,
            surface=self.surface,
            time=to_timestamp(self.time),
        )


def is_write(method: str) -> bool:
    """Whether a gRPC full method name ("/pkg.Service/Method") names a write."""
    name = method.rsplit("/", 1)[-1]
    return not name.startswith(READ_PREFIXES)


def new_request_id() -> str:
    return uuid.uuid4().hex


Sink = Callable[[Sequence[AuditEvent]], Awaitable[None]]


class AuditRecorder:
    """Queues events and sends them to `sink` in batches, from one background task."""

    def __init__(self, sink: Sink, *, flush_seconds: float = 1.0, batch_size: int = 500) -> None:
        self._sink = sink
        self._flush_seconds = flush_seconds
        self._batch_size = batch_size
        self._queue: deque[AuditEvent] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def record(self, event: AuditEvent) -> None:
        """Queues an event (never blocks, never raises)."""
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            log.warning("audit queue full: the oldest event was dropped (is the agent service reachable?)")
        self._queue.append(event)
        if self._task is None and not self._closing:
            self._task = asyncio.get_running_loop().create_task(self._run())
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_seconds)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Sends everything queued now; on failure the events stay queued for the next try."""
        while self._queue:
            batch = [self._queue[i] for i in range(min(self._batch_size, len(self._queue)))]
            try:
                await self._sink(batch)
            except Exception:
                log.warning("sending %d audit events failed; will retry", len(batch), exc_info=True)
                return
            for _ in batch:
                self._queue.popleft()

    async def aclose(self) -> None:
        """Stops the background task and sends what is still queued."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        if self._queue:
            log.error("%d audit events could not be recorded at shutdown", len(self._queue))


def _resource(request: Any) -> str:
    """The ids a request names ("agent_id=agent-1 block_id=block-2"): never other fields' values."""
    parts = []
    try:
        fields = request.ListFields()
    except AttributeError:
        return ""
    for field, value in fields:
        if (field.name == "id" or field.name.endswith("_id")) and isinstance(value, str):
            parts.append(f"{field.name}={value[:200]}")
    return " ".join(parts)[:1000]


class AuditInterceptor(grpc.aio.ServerInterceptor):
    """Records the writes of gRPC clients that authenticated with an API key (`authorization` metadata).

    Placed after the actor interceptor (the actor is in context; its error mapping sees what this
    re-raises). Mesh hops carry no `authorization`, so a REST write (recorded by the gateway) and the
    internal calls it causes are not recorded again.
    """

    def __init__(self, recorder: AuditRecorder) -> None:
        self._recorder = recorder

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not is_write(method):
            return handler
        metadata = {k: v for k, v in handler_call_details.invocation_metadata or ()}
        if AUTHORIZATION_KEY not in metadata:
            return handler
        request_id = str(metadata.get(REQUEST_ID_KEY) or new_request_id())[:128]
        return _recording(handler, self._recorder, method, request_id)


def _event(method: str, request: Any, request_id: str, error: BaseException | None) -> AuditEvent | None:
    actor = current_actor_or_none()
    if actor is None:
        return None
    if error is None:
        outcome, code = OK, grpc.StatusCode.OK.value[0]
    elif isinstance(error, errors.MnemoError):
        outcome, code = error.reason, status_code_of(error).value[0]
    else:
        outcome, code = "CANCELLED", grpc.StatusCode.CANCELLED.value[0]
    return AuditEvent(
        org_id=actor.org_id,
        user_id=actor.user_id,
        key_id=actor.key_id,
        action=method,
        resource=_resource(request),
        request_id=request_id,
        outcome=outcome,
        code=code,
        surface="grpc",
        time=utcnow(),
    )


def _recording(
    handler: grpc.RpcMethodHandler[Any, Any], recorder: AuditRecorder, method: str, request_id: str
) -> grpc.RpcMethodHandler[Any, Any]:
    def start(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Finish:
        def finish(error: BaseException | None) -> None:
            event = _event(method, request, request_id, error)
            if event is not None:
                recorder.record(event)

        return finish

    return around_each_call(handler, start)


def remote_audit_sink(peers: Peers) -> Sink:
    """A sink that hands batches to the agent service's AuditService."""
    stub = peers.stub("agent", audit_pb2_grpc.AuditServiceStub)

    async def send(events: Sequence[AuditEvent]) -> None:
        with acting_as(RECORDER):
            await stub.RecordAuditEvents(
                audit_pb2.RecordAuditEventsRequest(audit_events=[e.to_proto() for e in events]), timeout=10.0
            )

    return send
