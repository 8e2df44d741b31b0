"""gRPC servicer of the tools service: proto <-> registry."""

from __future__ import annotations

from typing import Any

from mnemo.tools.v1 import tool_pb2, tool_pb2_grpc
from mnemo_core.actor import current_actor
from mnemo_core.errors import FailedPrecondition, Unimplemented
from mnemo_core.wire import to_timestamp
from mnemo_tools.models import ToolRow
from mnemo_tools.registry import TOOL_TYPE_NAMES, TOOL_TYPES, Registry

Context = Any


def tool_to_proto(row: ToolRow) -> tool_pb2.Tool:
    """The wire form of a tool."""
    return tool_pb2.Tool(
        id=row.id,
        name=row.name,
        description=row.description,
        json_schema=row.json_schema,
        tool_type=TOOL_TYPES.get(row.tool_type, tool_pb2.TOOL_TYPE_UNSPECIFIED),
        source_code=row.source_code,
        tags=list(row.tags or []),
        return_char_limit=row.return_char_limit,
        mcp_server_id=row.mcp_server_id,
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
    )


class ToolServicer(tool_pb2_grpc.ToolServiceServicer):
    """ToolService over the Registry."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

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
            tool_type=TOOL_TYPE_NAMES.get(request.tool_type, ""),
            names=list(request.names),
            size=request.page_size,
            token=request.page_token,
        )
        return tool_pb2.ListToolsResponse(tools=[tool_to_proto(row) for row in rows], next_page_token=token)

    async def RunTool(self, request: tool_pb2.RunToolRequest, context: Context) -> tool_pb2.RunToolResponse:
        row = await self._registry.get(current_actor().org_id, request.tool_id)
        if row.tool_type == "memory":
            raise FailedPrecondition(
                f"'{row.name}' is a memory tool; the agent runs it against the memory service",
                reason="TOOL_NOT_RUNNABLE_HERE",
            )
        raise Unimplemented(
            f"this server cannot run {row.tool_type} tools yet", reason="TOOL_EXECUTION_UNAVAILABLE"
        )
