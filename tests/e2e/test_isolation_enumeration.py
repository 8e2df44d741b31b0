"""Organization B's admin key on organization A's resources, over every REST operation and every gRPC method.

The operations are not listed here: they come from the gateway's `/openapi.json` and from each service's
reflection, so a route or method added tomorrow is probed tomorrow. Each one is filled with A's ids wherever a
path parameter, query parameter, body field or request field names a resource, then sent with B's key:

- an operation aimed at one of A's resources (a REST path id; the gRPC method's own `<noun>_id`) must be
  refused: 404 / 403, NOT_FOUND / PERMISSION_DENIED;
- any other operation carrying A's ids (list filters, attach-at-create, ids of a parent another service owns)
  must be refused or answer without anything of A's: no marker of A's content and no A id B did not send;
- an operation naming no resource must answer without anything of A's either;
- an id-like parameter or field the test has no resource for fails the test (so it gets one).

A's resources are read back with A's key before and after: they must be unchanged.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import re
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mnemo_core.settings import GRPC_SERVICES
from tests.fakes.llm_provider import FakeProvider, reply
from tests.harness import RunningMesh, mesh_env, running_mesh

MARKER = f"a-only-{uuid.uuid4().hex}"
MCP_SERVER = str(Path(__file__).parents[1] / "fakes" / "mcp_server.py")
# Request fields that end in _id but name no resource of the mesh (a tool call's, a request's), and messages
# whose `id` is no resource (a tool call's own id; an audit event's, made by the recorder that sends it).
NOT_RESOURCES = {"tool_call_id", "request_id"}
NOT_RESOURCE_MESSAGES = {"mnemo.common.v1.ToolCall", "mnemo.agent.v1.AuditEvent"}
# Names under which requests refer to a resource the registry holds under another name.
ALIASES = {
    "primary_agent_id": "agent_id",
    "sleeptime_agent_id": "agent_id",
    "shared_block_ids": "block_id",
    "expected_first_message_id": "message_id",
    "keep_from_message_id": "message_id",
    "end_user_id": "identity_id",
    "api_key_id": "key_id",
    "organization_id": "org_id",
    "manager_agent_id": "agent_id",
}
# Plain values that get a request past validation to the lookup, by field name.
_PLAIN = {
    "model": "openai/gpt-4o-mini",
    "summarizer_model": "openai/gpt-4o-mini",
    "embedding_model": "local/all-minilm-l6-v2",
    "file_name": "probe.txt",
}
REFUSED_HTTP = {403, 404}
REFUSED_GRPC = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED}
# Verbs of gRPC methods: what follows is the noun of the resource the method is aimed at.
VERBS = re.compile(
    r"^(Get|Update|Delete|Attach|Detach|Run|Cancel|Approve|Refresh|Undo|Redo|Restore|Export|Upload|Summarize|"
    r"Recompile|Compact|Purge|Append|Replace|Insert|Rewrite|List|Search|Send|Stream)"
)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass
class Tenant:
    org_id: str
    user_id: str
    key_id: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Tally:
    """What the probes found, per surface."""

    refused: int = 0
    answered_without_a: int = 0
    unscoped: int = 0
    failures: list[str] = field(default_factory=list)
    # The answers to requests that carried A's ids without being refused, for the record.
    answers: list[str] = field(default_factory=list)

    def line(self, surface: str) -> str:
        total = self.refused + self.answered_without_a + self.unscoped
        return (
            f"{surface}: {total} operations probed: {self.refused} refused, {self.answered_without_a} answered "
            f"without A's data, {self.unscoped} name no resource; {len(self.failures)} failures"
        )


@pytest.fixture(scope="module")
async def iso_mesh(
    tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider
) -> AsyncIterator[RunningMesh]:
    """A mesh of its own: B's probes create all sorts of resources of B's."""
    env = mesh_env(tmp_path_factory.mktemp("isolation"), provider_url=fake_provider.base_url)
    async with running_mesh(env) as mesh:
        yield mesh


async def _tenant(root: httpx.AsyncClient, name: str) -> Tenant:
    org = await root.post("/v1/organizations", json={"name": f"{name}-{uuid.uuid4().hex[:8]}"})
    assert org.status_code == 201, org.text
    org_id = org.json()["id"]
    user = await root.post("/v1/users", json={"name": "admin", "org_id": org_id})
    assert user.status_code == 201, user.text
    key = await root.post(
        "/v1/api-keys",
        json={"name": "admin", "role": "admin", "user_id": user.json()["id"], "org_id": org_id},
    )
    assert key.status_code == 201, key.text
    return Tenant(org_id, user.json()["id"], key.json()["id"], key.json()["secret"])


def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else None


async def _resources_of_a(api: httpx.AsyncClient, a: Tenant, llm: FakeProvider) -> dict[str, str]:
    """One of each kind of resource, made by A, with A's marker in whatever it holds."""
    ids: dict[str, str] = {"org_id": a.org_id, "user_id": a.user_id, "key_id": a.key_id}
    agent = _ok(await api.post("/v1/agents", json={"name": f"agent-{MARKER}", "model": "openai/gpt-4o-mini"}))
    ids["agent_id"] = agent["id"]
    second = _ok(
        await api.post("/v1/agents", json={"name": f"second-{MARKER}", "model": "openai/gpt-4o-mini"})
    )
    block = _ok(await api.post("/v1/blocks", json={"label": "notes", "value": f"value {MARKER}"}))
    ids["block_id"] = block["id"]
    ids["label"] = "notes"
    _ok(await api.patch(f"/v1/agents/{ids['agent_id']}/core-memory/blocks/attach/{ids['block_id']}"))
    tool = _ok(
        await api.post(
            "/v1/tools",
            json={
                "source_code": f'def a_tool(x: int) -> str:\n    """Says {MARKER}.\n\n    Args:\n'
                '        x: a number\n    """\n    return str(x)\n'
            },
        )
    )
    ids["tool_id"] = tool["id"]
    _ok(await api.patch(f"/v1/agents/{ids['agent_id']}/tools/attach/{ids['tool_id']}"))
    _ok(await api.patch(f"/v1/agents/{ids['agent_id']}/tool-environment", json={"set": {"A_SECRET": MARKER}}))
    server = _ok(
        await api.post(
            "/v1/mcp-servers",
            json={
                "name": f"mcp-{MARKER}",
                "transport": "stdio",
                "command": sys.executable,
                "args": [MCP_SERVER],
                "tool_prefix": "a_",
            },
        )
    )
    ids["mcp_server_id"] = server["id"]
    source = _ok(await api.post("/v1/sources", json={"name": f"source-{MARKER}"}))
    ids["source_id"] = source["id"]
    job = _ok(
        await api.post(
            f"/v1/sources/{ids['source_id']}/upload",
            files={"file": ("a.txt", f"text {MARKER}".encode(), "text/plain")},
        )
    )
    ids["job_id"], ids["file_id"] = job["job"]["id"], job["file"]["id"]
    for _ in range(400):
        if _ok(await api.get(f"/v1/jobs/{ids['job_id']}"))["status"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.05)
    _ok(await api.patch(f"/v1/agents/{ids['agent_id']}/sources/attach/{ids['source_id']}"))
    passages = _ok(
        await api.post(f"/v1/agents/{ids['agent_id']}/archival-memory", json={"text": f"fact {MARKER}"})
    )
    ids["passage_id"] = passages[0]["id"]
    llm.script(reply(f"answer {MARKER}"))
    turn = _ok(
        await api.post(
            f"/v1/agents/{ids['agent_id']}/messages", json={"messages": [{"role": "user", "content": MARKER}]}
        )
    )
    ids["run_id"] = turn["run_id"]
    ids["message_id"] = turn["messages"][0]["id"]
    group = _ok(
        await api.post(
            "/v1/groups", json={"name": f"group-{MARKER}", "agent_ids": [ids["agent_id"], second["id"]]}
        )
    )
    ids["group_id"] = group["id"]
    llm.script(reply(f"first {MARKER}"), reply(f"second {MARKER}"), reply("third"), reply("fourth"))
    group_turn = _ok(
        await api.post(f"/v1/groups/{ids['group_id']}/messages", json={"messages": [{"content": MARKER}]})
    )
    ids["group_run_id"] = group_turn["group_run_id"]
    identity = _ok(
        await api.post(
            "/v1/identities",
            json={"identifier_key": f"who-{MARKER}", "name": MARKER, "agent_ids": [ids["agent_id"]]},
        )
    )
    ids["identity_id"] = identity["id"]
    llm.script(reply(f"batched {MARKER}"))
    batch = _ok(
        await api.post(
            "/v1/batches", json={"turns": [{"agent_id": second["id"], "messages": [{"content": "hi"}]}]}
        )
    )
    ids["batch_id"] = batch["id"]
    # Everything of A's settles before the first snapshot, so that only B's probes could change it.
    for _ in range(400):
        if _ok(await api.get(f"/v1/batches/{ids['batch_id']}"))["status"] == "completed":
            break
        await asyncio.sleep(0.05)
    return ids


# What A reads back before and after B's probes (A's key).
def _snapshot_paths(ids: dict[str, str]) -> list[str]:
    agent, source = ids["agent_id"], ids["source_id"]
    return [
        f"/v1/agents/{agent}",
        f"/v1/agents/{agent}/core-memory/blocks",
        f"/v1/agents/{agent}/tools",
        f"/v1/agents/{agent}/sources",
        f"/v1/agents/{agent}/tool-environment",
        f"/v1/agents/{agent}/archival-memory",
        f"/v1/agents/{agent}/messages",
        f"/v1/blocks/{ids['block_id']}",
        f"/v1/blocks/{ids['block_id']}/history",
        f"/v1/tools/{ids['tool_id']}",
        f"/v1/mcp-servers/{ids['mcp_server_id']}",
        f"/v1/sources/{source}",
        f"/v1/sources/{source}/files",
        f"/v1/runs/{ids['run_id']}",
        f"/v1/groups/{ids['group_id']}",
        f"/v1/identities/{ids['identity_id']}",
        f"/v1/users/{ids['user_id']}",
        f"/v1/api-keys/{ids['key_id']}",
        "/v1/agents",
        "/v1/tools",
        "/v1/blocks",
        "/v1/sources",
    ]


# Fields that change when a resource is merely read or time passes, not when it is changed.
_VOLATILE = {"last_used_at", "updated_at_unused"}


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


async def _snapshot(api: httpx.AsyncClient, ids: dict[str, str]) -> dict[str, Any]:
    result = {}
    for path in _snapshot_paths(ids):
        response = await api.get(path, params={"limit": 1000} if path.count("/") == 2 else None)
        result[path] = (response.status_code, _stable(response.json()))
    return result


def _resource_for(name: str, ids: dict[str, str]) -> str | None:
    """The registry entry a parameter or field called `name` refers to; None when it names no resource."""
    name = ALIASES.get(name, name)
    if name in ids:
        return name
    if name.endswith("_ids") and name[:-1] in ids:
        return name[:-1]
    return None


def _id_like(name: str) -> bool:
    return (name.endswith(("_id", "_ids")) or name == "label") and name not in NOT_RESOURCES


_ID = re.compile(r"\b[a-z]+(?:-[a-z]+)?-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


@dataclass
class Secrets:
    """What B must never see: A's marker, and every id of A's that B has not itself sent in some request
    (B sends A's registry ids on purpose; an answer may echo them, or B's own records made with them)."""

    a_ids: set[str]
    sent: set[str] = field(default_factory=set)

    def record(self, request_text: str) -> None:
        self.sent |= {i for i in self.a_ids if i in request_text}

    def leaks(self, text: str) -> list[str]:
        found = [MARKER] if MARKER in text else []
        return found + sorted(i for i in self.a_ids - self.sent if i in text)


# --- REST -------------------------------------------------------------------------------------------------


class _Unclassified(Exception):
    pass


def _deref(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return _deref(options[0], spec) if options else {"type": "null"}
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _deref(schema["allOf"][0], spec)
    return schema


def _body(schema: dict[str, Any], spec: dict[str, Any], ids: dict[str, str], depth: int = 0) -> Any:
    """The smallest valid value of `schema`, with A's id in every property that names a resource."""
    schema = _deref(schema, spec)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        value = {}
        for name, sub in schema.get("properties", {}).items():
            if _id_like(name):
                resource = _resource_for(name, ids)
                if resource is None:
                    raise _Unclassified(f"body field {name}")
                is_list = _deref(sub, spec).get("type") == "array"
                value[name] = [ids[resource]] if is_list else ids[resource]
            elif name in schema.get("required", []) and name in _PLAIN:
                value[name] = _PLAIN[name]
            elif name in schema.get("required", []) and depth < 8:
                value[name] = _body(sub, spec, ids, depth + 1)
        return value
    if kind == "array":
        items = _deref(schema.get("items", {}), spec)
        if (items.get("type") == "object" or "properties" in items) and depth < 8:
            return [_body(items, spec, ids, depth + 1)]
        return [_body(items, spec, ids, depth + 1)] if schema.get("minItems") else []
    if kind == "string":
        return "x" * max(1, int(schema.get("minLength", 1))) if schema.get("format") != "binary" else "x"
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return False
    return None


@dataclass
class RestProbe:
    method: str
    path: str
    params: dict[str, Any]
    json_body: Any
    files: dict[str, Any] | None
    aimed: bool  # a path parameter names one of A's resources
    carries: bool  # A's ids anywhere in the request


def _rest_probe(
    method: str, template: str, op: dict[str, Any], spec: dict[str, Any], ids: dict[str, str]
) -> RestProbe:
    path = template
    for name in re.findall(r"{(\w+)}", template):
        resource = _resource_for(name, ids)
        if resource is None:
            raise _Unclassified(f"path parameter {name}")
        path = path.replace(f"{{{name}}}", ids[resource])
    params: dict[str, Any] = {}
    for parameter in op.get("parameters", []):
        if parameter["in"] != "query":
            continue
        name = parameter["name"]
        if _id_like(name):
            resource = _resource_for(name, ids)
            if resource is None:
                raise _Unclassified(f"query parameter {name}")
            params[name] = ids[resource]
        elif parameter.get("required"):
            params[name] = _body(parameter["schema"], spec, ids)
    json_body, files = None, None
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        schema = content["application/json"]["schema"]
        json_body = _body(schema, spec, ids)
        if json_body == {}:
            # An update naming no field is refused before any lookup: name one.
            properties = _deref(schema, spec).get("properties", {})
            name = next((n for n in ("description", "name", "value") if n in properties), None)
            if name is not None:
                json_body = {name: f"changed by b {uuid.uuid4().hex}"}
            elif properties:
                first = next(iter(properties))
                kind = _deref(properties[first], spec).get("type")
                json_body = {
                    first: {"PROBE": "x"} if kind == "object" else ["probe"] if kind == "array" else "x"
                }
    elif "multipart/form-data" in content:
        schema = _deref(content["multipart/form-data"]["schema"], spec)
        files = {name: ("probe.txt", b"probe", "text/plain") for name in schema.get("required", [])}
    sent = json.dumps([params, json_body])
    carries = "{" in template or any(v in sent for v in ids.values() if v != ids["label"])
    return RestProbe(method.upper(), path, params, json_body, files, "{" in template, carries)


def _rest_verdict(probe: RestProbe, response: httpx.Response, secrets: Secrets, tally: Tally) -> None:
    where = f"{probe.method} {probe.path}"
    if response.status_code >= 500:
        tally.failures.append(f"{where}: {response.status_code} {response.text[:200]}")
        return
    if response.status_code in REFUSED_HTTP and probe.carries:
        tally.refused += 1
        return
    leaks = secrets.leaks(response.text)
    if leaks:
        tally.failures.append(f"{where}: {response.status_code} with A's {leaks}")
    elif probe.aimed:
        tally.failures.append(f"{where}: {response.status_code}, not refused: {response.text[:200]}")
    elif probe.carries:
        tally.answered_without_a += 1
        tally.answers.append(f"{where}: {response.status_code}")
    else:
        tally.unscoped += 1


# --- gRPC -------------------------------------------------------------------------------------------------


def _import_stubs() -> None:
    """Loads every generated module, so that the messages reflection names can be built."""
    for package in ("mnemo.agent.v1", "mnemo.memory.v1", "mnemo.tools.v1", "mnemo.llm.v1", "mnemo.common.v1"):
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__):
            if info.name.endswith("_pb2"):
                importlib.import_module(f"{package}.{info.name}")


async def _reflected_methods(channel: grpc.aio.Channel) -> list[tuple[str, str, str, bool]]:
    """(service, method, input type, server-streaming) for every method the server lists."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask(request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        async for answer in stub.ServerReflectionInfo(iter([request]), timeout=30):
            return answer
        raise AssertionError("reflection did not answer")

    listed = await ask(reflection_pb2.ServerReflectionRequest(list_services=""))
    methods = []
    for service in listed.list_services_response.service:
        if service.name.startswith("grpc."):
            continue
        found = await ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=service.name))
        for raw in found.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            for declared in proto.service:
                if f"{proto.package}.{declared.name}" != service.name:
                    continue
                for method in declared.method:
                    methods.append(
                        (service.name, method.name, method.input_type.lstrip("."), method.server_streaming)
                    )
    return methods


def _fill(message: Any, ids: dict[str, str], depth: int = 0, *, prune: bool = False) -> list[str]:
    """Puts A's ids in every field of `message` that names a resource, and plain values in the other text
    fields (so that validation lets the request through to the lookup); returns the fields given A's ids.

    With `prune`, list entries that name none of A's resources are left out (some fail validation).
    """
    filled = []
    descriptor: Descriptor = message.DESCRIPTOR
    chosen = {oneof.fields[0].name for oneof in descriptor.oneofs if oneof.fields}
    for field_ in descriptor.fields:
        name = field_.name
        repeated = field_.is_repeated
        if field_.containing_oneof is not None and name not in chosen:
            continue
        if (
            field_.type == FieldDescriptor.TYPE_STRING
            and name == "id"
            and descriptor.full_name in NOT_RESOURCE_MESSAGES
        ):
            setattr(message, name, "probe")
        elif field_.type == FieldDescriptor.TYPE_STRING and name == "id" and depth > 0:
            # The id of the resource a request carries (UpdateTool's tool.id, ...).
            own = _snake(descriptor.name) + "_id"
            resource = _resource_for(own, ids)
            if resource is None:
                raise _Unclassified(f"field {descriptor.full_name}.id")
            setattr(message, name, ids[resource])
            filled.append(own)
        elif field_.type == FieldDescriptor.TYPE_STRING and _id_like(name):
            resource = _resource_for(name, ids)
            if resource is None:
                raise _Unclassified(f"field {descriptor.full_name}.{name}")
            if repeated:
                getattr(message, name).append(ids[resource])
            else:
                setattr(message, name, ids[resource])
            filled.append(name)
        elif field_.type == FieldDescriptor.TYPE_STRING and name not in ("page_token", "secret"):
            value = _PLAIN.get(name, "probe")
            if repeated:
                getattr(message, name).append(value)
            else:
                setattr(message, name, value)
        elif field_.type == FieldDescriptor.TYPE_MESSAGE and depth < 3:
            if field_.message_type.GetOptions().map_entry:
                continue
            if field_.message_type.full_name == "google.protobuf.FieldMask":
                getattr(message, name).paths.append(_mask_path(descriptor))
                continue
            if field_.message_type.full_name.startswith("google."):
                continue
            if repeated:
                entries = getattr(message, name)
                inner = _fill(entries.add(), ids, depth + 1, prune=prune)
                if prune and not inner:
                    del entries[-1]
                filled += inner
            else:
                filled += _fill(getattr(message, name), ids, depth + 1, prune=prune)
        elif field_.type == FieldDescriptor.TYPE_ENUM and not repeated and len(field_.enum_type.values) > 1:
            setattr(message, name, field_.enum_type.values[1].number)
        elif field_.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64) and name == "version":
            setattr(message, name, 1)
    return filled


def _mask_path(request: Descriptor) -> str:
    """A field an update may name, of the resource the request carries (one every kind lets change)."""
    for field_ in request.fields:
        if field_.type != FieldDescriptor.TYPE_MESSAGE or field_.message_type.full_name.startswith("google."):
            continue
        names = [
            inner.name
            for inner in field_.message_type.fields
            if inner.type == FieldDescriptor.TYPE_STRING and not _id_like(inner.name) and inner.name != "id"
        ]
        preferred = [n for n in ("tags", "description", "value") if n in names]
        if preferred or names:
            return (preferred or names)[0]
    return "description"


def _target_field(method: str) -> str | None:
    match = VERBS.match(method)
    if match is None or match.group(1) in ("List", "Search", "Send", "Stream", "Purge", "Append", "Compact"):
        return None
    return _snake(method[match.end() :]) + "_id"


async def _grpc_call(
    channel: grpc.aio.Channel,
    service: str,
    method: str,
    request: Any,
    response_cls: Any,
    streaming: bool,
    key: str,
) -> tuple[grpc.StatusCode, str]:
    path = f"/{service}/{method}"
    metadata = (("authorization", f"Bearer {key}"),)
    deserialize = response_cls.FromString
    try:
        if streaming:
            call = channel.unary_stream(
                path, request_serializer=type(request).SerializeToString, response_deserializer=deserialize
            )
            texts = []
            async for item in call(request, metadata=metadata, timeout=60):
                texts.append(json_format.MessageToJson(item))
                if len(texts) >= 20:
                    break
            return grpc.StatusCode.OK, "\n".join(texts)
        unary = channel.unary_unary(
            path, request_serializer=type(request).SerializeToString, response_deserializer=deserialize
        )
        answer = await unary(request, metadata=metadata, timeout=60)
        return grpc.StatusCode.OK, json_format.MessageToJson(answer)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""


# --- the test ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi(iso_mesh: RunningMesh) -> dict[str, Any]:
    document = httpx.get(f"{iso_mesh.http_url}/openapi.json", timeout=30)
    assert document.status_code == 200
    return dict(document.json())


async def test_organization_b_reaches_nothing_of_organization_a_on_any_rest_operation_or_grpc_method(
    iso_mesh: RunningMesh, openapi: dict[str, Any], llm: FakeProvider
) -> None:
    async with httpx.AsyncClient(base_url=iso_mesh.http_url, headers=iso_mesh.auth, timeout=60) as root:
        a, b = await _tenant(root, "org-a"), await _tenant(root, "org-b")
    async with (
        httpx.AsyncClient(base_url=iso_mesh.http_url, headers=a.auth, timeout=60) as as_a,
        httpx.AsyncClient(base_url=iso_mesh.http_url, headers=b.auth, timeout=60) as as_b,
    ):
        ids = await _resources_of_a(as_a, a, llm)
        before = await _snapshot(as_a, ids)
        seen_by_a = set(_ID.findall(json.dumps(before)))
        secrets = Secrets({v for k, v in ids.items() if k != "label"} | seen_by_a)
        rest, unclassified = Tally(), []
        for template, operations in sorted(openapi["paths"].items()):
            for method, op in sorted(operations.items()):
                try:
                    probe = _rest_probe(method, template, op, openapi, ids)
                except _Unclassified as exc:
                    unclassified.append(f"REST {method.upper()} {template}: {exc}")
                    continue
                secrets.record(probe.path + json.dumps([probe.params, probe.json_body]))
                response = await as_b.request(
                    probe.method, probe.path, params=probe.params, json=probe.json_body, files=probe.files
                )
                _rest_verdict(probe, response, secrets, rest)

        _import_stubs()
        pool = descriptor_pool.Default()
        over_grpc, seen = Tally(), set()
        for service_name in GRPC_SERVICES:
            async with grpc.aio.insecure_channel(iso_mesh.address(service_name)) as channel:
                for service, method, input_type, streaming in await _reflected_methods(channel):
                    seen.add(f"{service}/{method}")
                    request_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(input_type))
                    request = request_cls()
                    try:
                        filled = _fill(request, ids)
                    except _Unclassified as exc:
                        unclassified.append(f"gRPC {service}/{method}: {exc}")
                        continue
                    secrets.record(json_format.MessageToJson(request))
                    output = pool.FindServiceByName(service).FindMethodByName(method).output_type
                    code, text = await _grpc_call(
                        channel,
                        service,
                        method,
                        request,
                        message_factory.GetMessageClass(output),
                        streaming,
                        b.key,
                    )
                    if code == grpc.StatusCode.INVALID_ARGUMENT:
                        # Once more without the list entries that carry nothing of A's.
                        request = request_cls()
                        filled = _fill(request, ids, prune=True)
                        secrets.record(json_format.MessageToJson(request))
                        code, text = await _grpc_call(
                            channel,
                            service,
                            method,
                            request,
                            message_factory.GetMessageClass(output),
                            streaming,
                            b.key,
                        )
                    target = _target_field(method)
                    where = f"{service}/{method}"
                    leaks = secrets.leaks(text)
                    if code == grpc.StatusCode.INTERNAL or code == grpc.StatusCode.UNKNOWN:
                        over_grpc.failures.append(f"{where}: {code.name} {text[:200]}")
                    elif filled and code in REFUSED_GRPC:
                        over_grpc.refused += 1
                    elif leaks:
                        over_grpc.failures.append(f"{where}: {code.name} with A's {leaks}")
                    elif target is not None and target in filled:
                        over_grpc.failures.append(f"{where}: {code.name}, not refused: {text[:200]}")
                    elif filled:
                        over_grpc.answered_without_a += 1
                        over_grpc.answers.append(f"{where}: {code.name} {text[:80]!r}")
                    else:
                        over_grpc.unscoped += 1
        after = await _snapshot(as_a, ids)

    print()
    print(rest.line("REST"))
    print(over_grpc.line("gRPC"))
    for answer in [*rest.answers, *over_grpc.answers]:
        print("   answered without A's data:", answer)
    for problem in [*unclassified, *rest.failures, *over_grpc.failures]:
        print("   FAILED:", problem)
    changed = [path for path in before if before[path] != after[path]]
    assert unclassified == []
    assert rest.failures == []
    assert over_grpc.failures == []
    assert changed == []
    assert rest.refused > 50
    assert over_grpc.refused > 50
    assert len(seen) > 100
