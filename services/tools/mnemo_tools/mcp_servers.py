"""MCP servers of an organization and the tools they provide (stored as `mcp` tools)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from mnemo_core.actor import Actor, require_admin
from mnemo_core.db import Database
from mnemo_core.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.validation import check_text, invalid
from mnemo_core.wire import utcnow
from mnemo_tools.argument_checks import schema_problem
from mnemo_tools.builtin import BUILTIN_TOOLS
from mnemo_tools.mcp_addresses import AddressPolicy
from mnemo_tools.mcp_connections import McpConnections, McpEndpoint, McpFailure, McpToolInfo
from mnemo_tools.mcp_stdio import StdioPolicy
from mnemo_tools.store import McpServer, ServerQueries, Tool, ToolQueries

PREFIX = re.compile(r"^[A-Za-z0-9_]{0,32}$")
HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class McpServerSpec:
    """A server registration as a caller gives it."""

    name: str
    transport: str
    command: str = ""
    args: list[str] = field(default_factory=list)
    cwd: str = ""
    url: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    tool_prefix: str = ""


@dataclass(frozen=True, slots=True)
class McpServerView:
    """A server with the number of its tools."""

    server: McpServer
    tool_count: int


def endpoint_of(server: McpServer) -> McpEndpoint:
    """How to reach a stored server."""
    return McpEndpoint(
        server_id=server.id,
        transport=server.transport,
        command=server.command,
        args=tuple(server.args),
        cwd=server.cwd,
        url=server.url,
        secrets=tuple(sorted(server.secrets.items())),
    )


def tool_name(prefix: str, name: str) -> str:
    """The stored name of a server's tool: prefixed, limited to what model APIs accept."""
    return INVALID_NAME_CHARS.sub("_", prefix + name)[:64]


class McpServers:
    """Registers MCP servers and keeps their tools in the registry."""

    def __init__(
        self,
        db: Database,
        connections: McpConnections,
        *,
        stdio: StdioPolicy,
        addresses: AddressPolicy,
        default_return_char_limit: int,
        schema_max_bytes: int,
        max_per_org: int = 0,
    ) -> None:
        self._db = db
        # Servers one organization may register (0: no cap).
        self._max_per_org = max_per_org
        self._connections = connections
        self._stdio = stdio
        self._addresses = addresses
        self._default_limit = default_return_char_limit
        self._schema_max_bytes = schema_max_bytes

    async def _check(self, actor: Actor, spec: McpServerSpec) -> None:
        """Refuses what the caller may not register, before anything connects or runs."""
        # Registering a server gives the whole organization its tools (and, for stdio, a command the tools
        # service starts): admins only.
        require_admin(actor, "register MCP servers")
        if spec.transport == "stdio":
            # Only the operator's commands.
            check_text(spec.command, "server.stdio.command", max_chars=4096, allow_empty=False)
            refusal = self._stdio.refusal(spec.command)
            if refusal is not None:
                raise refusal
        check_text(spec.name, "server.name", max_chars=200, allow_empty=False)
        if not PREFIX.match(spec.tool_prefix):
            raise invalid("server.tool_prefix", "at most 32 letters, digits or '_'")
        if spec.transport == "stdio":
            self._check_stdio(spec)
        elif spec.transport == "streamable_http":
            for name, value in spec.secrets.items():
                if not HEADER.match(name) or any(c in value for c in "\r\n\x00"):
                    raise invalid(f"server.streamable_http.headers[{name}]", "not a valid HTTP header")
            check_text(spec.url, "server.streamable_http.url", max_chars=4096, allow_empty=False)
            await self._addresses.check_url(spec.url, "server.streamable_http.url")
        else:
            raise invalid("server.transport", "set stdio or streamable_http")

    def _check_cap(self, registered: int) -> None:
        if self._max_per_org and registered >= self._max_per_org:
            raise ResourceExhausted(
                f"this organization has {registered} MCP servers registered (at most {self._max_per_org}); "
                "delete one before registering another",
                reason="MCP_SERVERS_EXHAUSTED",
                metadata={"max_servers": str(self._max_per_org)},
            )

    def _check_stdio(self, spec: McpServerSpec) -> None:
        if len(spec.args) > 100 or any("\x00" in a or len(a) > 4096 for a in spec.args):
            raise invalid("server.stdio.args", "at most 100 arguments of at most 4096 characters")
        for name, value in spec.secrets.items():
            if not ENV_NAME.match(name) or "\x00" in value:
                raise invalid(
                    f"server.stdio.env[{name}]", "names are letters, digits and '_'; no NUL in values"
                )
        check_text(spec.cwd, "server.stdio.cwd", max_chars=4096)
        if spec.cwd and not (
            os.path.isabs(spec.cwd) and os.path.isdir(spec.cwd) and self._stdio.visible(spec.cwd)
        ):
            raise invalid(
                "server.stdio.cwd",
                "must be a directory the sandbox shows servers (under one of mcp_stdio_paths)",
            )
        if not self._stdio.executable(spec.command, spec.secrets.get("PATH")):
            raise invalid(
                "server.stdio.command",
                "no such executable in the sandbox of stdio servers (a name on its PATH, or a path under "
                "/usr, /bin, /lib or one of mcp_stdio_paths)",
            )

    async def _list_tools(self, endpoint: McpEndpoint) -> list[McpToolInfo]:
        try:
            return await self._connections.list_tools(endpoint)
        except McpFailure as exc:
            raise Unavailable(str(exc), reason="MCP_SERVER_UNREACHABLE") from exc

    async def create(self, actor: Actor, spec: McpServerSpec) -> tuple[McpServerView, list[Tool]]:
        """Registers a server and its tools; nothing is stored when it cannot be reached."""
        await self._check(actor, spec)
        org_id = actor.org_id
        if await self._db.read(ServerQueries.name_taken, org_id, spec.name):
            raise AlreadyExists(f"an MCP server named '{spec.name}' exists", reason="MCP_SERVER_NAME_TAKEN")
        # Checked before connecting (a refused registration starts nothing) and again when inserting.
        self._check_cap(await self._db.read(ServerQueries.count, org_id))
        now = utcnow()
        server = McpServer(
            id=new_id("mcp"),
            org_id=org_id,
            name=spec.name,
            transport=spec.transport,
            command=spec.command,
            args=list(spec.args),
            cwd=spec.cwd,
            url=spec.url,
            secrets=dict(spec.secrets),
            tool_prefix=spec.tool_prefix,
            created_at=now,
            updated_at=now,
            refreshed_at=now,
        )
        listed = await self._list_tools(endpoint_of(server))

        def tx(conn: Connection) -> list[Tool]:
            self._check_cap(ServerQueries.count(conn, org_id))
            ServerQueries.insert(conn, server)
            return self._sync_tools(conn, server, listed)

        try:
            tools = await self._db.write(tx)
        except IntegrityError:
            await self._connections.forget(server.id)
            raise AlreadyExists(
                f"an MCP server named '{spec.name}' exists", reason="MCP_SERVER_NAME_TAKEN"
            ) from None
        except BaseException:
            await self._connections.forget(server.id)
            raise
        return McpServerView(server, len(tools)), tools

    def _sync_tools(self, conn: Connection, server: McpServer, listed: list[McpToolInfo]) -> list[Tool]:
        """Makes the stored tools of `server` match `listed`, keeping the ids of tools that stay."""
        wanted: dict[str, McpToolInfo] = {}
        for info in listed:
            wanted.setdefault(tool_name(server.tool_prefix, info.name), info)
        for info in wanted.values():
            problem = schema_problem(json.dumps(_parameters(info.input_schema)), self._schema_max_bytes)
            if problem is not None:
                raise FailedPrecondition(
                    f"the server's tool '{info.name}' cannot be used: {problem}",
                    reason="MCP_TOOL_SCHEMA_REFUSED",
                    metadata={"tool": info.name[:200]},
                )
        builtin = sorted(set(wanted) & {tool.name for tool in BUILTIN_TOOLS})
        others = ToolQueries.names_taken(conn, server.org_id, list(wanted), not_of_server=server.id)
        clashes = sorted({*builtin, *others})
        if clashes:
            raise AlreadyExists(
                f"the server's tools {', '.join(clashes)} clash with existing tools; register it with a tool_prefix",
                reason="TOOL_NAME_TAKEN",
                metadata={"names": ",".join(clashes)},
            )
        existing = {tool.name: tool for tool in ToolQueries.of_server(conn, server.id)}
        ToolQueries.delete(
            conn, server.org_id, [tool.id for name, tool in existing.items() if name not in wanted]
        )
        now = utcnow()
        tools = []
        for name, info in sorted(wanted.items()):
            schema = json.dumps(_parameters(info.input_schema), separators=(",", ":"))
            stored = existing.get(name)
            if stored is None:
                tool = Tool(
                    id=new_id("tool"),
                    org_id=server.org_id,
                    name=name,
                    description=info.description,
                    json_schema=schema,
                    tool_type="mcp",
                    created_at=now,
                    updated_at=now,
                    tags=["mcp", server.name[:200]],
                    return_char_limit=self._default_limit,
                    mcp_server_id=server.id,
                    mcp_tool_name=info.name,
                )
                ToolQueries.insert(conn, tool)
            else:
                tool = dataclasses.replace(
                    stored,
                    description=info.description,
                    json_schema=schema,
                    mcp_tool_name=info.name,
                    updated_at=now,
                )
                ToolQueries.save(conn, tool)
            tools.append(tool)
        return tools

    async def server(self, org_id: str, server_id: str) -> McpServer:
        """A stored server of the organization."""
        require_id(server_id, "mcp_server_id")
        server = await self._db.read(ServerQueries.get, org_id, server_id)
        if server is None:
            raise NotFound(
                f"MCP server {server_id} not found",
                reason="MCP_SERVER_NOT_FOUND",
                metadata={"mcp_server_id": server_id},
            )
        return server

    async def _counts(self, server_ids: list[str]) -> dict[str, int]:
        if not server_ids:
            return {}
        return await self._db.read(ToolQueries.counts_by_server, server_ids)

    async def get(self, org_id: str, server_id: str) -> McpServerView:
        """A server with its tool count."""
        server = await self.server(org_id, server_id)
        return McpServerView(server, (await self._counts([server.id])).get(server.id, 0))

    async def list_page(
        self, org_id: str, *, size: int = 0, token: str = ""
    ) -> tuple[list[McpServerView], str]:
        """Servers by name; returns (page, next token)."""
        limit = page_size(size)
        position = decode_token(token, "mcp-servers")
        after = None if position is None else position.text("n")
        servers = await self._db.read(
            lambda conn: ServerQueries.page(conn, org_id, after_name=after, limit=limit + 1)
        )
        next_token = encode_token("mcp-servers", n=servers[limit - 1].name) if len(servers) > limit else ""
        servers = servers[:limit]
        counts = await self._counts([server.id for server in servers])
        return [McpServerView(server, counts.get(server.id, 0)) for server in servers], next_token

    async def refresh(self, actor: Actor, server_id: str) -> tuple[McpServerView, list[Tool]]:
        """Lists the server's tools again and stores the changes (admins only)."""
        require_admin(actor, "refresh MCP servers")
        org_id = actor.org_id
        server = await self.server(org_id, server_id)
        await self._connections.forget(server.id)
        listed = await self._list_tools(endpoint_of(server))

        def tx(conn: Connection) -> tuple[McpServer, list[Tool]]:
            stored = ServerQueries.get(conn, org_id, server_id, lock=True)
            if stored is None:
                raise NotFound(f"MCP server {server_id} not found", reason="MCP_SERVER_NOT_FOUND")
            tools = self._sync_tools(conn, stored, listed)
            refreshed = dataclasses.replace(stored, refreshed_at=utcnow())
            ServerQueries.refreshed(conn, server_id, refreshed.refreshed_at)
            return refreshed, tools

        refreshed, tools = await self._db.write(tx)
        return McpServerView(refreshed, len(tools)), tools

    async def delete(self, actor: Actor, server_id: str) -> None:
        """Deletes a server and its tools, and closes its connection (admins only)."""
        require_admin(actor, "delete MCP servers")
        org_id = actor.org_id
        await self.server(org_id, server_id)
        await self._db.write(ServerQueries.delete, org_id, server_id)
        await self._connections.forget(server_id)

    async def endpoint(self, org_id: str, server_id: str) -> McpEndpoint:
        """How to reach a server, for running one of its tools."""
        try:
            return endpoint_of(await self.server(org_id, server_id))
        except NotFound:
            raise FailedPrecondition(
                f"the tool's MCP server {server_id} no longer exists", reason="MCP_SERVER_NOT_FOUND"
            ) from None


def _parameters(schema: Mapping[str, object]) -> dict[str, object]:
    """The server's input schema as an object schema (MCP requires one; be lenient with servers)."""
    parameters = dict(schema)
    parameters.setdefault("type", "object")
    parameters.setdefault("properties", {})
    parameters.pop("title", None)
    return parameters
