"""What every service gets from mnemo_core.server: health, reflection, the actor and the internal token."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mnemo.memory.v1 import block_pb2, block_pb2_grpc
from mnemo_core import channels, server
from mnemo_core.actor import ORG_KEY, acting_as
from mnemo_core.channels import mesh_channel, mesh_stub
from mnemo_core.errors import NotFound, Unauthenticated
from mnemo_core.interceptors import outgoing_metadata
from mnemo_memory.app import build as build_memory
from mnemo_memory.settings import MemorySettings
from tests.service.conftest import Served, clean_environment, new_actor, serving

HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
SERVICES = {
    "memory": [
        "mnemo.memory.v1.BlockService",
        "mnemo.memory.v1.MessageService",
        "mnemo.memory.v1.PassageService",
        "mnemo.memory.v1.SourceService",
    ],
    "tools": ["mnemo.tools.v1.McpService", "mnemo.tools.v1.ToolService"],
    "llm": ["mnemo.llm.v1.LlmService"],
}


@pytest.fixture(params=sorted(SERVICES))
def service(request: pytest.FixtureRequest) -> tuple[str, Served]:
    fixture = {"memory": "memory_service", "tools": "tools_service", "llm": "llm_service"}[request.param]
    return request.param, request.getfixturevalue(fixture)


async def listed_services(channel: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call: Any = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names: list[str] = []
    async for response in call:
        names += [s.name for s in response.list_services_response.service]
    return names


async def test_health_reports_serving_for_the_server_and_each_of_its_services_without_an_actor(
    service: tuple[str, Served],
) -> None:
    name, served = service
    stub = health_pb2_grpc.HealthStub(served.channel)

    for service_name in ["", *SERVICES[name]]:
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service_name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service_name


async def test_health_of_a_service_the_server_does_not_have_is_not_found(memory_service: Served) -> None:
    stub = memory_service.stub(health_pb2_grpc.HealthStub)

    with pytest.raises(NotFound):
        await stub.Check(health_pb2.HealthCheckRequest(service="mnemo.tools.v1.ToolService"))


async def test_reflection_lists_the_services_with_health_and_reflection(service: tuple[str, Served]) -> None:
    name, served = service

    names = await listed_services(served.channel)

    assert sorted(names) == sorted([*SERVICES[name], HEALTH, REFLECTION])


async def test_internal_token_is_required_with_the_actor_when_the_server_is_given_one(tmp_path: Path) -> None:
    with clean_environment(tmp_path):
        settings = MemorySettings(home=tmp_path)
    async with serving(await build_memory(settings), internal_token="s3cret") as served:
        with_token = served.stub(block_pb2_grpc.BlockServiceStub)
        without_token_channel = mesh_channel(served.address)
        wrong_token_channel = mesh_channel(served.address)
        try:
            with acting_as(new_actor()):
                created = await with_token.CreateBlock(
                    block_pb2.CreateBlockRequest(block=block_pb2.Block(label="human"))
                )
                with pytest.raises(Unauthenticated) as missing:
                    await mesh_stub(block_pb2_grpc.BlockServiceStub, without_token_channel).GetBlock(
                        block_pb2.GetBlockRequest(block_id=created.block.id)
                    )
                with pytest.raises(Unauthenticated) as wrong:
                    await mesh_stub(block_pb2_grpc.BlockServiceStub, wrong_token_channel, "guess").GetBlock(
                        block_pb2.GetBlockRequest(block_id=created.block.id)
                    )
            # Health stays open to probes that carry neither token nor actor.
            health = await health_pb2_grpc.HealthStub(without_token_channel).Check(
                health_pb2.HealthCheckRequest()
            )
        finally:
            await without_token_channel.close()
            await wrong_token_channel.close()

    assert created.block.id.startswith("block-")
    assert missing.value.reason == "INTERNAL_TOKEN_INVALID"
    assert wrong.value.reason == "INTERNAL_TOKEN_INVALID"
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_request_with_only_half_of_the_actor_is_unauthenticated(memory_service: Served) -> None:
    stub = memory_service.stub(block_pb2_grpc.BlockServiceStub)
    with pytest.raises(Unauthenticated) as anonymous:
        await stub.ListBlocks(block_pb2.ListBlocksRequest(), metadata=((ORG_KEY, "org-1"),))

    assert anonymous.value.reason == "ACTOR_MISSING"


class SilentApp:
    """One method that stays silent on the wire for the seconds it is sent, then answers."""

    def register(self, grpc_server: grpc.aio.Server) -> Sequence[str]:
        async def wait(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            # The call must outlast several ping intervals: this silence is what is tested.
            await asyncio.sleep(float(request.decode()))
            return b"done"

        handler = grpc.unary_unary_rpc_method_handler(wait)
        grpc_server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("test.Silent", {"Wait": handler})]
        )
        return ["test.Silent"]

    async def aclose(self) -> None:
        pass


async def test_a_long_silent_call_survives_the_keepalive_pings_of_its_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The mesh's timing scaled down 30 times (gRPC pings at most once a second): the client pings every
    # second, the server tolerates every 333 ms. With gRPC's own tolerance (5 minutes) the third early
    # ping, about 4 s in, would end the call with "too many pings" (UNAVAILABLE).
    monkeypatch.setattr(server, "MIN_PING_INTERVAL_MS", 333)
    async with serving(SilentApp()) as served:
        pinging = grpc.aio.insecure_channel(
            served.address,
            options=[("grpc.keepalive_time_ms", 1000), ("grpc.http2.max_pings_without_data", 0)],
        )
        try:
            with acting_as(new_actor()):
                reply = await pinging.unary_unary("/test.Silent/Wait")(b"6", metadata=outgoing_metadata(None))
        finally:
            await pinging.close()

    assert reply == b"done"
    assert channels.KEEPALIVE_MS >= 3 * server.MIN_PING_INTERVAL_MS
