"""ToolService: proto <-> the registry, the executor and agents' tool environments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mnemo.common.v1 import message_pb2
from mnemo.tools.v1 import tool_pb2, tool_pb2_grpc
from mnemo_core.actor import current_actor
from mnemo_core.validation import masked_changes
from mnemo_core.wire import to_timestamp
from mnemo_tools.agent_env import AgentEnvironments
from mnemo_tools.execution import ToolExecutor
from mnemo_tools.registry import TOOL_TYPES, Registry, ToolSpec
from mnemo_tools.store import Tool

Context = Any


def tool_to_proto(tool: Tool) -> tool_pb2.Tool:
    """The wire form of a tool."""
    return tool_pb2.Tool(
        id=tool.id,
        name=tool.name,
        description=tool.description,
        json_schema=tool.json_schema,
        tool_type=TOOL_TYPES.value(tool.tool_type),
        source_code=tool.source_code,
        tags=tool.tags,
        return_char_limit=tool.return_char_limit,
        mcp_server_id=tool.mcp_server_id,
        create_time=to_timestamp(tool.created_at),
        update_time=to_timestamp(tool.updated_at),
        pip_requirements=tool.pip_requirements,
        timeout_seconds=tool.timeout_seconds,
        mcp_tool_name=tool.mcp_tool_name,
    )


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
        tool = await self._registry.get(current_actor().org_id, request.tool_id)
        return tool_pb2.GetToolResponse(tool=tool_to_proto(tool))

    async def BatchGetTools(
        self, request: tool_pb2.BatchGetToolsRequest, context: Context
    ) -> tool_pb2.BatchGetToolsResponse:
        tools = await self._registry.batch_get(current_actor().org_id, list(request.tool_ids))
        return tool_pb2.BatchGetToolsResponse(tools=[tool_to_proto(tool) for tool in tools])

    async def ListTools(
        self, request: tool_pb2.ListToolsRequest, context: Context
    ) -> tool_pb2.ListToolsResponse:
        tools, token = await self._registry.list(
            current_actor().org_id,
            tool_type=TOOL_TYPES.name(request.tool_type),
            names=list(request.names),
            tags=list(request.tags),
            mcp_server_id=request.mcp_server_id,
            size=request.page_size,
            token=request.page_token,
        )
        return tool_pb2.ListToolsResponse(
            tools=[tool_to_proto(tool) for tool in tools], next_page_token=token
        )

    async def RunTool(self, request: tool_pb2.RunToolRequest, context: Context) -> tool_pb2.RunToolResponse:
        result = await self._executor.run(
            current_actor(), request.tool_id, request.arguments_json, request.agent_id, request.run_id
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
        created = await self._registry.create(
            current_actor().org_id, spec, validate_only=request.validate_only
        )
        return tool_pb2.CreateToolResponse(tool=tool_to_proto(created))

    async def UpdateTool(
        self, request: tool_pb2.UpdateToolRequest, context: Context
    ) -> tool_pb2.UpdateToolResponse:
        changes = masked_changes(request.update_mask.paths, request.tool, _MASK_FIELDS)
        updated = await self._registry.update(current_actor().org_id, request.tool.id, changes)
        return tool_pb2.UpdateToolResponse(tool=tool_to_proto(updated))

    async def DeleteTool(
        self, request: tool_pb2.DeleteToolRequest, context: Context
    ) -> tool_pb2.DeleteToolResponse:
        await self._registry.delete(current_actor().org_id, request.tool_id)
        return tool_pb2.DeleteToolResponse()

    async def UpdateToolEnvironment(
        self, request: tool_pb2.UpdateToolEnvironmentRequest, context: Context
    ) -> tool_pb2.UpdateToolEnvironmentResponse:
        names = await self._environments.update(
            current_actor(), request.agent_id, dict(request.set), list(request.unset)
        )
        return tool_pb2.UpdateToolEnvironmentResponse(names=names)

    async def GetToolEnvironment(
        self, request: tool_pb2.GetToolEnvironmentRequest, context: Context
    ) -> tool_pb2.GetToolEnvironmentResponse:
        names = await self._environments.names(current_actor().org_id, request.agent_id)
        return tool_pb2.GetToolEnvironmentResponse(names=names)
