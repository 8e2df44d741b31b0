"""The tools service's tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mnemo_core.db import Base, UtcDateTime
from mnemo_core.sealing import SealedJson, SealedText

# org_id of built-in tools, which every organization sees.
BUILTIN_ORG = ""


class ToolsBase(Base):
    """Declarative base of the tools schema."""

    __abstract__ = True


class ToolRow(ToolsBase):
    """A registered tool."""

    __tablename__ = "tools"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    json_schema: Mapped[str] = mapped_column(Text)
    tool_type: Mapped[str] = mapped_column(String(16))
    source_code: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    return_char_limit: Mapped[int] = mapped_column(Integer)
    mcp_server_id: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    pip_requirements: Mapped[list[str]] = mapped_column(JSON, default=list)
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=0)
    # Whether a custom tool's function is `async def` (derived from its source).
    is_async: Mapped[bool] = mapped_column(Boolean, default=False)
    # The tool's own name on its MCP server (the stored name may carry the server's prefix).
    mcp_tool_name: Mapped[str] = mapped_column(String(256), default="")


class ToolTagRow(ToolsBase):
    """One tag of a tool, for portable tag filters."""

    __tablename__ = "tool_tags"

    tool_id: Mapped[str] = mapped_column(ForeignKey("tools.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(200), primary_key=True)


class ToolEnvRow(ToolsBase):
    """An environment variable an agent's custom tools see (typically a secret)."""

    __tablename__ = "tool_env"

    org_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(SealedText)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class McpServerRow(ToolsBase):
    """A registered MCP server; `secrets` holds its env (stdio) or headers (HTTP), never returned."""

    __tablename__ = "mcp_servers"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    transport: Mapped[str] = mapped_column(String(32))
    command: Mapped[str] = mapped_column(Text, default="")
    args: Mapped[list[str]] = mapped_column(JSON, default=list)
    cwd: Mapped[str] = mapped_column(Text, default="")
    url: Mapped[str] = mapped_column(Text, default="")
    secrets: Mapped[dict[str, Any]] = mapped_column(SealedJson, default=dict)
    tool_prefix: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    refreshed_at: Mapped[datetime] = mapped_column(UtcDateTime)
