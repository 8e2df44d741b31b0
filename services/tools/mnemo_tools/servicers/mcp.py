"""McpService: proto <-> MCP server registrations."""

from __future__ import annotations

from typing import Any

from mnemo.tools.v1 import mcp_pb2, mcp_pb2_grpc
from mnemo_core.actor import current_actor
from mnemo_core.validation import invalid
from mnemo_core.wire import to_timestamp
from mnemo_tools.mcp_servers import McpServers, McpServerSpec, McpServerView
from mnemo_tools.servicers.tools import tool_to_proto

Context = Any


def server_to_proto(view: McpServerView) -> mcp_pb2.McpServer:
    """The wire form of an MCP server; secrets appear by name only."""
    stored = view.server
    names = sorted(stored.secrets)
    server = mcp_pb2.McpServer(
        id=stored.id,
        name=stored.name,
        tool_prefix=stored.tool_prefix,
        tool_count=view.tool_count,
        create_time=to_timestamp(stored.created_at),
        refresh_time=to_timestamp(stored.refreshed_at),
    )
    if stored.transport == "stdio":
        server.stdio.CopyFrom(
            mcp_pb2.StdioTransport(command=stored.command, args=stored.args, env_names=names, cwd=stored.cwd)
        )
    else:
        server.streamable_http.CopyFrom(mcp_pb2.StreamableHttpTransport(url=stored.url, header_names=names))
    return server


class McpServicer(mcp_pb2_grpc.McpServiceServicer):
    """McpService over McpServers."""

    def __init__(self, servers: McpServers) -> None:
        self._servers = servers

    async def CreateMcpServer(
        self, request: mcp_pb2.CreateMcpServerRequest, context: Context
    ) -> mcp_pb2.CreateMcpServerResponse:
        server = request.server
        kind = server.WhichOneof("transport")
        if kind == "stdio":
            spec = McpServerSpec(
                name=server.name,
                transport="stdio",
                command=server.stdio.command,
                args=list(server.stdio.args),
                cwd=server.stdio.cwd,
                secrets=dict(server.stdio.env),
                tool_prefix=server.tool_prefix,
            )
        elif kind == "streamable_http":
            spec = McpServerSpec(
                name=server.name,
                transport="streamable_http",
                url=server.streamable_http.url,
                secrets=dict(server.streamable_http.headers),
                tool_prefix=server.tool_prefix,
            )
        else:
            raise invalid("server.transport", "set stdio or streamable_http")
        view, tools = await self._servers.create(current_actor(), spec)
        return mcp_pb2.CreateMcpServerResponse(
            server=server_to_proto(view), tools=[tool_to_proto(t) for t in tools]
        )

    async def GetMcpServer(
        self, request: mcp_pb2.GetMcpServerRequest, context: Context
    ) -> mcp_pb2.GetMcpServerResponse:
        view = await self._servers.get(current_actor().org_id, request.mcp_server_id)
        return mcp_pb2.GetMcpServerResponse(server=server_to_proto(view))

    async def ListMcpServers(
        self, request: mcp_pb2.ListMcpServersRequest, context: Context
    ) -> mcp_pb2.ListMcpServersResponse:
        views, token = await self._servers.list_page(
            current_actor().org_id, size=request.page_size, token=request.page_token
        )
        return mcp_pb2.ListMcpServersResponse(
            servers=[server_to_proto(v) for v in views], next_page_token=token
        )

    async def DeleteMcpServer(
        self, request: mcp_pb2.DeleteMcpServerRequest, context: Context
    ) -> mcp_pb2.DeleteMcpServerResponse:
        await self._servers.delete(current_actor(), request.mcp_server_id)
        return mcp_pb2.DeleteMcpServerResponse()

    async def RefreshMcpServer(
        self, request: mcp_pb2.RefreshMcpServerRequest, context: Context
    ) -> mcp_pb2.RefreshMcpServerResponse:
        view, tools = await self._servers.refresh(current_actor(), request.mcp_server_id)
        return mcp_pb2.RefreshMcpServerResponse(
            server=server_to_proto(view), tools=[tool_to_proto(t) for t in tools]
        )
