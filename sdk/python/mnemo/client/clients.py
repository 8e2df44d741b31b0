"""`Mnemo` and `AsyncMnemo`: the REST API as Python objects, sync or async."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Generic

import httpx

from mnemo.client.resources import (
    Agents,
    ApiKeys,
    Archival,
    Batches,
    Blocks,
    Groups,
    Identities,
    McpServers,
    Messages,
    Models,
    Organizations,
    Runs,
    Sources,
    ToolEnvironments,
    Tools,
    Usage,
    Users,
)
from mnemo.client.transport import (
    AsyncTransport,
    RawAsyncTransport,
    RawSyncTransport,
    RequestOptions,
    SyncTransport,
    TransportT,
)

DEFAULT_BASE_URL = "http://127.0.0.1:8283"
# Turns wait for the model, step after step: far longer than httpx's 5 s default.
DEFAULT_TIMEOUT = 120.0


def default_api_key() -> str | None:
    """`MNEMO_API_KEY`, else the key a local `mnemo server` keeps in `$MNEMO_HOME/api_key`."""
    if key := os.environ.get("MNEMO_API_KEY"):
        return key
    path = Path(os.environ.get("MNEMO_HOME") or "~/.mnemo").expanduser() / "api_key"
    return path.read_text().strip() if path.is_file() else None


def _client_options(base_url: str | None, api_key: str | None, timeout: float) -> dict[str, object]:
    key = api_key if api_key is not None else default_api_key()
    return {
        "base_url": base_url or os.environ.get("MNEMO_BASE_URL") or DEFAULT_BASE_URL,
        "headers": {"Authorization": f"Bearer {key}"} if key else {},
        "timeout": timeout,
    }


class _Resources(Generic[TransportT]):
    def __init__(self, transport: TransportT) -> None:
        self.agents: Agents[TransportT] = Agents(transport)
        self.messages: Messages[TransportT] = Messages(transport)
        self.runs: Runs[TransportT] = Runs(transport)
        self.blocks: Blocks[TransportT] = Blocks(transport)
        self.archival: Archival[TransportT] = Archival(transport)
        self.tools: Tools[TransportT] = Tools(transport)
        self.sources: Sources[TransportT] = Sources(transport)
        self.organizations: Organizations[TransportT] = Organizations(transport)
        self.users: Users[TransportT] = Users(transport)
        self.api_keys: ApiKeys[TransportT] = ApiKeys(transport)
        self.batches: Batches[TransportT] = Batches(transport)
        self.groups: Groups[TransportT] = Groups(transport)
        self.identities: Identities[TransportT] = Identities(transport)
        self.mcp_servers: McpServers[TransportT] = McpServers(transport)
        self.models: Models[TransportT] = Models(transport)
        self.usage: Usage[TransportT] = Usage(transport)
        self.tool_environments: ToolEnvironments[TransportT] = ToolEnvironments(transport)


class RawMnemo(_Resources[RawSyncTransport]):
    """`Mnemo`'s resources answering `RawResponse`s: the parsed result with the HTTP response."""


class AsyncRawMnemo(_Resources[RawAsyncTransport]):
    """`AsyncMnemo`'s resources answering `RawResponse`s: the parsed result with the HTTP response."""


class Mnemo(_Resources[SyncTransport]):
    """A blocking client. Reads, deletes and turns (which carry an idempotency key) are retried on 429/503."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 2,
    ) -> None:
        self.http = httpx.Client(**_client_options(base_url, api_key, timeout))  # type: ignore[arg-type]
        self._options = RequestOptions(max_retries=max_retries)
        super().__init__(SyncTransport(self.http, self._options))

    def with_options(
        self,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Mnemo:
        """A client for a few requests with other options; it shares this one's connections.

        `client.with_options(timeout=5, max_retries=0).agents.get(agent_id)`
        """
        copy = object.__new__(Mnemo)
        copy.http = self.http
        copy._options = self._options.merged(
            timeout=timeout, max_retries=max_retries, idempotency_key=idempotency_key, headers=headers
        )
        _Resources.__init__(copy, SyncTransport(self.http, copy._options))
        return copy

    @property
    def with_raw_response(self) -> RawMnemo:
        """The same calls answering `RawResponse`: `client.with_raw_response.agents.list().headers`."""
        return RawMnemo(RawSyncTransport(self.http, self._options))

    def close(self) -> None:
        """Closes the connections."""
        self.http.close()

    def __enter__(self) -> Mnemo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncMnemo(_Resources[AsyncTransport]):
    """An asyncio client; the same resources and methods as `Mnemo`, awaited."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 2,
    ) -> None:
        self.http = httpx.AsyncClient(**_client_options(base_url, api_key, timeout))  # type: ignore[arg-type]
        self._options = RequestOptions(max_retries=max_retries)
        super().__init__(AsyncTransport(self.http, self._options))

    def with_options(
        self,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncMnemo:
        """A client for a few requests with other options; it shares this one's connections."""
        copy = object.__new__(AsyncMnemo)
        copy.http = self.http
        copy._options = self._options.merged(
            timeout=timeout, max_retries=max_retries, idempotency_key=idempotency_key, headers=headers
        )
        _Resources.__init__(copy, AsyncTransport(self.http, copy._options))
        return copy

    @property
    def with_raw_response(self) -> AsyncRawMnemo:
        """The same calls answering `RawResponse`s."""
        return AsyncRawMnemo(RawAsyncTransport(self.http, self._options))

    async def aclose(self) -> None:
        """Closes the connections."""
        await self.http.aclose()

    async def __aenter__(self) -> AsyncMnemo:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
