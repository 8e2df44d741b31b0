"""The tool registry: built-ins (shared by all organizations) and each organization's own tools."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from mnemo.tools.v1 import tool_pb2
from mnemo_core.db import Database
from mnemo_core.errors import NotFound
from mnemo_core.ids import require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.validation import invalid
from mnemo_core.wire import utcnow
from mnemo_tools.builtin import BUILTIN_TOOLS
from mnemo_tools.models import BUILTIN_ORG, ToolRow

TOOL_TYPE_NAMES = {
    tool_pb2.TOOL_TYPE_MEMORY: "memory",
    tool_pb2.TOOL_TYPE_CUSTOM: "custom",
    tool_pb2.TOOL_TYPE_MCP: "mcp",
    tool_pb2.TOOL_TYPE_CONTROL: "control",
}
TOOL_TYPES = {name: value for value, name in TOOL_TYPE_NAMES.items()}
MAX_BATCH = 1000


class Registry:
    """Reads and writes tools; every read sees the caller's organization plus the built-ins."""

    def __init__(self, db: Database, *, default_return_char_limit: int) -> None:
        self._db = db
        self._default_limit = default_return_char_limit

    async def install_builtins(self) -> None:
        """Writes the built-in tool definitions, replacing older versions of them."""
        now = utcnow()
        async with self._db.write() as session:
            for tool in BUILTIN_TOOLS:
                row = await session.get(ToolRow, tool.id)
                if row is None:
                    row = ToolRow(id=tool.id, org_id=BUILTIN_ORG, name=tool.name, created_at=now)
                    session.add(row)
                row.description = tool.description
                row.json_schema = tool.json_schema
                row.tool_type = TOOL_TYPE_NAMES[tool.tool_type]
                row.source_code = ""
                row.tags = ["builtin", "memory"]
                row.return_char_limit = self._default_limit
                row.mcp_server_id = ""
                row.updated_at = now

    async def get(self, org_id: str, tool_id: str) -> ToolRow:
        """One tool visible to the organization."""
        require_id(tool_id, "tool_id")
        return (await self.batch_get(org_id, [tool_id]))[0]

    async def batch_get(self, org_id: str, tool_ids: Sequence[str]) -> list[ToolRow]:
        """Several tools, in the order asked; NOT_FOUND names the ids that are missing."""
        if len(tool_ids) > MAX_BATCH:
            raise invalid("tool_ids", f"at most {MAX_BATCH} ids")
        if not tool_ids:
            return []
        async with self._db.read() as session:
            rows = await session.scalars(
                select(ToolRow).where(ToolRow.id.in_(tool_ids), ToolRow.org_id.in_([org_id, BUILTIN_ORG]))
            )
            by_id = {row.id: row for row in rows}
        missing = [tool_id for tool_id in tool_ids if tool_id not in by_id]
        if missing:
            raise NotFound(
                f"tool(s) not found: {', '.join(missing)}",
                reason="TOOL_NOT_FOUND",
                metadata={"tool_ids": ",".join(missing)},
            )
        return [by_id[tool_id] for tool_id in tool_ids]

    async def list(
        self, org_id: str, *, tool_type: str = "", names: Sequence[str] = (), size: int = 0, token: str = ""
    ) -> tuple[list[ToolRow], str]:
        """Tools by name; returns (page, next token)."""
        limit = page_size(size)
        position = decode_token(token, "tools")
        query = select(ToolRow).where(ToolRow.org_id.in_([org_id, BUILTIN_ORG]))
        if tool_type:
            query = query.where(ToolRow.tool_type == tool_type)
        if names:
            query = query.where(ToolRow.name.in_(list(names)))
        if position is not None:
            query = query.where(ToolRow.name > position.text("n"))
        async with self._db.read() as session:
            rows = list(await session.scalars(query.order_by(ToolRow.name).limit(limit + 1)))
        next_token = encode_token("tools", n=rows[limit - 1].name) if len(rows) > limit else ""
        return rows[:limit], next_token
