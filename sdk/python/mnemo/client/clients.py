"""`Mnemo` and `AsyncMnemo`: the REST API as Python objects, sync or async."""

from __future__ import annotations

import os
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
    Messages,
    Organizations,
    Runs,
    Sources,
    Tools,
    Users,
)
from mnemo.client.transport import AsyncTransport, SyncTransport, TransportT

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
        super().__init__(SyncTransport(self.http, max_retries))

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
        super().__init__(AsyncTransport(self.http, max_retries))

    async def aclose(self) -> None:
        """Closes the connections."""
        await self.http.aclose()

    async def __aenter__(self) -> AsyncMnemo:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
