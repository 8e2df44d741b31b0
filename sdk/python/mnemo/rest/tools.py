"""/v1/tools and an agent's tools: custom and MCP tools, direct runs, tool environments."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from mnemo.rest.common import MAX_INT32, RequestBody

ToolType = Literal["memory", "custom", "mcp", "control"]


class Tool(BaseModel):
    """A function the model may call."""

    id: str
    name: str
    description: str
    tool_type: str
    json_schema: dict[str, Any] = Field(
        description="Parameters (JSON Schema, OpenAI function-calling format)."
    )
    source_code: str
    tags: list[str]
    return_char_limit: int
    pip_requirements: list[str]
    timeout_seconds: int
    mcp_server_id: str | None
    mcp_tool_name: str | None
    created_at: datetime | None
    updated_at: datetime | None


class ToolCreate(RequestBody):
    """A custom tool: one Python function with type hints and a Google-style docstring."""

    source_code: str = Field(description="Python source defining exactly one public function.")
    tags: list[str] = Field(default_factory=list)
    return_char_limit: int = Field(default=0, ge=0, le=MAX_INT32, description="0 = the server default.")
    pip_requirements: list[str] = Field(
        default_factory=list, description="e.g. ['humanize==4.9.0'] (wheels only)."
    )
    timeout_seconds: int = Field(default=0, ge=0, le=MAX_INT32, description="0 = the server default.")


class ToolUpdate(RequestBody):
    """Fields of a tool to change; fields left out stay as they are."""

    source_code: str | None = None
    tags: list[str] | None = None
    return_char_limit: int | None = Field(default=None, ge=0, le=MAX_INT32)
    pip_requirements: list[str] | None = None
    timeout_seconds: int | None = Field(default=None, ge=0, le=MAX_INT32)


class ToolRun(RequestBody):
    """A direct run of a tool, for testing it."""

    arguments: dict[str, Any] = Field(default_factory=dict)
    agent_id: str = Field(
        default="",
        description="Run on behalf of this agent: its tool environment variables reach the run only for "
        "an admin's key and a tool attached to the agent.",
    )


class ToolRunResult(BaseModel):
    """The result of a run; a failing tool is status 'error', not an HTTP error."""

    content: str
    status: Literal["success", "error"]
    stdout: str
    stderr: str
    duration_seconds: float


class ToolEnvironmentUpdate(RequestBody):
    """Variables to set (name -> value) and names to remove."""

    set: dict[str, str] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list)


class ToolEnvironment(BaseModel):
    """Names of an agent's tool environment variables (values are never returned)."""

    names: list[str]
