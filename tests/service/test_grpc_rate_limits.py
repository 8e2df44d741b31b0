"""Rate limits on gRPC: calls an external client makes with an API key are counted, mesh hops are not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from mnemo.agent.v1 import identity_pb2_grpc
from mnemo.memory.v1 import block_pb2, block_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.api_keys import KeyResolver
from mnemo_core.channels import mesh_channel
from mnemo_core.quotas import Rate, RateLimits
from mnemo_core.rpc_errors import DETAILS_KEY
from mnemo_core.server import start_server
from mnemo_memory.app import build as build_memory
from mnemo_memory.settings import MemorySettings
from tests.fakes.llm_provider import free_port
from tests.service.conftest import (
    TEST_CREDENTIAL,
    KeyHolder,
    Served,
    clean_environment,
    identity_service,
    make_key_holder,
)


@pytest.fixture
async def identity(tmp_path: Path) -> AsyncIterator[Served]:
    async with identity_service(tmp_path / "agent") as served:
        yield served


@pytest.fixture
async def limited_memory(tmp_path: Path, identity: Served) -> AsyncIterator[Served]:
    """A memory service that resolves API keys with the identity service: 3 calls per key, 5 per organization."""
    with clean_environment(tmp_path):
        settings = MemorySettings(home=tmp_path, llm_addr=f"127.0.0.1:{free_port()}")
    app = await build_memory(settings)
    keys = KeyResolver(identity.stub(identity_pb2_grpc.IdentityServiceStub), 5.0)
    running = await start_server(
        app,
        host="127.0.0.1",
        port=0,
        credential=TEST_CREDENTIAL,
        keys=keys,
        rate_limits=RateLimits(Rate(0.01, 3), Rate(0.01, 5)),
    )
    channel = mesh_channel(f"127.0.0.1:{running.port}")
    yield Served(app=app, running=running, channel=channel)
    await channel.close()
    await running.stop(0)
    await app.aclose()


async def _list(memory: Served, holder: KeyHolder) -> None:
    blocks = block_pb2_grpc.BlockServiceStub(memory.channel)
    await blocks.ListBlocks(block_pb2.ListBlocksRequest(), metadata=holder.metadata)


async def test_a_key_over_its_rate_gets_resource_exhausted_with_retry_info(
    limited_memory: Served, identity: Served
) -> None:
    holder = await make_key_holder(identity)
    for _ in range(3):
        await _list(limited_memory, holder)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _list(limited_memory, holder)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = dict(refused.value.trailing_metadata() or ())[DETAILS_KEY]
    status = status_pb2.Status.FromString(details)
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in status.details if d.Is(retry.DESCRIPTOR))
    assert retry.retry_delay.seconds >= 1
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status.details if d.Is(info.DESCRIPTOR))
    assert info.reason == "RATE_LIMITED"
    # The same organization's calls inside the mesh (signed hops, no key) are not counted.
    blocks = limited_memory.stub(block_pb2_grpc.BlockServiceStub)
    with acting_as(Actor(org_id=holder.org_id, user_id=holder.user_id)):
        for _ in range(10):
            await blocks.ListBlocks(block_pb2.ListBlocksRequest())


async def test_the_keys_of_one_organization_share_its_rate(limited_memory: Served, identity: Served) -> None:
    first = await make_key_holder(identity)
    others = [await make_key_holder(identity, first.org_id) for _ in range(3)]
    for holder in (first, first, others[0], others[0], others[1]):
        await _list(limited_memory, holder)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _list(limited_memory, others[2])
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    elsewhere = await make_key_holder(identity)
    await _list(limited_memory, elsewhere)
