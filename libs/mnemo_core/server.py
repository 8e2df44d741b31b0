"""gRPC server bootstrap: interceptors, health, reflection, graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mnemo.agent.v1 import identity_pb2_grpc
from mnemo_core.api_keys import KeyResolver
from mnemo_core.audit import AuditInterceptor, AuditRecorder, Sink, remote_audit_sink
from mnemo_core.channels import Peers, mesh_channel, mesh_stub
from mnemo_core.heap import tend_heap
from mnemo_core.interceptors import ServerInterceptor
from mnemo_core.lifecycle import follow_parent, freeze_startup_objects
from mnemo_core.logs import configure_logging
from mnemo_core.memory_probe import start_memory_probe
from mnemo_core.metrics import metrics_enabled, serve_prometheus, setup_metrics, shutdown_metrics
from mnemo_core.migrations import SchemaNotMigrated
from mnemo_core.quotas import DEFAULT_MAX_MESSAGE_BYTES, RateLimitInterceptor, RateLimits
from mnemo_core.rpc_metrics import RpcMetricsInterceptor
from mnemo_core.settings import MnemoSettings, ServiceSettings
from mnemo_core.telemetry import setup_tracing, shutdown_tracing

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The shortest interval between a client's pings on a silent call that the server tolerates. gRPC's
# default (5 minutes) counts the mesh's keepalive pings (every 30 s) as abuse and drops the connection
# with "too many pings" about three minutes into a long call, such as a turn of the offline model on a
# busy machine. Below the clients' keepalive, with room for timer jitter.
MIN_PING_INTERVAL_MS = 10_000
# A client connection is asked to go (GOAWAY) after this long, so clients resolve the service's address
# again and spread over replicas started since they connected; calls in flight may finish within the
# grace, which covers the longest turn.
MAX_CONNECTION_AGE_SECONDS = 300.0
MAX_CONNECTION_AGE_GRACE_SECONDS = 1800.0


class GrpcApp(Protocol):
    """A service's servicers and resources, ready to be mounted on a server."""

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        """Adds the servicers to `server`; returns their full service names."""
        ...

    async def aclose(self) -> None:
        """Releases the app's resources (database pools, channels)."""
        ...


@dataclass
class RunningServer:
    """A started gRPC server and its health servicer."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: list[str] = field(default_factory=list)

    async def stop(self, grace: float = 5.0) -> None:
        """Reports NOT_SERVING, then drains in-flight RPCs for up to `grace` seconds."""
        for name in ["", *self.service_names]:
            await self.health.set(name, NOT_SERVING)
        await self.server.stop(grace)


@dataclass(frozen=True)
class ServerTls:
    """A certificate chain and its private key (PEM) to serve TLS with."""

    certificate: bytes
    private_key: bytes

    @classmethod
    def from_settings(cls, settings: MnemoSettings) -> ServerTls | None:
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            return None
        return cls(settings.tls_cert_file.read_bytes(), settings.tls_key_file.read_bytes())


async def start_server(
    app: GrpcApp,
    *,
    host: str,
    port: int,
    credential: str,
    keys: KeyResolver | None = None,
    tls: ServerTls | None = None,
    rate_limits: RateLimits | None = None,
    audit: AuditRecorder | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_connection_age: float = MAX_CONNECTION_AGE_SECONDS,
) -> RunningServer:
    """Starts `app` on host:port (0 picks a free port) with health and reflection, over TLS when given;
    connections are recycled after `max_connection_age` seconds (gRPC adds ±10% jitter).

    Internal hops must sign their actor with `credential`; external callers' API keys go to `keys`.
    """
    interceptors: list[grpc.aio.ServerInterceptor] = [ServerInterceptor(credential, keys)]
    if metrics_enabled():
        interceptors.insert(0, RpcMetricsInterceptor())
    if audit is not None:
        # Before the rate limits, so that a call they refuse is recorded too.
        interceptors.append(AuditInterceptor(audit))
    if rate_limits is not None:
        interceptors.append(RateLimitInterceptor(rate_limits))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
            ("grpc.max_connection_age_ms", int(max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(MAX_CONNECTION_AGE_GRACE_SECONDS * 1000)),
        ],
    )
    names = list(app.register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    if tls is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        credentials = grpc.ssl_server_credentials([(tls.private_key, tls.certificate)])
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, SERVING)
    return RunningServer(server=server, port=bound, health=health_servicer, service_names=names)


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


async def serve(settings: SettingsT, build: Callable[[SettingsT], Awaitable[GrpcApp]]) -> None:
    """Runs one service until SIGTERM/SIGINT, then shuts it down gracefully."""
    setup_tracing(settings.service)
    metrics_port = settings.metrics_port_of(settings.service)
    setup_metrics(settings.service, prometheus=metrics_port != 0)
    app = await build(settings)
    credential = settings.internal_credential()
    identity_channel = mesh_channel(settings.address_of("agent"), settings.tls_trust())
    keys = KeyResolver(
        mesh_stub(identity_pb2_grpc.IdentityServiceStub, identity_channel, credential),
        settings.api_key_cache_seconds,
        settings.root_key(),
        failures=settings.failure_throttle(),
    )
    # The agent service keeps the audit log and records its own events; the others send theirs to it.
    sink: Sink | None = getattr(app, "audit_sink", None)
    peers: Peers | None = None
    if sink is None:
        peers = Peers(settings)
        sink = remote_audit_sink(peers)
    audit = AuditRecorder(sink)
    running = await start_server(
        app,
        host=settings.grpc_host,
        port=settings.port_of(settings.service),
        credential=credential,
        keys=keys,
        tls=ServerTls.from_settings(settings),
        rate_limits=settings.rate_limits(),
        audit=audit,
        max_message_bytes=settings.grpc_max_message_bytes,
    )
    log.info(
        "mnemo-%s serving gRPC%s on %s:%d",
        settings.service,
        " over TLS" if settings.tls else "",
        settings.grpc_host,
        running.port,
    )
    freeze_startup_objects()
    if metrics_port:
        bound = serve_prometheus(settings.grpc_host, metrics_port)
        log.info(
            "mnemo-%s serving metrics on http://%s:%d/metrics", settings.service, settings.grpc_host, bound
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("mnemo-%s shutting down", settings.service)
    await running.stop(settings.shutdown_grace)
    await audit.aclose()
    await identity_channel.close()
    if peers is not None:
        await peers.aclose()
    await app.aclose()
    shutdown_metrics()
    shutdown_tracing()


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the event loop a service runs on; None for asyncio's default."""
    if choice == "uvloop":
        try:
            import uvloop  # optional: comes with uvicorn[standard] where it builds
        except ImportError:
            log.warning("uvloop is not installed; running on the standard asyncio event loop")
            return None
        return uvloop.new_event_loop
    return None


def main(settings_cls: type[SettingsT], build: Callable[[SettingsT], Awaitable[GrpcApp]]) -> None:
    """Entry point of a service process: settings, logging, then `serve`."""
    follow_parent()
    settings = settings_cls()
    configure_logging(settings.service, settings.log_level, settings.log_format)
    start_memory_probe(settings.service)
    tend_heap(arenas=settings.malloc_arenas, trim_every=settings.malloc_trim_seconds)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings.event_loop)) as runner:
            runner.run(serve(settings, build))
    except SchemaNotMigrated as exc:
        failure = str(exc)
    else:
        return
    # The migration job has not run: a plain message and a failing exit (the pod restarts), no traceback.
    log.error("%s", failure)
    raise SystemExit(1)
