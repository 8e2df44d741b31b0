"""OpenTelemetry metrics, read two ways: a Prometheus endpoint per process (a metrics port, or the gateway's
`GET /metrics`) and an OTLP/HTTP export when OTEL_EXPORTER_OTLP_ENDPOINT is set (OTEL_METRICS_EXPORTER=none
turns that off, OTEL_METRIC_EXPORT_INTERVAL paces it). With neither, metrics are off and instruments are
no-ops.

Each module declares its own instruments with `meter(...)` at import; they report once `setup_metrics` has
run (the API's proxy instruments bind to the provider then). Durations are in seconds with the buckets
below, names follow the OpenTelemetry conventions where one exists (`rpc.server.duration`,
`http.server.request.duration`, `db.client.connections.usage`) and `mnemo.*` otherwise.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader

from mnemo_core.telemetry import otlp_endpoint, otlp_protocol_supported, sdk_disabled, service_resource

log = logging.getLogger(__name__)

# From a millisecond (a cached read) to two minutes (a long turn of a slow model).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

_enabled = False


def meter(name: str) -> metrics.Meter:
    """The meter of a module; its instruments are no-ops until `setup_metrics` runs."""
    return metrics.get_meter(name)


def duration_histogram(owner: metrics.Meter, name: str, description: str) -> metrics.Histogram:
    """A histogram of seconds with the mesh's buckets."""
    return owner.create_histogram(
        name, unit="s", description=description, explicit_bucket_boundaries_advisory=DURATION_BUCKETS
    )


def metrics_enabled() -> bool:
    """Whether `setup_metrics` installed a meter provider in this process."""
    return _enabled


def setup_metrics(service_name: str, *, prometheus: bool) -> bool:
    """Installs the meter provider: a Prometheus reader if `prometheus`, an OTLP one if configured.

    Returns whether metrics are on. Idempotent: the first call in a process decides.
    """
    global _enabled
    if _enabled:
        return True
    if sdk_disabled():
        return False
    readers: list[MetricReader] = []
    if prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader(scope_info_enabled=False))
    exporters = {e.strip() for e in (os.environ.get("OTEL_METRICS_EXPORTER") or "otlp").split(",")}
    if "otlp" in exporters and otlp_endpoint("metrics") and otlp_protocol_supported("metrics"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if not readers:
        return False
    metrics.set_meter_provider(MeterProvider(resource=service_resource(service_name), metric_readers=readers))
    meter("mnemo.db").create_observable_gauge(
        "mnemo.db.connections",
        callbacks=[_database_connections],
        unit="{connection}",
        description="A service's database connections: used (a unit of work runs on it) and idle.",
    )
    _enabled = True
    return True


def _database_connections(_options: CallbackOptions) -> Iterable[Observation]:
    from mnemo_core.db import open_databases

    for database in open_databases():
        for state, count in database.connection_usage().items():
            yield Observation(count, {"db.schema": database.schema, "state": state})


def serve_prometheus(host: str, port: int) -> int:
    """Serves `GET /metrics` on host:port (0 picks a free port) in a thread; returns the port."""
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    return int(server.server_port)


def prometheus_text() -> tuple[bytes, str]:
    """This process's metrics in the Prometheus text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def shutdown_metrics() -> None:
    """Exports what the OTLP reader has not sent yet; call once at exit."""
    provider = metrics.get_meter_provider()
    if isinstance(provider, MeterProvider):
        provider.shutdown()
