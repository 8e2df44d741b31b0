"""/v1/mcp-servers: MCP servers whose tools agents may call."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from mnemo.rest.common import RequestBody
from mnemo.rest.tools import Tool


class McpServerCreate(RequestBody):
    """An MCP server to register: a stdio command, or a streamable HTTP URL."""

    name: str
    transport: Literal["stdio", "streamable_http"]
    command: str = Field(default="", description="stdio: the executable to start.")
    args: list[str] = Field(default_factory=list, description="stdio: its arguments.")
    env: dict[str, str] = Field(
        default_factory=dict, description="stdio: extra environment (never returned)."
    )
    cwd: str = ""
    url: str = Field(default="", description="streamable_http: the endpoint, e.g. https://host/mcp.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="streamable_http: extra headers (never returned)."
    )
    tool_prefix: str = Field(default="", description="Put in front of the server's tool names.")


class McpServer(BaseModel):
    """A registered MCP server; secrets are shown by name only."""

    id: str
    name: str
    transport: str
    command: str | None
    args: list[str]
    env_names: list[str]
    cwd: str | None
    url: str | None
    header_names: list[str]
    tool_prefix: str
    tool_count: int
    created_at: datetime | None
    refreshed_at: datetime | None


class McpServerWithTools(McpServer):
    """A server and its tools."""

    tools: list[Tool]
