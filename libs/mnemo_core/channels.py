"""Calls to other services of the mesh: the one way every caller makes them.

`Peers.stub` (or `mesh_stub` on a `mesh_channel`, where there is no `Peers`) wraps each method of a generated
stub so that it forwards the current actor signed with the mesh's credential, the deadline, and raises
domain errors.
The wrapping is done inline rather than with grpc.aio client interceptors, which would add a task to every
call on the hot path of a turn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import grpc

from mnemo_core.actor import call_timeout
from mnemo_core.interceptors import outgoing_metadata
from mnemo_core.quotas import DEFAULT_MAX_MESSAGE_BYTES
from mnemo_core.retries import RETRY_SERVICE_CONFIG
from mnemo_core.rpc_errors import from_rpc_error
from mnemo_core.settings import MnemoSettings, ServiceName

StubT = TypeVar("StubT")

# A call that stays silent this long (a slow model step) is pinged, so that a dead peer is noticed.
KEEPALIVE_MS = 30_000
# A ping unanswered this long closes the connection: calls go to the peer's other replicas meanwhile.
KEEPALIVE_TIMEOUT_MS = 10_000
_OPTIONS = [
    ("grpc.keepalive_time_ms", KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", RETRY_SERVICE_CONFIG),
    # Calls rotate over every address the target resolves to (a DNS name with several records, or a
    # list). Set as the channel's policy name, not in a service config, so that a service config with
    # method settings (retries, deadlines) leaves it alone as long as it names no loadBalancingConfig.
    ("grpc.lb_policy_name", "round_robin"),
]
# The deadline of a call that has none (background work: async runs, batches): long enough for a slow
# model step, short enough that no call waits for ever on a peer that will not answer.
DEFAULT_DEADLINE = 600.0


def channel_target(address: str) -> str:
    """The gRPC target of a peer address: `host:port`, `dns:///name:port`, or `ip:port,ip:port,...`.

    A comma-separated list names the replicas of one service (IP literals or `localhost`; use a DNS name
    with several records for host names, e.g. a Kubernetes headless Service).
    """
    if "," not in address:
        return address
    replicas = [part.strip() for part in address.split(",") if part.strip()]
    hosts = [replica.rsplit(":", 1)[0].replace("localhost", "127.0.0.1") for replica in replicas]
    ports = [replica.rsplit(":", 1)[1] for replica in replicas]
    scheme = "ipv6" if all(host.startswith("[") for host in hosts) else "ipv4"
    return f"{scheme}:" + ",".join(f"{host}:{port}" for host, port in zip(hosts, ports, strict=True))


def mesh_channel(
    address: str, trust: bytes | None = None, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> grpc.aio.Channel:
    """A channel to a service of the mesh at `address` (see `channel_target`), spreading calls over its
    replicas: TLS trusting the PEM `trust` when given, else plaintext. Make calls on it through
    `mesh_stub`."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *_OPTIONS,
    ]
    target = channel_target(address)
    if trust is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(
        target, grpc.ssl_channel_credentials(root_certificates=trust), options=options
    )


class _UnaryMethod:
    """A unary-unary stub method that forwards actor and deadline and raises domain errors."""

    __slots__ = ("_call", "_credential")

    def __init__(self, call: grpc.aio.UnaryUnaryMultiCallable[Any, Any], credential: str) -> None:
        self._call = call
        self._credential = credential

    async def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Any = None, **kwargs: Any
    ) -> Any:
        try:
            return await self._call(
                request,
                timeout=call_timeout(DEFAULT_DEADLINE if timeout is None else timeout),
                metadata=tuple(outgoing_metadata(self._credential, metadata)),
                **kwargs,
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None


class _StreamMethod:
    """The unary-stream twin of _UnaryMethod: returns an async iterator of the responses."""

    __slots__ = ("_call", "_credential")

    def __init__(self, call: grpc.aio.UnaryStreamMultiCallable[Any, Any], credential: str) -> None:
        self._call = call
        self._credential = credential

    def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Any = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        call = self._call(
            request,
            timeout=call_timeout(DEFAULT_DEADLINE if timeout is None else timeout),
            metadata=tuple(outgoing_metadata(self._credential, metadata)),
            **kwargs,
        )

        async def responses() -> AsyncIterator[Any]:
            try:
                async for item in call:
                    yield item
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error(exc) from None
            finally:
                call.cancel()

        return responses()


class _Stub:
    """Holds the wrapped methods of a generated stub."""


def mesh_stub(
    stub_cls: Callable[[grpc.aio.Channel], StubT], channel: grpc.aio.Channel, credential: str
) -> StubT:
    """A generated stub whose methods forward the actor (signed with `credential`) and deadline and raise
    domain errors.

    A streaming method returns an async iterator; closing it (`aclose`) cancels the call.
    """
    stub = stub_cls(channel)
    wrapped = _Stub()
    for name, method in vars(stub).items():
        if isinstance(method, grpc.aio.UnaryUnaryMultiCallable):
            setattr(wrapped, name, _UnaryMethod(method, credential))
        elif isinstance(method, grpc.aio.UnaryStreamMultiCallable):
            setattr(wrapped, name, _StreamMethod(method, credential))
    return cast(StubT, wrapped)


class Peers:
    """Channels to the other services of the mesh, opened on first use and closed together."""

    def __init__(self, settings: MnemoSettings) -> None:
        self._settings = settings
        self._credential = settings.internal_credential()
        self._trust = settings.tls_trust()
        self._channels: dict[ServiceName, grpc.aio.Channel] = {}

    def channel(self, service: ServiceName) -> grpc.aio.Channel:
        """The channel to `service` (calls that need no actor, like health checks, may use it bare)."""
        if service not in self._channels:
            self._channels[service] = mesh_channel(
                self._settings.address_of(service), self._trust, self._settings.grpc_max_message_bytes
            )
        return self._channels[service]

    def stub(self, service: ServiceName, stub_cls: Callable[[grpc.aio.Channel], StubT]) -> StubT:
        """A stub of `service` that forwards the signed actor and the deadline and raises domain errors."""
        return mesh_stub(stub_cls, self.channel(service), self._credential)

    async def aclose(self) -> None:
        """Closes every channel."""
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
