"""The Postgres passage store beyond small scopes: the HNSW index of the query's dimension answers, and
filters never starve a search (pgvector's iterative index scan).

The tests run on a database of their own on the session's Postgres. At the size a test can afford, the
planner rightly prefers computing every distance to an index scan; that database forbids it sorting
instead, so a search can only avoid a sort through an index that matches its expression exactly.
"""

# The fixtures come from memory_with_embeddings and are named as arguments (pytest's way).
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from mnemo_core.db import Database
from mnemo_core.migrations import upgrade
from mnemo_core.wire import utcnow
from mnemo_memory.app import MIGRATIONS
from mnemo_memory.passage_store import NewPassage, PassageFilter, Scope
from mnemo_memory.passage_store_pg import PgPassageStore
from tests.service.conftest import new_actor, new_agent_id
from tests.service.memory_with_embeddings import memory_postgres  # noqa: F401 - fixture

MODEL = "local/all-minilm-l6-v2"
ROWS = 1000
TAGGED = 30  # 3 % of the rows: an index scan that stopped at its first candidates would find ~3 of them


@pytest.fixture(scope="module")
async def pg(memory_postgres: str) -> AsyncIterator[Database]:
    """The memory schema, migrated, in a fresh database of the session's Postgres."""
    server = create_async_engine(memory_postgres, isolation_level="AUTOCOMMIT")
    name = f"pgvector_{uuid.uuid4().hex[:12]}"
    async with server.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
        await conn.execute(text(f"ALTER DATABASE {name} SET enable_sort = off"))
    await server.dispose()
    db = Database(
        make_url(memory_postgres).set(database=name).render_as_string(hide_password=False), schema="memory"
    )
    await upgrade(db, MIGRATIONS)
    yield db
    await db.dispose()


def unit_vectors(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, 384)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def index_scans(db: Database, index: str) -> int:
    def read(conn: Connection) -> int:
        query = text("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = :index")
        return int(conn.scalar(query, {"index": index}) or 0)

    return await db.read(read)


@pytest.fixture(scope="module")
async def seeded(pg: Database) -> tuple[str, str, np.ndarray, list[int]]:
    """ROWS passages of one agent, the first TAGGED of them tagged "rare"; returns (org, agent, vectors, keys)."""
    org_id, agent_id = new_actor().org_id, new_agent_id()
    vectors = unit_vectors(ROWS, seed=5)
    stored = await PgPassageStore(pg).insert(
        org_id,
        [
            NewPassage(
                id=f"passage-{uuid.uuid4()}",
                text=f"note {i}",
                created_at=utcnow(),
                agent_id=agent_id,
                tags=["rare"] if i < TAGGED else [],
                model=MODEL,
                vector=vectors[i],
            )
            for i in range(ROWS)
        ],
    )
    await pg.write(lambda conn: conn.execute(text("ANALYZE passages")))
    return org_id, agent_id, vectors, [p.pk for p in stored]


async def test_a_scope_beyond_the_exact_limit_is_searched_through_the_index_of_its_dimension(
    pg: Database, seeded: tuple[str, str, np.ndarray, list[int]]
) -> None:
    org_id, agent_id, vectors, pks = seeded
    query = unit_vectors(1, seed=9)[0]
    exact = [pks[i] for i in np.argsort(-(vectors @ query))[:10]]
    before = await index_scans(pg, "ix_passages_embedding_384")

    small_enough = await PgPassageStore(pg).vector_search(
        org_id, [Scope("agent", agent_id)], MODEL, query, 10, PassageFilter()
    )
    through_index = await PgPassageStore(pg, exact_limit=100).vector_search(
        org_id, [Scope("agent", agent_id)], MODEL, query, 10, PassageFilter()
    )
    # Index statistics reach the cumulative view once the scanning connection flushes them (idle, <= 10 s).
    for _ in range(150):
        after = await index_scans(pg, "ix_passages_embedding_384")
        if after > before:
            break
        await asyncio.sleep(0.1)

    assert [pk for pk, _ in small_enough] == exact
    assert [s for _, s in small_enough] == pytest.approx(sorted(vectors @ query, reverse=True)[:10], abs=1e-5)
    assert len(set(exact) & {pk for pk, _ in through_index}) >= 9
    assert after > before


async def test_a_selective_filter_still_yields_k_results_through_the_index(
    pg: Database, seeded: tuple[str, str, np.ndarray, list[int]]
) -> None:
    org_id, agent_id, vectors, pks = seeded
    query = unit_vectors(1, seed=11)[0]
    sims = vectors[:TAGGED] @ query
    exact = [pks[i] for i in np.argsort(-sims)[:10]]

    hits = await PgPassageStore(pg, exact_limit=TAGGED - 10).vector_search(
        org_id, [Scope("agent", agent_id)], MODEL, query, 10, PassageFilter(tags=("rare",))
    )

    assert len(hits) == 10
    assert set(pk for pk, _ in hits) <= set(pks[:TAGGED])
    assert len(set(exact) & {pk for pk, _ in hits}) >= 9
