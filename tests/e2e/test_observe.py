"""What an operator sees of one turn: its whole trace in a real OTLP receiver, and the metrics each process
serves to Prometheus."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from oteltap.oteltap_http_protobuf_receiver import OtelTapHttpProtobufReceiver
from oteltap.oteltap_http_protobuf_receiver_settings import OtelTapHttpProtobufReceiverSettings
from prometheus_client.parser import text_string_to_metric_families

from mnemo_core.settings import GRPC_SERVICES
from tests.fakes.background import free_port
from tests.fakes.llm_provider import FakeProvider, reply, streamed, tool_call
from tests.harness import RunningMesh, mesh_env, running_mesh

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/mnemo-dashboard.json"
SERVER, CLIENT = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT


@dataclass
class Spans:
    """Every span the receiver got, as it arrives."""

    received: list[Span] = field(default_factory=list)

    def of_trace(self, trace_id: bytes) -> list[Span]:
        return [s for s in self.received if s.trace_id == trace_id]


@dataclass
class Observed:
    mesh: RunningMesh
    spans: Spans
    metrics_ports: dict[str, int]


@pytest.fixture(scope="module")
async def observed(
    tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider
) -> AsyncIterator[Observed]:
    """A mesh exporting to an oteltap receiver (OTLP/HTTP protobuf), with its spans collected."""
    port = free_port()
    spans = Spans()
    metrics_ports = {service: free_port() for service in GRPC_SERVICES}
    async with OtelTapHttpProtobufReceiver(OtelTapHttpProtobufReceiverSettings(http_port=port)) as tap:

        async def collect() -> None:
            async for span in tap.stream_traces():
                spans.received.append(span)

        collector = asyncio.create_task(collect())
        env = mesh_env(
            tmp_path_factory.mktemp("observed"),
            provider_url=fake_provider.base_url,
            extra={
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                **{f"MNEMO_{service.upper()}_METRICS_PORT": str(p) for service, p in metrics_ports.items()},
            },
        )
        async with running_mesh(env) as mesh:
            yield Observed(mesh, spans, metrics_ports)
        collector.cancel()


def attrs(span: Span) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        if kind == "array_value":
            values[kv.key] = [v.string_value for v in kv.value.array_value.values]
        else:
            values[kv.key] = getattr(kv.value, kind) if kind else None
    return values


class Tree:
    """One trace as parent links."""

    def __init__(self, spans: list[Span]) -> None:
        self.spans = spans
        self.by_id = {s.span_id: s for s in spans}

    def ancestors(self, span: Span) -> list[Span]:
        chain = []
        while span.parent_span_id in self.by_id:
            span = self.by_id[span.parent_span_id]
            chain.append(span)
        return chain

    def orphans(self, root: Callable[[Span], bool]) -> list[Span]:
        """Spans whose parent is not (yet) in the trace, other than the root."""
        return [s for s in self.spans if not root(s) and s.parent_span_id not in self.by_id]

    def find(self, match: Callable[[Span], bool]) -> list[Span]:
        return [s for s in self.spans if match(s)]

    def has_path(self, *steps: Callable[[Span], bool]) -> bool:
        """Whether some span matches the last step and its ancestors match the earlier steps, in order."""
        for leaf in self.find(steps[-1]):
            wanted = list(steps[:-1])
            for ancestor in self.ancestors(leaf):
                if wanted and wanted[-1](ancestor):
                    wanted.pop()
            if not wanted:
                return True
        return False


def status_of(span: Span) -> Any:
    values = attrs(span)
    return values.get("http.response.status_code", values.get("http.status_code"))


def named(name: str, kind: int | None = None) -> Callable[[Span], bool]:
    return lambda s: s.name == name and (kind is None or s.kind == kind)


def rpc(method: str, kind: int) -> Callable[[Span], bool]:
    return lambda s: s.name == method and s.kind == kind


def sql_on(system: str) -> Callable[[Span], bool]:
    return lambda s: attrs(s).get("db.system") == system or attrs(s).get("db.system.name") == system


def provider_http(base_url: str) -> Callable[[Span], bool]:
    def match(span: Span) -> bool:
        values = attrs(span)
        url = str(values.get("url.full") or values.get("http.url") or "")
        return span.kind == CLIENT and url.startswith(base_url)

    return match


async def test_a_turn_with_a_tool_call_is_one_trace_through_every_hop_down_to_provider_http_and_sql(
    observed: Observed, llm: FakeProvider
) -> None:
    mesh = observed.mesh
    name = f"shout_{uuid.uuid4().hex[:6]}"
    source = f'def {name}(text: str) -> str:\n    """Shout.\n\n    Args:\n        text: The text.\n    """\n    return text.upper()\n'
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=60) as api:
        tool = (await api.post("/v1/tools", json={"source_code": source})).json()
        agent = (
            await api.post(
                "/v1/agents",
                json={"name": "traced", "model": "openai/gpt-4o-mini", "tool_ids": [tool["id"]]},
            )
        ).json()
        llm.script(
            tool_call(name, {"text": "hi"}, prompt_tokens=40, completion_tokens=5),
            reply("HI", prompt_tokens=60, completion_tokens=2),
        )
        response = await api.post(
            f"/v1/agents/{agent['id']}/messages", json={"messages": [{"role": "user", "content": "shout hi"}]}
        )
    assert response.status_code == 200, response.text
    assert [m["message_type"] for m in response.json()["messages"]][-1] == "assistant_message"

    gateway = named("POST /v1/agents/{agent_id}/messages", SERVER)
    turn_paths: list[tuple[Callable[[Span], bool], ...]] = [
        (
            gateway,
            rpc("/mnemo.agent.v1.AgentService/SendMessage", CLIENT),
            rpc("/mnemo.agent.v1.AgentService/SendMessage", SERVER),
            named("agent.turn"),
            named("agent.step"),
            rpc("/mnemo.llm.v1.LlmService/Chat", SERVER),
            named("chat gpt-4o-mini", CLIENT),
            provider_http(llm.base_url),
        ),
        (
            gateway,
            named("agent.step"),
            named("agent.tool"),
            rpc("/mnemo.tools.v1.ToolService/RunTool", SERVER),
            named("tools.run"),
        ),
        (gateway, rpc("/mnemo.agent.v1.AgentService/SendMessage", SERVER), sql_on("sqlite")),
        (gateway, named("agent.step"), lambda s: s.name.startswith("/mnemo.memory.v1.") and s.kind == SERVER),
        (gateway, lambda s: s.name.startswith("/mnemo.memory.v1.") and s.kind == SERVER, sql_on("sqlite")),
        (gateway, rpc("/mnemo.tools.v1.ToolService/RunTool", SERVER), sql_on("sqlite")),
    ]
    deadline = time.monotonic() + 20
    while True:
        roots = [s for s in observed.spans.received if gateway(s) and status_of(s) == 200]
        trees = [Tree(observed.spans.of_trace(root.trace_id)) for root in roots]
        complete = [
            t for t in trees if all(t.has_path(*path) for path in turn_paths) and not t.orphans(gateway)
        ]
        if complete:
            break
        if time.monotonic() > deadline:
            missing = [i for i, path in enumerate(turn_paths) if not any(t.has_path(*path) for t in trees)]
            names = sorted({s.name for t in trees for s in t.spans})
            pytest.fail(f"paths {missing} missing from the turn's trace; its spans: {names}")
        await asyncio.sleep(0.1)

    tree = complete[0]
    (llm_call,) = [
        s for s in tree.find(named("chat gpt-4o-mini")) if attrs(s).get("gen_ai.usage.input_tokens") == 40
    ]
    assert {k: v for k, v in attrs(llm_call).items() if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 40,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.response.finish_reasons": ["tool_calls"],
    }
    (run,) = tree.find(named("tools.run"))
    assert attrs(run)["tool.name"] == name


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient, url: str) -> Series:
    try:
        response = await client.get(url)
    except httpx.ConnectError as exc:
        raise AssertionError(f"nothing serves {url}") from exc
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in series.items() if n == name and wanted <= ls)


async def test_every_process_serves_prometheus_metrics_of_the_turn_rpcs_tokens_tools_errors_and_db(
    observed: Observed, llm: FakeProvider
) -> None:
    mesh = observed.mesh
    endpoints = {"gateway": f"{mesh.http_url}/metrics"} | {
        service: f"http://127.0.0.1:{port}/metrics" for service, port in observed.metrics_ports.items()
    }
    name = f"count_{uuid.uuid4().hex[:6]}"
    source = f'def {name}(text: str) -> int:\n    """Count.\n\n    Args:\n        text: The text.\n    """\n    return len(text)\n'
    async with (
        httpx.AsyncClient(timeout=10) as scraper,
        httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=60) as api,
    ):
        tool = (await api.post("/v1/tools", json={"source_code": source})).json()
        agent = (
            await api.post(
                "/v1/agents",
                json={"name": "metered", "model": "openai/gpt-metered", "tool_ids": [tool["id"]]},
            )
        ).json()
        before = {service: await scrape(scraper, url) for service, url in endpoints.items()}
        llm.script(
            tool_call(name, {"text": "four"}, prompt_tokens=30, completion_tokens=4),
            reply("4", prompt_tokens=50, completion_tokens=1),
        )
        sent = await api.post(
            f"/v1/agents/{agent['id']}/messages", json={"messages": [{"role": "user", "content": "count"}]}
        )
        assert sent.status_code == 200, sent.text
        assert (await api.get("/v1/agents/agent-00000000-0000-0000-0000-000000000000")).status_code == 404
        # The llm-gateway writes its usage ledger in the background (every usage_flush_interval): its
        # database connection opens up to half a second after the turn.
        deadline = time.monotonic() + 10
        while True:
            after = {service: await scrape(scraper, url) for service, url in endpoints.items()}
            opened = all(value(after[s], "mnemo_db_connections") >= 1 for s in GRPC_SERVICES)
            if opened or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)

    def delta(service: str, metric: str, **labels: str) -> float:
        return value(after[service], metric, **labels) - value(before[service], metric, **labels)

    assert (
        delta(
            "gateway",
            "http_server_request_duration_seconds_count",
            http_route="/v1/agents/{agent_id}/messages",
            http_request_method="POST",
            http_response_status_code="200",
        )
        == 1
    )
    assert (
        delta("gateway", "http_server_request_duration_seconds_count", http_response_status_code="404") == 1
    )
    ok = {"rpc_grpc_status_code": "OK"}
    assert delta("agent", "rpc_server_duration_seconds_count", rpc_method="SendMessage", **ok) == 1
    assert delta("llm", "rpc_server_duration_seconds_count", rpc_method="Chat", **ok) == 2
    assert delta("tools", "rpc_server_duration_seconds_count", rpc_method="RunTool", **ok) == 1
    assert (
        delta("memory", "rpc_server_duration_seconds_count", rpc_service="mnemo.memory.v1.MessageService")
        >= 1
    )
    assert delta("agent", "rpc_server_duration_seconds_bucket", rpc_method="SendMessage", le="+Inf") == 1
    # The missing agent: an error with its code and reason, on the service that refused it.
    errors = {labels: v for (n, labels), v in after["agent"].items() if n == "mnemo_rpc_server_errors_total"}
    assert any(
        dict(labels).get("rpc_grpc_status_code") == "NOT_FOUND" and dict(labels).get("error_reason")
        for labels in errors
    ), errors
    assert delta("agent", "mnemo_agent_turns_total", status="completed", stop_reason="end_turn") == 1
    assert delta("agent", "mnemo_agent_steps_total") == 2
    assert value(after["agent"], "mnemo_agent_runs_held") == 0
    assert delta("tools", "mnemo_tools_runs_total", outcome="ok") == 1
    model = {"model": "openai/gpt-metered", "operation": "chat"}
    assert delta("llm", "mnemo_llm_tokens_total", type="input", **model) == 80
    assert delta("llm", "mnemo_llm_tokens_total", type="output", **model) == 5
    tokens = [dict(ls) for (n, ls), _ in after["llm"].items() if n == "mnemo_llm_tokens_total"]
    assert all(t["organization"] for t in tokens if t["model"] == "openai/gpt-metered")
    for service in GRPC_SERVICES:
        assert value(after[service], "mnemo_db_connections") >= 1, service
        assert value(after[service], "process_resident_memory_bytes") > 0
    # Every series the Grafana dashboard queries is one the processes really serve.
    served = {name for series in after.values() for name, _ in series}
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"([a-z_][a-z0-9_]*)\{", target["expr"])
    }
    # A lease is extended only in turns longer than a third of it (a minute by default).
    only_after_long_turns = {"mnemo_agent_run_lease_extensions_total"}
    assert len(queried) >= 10
    assert queried - only_after_long_turns <= served, queried - served


async def test_a_streamed_turn_traces_the_llm_call_with_its_provider_request_and_usage(
    observed: Observed, llm: FakeProvider
) -> None:
    mesh = observed.mesh
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=60) as api:
        agent = (
            await api.post("/v1/agents", json={"name": "streamed", "model": "openai/gpt-streamed"})
        ).json()
        llm.script(streamed(reply("Hello there, friend.", prompt_tokens=21, completion_tokens=4), pieces=4))
        async with api.stream(
            "POST",
            f"/v1/agents/{agent['id']}/messages/stream",
            json={"messages": [{"content": "hi"}], "stream_tokens": True},
        ) as response:
            assert response.status_code == 200
            events = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"

    root = named("POST /v1/agents/{agent_id}/messages/stream", SERVER)
    chat = named("chat gpt-streamed", CLIENT)
    path = (
        root,
        rpc("/mnemo.agent.v1.AgentService/StreamMessage", SERVER),
        named("agent.step"),
        rpc("/mnemo.llm.v1.LlmService/StreamChat", SERVER),
        chat,
        provider_http(llm.base_url),
    )
    deadline = time.monotonic() + 20
    while True:
        trees = [Tree(observed.spans.of_trace(s.trace_id)) for s in observed.spans.received if root(s)]
        complete = [t for t in trees if t.has_path(*path) and not t.orphans(root)]
        if complete:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"incomplete: {sorted({s.name for t in trees for s in t.spans})}")
        await asyncio.sleep(0.1)
    (span,) = complete[0].find(chat)
    values = attrs(span)
    assert values["gen_ai.usage.input_tokens"] == 21
    assert values["gen_ai.usage.output_tokens"] == 4
    assert values["gen_ai.response.finish_reasons"] == ["stop"]
    assert span.status.code != span.status.STATUS_CODE_ERROR
