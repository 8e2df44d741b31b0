"""Passages on Postgres: vectors in a pgvector column, words in a tsvector column, both searched in SQL.

Rows, pages, deletes and the model check are the portable ones of `SqlPassages`; only the two
searches differ from SQLite. Nothing is kept in this process, so any number of memory service
replicas can share the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, literal_column, or_
from sqlalchemy.sql.elements import ColumnElement

from mnemo_core.db import Database
from mnemo_memory.passage_store import (
    PassageFilter,
    Scope,
    SqlPassages,
    passages_t,
    scope_clause,
    spoken_by,
    tagged,
)
from mnemo_memory.pg_search import EXACT_LIMIT, in_months, nearest, ranked_words, search_text
from mnemo_memory.vectors import Floats


def _filters(org_id: str, scopes: Sequence[Scope], where: PassageFilter) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [
        passages_t.c.org_id == org_id,
        or_(*(scope_clause(scope) for scope in scopes)),
    ]
    if where.start is not None:
        clauses.append(passages_t.c.created_epoch >= where.start.timestamp())
    if where.end is not None:
        clauses.append(passages_t.c.created_epoch < where.end.timestamp())
    if where.months:
        clauses.append(in_months(func.to_timestamp(passages_t.c.created_epoch), where.months))
    if where.speakers:
        clauses += spoken_by(org_id, scopes, where.speakers)
    if where.tags:
        clauses.append(passages_t.c.pk.in_(tagged(org_id, where)))
    return clauses


class PgPassageStore(SqlPassages):
    """Passages in the memory service's Postgres schema, searched by pgvector and full-text search."""

    def __init__(self, db: Database, *, exact_limit: int = EXACT_LIMIT) -> None:
        super().__init__(db)
        self._exact_limit = exact_limit

    async def vector_search(
        self, org_id: str, scopes: Sequence[Scope], model: str, query: Floats, k: int, where: PassageFilter
    ) -> list[tuple[int, float]]:
        if not scopes:
            return []
        clauses = [
            *_filters(org_id, scopes, where),
            passages_t.c.embedding_model == model,
            # A literal, so the planner can match the partial index of this dimension.
            passages_t.c.embedding_dim == literal_column(str(len(query))),
        ]

        def read(conn: Connection) -> list[tuple[int, float]]:
            return nearest(
                conn, passages_t.c.pk, passages_t.c.embedding, clauses, query, k, self._exact_limit
            )

        return await self._db.read(read)

    async def keyword_search(
        self,
        org_id: str,
        scopes: Sequence[Scope],
        terms: Sequence[str],
        k: int,
        where: PassageFilter,
        *,
        budget: int,
    ) -> list[tuple[int, float]]:
        if not scopes or not terms:
            return []
        clauses: list[Any] = [*_filters(org_id, scopes, where), passages_t.c.embedding_dim > 0]

        def read(conn: Connection) -> list[tuple[int, float]]:
            return ranked_words(conn, passages_t.c.pk, search_text("passages"), clauses, terms, k, budget)

        return await self._db.read(read)
