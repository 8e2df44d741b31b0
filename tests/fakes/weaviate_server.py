"""A fake Weaviate speaking the real wire protocols: REST (httpx from weaviate-client) and gRPC (the
`weaviate.v1.Weaviate` service, served with the message classes that weaviate-client itself ships).

It really stores objects (per collection and tenant) and really computes what it answers: cosine or
dot/L2 distance over the stored vectors (exact, no HNSW), BM25 (k1 1.2, b 0.75, IDF over the tenant's
objects, "word" tokenization: lower-cased runs of letters and digits), and filters. A test fixture
only: never a runtime default. What it covers, and nothing more:

- REST: GET /v1/meta, /v1/.well-known/ready|live (openid-configuration: 404, no OIDC), GET/POST
  /v1/schema, GET/DELETE /v1/schema/{collection}, GET/POST /v1/schema/{collection}/tenants, GET and
  HEAD (the client's existence check) /v1/schema/{collection}/tenants/{tenant}, GET/DELETE
  /v1/objects/{collection}/{id}?tenant=.
- gRPC: /grpc.health.v1.Health/Check (the client's ping), Search (near_vector or bm25, filters,
  limit, offset, returned properties, distance and score metadata), BatchObjects, BatchDelete
  (filters, dry run, verbose) and TenantsGet.
- Filters: equal, not equal, <, <=, >, >=, and, or, not, contains any/all/none on text, int, number
  and boolean values and arrays. Others (like, geo, null, references) answer UNIMPLEMENTED.
- Failure injection: `refuse_writes` makes BatchObjects refuse every object.
- Multi-tenancy is enforced: a multi-tenant collection refuses calls without a known tenant. An API
  key, when set, is required on both protocols (REST 401, gRPC UNAUTHENTICATED).

Not there: hybrid search, near_text and other modules, group by, sort, cursors, references,
stop-word presets (every word counts, as the store configures: preset "none"), tenant activity
states, replication and consistency levels.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from weaviate.proto.v1 import (
    base_pb2,
    base_search_pb2,
    batch_delete_pb2,
    batch_pb2,
    health_weaviate_pb2,
    properties_pb2,
    search_get_pb2,
    tenants_pb2,
    weaviate_pb2_grpc,
)

from tests.fakes.background import BackgroundServer, free_port

VERSION = "1.33.0"
_WORD = re.compile(r"[0-9A-Za-z\u00c0-\uffff]+")
K1, B = 1.2, 0.75


def words(text: str) -> list[str]:
    """Weaviate's "word" tokenization: lower-cased runs of letters and digits."""
    return [w.lower() for w in _WORD.findall(text)]


@dataclass
class StoredObject:
    id: str
    properties: dict[str, Any]
    vectors: dict[str, np.ndarray[Any, np.dtype[np.float32]]]
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))


@dataclass
class Collection:
    config: dict[str, Any]
    tenants: dict[str, dict[str, StoredObject]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.config["class"])

    @property
    def multi_tenant(self) -> bool:
        return bool(self.config.get("multiTenancyConfig", {}).get("enabled"))

    def data_type(self, prop: str) -> str:
        for p in self.config.get("properties", []):
            if p["name"] == prop:
                return str(p["dataType"][0])
        return ""

    def distance(self, vector: str) -> str:
        configs = self.config.get("vectorConfig") or {}
        index = configs.get(vector, {}).get("vectorIndexConfig") if vector else None
        index = index or self.config.get("vectorIndexConfig") or {}
        return str(index.get("distance", "cosine"))


class FakeError(Exception):
    def __init__(self, status: int, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class FakeWeaviate:
    """The shared state of both protocols, guarded by one lock (REST and gRPC serve from threads)."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.collections: dict[str, Collection] = {}
        self.lock = threading.Lock()
        # Every gRPC method and REST route called, in order (tests read what went over the wire).
        self.calls: list[str] = []
        # When set, BatchObjects refuses every object with this message (as a full disk or a read-only
        # shard would), so tests can see what a refused write leaves behind.
        self.refuse_writes: str | None = None

    # State, for REST and gRPC alike

    def collection(self, name: str) -> Collection:
        found = self.collections.get(name[:1].upper() + name[1:])
        if found is None:
            raise FakeError(404, grpc.StatusCode.NOT_FOUND, f"class {name} not found")
        return found

    def objects(self, name: str, tenant: str) -> dict[str, StoredObject]:
        collection = self.collection(name)
        if not collection.multi_tenant:
            if tenant:
                raise FakeError(
                    422, grpc.StatusCode.INVALID_ARGUMENT, f"class {name} has multi-tenancy disabled"
                )
            return collection.tenants.setdefault("", {})
        if not tenant:
            raise FakeError(
                422,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"class {name} has multi-tenancy enabled, but request was without tenant",
            )
        if tenant not in collection.tenants:
            raise FakeError(422, grpc.StatusCode.INVALID_ARGUMENT, f'tenant not found: "{tenant}"')
        return collection.tenants[tenant]

    def stored(self, name: str, tenant: str) -> list[StoredObject]:
        """The objects of one collection's tenant (for tests)."""
        with self.lock:
            return list(self.objects(name, tenant).values())

    def authorized(self, header: str | None) -> bool:
        return self.api_key is None or header == f"Bearer {self.api_key}"


# REST


def rest_app(fake: FakeWeaviate) -> Starlette:
    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            fake.calls.append(f"{request.method} {request.url.path}")
            if not request.url.path.startswith("/v1/.well-known") and not fake.authorized(
                request.headers.get("authorization")
            ):
                return JSONResponse({"code": 401, "message": "anonymous access not enabled"}, 401)
            try:
                body = await request.json() if request.method in ("POST", "PUT") else None
                with fake.lock:
                    response: Response = handler(request, body)
                    return response
            except FakeError as error:
                return JSONResponse({"error": [{"message": str(error)}]}, error.status)

        return endpoint

    def meta(request: Request, body: Any) -> Response:
        return JSONResponse({"hostname": "http://[::]:8080", "version": VERSION, "modules": {}})

    def ready(request: Request, body: Any) -> Response:
        return Response(status_code=200)

    def no_oidc(request: Request, body: Any) -> Response:
        return Response(status_code=404)

    def schema(request: Request, body: Any) -> Response:
        if request.method == "GET":
            return JSONResponse({"classes": [c.config for c in fake.collections.values()]})
        name = str(body["class"])
        name = name[:1].upper() + name[1:]
        if name in fake.collections:
            return JSONResponse({"error": [{"message": f"class name {name} already exists"}]}, 422)
        body["class"] = name
        fake.collections[name] = Collection(body)
        return JSONResponse(body)

    def one_collection(request: Request, body: Any) -> Response:
        name = request.path_params["name"]
        if request.method == "DELETE":
            fake.collections.pop(name[:1].upper() + name[1:], None)
            return Response(status_code=200)
        return JSONResponse(fake.collection(name).config)

    def tenants(request: Request, body: Any) -> Response:
        collection = fake.collection(request.path_params["name"])
        if not collection.multi_tenant:
            raise FakeError(422, grpc.StatusCode.INVALID_ARGUMENT, "multi-tenancy is not enabled")
        if request.method == "POST":
            for tenant in body:
                name = str(tenant["name"])
                if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
                    raise FakeError(422, grpc.StatusCode.INVALID_ARGUMENT, f"invalid tenant name {name!r}")
                collection.tenants.setdefault(name, {})
            return JSONResponse(body)
        return JSONResponse([{"name": t, "activityStatus": "HOT"} for t in collection.tenants])

    def one_tenant(request: Request, body: Any) -> Response:
        collection = fake.collection(request.path_params["name"])
        tenant = request.path_params["tenant"]
        if tenant not in collection.tenants:
            return Response(status_code=404)
        return JSONResponse({"name": tenant, "activityStatus": "HOT"})

    def one_object(request: Request, body: Any) -> Response:
        objects = fake.objects(request.path_params["name"], request.query_params.get("tenant", ""))
        found = objects.get(request.path_params["id"])
        if found is None:
            return Response(status_code=404)
        if request.method == "DELETE":
            del objects[found.id]
            return Response(status_code=204)
        return JSONResponse(
            {"id": found.id, "class": request.path_params["name"], "properties": found.properties}
        )

    return Starlette(
        routes=[
            Route("/v1/meta", guarded(meta)),
            Route("/v1/.well-known/ready", guarded(ready)),
            Route("/v1/.well-known/live", guarded(ready)),
            Route("/v1/.well-known/openid-configuration", guarded(no_oidc)),
            Route("/v1/schema", guarded(schema), methods=["GET", "POST"]),
            Route("/v1/schema/{name}", guarded(one_collection), methods=["GET", "DELETE"]),
            Route("/v1/schema/{name}/tenants", guarded(tenants), methods=["GET", "POST"]),
            Route("/v1/schema/{name}/tenants/{tenant}", guarded(one_tenant), methods=["GET"]),
            Route("/v1/objects/{name}/{id}", guarded(one_object), methods=["GET", "DELETE"]),
        ]
    )


# Objects in and out of the wire format


def _plain(value: Any, data_type: str) -> Any:
    if data_type == "int" and isinstance(value, float):
        return int(value)
    if data_type == "int[]" and isinstance(value, list):
        return [int(v) for v in value]
    return value


def properties_in(collection: Collection, props: batch_pb2.BatchObject.Properties) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in json_format.MessageToDict(props.non_ref_properties).items():
        out[name] = _plain(value, collection.data_type(name))
    for group in (props.text_array_properties, props.int_array_properties, props.boolean_array_properties):
        for array in group:
            out[array.prop_name] = list(array.values)
    for numbers in props.number_array_properties:
        out[numbers.prop_name] = (
            list(np.frombuffer(numbers.values_bytes, "<f8")) if numbers.values_bytes else list(numbers.values)
        )
    for empty in props.empty_list_props:
        out[empty] = []
    return out


def value_out(value: Any, data_type: str) -> properties_pb2.Value:
    if isinstance(value, bool):
        return properties_pb2.Value(bool_value=value)
    if isinstance(value, int) or (data_type == "int" and isinstance(value, float)):
        return properties_pb2.Value(int_value=int(value))
    if isinstance(value, float):
        return properties_pb2.Value(number_value=value)
    if isinstance(value, list):
        listed = properties_pb2.ListValue()
        if data_type in ("int[]",):
            listed.int_values.values = np.array(value, "<i8").tobytes()
        elif data_type in ("number[]",):
            listed.number_values.values = np.array(value, "<f8").tobytes()
        elif data_type in ("boolean[]",):
            listed.bool_values.values.extend(bool(v) for v in value)
        else:
            listed.text_values.values.extend(str(v) for v in value)
        return properties_pb2.Value(list_value=listed)
    if value is None:
        return properties_pb2.Value(null_value="NULL_VALUE")
    return properties_pb2.Value(text_value=str(value))


def vectors_in(obj: batch_pb2.BatchObject) -> dict[str, np.ndarray[Any, np.dtype[np.float32]]]:
    found = {v.name: np.frombuffer(v.vector_bytes, "<f4").copy() for v in obj.vectors}
    if obj.vector_bytes:
        found[""] = np.frombuffer(obj.vector_bytes, "<f4").copy()
    elif len(obj.vector):
        found[""] = np.array(obj.vector, np.float32)
    return found


# Filters


def _filter_value(f: base_pb2.Filters) -> Any:
    kind = f.WhichOneof("test_value")
    if kind is None:
        raise FakeError(422, grpc.StatusCode.INVALID_ARGUMENT, "a filter without a value")
    value = getattr(f, kind)
    if kind.endswith("_array"):
        return list(value.values)
    if kind == "value_geo":
        raise FakeError(501, grpc.StatusCode.UNIMPLEMENTED, "geo filters are not implemented by the fake")
    return value


def _target(f: base_pb2.Filters) -> str:
    if f.HasField("target"):
        if f.target.WhichOneof("target") != "property":
            raise FakeError(
                501, grpc.StatusCode.UNIMPLEMENTED, "reference filters are not implemented by the fake"
            )
        return str(f.target.property)
    if len(f.on) == 1:
        return str(f.on[0])
    raise FakeError(
        501, grpc.StatusCode.UNIMPLEMENTED, f"filter path {list(f.on)} is not implemented by the fake"
    )


def matches(f: base_pb2.Filters, obj: StoredObject) -> bool:
    op = base_pb2.Filters
    if f.operator == op.OPERATOR_AND:
        return all(matches(inner, obj) for inner in f.filters)
    if f.operator == op.OPERATOR_OR:
        return any(matches(inner, obj) for inner in f.filters)
    if f.operator == op.OPERATOR_NOT:
        return not all(matches(inner, obj) for inner in f.filters)
    name = _target(f)
    have = obj.id if name == "_id" else obj.properties.get(name)
    want = _filter_value(f)
    if f.operator in (op.OPERATOR_CONTAINS_ANY, op.OPERATOR_CONTAINS_ALL, op.OPERATOR_CONTAINS_NONE):
        values = set(have if isinstance(have, list) else [] if have is None else [have])
        wanted = set(want if isinstance(want, list) else [want])
        if f.operator == op.OPERATOR_CONTAINS_ANY:
            return bool(values & wanted)
        if f.operator == op.OPERATOR_CONTAINS_ALL:
            return wanted <= values
        return not values & wanted
    if have is None:
        return False
    if isinstance(have, list):
        # A scalar comparison on an array property holds when it holds for one element (Weaviate's way).
        return any(_compare(f.operator, h, want) for h in have)
    return _compare(f.operator, have, want)


def _compare(operator: int, have: Any, want: Any) -> bool:
    op = base_pb2.Filters
    if operator == op.OPERATOR_EQUAL:
        return bool(have == want)
    if operator == op.OPERATOR_NOT_EQUAL:
        return bool(have != want)
    if operator == op.OPERATOR_GREATER_THAN:
        return bool(have > want)
    if operator == op.OPERATOR_GREATER_THAN_EQUAL:
        return bool(have >= want)
    if operator == op.OPERATOR_LESS_THAN:
        return bool(have < want)
    if operator == op.OPERATOR_LESS_THAN_EQUAL:
        return bool(have <= want)
    raise FakeError(
        501,
        grpc.StatusCode.UNIMPLEMENTED,
        f"filter operator {op.Operator.Name(operator)} is not implemented by the fake",
    )


# Searches


def _distance(kind: str, a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    if kind == "cosine":
        norms = float(np.linalg.norm(a) * np.linalg.norm(b))
        return 1.0 - (float(np.dot(a, b)) / norms if norms else 0.0)
    if kind == "dot":
        return -float(np.dot(a, b))
    if kind == "l2-squared":
        return float(np.sum((a - b) ** 2))
    raise FakeError(501, grpc.StatusCode.UNIMPLEMENTED, f"distance {kind} is not implemented by the fake")


def _query_vector(near: base_search_pb2.NearVector) -> tuple[str, np.ndarray[Any, np.dtype[np.float32]]]:
    targets = list(near.targets.target_vectors) or list(near.target_vectors)
    if len(targets) > 1:
        raise FakeError(
            501, grpc.StatusCode.UNIMPLEMENTED, "multi-target vector search is not implemented by the fake"
        )
    target = targets[0] if targets else ""
    if near.vectors:
        return target, np.frombuffer(near.vectors[0].vector_bytes, "<f4")
    if near.vector_bytes:
        return target, np.frombuffer(near.vector_bytes, "<f4")
    if len(near.vector):
        return target, np.array(near.vector, np.float32)
    raise FakeError(422, grpc.StatusCode.INVALID_ARGUMENT, "near_vector without a vector")


def search(fake: FakeWeaviate, request: search_get_pb2.SearchRequest) -> search_get_pb2.SearchReply:
    unsupported = [
        kind
        for kind in ("hybrid_search", "near_object", "near_text", "group_by", "generative", "rerank")
        if request.HasField(kind)
    ]
    if unsupported or request.sort_by:
        raise FakeError(
            501, grpc.StatusCode.UNIMPLEMENTED, f"{unsupported or 'sort_by'} not implemented by the fake"
        )
    collection = fake.collection(request.collection)
    objects = list(fake.objects(request.collection, request.tenant).values())
    passing = [o for o in objects if not request.HasField("filters") or matches(request.filters, o)]
    scored: list[tuple[StoredObject, float | None, float | None]]  # object, distance, score
    if request.HasField("near_vector"):
        target, query = _query_vector(request.near_vector)
        kind = collection.distance(target)
        scored = []
        for o in passing:
            vector = (
                o.vectors.get(target)
                if target
                else (o.vectors.get("") or next(iter(o.vectors.values()), None))
            )
            if vector is None:
                continue
            if len(vector) != len(query):
                raise FakeError(
                    422,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"vector lengths don't match: {len(query)} vs {len(vector)}",
                )
            scored.append((o, _distance(kind, query, vector), None))
        if request.near_vector.HasField("distance"):
            scored = [s for s in scored if s[1] is not None and s[1] <= request.near_vector.distance]
        scored.sort(key=lambda s: s[1] if s[1] is not None else math.inf)
    elif request.HasField("bm25_search"):
        scored = [(o, None, score) for o, score in bm25(collection, objects, passing, request.bm25_search)]
    else:
        scored = [(o, None, None) for o in sorted(passing, key=lambda o: o.id)]
    limit = request.limit or 10
    page = scored[request.offset : request.offset + limit]
    reply = search_get_pb2.SearchReply(took=0.0)
    for obj, distance, score in page:
        reply.results.append(result_of(collection, obj, request, distance, score))
    return reply


def bm25(
    collection: Collection, everyone: list[StoredObject], passing: list[StoredObject], query: Any
) -> list[tuple[StoredObject, float]]:
    props = list(query.properties) or [
        p["name"] for p in collection.config.get("properties", []) if p["dataType"][0] in ("text", "text[]")
    ]
    terms = list(dict.fromkeys(words(query.query)))
    if not terms:
        return []

    def tokens(o: StoredObject, prop: str) -> list[str]:
        value = o.properties.get(prop)
        if isinstance(value, list):
            return [w for v in value for w in words(str(v))]
        return words(str(value)) if value is not None else []

    scores: dict[str, float] = {}
    by_id = {o.id: o for o in passing}
    for prop in props:
        docs = {
            o.id: tokens(o, prop) for o in everyone
        }  # statistics over the whole tenant, as Weaviate's shard
        n = len(docs)
        average = sum(len(d) for d in docs.values()) / n if n else 0.0
        for term in terms:
            having = sum(1 for d in docs.values() if term in d)
            if not having:
                continue
            idf = math.log(1 + (n - having + 0.5) / (having + 0.5))
            for oid in by_id:
                doc = docs[oid]
                tf = doc.count(term)
                if tf:
                    scores[oid] = scores.get(oid, 0.0) + idf * tf * (K1 + 1) / (
                        tf + K1 * (1 - B + B * len(doc) / (average or 1.0))
                    )
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [(by_id[oid], score) for oid, score in ranked]


def result_of(
    collection: Collection,
    obj: StoredObject,
    request: search_get_pb2.SearchRequest,
    distance: float | None,
    score: float | None,
) -> search_get_pb2.SearchResult:
    wanted = (
        list(obj.properties)
        if request.properties.return_all_nonref_properties
        else list(request.properties.non_ref_properties)
    )
    props = properties_pb2.Properties()
    for name in wanted:
        if name in obj.properties:
            props.fields[name].CopyFrom(value_out(obj.properties[name], collection.data_type(name)))
    meta = search_get_pb2.MetadataResult(id=obj.id, id_as_bytes=uuid.UUID(obj.id).bytes)
    if distance is not None and request.metadata.distance:
        meta.distance, meta.distance_present = distance, True
    if score is not None and request.metadata.score:
        meta.score, meta.score_present = score, True
    if request.metadata.creation_time_unix:
        meta.creation_time_unix, meta.creation_time_unix_present = obj.created_ms, True
    if request.metadata.vector:
        for name, vector in obj.vectors.items():
            meta.vectors.append(base_pb2.Vectors(name=name, vector_bytes=vector.astype("<f4").tobytes()))
    return search_get_pb2.SearchResult(
        properties=search_get_pb2.PropertiesResult(target_collection=collection.name, non_ref_props=props),
        metadata=meta,
    )


# gRPC


class WeaviateServicer(weaviate_pb2_grpc.WeaviateServicer):
    def __init__(self, fake: FakeWeaviate) -> None:
        self._fake = fake

    def _enter(self, method: str, context: grpc.ServicerContext) -> None:
        self._fake.calls.append(f"grpc {method}")
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        if not self._fake.authorized(metadata.get("authorization")):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "anonymous access not enabled")

    def _guarded(self, method: str, context: grpc.ServicerContext, work: Any) -> Any:
        self._enter(method, context)
        try:
            with self._fake.lock:
                return work()
        except FakeError as error:
            context.abort(error.code, str(error))

    def Search(self, request: search_get_pb2.SearchRequest, context: grpc.ServicerContext) -> Any:
        return self._guarded("Search", context, lambda: search(self._fake, request))

    def BatchObjects(self, request: batch_pb2.BatchObjectsRequest, context: grpc.ServicerContext) -> Any:
        def work() -> batch_pb2.BatchObjectsReply:
            reply = batch_pb2.BatchObjectsReply(took=0.0)
            for index, obj in enumerate(request.objects):
                try:
                    if self._fake.refuse_writes is not None:
                        raise FakeError(500, grpc.StatusCode.INTERNAL, self._fake.refuse_writes)
                    collection = self._fake.collection(obj.collection)
                    objects = self._fake.objects(obj.collection, obj.tenant)
                    vectors = vectors_in(obj)
                    if not vectors:
                        raise FakeError(
                            422, grpc.StatusCode.INVALID_ARGUMENT, "no vector given (no vectorizer)"
                        )
                    oid = str(uuid.UUID(obj.uuid)) if obj.uuid else str(uuid.uuid4())
                    objects[oid] = StoredObject(oid, properties_in(collection, obj.properties), vectors)
                except FakeError as error:
                    reply.errors.append(batch_pb2.BatchObjectsReply.BatchError(index=index, error=str(error)))
            return reply

        return self._guarded("BatchObjects", context, work)

    def BatchDelete(self, request: batch_delete_pb2.BatchDeleteRequest, context: grpc.ServicerContext) -> Any:
        def work() -> batch_delete_pb2.BatchDeleteReply:
            objects = self._fake.objects(request.collection, request.tenant)
            doomed = [o for o in objects.values() if matches(request.filters, o)]
            if not request.dry_run:
                for o in doomed:
                    del objects[o.id]
            reply = batch_delete_pb2.BatchDeleteReply(took=0.0, matches=len(doomed), successful=len(doomed))
            if request.verbose:
                for o in doomed:
                    reply.objects.append(
                        batch_delete_pb2.BatchDeleteObject(uuid=uuid.UUID(o.id).bytes, successful=True)
                    )
            return reply

        return self._guarded("BatchDelete", context, work)

    def TenantsGet(self, request: tenants_pb2.TenantsGetRequest, context: grpc.ServicerContext) -> Any:
        def work() -> tenants_pb2.TenantsGetReply:
            collection = self._fake.collection(request.collection)
            names = list(request.names.values) if request.HasField("names") else list(collection.tenants)
            reply = tenants_pb2.TenantsGetReply(took=0.0)
            for name in names:
                if name in collection.tenants:
                    reply.tenants.append(
                        tenants_pb2.Tenant(name=name, activity_status=tenants_pb2.TENANT_ACTIVITY_STATUS_HOT)
                    )
            return reply

        return self._guarded("TenantsGet", context, work)


def _health(request: Any, context: grpc.ServicerContext) -> Any:
    return health_weaviate_pb2.WeaviateHealthCheckResponse(
        status=health_weaviate_pb2.WeaviateHealthCheckResponse.SERVING
    )


class RunningFake:
    """The fake on two loopback ports: REST at `url`, gRPC at `grpc_address`."""

    def __init__(self, fake: FakeWeaviate) -> None:
        self.fake = fake
        self._http = BackgroundServer(rest_app(fake))
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        weaviate_pb2_grpc.add_WeaviateServicer_to_server(WeaviateServicer(fake), self._grpc)  # type: ignore[no-untyped-call]
        self._grpc.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "grpc.health.v1.Health",
                    {
                        "Check": grpc.unary_unary_rpc_method_handler(
                            _health,
                            request_deserializer=health_weaviate_pb2.WeaviateHealthCheckRequest.FromString,
                            response_serializer=health_weaviate_pb2.WeaviateHealthCheckResponse.SerializeToString,
                        )
                    },
                )
            ]
        )
        self.grpc_port = free_port()
        self._grpc.add_insecure_port(f"127.0.0.1:{self.grpc_port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        self._grpc.start()
        self._http.start()

    def stop(self) -> None:
        self._http.stop()
        self._grpc.stop(0)


def running_fake(api_key: str | None = None) -> Iterator[RunningFake]:
    """Starts a fake Weaviate, yields it, stops it (a generator for fixtures)."""
    served = RunningFake(FakeWeaviate(api_key))
    served.start()
    try:
        yield served
    finally:
        served.stop()
