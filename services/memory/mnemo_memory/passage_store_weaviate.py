"""Passages searched in Weaviate: one collection per embedding model and dimension, one tenant per
organization (docs/adr/0206-weaviate-passage-store.md).

Rows, pending file chunks, pages, `also` transactions and the model check stay in the service's SQL
database (`SqlPassages`), which remains the source of truth; Weaviate holds a copy of every embedded
passage (vector, words, and the properties searches filter on) and answers the two searches. Writes go
to Weaviate before the SQL commit and deletes after it, and every hit is resolved through SQL: an
object whose row never committed (or whose delete did not reach Weaviate) is never returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import weaviate
from sqlalchemy import Connection, and_, or_, select
from weaviate.classes.config import (
    Configure,
    DataType,
    Property,
    StopwordsPreset,
    Tokenization,
    VectorDistances,
)
from weaviate.classes.data import DataObject
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.classes.tenants import Tenant
from weaviate.collections.classes.filters import _Filters
from weaviate.exceptions import WeaviateBaseError

from mnemo_core.db import Database
from mnemo_core.errors import Unavailable
from mnemo_memory.passage_store import (
    NewPassage,
    Passage,
    PassageFilter,
    Scope,
    SqlPassages,
    passages_t,
    scope_clause,
)
from mnemo_memory.vectors import Floats

log = logging.getLogger(__name__)

# The one vector of each collection (named, as Weaviate's current API has it).
VECTOR = "default"
# Prefix of the collections this store owns.
PREFIX = "MnemoPassages"
# Objects a batch insert sends in one gRPC call.
BATCH = 200
_TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Object ids are UUIDv5 of (organization, passage id) in this namespace: the same passage always maps to
# the same object, so a retried write overwrites instead of duplicating.
_NAMESPACE = uuid.UUID("6f1d3c52-7a43-4d0e-9a0c-3f1e2d4b5a69")


@dataclass(frozen=True, slots=True)
class WeaviateConfig:
    """Where Weaviate is: its REST URL, its gRPC address (host:port) and an API key if it wants one."""

    url: str
    grpc_address: str = ""
    api_key: str | None = None
    timeout_seconds: float = 30.0


def collection_name(model: str, dim: int) -> str:
    """The collection of one embedding model and dimension (a valid class name, stable, readable)."""
    slug = re.sub(r"[^0-9A-Za-z]+", "_", model).strip("_")[:80]
    digest = hashlib.sha256(f"{model}\x00{dim}".encode()).hexdigest()[:8]
    return f"{PREFIX}_{slug}_{dim}_{digest}"


def tenant_name(org_id: str) -> str:
    """The tenant of an organization: its id when Weaviate accepts it as a name, else a digest of it."""
    if _TENANT.match(org_id) and not org_id.startswith("h-"):
        return org_id
    return "h-" + hashlib.sha256(org_id.encode()).hexdigest()[:40]


def object_id(org_id: str, passage_id: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{org_id}\x00{passage_id}")


def _properties(passage_id: str, p: NewPassage | Passage, created_at: datetime) -> dict[str, Any]:
    moment = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    return {
        "passage_id": passage_id,
        "text": p.text,
        "agent_id": p.agent_id,
        "source_id": p.source_id,
        "file_id": p.file_id,
        "speaker": p.speaker,
        "tags": list(dict.fromkeys(p.tags)),
        "created_epoch": moment.timestamp(),
        "month": moment.astimezone(UTC).month,
    }


def _exact(name: str, data_type: DataType = DataType.TEXT) -> Property:
    """A property matched whole by filters, not searched by BM25."""
    return Property(name=name, data_type=data_type, tokenization=Tokenization.FIELD, index_searchable=False)


_PROPERTIES = [
    _exact("passage_id"),
    # Words for BM25, lower-cased and split on anything but letters and digits.
    Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
    _exact("agent_id"),
    _exact("source_id"),
    _exact("file_id"),
    _exact("speaker"),
    _exact("tags", DataType.TEXT_ARRAY),
    Property(name="created_epoch", data_type=DataType.NUMBER),
    Property(name="month", data_type=DataType.INT),
]


def _any(filters: list[_Filters]) -> _Filters:
    return filters[0] if len(filters) == 1 else Filter.any_of(filters)


def _equal_any(name: str, values: Sequence[Any]) -> _Filters:
    return _any([Filter.by_property(name).equal(value) for value in values])


def search_filter(scopes: Sequence[Scope], where: PassageFilter) -> _Filters | None:
    """The Weaviate filter of a search over `scopes` with `where` (None when nothing can match)."""
    if where.speakers:
        # Speakers belong to agents' passages only (sources have none), as on the SQL stores.
        scopes = [scope for scope in scopes if scope.kind == "agent"]
    if not scopes:
        return None
    parts = [
        _any(
            [
                Filter.by_property("agent_id" if scope.kind == "agent" else "source_id").equal(scope.id)
                for scope in scopes
            ]
        )
    ]
    if where.start is not None:
        parts.append(Filter.by_property("created_epoch").greater_or_equal(where.start.timestamp()))
    if where.end is not None:
        parts.append(Filter.by_property("created_epoch").less_than(where.end.timestamp()))
    if where.months:
        parts.append(_equal_any("month", sorted(where.months)))
    if where.speakers:
        parts.append(_equal_any("speaker", sorted(where.speakers)))
    if where.tags:
        tags = list(dict.fromkeys(where.tags))
        tagged = Filter.by_property("tags")
        parts.append(tagged.contains_all(tags) if where.all_tags else tagged.contains_any(tags))
    return Filter.all_of(parts) if len(parts) > 1 else parts[0]


def _unavailable(error: Exception) -> Unavailable:
    return Unavailable(f"the passage store (Weaviate) failed: {error}", reason="PASSAGE_STORE_UNAVAILABLE")


class WeaviatePassageStore(SqlPassages):
    """Passage rows in SQL, their vectors and words searched in Weaviate (multi-tenant, per model)."""

    def __init__(self, db: Database, config: WeaviateConfig) -> None:
        super().__init__(db)
        self._config = config
        self._client: weaviate.WeaviateAsyncClient | None = None
        self._connecting = asyncio.Lock()
        # Collections and (collection, tenant) pairs known to exist; existence never reverts while
        # this store runs (it deletes neither), so positive answers are kept.
        self._collections: set[str] = set()
        self._tenants: set[tuple[str, str]] = set()

    async def connect(self) -> weaviate.WeaviateAsyncClient:
        """The connected client (connecting on first use); UNAVAILABLE when Weaviate cannot be reached."""
        if self._client is not None:
            return self._client
        async with self._connecting:
            if self._client is None:
                url = urlsplit(self._config.url)
                secure = url.scheme == "https"
                host = url.hostname or "localhost"
                grpc_host, _, grpc_port = (self._config.grpc_address or f"{host}:50051").rpartition(":")
                client = weaviate.use_async_with_custom(
                    http_host=host,
                    http_port=url.port or (443 if secure else 80),
                    http_secure=secure,
                    grpc_host=grpc_host or host,
                    grpc_port=int(grpc_port),
                    grpc_secure=secure,
                    auth_credentials=Auth.api_key(self._config.api_key) if self._config.api_key else None,
                    additional_config=AdditionalConfig(
                        timeout=Timeout(
                            init=self._config.timeout_seconds,
                            query=self._config.timeout_seconds,
                            insert=self._config.timeout_seconds,
                        )
                    ),
                )
                try:
                    await client.connect()
                except WeaviateBaseError as error:
                    await client.close()
                    raise _unavailable(error) from error
                self._client = client
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # Collections and tenants

    async def _ensure(self, model: str, dim: int, tenant: str) -> str:
        """The collection of (model, dim), created with `tenant` when missing."""
        name = collection_name(model, dim)
        client = await self.connect()
        try:
            if name not in self._collections:
                if not await client.collections.exists(name):
                    try:
                        await client.collections.create(
                            name,
                            description=model,
                            properties=_PROPERTIES,
                            multi_tenancy_config=Configure.multi_tenancy(enabled=True),
                            inverted_index_config=Configure.inverted_index(
                                # Every word counts, as in FTS5 (stop words are dropped from queries by mnemo).
                                stopwords_preset=StopwordsPreset.NONE
                            ),
                            vector_config=Configure.Vectors.self_provided(
                                name=VECTOR,
                                vector_index_config=Configure.VectorIndex.hnsw(
                                    distance_metric=VectorDistances.COSINE
                                ),
                            ),
                        )
                    except WeaviateBaseError:
                        # Another replica may have created it at the same moment.
                        if not await client.collections.exists(name):
                            raise
                self._collections.add(name)
            if (name, tenant) not in self._tenants:
                tenants = client.collections.use(name).tenants
                if not await tenants.exists(tenant):
                    try:
                        await tenants.create([Tenant(name=tenant)])
                    except WeaviateBaseError:
                        # Created by another writer meanwhile (or a real refusal, raised again).
                        if not await tenants.exists(tenant):
                            raise
                self._tenants.add((name, tenant))
        except WeaviateBaseError as error:
            raise _unavailable(error) from error
        return name

    async def _present(self, name: str, tenant: str) -> bool:
        """Whether the collection exists with this tenant (searches of a missing one find nothing)."""
        if (name, tenant) in self._tenants:
            return True
        client = await self.connect()
        try:
            if name not in self._collections:
                if not await client.collections.exists(name):
                    return False
                self._collections.add(name)
            if not await client.collections.use(name).tenants.exists(tenant):
                return False
        except WeaviateBaseError as error:
            raise _unavailable(error) from error
        self._tenants.add((name, tenant))
        return True

    # Writes

    async def _put(self, org_id: str, model: str, objects: list[tuple[str, dict[str, Any], Floats]]) -> None:
        """Writes objects (passage id, properties, vector) of one model; all of them or an error."""
        if not objects:
            return
        tenant = tenant_name(org_id)
        dims = {len(vector) for _, _, vector in objects}
        for dim in sorted(dims):
            name = await self._ensure(model, dim, tenant)
            batch = [
                DataObject(
                    properties=props,
                    uuid=object_id(org_id, passage_id),
                    vector={VECTOR: [float(x) for x in vector]},
                )
                for passage_id, props, vector in objects
                if len(vector) == dim
            ]
            collection = (await self.connect()).collections.use(name).with_tenant(tenant)
            for start in range(0, len(batch), BATCH):
                try:
                    result = await collection.data.insert_many(batch[start : start + BATCH])
                except WeaviateBaseError as error:
                    raise _unavailable(error) from error
                if result.has_errors:
                    first = next(iter(result.errors.values()))
                    raise Unavailable(
                        f"the passage store (Weaviate) refused {len(result.errors)} objects: {first.message}",
                        reason="PASSAGE_STORE_UNAVAILABLE",
                    )

    async def _forget(self, org_id: str, model: str, dim: int, where: _Filters) -> None:
        """Deletes the objects matching `where`; a failure is logged (hits resolve through SQL)."""
        tenant = tenant_name(org_id)
        name = collection_name(model, dim)
        try:
            if not await self._present(name, tenant):
                return
            collection = (await self.connect()).collections.use(name).with_tenant(tenant)
            await collection.data.delete_many(where=where)
        except (WeaviateBaseError, Unavailable) as error:
            log.warning("passage objects left in Weaviate collection %s: %s", name, error)

    async def insert(
        self, org_id: str, passages: Sequence[NewPassage], also: Callable[[Connection], None] | None = None
    ) -> list[Passage]:
        embedded: dict[str, list[tuple[str, dict[str, Any], Floats]]] = {}
        for p in passages:
            if p.vector is not None:
                embedded.setdefault(p.model, []).append((p.id, _properties(p.id, p, p.created_at), p.vector))
        for model, objects in embedded.items():
            await self._put(org_id, model, objects)
        try:
            return await super().insert(org_id, passages, also)
        except BaseException:
            await self._undo(org_id, embedded)
            raise

    async def set_vectors(
        self,
        org_id: str,
        scope: Scope,
        pks: Sequence[int],
        vectors: Floats,
        model: str,
        also: Callable[[Connection], None] | None = None,
    ) -> int:
        rows = await self.by_pks(org_id, pks)
        objects = [
            (rows[pk].id, _properties(rows[pk].id, rows[pk], rows[pk].created_at), vector)
            for pk, vector in zip(pks, vectors, strict=True)
            if pk in rows and not rows[pk].embedding_dim
        ]
        await self._put(org_id, model, objects)
        try:
            return await super().set_vectors(org_id, scope, pks, vectors, model, also)
        except BaseException:
            await self._undo(org_id, {model: objects})
            raise

    async def _undo(self, org_id: str, written: dict[str, list[tuple[str, dict[str, Any], Floats]]]) -> None:
        """Deletes the objects just written whose rows did not commit with a vector (a failed SQL write).

        Rows committed before (a retried insert of the same passage) keep their objects.
        """
        ids = [passage_id for objects in written.values() for passage_id, _, _ in objects]
        if not ids:
            return

        def read(conn: Connection) -> set[str]:
            found = conn.scalars(
                select(passages_t.c.id).where(
                    passages_t.c.org_id == org_id, passages_t.c.id.in_(ids), passages_t.c.embedding_dim > 0
                )
            )
            return set(found)

        committed = await asyncio.shield(self._db.read(read))
        for model, objects in written.items():
            for dim in {len(vector) for _, _, vector in objects}:
                doomed = [
                    passage_id
                    for passage_id, _, vector in objects
                    if len(vector) == dim and passage_id not in committed
                ]
                if doomed:
                    await asyncio.shield(self._forget(org_id, model, dim, _equal_any("passage_id", doomed)))

    async def _after_delete(self, org_id: str, gone: Passage) -> None:
        if gone.embedding_dim:
            await self._forget(
                org_id,
                gone.embedding_model,
                gone.embedding_dim,
                Filter.by_property("passage_id").equal(gone.id),
            )

    async def purge(
        self,
        org_id: str,
        scope: Scope,
        *,
        file_id: str = "",
        also: Callable[[Connection], None] | None = None,
    ) -> int:
        # The (model, dimension) pairs present, read before the rows go: each names a collection.
        def read(conn: Connection) -> list[tuple[str, int]]:
            clauses = [passages_t.c.org_id == org_id, scope_clause(scope), passages_t.c.embedding_dim > 0]
            if file_id:
                clauses.append(passages_t.c.file_id == file_id)
            found = conn.execute(
                select(passages_t.c.embedding_model, passages_t.c.embedding_dim).where(*clauses).distinct()
            )
            return [(str(model), int(dim)) for model, dim in found]

        collections = await self._db.read(read)
        count = await super().purge(org_id, scope, file_id=file_id, also=also)
        where = Filter.by_property("agent_id" if scope.kind == "agent" else "source_id").equal(scope.id)
        if file_id:
            where = Filter.all_of([where, Filter.by_property("file_id").equal(file_id)])
        for model, dim in collections:
            await self._forget(org_id, model, dim, where)
        return count

    # Searches

    async def _models(self, org_id: str, scopes: Sequence[Scope]) -> list[tuple[str, int]]:
        """The (model, dimension) pairs of the scopes' embedded passages."""

        def read(conn: Connection) -> list[tuple[str, int]]:
            found = conn.execute(
                select(passages_t.c.embedding_model, passages_t.c.embedding_dim)
                .where(
                    passages_t.c.org_id == org_id,
                    or_(*(scope_clause(scope) for scope in scopes)),
                    passages_t.c.embedding_dim > 0,
                )
                .distinct()
            )
            return [(str(model), int(dim)) for model, dim in found]

        return await self._db.read(read)

    async def _resolve(
        self, org_id: str, hits: list[tuple[str, float]], model: str | None
    ) -> list[tuple[int, float]]:
        """Hits (passage id, score) as (key, score), keeping only passages committed with a vector."""
        if not hits:
            return []
        ids = [passage_id for passage_id, _ in hits]

        def read(conn: Connection) -> dict[str, int]:
            clauses = [
                passages_t.c.org_id == org_id,
                passages_t.c.id.in_(ids),
                passages_t.c.embedding_dim > 0,
            ]
            if model is not None:
                clauses.append(passages_t.c.embedding_model == model)
            return {
                str(row.id): int(row.pk)
                for row in conn.execute(select(passages_t.c.pk, passages_t.c.id).where(and_(*clauses)))
            }

        pks = await self._db.read(read)
        return [(pks[passage_id], score) for passage_id, score in hits if passage_id in pks]

    async def vector_search(
        self, org_id: str, scopes: Sequence[Scope], model: str, query: Floats, k: int, where: PassageFilter
    ) -> list[tuple[int, float]]:
        flt = search_filter(scopes, where)
        tenant = tenant_name(org_id)
        name = collection_name(model, len(query))
        if flt is None or k <= 0 or not await self._present(name, tenant):
            return []
        collection = (await self.connect()).collections.use(name).with_tenant(tenant)
        try:
            found = await collection.query.near_vector(
                near_vector=[float(x) for x in query],
                target_vector=VECTOR,
                limit=k,
                filters=flt,
                return_metadata=MetadataQuery(distance=True),
                return_properties=["passage_id"],
            )
        except WeaviateBaseError as error:
            raise _unavailable(error) from error
        hits = [
            (str(o.properties["passage_id"]), 1.0 - float(o.metadata.distance or 0.0)) for o in found.objects
        ]
        return await self._resolve(org_id, hits, model)

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
        # `budget` is an SQL store's cap on ranked rows; Weaviate's inverted index ranks every match.
        flt = search_filter(scopes, where)
        if flt is None or not terms or k <= 0:
            return []
        tenant = tenant_name(org_id)
        hits: list[tuple[str, float]] = []
        for model, dim in await self._models(org_id, scopes):
            name = collection_name(model, dim)
            if not await self._present(name, tenant):
                continue
            collection = (await self.connect()).collections.use(name).with_tenant(tenant)
            try:
                found = await collection.query.bm25(
                    query=" ".join(terms),
                    query_properties=["text"],
                    limit=k,
                    filters=flt,
                    return_metadata=MetadataQuery(score=True),
                    return_properties=["passage_id"],
                )
            except WeaviateBaseError as error:
                raise _unavailable(error) from error
            # Lower is better, as the SQL stores rank (bm25() on SQLite, the negated ts_rank on Postgres).
            hits += [
                (str(o.properties["passage_id"]), -float(o.metadata.score or 0.0)) for o in found.objects
            ]
        hits.sort(key=lambda hit: hit[1])
        return (await self._resolve(org_id, hits, None))[:k]
