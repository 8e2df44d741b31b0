"""The memory service wired to a real llm-gateway (local embeddings), both in-process on loopback.

Imported by the archival, recall and sources test modules. Every test using it runs on the service's
embedded SQLite file and on a real Postgres 18 with pgvector (one server for the session). Tests of
passages (archival memory and source files) run on two more passage stores: Weaviate on the wire-level
fake (tests/fakes/weaviate_server.py), and a real Weaviate when MNEMO_WEAVIATE_URL is set (skipped
otherwise; MNEMO_WEAVIATE_GRPC_ADDRESS and MNEMO_WEAVIATE_API_KEY are read with it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mnemo.memory.v1 import message_pb2_grpc, passage_pb2_grpc, source_pb2_grpc
from mnemo_memory.app import MemoryApp
from mnemo_memory.app import build as build_memory
from mnemo_memory.settings import MemorySettings
from tests.fakes.weaviate_server import RunningFake, running_fake
from tests.postgres import embedded_postgres
from tests.service.conftest import DEFAULT_BLOCK_LIMIT, Served, clean_environment, serving


@contextlib.asynccontextmanager
async def memory_with_llm(
    home: Path, llm_address: str, database_url: str = "", **overrides: Any
) -> AsyncIterator[Served]:
    """A memory service embedding through the llm-gateway at `llm_address`, with `overrides` of its settings.

    Its database is `database_url`, or by default its own SQLite file under `home`.
    """
    with clean_environment(home):
        settings = MemorySettings(
            home=home,
            default_block_limit=DEFAULT_BLOCK_LIMIT,
            llm_addr=llm_address,
            database_url=database_url,
            **overrides,
        )
    app = await build_memory(settings)
    async with serving(app) as served:
        yield served


@pytest.fixture(scope="session")
def memory_postgres() -> Iterator[str]:
    """A real Postgres 18 with pgvector, started once for the session."""
    with embedded_postgres() as url:
        yield url


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def memory_database(request: pytest.FixtureRequest) -> str:
    """The memory service's database URL: "" for its embedded SQLite file, or the session's Postgres."""
    if request.param == "sqlite":
        return ""
    url: str = request.getfixturevalue("memory_postgres")
    return url


@pytest.fixture(scope="session")
async def embedded_memory(
    tmp_path_factory: pytest.TempPathFactory, llm_service: Served, memory_database: str
) -> AsyncIterator[Served]:
    home = tmp_path_factory.mktemp("memory-embed")
    async with memory_with_llm(home, llm_service.address, memory_database) as served:
        yield served


@pytest.fixture(scope="session")
def fake_weaviate() -> Iterator[RunningFake]:
    """The wire-level fake Weaviate (REST and gRPC on loopback), started once for the session."""
    yield from running_fake()


def real_weaviate() -> dict[str, Any]:
    """Settings of the real Weaviate named by MNEMO_WEAVIATE_URL (read before tests clear MNEMO_*)."""
    url = os.environ.get("MNEMO_WEAVIATE_URL", "")
    if not url:
        pytest.skip("no real Weaviate: MNEMO_WEAVIATE_URL is not set")
    settings: dict[str, Any] = {"passage_store": "weaviate", "weaviate_url": url}
    if grpc_address := os.environ.get("MNEMO_WEAVIATE_GRPC_ADDRESS"):
        settings["weaviate_grpc_address"] = grpc_address
    if api_key := os.environ.get("MNEMO_WEAVIATE_API_KEY"):
        settings["weaviate_api_key"] = api_key
    return settings


@pytest.fixture(scope="session", params=["sqlite", "postgres", "weaviate-fake", "weaviate-real"])
def passage_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Where passages live: (database URL, settings). Weaviate keeps its rows in the SQLite file."""
    if request.param == "sqlite":
        return "", {}
    if request.param == "postgres":
        url: str = request.getfixturevalue("memory_postgres")
        return url, {}
    if request.param == "weaviate-fake":
        fake: RunningFake = request.getfixturevalue("fake_weaviate")
        return "", {
            "passage_store": "weaviate",
            "weaviate_url": fake.url,
            "weaviate_grpc_address": fake.grpc_address,
        }
    return "", real_weaviate()


@pytest.fixture(scope="session")
async def archival_memory(
    tmp_path_factory: pytest.TempPathFactory, llm_service: Served, passage_backend: tuple[str, dict[str, Any]]
) -> AsyncIterator[Served]:
    """The memory service on one passage store (see `passage_backend`)."""
    home = tmp_path_factory.mktemp("memory-passages")
    database_url, overrides = passage_backend
    async with memory_with_llm(home, llm_service.address, database_url, **overrides) as served:
        yield served


def memory_app(served: Served) -> MemoryApp:
    assert isinstance(served.app, MemoryApp)
    return served.app


@pytest.fixture
def passages(archival_memory: Served) -> passage_pb2_grpc.PassageServiceAsyncStub:
    return archival_memory.stub(passage_pb2_grpc.PassageServiceStub)


@pytest.fixture
def sources(archival_memory: Served) -> source_pb2_grpc.SourceServiceAsyncStub:
    return archival_memory.stub(source_pb2_grpc.SourceServiceStub)


@pytest.fixture
def recall_messages(embedded_memory: Served) -> message_pb2_grpc.MessageServiceAsyncStub:
    return embedded_memory.stub(message_pb2_grpc.MessageServiceStub)
