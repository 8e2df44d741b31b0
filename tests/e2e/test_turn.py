"""A whole agent turn over REST and gRPC, through every process of the mesh."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import httpx
import pytest

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc
from mnemo.common.v1 import message_pb2
from tests.fakes.llm_provider import FakeProvider, error, reply, tool_call
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.harness import RunningMesh

PERSONA = "I am a friendly assistant."


def create_agent(api: httpx.Client, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "ada-helper",
        "model": "openai/gpt-4o-mini",
        "memory_blocks": [
            {"label": "persona", "value": PERSONA},
            {"label": "human", "value": "", "limit": 100},
        ],
    }
    body.update(overrides)
    response = api.post("/v1/agents", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def blocks_by_label(api: httpx.Client, agent_id: str) -> dict[str, dict[str, Any]]:
    response = api.get(f"/v1/agents/{agent_id}/core-memory/blocks")
    assert response.status_code == 200, response.text
    return {block["label"]: block for block in response.json()}


def send(api: httpx.Client, agent_id: str, text: str, **headers: str) -> httpx.Response:
    return api.post(
        f"/v1/agents/{agent_id}/messages",
        json={"messages": [{"role": "user", "content": text}]},
        headers=headers,
    )


def test_rest_turn_saves_the_name_in_core_memory_and_answers(api: httpx.Client, llm: FakeProvider) -> None:
    agent = create_agent(api)
    llm.script(
        tool_call(
            "core_memory_append",
            {"label": "human", "content": "Name: Ada"},
            call_id="call_ada",
            prompt_tokens=100,
            completion_tokens=10,
        ),
        reply("Nice to meet you, Ada!", prompt_tokens=130, completion_tokens=7),
    )

    response = send(api, agent["id"], "my name is Ada")

    assert response.status_code == 200, response.text
    body = response.json()
    assert [m["message_type"] for m in body["messages"]] == [
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ]
    call, ret, answer = body["messages"]
    assert call["tool_call"] == {
        "name": "core_memory_append",
        "arguments": json.dumps({"label": "human", "content": "Name: Ada"}),
        "tool_call_id": "call_ada",
    }
    assert ret["status"] == "success"
    assert ret["tool_call_id"] == "call_ada"
    assert answer["content"] == "Nice to meet you, Ada!"
    assert body["stop_reason"] == {"message_type": "stop_reason", "stop_reason": "end_turn"}
    assert body["usage"] == {
        "message_type": "usage_statistics",
        "prompt_tokens": 230,
        "completion_tokens": 17,
        "total_tokens": 247,
        "step_count": 2,
    }
    assert all(
        m["id"].startswith("message-") and m["date"] and m["run_id"] == body["run_id"]
        for m in body["messages"]
    )

    assert blocks_by_label(api, agent["id"])["human"]["value"] == "Name: Ada"

    history = api.get(f"/v1/agents/{agent['id']}/messages").json()
    assert [m["message_type"] for m in history] == [
        "user_message",
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ]
    assert history[0]["content"] == "my name is Ada"

    first, second = llm.requests()
    assert [t["function"]["name"] for t in first["tools"]] == [
        "archival_memory_insert",
        "archival_memory_search",
        "conversation_search",
        "core_memory_append",
        "core_memory_replace",
    ]
    assert first["messages"][0]["role"] == "system"
    assert PERSONA in first["messages"][0]["content"]
    assert first["messages"][-1] == {"role": "user", "content": "my name is Ada"}
    # The second step sees the tool call with its result, and the edited memory in the system prompt.
    assert "Name: Ada" in second["messages"][0]["content"]
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_ada"
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["tool_call_id"] == "call_ada"


async def test_grpc_turn_with_the_generated_client(mesh: RunningMesh, llm: FakeProvider) -> None:
    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": "Likes tea"}),
        reply("Noted: tea it is."),
    )
    metadata = mesh.hop("org-grpc", "user-1")
    async with grpc.aio.insecure_channel(mesh.address("agent")) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        created = await stub.CreateAgent(
            agent_pb2.CreateAgentRequest(
                agent=agent_pb2.Agent(name="grpc-agent", model="openai/gpt-4o-mini"),
                memory_blocks=[{"label": "human", "value": ""}],
            ),
            metadata=metadata,
        )
        result = await stub.SendMessage(
            agent_pb2.SendMessageRequest(
                agent_id=created.agent.id,
                messages=[message_pb2.Message(user=message_pb2.UserContent(text="I like tea"))],
            ),
            metadata=metadata,
        )
        assert [m.WhichOneof("content") for m in result.messages] == ["tool_call", "tool_return", "assistant"]
        assert result.messages[-1].assistant.text == "Noted: tea it is."
        assert result.usage.step_count == 2
        fetched = await stub.GetAgent(agent_pb2.GetAgentRequest(agent_id=created.agent.id), metadata=metadata)
        assert fetched.agent.blocks[0].value == "Likes tea"

        # Another organization cannot see the agent.
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await stub.GetAgent(
                agent_pb2.GetAgentRequest(agent_id=created.agent.id),
                metadata=mesh.hop("org-other", "u"),
            )
        assert foreign.value.code() == grpc.StatusCode.NOT_FOUND

        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.GetAgent(agent_pb2.GetAgentRequest(agent_id=created.agent.id))
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_block_write_over_its_limit_is_reported_to_the_model_and_changes_nothing(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api)
    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": "x" * 101}),
        reply("I could not save that."),
    )

    body = send(api, agent["id"], "remember a very long thing").json()

    ret = body["messages"][1]
    assert ret["message_type"] == "tool_return_message"
    assert ret["status"] == "error"
    assert "101" in ret["tool_return"]
    assert "100" in ret["tool_return"]
    assert blocks_by_label(api, agent["id"])["human"]["value"] == ""
    # The model saw the error as the tool's result.
    assert llm.requests()[1]["messages"][-1]["content"] == ret["tool_return"]


def test_unknown_tool_and_bad_arguments_become_tool_errors(api: httpx.Client, llm: FakeProvider) -> None:
    agent = create_agent(api)
    llm.script(
        tool_call("launch_rockets", {}),
        tool_call("core_memory_replace", "{not json"),
        tool_call("core_memory_replace", {"label": "nope", "old_content": "a", "new_content": "b"}),
        reply("done"),
    )

    body = send(api, agent["id"], "do odd things").json()

    returns = [m for m in body["messages"] if m["message_type"] == "tool_return_message"]
    assert [r["status"] for r in returns] == ["error", "error", "error"]
    assert "no tool named 'launch_rockets'" in returns[0]["tool_return"]
    assert "not valid JSON" in returns[1]["tool_return"]
    assert "no block labelled 'nope'" in returns[2]["tool_return"]
    assert body["stop_reason"]["stop_reason"] == "end_turn"


def test_turn_stops_at_max_steps(api: httpx.Client, llm: FakeProvider) -> None:
    agent = create_agent(api, max_steps=2)
    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": "a"}),
        tool_call("core_memory_append", {"label": "human", "content": "b"}),
    )

    body = send(api, agent["id"], "keep going").json()

    assert body["stop_reason"]["stop_reason"] == "max_steps"
    assert body["usage"]["step_count"] == 2
    assert blocks_by_label(api, agent["id"])["human"]["value"] == "a\nb"


def test_provider_failure_fails_the_turn_and_stores_nothing(api: httpx.Client, llm: FakeProvider) -> None:
    agent = create_agent(api)
    llm.script(error(500, "upstream exploded", err_type="server_error"))

    response = send(api, agent["id"], "hello?")

    assert response.status_code == 503
    assert response.json()["reason"] == "PROVIDER_UNAVAILABLE"
    assert "upstream exploded" in response.json()["detail"]
    assert api.get(f"/v1/agents/{agent['id']}/messages").json() == []


def test_context_overflow_with_nothing_to_evict_ends_the_turn_with_its_stop_reason(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api)
    llm.script(
        error(400, "This model's maximum context length is 8192 tokens", code="context_length_exceeded")
    )

    response = send(api, agent["id"], "hello?")

    assert response.status_code == 200, response.text
    assert response.json()["stop_reason"]["stop_reason"] == "context_overflow"
    assert response.json()["messages"] == []
    # What the user said is kept, so a later turn (after compaction) still has it.
    history = api.get(f"/v1/agents/{agent['id']}/messages").json()
    assert [m["message_type"] for m in history] == ["user_message"]


def test_retry_with_the_same_idempotency_key_returns_the_first_result(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api)
    llm.script(reply("first answer"))

    first = send(api, agent["id"], "hi", **{"Idempotency-Key": "key-1"}).json()
    second = send(api, agent["id"], "hi", **{"Idempotency-Key": "key-1"}).json()

    assert second == first
    assert len(llm.requests()) == 1
    history = api.get(f"/v1/agents/{agent['id']}/messages").json()
    assert [m["message_type"] for m in history] == ["user_message", "assistant_message"]


def test_history_pages_with_before_and_after(api: httpx.Client, llm: FakeProvider) -> None:
    agent = create_agent(api)
    for i in range(3):
        llm.script(reply(f"answer {i}"))
        assert send(api, agent["id"], f"question {i}").status_code == 200

    everything = api.get(f"/v1/agents/{agent['id']}/messages").json()
    assert [m.get("content") for m in everything] == [
        "question 0",
        "answer 0",
        "question 1",
        "answer 1",
        "question 2",
        "answer 2",
    ]
    newest_two = api.get(f"/v1/agents/{agent['id']}/messages", params={"limit": 2, "order": "desc"}).json()
    assert [m["content"] for m in newest_two] == ["answer 2", "question 2"]
    after = api.get(f"/v1/agents/{agent['id']}/messages", params={"after": everything[3]["id"]}).json()
    assert [m["content"] for m in after] == ["question 2", "answer 2"]
    before = api.get(f"/v1/agents/{agent['id']}/messages", params={"before": everything[2]["id"]}).json()
    assert [m["content"] for m in before] == ["question 0", "answer 0"]


def test_turn_trace_spans_gateway_agent_memory_and_llm(
    api: httpx.Client, llm: FakeProvider, otlp: OtlpReceiver
) -> None:
    agent = create_agent(api)
    llm.script(tool_call("core_memory_append", {"label": "human", "content": "traced"}), reply("ok"))
    before = {s.trace_id for s in otlp.spans()}

    assert send(api, agent["id"], "trace me").status_code == 200

    # The built-in tools' schemas are immutable and cached by the agent, so the tools service is not
    # called on every turn.
    wanted = {"mnemo-gateway", "mnemo-agent", "mnemo-memory", "mnemo-llm"}
    deadline = time.monotonic() + 15
    while True:
        spans = [s for s in otlp.spans() if s.trace_id not in before]
        turn_traces = {
            s.trace_id for s in spans if s.name.endswith("/SendMessage") and s.service == "mnemo-agent"
        }
        if turn_traces:
            (trace_id,) = turn_traces
            services = {s.service for s in spans if s.trace_id == trace_id}
            if services >= wanted:
                break
        assert time.monotonic() < deadline, f"trace incomplete: {sorted({s.service for s in spans})}"
        time.sleep(0.1)
    names = {s.name for s in spans if s.trace_id == trace_id}
    assert "/mnemo.llm.v1.LlmService/Chat" in names
    assert "/mnemo.memory.v1.BlockService/AppendBlockValue" in names
    assert "agent.step" in names


def test_agents_created_with_a_shared_block_see_each_others_edits(
    api: httpx.Client, llm: FakeProvider
) -> None:
    first = create_agent(api, memory_blocks=[{"label": "team", "value": "Team: red"}])
    team = first["blocks"][0]
    second = create_agent(api, memory_blocks=[], block_ids=[team["id"]])
    assert [b["id"] for b in second["blocks"]] == [team["id"]]
    llm.script(
        tool_call("core_memory_replace", {"label": "team", "old_content": "red", "new_content": "blue"}),
        reply("Switched."),
    )

    assert send(api, first["id"], "we are team blue now").status_code == 200

    assert blocks_by_label(api, second["id"])["team"]["value"] == "Team: blue"
    llm.script(reply("You are on team blue."))
    assert send(api, second["id"], "which team?").status_code == 200
    assert "Team: blue" in llm.requests()[-1]["messages"][0]["content"]


def test_create_with_an_unknown_block_id_leaves_nothing_behind(api: httpx.Client) -> None:
    before = {a["id"] for a in api.get("/v1/agents", params={"limit": 1000}).json()}

    response = api.post(
        "/v1/agents",
        json={
            "name": "x",
            "model": "openai/gpt-4o-mini",
            "memory_blocks": [{"label": "persona", "value": "p"}],
            "block_ids": ["block-does-not-exist"],
        },
    )

    assert response.status_code == 404
    assert {a["id"] for a in api.get("/v1/agents", params={"limit": 1000}).json()} == before


def test_patch_changes_the_given_fields_and_the_next_turn_uses_them(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api)

    patched = api.patch(
        f"/v1/agents/{agent['id']}",
        json={"model": "openai/other-model", "system": "You speak like a pirate.", "tags": ["sea"]},
    )

    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["model"], body["system"], body["tags"]) == (
        "openai/other-model",
        "You speak like a pirate.",
        ["sea"],
    )
    assert body["name"] == agent["name"]  # left out: unchanged
    assert body["tool_ids"] == agent["tool_ids"]
    llm.script(reply("Arr."))
    assert send(api, agent["id"], "hi").status_code == 200
    (request,) = llm.requests()
    assert request["model"] == "other-model"
    assert "You speak like a pirate." in request["messages"][0]["content"]


@pytest.mark.parametrize(
    ("body", "status"),
    [({}, 422), ({"model": "no-provider-part"}, 422), ({"max_steps": -1}, 422), ({"colour": "red"}, 422)],
)
def test_patch_with_nothing_valid_to_change_is_refused(
    api: httpx.Client, body: dict[str, Any], status: int
) -> None:
    agent = create_agent(api)

    assert api.patch(f"/v1/agents/{agent['id']}", json=body).status_code == status
    assert api.get(f"/v1/agents/{agent['id']}").json()["model"] == agent["model"]


def test_patch_of_an_unknown_agent_is_not_found(api: httpx.Client) -> None:
    assert api.patch("/v1/agents/agent-nope", json={"name": "x"}).status_code == 404
