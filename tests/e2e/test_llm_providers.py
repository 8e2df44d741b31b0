"""Agent turns on Anthropic and Ollama models through the whole mesh (REST -> agent -> llm-gateway -> the
provider's SDK -> a fake speaking that provider's wire format), and the REST model and usage routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.anthropic_provider import FakeAnthropic, tool_use
from tests.fakes.anthropic_provider import reply as claude_reply
from tests.fakes.llm_provider import FakeProvider
from tests.fakes.ollama_provider import FakeOllama
from tests.fakes.ollama_provider import reply as ollama_reply
from tests.fakes.ollama_provider import tool_calls as ollama_tool_calls
from tests.harness import RunningMesh, mesh_env, running_mesh

PERSONA = "I am a careful assistant."


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ollama_fake() -> Iterator[FakeOllama]:
    server = FakeOllama().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def providers_mesh(
    tmp_path_factory: pytest.TempPathFactory,
    fake_provider: FakeProvider,
    anthropic_fake: FakeAnthropic,
    ollama_fake: FakeOllama,
) -> AsyncIterator[RunningMesh]:
    env = mesh_env(
        tmp_path_factory.mktemp("providers-mesh"),
        provider_url=fake_provider.base_url,
        anthropic_url=anthropic_fake.base_url,
        ollama_url=ollama_fake.base_url,
    )
    async with running_mesh(env) as running:
        yield running


@pytest.fixture
def rest(providers_mesh: RunningMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=providers_mesh.http_url, headers=providers_mesh.auth, timeout=30) as client:
        yield client


def create_agent(api: httpx.Client, model: str) -> dict[str, Any]:
    response = api.post(
        "/v1/agents",
        json={
            "name": f"agent-on-{model.split('/', maxsplit=1)[0]}",
            "model": model,
            "memory_blocks": [{"label": "persona", "value": PERSONA}, {"label": "human", "value": ""}],
        },
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def send(api: httpx.Client, agent_id: str, text: str) -> dict[str, Any]:
    response = api.post(
        f"/v1/agents/{agent_id}/messages", json={"messages": [{"role": "user", "content": text}]}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def human_block(api: httpx.Client, agent_id: str) -> str:
    blocks = api.get(f"/v1/agents/{agent_id}/core-memory/blocks").json()
    return str(next(b["value"] for b in blocks if b["label"] == "human"))


def test_agent_turn_on_an_anthropic_model_uses_tools_and_answers(
    rest: httpx.Client, anthropic_fake: FakeAnthropic
) -> None:
    anthropic_fake.reset()
    agent = create_agent(rest, "anthropic/claude-sonnet-4-5")
    anthropic_fake.script(
        tool_use(
            [("core_memory_append", {"label": "human", "content": "Name: Ada"}, "toolu_ada")],
            input_tokens=120,
            output_tokens=15,
        ),
        claude_reply("Nice to meet you, Ada!", input_tokens=150, output_tokens=8),
    )

    body = send(rest, agent["id"], "my name is Ada")

    assert [m["message_type"] for m in body["messages"]] == [
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ]
    assert body["messages"][0]["tool_call"]["tool_call_id"] == "toolu_ada"
    assert json.loads(body["messages"][0]["tool_call"]["arguments"]) == {
        "label": "human",
        "content": "Name: Ada",
    }
    assert body["messages"][-1]["content"] == "Nice to meet you, Ada!"
    assert body["usage"]["prompt_tokens"] == 270
    assert body["usage"]["completion_tokens"] == 23
    assert human_block(rest, agent["id"]) == "Name: Ada"
    first, second = anthropic_fake.bodies("/v1/messages")
    assert first["model"] == "claude-sonnet-4-5"
    assert PERSONA in first["system"]
    assert {"core_memory_append", "core_memory_replace"} <= {t["name"] for t in first["tools"]}
    assert first["messages"][-1] == {"role": "user", "content": [{"type": "text", "text": "my name is Ada"}]}
    # The second step carries the tool_use and its result, the result in a user turn of its own.
    assert second["messages"][-2]["role"] == "assistant"
    assert second["messages"][-2]["content"][-1]["type"] == "tool_use"
    assert second["messages"][-1]["role"] == "user"
    (result,) = second["messages"][-1]["content"]
    assert result["type"] == "tool_result"
    assert result["tool_use_id"] == "toolu_ada"
    assert "Name: Ada" in second["system"]


def test_agent_turn_on_an_ollama_model_uses_tools_and_answers(
    rest: httpx.Client, ollama_fake: FakeOllama
) -> None:
    ollama_fake.reset()
    agent = create_agent(rest, "ollama/llama3.2")
    ollama_fake.script(
        ollama_tool_calls([("core_memory_append", {"label": "human", "content": "Likes tea"})]),
        ollama_reply("Tea it is."),
    )

    body = send(rest, agent["id"], "I like tea")

    assert [m["message_type"] for m in body["messages"]] == [
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ]
    assert body["messages"][-1]["content"] == "Tea it is."
    assert human_block(rest, agent["id"]) == "Likes tea"
    first, second = ollama_fake.bodies("/api/chat")
    assert first["model"] == "llama3.2"
    assert first["messages"][0]["role"] == "system"
    assert PERSONA in first["messages"][0]["content"]
    assert second["messages"][-2]["tool_calls"] == [
        {"function": {"name": "core_memory_append", "arguments": {"label": "human", "content": "Likes tea"}}}
    ]
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["tool_name"] == "core_memory_append"


def test_unknown_ollama_model_fails_the_turn_with_404_and_ollamas_message(rest: httpx.Client) -> None:
    agent = create_agent(rest, "ollama/mistral")

    response = rest.post(f"/v1/agents/{agent['id']}/messages", json={"messages": [{"content": "hi"}]})

    assert response.status_code == 404
    assert response.json()["reason"] == "MODEL_NOT_FOUND"
    assert 'model "mistral" not found' in response.json()["detail"]


def test_rest_lists_models_with_context_windows_including_what_providers_report(rest: httpx.Client) -> None:
    catalogue = {m["name"]: m for m in rest.get("/v1/models").json()["models"]}
    reported = rest.get("/v1/models", params={"include_provider_models": "true", "provider": "ollama"}).json()

    assert catalogue["anthropic/claude-sonnet-4-5"]["context_window"] == 200_000
    assert catalogue["openai/gpt-4o-mini"]["context_window"] == 128_000
    assert catalogue["local/all-minilm-l6-v2"]["kind"] == "embedding"
    by_name = {m["name"]: m for m in reported["models"]}
    assert by_name["ollama/llama3.2:latest"]["context_window"] == 131072
    assert by_name["ollama/llama3.2:latest"]["reported_by_provider"] is True
    assert reported["unreachable_providers"] == []


def test_rest_usage_sums_the_organizations_tokens_per_model(
    rest: httpx.Client, anthropic_fake: FakeAnthropic
) -> None:
    anthropic_fake.reset()
    agent = create_agent(rest, "anthropic/claude-haiku-4-5")
    anthropic_fake.script(claude_reply("hello", input_tokens=11, output_tokens=2))
    send(rest, agent["id"], "hi")

    rows = rest.get("/v1/usage", params={"group_by": ["agent", "model"], "agent_id": agent["id"]}).json()
    everything = rest.get("/v1/usage").json()
    bad = rest.get("/v1/usage", params={"group_by": "planet"})

    assert rows == [
        {
            "agent_id": agent["id"],
            "model": "anthropic/claude-haiku-4-5",
            "day": None,
            "request_count": 1,
            "prompt_tokens": 11,
            "completion_tokens": 2,
            "total_tokens": 13,
        }
    ]
    (total,) = everything
    assert total["request_count"] >= 1
    assert total["agent_id"] is None
    assert bad.status_code == 422
