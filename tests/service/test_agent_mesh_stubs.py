"""Stubs from `Peers.stub` behave like stubs on an intercepted channel: signed actor, deadline, errors."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from mnemo.memory.v1 import block_pb2, block_pb2_grpc
from mnemo_core.actor import acting_as
from mnemo_core.channels import mesh_stub
from mnemo_core.errors import DeadlineExceeded, NotFound, Unauthenticated
from mnemo_memory.app import build as build_memory
from mnemo_memory.settings import MemorySettings
from tests.service.conftest import TEST_CREDENTIAL, Served, clean_environment, new_actor, serving


async def test_mesh_stub_forwards_the_actor_and_maps_errors_to_domain_errors(memory_service: Served) -> None:
    async with grpc.aio.insecure_channel(memory_service.address) as channel:
        blocks = mesh_stub(block_pb2_grpc.BlockServiceStub, channel, TEST_CREDENTIAL)
        owner, stranger = new_actor(), new_actor()
        with acting_as(owner):
            created = await blocks.CreateBlock(
                block_pb2.CreateBlockRequest(block=block_pb2.Block(label="human"))
            )
            fetched = await blocks.GetBlock(block_pb2.GetBlockRequest(block_id=created.block.id))
        with acting_as(stranger), pytest.raises(NotFound) as foreign:
            await blocks.GetBlock(block_pb2.GetBlockRequest(block_id=created.block.id))
        with pytest.raises(Unauthenticated) as anonymous:
            await blocks.GetBlock(block_pb2.GetBlockRequest(block_id=created.block.id))

    assert fetched.block.label == "human"
    assert foreign.value.reason == "BLOCK_NOT_FOUND"
    assert anonymous.value.reason == "API_KEY_MISSING"


async def test_mesh_stub_never_outlives_the_callers_deadline(memory_service: Served) -> None:
    async with grpc.aio.insecure_channel(memory_service.address) as channel:
        blocks = mesh_stub(block_pb2_grpc.BlockServiceStub, channel, TEST_CREDENTIAL)
        with acting_as(new_actor(), deadline=time.monotonic() - 1), pytest.raises(DeadlineExceeded):
            await blocks.ListBlocks(block_pb2.ListBlocksRequest())


async def test_mesh_stub_signs_the_actor_with_its_credential(tmp_path: Path) -> None:
    with clean_environment(tmp_path):
        settings = MemorySettings(home=tmp_path)
    async with (
        serving(await build_memory(settings), credential="s3cret") as served,
        grpc.aio.insecure_channel(served.address) as channel,
    ):
        good = mesh_stub(block_pb2_grpc.BlockServiceStub, channel, "s3cret")
        bad = mesh_stub(block_pb2_grpc.BlockServiceStub, channel, "guess")
        with acting_as(new_actor()):
            listed = await good.ListBlocks(block_pb2.ListBlocksRequest())
            with pytest.raises(Unauthenticated) as refused:
                await bad.ListBlocks(block_pb2.ListBlocksRequest())

    assert list(listed.blocks) == []
    assert refused.value.reason == "INTERNAL_SIGNATURE_INVALID"
