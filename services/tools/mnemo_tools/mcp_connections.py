"""Connections to MCP servers through the official `mcp` SDK: one kept open per server, reopened on failure.

A connection lives in a task of its own (the SDK's transports must be entered and left by the same task);
calls from RPC handlers use its session. Anything that goes wrong on the way (the server exits, the HTTP
endpoint disappears, a call times out) is raised as `McpFailure` and the connection is dropped, so the
next call reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

if TYPE_CHECKING:
    import mcp_types
    from mcp import Client

log = logging.getLogger(__name__)

MAX_PAGES = 100


@dataclass(frozen=True, slots=True)
class McpEndpoint:
    """How to reach one server: a stdio command or a streamable HTTP URL."""

    server_id: str
    transport: str
    command: str = ""
    args: tuple[str, ...] = ()
    cwd: str = ""
    url: str = ""
    secrets: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class McpToolInfo:
    """A tool as the server lists it."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class McpCallResult:
    """A tool call's result as text."""

    text: str
    is_error: bool


class McpFailure(Exception):
    """The server could not be reached or did not answer properly."""


def describe(exc: BaseException) -> str:
    """A one-line reason for an error, looking inside exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, McpFailure) else f"{type(exc).__name__}: {text}"


@dataclass
class _Connection:
    endpoint: McpEndpoint
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    client: Client | None = None
    error: BaseException | None = None
    task: asyncio.Task[None] | None = None


class McpConnections:
    """The open connections of this process, by server id."""

    def __init__(self, *, timeout: float, log_dir: Path) -> None:
        self._timeout = timeout
        self._log_dir = log_dir
        self._connections: dict[str, _Connection] = {}
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _open(self, endpoint: McpEndpoint) -> AsyncIterator[Client]:
        # The SDK is imported on first use: it is large, and most deployments start with no MCP server.
        import httpx2
        from mcp import Client, StdioServerParameters
        from mcp.client.stdio import stdio_client
        from mcp.client.streamable_http import streamable_http_client

        secrets = dict(endpoint.secrets)
        if endpoint.transport == "stdio":
            self._log_dir.mkdir(parents=True, exist_ok=True)
            with (self._log_dir / f"{endpoint.server_id}.log").open("a", encoding="utf-8") as errlog:
                params = StdioServerParameters(
                    command=endpoint.command,
                    args=list(endpoint.args),
                    env=secrets or None,
                    cwd=endpoint.cwd or None,
                )
                transport = stdio_client(params, errlog=cast(TextIO, errlog))
                async with Client(cast(Any, transport), read_timeout_seconds=self._timeout) as client:
                    yield client
            return
        timeout = httpx2.Timeout(self._timeout)
        async with (
            httpx2.AsyncClient(headers=secrets, timeout=timeout) as http,
            Client(
                cast(Any, streamable_http_client(endpoint.url, http_client=http)),
                read_timeout_seconds=self._timeout,
            ) as client,
        ):
            yield client

    async def _hold(self, connection: _Connection) -> None:
        try:
            async with self._open(connection.endpoint) as client:
                connection.client = client
                connection.ready.set()
                await connection.closing.wait()
        except BaseException as exc:  # noqa: BLE001 - any failure of the server ends the connection
            connection.error = exc
            if not isinstance(exc, asyncio.CancelledError):
                log.info("MCP server %s disconnected: %s", connection.endpoint.server_id, describe(exc))
        finally:
            connection.client = None
            connection.ready.set()
            connection.closing.set()

    async def _client(self, endpoint: McpEndpoint) -> tuple[_Connection, Client]:
        async with self._lock:
            connection = self._connections.get(endpoint.server_id)
            if connection is not None and (connection.endpoint != endpoint or connection.closing.is_set()):
                await self._close(connection)
                connection = None
            if connection is None:
                connection = _Connection(endpoint)
                connection.task = asyncio.get_running_loop().create_task(self._hold(connection))
                self._connections[endpoint.server_id] = connection
        try:
            await asyncio.wait_for(connection.ready.wait(), self._timeout)
        except TimeoutError:
            await self.forget(endpoint.server_id)
            raise McpFailure(f"the MCP server did not connect within {self._timeout:g} s") from None
        if connection.client is None:
            await self.forget(endpoint.server_id)
            error = connection.error
            raise McpFailure(f"cannot connect to the MCP server: {describe(error) if error else 'closed'}")
        return connection, connection.client

    async def list_tools(self, endpoint: McpEndpoint) -> list[McpToolInfo]:
        """The server's tools (all pages)."""
        connection, client = await self._client(endpoint)
        tools: list[McpToolInfo] = []
        cursor: str | None = None
        try:
            for _ in range(MAX_PAGES):
                page = await asyncio.wait_for(
                    client.list_tools(cursor=cursor, cache_mode="refresh"), self._timeout
                )
                tools += [
                    McpToolInfo(t.name, t.description or t.title or "", dict(t.input_schema or {}))
                    for t in page.tools
                ]
                cursor = page.next_cursor
                if not cursor:
                    break
        except Exception as exc:
            await self.forget(endpoint.server_id)
            raise McpFailure(f"the MCP server could not list its tools: {describe(exc)}") from exc
        del connection
        return tools

    async def call_tool(
        self, endpoint: McpEndpoint, name: str, arguments: dict[str, Any], timeout: float
    ) -> McpCallResult:
        """Calls one tool; a server-reported failure is a result with is_error, a broken link raises."""
        _, client = await self._client(endpoint)
        try:
            result = await asyncio.wait_for(
                client.call_tool(name, arguments, read_timeout_seconds=timeout), timeout
            )
        except TimeoutError:
            await self.forget(endpoint.server_id)
            raise McpFailure(f"the MCP server did not answer within {timeout:g} s") from None
        except Exception as exc:
            await self.forget(endpoint.server_id)
            raise McpFailure(f"the MCP call failed: {describe(exc)}") from exc
        return McpCallResult(text=result_text(result), is_error=bool(result.is_error))

    async def forget(self, server_id: str) -> None:
        """Closes the server's connection, if one is open."""
        async with self._lock:
            connection = self._connections.get(server_id)
            if connection is not None:
                await self._close(connection)

    async def _close(self, connection: _Connection) -> None:
        if self._connections.get(connection.endpoint.server_id) is connection:
            del self._connections[connection.endpoint.server_id]
        connection.closing.set()
        if connection.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(connection.task), 5)
            except (TimeoutError, asyncio.CancelledError):
                connection.task.cancel()

    async def aclose(self) -> None:
        """Closes every connection (stdio servers are stopped)."""
        for server_id in list(self._connections):
            await self.forget(server_id)


def result_text(result: mcp_types.CallToolResult) -> str:
    """The text the model sees for a call's content blocks (or its structured content)."""
    import mcp_types

    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
            parts.append(f"[{block.type}: {block.mime_type}, {len(block.data) * 3 // 4} bytes]")
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, mcp_types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[resource {resource.uri}]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource link {block.uri}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    return "\n".join(parts)
