"""REST rate limits: 429 with Retry-After per key, and wrong keys throttled without reaching identity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mnemo_core.api_keys import KEY_PREFIX
from tests.harness import RunningMesh, mesh_env, running_mesh

KEY_BURST = 5
FAILURE_BURST = 10


@pytest.fixture(scope="module")
async def limited_mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningMesh]:
    env = mesh_env(
        Path(tmp_path_factory.mktemp("limits")),
        provider_url=None,
        extra={
            "MNEMO_RATE_LIMIT_PER_KEY": "0.01",
            "MNEMO_RATE_LIMIT_PER_KEY_BURST": str(KEY_BURST),
            "MNEMO_AUTH_FAILURE_RATE": "0.01",
            "MNEMO_AUTH_FAILURE_BURST": str(FAILURE_BURST),
        },
    )
    async with running_mesh(env) as mesh:
        yield mesh


async def test_a_key_over_its_rate_gets_429_with_retry_after(limited_mesh: RunningMesh) -> None:
    async with httpx.AsyncClient(base_url=limited_mesh.http_url, headers=limited_mesh.auth) as api:
        statuses = [(await api.get("/v1/agents")).status_code for _ in range(KEY_BURST)]
        refused = await api.get("/v1/agents")
    assert statuses == [200] * KEY_BURST
    assert refused.status_code == 429
    assert refused.json()["reason"] == "RATE_LIMITED"
    assert int(refused.headers["Retry-After"]) >= 1


async def test_many_wrong_keys_in_a_row_are_throttled_after_a_few_are_checked(
    limited_mesh: RunningMesh,
) -> None:
    async with httpx.AsyncClient(base_url=limited_mesh.http_url) as api:
        responses = [
            await api.get("/v1/agents", headers={"Authorization": f"Bearer {KEY_PREFIX}wrong-key-{n:04d}"})
            for n in range(500)
        ]
    statuses = [r.status_code for r in responses]
    # Only the burst of failures was checked with the identity service; the rest were refused unasked.
    assert statuses.count(401) <= FAILURE_BURST + 1
    assert statuses.count(429) >= 500 - FAILURE_BURST - 1
    throttled = next(r for r in responses if r.status_code == 429)
    assert throttled.json()["reason"] == "AUTH_THROTTLED"
    assert int(throttled.headers["Retry-After"]) >= 1


async def test_a_wrong_key_repeated_is_refused_from_the_negative_cache(limited_mesh: RunningMesh) -> None:
    # From another client address, so the throttle of the test above does not apply to it.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=limited_mesh.http_url, transport=transport) as api:
        wrong = {"Authorization": f"Bearer {KEY_PREFIX}the-same-wrong-key"}
        statuses = [(await api.get("/v1/agents", headers=wrong)).status_code for _ in range(50)]
    # Checked once; then refused from the negative cache, which does not count as further failures.
    assert statuses == [401] * 50
