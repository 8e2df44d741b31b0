"""/v1/tools: custom and MCP tools; /v1/agents/{id}/tools…: an agent's tools and their environment."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from google.protobuf import field_mask_pb2

from mnemo.agent.v1 import agent_pb2
from mnemo.common.v1 import message_pb2
from mnemo.rest.agents import Agent
from mnemo.rest.tools import (
    Tool,
    ToolCreate,
    ToolEnvironment,
    ToolEnvironmentUpdate,
    ToolRun,
    ToolRunResult,
    ToolType,
    ToolUpdate,
)
from mnemo.tools.v1 import tool_pb2
from mnemo_core.proto_enums import EnumNames
from mnemo_core.wire import field_time
from mnemo_gateway import convert
from mnemo_gateway.backends import Backends, acting_actor, backends

router = APIRouter(prefix="/v1/tools", tags=["tools"], dependencies=[Depends(acting_actor)])
agent_tools_router = APIRouter(
    prefix="/v1/agents", tags=["agent tools"], dependencies=[Depends(acting_actor)]
)
Mesh = Annotated[Backends, Depends(backends)]

TOOL_TYPES = EnumNames(tool_pb2.ToolType)


def tool_out(tool: tool_pb2.Tool) -> Tool:
    """The REST form of a tool."""
    return Tool(
        id=tool.id,
        name=tool.name,
        description=tool.description,
        tool_type=TOOL_TYPES.name(tool.tool_type) or "unknown",
        json_schema=json.loads(tool.json_schema or "{}"),
        source_code=tool.source_code,
        tags=list(tool.tags),
        return_char_limit=tool.return_char_limit,
        pip_requirements=list(tool.pip_requirements),
        timeout_seconds=tool.timeout_seconds,
        mcp_server_id=tool.mcp_server_id or None,
        mcp_tool_name=tool.mcp_tool_name or None,
        created_at=field_time(tool, "create_time"),
        updated_at=field_time(tool, "update_time"),
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Tool)
async def create_tool(body: ToolCreate, mesh: Mesh, validate_only: bool = False) -> Tool:
    """Creates a custom tool; its name, description and schema come from the function."""
    response = await mesh.tools.CreateTool(
        tool_pb2.CreateToolRequest(
            tool=tool_pb2.Tool(
                source_code=body.source_code,
                tags=body.tags,
                return_char_limit=body.return_char_limit,
                pip_requirements=body.pip_requirements,
                timeout_seconds=body.timeout_seconds,
            ),
            validate_only=validate_only,
        )
    )
    return tool_out(response.tool)


@router.get("", response_model=list[Tool])
async def list_tools(
    mesh: Mesh,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    page_token: str = "",
    tool_type: ToolType | None = None,
    name: Annotated[list[str] | None, Query()] = None,
    tags: Annotated[list[str] | None, Query()] = None,
    mcp_server_id: str = "",
) -> list[Tool]:
    """Lists tools by name; the `X-Next-Page-Token` header continues the listing."""
    page = await mesh.tools.ListTools(
        tool_pb2.ListToolsRequest(
            page_size=limit,
            page_token=page_token,
            tool_type=TOOL_TYPES.value(tool_type or ""),
            names=name or [],
            tags=tags or [],
            mcp_server_id=mcp_server_id,
        )
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [tool_out(tool) for tool in page.tools]


@router.get("/{tool_id}", response_model=Tool)
async def get_tool(tool_id: str, mesh: Mesh) -> Tool:
    """Returns one tool."""
    return tool_out((await mesh.tools.GetTool(tool_pb2.GetToolRequest(tool_id=tool_id))).tool)


@router.patch("/{tool_id}", response_model=Tool)
async def update_tool(tool_id: str, body: ToolUpdate, mesh: Mesh) -> Tool:
    """Changes the given fields of a tool (a new source re-derives its name and schema)."""
    fields = body.model_dump(exclude_unset=True)
    tool = tool_pb2.Tool(id=tool_id)
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, list):
            getattr(tool, key).extend(value)
        else:
            setattr(tool, key, value)
    response = await mesh.tools.UpdateTool(
        tool_pb2.UpdateToolRequest(
            tool=tool,
            update_mask=field_mask_pb2.FieldMask(paths=[k for k, v in fields.items() if v is not None]),
        )
    )
    return tool_out(response.tool)


@router.delete("/{tool_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_tool(tool_id: str, mesh: Mesh) -> Response:
    """Deletes a custom tool."""
    await mesh.tools.DeleteTool(tool_pb2.DeleteToolRequest(tool_id=tool_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{tool_id}/run", response_model=ToolRunResult)
async def run_tool(tool_id: str, body: ToolRun, mesh: Mesh) -> ToolRunResult:
    """Runs a tool directly with the given arguments (custom tools in the sandbox, MCP tools on their server)."""
    result = await mesh.tools.RunTool(
        tool_pb2.RunToolRequest(
            tool_id=tool_id, arguments_json=json.dumps(body.arguments), agent_id=body.agent_id
        )
    )
    return ToolRunResult(
        content=result.content,
        status="error" if result.status == message_pb2.TOOL_RETURN_STATUS_ERROR else "success",
        stdout=result.stdout,
        stderr=result.stderr,
        duration_seconds=result.duration_seconds,
    )


@agent_tools_router.get("/{agent_id}/tools", response_model=list[Tool])
async def list_agent_tools(agent_id: str, mesh: Mesh) -> list[Tool]:
    """Lists the tools the agent may call."""
    agent = await mesh.agent(agent_id)
    if not agent.tool_ids:
        return []
    found = await mesh.tools.BatchGetTools(tool_pb2.BatchGetToolsRequest(tool_ids=list(agent.tool_ids)))
    return [tool_out(tool) for tool in found.tools]


@agent_tools_router.patch("/{agent_id}/tools/attach/{tool_id}", response_model=Agent)
async def attach_tool(agent_id: str, tool_id: str, mesh: Mesh) -> Agent:
    """Gives the agent a tool; attaching an attached tool changes nothing."""
    response = await mesh.agents.AttachTool(agent_pb2.AttachToolRequest(agent_id=agent_id, tool_id=tool_id))
    return convert.agent_out(response.agent)


@agent_tools_router.patch("/{agent_id}/tools/detach/{tool_id}", response_model=Agent)
async def detach_tool(agent_id: str, tool_id: str, mesh: Mesh) -> Agent:
    """Takes a tool away from the agent (also one that was deleted meanwhile)."""
    response = await mesh.agents.DetachTool(agent_pb2.DetachToolRequest(agent_id=agent_id, tool_id=tool_id))
    return convert.agent_out(response.agent)


@agent_tools_router.get("/{agent_id}/tool-environment", response_model=ToolEnvironment)
async def get_tool_environment(agent_id: str, mesh: Mesh) -> ToolEnvironment:
    """Names of the environment variables the agent's custom tools see."""
    await mesh.agent(agent_id)
    found = await mesh.tools.GetToolEnvironment(tool_pb2.GetToolEnvironmentRequest(agent_id=agent_id))
    return ToolEnvironment(names=list(found.names))


@agent_tools_router.patch("/{agent_id}/tool-environment", response_model=ToolEnvironment)
async def update_tool_environment(agent_id: str, body: ToolEnvironmentUpdate, mesh: Mesh) -> ToolEnvironment:
    """Sets and removes the agent's tool environment variables (for secrets); returns the names only."""
    await mesh.agent(agent_id)
    updated = await mesh.tools.UpdateToolEnvironment(
        tool_pb2.UpdateToolEnvironmentRequest(agent_id=agent_id, set=body.set, unset=body.unset)
    )
    return ToolEnvironment(names=list(updated.names))
