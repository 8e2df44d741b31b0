"""Request ids on every REST response, and an audit event for every REST write.

The event is queued when the response has been sent (mnemo_core.audit.AuditRecorder hands it to the agent
service in batches), so recording adds no hop to the request. A request refused before it had an actor
(no or a wrong API key) names no organization and is not recorded; the failure throttle covers those.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnemo_core.actor import Actor
from mnemo_core.audit import OK, AuditEvent, AuditRecorder, new_request_id
from mnemo_core.wire import utcnow

REQUEST_ID_HEADER = b"x-request-id"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Of an error response, the bytes read to find its reason.
ERROR_SNIFF_BYTES = 4096


def _request_id(scope: Scope) -> str:
    """The caller's X-Request-Id when it is a sane token, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            text: str = value.decode("latin-1")
            if 0 < len(text) <= 128 and text.isprintable() and not any(c.isspace() for c in text):
                return text
    return new_request_id()


def _reason(status: int, body: bytes) -> str:
    if status < 400:
        return OK
    try:
        reason = json.loads(body).get("reason")
    except (ValueError, AttributeError):
        reason = None
    return str(reason)[:128] if reason else f"HTTP_{status}"


class AuditMiddleware:
    """Sets X-Request-Id on responses and records REST writes made by an authenticated actor."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        status = 0
        error_body = b""

        async def tagging_send(message: Message) -> None:
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (REQUEST_ID_HEADER, request_id.encode())],
                }
            elif (
                message["type"] == "http.response.body"
                and status >= 400
                and len(error_body) < ERROR_SNIFF_BYTES
            ):
                error_body += message.get("body", b"")[: ERROR_SNIFF_BYTES - len(error_body)]
            await send(message)

        try:
            await self.app(scope, receive, tagging_send)
        finally:
            if scope["method"] in WRITES:
                self._record(scope, request_id, status or 500, error_body)

    def _record(self, scope: Scope, request_id: str, status: int, error_body: bytes) -> None:
        actor: Actor | None = scope.get("state", {}).get("actor")
        if actor is None:
            return
        route: Any = scope.get("route")
        template = getattr(route, "path", None) or scope["path"]
        recorder: AuditRecorder = scope["app"].state.audit
        recorder.record(
            AuditEvent(
                org_id=actor.org_id,
                user_id=actor.user_id,
                key_id=actor.key_id,
                action=f"{scope['method']} {template}"[:300],
                resource=scope["path"][:1000],
                request_id=request_id,
                outcome=_reason(status, error_body),
                code=status,
                surface="rest",
                time=utcnow(),
            )
        )
