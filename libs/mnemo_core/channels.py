"""Client channels to other services of the mesh, with actor forwarding and error mapping.

Two ways to get the same behaviour: `open_channel` (grpc.aio client interceptors, any stub works on
it) and `Peers.stub` (a stub whose methods forward the actor and deadline and map errors inline,
which spares grpc.aio's extra interceptor task on every call: the choice for hot paths).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import grpc

from mnemo_core.actor import call_timeout
from mnemo_core.interceptors import StreamClientInterceptor, UnaryClientInterceptor, outgoing_metadata
from mnemo_core.rpc_errors import from_rpc_error
from mnemo_core.settings import MnemoSettings, ServiceName

StubT = TypeVar("StubT")

_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.enable_retries", 1),
]


def open_channel(address: str, *, internal_token: str | None = None) -> grpc.aio.Channel:
    """An insecure (mesh-internal) channel to `address` that forwards the current actor."""
    return grpc.aio.insecure_channel(
        address,
        options=_OPTIONS,
        interceptors=[UnaryClientInterceptor(internal_token), StreamClientInterceptor(internal_token)],
    )


class _UnaryMethod:
    """A unary-unary stub method that forwards actor and deadline and raises domain errors."""

    __slots__ = ("_call", "_token")

    def __init__(self, call: grpc.aio.UnaryUnaryMultiCallable[Any, Any], token: str | None) -> None:
        self._call = call
        self._token = token

    async def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Any = None, **kwargs: Any
    ) -> Any:
        try:
            return await self._call(
                request,
                timeout=call_timeout(timeout),
                metadata=tuple(outgoing_metadata(self._token, metadata)),
                **kwargs,
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None


class _StreamMethod:
    """The unary-stream twin of _UnaryMethod: returns an async iterator of the responses."""

    __slots__ = ("_call", "_token")

    def __init__(self, call: grpc.aio.UnaryStreamMultiCallable[Any, Any], token: str | None) -> None:
        self._call = call
        self._token = token

    def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Any = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        call = self._call(
            request,
            timeout=call_timeout(timeout),
            metadata=tuple(outgoing_metadata(self._token, metadata)),
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
    stub_cls: Callable[[grpc.aio.Channel], StubT], channel: grpc.aio.Channel, token: str | None
) -> StubT:
    """A generated stub on a plain channel, its methods wrapped like the client interceptors would."""
    stub = stub_cls(channel)
    wrapped = _Stub()
    for name, method in vars(stub).items():
        if isinstance(method, grpc.aio.UnaryUnaryMultiCallable):
            setattr(wrapped, name, _UnaryMethod(method, token))
        elif isinstance(method, grpc.aio.UnaryStreamMultiCallable):
            setattr(wrapped, name, _StreamMethod(method, token))
    return cast(StubT, wrapped)


class Peers:
    """Channels to the other services of the mesh, opened on first use and closed together."""

    def __init__(self, settings: MnemoSettings) -> None:
        self._settings = settings
        self._token = settings.internal_token.get_secret_value() if settings.internal_token else None
        self._channels: dict[ServiceName, grpc.aio.Channel] = {}
        self._plain: dict[ServiceName, grpc.aio.Channel] = {}

    def channel(self, service: ServiceName) -> grpc.aio.Channel:
        """The channel to `service`."""
        if service not in self._channels:
            self._channels[service] = open_channel(
                self._settings.address_of(service), internal_token=self._token
            )
        return self._channels[service]

    def stub(self, service: ServiceName, stub_cls: Callable[[grpc.aio.Channel], StubT]) -> StubT:
        """A stub of `service` that forwards the actor and deadline and raises domain errors, without
        grpc.aio interceptors (cheaper per call than a stub on `channel`)."""
        if service not in self._plain:
            self._plain[service] = grpc.aio.insecure_channel(
                self._settings.address_of(service), options=_OPTIONS
            )
        return mesh_stub(stub_cls, self._plain[service], self._token)

    async def aclose(self) -> None:
        """Closes every channel."""
        for channel in [*self._channels.values(), *self._plain.values()]:
            await channel.close()
        self._channels.clear()
        self._plain.clear()
