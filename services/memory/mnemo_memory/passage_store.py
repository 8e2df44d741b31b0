"""Where passages live: the `PassageStore` interface, the row work both SQL stores share, and the
embedded SQLite store.

The SQLite store keeps rows (and float32 vector blobs) in the passages table, words in an FTS5
index kept in sync by triggers, and searches vectors in memory (`VectorCache`). The Postgres store
(`passage_store_pg.PgPassageStore`) keeps vectors in a pgvector column and searches in SQL. The Weaviate
store (`passage_store_weaviate.WeaviatePassageStore`) keeps the rows in either database and searches a
copy of the embedded passages in Weaviate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Connection, Select, and_, delete, func, insert, null, select, text, update

from mnemo_core.db import Database, table_of
from mnemo_core.errors import FailedPrecondition, NotFound
from mnemo_memory.models import PassageRow, PassageTagRow, SourceAttachmentRow
from mnemo_memory.ranking import fts5_any, scope_token, scoped_match
from mnemo_memory.retrieval import NEIGHBOUR_SECONDS, Context, Focus, decoded
from mnemo_memory.temporal import TimeHint
from mnemo_memory.vectors import Floats, VectorCache, VectorFilter, VectorKey, VectorRows

passages_t = table_of(PassageRow)
tags_t = table_of(PassageTagRow)
source_attachments_t = table_of(SourceAttachmentRow)

_COLUMNS = (
    passages_t.c.pk,
    passages_t.c.id,
    passages_t.c.agent_id,
    passages_t.c.source_id,
    passages_t.c.file_id,
    passages_t.c.chunk_index,
    passages_t.c.text,
    passages_t.c.tags,
    passages_t.c.speaker,
    passages_t.c.metadata_json,
    passages_t.c.embedding_model,
    passages_t.c.embedding_dim,
    passages_t.c.created_at,
)


@dataclass(frozen=True, slots=True)
class Passage:
    """A passage as callers see it."""

    pk: int
    id: str
    agent_id: str
    source_id: str
    file_id: str
    chunk_index: int
    text: str
    tags: list[str]
    speaker: str
    metadata: dict[str, Any]
    embedding_model: str
    embedding_dim: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewPassage:
    """A passage to store; `vector` is None for a file chunk that waits for its embedding."""

    id: str
    text: str
    created_at: datetime
    agent_id: str = ""
    source_id: str = ""
    file_id: str = ""
    chunk_index: int = 0
    tags: list[str] = field(default_factory=list)
    speaker: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    vector: Floats | None = None


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose passages: an agent's own ("agent") or a source's ("source")."""

    kind: str
    id: str


@dataclass(frozen=True, slots=True)
class PassageFilter:
    """Restrictions of a search."""

    tags: tuple[str, ...] = ()
    all_tags: bool = False
    start: datetime | None = None
    end: datetime | None = None
    # Months of the year (1-12, UTC) the passage's time must fall in; empty: any.
    months: frozenset[int] = frozenset()
    # Speakers one of whom said the passage; empty: anyone.
    speakers: frozenset[str] = frozenset()

    def within(self, focus: Focus) -> PassageFilter | None:
        """This filter narrowed to a query's focus (None when nothing can pass both)."""
        narrowed = self.in_period(focus.hint)
        if narrowed is None or not focus.speakers:
            return narrowed
        speakers = self.speakers & focus.speakers if self.speakers else focus.speakers
        if not speakers:
            return None
        return PassageFilter(
            narrowed.tags, narrowed.all_tags, narrowed.start, narrowed.end, narrowed.months, speakers
        )

    def in_period(self, hint: TimeHint) -> PassageFilter | None:
        """This filter narrowed to a period (None when nothing can pass both)."""
        start = max((t for t in (self.start, hint.start) if t is not None), default=None)
        end = min((t for t in (self.end, hint.end) if t is not None), default=None)
        if start is not None and end is not None and end <= start:
            return None
        months = self.months & hint.months if self.months and hint.months else self.months or hint.months
        if self.months and hint.months and not months:
            return None
        return PassageFilter(self.tags, self.all_tags, start, end, months, self.speakers)


def _passage(row: Any) -> Passage:
    return Passage(
        pk=row.pk,
        id=row.id,
        agent_id=row.agent_id,
        source_id=row.source_id,
        file_id=row.file_id,
        chunk_index=row.chunk_index,
        text=row.text,
        tags=list(row.tags or []),
        speaker=row.speaker,
        metadata=dict(row.metadata_json or {}),
        embedding_model=row.embedding_model,
        embedding_dim=row.embedding_dim,
        created_at=row.created_at,
    )


def scope_clause(scope: Scope) -> Any:
    """The passages of one scope (an agent's own or a source's)."""
    column = passages_t.c.agent_id if scope.kind == "agent" else passages_t.c.source_id
    return column == scope.id


def _key(org_id: str, scope: Scope, model: str) -> VectorKey:
    return VectorKey(org_id, scope.kind, scope.id, model)


def spoken_by(org_id: str, scopes: Sequence[Scope], speakers: frozenset[str]) -> list[Any]:
    """Conditions for the passages of the scopes' agents said by one of the speakers (sources have none)."""
    agents = [scope.id for scope in scopes if scope.kind == "agent"]
    return [
        passages_t.c.org_id == org_id,
        passages_t.c.agent_id.in_(agents),
        passages_t.c.speaker.in_(sorted(speakers)),
    ]


def tagged(org_id: str, where: PassageFilter) -> Select[tuple[int]]:
    """Keys of the organization's passages with any (or, with `all_tags`, every) tag of the filter."""
    tags = list(dict.fromkeys(where.tags))
    query = select(tags_t.c.passage_pk).where(tags_t.c.org_id == org_id, tags_t.c.tag.in_(tags))
    if where.all_tags:
        query = query.group_by(tags_t.c.passage_pk).having(func.count(tags_t.c.tag) == len(tags))
    return query


class PassageStore(Protocol):
    """Storage and search of passages; one implementation per backend."""

    async def insert(
        self, org_id: str, passages: Sequence[NewPassage], also: Callable[[Connection], None] | None = None
    ) -> list[Passage]:
        """Stores passages (with their vectors, or pending ones without), with `also`, in one transaction."""
        ...

    async def set_vectors(
        self,
        org_id: str,
        scope: Scope,
        pks: Sequence[int],
        vectors: Floats,
        model: str,
        also: Callable[[Connection], None] | None = None,
    ) -> int:
        """Gives pending passages their vectors (with `also` in the same transaction); returns how many."""
        ...

    async def pending(self, org_id: str, file_id: str, limit: int) -> list[tuple[int, str]]:
        """(key, text) of a file's passages still waiting for a vector, in order."""
        ...

    async def get(self, org_id: str, passage_id: str, *, agent_id: str = "") -> Passage:
        """One passage; NOT_FOUND when it is not in the organization (or not `agent_id`'s, when given)."""
        ...

    async def page(
        self, org_id: str, scope: Scope, *, after_pk: int | None, descending: bool, limit: int
    ) -> list[Passage]:
        """A page of a scope's passages by key."""
        ...

    async def by_pks(self, org_id: str, pks: Sequence[int]) -> dict[int, Passage]:
        """Passages by key."""
        ...

    async def delete(self, org_id: str, passage_id: str, *, agent_id: str) -> None:
        """Deletes one of an agent's passages (only `agent_id`'s, when given: checked in the same transaction)."""
        ...

    async def purge(
        self,
        org_id: str,
        scope: Scope,
        *,
        file_id: str = "",
        also: Callable[[Connection], None] | None = None,
    ) -> int:
        """Deletes a scope's passages (or one file's), with `also`, in one transaction; returns how many."""
        ...

    async def source_ids(self, org_id: str, agent_id: str) -> list[str]:
        """Sources attached to an agent."""
        ...

    async def speakers(self, org_id: str, scope: Scope) -> set[str]:
        """The distinct non-empty speakers of a scope's passages."""
        ...

    async def other_model(self, org_id: str, scopes: Sequence[Scope], model: str) -> str | None:
        """An embedding model other than `model` found among the scopes' embedded passages, if any."""
        ...

    async def vector_search(
        self, org_id: str, scopes: Sequence[Scope], model: str, query: Floats, k: int, where: PassageFilter
    ) -> list[tuple[int, float]]:
        """The k passages most similar to `query`: (key, cosine similarity), best first."""
        ...

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
        """The k embedded passages matching any of the terms (ranking.keyword_terms), best first.

        Returns (key, score) where lower is better: bm25() on SQLite, the negated ts_rank() on
        Postgres. Ranks at most the `budget` newest matching rows (ranking cannot stop early).
        """
        ...

    async def contexts(
        self, org_id: str, pks: Sequence[int], model: str, *, neighbours: bool
    ) -> dict[int, Context]:
        """Vectors, times and speakers of passages (and their neighbours' vectors in the same scope when asked)."""
        ...


def _owned_row(conn: Connection, org_id: str, passage_id: str, agent_id: str) -> Any:
    """The passage's row; NOT_FOUND when it is not in the organization, or not `agent_id`'s when given."""
    row = conn.execute(
        select(*_COLUMNS).where(passages_t.c.id == passage_id, passages_t.c.org_id == org_id)
    ).first()
    if row is None or (agent_id and row.agent_id != agent_id):
        raise NotFound(
            f"passage {passage_id} not found", reason="PASSAGE_NOT_FOUND", metadata={"passage_id": passage_id}
        )
    return row


class SqlPassages:
    """Passage rows by portable SQLAlchemy Core: everything but the searches, shared by the SQL stores.

    A store that keeps a copy of the vectors elsewhere (SQLite's in-memory indexes) follows the writes
    through the `_after_*` hooks, called once the write is committed.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def _after_insert(self, org_id: str, stored: list[Passage], passages: Sequence[NewPassage]) -> None:
        return None

    async def _after_set_vectors(
        self,
        org_id: str,
        scope: Scope,
        model: str,
        done: list[tuple[int, float]],
        pks: Sequence[int],
        vectors: Floats,
    ) -> None:
        return None

    async def _after_delete(self, org_id: str, gone: Passage) -> None:
        return None

    async def _after_purge(self, org_id: str, scope: Scope, by_model: dict[str, list[int]]) -> None:
        return None

    async def insert(
        self, org_id: str, passages: Sequence[NewPassage], also: Callable[[Connection], None] | None = None
    ) -> list[Passage]:
        def tx(conn: Connection) -> list[Passage]:
            rows = []
            for p in passages:
                rows.append(
                    {
                        "id": p.id,
                        "org_id": org_id,
                        "agent_id": p.agent_id,
                        "source_id": p.source_id,
                        "file_id": p.file_id,
                        "chunk_index": p.chunk_index,
                        "text": p.text,
                        "scope": scope_token("agent", p.agent_id)
                        if p.agent_id
                        else scope_token("source", p.source_id),
                        "tags": list(p.tags),
                        "speaker": p.speaker,
                        "metadata_json": dict(p.metadata),
                        "embedding_model": p.model if p.vector is not None else "",
                        "embedding_dim": len(p.vector) if p.vector is not None else 0,
                        "embedding": p.vector,
                        "created_at": p.created_at,
                        "created_epoch": p.created_at.timestamp(),
                    }
                )
            pks = list(
                conn.scalars(
                    insert(passages_t).returning(passages_t.c.pk, sort_by_parameter_order=True), rows
                )
            )
            tag_rows = [
                {"passage_pk": pk, "tag": tag, "org_id": org_id}
                for pk, p in zip(pks, passages, strict=True)
                for tag in dict.fromkeys(p.tags)
            ]
            if tag_rows:
                conn.execute(insert(tags_t), tag_rows)
            if also is not None:
                also(conn)
            if not any(p.vector is not None for p in passages):
                return []  # pending chunks: the caller needs no copy of them
            found = conn.execute(select(*_COLUMNS).where(passages_t.c.pk.in_(pks))).all()
            by_pk = {row.pk: _passage(row) for row in found}
            return [by_pk[pk] for pk in pks]

        stored = await self._db.write(tx)
        if stored:
            await self._after_insert(org_id, stored, passages)
        return stored

    async def set_vectors(
        self,
        org_id: str,
        scope: Scope,
        pks: Sequence[int],
        vectors: Floats,
        model: str,
        also: Callable[[Connection], None] | None = None,
    ) -> int:
        dim = int(vectors.shape[1])

        def tx(conn: Connection) -> list[tuple[int, float]]:
            done = []
            for pk, vector in zip(pks, vectors, strict=True):
                row = conn.execute(
                    update(passages_t)
                    .where(
                        passages_t.c.pk == pk, passages_t.c.org_id == org_id, passages_t.c.embedding_dim == 0
                    )
                    .values(embedding_model=model, embedding_dim=dim, embedding=vector)
                    .returning(passages_t.c.pk, passages_t.c.created_epoch)
                ).first()
                if row is not None:
                    done.append((row.pk, row.created_epoch))
            if also is not None:
                also(conn)
            return done

        done = await self._db.write(tx)
        if done:
            await self._after_set_vectors(org_id, scope, model, done, pks, vectors)
        return len(done)

    async def pending(self, org_id: str, file_id: str, limit: int) -> list[tuple[int, str]]:
        def read(conn: Connection) -> list[tuple[int, str]]:
            rows = conn.execute(
                select(passages_t.c.pk, passages_t.c.text)
                .where(passages_t.c.file_id == file_id, passages_t.c.embedding_dim == 0)
                .where(passages_t.c.org_id == org_id)
                .order_by(passages_t.c.pk)
                .limit(limit)
            )
            return [(row.pk, row.text) for row in rows]

        return await self._db.read(read)

    async def get(self, org_id: str, passage_id: str, *, agent_id: str = "") -> Passage:
        return _passage(await self._db.read(_owned_row, org_id, passage_id, agent_id))

    async def page(
        self, org_id: str, scope: Scope, *, after_pk: int | None, descending: bool, limit: int
    ) -> list[Passage]:
        def read(conn: Connection) -> list[Passage]:
            query = select(*_COLUMNS).where(passages_t.c.org_id == org_id, scope_clause(scope))
            if after_pk is not None:
                query = query.where(passages_t.c.pk < after_pk if descending else passages_t.c.pk > after_pk)
            order = passages_t.c.pk.desc() if descending else passages_t.c.pk
            return [_passage(row) for row in conn.execute(query.order_by(order).limit(limit))]

        return await self._db.read(read)

    async def by_pks(self, org_id: str, pks: Sequence[int]) -> dict[int, Passage]:
        if not pks:
            return {}

        def read(conn: Connection) -> dict[int, Passage]:
            # By key alone (an org_id condition tempts SQLite into scanning the org's index); org checked here.
            rows = conn.execute(select(*_COLUMNS, passages_t.c.org_id).where(passages_t.c.pk.in_(list(pks))))
            return {row.pk: _passage(row) for row in rows if row.org_id == org_id}

        return await self._db.read(read)

    async def delete(self, org_id: str, passage_id: str, *, agent_id: str) -> None:
        def tx(conn: Connection) -> Passage:
            row = _owned_row(conn, org_id, passage_id, agent_id)
            if not row.agent_id:
                raise FailedPrecondition(
                    f"passage {passage_id} belongs to source {row.source_id}; delete its file instead",
                    reason="PASSAGE_OF_SOURCE",
                )
            conn.execute(delete(passages_t).where(passages_t.c.pk == row.pk))
            return _passage(row)

        await self._after_delete(org_id, await self._db.write(tx))

    async def purge(
        self,
        org_id: str,
        scope: Scope,
        *,
        file_id: str = "",
        also: Callable[[Connection], None] | None = None,
    ) -> int:
        def tx(conn: Connection) -> tuple[int, dict[str, list[int]]]:
            where = and_(passages_t.c.org_id == org_id, scope_clause(scope))
            if file_id:
                where = and_(where, passages_t.c.file_id == file_id)
            by_model: dict[str, list[int]] = {}
            for pk, model in conn.execute(select(passages_t.c.pk, passages_t.c.embedding_model).where(where)):
                by_model.setdefault(model, []).append(pk)
            result = conn.execute(delete(passages_t).where(where))
            if scope.kind == "agent" and not file_id:
                conn.execute(
                    delete(source_attachments_t).where(
                        source_attachments_t.c.org_id == org_id, source_attachments_t.c.agent_id == scope.id
                    )
                )
            if also is not None:
                also(conn)
            return int(result.rowcount), by_model

        count, by_model = await self._db.write(tx)
        await self._after_purge(org_id, scope, by_model)
        return count

    async def source_ids(self, org_id: str, agent_id: str) -> list[str]:
        def read(conn: Connection) -> list[str]:
            return list(
                conn.scalars(
                    select(source_attachments_t.c.source_id)
                    .where(
                        source_attachments_t.c.org_id == org_id, source_attachments_t.c.agent_id == agent_id
                    )
                    .order_by(source_attachments_t.c.created_at)
                )
            )

        return await self._db.read(read)

    async def speakers(self, org_id: str, scope: Scope) -> set[str]:
        def read(conn: Connection) -> set[str]:
            found = conn.scalars(
                select(passages_t.c.speaker)
                .where(passages_t.c.org_id == org_id, scope_clause(scope), passages_t.c.speaker != "")
                .distinct()
            )
            return set(found)

        return await self._db.read(read)

    async def other_model(self, org_id: str, scopes: Sequence[Scope], model: str) -> str | None:
        def read(conn: Connection) -> str | None:
            for scope in scopes:
                column = passages_t.c.embedding_model
                # Two seeks on the (org, scope, model) index instead of a scan: any model sorting before
                # `model` (but after "", the pending chunks) or after it.
                for other in (and_(column > "", column < model), column > model):
                    found = conn.scalar(
                        select(column)
                        .where(passages_t.c.org_id == org_id, scope_clause(scope), other)
                        .limit(1)
                    )
                    if found:
                        return str(found)
            return None

        return await self._db.read(read)

    async def contexts(
        self, org_id: str, pks: Sequence[int], model: str, *, neighbours: bool
    ) -> dict[int, Context]:
        if not pks:
            return {}
        t = passages_t
        nearby = t.alias("nearby")
        same = [
            nearby.c.org_id == t.c.org_id,
            nearby.c.agent_id == t.c.agent_id,
            nearby.c.source_id == t.c.source_id,
            nearby.c.embedding_model == model,
        ]
        around = adjacent(nearby.c.pk, t.c.pk, same) if neighbours else (null(), null())

        def read(conn: Connection) -> dict[int, Context]:
            rows = conn.execute(
                # By key alone: an org or model condition tempts SQLite into scanning the agent's index.
                select(
                    t.c.pk,
                    t.c.created_epoch,
                    t.c.embedding,
                    *around,
                    t.c.speaker,
                    t.c.org_id,
                    t.c.embedding_model,
                ).where(t.c.pk.in_(list(pks)))
            ).all()
            rows = [row for row in rows if row.org_id == org_id and row.embedding_model == model]
            return neighbourhood(
                conn,
                [(row[0], row[1], row[2], (row[3], row[4]), row[5]) for row in rows],
                select(t.c.pk, t.c.created_epoch, t.c.embedding),
                t.c.pk,
            )

        return await self._db.read(read)


def adjacent(key: Any, here: Any, same: list[Any]) -> tuple[Any, Any]:
    """Correlated subqueries for the keys just before and just after `here` among the rows matching `same`."""
    return (
        select(func.max(key)).where(*same, key < here).scalar_subquery(),
        select(func.min(key)).where(*same, key > here).scalar_subquery(),
    )


def neighbourhood(
    conn: Connection,
    rows: list[tuple[int, float, Any, tuple[int | None, int | None], str]],
    fetch: Select[Any],
    key: Any,
) -> dict[int, Context]:
    """Contexts of rows (key, epoch, stored vector, (previous key, next key), speaker): their neighbours'
    vectors are read with `fetch` (key, epoch, vector) and kept when stored within NEIGHBOUR_SECONDS."""
    wanted = {pk for *_, around, _ in rows for pk in around if pk is not None}
    found = (
        {row[0]: (row[1], row[2]) for row in conn.execute(fetch.where(key.in_(list(wanted))))}
        if wanted
        else {}
    )
    contexts: dict[int, Context] = {}
    for pk, epoch, vector, around, speaker in rows:
        neighbours = tuple(
            decoded(found[other][1])
            for other in around
            if other in found
            and found[other][1] is not None
            and abs(found[other][0] - epoch) <= NEIGHBOUR_SECONDS
        )
        contexts[pk] = Context(None if vector is None else decoded(vector), float(epoch), neighbours, speaker)
    return contexts


class SqlitePassageStore(SqlPassages):
    """Passages in the memory service's SQLite file; words in FTS5, vectors searched in memory."""

    def __init__(self, db: Database, vectors: VectorCache) -> None:
        super().__init__(db)
        self._vectors = vectors

    async def _after_insert(self, org_id: str, stored: list[Passage], passages: Sequence[NewPassage]) -> None:
        embedded = [(s, p.vector) for s, p in zip(stored, passages, strict=True) if p.vector is not None]
        if not embedded:
            return
        first = embedded[0][0]
        scope = Scope("agent", first.agent_id) if first.agent_id else Scope("source", first.source_id)
        await self._vectors.add(
            _key(org_id, scope, first.embedding_model),
            VectorRows(
                np.array([s.pk for s, _ in embedded], np.int64),
                np.stack([v for _, v in embedded if v is not None]).astype(np.float32),
                np.array([s.created_at.timestamp() for s, _ in embedded], np.float64),
                np.zeros(len(embedded), np.int8),
            ),
        )

    async def _after_set_vectors(
        self,
        org_id: str,
        scope: Scope,
        model: str,
        done: list[tuple[int, float]],
        pks: Sequence[int],
        vectors: Floats,
    ) -> None:
        index = {pk: i for i, pk in enumerate(pks)}
        await self._vectors.add(
            _key(org_id, scope, model),
            VectorRows(
                np.array([pk for pk, _ in done], np.int64),
                vectors[[index[pk] for pk, _ in done]],
                np.array([epoch for _, epoch in done], np.float64),
                np.zeros(len(done), np.int8),
            ),
        )

    async def _after_delete(self, org_id: str, gone: Passage) -> None:
        if gone.embedding_dim:
            await self._vectors.remove(
                _key(org_id, Scope("agent", gone.agent_id), gone.embedding_model),
                np.array([gone.pk], np.int64),
            )

    async def _after_purge(self, org_id: str, scope: Scope, by_model: dict[str, list[int]]) -> None:
        for model, pks in by_model.items():
            if model:
                await self._vectors.remove(_key(org_id, scope, model), np.array(pks, np.int64))

    async def vector_search(
        self, org_id: str, scopes: Sequence[Scope], model: str, query: Floats, k: int, where: PassageFilter
    ) -> list[tuple[int, float]]:
        allowed = await self._tagged(org_id, where) if where.tags else None
        if where.speakers:
            spoken = await self._spoken(org_id, scopes, where.speakers)
            allowed = spoken if allowed is None else np.intersect1d(allowed, spoken)
        flt = VectorFilter(
            start_epoch=where.start.timestamp() if where.start else None,
            end_epoch=where.end.timestamp() if where.end else None,
            allowed_pks=allowed,
            months=where.months,
        )
        hits: list[tuple[int, float]] = []
        for scope in scopes:
            key = _key(org_id, scope, model)
            hits += await self._vectors.search(key, query, k, flt, lambda key=key: self._load(key))  # type: ignore[misc]
        hits.sort(key=lambda hit: -hit[1])
        return hits[:k]

    async def _tagged(self, org_id: str, where: PassageFilter) -> np.ndarray[Any, np.dtype[np.int64]]:
        def read(conn: Connection) -> list[int]:
            return list(conn.scalars(tagged(org_id, where)))

        return np.array(sorted(set(await self._db.read(read))), np.int64)

    async def _spoken(
        self, org_id: str, scopes: Sequence[Scope], speakers: frozenset[str]
    ) -> np.ndarray[Any, np.dtype[np.int64]]:
        def read(conn: Connection) -> list[int]:
            return list(conn.scalars(select(passages_t.c.pk).where(*spoken_by(org_id, scopes, speakers))))

        return np.array(sorted(await self._db.read(read)), np.int64)

    async def _load(self, key: VectorKey) -> tuple[VectorRows, int]:
        scope = Scope(key.scope, key.scope_id)

        def read(conn: Connection) -> tuple[VectorRows, int]:
            rows = conn.execute(
                select(passages_t.c.pk, passages_t.c.embedding, passages_t.c.created_epoch)
                .where(
                    passages_t.c.org_id == key.org_id,
                    scope_clause(scope),
                    passages_t.c.embedding_model == key.model,
                    passages_t.c.embedding_dim > 0,
                )
                .order_by(passages_t.c.pk)
            ).all()
            top = conn.scalar(select(passages_t.c.pk).order_by(passages_t.c.pk.desc()).limit(1)) or 0
            if not rows:
                return VectorRows.empty(0), int(top)
            vectors = np.frombuffer(b"".join(row.embedding for row in rows), np.float32).reshape(
                len(rows), -1
            )
            return (
                VectorRows(
                    np.fromiter((row.pk for row in rows), np.int64, len(rows)),
                    vectors,
                    np.fromiter((row.created_epoch for row in rows), np.float64, len(rows)),
                    np.zeros(len(rows), np.int8),
                ),
                int(top),
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
        query = scoped_match(fts5_any(list(terms)), [scope_token(scope.kind, scope.id) for scope in scopes])
        clauses = ["p.org_id = :org_id", "p.embedding_dim > 0"]
        params: dict[str, Any] = {"org_id": org_id, "match": query, "k": k}
        if where.start is not None:
            clauses.append("p.created_epoch >= :start")
            params["start"] = where.start.timestamp()
        if where.end is not None:
            clauses.append("p.created_epoch < :end")
            params["end"] = where.end.timestamp()
        if where.months:
            clauses.append(sqlite_in_months("p.created_epoch, 'unixepoch'", where.months))
        if where.speakers:
            names = []
            for i, speaker in enumerate(sorted(where.speakers)):
                names.append(f":speaker_{i}")
                params[f"speaker_{i}"] = speaker
            clauses.append(f"p.speaker IN ({', '.join(names)})")
        if where.tags:
            names = []
            for i, tag in enumerate(dict.fromkeys(where.tags)):
                names.append(f":tag_{i}")
                params[f"tag_{i}"] = tag
            having = f" GROUP BY t.passage_pk HAVING count(*) = {len(names)}" if where.all_tags else ""
            clauses.append(
                f"p.pk IN (SELECT t.passage_pk FROM passage_tags t WHERE t.org_id = :org_id "  # noqa: S608 - names of bind parameters only
                f"AND t.tag IN ({', '.join(names)}){having})"
            )

        def read(conn: Connection) -> list[tuple[int, float]]:
            recent = newest_matches_from(conn, "passages_fts", query, budget)
            if recent is not None:
                clauses.append("passages_fts.rowid >= :recent")
                params["recent"] = recent
            statement = text(
                "SELECT p.pk, bm25(passages_fts) AS rank FROM passages_fts JOIN passages p ON p.pk = passages_fts.rowid "  # noqa: S608 - fixed clauses with bind parameters
                f"WHERE passages_fts MATCH :match AND {' AND '.join(clauses)} ORDER BY rank LIMIT :k"
            )
            return [(int(row.pk), float(row.rank)) for row in conn.execute(statement, params)]

        return await self._db.read(read)


def sqlite_in_months(moment: str, months: frozenset[int]) -> str:
    """An SQLite condition: the UTC month of `moment` (strftime's time arguments) is one of `months`."""
    listed = ", ".join(str(int(month)) for month in sorted(months))
    return f"CAST(strftime('%m', {moment}) AS INTEGER) IN ({listed})"


def newest_matches_from(conn: Connection, fts: str, match: str, budget: int) -> int | None:
    """The lowest key among the `budget` newest rows matching `match`, or None when fewer match.

    BM25 costs a few microseconds per matching row and cannot stop early; words that match tens of
    thousands of rows are therefore ranked among their newest `budget` matches only (older ones are
    still found by vector search).
    """
    found = conn.execute(
        text(f"SELECT rowid FROM {fts} WHERE {fts} MATCH :match ORDER BY rowid DESC LIMIT 1 OFFSET :budget"),  # noqa: S608 - table name is a constant of the caller
        {"match": match, "budget": budget - 1},
    ).first()
    return None if found is None else int(found[0])
