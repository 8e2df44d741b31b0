"""The REST gateway's limits: the request body cap, enforced while the body arrives, and the per-key and
per-organization rate limits of authenticated calls (the buckets are mnemo_core.quotas')."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnemo_core.actor import Actor
from mnemo_core.quotas import RateLimits

BODY_TOO_LARGE = "REQUEST_BODY_TOO_LARGE"


class _BodyTooLarge(HTTPException):
    """Raised from `receive` when the body passes the cap. An HTTPException so that FastAPI's body parsing
    lets it through instead of calling it a malformed body; the middleware answers 413 whatever the app
    makes of it."""

    def __init__(self) -> None:
        super().__init__(status_code=413)


def _too_large_response(limit: int) -> tuple[Message, Message]:
    body = json.dumps(
        {
            "detail": f"the request body is larger than {limit} bytes",
            "reason": BODY_TOO_LARGE,
            "metadata": {"max_bytes": str(limit)},
        }
    ).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class BodyLimitMiddleware:
    """Refuses a request body over `limit` bytes with 413 as soon as that is known.

    A declared Content-Length over the cap is refused before a byte of the body is read; a chunked (or
    understated) body is counted as it arrives, and the request is refused when the count passes the cap,
    so no route ever holds more than `limit` bytes of one request (uploads included).
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send)
                return
        received = 0
        over = started = refused = False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    over = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, refused
            if refused:
                return
            if over and not started:
                # Whatever response the app made of the cut-off body, the caller learns the real reason.
                refused = True
                await self._refuse(send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            if started or refused:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        start, body = _too_large_response(self.limit)
        await send(start)
        await send(body)


class EdgeLimits:
    """What the gateway checks per authenticated request: the rate limits (the failure throttle is the key
    resolver's, mnemo_core.api_keys)."""

    def __init__(self, rates: RateLimits) -> None:
        self.rates = rates

    def admit(self, actor: Actor) -> None:
        """RATE_LIMITED (429 with Retry-After) when the actor's key or organization is over its rate."""
        self.rates.admit(actor)
