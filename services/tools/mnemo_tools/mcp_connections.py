"""Connections to MCP servers through the official `mcp` SDK: one kept open per server, reopened on failure.

A connection lives in a task of its own (the SDK's transports must be entered and left by the same task);
calls from RPC handlers use its session. Anything that goes wrong on the way (the server exits, the HTTP
endpoint disappears, a call times out) is raised as `McpFailure` and the connection is dropped, so the
next call reconnects. stdio servers run in the tool sandbox (mcp_stdio.py); HTTP servers are reached
through the address checks and caps of mcp_http.py. What went wrong is logged here, never told to the
caller: an error that says "connection refused" or "timed out" would make the service a port scanner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mnemo_core.errors import MnemoError
from mnemo_tools.mcp_addresses import AddressPolicy
from mnemo_tools.mcp_stdio import StdioPolicy, sandboxed_stdio
from mnemo_tools.sandbox.runner import SandboxRunner

if TYPE_CHECKING:
    import mcp_types
    from mcp import Client

log = logging.getLogger(__name__)

MAX_PAGES = 100
MAX_TOOLS = 1000
CANNOT_CONNECT = "cannot connect to the MCP server"


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

    def __init__(
        self,
        *,
        timeout: float,
        log_dir: Path,
        sandbox: SandboxRunner,
        stdio: StdioPolicy,
        addresses: AddressPolicy,
        max_response_bytes: int,
    ) -> None:
        self._timeout = timeout
        self._log_dir = log_dir
        self._sandbox = sandbox
        self._stdio = stdio
        self._addresses = addresses
        self._max_response_bytes = max_response_bytes
        self._connections: dict[str, _Connection] = {}
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _open(self, endpoint: McpEndpoint) -> AsyncIterator[Client]:
        # The SDK is imported on first use: it is large, and most deployments start with no MCP server.
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        from mnemo_tools.mcp_http import guarded_client

        secrets = dict(endpoint.secrets)
        if endpoint.transport == "stdio":
            # The operator may have withdrawn the command (or stdio altogether) since it was registered.
            refusal = self._stdio.refusal(endpoint.command)
            if refusal is not None:
                raise McpFailure(refusal.message)
            process = await self._sandbox.spawn(
                self._stdio.command_of(endpoint.command, endpoint.args, secrets, endpoint.cwd)
            )
            transport = sandboxed_stdio(
                process, self._log_dir / f"{endpoint.server_id}.log", self._max_response_bytes
            )
            async with Client(cast(Any, transport), read_timeout_seconds=self._timeout) as client:
                yield client
            return
        async with (
            guarded_client(self._addresses, secrets, self._timeout, self._max_response_bytes) as http,
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
            log.info("MCP server %s did not connect within %g s", endpoint.server_id, self._timeout)
            raise McpFailure(CANNOT_CONNECT) from None
        if connection.client is None:
            await self.forget(endpoint.server_id)
            error = connection.error
            # Only the service's own refusals are told; how a connection failed stays in the log.
            if isinstance(error, McpFailure | MnemoError):
                raise McpFailure(str(error) if isinstance(error, McpFailure) else error.message)
            raise McpFailure(CANNOT_CONNECT)
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
                if len(tools) > MAX_TOOLS:
                    raise McpFailure(f"the MCP server lists more than {MAX_TOOLS} tools")
                cursor = page.next_cursor
                if not cursor:
                    break
        except Exception as exc:
            await self.forget(endpoint.server_id)
            if isinstance(exc, McpFailure):
                raise
            log.info("MCP server %s could not list its tools: %s", endpoint.server_id, describe(exc))
            raise McpFailure("the MCP server could not list its tools") from exc
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
            log.info("MCP call %s of server %s failed: %s", name, endpoint.server_id, describe(exc))
            raise McpFailure("the MCP call failed") from exc
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
