"""Client channels to other services of the mesh, with actor forwarding and error mapping."""

from __future__ import annotations

import grpc

from mnemo_core.interceptors import StreamClientInterceptor, UnaryClientInterceptor
from mnemo_core.settings import MnemoSettings, ServiceName

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


class Peers:
    """Channels to the other services of the mesh, opened on first use and closed together."""

    def __init__(self, settings: MnemoSettings) -> None:
        self._settings = settings
        self._token = settings.internal_token.get_secret_value() if settings.internal_token else None
        self._channels: dict[ServiceName, grpc.aio.Channel] = {}

    def channel(self, service: ServiceName) -> grpc.aio.Channel:
        """The channel to `service`."""
        if service not in self._channels:
            self._channels[service] = open_channel(
                self._settings.address_of(service), internal_token=self._token
            )
        return self._channels[service]

    async def aclose(self) -> None:
        """Closes every channel."""
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
