"""/v1/mcp-servers: MCP servers whose tools agents may call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from mnemo.rest.mcp import McpServer, McpServerCreate, McpServerWithTools
from mnemo.rest.tools import Tool
from mnemo.tools.v1 import mcp_pb2, tool_pb2
from mnemo_core.wire import field_time
from mnemo_gateway.backends import Backends, acting_actor, backends
from mnemo_gateway.routes.tools import tool_out

router = APIRouter(prefix="/v1/mcp-servers", tags=["mcp servers"], dependencies=[Depends(acting_actor)])
Mesh = Annotated[Backends, Depends(backends)]


def server_out(server: mcp_pb2.McpServer) -> McpServer:
    """The REST form of a server."""
    stdio = server.stdio if server.HasField("stdio") else None
    http = server.streamable_http if server.HasField("streamable_http") else None
    return McpServer(
        id=server.id,
        name=server.name,
        transport="stdio" if stdio is not None else "streamable_http",
        command=stdio.command if stdio is not None else None,
        args=list(stdio.args) if stdio is not None else [],
        env_names=list(stdio.env_names) if stdio is not None else [],
        cwd=(stdio.cwd or None) if stdio is not None else None,
        url=http.url if http is not None else None,
        header_names=list(http.header_names) if http is not None else [],
        tool_prefix=server.tool_prefix,
        tool_count=server.tool_count,
        created_at=field_time(server, "create_time"),
        refreshed_at=field_time(server, "refresh_time"),
    )


def _with_tools(server: mcp_pb2.McpServer, tools: list[Tool]) -> McpServerWithTools:
    return McpServerWithTools(**server_out(server).model_dump(), tools=tools)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=McpServerWithTools)
async def create_mcp_server(body: McpServerCreate, mesh: Mesh) -> McpServerWithTools:
    """Registers a server: connects, lists its tools and stores them (503 if it cannot be reached)."""
    server = mcp_pb2.McpServer(name=body.name, tool_prefix=body.tool_prefix)
    if body.transport == "stdio":
        server.stdio.CopyFrom(
            mcp_pb2.StdioTransport(command=body.command, args=body.args, env=body.env, cwd=body.cwd)
        )
    else:
        server.streamable_http.CopyFrom(mcp_pb2.StreamableHttpTransport(url=body.url, headers=body.headers))
    created = await mesh.mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=server))
    return _with_tools(created.server, [tool_out(t) for t in created.tools])


@router.get("", response_model=list[McpServer])
async def list_mcp_servers(
    mesh: Mesh, response: Response, limit: Annotated[int, Query(ge=1, le=1000)] = 50, page_token: str = ""
) -> list[McpServer]:
    """Lists servers by name; the `X-Next-Page-Token` header continues the listing."""
    page = await mesh.mcp.ListMcpServers(
        mcp_pb2.ListMcpServersRequest(page_size=limit, page_token=page_token)
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [server_out(s) for s in page.servers]


@router.get("/{mcp_server_id}", response_model=McpServer)
async def get_mcp_server(mcp_server_id: str, mesh: Mesh) -> McpServer:
    """Returns one server."""
    found = await mesh.mcp.GetMcpServer(mcp_pb2.GetMcpServerRequest(mcp_server_id=mcp_server_id))
    return server_out(found.server)


@router.delete("/{mcp_server_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_mcp_server(mcp_server_id: str, mesh: Mesh) -> Response:
    """Deletes a server and its tools."""
    await mesh.mcp.DeleteMcpServer(mcp_pb2.DeleteMcpServerRequest(mcp_server_id=mcp_server_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{mcp_server_id}/refresh", response_model=McpServerWithTools)
async def refresh_mcp_server(mcp_server_id: str, mesh: Mesh) -> McpServerWithTools:
    """Lists the server's tools again (ids of unchanged tools are kept)."""
    refreshed = await mesh.mcp.RefreshMcpServer(mcp_pb2.RefreshMcpServerRequest(mcp_server_id=mcp_server_id))
    return _with_tools(refreshed.server, [tool_out(t) for t in refreshed.tools])


@router.get("/{mcp_server_id}/tools", response_model=list[Tool])
async def list_mcp_server_tools(mcp_server_id: str, mesh: Mesh) -> list[Tool]:
    """Lists the server's tools."""
    await mesh.mcp.GetMcpServer(mcp_pb2.GetMcpServerRequest(mcp_server_id=mcp_server_id))
    page = await mesh.tools.ListTools(tool_pb2.ListToolsRequest(mcp_server_id=mcp_server_id, page_size=1000))
    return [tool_out(t) for t in page.tools]
