"""OpenTelemetry tracing: an OTLP/HTTP exporter when OTEL_EXPORTER_OTLP_ENDPOINT is set, else tracing is off.

Off means no instrumentation at all, so an untraced process pays nothing per RPC. On, every hop is a span:
gRPC servers and clients, the REST gateway, provider HTTP calls (the openai and anthropic SDKs speak
`httpx2`, other clients `httpx`), SQL statements, and the manual spans of steps, tool runs and LLM calls.
The standard variables apply: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES over the default
`mnemo-<service>` name, OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER (`otlp`, `console`, `none`), OTEL_BSP_*
and the OTLP exporter's own (headers, timeout, per-signal endpoint). Only the http/protobuf protocol is
installed. `MNEMO_TRACE_CONSOLE=1` also prints spans to stderr, for local debugging.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

log = logging.getLogger(__name__)

_enabled = False
_sql_tracer: Any = None


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def otlp_endpoint(signal: str) -> str:
    """The OTLP endpoint of a signal (`traces`, `metrics`), or "" when that signal is not exported."""
    return _env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_ENDPOINT")


def otlp_protocol_supported(signal: str) -> bool:
    """Whether the configured OTLP protocol of a signal is the one installed (http/protobuf)."""
    protocol = (
        _env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL")
    ) or "http/protobuf"
    if protocol == "http/protobuf":
        return True
    log.error(
        "OTLP %s are not exported: protocol %r is not installed, only http/protobuf "
        "(set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and use the collector's HTTP port, usually 4318)",
        signal,
        protocol,
    )
    return False


def sdk_disabled() -> bool:
    """OTEL_SDK_DISABLED=true turns every signal off."""
    return _env("OTEL_SDK_DISABLED").lower() == "true"


def service_resource(service_name: str) -> Resource:
    """`mnemo-<service>`, unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name the service."""
    defaults = Resource.create({"service.name": f"mnemo-{service_name}", "service.namespace": "mnemo"})
    return defaults.merge(OTELResourceDetector().detect())


def setup_tracing(service_name: str, *, exporter: SpanExporter | None = None) -> bool:
    """Installs the tracer provider and the instrumentation; returns whether tracing is on.

    Call before creating servers, channels, HTTP clients or databases: instrumentation patches their
    constructors.
    """
    global _enabled
    if _enabled:
        return True
    if sdk_disabled() and exporter is None:
        return False
    exporters = {e.strip() for e in (_env("OTEL_TRACES_EXPORTER") or "otlp").split(",")}
    endpoint = otlp_endpoint("traces") if "otlp" in exporters else ""
    if endpoint and not otlp_protocol_supported("traces"):
        endpoint = ""
    console = os.environ.get("MNEMO_TRACE_CONSOLE") == "1" or "console" in exporters
    if exporter is None and not endpoint and not console:
        return False
    provider = TracerProvider(resource=service_resource(service_name))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if console:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)

    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
    from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor, HTTPXClientInstrumentor

    GrpcAioInstrumentorServer().instrument()  # type: ignore[no-untyped-call]
    GrpcAioInstrumentorClient().instrument()  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().instrument()
    HTTPX2ClientInstrumentor().instrument()
    _enabled = True
    return True


def trace_engines(engines: Iterable[Any]) -> None:
    """Traces every statement of these (sync) SQLAlchemy engines; nothing when tracing is off.

    Engines are passed one by one, not patched at creation: the services import `create_engine` before
    tracing is set up (the supervisor preloads them), so a patched constructor would never be called.
    """
    global _sql_tracer
    if not _enabled:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    if _sql_tracer is None:
        from opentelemetry.metrics import get_meter

        usage = get_meter("mnemo.db").create_up_down_counter(
            "db.client.connections.usage", unit="{connection}", description="Connections by state."
        )
        _sql_tracer = (trace.get_tracer("opentelemetry.instrumentation.sqlalchemy"), usage)
    tracer_, usage = _sql_tracer
    for engine in engines:
        EngineTracer(tracer_, engine, usage)  # type: ignore[no-untyped-call]


def shutdown_tracing() -> None:
    """Flushes pending spans; call once at exit."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    """A tracer for manual spans (a step, a tool run); a no-op one when tracing is off."""
    return trace.get_tracer(name)
