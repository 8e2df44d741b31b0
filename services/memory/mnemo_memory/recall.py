"""Recall memory: searching an agent's whole message history by words and by meaning.

Messages are embedded by `MessageEmbedder`, a background task woken after each append: it never
sits on the append's path, batches whatever arrived meanwhile (one model call for many
messages), and remembers how far it got (a watermark on the messages' ever-growing keys), so a
restart resumes where it stopped. Until a message is embedded it is found by its words only;
`pending` tells how many are waiting. Evicted messages stay in the history and stay searchable.
Words and vectors are searched by a `MessageIndex`: on SQLite FTS5 and in-memory vectors
(`SqliteMessageIndex`), on Postgres full-text search and pgvector (`recall_pg.PgMessageIndex`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Connection, and_, bindparam, func, insert, null, select, text, update

from mnemo.common.v1 import message_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo_core.actor import Actor, acting_as
from mnemo_core.db import Database, table_of
from mnemo_core.errors import MnemoError
from mnemo_core.ids import require_id
from mnemo_core.proto_enums import EnumNames
from mnemo_core.wire import utcnow
from mnemo_memory.archival import (
    CONTEXTUAL,
    HYBRID_KEYWORD_BUDGET,
    KEYWORD_BUDGET,
    check_query,
    check_window,
)
from mnemo_memory.embedding import Embedder
from mnemo_memory.history import parse_messages
from mnemo_memory.models import EmbeddingProgressRow, MessageRow, MessageVectorRow
from mnemo_memory.passage_store import (
    PassageFilter,
    adjacent,
    neighbourhood,
    newest_matches_from,
    sqlite_in_months,
)
from mnemo_memory.ranking import (
    Ranked,
    fts5_any,
    keyword_terms,
    query_terms,
    scope_token,
    scoped_match,
)
from mnemo_memory.retrieval import (
    CANDIDATE_DEPTH,
    DEFAULT_WEIGHTS,
    Context,
    FilteredSearch,
    Focus,
    Hits,
    Weights,
    keyword_candidates,
    ranked,
    vector_candidates,
)
from mnemo_memory.store import MessageQueries, wait_for_appends
from mnemo_memory.temporal import TimeHint, time_hint
from mnemo_memory.vectors import Floats, VectorCache, VectorFilter, VectorKey, VectorRows

log = logging.getLogger(__name__)

messages_t = table_of(MessageRow)
vectors_t = table_of(MessageVectorRow)
progress_t = table_of(EmbeddingProgressRow)

# Each content kind by its mnemo.memory.v1.MessageKind number (stored with every message vector).
MESSAGE_KINDS = EnumNames(history_pb2.MessageKind)
# Tool calls and returns are JSON and machine text: found by their words, not embedded.
EMBEDDED_KINDS = ("system", "user", "assistant", "reasoning", "event")
PROGRESS_NAME = "messages"
EMBED_BATCH = 128
# How long the embedder waits after a wake-up for more messages to batch with. A forward pass of the local
# model reads all its weights (~40 MB) whatever the batch holds, so under load a longer wait is fewer
# passes for the same messages; a message gets its vector about this long after it was stored (plus the
# model call), and is found by its words at once (docs/adr/0413-server-cpu-per-message.md).
GATHER_SECONDS = 1.0
EMBEDDER_USER = "mnemo-memory-embedder"
FUSION_DEPTH = 50


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Restrictions of a recall search: message kinds (none: all) and a time window."""

    kinds: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    # Months of the year (1-12, UTC) of the message's time; empty: any.
    months: frozenset[int] = frozenset()

    def within(self, focus: Focus) -> MessageFilter | None:
        """This filter narrowed to a query's period (messages have no speakers; None when nothing can pass)."""
        narrowed = PassageFilter(start=self.start, end=self.end, months=self.months).in_period(focus.hint)
        if narrowed is None:
            return None
        return MessageFilter(self.kinds, narrowed.start, narrowed.end, narrowed.months)


# (message row with pk, org_id, agent_id, kind, created_at; its unit vector; the embedding model)
Embedded = tuple[Any, Floats, str]


class MessageIndex(Protocol):
    """Searches of one agent's messages by words and by vectors; one implementation per backend."""

    async def keyword_search(
        self, org_id: str, agent_id: str, terms: list[str], where: MessageFilter, k: int, budget: int
    ) -> list[tuple[int, float]]:
        """The k messages matching any of the terms: (key, score where lower is better), best first."""
        ...

    async def vector_search(
        self, org_id: str, agent_id: str, model: str, query: Floats, where: MessageFilter, k: int
    ) -> list[tuple[int, float]]:
        """The k embedded messages nearest to `query`: (key, cosine similarity), best first."""
        ...

    async def stored(self, results: list[Embedded]) -> None:
        """Vectors the background embedder just committed (`store_vectors`)."""
        ...

    async def contexts(
        self, org_id: str, agent_id: str, pks: Sequence[int], model: str, *, neighbours: bool
    ) -> dict[int, Context]:
        """Vectors (None while not embedded) and times of messages, and their neighbours' when asked."""
        ...


@dataclass(frozen=True, slots=True)
class MessageHit:
    """A recall result: the message and how it ranked."""

    message: message_pb2.Message
    rank: Ranked


class MessageEmbedder:
    """Embeds appended messages in the background, in order, resuming after a restart."""

    def __init__(self, db: Database, embedder: Embedder, index: MessageIndex, *, model: str) -> None:
        self._db = db
        self._embedder = embedder
        self._index = index
        self._model = model
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """New messages were committed."""
        self._wake.set()
        self._idle.clear()

    def start(self) -> None:
        if self._task is None:
            self._wake.set()  # catch up with whatever a previous run left
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def drained(self, timeout: float) -> bool:
        """Waits until every committed message is embedded (tests and benchmarks)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            await asyncio.sleep(GATHER_SECONDS)
            self._wake.clear()
            try:
                while await self._step():
                    pass
                failures = 0
                if not self._wake.is_set():
                    self._idle.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the embedder must survive any failure and retry
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                message = exc.message if isinstance(exc, MnemoError) else repr(exc)
                log.warning("embedding messages failed (%s); retrying in %.1f s", message, delay)
                await asyncio.sleep(delay)
                self._wake.set()

    async def _step(self) -> bool:
        """Embeds the next batch; returns False when nothing was waiting."""
        last, rows = await self._db.read(_next_batch, EMBED_BATCH)
        if not rows:
            return False
        wanted = [row for row in rows if row.kind in EMBEDDED_KINDS and row.text.strip()]
        by_org: dict[str, list[Any]] = defaultdict(list)
        for row in wanted:
            by_org[row.org_id].append(row)
        results: list[Embedded] = []
        for org_id, org_rows in by_org.items():
            with acting_as(Actor(org_id, EMBEDDER_USER)):
                embedded = await self._embedder.embed([row.text for row in org_rows], self._model)
            results += [(row, embedded.vectors[i], embedded.model) for i, row in enumerate(org_rows)]
        top = rows[-1].pk
        await self._db.write(store_vectors, results, last, top)
        await self._index.stored(results)
        return True


def watermark(conn: Connection, *, for_update: bool = False) -> int:
    """How far the background embedder got: every message with a key up to it was handled.

    `for_update` locks the row until the transaction ends (Postgres; SQLite's writer is alone anyway),
    so two replicas' embedders cannot both move it.
    """
    query = select(progress_t.c.last_pk).where(progress_t.c.name == PROGRESS_NAME)
    return int(conn.scalar(query.with_for_update() if for_update else query) or 0)


def _next_batch(conn: Connection, size: int) -> tuple[int, list[Any]]:
    wait_for_appends(conn)  # every key below the newest visible one is then committed (or never will be)
    last = watermark(conn)
    rows = conn.execute(
        select(
            messages_t.c.pk,
            messages_t.c.org_id,
            messages_t.c.agent_id,
            messages_t.c.kind,
            messages_t.c.text,
            messages_t.c.created_at,
        )
        .where(messages_t.c.pk > last)
        .order_by(messages_t.c.pk)
        .limit(size)
    ).all()
    return last, list(rows)


def store_vectors(conn: Connection, results: list[Embedded], last: int, top: int) -> None:
    """Stores message vectors and moves the watermark from `last` to `top` (bench/memory.py seeds with it too)."""
    if watermark(conn, for_update=True) != last:
        return  # another run got here first
    alive = set(
        conn.scalars(select(messages_t.c.pk).where(messages_t.c.pk.in_([row.pk for row, _, _ in results])))
    )
    rows = [
        {
            "message_pk": row.pk,
            "org_id": row.org_id,
            "agent_id": row.agent_id,
            "embedding_model": model,
            "embedding": vector,
            "created_epoch": row.created_at.timestamp(),
            "kind": MESSAGE_KINDS.value(row.kind),
        }
        for row, vector, model in results
        if row.pk in alive  # a purge may have raced the model call
    ]
    if rows:
        conn.execute(insert(vectors_t), rows)
    if last == 0 and conn.scalar(select(progress_t.c.name).where(progress_t.c.name == PROGRESS_NAME)) is None:
        conn.execute(insert(progress_t).values(name=PROGRESS_NAME, last_pk=top))
    else:
        conn.execute(update(progress_t).where(progress_t.c.name == PROGRESS_NAME).values(last_pk=top))


class Recall:
    """Searches of message histories, one organization at a time."""

    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        index: MessageIndex,
        *,
        model: str,
        ranking: str = CONTEXTUAL,
        weights: Weights = DEFAULT_WEIGHTS,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._embedder = embedder
        self._index = index
        self._model = model
        self._ranking = ranking
        self._weights = weights
        self._now = now

    async def search(
        self,
        org_id: str,
        agent_id: str,
        query: str,
        *,
        top_k: int = 0,
        kinds: list[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        mode: str = "hybrid",
    ) -> tuple[list[MessageHit], str, int]:
        """The best matching messages, the embedding model used ("" in keyword mode) and how many wait for one."""
        require_id(agent_id, "agent_id")
        k = check_query(query, top_k, mode)
        check_window(start, end)
        where = MessageFilter(tuple(dict.fromkeys(kinds or [])), start, end)
        contextual = mode == "hybrid" and self._ranking == CONTEXTUAL
        hint = time_hint(query, self._now()) if contextual else TimeHint()
        depth = max(k, CANDIDATE_DEPTH if contextual else FUSION_DEPTH) if mode == "hybrid" else k
        terms = (query_terms(query) if contextual else keyword_terms(query)) if mode != "vector" else []
        budget = HYBRID_KEYWORD_BUDGET if mode == "hybrid" else KEYWORD_BUDGET
        source = _MessageSearch(self._index, org_id, agent_id, terms, where, budget)
        keyword_task = asyncio.ensure_future(keyword_candidates(source, depth)) if terms else None
        try:
            vector: list[Hits] = []
            query_vector = None
            used = ""
            if mode != "keyword":
                embedded = await self._embedder.embed([query], self._model, agent_id=agent_id)
                used = embedded.model
                query_vector = embedded.vectors[0]
                vector = await vector_candidates(source, query_vector, used, Focus(hint), depth)
            keyword = await keyword_task if keyword_task is not None else []
        finally:
            if keyword_task is not None and not keyword_task.done():
                keyword_task.cancel()
        found = await ranked(
            source,
            mode=mode,
            contextual=contextual,
            query=query_vector,
            model=used,
            vector=vector,
            keyword=keyword,
            hint=hint,
            k=k,
            weights=self._weights,
        )
        stored, pending = await self._db.read(_hits, org_id, agent_id, [hit.pk for hit in found])
        kept = [hit for hit in found if hit.pk in stored]
        messages = parse_messages(stored[hit.pk] for hit in kept)
        return [MessageHit(m, hit) for m, hit in zip(messages, kept, strict=True)], used, pending


class _MessageSearch(FilteredSearch[MessageFilter]):
    """The searches of one recall query: its agent, keywords and filter."""

    def __init__(
        self,
        index: MessageIndex,
        org_id: str,
        agent_id: str,
        terms: list[str],
        where: MessageFilter,
        budget: int,
    ) -> None:
        super().__init__(org_id, where, terms, budget)
        self._index = index
        self._agent_id = agent_id

    async def vector_within(self, query: Floats, model: str, depth: int, where: MessageFilter) -> Hits:
        return await self._index.vector_search(self.org_id, self._agent_id, model, query, where, depth)

    async def keyword_within(self, depth: int, where: MessageFilter) -> Hits:
        return await self._index.keyword_search(
            self.org_id, self._agent_id, self.terms, where, depth, self.budget
        )

    async def context(self, pks: Sequence[int], model: str, *, neighbours: bool) -> dict[int, Context]:
        return await self._index.contexts(self.org_id, self._agent_id, pks, model, neighbours=neighbours)


def message_contexts(
    conn: Connection, org_id: str, agent_id: str, pks: Sequence[int], model: str, neighbours: bool
) -> dict[int, Context]:
    """`MessageIndex.contexts` in portable SQL: a message's neighbours are the agent's embedded messages
    just before and after it."""
    if not pks:
        return {}
    m, v = messages_t, vectors_t
    nearby = v.alias("nearby")
    same = [nearby.c.org_id == org_id, nearby.c.agent_id == agent_id, nearby.c.embedding_model == model]
    around = adjacent(nearby.c.message_pk, m.c.pk, same) if neighbours else (null(), null())
    rows = conn.execute(
        select(m.c.pk, m.c.created_at, v.c.embedding, *around)
        .select_from(m.outerjoin(v, and_(v.c.message_pk == m.c.pk, v.c.embedding_model == model)))
        .where(m.c.pk.in_(list(pks)), m.c.org_id == org_id, m.c.agent_id == agent_id)
    ).all()
    return neighbourhood(
        conn,
        [(row[0], row[1].timestamp(), row[2], (row[3], row[4]), "") for row in rows],
        select(v.c.message_pk, v.c.created_epoch, v.c.embedding),
        v.c.message_pk,
    )


class SqliteMessageIndex:
    """Recall on SQLite: words in the FTS5 index, vectors in memory (one index per agent and model)."""

    def __init__(self, db: Database, vectors: VectorCache) -> None:
        self._db = db
        self._vectors = vectors

    async def keyword_search(
        self, org_id: str, agent_id: str, terms: list[str], where: MessageFilter, k: int, budget: int
    ) -> list[tuple[int, float]]:
        return await self._db.read(_keyword, org_id, agent_id, fts5_any(terms), where, k, budget)

    async def vector_search(
        self, org_id: str, agent_id: str, model: str, query: Floats, where: MessageFilter, k: int
    ) -> list[tuple[int, float]]:
        key = VectorKey(org_id, "messages", agent_id, model)
        flt = VectorFilter(
            start_epoch=where.start.timestamp() if where.start else None,
            end_epoch=where.end.timestamp() if where.end else None,
            kinds=frozenset(MESSAGE_KINDS.value(kind) for kind in where.kinds) if where.kinds else None,
            months=where.months,
        )
        return await self._vectors.search(key, query, k, flt, lambda: self._db.read(_load, key))

    async def contexts(
        self, org_id: str, agent_id: str, pks: Sequence[int], model: str, *, neighbours: bool
    ) -> dict[int, Context]:
        return await self._db.read(message_contexts, org_id, agent_id, pks, model, neighbours)

    async def stored(self, results: list[Embedded]) -> None:
        groups: dict[VectorKey, list[tuple[Any, Floats]]] = defaultdict(list)
        for row, vector, model in results:
            groups[VectorKey(row.org_id, "messages", row.agent_id, model)].append((row, vector))
        for key, items in groups.items():
            await self._vectors.add(
                key,
                VectorRows(
                    np.array([row.pk for row, _ in items], np.int64),
                    np.stack([vector for _, vector in items]),
                    np.array([row.created_at.timestamp() for row, _ in items], np.float64),
                    np.array([MESSAGE_KINDS.value(row.kind) for row, _ in items], np.int8),
                ),
            )


def _keyword(
    conn: Connection, org_id: str, agent_id: str, match: str, where: MessageFilter, k: int, budget: int
) -> list[tuple[int, float]]:
    query = scoped_match(match, [scope_token("agent", agent_id)])
    clauses = ["m.org_id = :org_id", "m.agent_id = :agent_id"]
    params: dict[str, Any] = {"org_id": org_id, "agent_id": agent_id, "match": query, "k": k}
    binds = []
    if where.kinds:
        names = []
        for i, kind in enumerate(where.kinds):
            names.append(f":kind_{i}")
            params[f"kind_{i}"] = kind
        clauses.append(f"m.kind IN ({', '.join(names)})")
    # Times go through the column's own type, so they compare in the stored form.
    if where.start is not None:
        clauses.append("m.created_at >= :start")
        params["start"] = where.start
        binds.append(bindparam("start", type_=messages_t.c.created_at.type))
    if where.end is not None:
        clauses.append("m.created_at < :end")
        params["end"] = where.end
        binds.append(bindparam("end", type_=messages_t.c.created_at.type))
    if where.months:
        clauses.append(sqlite_in_months("m.created_at", where.months))
    recent = newest_matches_from(conn, "messages_fts", query, budget)
    if recent is not None:
        clauses.append("messages_fts.rowid >= :recent")
        params["recent"] = recent
    statement = text(
        "SELECT m.pk, bm25(messages_fts) AS rank FROM messages_fts "  # noqa: S608 - fixed clauses with bind parameters
        "JOIN messages m ON m.pk = messages_fts.rowid "
        f"WHERE messages_fts MATCH :match AND {' AND '.join(clauses)} ORDER BY rank LIMIT :k"
    ).bindparams(*binds)
    return [(int(row.pk), float(row.rank)) for row in conn.execute(statement, params)]


def _load(conn: Connection, key: VectorKey) -> tuple[VectorRows, int]:
    rows = conn.execute(
        select(vectors_t.c.message_pk, vectors_t.c.embedding, vectors_t.c.created_epoch, vectors_t.c.kind)
        .where(
            vectors_t.c.org_id == key.org_id,
            vectors_t.c.agent_id == key.scope_id,
            vectors_t.c.embedding_model == key.model,
        )
        .order_by(vectors_t.c.message_pk)
    ).all()
    top = int(conn.scalar(select(func.max(vectors_t.c.message_pk))) or 0)
    if not rows:
        return VectorRows.empty(0), top
    return (
        VectorRows(
            np.fromiter((row.message_pk for row in rows), np.int64, len(rows)),
            np.frombuffer(b"".join(row.embedding for row in rows), np.float32).reshape(len(rows), -1),
            np.fromiter((row.created_epoch for row in rows), np.float64, len(rows)),
            np.fromiter((row.kind for row in rows), np.int8, len(rows)),
        ),
        top,
    )


def _hits(conn: Connection, org_id: str, agent_id: str, pks: list[int]) -> tuple[dict[int, bytes], int]:
    stored = MessageQueries.by_pks(conn, org_id, pks)
    last = watermark(conn)
    pending = conn.scalar(
        select(func.count()).where(
            messages_t.c.org_id == org_id,
            messages_t.c.agent_id == agent_id,
            messages_t.c.pk > last,
            messages_t.c.kind.in_(EMBEDDED_KINDS),
        )
    )
    return stored, int(pending or 0)
