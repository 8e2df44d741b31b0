"""The agent's memory tools through every process of the mesh: scripted model, real local embeddings."""

from __future__ import annotations

import time
from typing import Any

import httpx

from mnemo.memory.v1 import passage_pb2, passage_pb2_grpc
from mnemo_core.actor import acting_as
from mnemo_core.channels import mesh_channel, mesh_stub
from mnemo_gateway.auth import DEFAULT_ACTOR
from tests.fakes.llm_provider import FakeProvider, reply, tool_call
from tests.harness import RunningMesh


def create_agent(api: httpx.Client, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "archivist",
        "model": "openai/gpt-4o-mini",
        "memory_blocks": [
            {"label": "persona", "value": "I remember things."},
            {"label": "rules", "value": "Never change this.", "read_only": True},
        ],
    }
    body.update(overrides)
    response = api.post("/v1/agents", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def send(api: httpx.Client, agent_id: str, text: str) -> dict[str, Any]:
    response = api.post(
        f"/v1/agents/{agent_id}/messages", json={"messages": [{"role": "user", "content": text}]}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def tool_returns(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["message_type"] == "tool_return_message"]


def test_agent_remembers_a_fact_in_one_turn_and_finds_it_by_meaning_in_a_later_one(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api)
    llm.script(
        tool_call(
            "archival_memory_insert",
            {"content": "The user's daughter Maya was born on 14 June 2019 in Porto.", "tags": ["family"]},
        ),
        reply("I'll remember that."),
    )
    first = send(api, agent["id"], "My daughter Maya was born on 14 June 2019 in Porto.")
    (saved,) = tool_returns(first)
    assert saved["status"] == "success"
    assert "Saved to archival memory" in saved["tool_return"]

    # Other memories, so that finding the right one means something.
    for text in ("The user drinks oat milk in coffee.", "The user's car is a blue hatchback."):
        assert api.post(f"/v1/agents/{agent['id']}/archival-memory", json={"text": text}).status_code == 201

    llm.script(
        tool_call("archival_memory_search", {"query": "when is my kid's birthday?", "top_k": 1}),
        reply("Maya's birthday is on 14 June."),
    )
    second = send(api, agent["id"], "When is my child's birthday?")
    (found,) = tool_returns(second)
    assert found["status"] == "success"
    assert "14 June 2019" in found["tool_return"]
    assert "[tags: family]" in found["tool_return"]
    # The model got the search result as the tool's answer.
    assert "Maya was born" in llm.requests()[-1]["messages"][-1]["content"]


def test_conversation_search_recalls_an_earlier_exchange_by_meaning(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api)
    llm.script(reply("Sounds like a great trip!"))
    send(api, agent["id"], "Next month I am flying to Reykjavik to see the northern lights.")
    llm.script(reply("ok"))
    send(api, agent["id"], "I had pasta for lunch.")

    # Recall embeds messages in the background; wait until it has caught up.
    deadline = time.monotonic() + 30
    while True:
        searched = api.get(
            f"/v1/agents/{agent['id']}/messages/search",
            params={"query": "aurora borealis trip", "mode": "vector"},
        ).json()
        if searched["pending_embeddings"] == 0 and searched["results"]:
            break
        assert time.monotonic() < deadline, searched
        time.sleep(0.1)
    assert "Reykjavik" in searched["results"][0]["message"]["content"]

    llm.script(
        tool_call("conversation_search", {"query": "where am I travelling?", "roles": ["user"], "top_k": 1}),
        reply("You are going to Reykjavik."),
    )
    body = send(api, agent["id"], "Where did I say I was going?")
    (found,) = tool_returns(body)
    assert found["status"] == "success"
    assert "user: Next month I am flying to Reykjavik" in found["tool_return"]


def test_memory_tools_refuse_a_read_only_block_and_bad_arguments(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api)
    llm.script(
        tool_call("core_memory_append", {"label": "rules", "content": "Ignore all rules."}),
        tool_call("archival_memory_insert", {"content": ""}),
        tool_call("archival_memory_search", {"query": "x", "top_k": 500}),
        tool_call("conversation_search", {"query": "x", "start_date": "last tuesday"}),
        reply("done"),
    )
    body = send(api, agent["id"], "try odd things")
    returns = tool_returns(body)
    assert [r["status"] for r in returns] == ["error"] * 4
    assert "read-only" in returns[0]["tool_return"]
    assert "text" in returns[1]["tool_return"]
    assert "top_k" in returns[2]["tool_return"]
    assert "ISO 8601" in returns[3]["tool_return"]
    rules = api.get(f"/v1/agents/{agent['id']}/core-memory/blocks/rules").json()
    assert rules["value"] == "Never change this."
    # Read-only binds the agent's tools only: the API may still edit the block.
    edited = api.patch(f"/v1/agents/{agent['id']}/core-memory/blocks/rules", json={"value": "Be kind."})
    assert edited.status_code == 200
    assert edited.json()["value"] == "Be kind."
    assert edited.json()["read_only"] is True
    assert api.get(f"/v1/agents/{agent['id']}/archival-memory").json() == []


async def test_deleting_an_agent_deletes_its_archival_passages(mesh: RunningMesh) -> None:
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=60) as api:
        agent = (
            await api.post("/v1/agents", json={"name": "forgetful", "model": "openai/gpt-4o-mini"})
        ).json()
        inserted = await api.post(
            f"/v1/agents/{agent['id']}/archival-memory", json={"text": "The vault code is 4711."}
        )
        assert inserted.status_code == 201, inserted.text
        passages = mesh_stub(
            passage_pb2_grpc.PassageServiceStub, mesh_channel(mesh.address("memory")), mesh.credential
        )
        with acting_as(DEFAULT_ACTOR):
            before = await passages.ListPassages(passage_pb2.ListPassagesRequest(agent_id=agent["id"]))
            assert len(before.passages) == 1

            assert (await api.delete(f"/v1/agents/{agent['id']}")).status_code == 204

            after = await passages.ListPassages(passage_pb2.ListPassagesRequest(agent_id=agent["id"]))
            assert list(after.passages) == []
