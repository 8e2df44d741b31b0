"""The offline default, end to end: a mesh with no provider configured serves the bundled local model
(Qwen2.5-Coder-0.5B-Instruct on llama.cpp, the `local` extra), and a REST client gets real turns from it.

The model runs on the CPU at temperature 0: deterministic on one machine, but thread splits and CPU
kernels may change a token elsewhere, so the tests assert what any run must show (the fact in the
answer, the memory call and its effect, the stream's shape), not exact wording.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from mnemo_llm.local_model import BUNDLED_MODEL
from tests.e2e.test_agent_runtime import sse_events
from tests.harness import RunningMesh, mesh_env, running_mesh

pytestmark = [pytest.mark.local_model, pytest.mark.timeout(600)]
MODEL = f"local/{BUNDLED_MODEL}"


@pytest.fixture(scope="module")
async def offline_mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningMesh]:
    async with running_mesh(mesh_env(tmp_path_factory.mktemp("offline"), provider_url=None)) as mesh:
        yield mesh


@pytest.fixture
def api(offline_mesh: RunningMesh) -> Iterator[httpx.Client]:
    # A CPU-bound model on two shared cores: a step can take a minute on a busy machine.
    with httpx.Client(base_url=offline_mesh.http_url, headers=offline_mesh.auth, timeout=500) as client:
        yield client


def create_agent(api: httpx.Client, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "offline",
        "model": MODEL,
        "memory_blocks": [
            {"label": "persona", "value": "I am a concise assistant."},
            {"label": "human", "value": ""},
        ],
        "llm_options": {"temperature": 0.0, "max_tokens": 128},
    }
    body.update(overrides)
    response = api.post("/v1/agents", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_with_no_provider_the_local_model_is_listed_and_answers_a_rest_turn(api: httpx.Client) -> None:
    assert MODEL in [m["name"] for m in api.get("/v1/models").json()["models"]]
    agent = create_agent(api)

    response = api.post(
        f"/v1/agents/{agent['id']}/messages",
        json={"messages": [{"content": "What is the capital of France? Answer in one short sentence."}]},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stop_reason"]["stop_reason"] == "end_turn"
    (answer,) = [m for m in body["messages"] if m["message_type"] == "assistant_message"]
    assert "Paris" in answer["content"]
    assert body["usage"]["step_count"] == 1
    # The whole agent prompt (system, memory, five tool schemas) went through the model.
    assert body["usage"]["prompt_tokens"] > 500
    assert body["usage"]["completion_tokens"] > 0
    history = api.get(f"/v1/agents/{agent['id']}/messages").json()
    assert [m["message_type"] for m in history] == ["user_message", "assistant_message"]


def test_the_local_model_calls_a_memory_tool_and_the_block_changes(api: httpx.Client) -> None:
    # A 0.5B model reliably makes the call it is asked for, then tends to repeat it rather than answer:
    # the repeat is refused (the turn's edits are not made twice) and the next step can only answer.
    agent = create_agent(api)

    response = api.post(
        f"/v1/agents/{agent['id']}/messages",
        json={
            "messages": [
                {"content": 'My name is Ada. Call core_memory_append to add "Name: Ada" to the human block.'}
            ]
        },
    )

    assert response.status_code == 200, response.text
    body = response.json()
    calls = [m for m in body["messages"] if m["message_type"] == "tool_call_message"]
    returns = [m for m in body["messages"] if m["message_type"] == "tool_return_message"]
    assert calls
    assert {c["tool_call"]["name"] for c in calls} == {"core_memory_append"}
    arguments = json.loads(calls[0]["tool_call"]["arguments"])
    assert arguments["label"] == "human"
    assert "Ada" in arguments["content"]
    assert returns[0]["status"] == "success"
    assert returns[0]["tool_call_id"] == calls[0]["tool_call"]["tool_call_id"]
    # Every later call repeated the first one and was refused, so the text is in the block once.
    assert [json.loads(c["tool_call"]["arguments"]) for c in calls[1:]] == [arguments] * (len(calls) - 1)
    assert [r["status"] for r in returns[1:]] == ["error"] * (len(calls) - 1)
    assert body["stop_reason"]["stop_reason"] == "end_turn"
    assert body["usage"]["step_count"] <= 3
    blocks = {b["label"]: b["value"] for b in api.get(f"/v1/agents/{agent['id']}/core-memory/blocks").json()}
    assert blocks["human"] == arguments["content"]
    assert blocks["persona"] == "I am a concise assistant."


def test_a_streamed_local_turn_sends_token_deltas_then_the_message_and_stop_reason(api: httpx.Client) -> None:
    agent = create_agent(api)

    with api.stream(
        "POST",
        f"/v1/agents/{agent['id']}/messages/stream",
        json={"messages": [{"content": "Count from 1 to 10, separated by commas."}], "stream_tokens": True},
    ) as response:
        assert response.status_code == 200
        events = sse_events(response)

    kinds = [e if e == "[DONE]" else e["message_type"] for e in events]
    deltas = [
        e["content"] for e in events if e != "[DONE]" and e["message_type"] == "assistant_message_delta"
    ]
    (answer,) = [e for e in events if e != "[DONE]" and e["message_type"] == "assistant_message"]
    assert len(deltas) > 5
    assert "".join(deltas) == answer["content"]
    assert re.findall(r"\d+", answer["content"])[:10] == [str(n) for n in range(1, 11)]
    assert kinds.index("assistant_message") > max(
        i for i, k in enumerate(kinds) if k == "assistant_message_delta"
    )
    assert kinds[-3:] == ["stop_reason", "usage_statistics", "[DONE]"]
    assert events[-3]["stop_reason"] == "end_turn"
    assert events[-2]["completion_tokens"] >= len(deltas)
    stored = api.get(f"/v1/agents/{agent['id']}/messages").json()
    assert stored[-1]["content"] == answer["content"]
