"""Recall on Postgres: message words by full-text search, message vectors by pgvector, both in SQL.

Nothing is kept in this process, so any number of memory service replicas can share the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, literal_column
from sqlalchemy.sql.elements import ColumnElement

from mnemo_core.db import Database
from mnemo_memory.pg_search import EXACT_LIMIT, in_months, nearest, ranked_words, search_text
from mnemo_memory.recall import (
    MESSAGE_KINDS,
    Embedded,
    MessageFilter,
    message_contexts,
    messages_t,
    vectors_t,
)
from mnemo_memory.retrieval import Context
from mnemo_memory.vectors import Floats


class PgMessageIndex:
    """Searches of message histories in the memory service's Postgres schema."""

    def __init__(self, db: Database, *, exact_limit: int = EXACT_LIMIT) -> None:
        self._db = db
        self._exact_limit = exact_limit

    async def keyword_search(
        self, org_id: str, agent_id: str, terms: list[str], where: MessageFilter, k: int, budget: int
    ) -> list[tuple[int, float]]:
        clauses: list[ColumnElement[bool]] = [
            messages_t.c.org_id == org_id,
            messages_t.c.agent_id == agent_id,
        ]
        if where.kinds:
            clauses.append(messages_t.c.kind.in_(where.kinds))
        if where.start is not None:
            clauses.append(messages_t.c.created_at >= where.start)
        if where.end is not None:
            clauses.append(messages_t.c.created_at < where.end)
        if where.months:
            clauses.append(in_months(messages_t.c.created_at, where.months))

        def read(conn: Connection) -> list[tuple[int, float]]:
            return ranked_words(conn, messages_t.c.pk, search_text("messages"), clauses, terms, k, budget)

        return await self._db.read(read)

    async def vector_search(
        self, org_id: str, agent_id: str, model: str, query: Floats, where: MessageFilter, k: int
    ) -> list[tuple[int, float]]:
        clauses: list[Any] = [
            vectors_t.c.org_id == org_id,
            vectors_t.c.agent_id == agent_id,
            vectors_t.c.embedding_model == model,
            # A literal, so the planner can match the partial index of this dimension.
            func.vector_dims(vectors_t.c.embedding) == literal_column(str(len(query))),
        ]
        if where.kinds:
            clauses.append(vectors_t.c.kind.in_([MESSAGE_KINDS.value(kind) for kind in where.kinds]))
        if where.start is not None:
            clauses.append(vectors_t.c.created_epoch >= where.start.timestamp())
        if where.end is not None:
            clauses.append(vectors_t.c.created_epoch < where.end.timestamp())
        if where.months:
            clauses.append(in_months(func.to_timestamp(vectors_t.c.created_epoch), where.months))

        def read(conn: Connection) -> list[tuple[int, float]]:
            return nearest(
                conn, vectors_t.c.message_pk, vectors_t.c.embedding, clauses, query, k, self._exact_limit
            )

        return await self._db.read(read)

    async def contexts(
        self, org_id: str, agent_id: str, pks: Sequence[int], model: str, *, neighbours: bool
    ) -> dict[int, Context]:
        return await self._db.read(message_contexts, org_id, agent_id, pks, model, neighbours)

    async def stored(self, results: list[Embedded]) -> None:
        return None  # searches read the table itself
