"""SQL for groups and group runs. No business rules here: callers validate, this reads and writes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, or_, select, true, update

from mnemo_agent.models import GroupMemberRow, GroupRow, GroupRunRow
from mnemo_core.db import table_of

groups_t = table_of(GroupRow)
members_t = table_of(GroupMemberRow)
group_runs_t = table_of(GroupRunRow)


@dataclass(frozen=True, slots=True)
class Group:
    """A group of agents and its manager policy."""

    id: str
    org_id: str
    name: str
    manager_type: str
    created_at: datetime
    description: str = ""
    manager_agent_id: str | None = None
    agent_ids: list[str] = field(default_factory=list)
    max_turns: int = 0
    termination_token: str = ""
    sleeptime_frequency: int = 0
    shared_block_ids: list[str] = field(default_factory=list)
    owned_block_ids: list[str] = field(default_factory=list)
    attachments: list[list[str]] = field(default_factory=list)
    metadata_json: dict[str, Any] = field(default_factory=dict)

    @property
    def everyone(self) -> list[str]:
        """The manager agent (if any) and the members."""
        return ([self.manager_agent_id] if self.manager_agent_id else []) + list(self.agent_ids)


@dataclass(frozen=True, slots=True)
class GroupRun:
    """One message sent to a group."""

    id: str
    org_id: str
    group_id: str
    status: str
    created_at: datetime
    stop_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    step_count: int = 0
    idempotency_key: str | None = None
    run_ids: list[str] = field(default_factory=list)
    error: str = ""
    request: bytes | None = None
    lease_expires_at: datetime | None = None
    cancel_requested: bool = False
    completed_at: datetime | None = None


def _after(table: Any, after: tuple[datetime, str] | None) -> Any:
    if after is None:
        return true()
    created, last_id = after
    return or_(table.c.created_at < created, and_(table.c.created_at == created, table.c.id < last_id))


class GroupQueries:
    """Group reads and writes on one connection."""

    @staticmethod
    def insert(conn: Connection, group: Group) -> None:
        conn.execute(insert(groups_t).values(**dataclasses.asdict(group)))
        conn.execute(insert(members_t), [{"group_id": group.id, "agent_id": a} for a in group.everyone])

    @staticmethod
    def get(conn: Connection, org_id: str, group_id: str) -> Group | None:
        row = conn.execute(
            select(groups_t).where(groups_t.c.id == group_id, groups_t.c.org_id == org_id)
        ).first()
        return None if row is None else Group(**row._asdict())

    @staticmethod
    def page(conn: Connection, org_id: str, after: tuple[datetime, str] | None, limit: int) -> list[Group]:
        query = (
            select(groups_t)
            .where(groups_t.c.org_id == org_id, _after(groups_t, after))
            .order_by(groups_t.c.created_at.desc(), groups_t.c.id.desc())
            .limit(limit)
        )
        return [Group(**row._asdict()) for row in conn.execute(query)]

    @staticmethod
    def delete(conn: Connection, org_id: str, group_id: str) -> bool:
        conn.execute(delete(members_t).where(members_t.c.group_id == group_id))
        deleted = conn.execute(delete(groups_t).where(groups_t.c.id == group_id, groups_t.c.org_id == org_id))
        return bool(deleted.rowcount)

    @staticmethod
    def of_agent(conn: Connection, agent_id: str) -> list[str]:
        """The groups an agent belongs to (as a member or their manager)."""
        return list(conn.scalars(select(members_t.c.group_id).where(members_t.c.agent_id == agent_id)))


_FINISHED_FIELDS = (
    "status",
    "stop_reason",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "step_count",
    "run_ids",
    "error",
    "lease_expires_at",
    "completed_at",
)


class GroupRunQueries:
    """Group run reads and writes on one connection."""

    @staticmethod
    def insert(conn: Connection, run: GroupRun) -> None:
        conn.execute(insert(group_runs_t).values(**dataclasses.asdict(run)))

    @staticmethod
    def get(conn: Connection, org_id: str, run_id: str) -> GroupRun | None:
        row = conn.execute(
            select(group_runs_t).where(group_runs_t.c.id == run_id, group_runs_t.c.org_id == org_id)
        ).first()
        return None if row is None else GroupRun(**row._asdict())

    @staticmethod
    def get_any(conn: Connection, run_id: str) -> GroupRun | None:
        row = conn.execute(select(group_runs_t).where(group_runs_t.c.id == run_id)).first()
        return None if row is None else GroupRun(**row._asdict())

    @staticmethod
    def by_key(conn: Connection, group_id: str, key: str) -> GroupRun | None:
        row = conn.execute(
            select(group_runs_t).where(
                group_runs_t.c.group_id == group_id, group_runs_t.c.idempotency_key == key
            )
        ).first()
        return None if row is None else GroupRun(**row._asdict())

    @staticmethod
    def running(conn: Connection, group_id: str) -> GroupRun | None:
        row = conn.execute(
            select(group_runs_t).where(
                group_runs_t.c.group_id == group_id, group_runs_t.c.status == "running"
            )
        ).first()
        return None if row is None else GroupRun(**row._asdict())

    @staticmethod
    def page(
        conn: Connection, org_id: str, group_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[GroupRun]:
        query = (
            select(group_runs_t)
            .where(
                group_runs_t.c.org_id == org_id,
                group_runs_t.c.group_id == group_id,
                _after(group_runs_t, after),
            )
            .order_by(group_runs_t.c.created_at.desc(), group_runs_t.c.id.desc())
            .limit(limit)
        )
        return [GroupRun(**row._asdict()) for row in conn.execute(query)]

    @staticmethod
    def change(conn: Connection, run_id: str, statuses: Sequence[str], values: Mapping[str, Any]) -> bool:
        """Changes a run that is in one of `statuses` (any status when empty); whether it did."""
        where = group_runs_t.c.id == run_id
        if statuses:
            where = and_(where, group_runs_t.c.status.in_(list(statuses)))
        return bool(conn.execute(update(group_runs_t).where(where).values(**values)).rowcount)

    @staticmethod
    def finish(conn: Connection, run_id: str, values: Mapping[str, Any]) -> None:
        assert set(values) == set(_FINISHED_FIELDS)
        conn.execute(update(group_runs_t).where(group_runs_t.c.id == run_id).values(**values))

    @staticmethod
    def fail_running(conn: Connection, error: str, now: datetime) -> int:
        """Fails every running group run (a process that held them is gone)."""
        result = conn.execute(
            update(group_runs_t)
            .where(group_runs_t.c.status == "running")
            .values(status="failed", error=error, lease_expires_at=None, completed_at=now)
        )
        return int(result.rowcount or 0)
