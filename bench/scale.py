"""Scale benchmark: one organization with 1M archival passages across 100 agents on Postgres + pgvector.

Drives the memory service's own store (`PgPassageStore`) on an embedded Postgres 18 with the service's
migrations, so rows, the full-text column and the HNSW index are exactly what the service writes.

Cheap synthetic embeddings (stated with every figure): embedding 1M texts with the local model takes
hours on 2 cores, so each agent gets 32 random topic directions and a passage's 384-d vector is its
topic's direction plus Gaussian noise, normalised; its text is 12 words drawn from a Zipf-distributed
vocabulary of 20,000 made-up words plus two words of its topic. Query vectors and words are drawn the
same way. Search figures therefore measure the store (index scans, filters, ranking), not embedding.

Phases: bulk load without the HNSW index (the full-text GIN index is maintained), index build,
inserts with the index in place, then per-agent vector / keyword / hybrid search latency (hybrid =
both searches concurrently + mnemo's reciprocal rank fusion + fetching the passages, as
`ArchivalMemory` does, minus query embedding), and Postgres memory and sizes.

    python -m bench.scale                        # 1M passages, 100 agents (~30-40 min on 2 cores)
    python -m bench.scale --passages 100000      # a quicker run
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import psutil
from sqlalchemy import Connection, text

from bench.mesh import percentile
from mnemo_core.db import Database
from mnemo_core.migrations import upgrade
from mnemo_memory.app import MIGRATIONS
from mnemo_memory.passage_store import NewPassage, PassageFilter, Scope
from mnemo_memory.passage_store_pg import PgPassageStore
from mnemo_memory.ranking import fuse, scope_token
from tests.postgres import embedded_postgres

DIM = 384
TOPICS = 32
VOCABULARY = 20_000
ORG = "org-scale"
INDEX = "ix_passages_embedding_384"


class Synthetic:
    """Cheap topic-clustered vectors and Zipf-distributed words (see the module docstring)."""

    def __init__(self, agents: int, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        centres = self.rng.standard_normal((agents, TOPICS, DIM)).astype(np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=2, keepdims=True)
        self.words = np.array([f"w{i:05d}" for i in range(VOCABULARY)])

    def vectors(self, agent: int, topics: np.ndarray) -> np.ndarray:
        noisy = self.centres[agent, topics] + 0.08 * self.rng.standard_normal((len(topics), DIM)).astype(
            np.float32
        )
        normalised: np.ndarray = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
        return normalised

    def text(self, topic: int) -> str:
        drawn = np.minimum(self.rng.zipf(1.3, 12), VOCABULARY) - 1
        return " ".join([*self.words[drawn], f"topic{topic}a", f"topic{topic}b"])


def agent_id(i: int) -> str:
    return f"agent-{i:03d}"


async def load(
    store: PgPassageStore, data: Synthetic, agents: int, per_agent: int, batch: int, prefix: str
) -> float:
    """Inserts per_agent passages for each agent in batches; returns passages per second."""
    start = time.perf_counter()
    base = datetime(2025, 1, 1, tzinfo=UTC)
    done = 0
    for offset in range(0, per_agent, batch):
        for a in range(agents):
            size = min(batch, per_agent - offset)
            topics = data.rng.integers(0, TOPICS, size)
            vectors = data.vectors(a, topics)
            rows = [
                NewPassage(
                    id=f"{prefix}-{a}-{offset + j}",
                    text=data.text(int(topics[j])),
                    created_at=base + timedelta(minutes=offset + j),
                    agent_id=agent_id(a),
                    tags=["even"] if (offset + j) % 2 == 0 else ["odd"],
                    model="synthetic/384",
                    vector=vectors[j],
                )
                for j in range(size)
            ]
            await store.insert(ORG, rows)
            done += size
        elapsed = time.perf_counter() - start
        print(f"  {done:>9,} passages  {done / elapsed:,.0f}/s", flush=True)
    return done / (time.perf_counter() - start)


async def copy_load(url: str, data: Synthetic, agents: int, per_agent: int, batch: int) -> float:
    """Seeds passages with COPY (rows as the service writes them, tags joined afterwards); passages/s."""
    import asyncpg  # type: ignore[import-untyped]
    from pgvector.asyncpg import register_vector

    host = url.split("host=")[1]
    database = url.split("@/", 1)[1].split("?", maxsplit=1)[0]
    conn = await asyncpg.connect(host=host, user="postgres", database=database)
    try:
        schema = await conn.fetchval(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'vector'"
        )
        await register_vector(conn, schema=schema)
        columns = [
            "id", "org_id", "agent_id", "text", "scope", "tags", "embedding_model", "embedding_dim",
            "embedding", "created_at", "created_epoch", "source_id", "file_id", "chunk_index", "speaker",
            "metadata_json",
        ]  # fmt: skip
        base = datetime(2025, 1, 1, tzinfo=UTC)
        start = time.perf_counter()
        done = 0
        for offset in range(0, per_agent, batch):
            records = []
            for a in range(agents):
                size = min(batch, per_agent - offset)
                topics = data.rng.integers(0, TOPICS, size)
                vectors = data.vectors(a, topics)
                for j in range(size):
                    moment = base + timedelta(minutes=offset + j)
                    records.append(
                        (
                            f"bulk-{a}-{offset + j}", ORG, agent_id(a), data.text(int(topics[j])),
                            scope_token("agent", agent_id(a)), '["even"]' if (offset + j) % 2 == 0 else '["odd"]',
                            "synthetic/384", DIM, vectors[j], moment, moment.timestamp(), "", "", 0, "", "{}",
                        )
                    )  # fmt: skip
            await conn.copy_records_to_table(
                "passages", schema_name="memory", records=records, columns=columns
            )
            done += len(records)
            print(f"  {done:>9,} passages  {done / (time.perf_counter() - start):,.0f}/s", flush=True)
        await conn.execute(
            "INSERT INTO memory.passage_tags (passage_pk, tag, org_id) "
            "SELECT pk, json_array_elements_text(tags::json), org_id FROM memory.passages"
        )
        return done / (time.perf_counter() - start)
    finally:
        await conn.close()


async def index_definition(db: Database) -> str:
    def read(conn: Connection) -> str:
        return str(conn.scalar(text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"), {"n": INDEX}))

    return await db.read(read)


async def build_index(db: Database, definition: str) -> float:
    def tx(conn: Connection) -> None:
        conn.execute(text("SET LOCAL maintenance_work_mem = '4GB'"))
        conn.execute(text("SET LOCAL max_parallel_maintenance_workers = 1"))
        conn.execute(text(definition))

    start = time.perf_counter()
    await db.write(tx)
    return time.perf_counter() - start


async def drop_index(db: Database) -> None:
    def tx(conn: Connection) -> None:
        conn.execute(text(f"DROP INDEX {INDEX}"))

    await db.write(tx)


async def searches(
    store: PgPassageStore, data: Synthetic, agents: int, queries: int
) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"vector": [], "keyword": [], "hybrid": [], "vector, tag filter": []}
    everything = PassageFilter()
    tagged = PassageFilter(tags=("odd",))
    for q in range(queries):
        a = q % agents
        scopes = [Scope("agent", agent_id(a))]
        topic = int(data.rng.integers(0, TOPICS))
        probe = data.vectors(a, np.array([topic]))[0]
        terms = [f"topic{topic}a", str(data.words[int(data.rng.integers(0, 200))])]

        start = time.perf_counter()
        await store.vector_search(ORG, scopes, "synthetic/384", probe, 10, everything)
        timings["vector"].append(time.perf_counter() - start)

        start = time.perf_counter()
        await store.vector_search(ORG, scopes, "synthetic/384", probe, 10, tagged)
        timings["vector, tag filter"].append(time.perf_counter() - start)

        start = time.perf_counter()
        await store.keyword_search(ORG, scopes, terms, 10, everything, budget=1000)
        timings["keyword"].append(time.perf_counter() - start)

        start = time.perf_counter()
        vector, keyword = await asyncio.gather(
            store.vector_search(ORG, scopes, "synthetic/384", probe, 40, everything),
            store.keyword_search(ORG, scopes, terms, 40, everything, budget=1000),
        )
        ranked = fuse(vector, keyword, 10)
        await store.by_pks(ORG, [hit.pk for hit in ranked])
        timings["hybrid"].append(time.perf_counter() - start)
    return timings


async def sizes(db: Database) -> dict[str, float]:
    def read(conn: Connection) -> dict[str, float]:
        mb = 1024 * 1024
        return {
            "passages table + indexes (MB)": conn.scalar(text("SELECT pg_total_relation_size('passages')"))
            / mb,
            "HNSW index (MB)": conn.scalar(text(f"SELECT pg_relation_size('{INDEX}')")) / mb,
            "full-text GIN index (MB)": sum(
                conn.scalars(
                    text(
                        "SELECT pg_relation_size(indexrelid::regclass) FROM pg_index i JOIN pg_class c "
                        "ON c.oid = i.indexrelid WHERE c.relname LIKE '%search_text%'"
                    )
                )
            )
            / mb,
        }

    return await db.read(read)


def postgres_rss_mb(data_dir: str) -> float:
    """Resident memory of the Postgres server processes (postmaster and its backends)."""
    total = 0.0
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            if process.info["name"] == "postgres" or any(
                data_dir in part for part in (process.info["cmdline"] or [])
            ):
                total += process.memory_info().rss
        except psutil.Error:
            continue
    return total / (1024 * 1024)


async def measure(args: argparse.Namespace) -> None:
    per_agent = args.passages // args.agents
    data = Synthetic(args.agents)
    with embedded_postgres() as url:
        db = Database(url, schema="memory", readers=2)
        try:
            await upgrade(db, MIGRATIONS)
            store = PgPassageStore(db)
            definition = await index_definition(db)
            await drop_index(db)
            figures: dict[str, str] = {"passages": f"{per_agent * args.agents:,} in {args.agents} agents"}
            print(
                f"COPY load: {args.agents} agents x {per_agent:,} passages (HNSW index dropped)", flush=True
            )
            figures["COPY load, GIN maintained, no HNSW (passages/s)"] = (
                f"{await copy_load(url, data, args.agents, per_agent, args.batch):,.0f}"
            )

            def analyze(conn: Connection) -> None:
                conn.execute(text("ANALYZE passages"))

            await db.write(analyze)
            report(figures)
            for kind, samples in (await searches(store, data, args.agents, args.queries)).items():
                figures[f"{kind} search p50 / p99 (ms), exact: no HNSW"] = summary(samples)
            report(figures)
            print("building the HNSW index", flush=True)
            figures["HNSW build (s)"] = f"{await build_index(db, definition):.0f}"
            await db.write(analyze)
            report(figures)
            more = Synthetic(args.agents, seed=11)
            print("inserts through the service's store, with the HNSW index", flush=True)
            rate = await load(store, more, args.agents, args.extra_per_agent, args.extra_per_agent, "more")
            figures["insert via PgPassageStore.insert, with HNSW (passages/s)"] = f"{rate:,.0f}"
            print(f"searching ({args.queries} queries per kind)", flush=True)
            await searches(store, data, args.agents, min(args.queries, 50))  # warm the caches
            for kind, samples in (await searches(store, data, args.agents, args.queries)).items():
                figures[f"{kind} search p50 / p99 (ms), HNSW"] = summary(samples)
            host = url.split("host=")[1]
            for name, value in (await sizes(db)).items():
                figures[name] = f"{value:,.0f}"
            figures["Postgres RSS, all processes (MB)"] = f"{postgres_rss_mb(host):,.0f}"
            report(figures)
        finally:
            await db.dispose()


def summary(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"{statistics.median(ms):.1f} / {percentile(ms, 99):.1f}"


def report(figures: dict[str, str]) -> None:
    """Prints the figures so far (a long run that is cut short still leaves them)."""
    print("\nScale on Postgres 18 + pgvector, one organization, synthetic 384-d vectors")
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"  {name:<{width}}  {value}")
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--extra-per-agent", type=int, default=50)
    parser.add_argument("--queries", type=int, default=400)
    args = parser.parse_args()
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
