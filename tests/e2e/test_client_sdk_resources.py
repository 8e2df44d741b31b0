"""The Python client's whole surface against the mesh: paging, options, raw responses, every resource."""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mnemo.client import AsyncMnemo, Mnemo, NotFound, Page, Unavailable
from mnemo.client.models import Agent, AssistantMessage
from mnemo.client.transport import RawResponse
from mnemo.rest.mcp import McpServer
from mnemo.rest.models import ModelList
from mnemo.rest.sources import Upload
from mnemo.rest.tools import Tool, ToolRunResult
from tests.fakes.background import BackgroundServer
from tests.fakes.llm_provider import FakeProvider, reply
from tests.harness import RunningMesh

GREETING = textwrap.dedent(
    '''
    import os

    def greet(name: str) -> str:
        """Greets someone.

        Args:
            name: Whom to greet.
        """
        return f"Hello, {name}, from {os.environ.get('PLACE', 'nowhere')}!"
    '''
)


@pytest.fixture
def client(mesh: RunningMesh) -> Iterator[Mnemo]:
    with Mnemo(mesh.http_url, mesh.api_key) as client:
        yield client


def _tagged_agents(client: Mnemo, count: int) -> tuple[str, list[str]]:
    tag = f"paging-{uuid.uuid4().hex[:8]}"
    ids = [
        client.agents.create(name=f"pager-{i}", model="openai/gpt-4o-mini", tags=[tag]).id
        for i in range(count)
    ]
    return tag, ids


def test_auto_paging_walks_every_page_in_order(client: Mnemo) -> None:
    tag, ids = _tagged_agents(client, 5)

    first = client.agents.list(limit=2, tags=[tag])
    assert len(first) == 2
    assert first.has_next_page

    walked = [agent.id for agent in first.auto_paging_iter()]

    assert walked == list(reversed(ids))  # newest first, each once
    second = first.next_page()
    assert second is not None
    assert [a.id for a in second] == walked[2:4]


async def test_async_auto_paging_and_raw_responses(client: Mnemo, mesh: RunningMesh) -> None:
    tag, ids = _tagged_agents(client, 3)

    async with AsyncMnemo(mesh.http_url, mesh.api_key) as aclient:
        first = await aclient.agents.list(limit=2, tags=[tag])
        walked = [agent.id async for agent in first.auto_paging_aiter()]
        raw = await aclient.with_raw_response.agents.list(limit=2, tags=[tag])

    assert walked == list(reversed(ids))
    assert isinstance(raw, RawResponse)
    assert raw.status_code == 200
    assert raw.headers["X-Next-Page-Token"] == raw.parsed.next_page_token
    assert [a.id for a in raw.parsed] == walked[:2]


def test_a_page_of_one_client_kind_refuses_the_other_kinds_paging(client: Mnemo) -> None:
    page = client.agents.list(limit=1)

    with pytest.raises(TypeError, match="page_token"):
        Page([1], "token").next_page()
    if page.has_next_page:
        with pytest.raises(TypeError, match="next_page"):
            asyncio.run(page.anext_page())


def test_raw_response_of_a_get_and_of_an_error(client: Mnemo) -> None:
    agent = client.agents.create(name="raw", model="openai/gpt-4o-mini")

    raw = client.with_raw_response.agents.get(agent.id)

    assert isinstance(raw.parsed, Agent)
    assert raw.parsed.id == agent.id
    assert raw.headers["content-type"] == "application/json"
    with pytest.raises(NotFound):
        client.with_raw_response.agents.get("agent-00000000-0000-0000-0000-000000000000")


class RecordingGateway:
    """Answers 503 (Retry-After 0.1) to the first `busy_for` requests, then 204 after `delay` seconds."""

    def __init__(self, busy_for: int = 0, delay: float = 0.0) -> None:
        self.busy_for = busy_for
        self.delay = delay
        self.headers: list[dict[str, str]] = []

        async def answer(request: Request) -> Response:
            self.headers.append(dict(request.headers))
            if len(self.headers) <= self.busy_for:
                body = {"detail": "try again", "reason": "SERVICE_BUSY"}
                return JSONResponse(body, status_code=503, headers={"Retry-After": "0.1"})
            await asyncio.sleep(self.delay)
            return Response(status_code=204)

        self.server = BackgroundServer(Starlette(routes=[Route("/{path:path}", answer, methods=["DELETE"])]))
        self.url = f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
def recording() -> Iterator[RecordingGateway]:
    gateway = RecordingGateway(busy_for=1, delay=0.0)
    gateway.server.start()
    yield gateway
    gateway.server.stop()


def test_per_request_options_change_retries_headers_and_timeout_without_changing_the_client(
    recording: RecordingGateway,
) -> None:
    with Mnemo(recording.url, "any-key", max_retries=2) as client:
        with pytest.raises(Unavailable):
            client.with_options(max_retries=0).agents.delete("agent-1")
        assert len(recording.headers) == 1

        client.with_options(idempotency_key="key-7", headers={"X-Trace": "abc"}).agents.delete("agent-1")
        assert recording.headers[-1]["idempotency-key"] == "key-7"
        assert recording.headers[-1]["x-trace"] == "abc"

        recording.delay = 1.0
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            client.with_options(timeout=0.2, max_retries=0).agents.delete("agent-1")
        assert time.monotonic() - started < 0.9
        client.agents.delete("agent-1")  # the client's own options: no timeout, no extra headers
        assert "idempotency-key" not in recording.headers[-1]


def test_tools_are_typed_created_run_attached_and_get_their_environment(client: Mnemo) -> None:
    tool = client.tools.create(GREETING.replace("def greet(", f"def greet_{uuid.uuid4().hex[:6]}("))
    assert isinstance(tool, Tool)
    assert tool.json_schema["properties"]["name"]["type"] == "string"

    result = client.tools.run(tool.id, {"name": "Ada"})
    assert isinstance(result, ToolRunResult)
    assert (result.status, result.content) == ("success", "Hello, Ada, from nowhere!")

    agent = client.agents.create(name="tool-env", model="openai/gpt-4o-mini", include_base_tools=False)
    client.tools.attach(agent.id, tool.id)
    assert [t.id for t in client.tools.list_for_agent(agent.id)] == [tool.id]
    environment = client.tool_environments.update(agent.id, set={"PLACE": "Paris", "OTHER": "x"})
    assert sorted(environment.names) == ["OTHER", "PLACE"]
    assert client.tool_environments.update(agent.id, unset=["OTHER"]).names == ["PLACE"]
    assert client.tools.run(tool.id, {"name": "Ada"}, agent_id=agent.id).content == "Hello, Ada, from Paris!"

    updated = client.tools.update(tool.id, tags=["greeting"])
    assert updated.tags == ["greeting"]
    assert tool.id in {t.id for t in client.tools.list(tags=["greeting"]).auto_paging_iter()}


def test_models_usage_and_mcp_servers(client: Mnemo, llm: FakeProvider) -> None:
    models = client.models.list()
    assert isinstance(models, ModelList)
    assert any(m.name == "openai/gpt-4o-mini" and m.kind == "chat" for m in models.models)

    agent = client.agents.create(name="usage", model="openai/gpt-4o-mini")
    llm.script(reply("Hi.", prompt_tokens=40, completion_tokens=3))
    client.messages.send(agent.id, "hello")
    rows = client.usage.get(group_by=["agent"], agent_id=agent.id)
    assert [(r.agent_id, r.prompt_tokens, r.completion_tokens) for r in rows] == [(agent.id, 40, 3)]

    servers = client.mcp_servers.list()
    assert all(isinstance(s, McpServer) for s in servers.auto_paging_iter())
    with pytest.raises(NotFound):
        client.mcp_servers.get("mcp-00000000-0000-0000-0000-000000000000")


def test_source_upload_reports_byte_progress_then_the_job_completes(client: Mnemo) -> None:
    source = client.sources.create(f"handbook-{uuid.uuid4().hex[:6]}")
    text = ("Deploys happen on Tuesdays after the standup. " * 4000).encode()
    seen: list[tuple[int, int]] = []

    upload = client.sources.upload(
        source.id,
        text,
        file_name="handbook.md",
        content_type="text/markdown",
        progress=lambda *p: seen.append(p),
    )

    assert isinstance(upload, Upload)
    total = seen[-1][1]
    assert total > len(text)  # the multipart framing counts too
    assert seen[0] == (0, total)
    assert seen[-1] == (total, total)
    assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)
    assert len(seen) >= len(text) // (64 * 1024)
    job = client.sources.wait_job(upload.job.id, timeout=120)
    assert job.status == "completed", job.error
    files = client.sources.files(source.id)
    assert [(f.file_name, f.size_bytes) for f in files] == [("handbook.md", len(text))]


def test_an_idempotency_key_from_the_options_makes_a_repeated_turn_return_the_first_run(
    client: Mnemo, llm: FakeProvider
) -> None:
    agent = client.agents.create(name="idem-options", model="openai/gpt-4o-mini")
    llm.script(reply("First."), reply("Second."))
    keyed = client.with_options(idempotency_key=f"order-{uuid.uuid4().hex}")

    first = keyed.messages.send(agent.id, "hello")
    again = keyed.messages.send(agent.id, "hello")
    fresh = client.messages.send(agent.id, "hello")

    assert again.run_id == first.run_id
    assert fresh.run_id != first.run_id
    assert [m.content for m in fresh.messages if isinstance(m, AssistantMessage)] == ["Second."]
