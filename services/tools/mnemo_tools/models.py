"""The tools service's tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mnemo_core.db import Base, UtcDateTime

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
