"""The tool registry: built-ins (shared by all organizations) and each organization's own tools."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

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
from mnemo_tools.models import BUILTIN_ORG
from mnemo_tools.source_analysis import ToolDefinition, analyze_source
from mnemo_tools.store import Tool, ToolQueries

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


def _check_name_free(conn: Connection, org_id: str, name: str, tool_id: str = "") -> None:
    if any(tool.name == name for tool in BUILTIN_TOOLS):
        raise AlreadyExists(
            f"'{name}' is the name of a built-in tool; rename the function",
            reason="TOOL_NAME_TAKEN",
            metadata={"name": name},
        )
    taken = ToolQueries.named(conn, org_id, name, other_than=tool_id)
    if taken is not None:
        raise AlreadyExists(
            f"a tool named '{name}' exists ({taken})",
            reason="TOOL_NAME_TAKEN",
            metadata={"name": name, "tool_id": taken},
        )


class Registry:
    """Reads and writes tools; every read sees the caller's organization plus the built-ins."""

    def __init__(self, db: Database, *, default_return_char_limit: int, max_timeout_seconds: float) -> None:
        self._db = db
        self.default_limit = default_return_char_limit
        self._max_timeout = max_timeout_seconds

    async def install_builtins(self) -> None:
        """Writes the built-in tool definitions, replacing older versions of them."""
        now = utcnow()
        tools = [
            Tool(
                id=tool.id,
                org_id=BUILTIN_ORG,
                name=tool.name,
                description=tool.description,
                json_schema=tool.json_schema,
                tool_type=TOOL_TYPES.name(tool.tool_type),
                created_at=now,
                updated_at=now,
                tags=["builtin", TOOL_TYPES.name(tool.tool_type)],
                return_char_limit=self.default_limit,
            )
            for tool in BUILTIN_TOOLS
        ]

        def tx(conn: Connection) -> None:
            for tool in tools:
                ToolQueries.upsert(conn, tool)

        await self._db.write(tx)

    async def get(self, org_id: str, tool_id: str) -> Tool:
        """One tool visible to the organization."""
        require_id(tool_id, "tool_id")
        return (await self.batch_get(org_id, [tool_id]))[0]

    async def batch_get(self, org_id: str, tool_ids: Sequence[str]) -> list[Tool]:
        """Several tools, in the order asked; NOT_FOUND names the ids that are missing."""
        if len(tool_ids) > MAX_BATCH:
            raise invalid("tool_ids", f"at most {MAX_BATCH} ids")
        if not tool_ids:
            return []
        by_id = await self._db.read(ToolQueries.by_ids, org_id, tool_ids)
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
    ) -> tuple[list[Tool], str]:
        """Tools by name; returns (page, next token)."""
        limit = page_size(size)
        position = decode_token(token, "tools")
        tools = await self._db.read(
            lambda conn: ToolQueries.page(
                conn,
                org_id,
                tool_type=tool_type,
                names=names,
                tags=tags,
                mcp_server_id=mcp_server_id,
                after_name=None if position is None else position.text("n"),
                limit=limit + 1,
            )
        )
        next_token = encode_token("tools", n=tools[limit - 1].name) if len(tools) > limit else ""
        return tools[:limit], next_token

    def _limits(self, values: dict[str, Any]) -> None:
        if "return_char_limit" in values and not 0 <= values["return_char_limit"] <= MAX_RETURN_CHAR_LIMIT:
            raise invalid(
                "tool.return_char_limit", f"must be between 0 (server default) and {MAX_RETURN_CHAR_LIMIT}"
            )
        if "timeout_seconds" in values and not 0 <= values["timeout_seconds"] <= self._max_timeout:
            raise invalid(
                "tool.timeout_seconds", f"must be between 0 (server default) and {self._max_timeout:g}"
            )

    async def create(self, org_id: str, spec: ToolSpec, *, validate_only: bool = False) -> Tool:
        """Creates a custom tool from source (or, with validate_only, returns it unsaved)."""
        definition = analyze_source(spec.source_code, "tool.source_code")
        tags = check_tags(spec.tags)
        requirements = check_requirements(spec.pip_requirements, "tool.pip_requirements")
        self._limits({"return_char_limit": spec.return_char_limit, "timeout_seconds": spec.timeout_seconds})
        now = utcnow()
        tool = Tool(
            id=new_id("tool"),
            org_id=org_id,
            tool_type="custom",
            source_code=spec.source_code,
            tags=tags,
            return_char_limit=spec.return_char_limit or self.default_limit,
            pip_requirements=requirements,
            timeout_seconds=spec.timeout_seconds,
            created_at=now,
            updated_at=now,
            **_defined(definition),
        )
        if validate_only:
            await self._db.read(_check_name_free, org_id, tool.name)
            return tool

        def tx(conn: Connection) -> None:
            _check_name_free(conn, org_id, tool.name)
            ToolQueries.insert(conn, tool)

        try:
            await self._db.write(tx)
        except IntegrityError:
            raise AlreadyExists(f"a tool named '{tool.name}' exists", reason="TOOL_NAME_TAKEN") from None
        return tool

    async def update(self, org_id: str, tool_id: str, changes: dict[str, Any]) -> Tool:
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

        def tx(conn: Connection) -> Tool:
            stored = ToolQueries.for_update(conn, org_id, tool_id)
            if stored is None:
                raise not_found(tool_id)
            values = dict(changes, updated_at=utcnow())
            if definition is not None:
                _check_name_free(conn, org_id, definition.name, tool_id)
                values.update(_defined(definition))
            changed = dataclasses.replace(stored, **values)
            ToolQueries.save(conn, changed)
            return changed

        try:
            return await self._db.write(tx)
        except IntegrityError:
            raise AlreadyExists("a tool with that name exists", reason="TOOL_NAME_TAKEN") from None

    async def delete(self, org_id: str, tool_id: str) -> None:
        """Deletes a custom tool (MCP tools go with their server; built-ins stay)."""
        tool = await self.get(org_id, tool_id)
        if tool.org_id == BUILTIN_ORG:
            raise PermissionDenied("built-in tools cannot be deleted", reason="BUILTIN_TOOL_READ_ONLY")
        if tool.tool_type == "mcp":
            raise FailedPrecondition(
                f"'{tool.name}' belongs to MCP server {tool.mcp_server_id}; delete or refresh the server instead",
                reason="MCP_TOOL_MANAGED_BY_SERVER",
            )
        await self._db.write(ToolQueries.delete, org_id, [tool_id])


def _defined(definition: ToolDefinition) -> dict[str, Any]:
    """The fields of a tool that come from its source."""
    return {
        "name": definition.name,
        "description": definition.description,
        "json_schema": json.dumps(definition.parameters, separators=(",", ":")),
        "is_async": definition.is_async,
    }
