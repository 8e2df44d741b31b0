"""Search on Postgres, shared by archival passages and recall: nearest vectors (pgvector) and words
(full-text search).

Vectors sit in an untyped pgvector `vector` column, because each embedding model has its own
dimension; an HNSW index (cosine) exists per common dimension over `CAST(embedding AS vector(d))`,
restricted to the rows of that dimension (docs/adr/0201-postgres-passage-and-recall-search.md).
Words sit in a generated `search_text` tsvector column with a GIN index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgvector.sqlalchemy import VECTOR
from sqlalchemy import Connection, Float, bindparam, cast, func, literal_column, select, text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.sql.elements import ColumnElement

from mnemo_memory.ranking import tsquery_any
from mnemo_memory.vectors import Floats

# Dimensions with an HNSW index (one partial index each, created by the migration that adds them):
# all-MiniLM-L6-v2 and other small models, nomic/BGE-base, BGE-large/mxbai, OpenAI's small and ada-002.
INDEXED_DIMENSIONS = frozenset({384, 768, 1024, 1536})
# Up to this many rows passing a search's filters, every distance is computed (exact, and cheaper than
# an index scan that has to skip other scopes' rows); above it the HNSW index answers (approximate).
EXACT_LIMIT = 4096
# Candidates the HNSW scan keeps (pgvector's default is 40); raised to k when k is larger.
EF_SEARCH = 100
# The text search configuration of `search_text` (migration): English stemming, no stop words (stop
# words are dropped from queries instead, as on SQLite, where FTS5 keeps every word).
TEXT_SEARCH_CONFIG: ColumnElement[Any] = literal_column("'mnemo_english'::regconfig")


def nearest(
    conn: Connection,
    key: ColumnElement[Any],
    embedding: ColumnElement[Any],
    where: Sequence[ColumnElement[bool]],
    query: Floats,
    k: int,
    exact_limit: int = EXACT_LIMIT,
) -> list[tuple[int, float]]:
    """The k rows matching `where` (which must keep to `query`'s dimension) nearest to `query`.

    Returns (key, cosine similarity), best first. Exact while at most `exact_limit` rows match; above,
    an HNSW index scan of the query's dimension that keeps going until k rows pass the filters
    (pgvector's iterative scan, strict order), when an index of that dimension exists.
    """
    dim = len(query)
    matching = conn.scalar(
        select(func.count()).select_from(select(key).where(*where).limit(exact_limit + 1).subquery())
    )
    if (matching or 0) > exact_limit and dim in INDEXED_DIMENSIONS:
        conn.execute(
            text(
                "SELECT set_config('hnsw.ef_search', :ef, true), "
                "set_config('hnsw.iterative_scan', 'strict_order', true)"
            ),
            {"ef": str(max(EF_SEARCH, k))},
        )
        # The very expression the index is built on, so the planner can use it.
        vectors: ColumnElement[Any] = cast(embedding, VECTOR(dim))
    else:
        # No index is built on the bare column: every matching row's distance is computed.
        vectors = embedding
    distance = vectors.op("<=>", return_type=Float)(bindparam("probe", query, type_=VECTOR()))
    rows = conn.execute(select(key, distance).where(*where).order_by(distance).limit(k))
    return [(int(pk), 1.0 - float(d)) for pk, d in rows]


def in_months(moment: ColumnElement[Any], months: frozenset[int]) -> ColumnElement[bool]:
    """The UTC month (1-12) of a timestamptz is one of `months`."""
    month = func.extract("month", func.timezone("UTC", moment))
    return month.in_(sorted(months))


def search_text(table: str) -> ColumnElement[Any]:
    """The generated full-text column of a table (Postgres only, so not part of the shared models)."""
    return literal_column(f"{table}.search_text", TSVECTOR)


def ranked_words(
    conn: Connection,
    key: ColumnElement[Any],
    document: ColumnElement[Any],
    where: Sequence[ColumnElement[bool]],
    terms: Sequence[str],
    k: int,
    budget: int,
) -> list[tuple[int, float]]:
    """The k rows matching `where` and any of the terms, by ts_rank among the `budget` newest matches.

    Returns (key, negated rank): lower is better, like SQLite's bm25(), so both stores rank the same way.
    """
    # A plan for these very words: a generic plan of the prepared statement cannot tell common words
    # (newest rows first, stop at the budget) from rare ones (the GIN index), and picks badly for one.
    conn.execute(text("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)"))
    words = func.to_tsquery(TEXT_SEARCH_CONFIG, bindparam("terms", tsquery_any(list(terms))))
    newest = (
        select(key.label("pk"), document.label("document"))
        .where(*where, document.op("@@")(words))
        .order_by(key.desc())
        .limit(budget)
        .subquery()
    )
    # Normalisation 1 divides by 1 + log(length): longer texts do not win by length alone (as in BM25).
    rank = func.ts_rank(newest.c.document, words, 1)
    rows = conn.execute(select(newest.c.pk, rank).order_by(rank.desc(), newest.c.pk.desc()).limit(k))
    return [(int(pk), -float(score)) for pk, score in rows]
