"""The tool registry: built-ins (shared by all organizations) and each organization's own tools."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mnemo.tools.v1 import tool_pb2
from mnemo_core.db import Database
from mnemo_core.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.proto_enums import EnumNames
from mnemo_core.validation import invalid
from mnemo_core.wire import utcnow
from mnemo_tools.builtin import BUILTIN_TOOLS
from mnemo_tools.environments import check_requirements
from mnemo_tools.models import BUILTIN_ORG, ToolRow, ToolTagRow
from mnemo_tools.source_analysis import ToolDefinition, analyze_source

# Tool rows keep their type by its name in the contract ("memory", "custom", ...).
TOOL_TYPES = EnumNames(tool_pb2.ToolType)
MAX_BATCH = 1000
MAX_TAGS = 50
MAX_RETURN_CHAR_LIMIT = 1_000_000
CUSTOM_FIELDS = frozenset({"source_code", "tags", "return_char_limit", "pip_requirements", "timeout_seconds"})
MCP_FIELDS = frozenset({"tags", "return_char_limit"})


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A custom tool as a caller gives it."""

    source_code: str
    tags: list[str] = field(default_factory=list)
    return_char_limit: int = 0
    pip_requirements: list[str] = field(default_factory=list)
    timeout_seconds: int = 0


def check_tags(tags: Sequence[str], field_name: str = "tool.tags") -> list[str]:
    """Tags as stored: at most 50 distinct tags of 1-200 characters."""
    if len(tags) > MAX_TAGS or any(not tag or len(tag) > 200 or "\x00" in tag for tag in tags):
        raise invalid(field_name, f"at most {MAX_TAGS} tags of 1-200 characters")
    return list(dict.fromkeys(tags))


def not_found(tool_id: str) -> NotFound:
    """The error for a tool the caller cannot see."""
    return NotFound(f"tool {tool_id} not found", reason="TOOL_NOT_FOUND", metadata={"tool_ids": tool_id})


def replace_tags(session: AsyncSession, tool_id: str, tags: Sequence[str]) -> None:
    """Queues the tag rows of a tool (after its old ones were deleted or for a new tool)."""
    session.add_all(ToolTagRow(tool_id=tool_id, tag=tag) for tag in set(tags))


class Registry:
    """Reads and writes tools; every read sees the caller's organization plus the built-ins."""

    def __init__(self, db: Database, *, default_return_char_limit: int, max_timeout_seconds: float) -> None:
        self._db = db
        self.default_limit = default_return_char_limit
        self._max_timeout = max_timeout_seconds

    async def install_builtins(self) -> None:
        """Writes the built-in tool definitions, replacing older versions of them."""
        now = utcnow()
        async with self._db.write() as session:
            for tool in BUILTIN_TOOLS:
                row = await session.get(ToolRow, tool.id)
                if row is None:
                    row = ToolRow(id=tool.id, org_id=BUILTIN_ORG, name=tool.name, created_at=now)
                    session.add(row)
                tags = ["builtin", TOOL_TYPES.name(tool.tool_type)]
                row.description = tool.description
                row.json_schema = tool.json_schema
                row.tool_type = TOOL_TYPES.name(tool.tool_type)
                row.source_code = ""
                row.tags = tags
                row.return_char_limit = self.default_limit
                row.mcp_server_id = ""
                row.pip_requirements = []
                row.timeout_seconds = 0
                row.is_async = False
                row.mcp_tool_name = ""
                row.updated_at = now
                await session.flush()
                await session.execute(delete(ToolTagRow).where(ToolTagRow.tool_id == tool.id))
                replace_tags(session, tool.id, tags)

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
        self,
        org_id: str,
        *,
        tool_type: str = "",
        names: Sequence[str] = (),
        tags: Sequence[str] = (),
        mcp_server_id: str = "",
        size: int = 0,
        token: str = "",
    ) -> tuple[list[ToolRow], str]:
        """Tools by name; returns (page, next token)."""
        limit = page_size(size)
        position = decode_token(token, "tools")
        query = select(ToolRow).where(ToolRow.org_id.in_([org_id, BUILTIN_ORG]))
        if tool_type:
            query = query.where(ToolRow.tool_type == tool_type)
        if names:
            query = query.where(ToolRow.name.in_(list(names)))
        if mcp_server_id:
            query = query.where(ToolRow.mcp_server_id == mcp_server_id)
        if tags:
            wanted = set(tags)
            tagged = (
                select(ToolTagRow.tool_id)
                .where(ToolTagRow.tag.in_(wanted))
                .group_by(ToolTagRow.tool_id)
                .having(func.count(ToolTagRow.tag) == len(wanted))
            )
            query = query.where(ToolRow.id.in_(tagged))
        if position is not None:
            query = query.where(ToolRow.name > position.text("n"))
        async with self._db.read() as session:
            rows = list(await session.scalars(query.order_by(ToolRow.name).limit(limit + 1)))
        next_token = encode_token("tools", n=rows[limit - 1].name) if len(rows) > limit else ""
        return rows[:limit], next_token

    def _limits(self, values: dict[str, Any]) -> None:
        if "return_char_limit" in values and not 0 <= values["return_char_limit"] <= MAX_RETURN_CHAR_LIMIT:
            raise invalid(
                "tool.return_char_limit", f"must be between 0 (server default) and {MAX_RETURN_CHAR_LIMIT}"
            )
        if "timeout_seconds" in values and not 0 <= values["timeout_seconds"] <= self._max_timeout:
            raise invalid(
                "tool.timeout_seconds", f"must be between 0 (server default) and {self._max_timeout:g}"
            )

    async def _check_name_free(
        self, session: AsyncSession, org_id: str, name: str, tool_id: str = ""
    ) -> None:
        if any(tool.name == name for tool in BUILTIN_TOOLS):
            raise AlreadyExists(
                f"'{name}' is the name of a built-in tool; rename the function",
                reason="TOOL_NAME_TAKEN",
                metadata={"name": name},
            )
        taken = await session.scalar(
            select(ToolRow.id).where(ToolRow.org_id == org_id, ToolRow.name == name, ToolRow.id != tool_id)
        )
        if taken is not None:
            raise AlreadyExists(
                f"a tool named '{name}' exists ({taken})",
                reason="TOOL_NAME_TAKEN",
                metadata={"name": name, "tool_id": taken},
            )

    async def create(self, org_id: str, spec: ToolSpec, *, validate_only: bool = False) -> ToolRow:
        """Creates a custom tool from source (or, with validate_only, returns it unsaved)."""
        definition = analyze_source(spec.source_code, "tool.source_code")
        tags = check_tags(spec.tags)
        requirements = check_requirements(spec.pip_requirements, "tool.pip_requirements")
        self._limits({"return_char_limit": spec.return_char_limit, "timeout_seconds": spec.timeout_seconds})
        now = utcnow()
        row = ToolRow(
            id=new_id("tool"),
            org_id=org_id,
            tool_type="custom",
            source_code=spec.source_code,
            tags=tags,
            return_char_limit=spec.return_char_limit or self.default_limit,
            mcp_server_id="",
            pip_requirements=requirements,
            timeout_seconds=spec.timeout_seconds,
            mcp_tool_name="",
            created_at=now,
            updated_at=now,
        )
        _apply_definition(row, definition)
        if validate_only:
            async with self._db.read() as session:
                await self._check_name_free(session, org_id, row.name)
            return row
        try:
            async with self._db.write() as session:
                await self._check_name_free(session, org_id, row.name)
                session.add(row)
                await session.flush()
                replace_tags(session, row.id, tags)
        except IntegrityError:
            raise AlreadyExists(f"a tool named '{row.name}' exists", reason="TOOL_NAME_TAKEN") from None
        return row

    async def update(self, org_id: str, tool_id: str, changes: dict[str, Any]) -> ToolRow:
        """Changes the given fields of a custom tool (tags and return limit of an MCP tool)."""
        require_id(tool_id, "tool.id")
        current = await self.get(org_id, tool_id)
        if current.org_id == BUILTIN_ORG:
            raise PermissionDenied("built-in tools cannot be changed", reason="BUILTIN_TOOL_READ_ONLY")
        allowed = CUSTOM_FIELDS if current.tool_type == "custom" else MCP_FIELDS
        unknown = set(changes) - allowed
        if unknown:
            raise invalid(
                "update_mask", f"cannot update {', '.join(sorted(unknown))} of a {current.tool_type} tool"
            )
        self._limits(changes)
        definition = (
            analyze_source(changes["source_code"], "tool.source_code") if "source_code" in changes else None
        )
        if "tags" in changes:
            changes["tags"] = check_tags(changes["tags"])
        if "pip_requirements" in changes:
            changes["pip_requirements"] = check_requirements(
                changes["pip_requirements"], "tool.pip_requirements"
            )
        if changes.get("return_char_limit") == 0:
            changes["return_char_limit"] = self.default_limit
        try:
            async with self._db.write() as session:
                row = await session.get(ToolRow, tool_id, with_for_update=True)
                if row is None or row.org_id != org_id:
                    raise not_found(tool_id)
                if definition is not None:
                    await self._check_name_free(session, org_id, definition.name, tool_id)
                    _apply_definition(row, definition)
                for key, value in changes.items():
                    setattr(row, key, value)
                row.updated_at = utcnow()
                if "tags" in changes:
                    await session.execute(delete(ToolTagRow).where(ToolTagRow.tool_id == tool_id))
                    replace_tags(session, tool_id, changes["tags"])
        except IntegrityError:
            raise AlreadyExists("a tool with that name exists", reason="TOOL_NAME_TAKEN") from None
        return row

    async def delete(self, org_id: str, tool_id: str) -> None:
        """Deletes a custom tool (MCP tools go with their server; built-ins stay)."""
        row = await self.get(org_id, tool_id)
        if row.org_id == BUILTIN_ORG:
            raise PermissionDenied("built-in tools cannot be deleted", reason="BUILTIN_TOOL_READ_ONLY")
        if row.tool_type == "mcp":
            raise FailedPrecondition(
                f"'{row.name}' belongs to MCP server {row.mcp_server_id}; delete or refresh the server instead",
                reason="MCP_TOOL_MANAGED_BY_SERVER",
            )
        async with self._db.write() as session:
            await session.execute(delete(ToolTagRow).where(ToolTagRow.tool_id == tool_id))
            await session.execute(delete(ToolRow).where(ToolRow.id == tool_id, ToolRow.org_id == org_id))


def _apply_definition(row: ToolRow, definition: ToolDefinition) -> None:
    row.name = definition.name
    row.description = definition.description
    row.json_schema = json.dumps(definition.parameters, separators=(",", ":"))
    row.is_async = definition.is_async
