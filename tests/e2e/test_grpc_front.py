"""The gRPC front: every service of the mesh on the one address the gateway listens on."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc, run_pb2, run_pb2_grpc
from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.memory.v1 import block_pb2, block_pb2_grpc
from mnemo_core.actor import ORG_KEY, USER_KEY
from mnemo_core.rpc_errors import DETAILS_KEY
from tests.e2e.external_clients import takes_api_keys
from tests.fakes.llm_provider import FakeProvider, reply, tool_call
from tests.harness import RunningMesh

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def metadata(mesh: RunningMesh) -> Metadata:
    """The caller's credentials: the API key where the services take it on gRPC, else the actor."""
    if await takes_api_keys(mesh):
        return (("authorization", f"Bearer {mesh.api_key}"),)
    return ((ORG_KEY, "org-front"), (USER_KEY, "user-1"))


async def _listed_services(address: str) -> set[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        response = await call.read()
        await call.done_writing()
        return {service.name for service in response.list_services_response.service}


async def test_calls_to_two_services_on_one_address_reach_their_owners(
    mesh: RunningMesh, llm: FakeProvider, metadata: Metadata
) -> None:
    async with grpc.aio.insecure_channel(mesh.grpc_address) as channel:
        agents = agent_pb2_grpc.AgentServiceStub(channel)
        created = await agents.CreateAgent(
            agent_pb2.CreateAgentRequest(
                agent=agent_pb2.Agent(name="front-agent", model="openai/gpt-4o-mini"),
                memory_blocks=[block_pb2.Block(label="human", value="")],
            ),
            metadata=metadata,
        )
        blocks = await block_pb2_grpc.BlockServiceStub(channel).ListBlocks(
            block_pb2.ListBlocksRequest(agent_id=created.agent.id), metadata=metadata
        )
    assert [block.label for block in blocks.blocks] == ["human"]


async def test_a_streamed_turn_arrives_event_by_event_through_the_front(
    mesh: RunningMesh, llm: FakeProvider, metadata: Metadata
) -> None:
    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": "Likes tea"}),
        reply("Tea, noted and remembered."),
    )
    async with grpc.aio.insecure_channel(mesh.grpc_address) as channel:
        agents = agent_pb2_grpc.AgentServiceStub(channel)
        created = await agents.CreateAgent(
            agent_pb2.CreateAgentRequest(
                agent=agent_pb2.Agent(name="front-stream", model="openai/gpt-4o-mini"),
                memory_blocks=[block_pb2.Block(label="human", value="")],
            ),
            metadata=metadata,
        )
        events = [
            event
            async for event in agents.StreamMessage(
                agent_pb2.StreamMessageRequest(
                    agent_id=created.agent.id,
                    messages=[message_pb2.Message(user=message_pb2.UserContent(text="I like tea"))],
                    stream_tokens=True,
                ),
                metadata=metadata,
                timeout=60,
            )
        ]
        fetched = await agents.GetAgent(
            agent_pb2.GetAgentRequest(agent_id=created.agent.id), metadata=metadata
        )
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "run_id"
    assert kinds[-1] == "outcome"
    assert "delta" in kinds
    deltas = "".join(event.delta.text for event in events if event.WhichOneof("event") == "delta")
    assert deltas == "Tea, noted and remembered."
    assert [e.message.WhichOneof("content") for e in events if e.WhichOneof("event") == "message"] == [
        "tool_call",
        "tool_return",
        "assistant",
    ]
    assert fetched.agent.blocks[0].value == "Likes tea"


async def test_an_error_keeps_its_status_and_reason_through_the_front(
    mesh: RunningMesh, metadata: Metadata
) -> None:
    async with grpc.aio.insecure_channel(mesh.grpc_address) as channel:
        agents = agent_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await agents.GetAgent(agent_pb2.GetAgentRequest(agent_id="agent-none"), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await agents.GetAgent(agent_pb2.GetAgentRequest(agent_id="agent-none"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    details = dict(missing.value.trailing_metadata() or ())[DETAILS_KEY]
    status = status_pb2.Status.FromString(details)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "AGENT_NOT_FOUND"
    assert info.domain == "mnemo.dev"
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_unknown_service_is_unimplemented(mesh: RunningMesh, metadata: Metadata) -> None:
    async with grpc.aio.insecure_channel(mesh.grpc_address) as channel:
        call = channel.unary_unary("/mnemo.nothing.v1.NoService/Get")
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await call(b"", metadata=metadata)
        missing_method = channel.unary_unary("/mnemo.agent.v1.AgentService/NoSuchMethod")
        with pytest.raises(grpc.aio.AioRpcError) as no_method:
            await missing_method(b"", metadata=metadata)
    assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert no_method.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_reflection_on_the_front_lists_every_service_of_the_mesh(mesh: RunningMesh) -> None:
    listed = await _listed_services(mesh.grpc_address)
    served: set[str] = set()
    for service in ("agent", "memory", "tools", "llm"):
        served |= await _listed_services(mesh.address(service))
    assert listed == served
    assert {
        "mnemo.agent.v1.AgentService",
        "mnemo.memory.v1.PassageService",
        "mnemo.llm.v1.LlmService",
    } <= listed


async def test_health_on_the_front_answers_for_itself_and_asks_each_service(mesh: RunningMesh) -> None:
    async with grpc.aio.insecure_channel(mesh.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        front = await health.Check(health_pb2.HealthCheckRequest(service=""))
        blocks = await health.Check(health_pb2.HealthCheckRequest(service="mnemo.memory.v1.BlockService"))
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health.Check(health_pb2.HealthCheckRequest(service="mnemo.agent.v1.NoService"))
        watch = health.Watch(health_pb2.HealthCheckRequest(service="mnemo.tools.v1.ToolService"))
        first = await watch.read()
        watch.cancel()
    assert front.status == health_pb2.HealthCheckResponse.SERVING
    assert blocks.status == health_pb2.HealthCheckResponse.SERVING
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert first.status == health_pb2.HealthCheckResponse.SERVING


async def _cancelled_run(mesh: RunningMesh, metadata: Metadata, agent_id: str) -> run_pb2.Run:
    """The agent's run once it is cancelled (asked through the front, as the caller's organization)."""
    async with grpc.aio.insecure_channel(mesh.grpc_address) as channel:
        runs = run_pb2_grpc.RunServiceStub(channel)
        for _ in range(100):
            listed = await runs.ListRuns(run_pb2.ListRunsRequest(agent_id=agent_id), metadata=metadata)
            if listed.runs and listed.runs[0].status == run_pb2.RUN_STATUS_CANCELLED:
                return listed.runs[0]
            await asyncio.sleep(0.03)
    pytest.fail(f"no cancelled run of {agent_id}")


async def test_a_client_that_cancels_a_stream_on_the_front_cancels_the_turn(
    mesh: RunningMesh, llm: FakeProvider, metadata: Metadata
) -> None:
    llm.script(reply("nobody listens", delay=5.0))
    async with grpc.aio.insecure_channel(mesh.grpc_address) as channel:
        agents = agent_pb2_grpc.AgentServiceStub(channel)
        created = await agents.CreateAgent(
            agent_pb2.CreateAgentRequest(
                agent=agent_pb2.Agent(name="front-leave", model="openai/gpt-4o-mini")
            ),
            metadata=metadata,
        )
        call = agents.StreamMessage(
            agent_pb2.StreamMessageRequest(
                agent_id=created.agent.id,
                messages=[message_pb2.Message(user=message_pb2.UserContent(text="then leave"))],
            ),
            metadata=metadata,
        )
        first = await call.read()
        assert first.WhichOneof("event") == "run_id"
        call.cancel()
    run = await _cancelled_run(mesh, metadata, created.agent.id)
    assert run.id == first.run_id
    assert run.stop_reason == turn_pb2.STOP_REASON_CANCELLED


async def test_the_callers_deadline_reaches_the_service_behind_the_front(
    mesh: RunningMesh, llm: FakeProvider, metadata: Metadata
) -> None:
    llm.script(reply("too late", delay=5.0))
    async with grpc.aio.insecure_channel(mesh.grpc_address) as channel:
        agents = agent_pb2_grpc.AgentServiceStub(channel)
        created = await agents.CreateAgent(
            agent_pb2.CreateAgentRequest(
                agent=agent_pb2.Agent(name="front-deadline", model="openai/gpt-4o-mini")
            ),
            metadata=metadata,
        )
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await agents.SendMessage(
                agent_pb2.SendMessageRequest(
                    agent_id=created.agent.id,
                    messages=[message_pb2.Message(user=message_pb2.UserContent(text="quick"))],
                ),
                metadata=metadata,
                timeout=1.0,
            )
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The agent service saw the deadline too: it ended the turn rather than finishing it for nobody.
    run = await _cancelled_run(mesh, metadata, created.agent.id)
    assert run.stop_reason == turn_pb2.STOP_REASON_CANCELLED
