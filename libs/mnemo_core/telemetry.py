"""OpenTelemetry setup: an OTLP/HTTP exporter when OTEL_EXPORTER_OTLP_ENDPOINT is set, else tracing is off.

Off means no instrumentation at all, so an untraced process pays nothing per RPC.
`MNEMO_TRACE_CONSOLE=1` prints spans to stderr instead, for local debugging.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

_enabled = False


def setup_tracing(service_name: str, *, exporter: SpanExporter | None = None) -> bool:
    """Installs the tracer provider and the gRPC/HTTP instrumentation; returns whether tracing is on.

    Call before creating servers or channels: instrumentation patches their constructors.
    """
    global _enabled
    if _enabled:
        return True
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    console = os.environ.get("MNEMO_TRACE_CONSOLE") == "1"
    if exporter is None and not endpoint and not console:
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": f"mnemo-{service_name}"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if console:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)

    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    GrpcAioInstrumentorServer().instrument()  # type: ignore[no-untyped-call]
    GrpcAioInstrumentorClient().instrument()  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().instrument()
    _enabled = True
    return True


def shutdown_tracing() -> None:
    """Flushes pending spans; call once at exit."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    """A tracer for manual spans (a step, a tool run); a no-op one when tracing is off."""
    return trace.get_tracer(name)
