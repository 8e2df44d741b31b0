"""One gRPC address for clients outside the mesh: a proxy that routes each call by its service's package.

`mnemo.agent.v1.*` goes to the agent service, `mnemo.memory.v1.*` to memory, and so on (`ROUTES`). Calls pass
through undecoded, as bytes, with their metadata (the API key included: each service authenticates its
callers) and their deadline; statuses, error details and trailing metadata come back unchanged, server
streams message by message. Health and reflection are answered here for the whole mesh, so `grpcurl list`
and `grpc.health.v1.Health/Check` work on this one address. See docs/adr/0009-one-grpc-address.md.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mnemo_core.channels import mesh_channel
from mnemo_core.rpc_errors import DETAILS_KEY
from mnemo_core.server import MIN_PING_INTERVAL_MS
from mnemo_core.settings import MnemoSettings, ServiceName

log = logging.getLogger(__name__)

# Which process serves the services of each package of the contract.
ROUTES: Mapping[str, ServiceName] = {
    "mnemo.agent.v1": "agent",
    "mnemo.memory.v1": "memory",
    "mnemo.tools.v1": "tools",
    "mnemo.llm.v1": "llm",
}
# Metadata that belongs to one HTTP/2 hop; the proxy's own call sets it again.
_HOP_KEYS = frozenset({"content-type", "te", "user-agent", "host"})
_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
]

WATCH_INTERVAL = 1.0

Metadata = tuple[tuple[str, str | bytes], ...]


def _service_modules() -> list[str]:
    """The generated message modules of the routed packages (each file's descriptor names its services):
    found, not listed, so that a service added to the contract is routed the day it is generated."""
    names = []
    for package in ROUTES:
        path = importlib.import_module(package).__path__
        names += [
            f"{package}.{info.name}" for info in pkgutil.iter_modules(path) if info.name.endswith("_pb2")
        ]
    return sorted(names)


def routed_services() -> list[str]:
    """Full names of every service the front routes, from the generated modules."""
    names = []
    for module_name in _service_modules():
        module = importlib.import_module(module_name)
        names += [service.full_name for service in module.DESCRIPTOR.services_by_name.values()]
    return sorted(names)


def _forwarded(metadata: Any) -> Metadata:
    return tuple(
        (key, value)
        for key, value in metadata or ()
        if not key.startswith((":", "grpc-")) and key not in _HOP_KEYS
    )


def _trailers(metadata: Any) -> Metadata:
    """Trailing metadata to pass back: the user's entries and the rich status (ErrorInfo, BadRequest)."""
    details = tuple((key, value) for key, value in metadata or () if key == DETAILS_KEY)
    return _forwarded(metadata) + details


def _package_of(service: str) -> str:
    return service.rpartition(".")[0]


async def _unary(
    call_backend: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
    request: bytes,
    context: grpc.aio.ServicerContext[bytes, bytes],
) -> bytes:
    call = call_backend(
        request, metadata=_forwarded(context.invocation_metadata()), timeout=context.time_remaining()
    )
    try:
        initial = _forwarded(await call.initial_metadata())
        if initial:
            await context.send_initial_metadata(initial)
        response = await call
    except grpc.aio.AioRpcError as exc:
        await context.abort(exc.code(), exc.details() or "", _trailers(exc.trailing_metadata()))
    context.set_trailing_metadata(_trailers(await call.trailing_metadata()))
    return response


async def _server_stream(
    call_backend: grpc.aio.UnaryStreamMultiCallable[bytes, bytes],
    request: bytes,
    context: grpc.aio.ServicerContext[bytes, bytes],
) -> AsyncIterator[bytes]:
    call = call_backend(
        request, metadata=_forwarded(context.invocation_metadata()), timeout=context.time_remaining()
    )
    try:
        initial = _forwarded(await call.initial_metadata())
        if initial:
            await context.send_initial_metadata(initial)
        async for response in call:
            yield response
        context.set_trailing_metadata(_trailers(await call.trailing_metadata()))
    except grpc.aio.AioRpcError as exc:
        await context.abort(exc.code(), exc.details() or "", _trailers(exc.trailing_metadata()))
    finally:
        # The client went away (or the call failed): the backend stops its work too.
        call.cancel()


class _Router(grpc.GenericRpcHandler):
    """Hands each call of a routed service to a pass-through handler on the owning process's channel."""

    def __init__(self, channels: Mapping[ServiceName, grpc.aio.Channel]) -> None:
        self._channels = channels
        self._pool = descriptor_pool.Default()

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        path = handler_call_details.method
        service_name, _, method_name = path.lstrip("/").partition("/")
        target = ROUTES.get(_package_of(service_name))
        if target is None:
            return None
        try:
            method = self._pool.FindServiceByName(service_name).methods_by_name[method_name]
        except KeyError:
            return None  # UNIMPLEMENTED, as from the service itself
        channel = self._channels[target]
        if method.client_streaming:
            return None  # the contract has none
        if method.server_streaming:
            stream_backend: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(path)

            async def stream(
                request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
            ) -> AsyncIterator[bytes]:
                async for response in _server_stream(stream_backend, request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(stream)
        unary_backend: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)

        async def unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            return await _unary(unary_backend, request, context)

        return grpc.unary_unary_rpc_method_handler(unary)


class _MeshHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1 for the mesh: the empty name is the front itself, a service name asks its process.

    Watch polls the owning process's Check (every `WATCH_INTERVAL` seconds) and sends each change.
    """

    def __init__(self, channels: Mapping[ServiceName, grpc.aio.Channel]) -> None:
        self._stubs = {name: health_pb2_grpc.HealthStub(channel) for name, channel in channels.items()}

    def _stub(self, service: str) -> health_pb2_grpc.HealthStub | None:
        target = ROUTES.get(_package_of(service))
        return None if target is None else self._stubs[target]

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        if not request.service:
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        stub = self._stub(request.service)
        if stub is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        try:
            response: health_pb2.HealthCheckResponse = await stub.Check(
                request, timeout=context.time_remaining()
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                await context.abort(exc.code(), exc.details() or "")
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        return response

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        stub = self._stub(request.service) if request.service else None
        if stub is None:
            status = (
                health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                if request.service
                else health_pb2.HealthCheckResponse.SERVING
            )
            yield health_pb2.HealthCheckResponse(status=status)
            await asyncio.Event().wait()  # until the client leaves or the front stops
            return
        last = None
        while True:
            try:
                status = (await stub.Check(request, timeout=WATCH_INTERVAL)).status
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    await context.abort(exc.code(), exc.details() or "")
                status = health_pb2.HealthCheckResponse.NOT_SERVING
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(WATCH_INTERVAL)


@dataclass
class GrpcFront:
    """The running front: its server, bound port and the channels to the mesh."""

    server: grpc.aio.Server
    port: int
    channels: dict[ServiceName, grpc.aio.Channel]

    async def stop(self, grace: float = 5.0) -> None:
        """Drains in-flight calls for up to `grace` seconds, then closes the channels."""
        await self.server.stop(grace)
        for channel in self.channels.values():
            await channel.close()


async def start_grpc_front(settings: MnemoSettings, *, host: str, port: int) -> GrpcFront:
    """Starts the front on host:port (0 picks a free port), routing to the addresses in `settings`."""
    names = routed_services()
    channels = {name: mesh_channel(settings.address_of(name)) for name in sorted(set(ROUTES.values()))}
    server = grpc.aio.server(options=_OPTIONS)
    server.add_generic_rpc_handlers([_Router(channels)])
    health_pb2_grpc.add_HealthServicer_to_server(_MeshHealth(channels), server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        for channel in channels.values():
            await channel.close()
        raise OSError(f"cannot listen on {host}:{port} (the gRPC front)")
    await server.start()
    log.info("gRPC front on %s:%d routes %d services", host, bound, len(names))
    return GrpcFront(server=server, port=bound, channels=channels)
