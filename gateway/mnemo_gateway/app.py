"""The FastAPI application: routes, error mapping, API key, mesh clients."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from mnemo.rest.common import ErrorBody
from mnemo_core.audit import AuditRecorder, remote_audit_sink
from mnemo_core.metrics import setup_metrics
from mnemo_core.telemetry import setup_tracing
from mnemo_gateway import errors, openapi
from mnemo_gateway.audit import AuditMiddleware
from mnemo_gateway.auth import ensure_api_key
from mnemo_gateway.backends import Backends
from mnemo_gateway.console import mount_console
from mnemo_gateway.grpc_front import start_grpc_front
from mnemo_gateway.http_metrics import HttpMetrics
from mnemo_gateway.http_metrics import router as metrics_router
from mnemo_gateway.limits import BodyLimitMiddleware, EdgeLimits
from mnemo_gateway.routes import (
    agents,
    archival,
    audit,
    blocks,
    core_memory,
    groups,
    health,
    identities,
    identity,
    mcp,
    models,
    runs,
    sources,
    tools,
)
from mnemo_gateway.settings import GatewaySettings


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """A gateway app for `settings` (read from env and config when not given)."""
    settings = settings or GatewaySettings()
    traced = setup_tracing("gateway")
    setup_metrics("gateway", prometheus=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.backends = Backends(settings)
        app.state.audit = AuditRecorder(remote_audit_sink(app.state.backends.peers))
        front = None
        if settings.grpc_port:
            front = await start_grpc_front(settings, host=settings.http_host, port=settings.grpc_port)
        try:
            yield
        finally:
            if front is not None:
                await front.stop()
            await app.state.audit.aclose()
            await app.state.backends.aclose()

    app = FastAPI(
        title="mnemo",
        summary="Stateful LLM agents with long-term memory.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=openapi.operation_id,
        # FastAPI's own telemetry would time every request again (HttpMetrics does) and look up the global
        # providers on each; traces come from the OpenTelemetry instrumentation below when configured.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        responses={
            401: {"model": ErrorBody, "description": "Missing or invalid API key."},
            404: {"model": ErrorBody, "description": "No such resource."},
        },
    )
    app.state.api_key = ensure_api_key(settings)
    app.state.limits = EdgeLimits(settings.rate_limits())
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_body_bytes)
    # Added last, so outermost: a body refused by the cap still gets its request id.
    app.add_middleware(AuditMiddleware)
    errors.install(app)
    openapi.install(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=[openapi.NEXT_PAGE_HEADER, "Retry-After"],
            max_age=600,
        )
    app.include_router(health.router)
    app.include_router(metrics_router)
    app.include_router(agents.router)
    app.include_router(groups.router)
    app.include_router(tools.router)
    app.include_router(tools.agent_tools_router)
    app.include_router(mcp.router)
    app.include_router(runs.router)
    app.include_router(core_memory.router)
    app.include_router(archival.router)
    app.include_router(blocks.router)
    app.include_router(sources.router)
    app.include_router(models.router)
    app.include_router(identity.router)
    app.include_router(identities.router)
    mount_console(app)
    app.add_middleware(HttpMetrics)
    app.include_router(audit.router)
    if traced:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app)
    return app
