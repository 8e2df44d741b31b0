"""gRPC servicers of the tools service: proto <-> domain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mnemo.common.v1 import message_pb2
from mnemo.tools.v1 import mcp_pb2, mcp_pb2_grpc, tool_pb2, tool_pb2_grpc
from mnemo_core.actor import current_actor
from mnemo_core.validation import invalid, masked_changes
from mnemo_core.wire import to_timestamp
from mnemo_tools.agent_env import AgentEnvironments
from mnemo_tools.execution import ToolExecutor
from mnemo_tools.mcp_servers import McpServers, McpServerSpec, McpServerView
from mnemo_tools.models import ToolRow
from mnemo_tools.registry import TOOL_TYPES, Registry, ToolSpec

Context = Any


def tool_to_proto(row: ToolRow) -> tool_pb2.Tool:
    """The wire form of a tool."""
    return tool_pb2.Tool(
        id=row.id,
        name=row.name,
        description=row.description,
        json_schema=row.json_schema,
        tool_type=TOOL_TYPES.value(row.tool_type),
        source_code=row.source_code,
        tags=list(row.tags or []),
        return_char_limit=row.return_char_limit,
        mcp_server_id=row.mcp_server_id,
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
        pip_requirements=list(row.pip_requirements or []),
        timeout_seconds=row.timeout_seconds or 0,
        mcp_tool_name=row.mcp_tool_name or "",
    )


def server_to_proto(view: McpServerView) -> mcp_pb2.McpServer:
    """The wire form of an MCP server; secrets appear by name only."""
    row = view.row
    names = sorted(row.secrets or {})
    server = mcp_pb2.McpServer(
        id=row.id,
        name=row.name,
        tool_prefix=row.tool_prefix,
        tool_count=view.tool_count,
        create_time=to_timestamp(row.created_at),
        refresh_time=to_timestamp(row.refreshed_at),
    )
    if row.transport == "stdio":
        server.stdio.CopyFrom(
            mcp_pb2.StdioTransport(
                command=row.command, args=list(row.args or []), env_names=names, cwd=row.cwd
            )
        )
    else:
        server.streamable_http.CopyFrom(mcp_pb2.StreamableHttpTransport(url=row.url, header_names=names))
    return server


_MASK_FIELDS: dict[str, Callable[[tool_pb2.Tool], Any]] = {
    "source_code": lambda t: t.source_code,
    "tags": lambda t: list(t.tags),
    "return_char_limit": lambda t: t.return_char_limit,
    "pip_requirements": lambda t: list(t.pip_requirements),
    "timeout_seconds": lambda t: t.timeout_seconds,
}


class ToolServicer(tool_pb2_grpc.ToolServiceServicer):
    """ToolService over the Registry, the executor and agents' environments."""

    def __init__(self, registry: Registry, executor: ToolExecutor, environments: AgentEnvironments) -> None:
        self._registry = registry
        self._executor = executor
        self._environments = environments

    async def GetTool(self, request: tool_pb2.GetToolRequest, context: Context) -> tool_pb2.GetToolResponse:
        row = await self._registry.get(current_actor().org_id, request.tool_id)
        return tool_pb2.GetToolResponse(tool=tool_to_proto(row))

    async def BatchGetTools(
        self, request: tool_pb2.BatchGetToolsRequest, context: Context
    ) -> tool_pb2.BatchGetToolsResponse:
        rows = await self._registry.batch_get(current_actor().org_id, list(request.tool_ids))
        return tool_pb2.BatchGetToolsResponse(tools=[tool_to_proto(row) for row in rows])

    async def ListTools(
        self, request: tool_pb2.ListToolsRequest, context: Context
    ) -> tool_pb2.ListToolsResponse:
        rows, token = await self._registry.list(
            current_actor().org_id,
            tool_type=TOOL_TYPES.name(request.tool_type),
            names=list(request.names),
            tags=list(request.tags),
            mcp_server_id=request.mcp_server_id,
            size=request.page_size,
            token=request.page_token,
        )
        return tool_pb2.ListToolsResponse(tools=[tool_to_proto(row) for row in rows], next_page_token=token)

    async def RunTool(self, request: tool_pb2.RunToolRequest, context: Context) -> tool_pb2.RunToolResponse:
        result = await self._executor.run(
            current_actor().org_id, request.tool_id, request.arguments_json, request.agent_id
        )
        return tool_pb2.RunToolResponse(
            content=result.content,
            status=message_pb2.TOOL_RETURN_STATUS_SUCCESS
            if result.ok
            else message_pb2.TOOL_RETURN_STATUS_ERROR,
            stdout=result.stdout,
            stderr=result.stderr,
            duration_seconds=result.duration_seconds,
        )

    async def CreateTool(
        self, request: tool_pb2.CreateToolRequest, context: Context
    ) -> tool_pb2.CreateToolResponse:
        tool = request.tool
        spec = ToolSpec(
            source_code=tool.source_code,
            tags=list(tool.tags),
            return_char_limit=tool.return_char_limit,
            pip_requirements=list(tool.pip_requirements),
            timeout_seconds=tool.timeout_seconds,
        )
        row = await self._registry.create(current_actor().org_id, spec, validate_only=request.validate_only)
        return tool_pb2.CreateToolResponse(tool=tool_to_proto(row))

    async def UpdateTool(
        self, request: tool_pb2.UpdateToolRequest, context: Context
    ) -> tool_pb2.UpdateToolResponse:
        changes = masked_changes(request.update_mask.paths, request.tool, _MASK_FIELDS)
        row = await self._registry.update(current_actor().org_id, request.tool.id, changes)
        return tool_pb2.UpdateToolResponse(tool=tool_to_proto(row))

    async def DeleteTool(
        self, request: tool_pb2.DeleteToolRequest, context: Context
    ) -> tool_pb2.DeleteToolResponse:
        await self._registry.delete(current_actor().org_id, request.tool_id)
        return tool_pb2.DeleteToolResponse()

    async def UpdateToolEnvironment(
        self, request: tool_pb2.UpdateToolEnvironmentRequest, context: Context
    ) -> tool_pb2.UpdateToolEnvironmentResponse:
        names = await self._environments.update(
            current_actor().org_id, request.agent_id, dict(request.set), list(request.unset)
        )
        return tool_pb2.UpdateToolEnvironmentResponse(names=names)

    async def GetToolEnvironment(
        self, request: tool_pb2.GetToolEnvironmentRequest, context: Context
    ) -> tool_pb2.GetToolEnvironmentResponse:
        names = await self._environments.names(current_actor().org_id, request.agent_id)
        return tool_pb2.GetToolEnvironmentResponse(names=names)


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
        view, tools = await self._servers.create(current_actor().org_id, spec)
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
        await self._servers.delete(current_actor().org_id, request.mcp_server_id)
        return mcp_pb2.DeleteMcpServerResponse()

    async def RefreshMcpServer(
        self, request: mcp_pb2.RefreshMcpServerRequest, context: Context
    ) -> mcp_pb2.RefreshMcpServerResponse:
        view, tools = await self._servers.refresh(current_actor().org_id, request.mcp_server_id)
        return mcp_pb2.RefreshMcpServerResponse(
            server=server_to_proto(view), tools=[tool_to_proto(t) for t in tools]
        )
