"""The memory service wired to a real llm-gateway (local embeddings), both in-process on loopback.

Imported by the archival, recall and sources test modules; each gets its own memory database.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mnemo.memory.v1 import block_pb2_grpc, message_pb2_grpc, passage_pb2_grpc, source_pb2_grpc
from mnemo_memory.app import MemoryApp
from mnemo_memory.app import build as build_memory
from mnemo_memory.settings import MemorySettings
from tests.service.conftest import DEFAULT_BLOCK_LIMIT, Served, clean_environment, serving


@contextlib.asynccontextmanager
async def memory_with_llm(home: Path, llm_address: str) -> AsyncIterator[Served]:
    """A memory service on its own SQLite file under `home`, embedding through the llm-gateway at `llm_address`."""
    with clean_environment(home):
        settings = MemorySettings(home=home, default_block_limit=DEFAULT_BLOCK_LIMIT, llm_addr=llm_address)
    app = await build_memory(settings)
    async with serving(app) as served:
        yield served


@pytest.fixture(scope="session")
async def embedded_memory(
    tmp_path_factory: pytest.TempPathFactory, llm_service: Served
) -> AsyncIterator[Served]:
    async with memory_with_llm(tmp_path_factory.mktemp("memory-embed"), llm_service.address) as served:
        yield served


def memory_app(served: Served) -> MemoryApp:
    assert isinstance(served.app, MemoryApp)
    return served.app


@pytest.fixture
def passages(embedded_memory: Served) -> passage_pb2_grpc.PassageServiceAsyncStub:
    return passage_pb2_grpc.PassageServiceStub(embedded_memory.channel)


@pytest.fixture
def sources(embedded_memory: Served) -> source_pb2_grpc.SourceServiceAsyncStub:
    return source_pb2_grpc.SourceServiceStub(embedded_memory.channel)


@pytest.fixture
def recall_messages(embedded_memory: Served) -> message_pb2_grpc.MessageServiceAsyncStub:
    return message_pb2_grpc.MessageServiceStub(embedded_memory.channel)


@pytest.fixture
def embedded_blocks(embedded_memory: Served) -> block_pb2_grpc.BlockServiceAsyncStub:
    return block_pb2_grpc.BlockServiceStub(embedded_memory.channel)
