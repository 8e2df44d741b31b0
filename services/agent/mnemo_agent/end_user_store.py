"""SQL for end users and their agents and blocks. No rules here (end_users.py has them): this reads and
writes on one connection inside a unit of work, and returns dataclasses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from mnemo_agent.models import EndUserAgentRow, EndUserBlockRow, EndUserRow
from mnemo_agent.store import newest_first
from mnemo_core.db import table_of

end_users_t = table_of(EndUserRow)
end_user_agents_t = table_of(EndUserAgentRow)
end_user_blocks_t = table_of(EndUserBlockRow)


@dataclass(frozen=True, slots=True)
class EndUser:
    """An end user of an application, with its agents and blocks."""

    id: str
    org_id: str
    identifier_key: str
    name: str
    type: str
    properties: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    agent_ids: list[str] = field(default_factory=list)
    block_ids: list[str] = field(default_factory=list)


class EndUserQueries:
    """End user reads and writes on one connection."""

    @staticmethod
    def _with_members(conn: Connection, rows: Sequence[Any]) -> list[EndUser]:
        ids = [row.id for row in rows]
        agents: dict[str, list[str]] = {i: [] for i in ids}
        blocks: dict[str, list[str]] = {i: [] for i in ids}
        if ids:
            for end_user_id, agent_id in conn.execute(
                select(end_user_agents_t.c.end_user_id, end_user_agents_t.c.agent_id)
                .where(end_user_agents_t.c.end_user_id.in_(ids))
                .order_by(end_user_agents_t.c.created_at, end_user_agents_t.c.agent_id)
            ):
                agents[end_user_id].append(agent_id)
            for end_user_id, block_id in conn.execute(
                select(end_user_blocks_t.c.end_user_id, end_user_blocks_t.c.block_id)
                .where(end_user_blocks_t.c.end_user_id.in_(ids))
                .order_by(end_user_blocks_t.c.created_at, end_user_blocks_t.c.block_id)
            ):
                blocks[end_user_id].append(block_id)
        return [EndUser(**row._asdict(), agent_ids=agents[row.id], block_ids=blocks[row.id]) for row in rows]

    @staticmethod
    def get(conn: Connection, org_id: str, end_user_id: str) -> EndUser | None:
        row = conn.execute(
            select(end_users_t).where(end_users_t.c.id == end_user_id, end_users_t.c.org_id == org_id)
        ).first()
        return None if row is None else EndUserQueries._with_members(conn, [row])[0]

    @staticmethod
    def key_taken(conn: Connection, org_id: str, identifier_key: str, other_than: str = "") -> str | None:
        """The id of the organization's end user with this key (other than `other_than`), if any."""
        found: str | None = conn.scalar(
            select(end_users_t.c.id).where(
                end_users_t.c.org_id == org_id,
                end_users_t.c.identifier_key == identifier_key,
                end_users_t.c.id != other_than,
            )
        )
        return found

    @staticmethod
    def page(
        conn: Connection,
        org_id: str,
        *,
        identifier_key: str,
        type: str,
        agent_id: str,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[EndUser]:
        """The organization's end users, newest first."""
        query = select(end_users_t).where(end_users_t.c.org_id == org_id, newest_first(end_users_t, after))
        if identifier_key:
            query = query.where(end_users_t.c.identifier_key == identifier_key)
        if type:
            query = query.where(end_users_t.c.type == type)
        if agent_id:
            query = query.where(
                end_users_t.c.id.in_(
                    select(end_user_agents_t.c.end_user_id).where(end_user_agents_t.c.agent_id == agent_id)
                )
            )
        rows = conn.execute(
            query.order_by(end_users_t.c.created_at.desc(), end_users_t.c.id.desc()).limit(limit)
        ).all()
        return EndUserQueries._with_members(conn, rows)

    @staticmethod
    def insert(conn: Connection, end_user: EndUser) -> None:
        conn.execute(
            insert(end_users_t).values(
                id=end_user.id,
                org_id=end_user.org_id,
                identifier_key=end_user.identifier_key,
                name=end_user.name,
                type=end_user.type,
                properties=end_user.properties,
                created_at=end_user.created_at,
                updated_at=end_user.updated_at,
            )
        )

    @staticmethod
    def update(conn: Connection, org_id: str, end_user_id: str, values: Mapping[str, Any]) -> None:
        conn.execute(
            update(end_users_t)
            .where(end_users_t.c.id == end_user_id, end_users_t.c.org_id == org_id)
            .values(**values)
        )

    @staticmethod
    def delete(conn: Connection, org_id: str, end_user_id: str) -> None:
        conn.execute(delete(end_user_agents_t).where(end_user_agents_t.c.end_user_id == end_user_id))
        conn.execute(delete(end_user_blocks_t).where(end_user_blocks_t.c.end_user_id == end_user_id))
        conn.execute(
            delete(end_users_t).where(end_users_t.c.id == end_user_id, end_users_t.c.org_id == org_id)
        )

    @staticmethod
    def add_agent(conn: Connection, org_id: str, end_user_id: str, agent_id: str, now: datetime) -> None:
        conn.execute(
            insert(end_user_agents_t).values(
                end_user_id=end_user_id, agent_id=agent_id, org_id=org_id, created_at=now
            )
        )

    @staticmethod
    def remove_agent(conn: Connection, end_user_id: str, agent_id: str) -> None:
        conn.execute(
            delete(end_user_agents_t).where(
                end_user_agents_t.c.end_user_id == end_user_id, end_user_agents_t.c.agent_id == agent_id
            )
        )

    @staticmethod
    def add_block(conn: Connection, org_id: str, end_user_id: str, block_id: str, now: datetime) -> None:
        conn.execute(
            insert(end_user_blocks_t).values(
                end_user_id=end_user_id, block_id=block_id, org_id=org_id, created_at=now
            )
        )

    @staticmethod
    def remove_block(conn: Connection, end_user_id: str, block_id: str) -> None:
        conn.execute(
            delete(end_user_blocks_t).where(
                end_user_blocks_t.c.end_user_id == end_user_id, end_user_blocks_t.c.block_id == block_id
            )
        )

    @staticmethod
    def blocks_of_agent(conn: Connection, org_id: str, agent_id: str, *, except_end_user: str) -> set[str]:
        """The blocks an agent has through its end users other than `except_end_user`."""
        return set(
            conn.scalars(
                select(end_user_blocks_t.c.block_id)
                .join(end_user_agents_t, end_user_agents_t.c.end_user_id == end_user_blocks_t.c.end_user_id)
                .where(
                    end_user_agents_t.c.agent_id == agent_id,
                    end_user_agents_t.c.org_id == org_id,
                    end_user_agents_t.c.end_user_id != except_end_user,
                )
            )
        )

    @staticmethod
    def agent_ids_of(conn: Connection, end_user_id: str) -> list[str]:
        return list(
            conn.scalars(
                select(end_user_agents_t.c.agent_id).where(end_user_agents_t.c.end_user_id == end_user_id)
            )
        )
