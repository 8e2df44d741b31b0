"""SQL for the audit log. No rules here (who may read it is audit_log.py's): this inserts, pages and prunes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, delete, insert, or_, select

from mnemo_agent.models import AuditEventRow
from mnemo_core.audit import AuditEvent
from mnemo_core.db import table_of

events_t = table_of(AuditEventRow)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What a listing keeps: each set field must match."""

    org_id: str
    user_id: str = ""
    key_id: str = ""
    action: str = ""
    outcome: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None


class AuditQueries:
    """Audit event reads and writes on one connection."""

    @staticmethod
    def insert(conn: Connection, events: Sequence[AuditEvent]) -> None:
        conn.execute(insert(events_t), [dataclasses.asdict(event) for event in events])

    @staticmethod
    def page(
        conn: Connection, keep: AuditFilter, *, before: tuple[datetime, str] | None, limit: int
    ) -> list[AuditEvent]:
        """Newest first, from the event after `before` (time, id), at most `limit` events."""
        c = events_t.c
        query = select(events_t).where(c.org_id == keep.org_id)
        for column, value in (
            (c.user_id, keep.user_id),
            (c.key_id, keep.key_id),
            (c.action, keep.action),
            (c.outcome, keep.outcome),
        ):
            if value:
                query = query.where(column == value)
        if keep.start_time is not None:
            query = query.where(c.time >= keep.start_time)
        if keep.end_time is not None:
            query = query.where(c.time < keep.end_time)
        if before is not None:
            time, event_id = before
            query = query.where(or_(c.time < time, and_(c.time == time, c.id < event_id)))
        rows = conn.execute(query.order_by(c.time.desc(), c.id.desc()).limit(limit))
        return [AuditEvent(**row._asdict()) for row in rows]

    @staticmethod
    def prune(conn: Connection, older_than: datetime) -> int:
        """Deletes the events before `older_than`; returns how many."""
        return int(conn.execute(delete(events_t).where(events_t.c.time < older_than)).rowcount or 0)
