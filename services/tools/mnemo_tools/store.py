"""SQL for tools, MCP servers and agents' tool environments. No business rules here: callers validate, this
reads and writes.

Every function takes a sync SQLAlchemy `Connection` and runs inside one unit of work (`Database.read` or
`write`); rows come back as the dataclasses below, never as ORM entities.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from mnemo_core.db import table_of
from mnemo_tools.models import BUILTIN_ORG, McpServerRow, ToolEnvRow, ToolRow, ToolTagRow

tools_t = table_of(ToolRow)
tags_t = table_of(ToolTagRow)
env_t = table_of(ToolEnvRow)
servers_t = table_of(McpServerRow)


@dataclass(frozen=True, slots=True)
class Tool:
    """A registered tool: built-in (org ""), custom (Python source) or an MCP server's."""

    id: str
    org_id: str
    name: str
    description: str
    json_schema: str
    tool_type: str
    created_at: datetime
    updated_at: datetime
    source_code: str = ""
    tags: list[str] = field(default_factory=list)
    return_char_limit: int = 0
    mcp_server_id: str = ""
    pip_requirements: list[str] = field(default_factory=list)
    timeout_seconds: int = 0
    # Whether a custom tool's function is `async def` (derived from its source).
    is_async: bool = False
    # The tool's own name on its MCP server (the stored name may carry the server's prefix).
    mcp_tool_name: str = ""


@dataclass(frozen=True, slots=True)
class McpServer:
    """A registered MCP server; `secrets` holds its env (stdio) or headers (HTTP), never returned."""

    id: str
    org_id: str
    name: str
    transport: str
    created_at: datetime
    updated_at: datetime
    refreshed_at: datetime
    command: str = ""
    args: list[str] = field(default_factory=list)
    cwd: str = ""
    url: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    tool_prefix: str = ""


def _tool(row: Any) -> Tool:
    return Tool(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        description=row.description,
        json_schema=row.json_schema,
        tool_type=row.tool_type,
        created_at=row.created_at,
        updated_at=row.updated_at,
        source_code=row.source_code or "",
        tags=list(row.tags or []),
        return_char_limit=row.return_char_limit,
        mcp_server_id=row.mcp_server_id or "",
        pip_requirements=list(row.pip_requirements or []),
        timeout_seconds=row.timeout_seconds or 0,
        is_async=bool(row.is_async),
        mcp_tool_name=row.mcp_tool_name or "",
    )


def _server(row: Any) -> McpServer:
    return McpServer(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        transport=row.transport,
        created_at=row.created_at,
        updated_at=row.updated_at,
        refreshed_at=row.refreshed_at,
        command=row.command or "",
        args=list(row.args or []),
        cwd=row.cwd or "",
        url=row.url or "",
        secrets={str(k): str(v) for k, v in (row.secrets or {}).items()},
        tool_prefix=row.tool_prefix or "",
    )


def _visible(org_id: str) -> Any:
    """The organization's tools and the built-ins."""
    return tools_t.c.org_id.in_([org_id, BUILTIN_ORG])


class ToolQueries:
    """Tool reads and writes on one connection."""

    @staticmethod
    def by_ids(conn: Connection, org_id: str, tool_ids: Sequence[str]) -> dict[str, Tool]:
        rows = conn.execute(select(tools_t).where(tools_t.c.id.in_(list(tool_ids)), _visible(org_id)))
        return {row.id: _tool(row) for row in rows}

    @staticmethod
    def page(
        conn: Connection,
        org_id: str,
        *,
        tool_type: str,
        names: Sequence[str],
        tags: Sequence[str],
        mcp_server_id: str,
        after_name: str | None,
        limit: int,
    ) -> list[Tool]:
        query = select(tools_t).where(_visible(org_id))
        if tool_type:
            query = query.where(tools_t.c.tool_type == tool_type)
        if names:
            query = query.where(tools_t.c.name.in_(list(names)))
        if mcp_server_id:
            query = query.where(tools_t.c.mcp_server_id == mcp_server_id)
        if tags:
            wanted = set(tags)
            tagged = (
                select(tags_t.c.tool_id)
                .where(tags_t.c.tag.in_(wanted))
                .group_by(tags_t.c.tool_id)
                .having(func.count(tags_t.c.tag) == len(wanted))
            )
            query = query.where(tools_t.c.id.in_(tagged))
        if after_name is not None:
            query = query.where(tools_t.c.name > after_name)
        return [_tool(row) for row in conn.execute(query.order_by(tools_t.c.name).limit(limit))]

    @staticmethod
    def named(conn: Connection, org_id: str, name: str, *, other_than: str = "") -> str | None:
        """The id of the organization's tool with this name (other than `other_than`), if any."""
        return conn.scalar(
            select(tools_t.c.id).where(
                tools_t.c.org_id == org_id, tools_t.c.name == name, tools_t.c.id != other_than
            )
        )

    @staticmethod
    def names_taken(conn: Connection, org_id: str, names: Sequence[str], *, not_of_server: str) -> list[str]:
        """Which of `names` the organization's tools (other than the server's own) already have."""
        return list(
            conn.scalars(
                select(tools_t.c.name).where(
                    tools_t.c.org_id == org_id,
                    tools_t.c.name.in_(list(names)),
                    tools_t.c.mcp_server_id != not_of_server,
                )
            )
        )

    @staticmethod
    def for_update(conn: Connection, org_id: str, tool_id: str) -> Tool | None:
        """The organization's own tool, locked for the rest of the transaction (Postgres)."""
        row = conn.execute(
            select(tools_t).where(tools_t.c.id == tool_id, tools_t.c.org_id == org_id).with_for_update()
        ).first()
        return None if row is None else _tool(row)

    @staticmethod
    def of_server(conn: Connection, server_id: str) -> list[Tool]:
        return [
            _tool(row) for row in conn.execute(select(tools_t).where(tools_t.c.mcp_server_id == server_id))
        ]

    @staticmethod
    def counts_by_server(conn: Connection, server_ids: Sequence[str]) -> dict[str, int]:
        rows = conn.execute(
            select(tools_t.c.mcp_server_id, func.count(tools_t.c.id))
            .where(tools_t.c.mcp_server_id.in_(list(server_ids)))
            .group_by(tools_t.c.mcp_server_id)
        )
        return {server_id: int(count) for server_id, count in rows}

    @staticmethod
    def insert(conn: Connection, tool: Tool) -> None:
        """Stores a new tool with its tags."""
        conn.execute(insert(tools_t).values(**dataclasses.asdict(tool)))
        ToolQueries._insert_tags(conn, tool.id, tool.tags)

    @staticmethod
    def save(conn: Connection, tool: Tool) -> None:
        """Writes every field of an existing tool; its tag rows follow its tags."""
        values = dataclasses.asdict(tool)
        del values["id"]
        conn.execute(update(tools_t).where(tools_t.c.id == tool.id).values(**values))
        conn.execute(delete(tags_t).where(tags_t.c.tool_id == tool.id))
        ToolQueries._insert_tags(conn, tool.id, tool.tags)

    @staticmethod
    def upsert(conn: Connection, tool: Tool) -> None:
        """Writes a tool, inserting it when it is new (a built-in keeps its first creation time)."""
        created = conn.scalar(select(tools_t.c.created_at).where(tools_t.c.id == tool.id))
        if created is None:
            ToolQueries.insert(conn, tool)
        else:
            ToolQueries.save(conn, dataclasses.replace(tool, created_at=created))

    @staticmethod
    def delete(conn: Connection, org_id: str, tool_ids: Sequence[str]) -> None:
        """Deletes the organization's tools with these ids, with their tags."""
        if tool_ids:
            conn.execute(delete(tags_t).where(tags_t.c.tool_id.in_(list(tool_ids))))
            conn.execute(delete(tools_t).where(tools_t.c.id.in_(list(tool_ids)), tools_t.c.org_id == org_id))

    @staticmethod
    def _insert_tags(conn: Connection, tool_id: str, tags: Sequence[str]) -> None:
        if tags:
            conn.execute(insert(tags_t), [{"tool_id": tool_id, "tag": tag} for tag in set(tags)])


class ServerQueries:
    """MCP server reads and writes on one connection."""

    @staticmethod
    def get(conn: Connection, org_id: str, server_id: str, *, lock: bool = False) -> McpServer | None:
        query = select(servers_t).where(servers_t.c.id == server_id, servers_t.c.org_id == org_id)
        row = conn.execute(query.with_for_update() if lock else query).first()
        return None if row is None else _server(row)

    @staticmethod
    def name_taken(conn: Connection, org_id: str, name: str) -> bool:
        found = conn.scalar(
            select(servers_t.c.id).where(servers_t.c.org_id == org_id, servers_t.c.name == name)
        )
        return found is not None

    @staticmethod
    def count(conn: Connection, org_id: str) -> int:
        """How many MCP servers the organization has registered."""
        return int(conn.scalar(select(func.count()).where(servers_t.c.org_id == org_id)) or 0)

    @staticmethod
    def page(conn: Connection, org_id: str, *, after_name: str | None, limit: int) -> list[McpServer]:
        query = select(servers_t).where(servers_t.c.org_id == org_id)
        if after_name is not None:
            query = query.where(servers_t.c.name > after_name)
        return [_server(row) for row in conn.execute(query.order_by(servers_t.c.name).limit(limit))]

    @staticmethod
    def insert(conn: Connection, server: McpServer) -> None:
        conn.execute(insert(servers_t).values(**dataclasses.asdict(server)))

    @staticmethod
    def refreshed(conn: Connection, server_id: str, when: datetime) -> None:
        conn.execute(update(servers_t).where(servers_t.c.id == server_id).values(refreshed_at=when))

    @staticmethod
    def delete(conn: Connection, org_id: str, server_id: str) -> None:
        """Deletes a server and its tools."""
        tool_ids = list(conn.scalars(select(tools_t.c.id).where(tools_t.c.mcp_server_id == server_id)))
        ToolQueries.delete(conn, org_id, tool_ids)
        conn.execute(delete(servers_t).where(servers_t.c.id == server_id, servers_t.c.org_id == org_id))


class EnvQueries:
    """Agents' tool environment variables on one connection."""

    @staticmethod
    def values(conn: Connection, org_id: str, agent_id: str) -> dict[str, str]:
        rows = conn.execute(
            select(env_t.c.name, env_t.c.value).where(env_t.c.org_id == org_id, env_t.c.agent_id == agent_id)
        )
        return {name: value for name, value in rows}

    @staticmethod
    def change(
        conn: Connection,
        org_id: str,
        agent_id: str,
        set_: Mapping[str, str],
        unset: Sequence[str],
        now: datetime,
    ) -> list[str]:
        """Sets and removes variables; returns the names after the change, sorted."""
        mine = (env_t.c.org_id == org_id, env_t.c.agent_id == agent_id)
        gone = [*unset, *set_]
        if gone:
            conn.execute(delete(env_t).where(*mine, env_t.c.name.in_(gone)))
        if set_:
            conn.execute(
                insert(env_t),
                [
                    {"org_id": org_id, "agent_id": agent_id, "name": name, "value": value, "updated_at": now}
                    for name, value in set_.items()
                ],
            )
        return list(conn.scalars(select(env_t.c.name).where(*mine).order_by(env_t.c.name)))


def reseal(conn: Connection) -> int:
    """Writes every sealed value again, so that all are sealed with the current first key (and values
    from before sealing get sealed); returns how many rows were written."""
    written = 0
    for row in conn.execute(select(env_t)).all():
        conn.execute(
            update(env_t)
            .where(env_t.c.org_id == row.org_id, env_t.c.agent_id == row.agent_id, env_t.c.name == row.name)
            .values(value=row.value)
        )
        written += 1
    for server in conn.execute(select(servers_t.c.id, servers_t.c.secrets)).all():
        conn.execute(update(servers_t).where(servers_t.c.id == server.id).values(secrets=server.secrets))
        written += 1
    return written
