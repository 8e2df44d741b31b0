"""Memory benchmark: archival search at 100k passages, sends with 100k messages of history, file ingestion,
and the memory service's CPU per agent turn.

The whole mesh runs as real processes on SQLite (the fake zero-latency provider in its own process),
with the real local embedding model. Two bench-only shortcuts, both through the memory service's own
store code on its database file (so rows, full-text index and vectors are exactly what the service
writes):
- the 100k passages get vectors composed from 1,000 really embedded sentences (each passage joins two
  sentences; its vector is the normalised sum of theirs), because embedding 100k texts with the NumPy
  model takes minutes; every search query is embedded for real;
- the 100k history messages are appended through `History.append` and given composed vectors
  (`recall.store_vectors`), so the background embedder has no 100k backlog during the measurement.

    python -m bench.memory                       # everything (the 10 MB file takes ~15 min on 2 cores)
    python -m bench.memory --file-mb 1           # a smaller file
    python -m bench.memory --phases cpu,archival
    python -m bench.memory --phases archival --encoder onnx   # query embedding in ONNX Runtime
    python -m bench.memory --backend postgres --phases archival   # the mesh on an embedded Postgres 18 +
                                                 # pgvector (storing 100k passages with their HNSW index
                                                 # entries takes a few minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
from sqlalchemy import Connection, func, select, text

from bench.mesh import _wait_http, agent_body, percentile
from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo.memory.v1 import message_pb2_grpc, passage_pb2, passage_pb2_grpc, search_pb2
from mnemo_core.actor import acting_as
from mnemo_core.channels import mesh_channel, mesh_stub
from mnemo_core.db import Database
from mnemo_core.wire import utcnow
from mnemo_gateway.auth import DEFAULT_ACTOR
from mnemo_memory.history import History
from mnemo_memory.passage_store import NewPassage, PassageStore, SqlitePassageStore
from mnemo_memory.passage_store_pg import PgPassageStore
from mnemo_memory.recall import store_vectors, watermark
from mnemo_memory.store import messages_t
from mnemo_memory.vectors import VectorCache
from tests.fakes.llm_provider import free_port
from tests.harness import RunningMesh, mesh_env, running_mesh
from tests.postgres import embedded_postgres

MODEL = "local/all-minilm-l6-v2"
SUBJECTS = ["Ada", "Bruno", "Chen", "Dalia", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jana"]
VERBS = [
    "visited",
    "wrote about",
    "forgot",
    "bought",
    "recommended",
    "painted",
    "studied",
    "sold",
    "fixed",
    "lost",
]
OBJECTS = [
    "an old lighthouse",
    "a vegan bakery",
    "the jazz festival",
    "a mountain bike",
    "the quantum physics lecture",
    "a vintage camera",
    "the rooftop garden",
    "a chess tournament",
    "the harbour museum",
    "a sourdough starter",
]
TIMES = [
    "in March",
    "last winter",
    "on her birthday",
    "after work",
    "during the storm",
    "at dawn",
    "in Lisbon",
    "with friends",
    "twice",
    "yesterday",
]
QUERIES = [
    "Who went to a music event?",
    "Which person has a bicycle?",
    "Tell me about bread baking",
    "Did anyone go to a museum by the sea?",
    "Who likes photography equipment?",
    "Something about plants on a roof",
    "Which people play board games competitively?",
    "Who attended a science class?",
    "A coastal tower visit",
    "Who lost something important?",
]


@dataclass
class Figures:
    values: dict[str, tuple[float, str, str]]

    def add(self, name: str, value: float, unit: str, target: str = "") -> None:
        self.values[name] = (value, unit, target)
        print(f"  {name}: {value:.2f} {unit} {target}", flush=True)

    def print(self) -> None:
        print(f"\n{'measure':<52} {'value':>10}  unit      target")
        for name, (value, unit, target) in self.values.items():
            print(f"{name:<52} {value:>10.2f}  {unit:<8}  {target}")


def base_sentences() -> list[str]:
    return [f"{s} {v} {o} {t}." for s in SUBJECTS for v in VERBS for o in OBJECTS for t in TIMES[:1]] + [
        f"{s} {v} {o} {t}." for s in SUBJECTS for v in VERBS[:5] for o in OBJECTS[:2] for t in TIMES
    ]


async def embed(llm: llm_pb2_grpc.LlmServiceAsyncStub, texts: list[str]) -> np.ndarray:
    parts = []
    for start in range(0, len(texts), 256):
        response = await llm.Embed(llm_pb2.EmbedRequest(inputs=texts[start : start + 256]))
        parts.append(np.array([list(e.values) for e in response.embeddings], np.float32))
    return np.concatenate(parts)


def composed(base: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    pairs = rng.integers(0, len(base), size=(count, 2))
    vectors = base[pairs[:, 0]] + 0.7 * base[pairs[:, 1]]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return pairs, vectors.astype(np.float32)


def memory_db(mesh: RunningMesh, args: argparse.Namespace) -> Database:
    """The memory service's own database, through its own SQL runner."""
    url = args.database_url or f"sqlite+aiosqlite:///{mesh.home / 'data' / 'memory.db'}"
    return Database(url, schema="memory")


def passage_store(db: Database) -> PassageStore:
    return SqlitePassageStore(db, VectorCache(1 << 30)) if db.is_sqlite else PgPassageStore(db)


@contextlib.contextmanager
def database(backend: str) -> Iterator[str]:
    """ "" for each service's own SQLite file, or the URL of a fresh embedded Postgres (stopped afterwards)."""
    if backend == "sqlite":
        yield ""
        return
    with tempfile.TemporaryDirectory(prefix="mnemo-bench-pg-") as directory:
        Path(directory).chmod(0o777)  # the server runs as its own user and keeps its socket here
        with embedded_postgres(Path(directory) / "data") as url:
            yield url


async def archival_phase(
    mesh: RunningMesh, api: httpx.AsyncClient, args: argparse.Namespace, figures: Figures
) -> None:
    print(f"archival: seeding {args.passages} passages", flush=True)
    agent = (await api.post("/v1/agents", json=agent_body(0))).json()
    sentences = base_sentences()
    rng = np.random.default_rng(7)
    async with (
        mesh_channel(mesh.address("llm")) as llm_channel,
        mesh_channel(mesh.address("memory")) as channel,
    ):
        llm = mesh_stub(llm_pb2_grpc.LlmServiceStub, llm_channel, mesh.credential)
        with acting_as(DEFAULT_ACTOR):
            started = time.perf_counter()
            base = await embed(llm, sentences)
            print(
                f"  embedded {len(sentences)} base sentences in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            pairs, vectors = composed(base, args.passages, rng)
            db = memory_db(mesh, args)
            store = passage_store(db)
            ids: list[str] = []
            started = time.perf_counter()
            for start in range(0, args.passages, 2000):
                batch = [
                    NewPassage(
                        id=f"passage-bench-{i}",
                        text=f"{sentences[pairs[i, 0]]} {sentences[pairs[i, 1]]}",
                        created_at=utcnow(),
                        agent_id=agent["id"],
                        model=MODEL,
                        vector=vectors[i],
                    )
                    for i in range(start, min(start + 2000, args.passages))
                ]
                ids += [p.id for p in await store.insert(DEFAULT_ACTOR.org_id, batch)]
            if not db.is_sqlite:
                await db.write(
                    lambda conn: conn.execute(text("ANALYZE passages"))
                )  # as autovacuum soon would
            await db.dispose()
            print(f"  stored in {time.perf_counter() - started:.1f} s", flush=True)
            index_of = {passage_id: i for i, passage_id in enumerate(ids)}

            stub = mesh_stub(passage_pb2_grpc.PassageServiceStub, channel, mesh.credential)
            queries = [
                f"{q} {extra}" for q in QUERIES for extra in ("", "please", "I wonder", "recently", "again")
            ]
            queries += [f"What did {s} do {t}?" for s in SUBJECTS for t in TIMES]
            queries = list(dict.fromkeys(queries))[: args.queries]
            started = time.perf_counter()
            await stub.SearchPassages(
                passage_pb2.SearchPassagesRequest(agent_id=agent["id"], query="warm up")
            )
            figures.add(
                "archival: first search (SQLite: loads the vectors)",
                (time.perf_counter() - started) * 1000,
                "ms",
            )
            query_vectors = await embed(llm, queries)
            for name, mode in (
                ("hybrid", search_pb2.SEARCH_MODE_HYBRID),
                ("vector", search_pb2.SEARCH_MODE_VECTOR),
                ("keyword", search_pb2.SEARCH_MODE_KEYWORD),
            ):
                times, found_ids = [], []
                for query in queries:
                    started = time.perf_counter()
                    found = await stub.SearchPassages(
                        passage_pb2.SearchPassagesRequest(
                            agent_id=agent["id"], query=query, top_k=10, mode=mode
                        )
                    )
                    times.append((time.perf_counter() - started) * 1000)
                    found_ids.append({index_of[m.passage.id] for m in found.matches})
                recalls = []
                if name == "vector":  # after the timed loop, so the bench's own work does not skew it
                    for qi, got in enumerate(found_ids):
                        exact = set(np.argsort(-(vectors @ query_vectors[qi]))[:10].tolist())
                        recalls.append(len(exact & got) / 10)
                target_p50 = "<= 15" if name == "hybrid" else ""
                target_p99 = "<= 40" if name == "hybrid" else ""
                figures.add(
                    f"archival search {name} p50 ({args.passages} passages)",
                    statistics.median(times),
                    "ms",
                    target_p50,
                )
                figures.add(f"archival search {name} p99", percentile(times, 99), "ms", target_p99)
                if recalls:
                    figures.add(
                        "archival vector recall@10 vs exact search", statistics.mean(recalls), "ratio"
                    )
            times = []
            for query in queries:
                started = time.perf_counter()
                await llm.Embed(llm_pb2.EmbedRequest(inputs=[query]))
                times.append((time.perf_counter() - started) * 1000)
            figures.add("  of which: query embedding p50 (llm-gateway)", statistics.median(times), "ms")


async def history_phase(
    mesh: RunningMesh, api: httpx.AsyncClient, args: argparse.Namespace, figures: Figures
) -> None:
    print(f"history: seeding {args.messages} messages", flush=True)
    empty = (await api.post("/v1/agents", json=agent_body(1))).json()
    big = (await api.post("/v1/agents", json=agent_body(2))).json()
    actor = DEFAULT_ACTOR
    db = memory_db(mesh, args)
    history = History(db)
    started = time.perf_counter()
    for batch in range(0, args.messages, 1000):
        messages = [
            message_pb2.Message(
                user=message_pb2.UserContent(text=f"Message {i}: topic {i % 97} and item {i % 13}.")
            )
            if i % 2 == 0
            else message_pb2.Message(
                assistant=message_pb2.AssistantContent(text=f"Reply {i} about topic {i % 97}.")
            )
            for i in range(batch, min(batch + 1000, args.messages))
        ]
        await history.append(actor.org_id, big["id"], f"run-seed-{batch}", 0, messages)
    rng = np.random.default_rng(3)

    def seeded(conn: Connection) -> None:
        rows = conn.execute(
            select(
                messages_t.c.pk,
                messages_t.c.org_id,
                messages_t.c.agent_id,
                messages_t.c.kind,
                messages_t.c.created_at,
            )
            .where(messages_t.c.agent_id == big["id"])
            .order_by(messages_t.c.pk)
        ).all()
        vectors = rng.standard_normal((len(rows), 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store_vectors(
            conn,
            [(row, vectors[i], MODEL) for i, row in enumerate(rows)],
            watermark(conn),
            int(conn.scalar(select(func.max(messages_t.c.pk)))),
        )

    await db.write(seeded)
    await db.dispose()
    print(f"  seeded in {time.perf_counter() - started:.1f} s", flush=True)
    async with mesh_channel(mesh.address("memory")) as channel:
        stub = mesh_stub(message_pb2_grpc.MessageServiceStub, channel, mesh.credential)
        with acting_as(actor):
            page = await stub.ListMessages(
                history_pb2.ListMessagesRequest(
                    agent_id=big["id"], page_size=20, order=history_pb2.LIST_ORDER_DESCENDING
                )
            )
            await stub.CompactContextWindow(
                history_pb2.CompactContextWindowRequest(
                    agent_id=big["id"],
                    keep_from_message_id=page.messages[-1].id,
                    summary=message_pb2.Message(
                        event=message_pb2.EventContent(
                            type=message_pb2.EVENT_TYPE_SUMMARY, text="Earlier: many topics."
                        )
                    ),
                )
            )
    timings: dict[str, list[float]] = {"empty": [], "big": []}
    for i in range(args.sends + 10):
        for name, agent in (("empty", empty), ("big", big)):
            started = time.perf_counter()
            response = await api.post(
                f"/v1/agents/{agent['id']}/messages", json={"messages": [{"content": f"hi {i}"}]}
            )
            response.raise_for_status()
            if i >= 10:
                timings[name].append((time.perf_counter() - started) * 1000)
    empty_p50, big_p50 = statistics.median(timings["empty"]), statistics.median(timings["big"])
    figures.add("send p50, empty agent", empty_p50, "ms")
    figures.add(f"send p50, agent with {args.messages} messages of history", big_p50, "ms")
    figures.add("  ratio (history / empty)", big_p50 / empty_p50, "x", "<= 1.2")


async def file_phase(
    mesh: RunningMesh, api: httpx.AsyncClient, args: argparse.Namespace, figures: Figures
) -> None:
    size = int(args.file_mb * 1024 * 1024)
    rng = random.Random(11)
    words = [w.strip(".").lower() for s in base_sentences()[:200] for w in s.split()]
    paragraphs, total = [], 0
    while total < size:
        paragraph = " ".join(rng.choice(words) for _ in range(rng.randint(40, 160))) + "."
        paragraphs.append(paragraph)
        total += len(paragraph) + 2
    content = "\n\n".join(paragraphs).encode()[:size]
    source = (await api.post("/v1/sources", json={"name": f"bench-{time.time()}"})).json()
    print(f"file: uploading {len(content) / 2**20:.1f} MB", flush=True)
    started = time.perf_counter()
    uploaded = await api.post(
        f"/v1/sources/{source['id']}/upload",
        files={"file": ("bench.txt", content, "text/plain")},
        timeout=600,
    )
    uploaded.raise_for_status()
    job_id = uploaded.json()["job"]["id"]
    last_report = started
    while True:
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] in ("completed", "failed"):
            break
        if time.perf_counter() - last_report > 30:
            last_report = time.perf_counter()
            print(f"  {job['chunks_done']}/{job['chunks_total']} chunks", flush=True)
        await asyncio.sleep(0.5)
    elapsed = time.perf_counter() - started
    assert job["status"] == "completed", job
    figures.add(f"file ingestion {len(content) / 2**20:.1f} MB: chunks", job["chunks_total"], "chunks")
    figures.add("  upload to searchable", elapsed, "s")
    figures.add("  throughput", job["chunks_total"] / elapsed, "chunks/s")


async def cpu_phase(
    mesh: RunningMesh, api: httpx.AsyncClient, args: argparse.Namespace, figures: Figures
) -> None:
    memory = next(psutil.Process(c.process.pid) for c in mesh.children if c.name == "memory")
    ids = [(await api.post("/v1/agents", json=agent_body(10 + i))).json()["id"] for i in range(8)]
    for i in range(40):
        await api.post(f"/v1/agents/{ids[i % 8]}/messages", json={"messages": [{"content": "warm"}]})
    await asyncio.sleep(1.0)  # let the background embedder catch up with the warm-up
    before = sum(memory.cpu_times()[:2])
    done = 0

    async def worker(k: int) -> None:
        nonlocal done
        for j in range(args.cpu_sends // 4):
            response = await api.post(
                f"/v1/agents/{ids[k]}/messages", json={"messages": [{"content": f"m {j}"}]}
            )
            response.raise_for_status()
            done += 1

    await asyncio.gather(*(worker(k) for k in range(4)))
    await asyncio.sleep(1.0)  # the embedding of the last turns' messages is part of their cost
    used = sum(memory.cpu_times()[:2]) - before
    figures.add("memory service CPU per agent turn", used / done * 1000, "ms", "<= 3")


async def measure(args: argparse.Namespace) -> Figures:
    figures = Figures({})
    port = free_port()
    provider = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
        [sys.executable, "-m", "tests.fakes.llm_provider", "--port", str(port), "--no-record"]
    )
    phases = set(args.phases.split(","))
    try:
        await _wait_http(f"http://127.0.0.1:{port}/_fake/requests")
        with tempfile.TemporaryDirectory() as home, database(args.backend) as url:
            args.database_url = url
            extra = {"MNEMO_EMBEDDING_ENCODER": args.encoder}
            if url:
                extra["MNEMO_DATABASE_URL"] = url
            env = mesh_env(Path(home), provider_url=f"http://127.0.0.1:{port}/v1", extra=extra)
            async with (
                running_mesh(env) as mesh,
                httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=120) as api,
            ):
                for name, phase in (
                    ("cpu", cpu_phase),
                    ("archival", archival_phase),
                    ("history", history_phase),
                    ("file", file_phase),
                ):
                    if name in phases:
                        await phase(mesh, api, args, figures)
    finally:
        provider.terminate()
        provider.wait()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phases", default="cpu,archival,history,file")
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="the mesh's database (default: sqlite)",
    )
    parser.add_argument(
        "--encoder",
        choices=["numpy", "onnx"],
        default="numpy",
        help="where the local embedding model's layers run (onnx needs the `onnx` extra)",
    )
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--sends", type=int, default=100)
    parser.add_argument("--cpu-sends", type=int, default=400)
    parser.add_argument("--file-mb", type=float, default=10.0)
    args = parser.parse_args()
    figures = asyncio.run(measure(args))
    print(f"\nbackend: {args.backend}")
    figures.print()


if __name__ == "__main__":
    main()
