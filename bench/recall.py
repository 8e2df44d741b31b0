"""Retrieval quality on long multi-session conversations: evidence recall@1/5/10/20 and search latency, for the
textbook hybrid search (`rrf`: reciprocal rank fusion of MiniLM cosine and BM25) and the default contextual
search, in one run.

The conversations, questions and evidence turns come from `bench/conversations.py` (generated, nothing
copied). Every dialog turn is stored as one archival passage ("<speaker>: <text>", at the turn's time, the
speaker recorded) through the real memory service over gRPC, embedded by the real llm-gateway; every question
is one SearchPassages call (top_k 20). Evidence recall@k of a question is the share of its evidence turns
among the first k results, averaged over questions.

Two splits: `tune` (the weights of docs/adr/0203 were chosen on it) and `heldout` (another seed, other people
and places, other question phrasings), reported separately. Both rankings search the same stored rows: the
mesh runs with `MNEMO_SEARCH_RANKING=rrf`, then is restarted on the same database with `contextual`.

Scale: the held-out conversations are copied (texts and stored vectors) into one agent padded to `--scale`
passages with the turns of other generated conversations (other people, the same kinds of topics: realistic
distractors) through the memory service's own store code (a bench-only shortcut: 100k gRPC inserts take
long); the pad turns' distinct texts are really embedded by the llm-gateway. Every held-out question is then
asked of that agent: latency and recall at that size.

    python -m bench.recall                             # make bench-recall
    python -m bench.recall --conversations 4 --scale 0 # a quick look
    python -m bench.recall --backend postgres          # the mesh on an embedded Postgres 18 + pgvector
    python -m bench.recall --tune                      # also search the weights on the tune split
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import psutil
from google.protobuf import timestamp_pb2
from sqlalchemy import select

from bench.conversations import Conversation, Question, conversations
from bench.memory import database, memory_db, passage_store
from bench.mesh import percentile
from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo.memory.v1 import passage_pb2, passage_pb2_grpc
from mnemo_core.actor import acting_as
from mnemo_core.channels import mesh_channel, mesh_stub
from mnemo_core.ids import new_id
from mnemo_core.wire import utcnow
from mnemo_gateway.auth import DEFAULT_ACTOR
from mnemo_memory.archival import HYBRID_KEYWORD_BUDGET, PassageSearch
from mnemo_memory.embedding import Embedder
from mnemo_memory.passage_store import NewPassage, PassageFilter, Scope, passages_t
from mnemo_memory.ranking import query_terms
from mnemo_memory.retrieval import (
    CANDIDATE_DEPTH,
    DEFAULT_WEIGHTS,
    Focus,
    Weights,
    candidates,
    keyword_candidates,
    named_speakers,
    score,
    vector_candidates,
    without_names,
)
from mnemo_memory.temporal import time_hint
from tests.harness import RunningMesh, mesh_env, running_mesh

KS = (1, 5, 10, 20)
RANKINGS = ("rrf", "contextual")
MODEL = "local/all-minilm-l6-v2"
ORG = DEFAULT_ACTOR.org_id


@dataclass
class Scores:
    """Evidence recall per question at each k (and @10 by question kind), and search latencies."""

    recall: dict[int, list[float]] = field(default_factory=lambda: {k: [] for k in KS})
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)
    # CPU time per search of the memory service and of the llm-gateway (query embedding): unlike latency,
    # not inflated by other work on the machine.
    cpu_ms: dict[str, float] = field(default_factory=dict)

    def add(self, question: Question, found: Sequence[str], elapsed_ms: float | None = None) -> None:
        evidence = set(question.evidence)
        for k in KS:
            self.recall[k].append(len(evidence & set(found[:k])) / len(evidence))
        self.by_kind.setdefault(question.kind, []).append(len(evidence & set(found[:10])) / len(evidence))
        if elapsed_ms is not None:
            self.latency_ms.append(elapsed_ms)

    def at(self, k: int) -> float:
        return statistics.mean(self.recall[k])

    def line(self) -> str:
        recalls = "  ".join(f"R@{k} {self.at(k):.3f}" for k in KS)
        if not self.latency_ms:
            return recalls
        latency = self.latency_ms
        cpu = "  ".join(f"cpu {name} {ms:4.1f} ms" for name, ms in self.cpu_ms.items())
        return f"{recalls}   p50 {statistics.median(latency):6.1f} ms  p99 {percentile(latency, 99):6.1f} ms  {cpu}"

    def kinds(self) -> str:
        return "  ".join(
            f"{kind} {statistics.mean(v):.2f} ({len(v)})" for kind, v in sorted(self.by_kind.items())
        )


@dataclass
class Stored:
    """Where the generated conversations went: their agents and the passages of their turns."""

    agent_of: dict[str, str] = field(default_factory=dict)
    turn_of: dict[str, str] = field(default_factory=dict)
    scale_agent: str = ""
    scale_size: int = 0


def stamp(when: datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(when)
    return result


async def ingest(
    stub: passage_pb2_grpc.PassageServiceAsyncStub, talks: list[Conversation], stored: Stored
) -> None:
    """Stores every turn as one passage of its conversation's agent, in order, a few conversations at once."""
    gate = asyncio.Semaphore(4)

    async def one(talk: Conversation) -> None:
        agent = stored.agent_of.setdefault(talk.id, new_id("agent"))
        async with gate:
            for turn in talk.turns:
                response = await stub.CreatePassages(
                    passage_pb2.CreatePassagesRequest(
                        agent_id=agent,
                        text=turn.text,
                        speaker=turn.speaker,
                        create_time=stamp(turn.time),
                    )
                )
                stored.turn_of[response.passages[0].id] = turn.id

    await asyncio.gather(*(one(talk) for talk in talks))


def cpu_seconds(mesh: RunningMesh) -> dict[str, float]:
    """User + system CPU time so far of the memory service and the llm-gateway."""
    return {
        child.name: sum(psutil.Process(child.process.pid).cpu_times()[:2])
        for child in mesh.children
        if child.name in ("memory", "llm")
    }


async def evaluate(
    mesh: RunningMesh,
    stub: passage_pb2_grpc.PassageServiceAsyncStub,
    talks: list[Conversation],
    stored: Stored,
    *,
    scale: bool = False,
) -> Scores:
    """Asks every question of its conversation's agent (or of the scale agent)."""
    scores = Scores()
    before = cpu_seconds(mesh)
    for talk in talks:
        agent = stored.scale_agent if scale else stored.agent_of[talk.id]
        for question in talk.questions:
            started = time.perf_counter()
            response = await stub.SearchPassages(
                passage_pb2.SearchPassagesRequest(agent_id=agent, query=question.text, top_k=max(KS))
            )
            elapsed = (time.perf_counter() - started) * 1000
            scores.add(question, [stored.turn_of.get(m.passage.id, "") for m in response.matches], elapsed)
    after = cpu_seconds(mesh)
    scores.cpu_ms = {name: (after[name] - before[name]) * 1000 / len(scores.latency_ms) for name in after}
    return scores


async def embed_all(llm: llm_pb2_grpc.LlmServiceAsyncStub, texts: list[str]) -> dict[str, np.ndarray]:
    """Unit vectors of distinct texts, from the llm-gateway, 256 a call."""
    unique = list(dict.fromkeys(texts))
    vectors: dict[str, np.ndarray] = {}
    for start in range(0, len(unique), 256):
        batch = unique[start : start + 256]
        response = await llm.Embed(llm_pb2.EmbedRequest(inputs=batch))
        for text, embedding in zip(batch, response.embeddings, strict=True):
            vector = np.array(embedding.values, np.float32)
            vectors[text] = vector / np.linalg.norm(vector)
    return vectors


async def build_scale_agent(
    mesh: RunningMesh, args: argparse.Namespace, heldout: list[Conversation], stored: Stored
) -> None:
    """One agent holding the held-out conversations among pad conversations, `args.scale` passages in all."""
    real = sum(len(talk.turns) for talk in heldout)
    pads: list[Conversation] = []
    count = real
    index = 0
    while count < args.scale:
        pad = conversations("tune", 9_000 + args.seed, 1, first=index)[0]
        pads.append(pad)
        count += len(pad.turns)
        index += 1
    print(
        f"scale: {real} held-out turns among {count - real} pad turns ({len(pads)} conversations)", flush=True
    )
    started = time.perf_counter()
    async with mesh_channel(mesh.address("llm")) as channel:
        pad_vectors = await embed_all(
            mesh_stub(llm_pb2_grpc.LlmServiceStub, channel, mesh.credential),
            [turn.text for pad in pads for turn in pad.turns],
        )
    print(
        f"  embedded {len(pad_vectors)} distinct pad texts in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    db = memory_db(mesh, args)
    store = passage_store(db)
    passage_ids = list(stored.turn_of)

    def read(conn: object) -> dict[str, np.ndarray]:
        rows = conn.execute(  # type: ignore[attr-defined]
            select(passages_t.c.id, passages_t.c.embedding).where(passages_t.c.id.in_(passage_ids))
        )
        return {row.id: _vector(row.embedding) for row in rows}

    real_vectors = await db.read(read)
    turn_vector = {turn_id: real_vectors[pid] for pid, turn_id in stored.turn_of.items()}
    agent = new_id("agent")
    # Held-out conversations spread among the pads; each conversation's turns stay together and in order.
    order: list[tuple[Conversation, bool]] = [(pad, False) for pad in pads]
    for i, talk in enumerate(heldout):
        order.insert((i * len(order)) // max(1, len(heldout)), (talk, True))
    batch: list[NewPassage] = []
    copies: dict[str, str] = {}
    started = time.perf_counter()
    for talk, is_real in order:
        for turn in talk.turns:
            passage_id = new_id("passage")
            if is_real:
                copies[passage_id] = turn.id
            batch.append(
                NewPassage(
                    id=passage_id,
                    text=turn.text,
                    created_at=turn.time,
                    agent_id=agent,
                    speaker=turn.speaker,
                    model=MODEL,
                    vector=turn_vector[turn.id] if is_real else pad_vectors[turn.text],
                )
            )
            if len(batch) == 2000:
                await store.insert(ORG, batch)
                batch = []
    if batch:
        await store.insert(ORG, batch)
    if not db.is_sqlite:
        await db.write(lambda conn: conn.exec_driver_sql("ANALYZE passages"))
    await db.dispose()
    stored.turn_of.update(copies)
    stored.scale_agent = agent
    stored.scale_size = count
    print(f"  stored in {time.perf_counter() - started:.0f} s", flush=True)


def _vector(value: object) -> np.ndarray:
    if isinstance(value, bytes | bytearray | memoryview):
        return np.frombuffer(value, np.float32).copy()
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy is not None else value, np.float32)


async def tune(
    mesh: RunningMesh, args: argparse.Namespace, talks: list[Conversation], stored: Stored
) -> None:
    """Gathers each tune question's candidates once (as contextual search does), then tries weight grids."""
    db = memory_db(mesh, args)
    store = passage_store(db)
    gathered = []
    async with mesh_channel(mesh.address("llm")) as channel:
        embedder = Embedder(mesh_stub(llm_pb2_grpc.LlmServiceStub, channel, mesh.credential))
        for talk in talks:
            agent = stored.agent_of[talk.id]
            for question in talk.questions:
                hint = time_hint(question.text, utcnow())
                named = named_speakers(question.text, await store.speakers(ORG, Scope("agent", agent)))
                topic = without_names(question.text, named) if named else question.text
                source = PassageSearch(
                    store,
                    ORG,
                    [Scope("agent", agent)],
                    query_terms(topic),
                    PassageFilter(),
                    HYBRID_KEYWORD_BUDGET,
                )
                vector = (await embedder.embed([topic], "")).vectors[0]
                focus = Focus(hint, frozenset(named))
                vector_lists = await vector_candidates(source, vector, MODEL, focus, CANDIDATE_DEPTH)
                keyword_lists = await keyword_candidates(source, CANDIDATE_DEPTH)
                contexts = await source.context(
                    candidates(vector_lists, keyword_lists), MODEL, neighbours=True
                )
                gathered.append((question, vector, vector_lists, keyword_lists, contexts, hint, named))
        pk_to_turn = await db.read(
            lambda conn: {
                row.pk: stored.turn_of.get(row.id, "")
                for row in conn.execute(select(passages_t.c.pk, passages_t.c.id))
            }
        )
    await db.dispose()

    def measure(weights: Weights) -> Scores:
        scores = Scores()
        for question, vector, vector_lists, keyword_lists, contexts, hint, named in gathered:
            ranked = score(vector, vector_lists, keyword_lists, contexts, hint, max(KS), weights, named)
            scores.add(question, [pk_to_turn.get(hit.pk, "") for hit in ranked])
        return scores

    print(f"tune: current weights {DEFAULT_WEIGHTS}: {measure(DEFAULT_WEIGHTS).line()}", flush=True)
    grid = itertools.product(
        [0.05, 0.1, 0.2], [0.2, 0.3, 0.45], [0.05, 0.1, 0.15], [0.0, 0.1, 0.2], [0.1, 0.2, 0.3, 0.45]
    )
    results = []
    for keyword, period, recency, neighbours, speaker in grid:
        weights = Weights(1.0, keyword, period, recency, neighbours, speaker)
        scores = measure(weights)
        results.append((scores.at(10), scores.at(5), scores.at(1), weights))
    results.sort(key=lambda r: r[:3], reverse=True)
    for r10, r5, r1, weights in results[:8]:
        print(f"  R@10 {r10:.3f} R@5 {r5:.3f} R@1 {r1:.3f}  {weights}", flush=True)


async def measure(args: argparse.Namespace) -> None:
    tune_talks = conversations("tune", args.seed, args.conversations)
    heldout_talks = conversations("heldout", args.seed + 1, args.conversations)
    for name, talks in (("tune", tune_talks), ("heldout", heldout_talks)):
        turns = sum(len(t.turns) for t in talks)
        print(
            f"{name}: {len(talks)} conversations, {turns} turns, {sum(len(t.questions) for t in talks)} questions"
        )
    results: dict[tuple[str, str], Scores] = {}
    rss: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        home = args.home or stack.enter_context(tempfile.TemporaryDirectory(prefix="mnemo-bench-recall-"))
        url = stack.enter_context(database(args.backend))
        args.database_url = url
        state = Path(home) / "bench-recall.json"
        stored = Stored(**json.loads(state.read_text())) if args.home and state.exists() else Stored()
        for ranking in RANKINGS:
            extra = {"MNEMO_SEARCH_RANKING": ranking, "MNEMO_EMBEDDING_ENCODER": args.encoder}
            if url:
                extra["MNEMO_DATABASE_URL"] = url
            env = mesh_env(Path(home), provider_url=None, extra=extra)
            async with running_mesh(env) as mesh, mesh_channel(mesh.address("memory")) as channel:
                stub = mesh_stub(passage_pb2_grpc.PassageServiceStub, channel, mesh.credential)
                with acting_as(DEFAULT_ACTOR):
                    if not stored.agent_of:
                        started = time.perf_counter()
                        await ingest(stub, tune_talks + heldout_talks, stored)
                        print(f"ingested through gRPC in {time.perf_counter() - started:.0f} s", flush=True)
                        if args.scale:
                            await build_scale_agent(mesh, args, heldout_talks, stored)
                        if args.home:
                            state.write_text(json.dumps(dataclasses.asdict(stored)))
                    if args.tune and ranking == "contextual":
                        await tune(mesh, args, tune_talks, stored)
                    for split, talks in (("tune", tune_talks), ("heldout", heldout_talks)):
                        results[ranking, split] = await evaluate(mesh, stub, talks, stored)
                        print(f"{ranking:>10} {split:<8} {results[ranking, split].line()}", flush=True)
                    if stored.scale_agent:
                        await stub.SearchPassages(
                            passage_pb2.SearchPassagesRequest(agent_id=stored.scale_agent, query="warm up")
                        )
                        results[ranking, "scale"] = await evaluate(
                            mesh, stub, heldout_talks, stored, scale=True
                        )
                        print(f"{ranking:>10} {'scale':<8} {results[ranking, 'scale'].line()}", flush=True)
                    memory = next(child for child in mesh.children if child.name == "memory")
                    rss[ranking] = psutil.Process(memory.process.pid).memory_info().rss / 2**20
    print(f"\nbackend {args.backend}; evidence recall@k and SearchPassages latency (top_k 20) over gRPC")
    for split in ("tune", "heldout", "scale"):
        for ranking in RANKINGS:
            if (ranking, split) not in results:
                continue
            label = f"{split} ({stored.scale_size} passages)" if split == "scale" else split
            print(f"{ranking:>10}  {label:<22} {results[ranking, split].line()}")
    print("memory service RSS after the searches: " + ", ".join(f"{r} {mb:.0f} MB" for r, mb in rss.items()))
    for split in ("heldout", "scale"):
        for ranking in RANKINGS:
            if (ranking, split) in results:
                print(f"{ranking:>10}  {split:<8} recall@10 by kind: {results[ranking, split].kinds()}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--conversations", type=int, default=12, help="per split (at most 12: distinct people)"
    )
    parser.add_argument("--seed", type=int, default=1, help="tune split seed; heldout uses seed + 1")
    parser.add_argument("--scale", type=int, default=100_000, help="passages of the scale agent (0: skip)")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--encoder", choices=["numpy", "onnx"], default="numpy")
    parser.add_argument("--tune", action="store_true", help="search fusion weights on the tune split")
    parser.add_argument(
        "--home", default="", help="keep the mesh's data here and reuse it next time (SQLite; same arguments)"
    )
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
