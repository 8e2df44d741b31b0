"""The context window breakdown over REST and gRPC through the whole mesh, counted by the llm-gateway."""

from __future__ import annotations

import grpc
import httpx

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc
from mnemo.client import Mnemo
from tests.e2e.test_turn import create_agent, send
from tests.fakes.llm_provider import FakeProvider, reply
from tests.harness import RunningMesh

SECTIONS = ("system_tokens", "core_memory_tokens", "tool_schema_tokens", "summary_tokens", "message_tokens")


def test_the_breakdown_adds_up_and_grows_with_the_conversation_and_the_blocks(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api, context_window=16_000)
    before = api.get(f"/v1/agents/{agent['id']}/context")
    assert before.status_code == 200, before.text
    first = before.json()
    llm.script(reply("Nice to meet you, Ada. " * 20))
    send(api, agent["id"], "Hello, I am Ada. " * 20)
    api.patch(f"/v1/agents/{agent['id']}/core-memory/blocks/human", json={"value": "Name: Ada. " * 8})

    after = api.get(f"/v1/agents/{agent['id']}/context").json()

    for found in (first, after):
        assert found["total_tokens"] == sum(found[s] for s in SECTIONS)
        assert found["context_window"] == 16_000
        assert found["model_context_window"] == 128_000  # openai/gpt-4o-mini in the model catalogue
        assert found["method"] == "tiktoken/o200k_base" or found["method"].startswith("estimate/")
        assert found["tool_schema_tokens"] > 100  # the built-in memory tools
    assert (first["message_count"], first["message_tokens"]) == (0, 0)
    assert after["message_count"] == 2
    assert after["message_tokens"] > 80
    assert after["core_memory_tokens"] > first["core_memory_tokens"] + 15
    assert after["summary_tokens"] == 0
    assert api.get("/v1/agents/agent-00000000-0000-0000-0000-000000000000/context").status_code == 404


async def test_the_breakdown_over_grpc_and_the_python_client(mesh: RunningMesh, api: httpx.Client) -> None:
    metadata = mesh.hop("org-grpc-context", "user-1")
    async with grpc.aio.insecure_channel(mesh.address("agent")) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        created = await stub.CreateAgent(
            agent_pb2.CreateAgentRequest(
                agent=agent_pb2.Agent(name="grpc-context", model="openai/gpt-4o-mini"),
                memory_blocks=[{"label": "human", "value": "Name: Grace"}],
            ),
            metadata=metadata,
        )
        found = (
            await stub.GetAgentContext(
                agent_pb2.GetAgentContextRequest(agent_id=created.agent.id), metadata=metadata
            )
        ).context
    agent = create_agent(api)
    with Mnemo(mesh.http_url, api_key=mesh.api_key) as client:
        rest = client.agents.context(agent["id"])

    assert found.total_tokens == sum(getattr(found, section) for section in SECTIONS)
    assert found.core_memory_tokens > 0
    assert found.context_window > 0
    assert rest.total_tokens == sum(getattr(rest, section) for section in SECTIONS)
    assert rest.core_memory_tokens > 0
