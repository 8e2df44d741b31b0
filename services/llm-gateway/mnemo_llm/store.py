"""SQL for the usage ledger and the records of provider chat batches. No business rules here.

Every function takes a sync SQLAlchemy `Connection` and runs inside one unit of work (`Database.read` or
`write`); records come back as dataclasses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from mnemo_core.db import table_of
from mnemo_llm.models import ChatBatchRow, UsageRow

usage_t = table_of(UsageRow)
batches_t = table_of(ChatBatchRow)


@dataclass(frozen=True, slots=True)
class ChatBatchRecord:
    """A chat batch submitted to a provider's batch API (the requests themselves stay with the provider)."""

    id: str
    org_id: str
    user_id: str
    # The provider's name (as in "provider/model") and its own id of the batch.
    provider: str
    provider_batch_id: str
    # ChatBatchState name without its prefix, lower case: "pending", "running", "succeeded", ...
    state: str
    request_count: int
    created_at: datetime
    succeeded_count: int = 0
    failed_count: int = 0
    # Per request, in order: {"model": "provider/model", "agent_id"}, for the usage ledger.
    requests: list[dict[str, Any]] = field(default_factory=list)
    # Once finished: a serialized ChatBatch holding only `results` and `error`.
    outcome: bytes | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Which of an organization's ledger entries to sum, and by what to group them."""

    org_id: str
    group_by: Sequence[str] = ()
    agent_id: str = ""
    model: str = ""
    start: datetime | None = None
    end: datetime | None = None


class UsageQueries:
    """The usage ledger on one connection."""

    @staticmethod
    def insert(conn: Connection, entries: Sequence[Mapping[str, Any]]) -> None:
        conn.execute(insert(usage_t), list(entries))

    @staticmethod
    def sums(conn: Connection, where: UsageFilter) -> list[tuple[dict[str, str], int, int, int]]:
        """Per group: (its keys by column name, entry count, prompt tokens, completion tokens)."""
        groups = [usage_t.c[name] for name in dict.fromkeys(where.group_by)]
        statement = select(
            *groups,
            func.count(usage_t.c.id),
            func.coalesce(func.sum(usage_t.c.prompt_tokens), 0),
            func.coalesce(func.sum(usage_t.c.completion_tokens), 0),
        ).where(usage_t.c.org_id == where.org_id)
        if where.agent_id:
            statement = statement.where(usage_t.c.agent_id == where.agent_id)
        if where.model:
            statement = statement.where(usage_t.c.model == where.model)
        if where.start is not None:
            statement = statement.where(usage_t.c.created_at >= where.start)
        if where.end is not None:
            statement = statement.where(usage_t.c.created_at < where.end)
        if groups:
            statement = statement.group_by(*groups).order_by(*groups)
        return [
            (
                dict(zip((c.key for c in groups), row[: len(groups)], strict=True)),
                int(row[len(groups)]),
                int(row[len(groups) + 1]),
                int(row[len(groups) + 2]),
            )
            for row in conn.execute(statement)
        ]


class BatchQueries:
    """Chat batch records on one connection."""

    @staticmethod
    def insert(conn: Connection, batch: ChatBatchRecord) -> None:
        conn.execute(insert(batches_t).values(**dataclasses.asdict(batch)))

    @staticmethod
    def get(conn: Connection, org_id: str, batch_id: str) -> ChatBatchRecord | None:
        row = conn.execute(
            select(batches_t).where(batches_t.c.id == batch_id, batches_t.c.org_id == org_id)
        ).first()
        return None if row is None else ChatBatchRecord(**row._asdict())

    @staticmethod
    def advance(conn: Connection, batch_id: str, finished: Sequence[str], values: Mapping[str, Any]) -> bool:
        """Changes a batch that is not in one of the `finished` states yet; whether it did."""
        result = conn.execute(
            update(batches_t)
            .where(batches_t.c.id == batch_id, batches_t.c.state.not_in(list(finished)))
            .values(**values)
        )
        return bool(result.rowcount)
