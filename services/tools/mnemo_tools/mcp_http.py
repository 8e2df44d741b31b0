"""The HTTP client of streamable HTTP MCP servers: it cannot be turned into a proxy into the service's network.

Every connection goes to an address the policy (mcp_addresses.py) allows, and to exactly the address it
checked: no second lookup that a DNS answer could change in between. Redirects to other hosts cannot
lead anywhere else either, as each connection is checked the same way. Responses are capped in size and
every phase has a timeout. Imported on first use, like the SDK.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import httpcore2
import httpx2

from mnemo_tools.mcp_addresses import AddressPolicy


class _CheckedBackend(httpcore2.AsyncNetworkBackend):
    """Connects only to allowed addresses, to exactly the addresses it checked."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        addresses = await self._policy.resolve(host, port)
        if not addresses:
            raise httpcore2.ConnectError("the address is not allowed")
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("Unix sockets are not MCP servers")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class ResponseTooLarge(httpx2.HTTPError):
    """The server sent more than the response cap."""


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in self._inner:
            received += len(chunk)
            if received > self._limit:
                raise ResponseTooLarge(f"the response is larger than {self._limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class GuardedTransport(httpx2.AsyncHTTPTransport):
    """httpx's transport with the checked backend and a cap on every response body."""

    def __init__(self, policy: AddressPolicy, max_response_bytes: int) -> None:
        # No proxies from the environment: a proxy would connect to whatever it is asked to.
        super().__init__(trust_env=False)
        # httpx builds its pool without a way to pass a network backend: this one checks and pins.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(trust_env=False),
            network_backend=_CheckedBackend(policy),
        )
        self._max_response_bytes = max_response_bytes

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, self._max_response_bytes),
            extensions=response.extensions,
        )


def guarded_client(
    policy: AddressPolicy, headers: dict[str, str], timeout: float, max_response_bytes: int
) -> httpx2.AsyncClient:
    """An HTTP client for one MCP server."""
    return httpx2.AsyncClient(
        headers=headers,
        timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)),
        transport=GuardedTransport(policy, max_response_bytes),
        trust_env=False,
        follow_redirects=False,
    )
