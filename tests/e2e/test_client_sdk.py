"""The Python client (`mnemo.client`) and the client commands of `mnemo`, against the whole mesh."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from mnemo.cli import app
from mnemo.client import AsyncMnemo, InvalidInput, Mnemo, NotFound, Unauthenticated, Unavailable
from mnemo.client.models import (
    Agent,
    AssistantMessage,
    ContentDelta,
    StreamStopReason,
    ToolCallMessage,
    ToolReturnMessage,
    Usage,
)
from tests.fakes.background import BackgroundServer
from tests.fakes.llm_provider import FakeProvider, reply, tool_call
from tests.harness import RunningMesh

UNKNOWN_AGENT = "agent-00000000-0000-0000-0000-000000000000"
BLOCKS = [{"label": "persona", "value": "I am concise."}, {"label": "human", "value": "", "limit": 60}]


@pytest.fixture
def client(mesh: RunningMesh) -> Iterator[Mnemo]:
    with Mnemo(mesh.http_url, mesh.api_key) as client:
        yield client


def remember_ada(llm: FakeProvider) -> None:
    llm.script(
        tool_call(
            "core_memory_append",
            {"label": "human", "content": "Name: Ada"},
            prompt_tokens=100,
            completion_tokens=10,
        ),
        reply("Nice to meet you, Ada!", prompt_tokens=130, completion_tokens=7),
    )


def test_sync_client_runs_a_turn_that_edits_core_memory_and_pages_history(
    client: Mnemo, llm: FakeProvider
) -> None:
    agent = client.agents.create(name="sdk-sync", model="openai/gpt-4o-mini", memory_blocks=BLOCKS)
    assert isinstance(agent, Agent)
    assert [b.label for b in agent.blocks] == ["persona", "human"]
    remember_ada(llm)

    result = client.messages.send(agent.id, "my name is Ada")

    call, ret, answer = result.messages
    assert isinstance(call, ToolCallMessage)
    assert call.tool_call.name == "core_memory_append"
    assert isinstance(ret, ToolReturnMessage)
    assert ret.status == "success"
    assert isinstance(answer, AssistantMessage)
    assert answer.content == "Nice to meet you, Ada!"
    assert result.stop_reason.stop_reason == "end_turn"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.step_count) == (
        230,
        17,
        2,
    )
    assert client.blocks.get(agent.id, "human").value == "Name: Ada"
    assert client.runs.get(result.run_id).status == "completed"

    history = client.messages.list(agent.id)
    assert [m.message_type for m in history] == [
        "user_message",
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ]
    after_first = client.messages.list(agent.id, after=history[1].id)
    assert [m.id for m in after_first] == [history[2].id, history[3].id]
    newest = client.messages.list(agent.id, limit=1, order="desc")
    assert [m.id for m in newest] == [history[3].id]

    newer = client.agents.create(name="sdk-sync-2", model="openai/gpt-4o-mini")
    first_page = client.agents.list(limit=1)
    assert [a.id for a in first_page] == [newer.id]
    assert first_page.next_page_token is not None
    second_page = client.agents.list(limit=1, page_token=first_page.next_page_token)
    assert [a.id for a in second_page] == [agent.id]


def test_sync_client_streams_token_deltas_then_the_message_stop_reason_and_usage(
    client: Mnemo, llm: FakeProvider
) -> None:
    agent = client.agents.create(name="sdk-stream", model="openai/gpt-4o-mini", memory_blocks=BLOCKS)
    llm.script(reply("Hello there, dear Ada!"))

    with client.messages.stream(agent.id, "hi", stream_tokens=True) as stream:
        events = list(stream)

    deltas = [e for e in events if isinstance(e, ContentDelta)]
    assert len(deltas) > 1
    assert "".join(d.content for d in deltas) == "Hello there, dear Ada!"
    assert [type(e) for e in events[len(deltas) :]] == [AssistantMessage, StreamStopReason, Usage]
    stop = events[-2]
    assert isinstance(stop, StreamStopReason)
    assert client.runs.get(stop.run_id).status == "completed"


def test_archival_insert_then_search_finds_the_passage(client: Mnemo) -> None:
    agent = client.agents.create(name="sdk-archival", model="openai/gpt-4o-mini")

    stored = client.archival.insert(agent.id, "The launch moved to Tuesday.", tags=["plans"])
    client.archival.insert(agent.id, "Bob prefers green tea.")

    found = client.archival.search(agent.id, "launch Tuesday", mode="keyword")
    assert found.results[0].passage.id == stored[0].id
    assert found.results[0].passage.tags == ["plans"]
    assert {p.id for p in client.archival.list(agent.id)} >= {stored[0].id}
    client.archival.delete(agent.id, stored[0].id)
    assert stored[0].id not in {p.id for p in client.archival.list(agent.id)}


def test_update_changes_only_the_given_fields(client: Mnemo) -> None:
    agent = client.agents.create(name="sdk-update", model="openai/gpt-4o-mini", tags=["a"])

    updated = client.agents.update(agent.id, model="openai/gpt-4o", max_steps=3)

    assert (updated.model, updated.max_steps, updated.tags, updated.name) == (
        "openai/gpt-4o",
        3,
        ["a"],
        "sdk-update",
    )
    assert client.agents.get(agent.id).model == "openai/gpt-4o"
    with pytest.raises(InvalidInput):
        client.agents.update(agent.id)


def test_errors_become_typed_exceptions_with_status_and_reason(client: Mnemo, mesh: RunningMesh) -> None:
    with pytest.raises(NotFound) as missing:
        client.agents.get(UNKNOWN_AGENT)
    assert (missing.value.status, missing.value.reason) == (404, "AGENT_NOT_FOUND")

    agent = client.agents.create(name="sdk-errors", model="openai/gpt-4o-mini", memory_blocks=BLOCKS)
    with pytest.raises(InvalidInput) as too_long:
        client.blocks.update(agent.id, "human", value="x" * 61)
    assert too_long.value.reason == "BLOCK_LIMIT_EXCEEDED"
    assert too_long.value.metadata["limit"] == "60"

    with Mnemo(mesh.http_url, "wrong-key") as stranger, pytest.raises(Unauthenticated) as refused:
        stranger.agents.list()
    assert (refused.value.status, refused.value.reason) == (401, "API_KEY_INVALID")


def test_a_send_retried_with_its_idempotency_key_returns_the_first_run(
    client: Mnemo, llm: FakeProvider
) -> None:
    agent = client.agents.create(name="sdk-idempotent", model="openai/gpt-4o-mini")
    llm.script(reply("first answer"))

    first = client.messages.send(agent.id, "hi", idempotency_key="sdk-key-1")
    again = client.messages.send(agent.id, "hi", idempotency_key="sdk-key-1")

    assert again.run_id == first.run_id
    assert again.messages == first.messages
    assert len(llm.requests()) == 1


def test_shared_block_attaches_and_detaches(client: Mnemo) -> None:
    agent = client.agents.create(name="sdk-shared", model="openai/gpt-4o-mini")
    shared = client.blocks.create(label="team", value="Standup at 9.")

    assert client.blocks.attach(agent.id, shared.id).agent_ids == [agent.id]
    assert client.blocks.get(agent.id, "team").value == "Standup at 9."
    client.blocks.detach(agent.id, shared.id)
    assert "team" not in [b.label for b in client.blocks.list(agent.id)]


async def test_async_client_turn_stream_background_run_and_errors(
    mesh: RunningMesh, llm: FakeProvider
) -> None:
    async with AsyncMnemo(mesh.http_url, mesh.api_key) as client:
        agent = await client.agents.create(name="sdk-async", model="openai/gpt-4o-mini", memory_blocks=BLOCKS)
        remember_ada(llm)
        result = await client.messages.send(agent.id, "my name is Ada")
        assert [m.message_type for m in result.messages] == [
            "tool_call_message",
            "tool_return_message",
            "assistant_message",
        ]
        assert result.usage.total_tokens == 247
        assert (await client.blocks.get(agent.id, "human")).value == "Name: Ada"

        llm.script(reply("Streaming along nicely."))
        async with client.messages.stream(agent.id, "and now?", stream_tokens=True) as stream:
            events = [event async for event in stream]
        text = "".join(e.content for e in events if isinstance(e, ContentDelta))
        assert text == "Streaming along nicely."
        assert isinstance(events[-1], Usage)

        llm.script(reply("done in the background"))
        run = await client.messages.send_async(agent.id, "later")
        finished = await client.runs.wait(run.id, timeout=30)
        assert finished.status == "completed"
        history = await client.messages.list(agent.id, limit=1, order="desc")
        assert isinstance(history[0], AssistantMessage)
        assert history[0].content == "done in the background"

        with pytest.raises(NotFound):
            await client.agents.get(UNKNOWN_AGENT)
        with pytest.raises(NotFound):
            async for _ in client.messages.stream(UNKNOWN_AGENT, "hi"):
                pass


def test_cli_lists_agents_and_chats_with_streamed_replies_and_tool_calls(
    client: Mnemo, mesh: RunningMesh, llm: FakeProvider
) -> None:
    agent = client.agents.create(name="sdk-cli", model="openai/gpt-4o-mini", memory_blocks=BLOCKS)
    connect = ["--url", mesh.http_url, "--api-key", mesh.api_key]
    runner = CliRunner()

    listed = runner.invoke(app, ["agents", "list", *connect])
    assert listed.exit_code == 0, listed.output
    assert agent.id in listed.output
    assert "sdk-cli" in listed.output

    remember_ada(llm)
    chatted = runner.invoke(app, ["chat", agent.id, *connect], input="my name is Ada\n/exit\n")
    assert chatted.exit_code == 0, chatted.output
    assert "-> core_memory_append(" + json.dumps({"label": "human", "content": "Name: Ada"}) in chatted.output
    assert "sdk-cli> Nice to meet you, Ada!" in chatted.output
    assert client.blocks.get(agent.id, "human").value == "Name: Ada"

    refused = runner.invoke(app, ["agents", "list", "--url", mesh.http_url, "--api-key", "wrong"])
    assert refused.exit_code == 1
    assert "API_KEY_INVALID" in refused.output


class BusyGateway:
    """A real HTTP server that answers 503 (Retry-After: 0.2) `busy_for` times, then 204; counts requests."""

    def __init__(self, busy_for: int) -> None:
        self.busy_for = busy_for
        self.requests: list[tuple[str, float]] = []

        async def answer(request: Request) -> Response:
            self.requests.append((request.method, time.monotonic()))
            if len(self.requests) <= self.busy_for:
                body = {"detail": "try again", "reason": "SERVICE_BUSY"}
                return JSONResponse(body, status_code=503, headers={"Retry-After": "0.2"})
            return Response(status_code=204)

        self.server = BackgroundServer(
            Starlette(routes=[Route("/{path:path}", answer, methods=["POST", "DELETE"])])
        )
        self.url = f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
def busy() -> Iterator[BusyGateway]:
    gateway = BusyGateway(busy_for=2)
    gateway.server.start()
    yield gateway
    gateway.server.stop()


def test_idempotent_calls_are_retried_on_503_after_retry_after_and_others_are_not(busy: BusyGateway) -> None:
    with Mnemo(busy.url, "any-key", max_retries=2) as client:
        client.agents.delete("agent-1")
        assert [method for method, _ in busy.requests] == ["DELETE"] * 3
        waits = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(busy.requests)]
        assert all(wait >= 0.2 for wait in waits)

        busy.requests.clear()
        with pytest.raises(Unavailable) as refused:
            client.blocks.create(label="x")
        assert (refused.value.status, refused.value.reason, refused.value.retry_after) == (
            503,
            "SERVICE_BUSY",
            0.2,
        )
        assert len(busy.requests) == 1


def test_approval_batches_ephemeral_turns_and_recall_search(client: Mnemo, llm: FakeProvider) -> None:
    agent = client.agents.create(
        name="sdk-more",
        model="openai/gpt-4o-mini",
        memory_blocks=BLOCKS,
        options={"tool_rules": [{"tool_name": "core_memory_append", "type": "requires_approval"}]},
    )
    llm.script(tool_call("core_memory_append", {"label": "human", "content": "Likes tea"}))
    waiting = client.messages.send(agent.id, "I like tea")
    assert waiting.stop_reason.stop_reason == "requires_approval"
    llm.script(reply("Saved that you like tea."))
    resumed = client.runs.approve(waiting.run_id)
    assert resumed.stop_reason.stop_reason == "end_turn"
    assert client.blocks.get(agent.id, "human").value == "Likes tea"

    found = client.messages.search(agent.id, "tea", mode="keyword", roles=["user"])
    assert [hit.message.content for hit in found.results] == ["I like tea"]

    other = client.agents.create(name="sdk-batch", model="openai/gpt-4o-mini")
    llm.script(reply("one"), reply("two"))
    batch = client.batches.create(
        [
            {"agent_id": other.id, "messages": [{"content": "a"}]},
            {"agent_id": other.id, "messages": [{"content": "b"}]},
        ],
        mode="concurrent",
    )
    done = client.batches.wait(batch.id, timeout=30, interval=0.05)
    assert [run.status for run in done.runs] == ["completed", "completed"]

    llm.script(reply("stateless"))
    answer = client.messages.ephemeral({"model": "openai/gpt-4o-mini"}, "hello")
    assert answer.messages[-1].content == "stateless"
