"""The REST gateway's own metrics: `http.server.request.duration` by route template, method and status code,
and `GET /metrics` (Prometheus text, no API key: scrapers carry none; it holds no tenant data beyond the
organization ids that label token counts)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnemo_core.metrics import duration_histogram, meter, prometheus_text

router = APIRouter(tags=["health"])

_duration = duration_histogram(
    meter("mnemo.gateway"), "http.server.request.duration", "Duration of REST requests, by route and status."
)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """This gateway's metrics in the Prometheus text format."""
    body, content_type = prometheus_text()
    return Response(body, media_type=content_type)


class HttpMetrics:
    """ASGI middleware timing each request until its response is sent (a stream: until it ends)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route: Any = scope.get("route")
            _duration.record(
                time.perf_counter() - started,
                {
                    "http.request.method": scope["method"],
                    "http.route": getattr(route, "path", "") or "unmatched",
                    "http.response.status_code": status[0],
                },
            )
