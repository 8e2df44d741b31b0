"""Generated input for every REST operation: whatever arrives, the answer is a mapped status — invalid input
422, unknown ids 404, ... — never a 500, and the mesh stays healthy.

Schemathesis derives the requests (mostly invalid: wrong types, out-of-range numbers, odd Unicode,
missing fields) from the gateway's own OpenAPI document; examples are derandomized so CI is repeatable.
`MNEMO_FUZZ_EXAMPLES=200 pytest tests/e2e/test_rest_fuzz.py` explores further.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from mnemo_gateway.app import create_app
from mnemo_gateway.settings import GatewaySettings
from tests.fakes.llm_provider import FakeProvider
from tests.harness import RunningMesh, mesh_env, running_mesh

EXAMPLES = int(os.environ.get("MNEMO_FUZZ_EXAMPLES", "10"))


@pytest.fixture(scope="module")
async def fuzz_mesh(
    tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider
) -> AsyncIterator[RunningMesh]:
    """A mesh of its own: the generated requests create all sorts of resources."""
    env = mesh_env(tmp_path_factory.mktemp("fuzz"), provider_url=fake_provider.base_url)
    async with running_mesh(env) as mesh:
        yield mesh


def _operations() -> dict[str, schemathesis.APIOperation]:
    # The document the gateway serves at /openapi.json, built in-process so tests can be collected per operation.
    document = create_app(GatewaySettings(api_key="unused")).openapi()
    loaded = schemathesis.openapi.from_dict(document)
    return {op.label: op for op in (result.ok() for result in loaded.get_all_operations())}


OPERATIONS = _operations()


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_input_gets_a_server_error(label: str, fuzz_mesh: RunningMesh) -> None:
    operation = OPERATIONS[label]
    strategy = operation.as_strategy(GenerationMode.NEGATIVE) | operation.as_strategy(GenerationMode.POSITIVE)

    @given(strategy)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def call(case: schemathesis.Case) -> None:
        response = case.call(base_url=fuzz_mesh.http_url, headers=fuzz_mesh.auth, timeout=60)
        # 503 is a mapped answer too (e.g. an MCP server that cannot be reached), with its reason.
        mapped = response.status_code < 500 or (response.status_code == 503 and "reason" in response.json())
        assert mapped, f"{case.method} {case.path}: {response.status_code} {response.text[:500]}"

    call()


def test_the_mesh_is_healthy_after_the_generated_requests(fuzz_mesh: RunningMesh) -> None:
    health = httpx.get(f"{fuzz_mesh.http_url}/v1/health", timeout=10)

    assert health.status_code == 200
    assert set(health.json()["services"].values()) == {"SERVING"}
