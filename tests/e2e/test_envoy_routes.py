"""deploy/envoy/grpc-routes.yaml: Envoy routing each call by package to its service, run against a real mesh."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc
from mnemo.common.v1 import message_pb2
from mnemo.memory.v1 import block_pb2, block_pb2_grpc
from mnemo_core.actor import ORG_KEY, USER_KEY
from mnemo_core.rpc_errors import DETAILS_KEY
from tests.e2e.external_clients import ROOT, takes_api_keys, tool
from tests.fakes.llm_provider import FakeProvider, free_port, reply
from tests.harness import RunningMesh

CONFIG = ROOT / "deploy" / "envoy" / "grpc-routes.yaml"
SERVICE_PORTS = {"agent": 8284, "memory": 8285, "tools": 8286, "llm": 8287}


def local_config(mesh: RunningMesh, listen: int, admin: int) -> str:
    """The cluster's file with this mesh's loopback ports in place of the Services' names and ports."""
    text = CONFIG.read_text()
    for service, port in SERVICE_PORTS.items():
        cluster = f"address: mnemo-{service}, port_value: {port}"
        assert cluster in text
        text = text.replace(cluster, f"address: 127.0.0.1, port_value: {mesh.settings.port_of(service)}")
    return text.replace(
        "address: 0.0.0.0, port_value: 8288", f"address: 127.0.0.1, port_value: {listen}"
    ).replace("port_value: 9901", f"port_value: {admin}")


@pytest.fixture
async def envoy(mesh: RunningMesh, tmp_path: Path) -> AsyncIterator[str]:
    listen, admin = free_port(), free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(local_config(mesh, listen, admin))
    process = await asyncio.create_subprocess_exec(
        tool("envoy"),
        "-c",
        str(config),
        "--use-dynamic-base-id",
        "--log-level",
        "warn",
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(400):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{admin}/ready")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("envoy did not become ready")
        yield f"127.0.0.1:{listen}"
    finally:
        process.terminate()
        await process.wait()


async def test_envoy_routes_each_package_to_its_service_with_streams_and_error_details(
    mesh: RunningMesh, llm: FakeProvider, envoy: str
) -> None:
    if await takes_api_keys(mesh):
        metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {mesh.api_key}"),)
    else:
        metadata = ((ORG_KEY, "org-envoy"), (USER_KEY, "user-1"))
    llm.script(reply("Routed by Envoy."))
    async with grpc.aio.insecure_channel(envoy) as channel:
        agents = agent_pb2_grpc.AgentServiceStub(channel)
        created = await agents.CreateAgent(
            agent_pb2.CreateAgentRequest(
                agent=agent_pb2.Agent(name="envoy-agent", model="openai/gpt-4o-mini"),
                memory_blocks=[block_pb2.Block(label="human", value="Ada")],
            ),
            metadata=metadata,
        )
        blocks = await block_pb2_grpc.BlockServiceStub(channel).ListBlocks(
            block_pb2.ListBlocksRequest(agent_id=created.agent.id), metadata=metadata
        )
        events = [
            event
            async for event in agents.StreamMessage(
                agent_pb2.StreamMessageRequest(
                    agent_id=created.agent.id,
                    messages=[message_pb2.Message(user=message_pb2.UserContent(text="hello"))],
                    stream_tokens=True,
                ),
                metadata=metadata,
            )
        ]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await agents.GetAgent(agent_pb2.GetAgentRequest(agent_id="agent-none"), metadata=metadata)
    assert [block.value for block in blocks.blocks] == ["Ada"]
    streamed = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
    assert streamed == "Routed by Envoy."
    assert events[-1].WhichOneof("event") == "outcome"
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    status = status_pb2.Status.FromString(dict(missing.value.trailing_metadata() or ())[DETAILS_KEY])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "AGENT_NOT_FOUND"
