"""Rate limits on gRPC: calls an external client makes with an API key are counted, mesh hops are not."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from mnemo.memory.v1 import block_pb2, block_pb2_grpc
from mnemo_core.actor import ORG_KEY, USER_KEY
from mnemo_core.channels import mesh_channel
from mnemo_core.quotas import Rate, RateLimits
from mnemo_core.rpc_errors import DETAILS_KEY
from mnemo_core.server import RunningServer, start_server
from mnemo_memory.app import build as build_memory
from mnemo_memory.settings import MemorySettings
from tests.fakes.llm_provider import free_port
from tests.service.conftest import clean_environment


@pytest.fixture
async def limited_memory(tmp_path: Path) -> AsyncIterator[RunningServer]:
    with clean_environment(tmp_path):
        settings = MemorySettings(home=tmp_path, llm_addr=f"127.0.0.1:{free_port()}")
    app = await build_memory(settings)
    running = await start_server(
        app, host="127.0.0.1", port=0, rate_limits=RateLimits(Rate(0.01, 3), Rate(0.01, 5))
    )
    yield running
    await running.stop(0)
    await app.aclose()


def _metadata(org: str, user: str, *, key: bool) -> tuple[tuple[str, str], ...]:
    actor = ((ORG_KEY, org), (USER_KEY, user))
    return (*actor, ("authorization", f"Bearer mnemo-{user}")) if key else actor


async def test_a_key_over_its_rate_gets_resource_exhausted_with_retry_info(
    limited_memory: RunningServer,
) -> None:
    org = f"org-{uuid.uuid4()}"
    async with mesh_channel(f"127.0.0.1:{limited_memory.port}") as channel:
        blocks = block_pb2_grpc.BlockServiceStub(channel)
        for _ in range(3):
            await blocks.ListBlocks(block_pb2.ListBlocksRequest(), metadata=_metadata(org, "u1", key=True))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await blocks.ListBlocks(block_pb2.ListBlocksRequest(), metadata=_metadata(org, "u1", key=True))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = dict(refused.value.trailing_metadata() or ())[DETAILS_KEY]
        status = status_pb2.Status.FromString(details)
        retry = error_details_pb2.RetryInfo()
        assert any(d.Unpack(retry) for d in status.details if d.Is(retry.DESCRIPTOR))
        assert retry.retry_delay.seconds >= 1
        info = error_details_pb2.ErrorInfo()
        assert any(d.Unpack(info) for d in status.details if d.Is(info.DESCRIPTOR))
        assert info.reason == "RATE_LIMITED"
        # The same organization's calls inside the mesh carry no key and are not counted.
        for _ in range(10):
            await blocks.ListBlocks(block_pb2.ListBlocksRequest(), metadata=_metadata(org, "u1", key=False))


async def test_the_keys_of_one_organization_share_its_rate(limited_memory: RunningServer) -> None:
    org = f"org-{uuid.uuid4()}"
    async with mesh_channel(f"127.0.0.1:{limited_memory.port}") as channel:
        blocks = block_pb2_grpc.BlockServiceStub(channel)
        for user in ("u1", "u1", "u2", "u2", "u3"):
            await blocks.ListBlocks(block_pb2.ListBlocksRequest(), metadata=_metadata(org, user, key=True))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await blocks.ListBlocks(block_pb2.ListBlocksRequest(), metadata=_metadata(org, "u4", key=True))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        other = f"org-{uuid.uuid4()}"
        await blocks.ListBlocks(block_pb2.ListBlocksRequest(), metadata=_metadata(other, "u4", key=True))
