"""What every service gets from mnemo_core.server: health, reflection, the actor and the internal credential."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mnemo.memory.v1 import block_pb2, block_pb2_grpc
from mnemo_core import channels, mesh_credential, server
from mnemo_core.actor import ORG_KEY, ROLE_KEY, USER_KEY, Actor, acting_as
from mnemo_core.errors import NotFound, Unauthenticated
from mnemo_core.interceptors import outgoing_metadata
from mnemo_core.rpc_errors import from_rpc_error
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


async def test_actor_metadata_is_refused_unless_signed_with_the_servers_credential(tmp_path: Path) -> None:
    with clean_environment(tmp_path):
        settings = MemorySettings(home=tmp_path)
    owner = new_actor()
    forged = [
        # What a client could send before: the actor, as root or not, and no signature.
        ((ORG_KEY, owner.org_id), (USER_KEY, "anyone")),
        ((ORG_KEY, owner.org_id), (USER_KEY, "anyone"), (ROLE_KEY, "root")),
        # Signed with another key, signed too long ago, and a signed member claiming root.
        tuple(_signed("guess", owner)),
        tuple(_signed("s3cret", owner, now=time.time() - mesh_credential.MAX_SKEW_SECONDS - 5)),
        (*tuple((k, v) for k, v in _signed("s3cret", owner) if k != ROLE_KEY), (ROLE_KEY, "root")),
    ]
    async with serving(await build_memory(settings), credential="s3cret") as served:
        signed = served.stub(block_pb2_grpc.BlockServiceStub)
        raw = block_pb2_grpc.BlockServiceStub(served.channel)
        with acting_as(owner):
            created = await signed.CreateBlock(
                block_pb2.CreateBlockRequest(block=block_pb2.Block(label="human"))
            )
        statuses = []
        for metadata in forged:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await raw.GetBlock(block_pb2.GetBlockRequest(block_id=created.block.id), metadata=metadata)
            statuses.append((refused.value.code(), from_rpc_error(refused.value).reason))
        # Health stays open to probes that carry no credential at all.
        health = await health_pb2_grpc.HealthStub(served.channel).Check(health_pb2.HealthCheckRequest())

    assert statuses == [(grpc.StatusCode.UNAUTHENTICATED, "INTERNAL_SIGNATURE_INVALID")] * len(forged)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def _signed(key: str, actor: Actor, *, now: float | None = None) -> list[tuple[str, str]]:
    member = Actor(actor.org_id, actor.user_id, "member")
    return [
        (ORG_KEY, member.org_id),
        (USER_KEY, member.user_id),
        (ROLE_KEY, member.role),
        (mesh_credential.SIGNATURE_KEY, mesh_credential.sign(key, member, now=now)),
    ]


async def test_a_request_with_only_half_of_the_actor_is_unauthenticated(memory_service: Served) -> None:
    stub = memory_service.stub(block_pb2_grpc.BlockServiceStub)
    with pytest.raises(Unauthenticated) as anonymous:
        await stub.ListBlocks(block_pb2.ListBlocksRequest(), metadata=((ORG_KEY, "org-1"),))

    assert anonymous.value.reason == "API_KEY_MISSING"


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
                reply = await pinging.unary_unary("/test.Silent/Wait")(
                    b"6", metadata=outgoing_metadata(served.credential)
                )
        finally:
            await pinging.close()

    assert reply == b"done"
    assert channels.KEEPALIVE_MS >= 3 * server.MIN_PING_INTERVAL_MS
