"""The audit log over REST through the whole mesh: writes are recorded with actor, key, action, resource,
request id and outcome (never a secret or a body); admins list them with filters and pages; members
cannot; events queued at a clean shutdown are not lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.harness import RunningMesh, mesh_env, running_mesh

SECRET_NAME = "agent-name-that-must-not-be-logged"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return mesh_env(tmp_path_factory.mktemp("audit"), provider_url=None)


@pytest.fixture(scope="module")
async def audit_mesh(env: dict[str, str]) -> AsyncIterator[RunningMesh]:
    async with running_mesh(env) as mesh:
        yield mesh


def _client(mesh: RunningMesh, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=mesh.http_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def _tenant(mesh: RunningMesh, name: str) -> dict[str, Any]:
    """An organization with an admin key and a member key."""
    async with _client(mesh, mesh.api_key) as root:
        org = (await root.post("/v1/organizations", json={"name": name})).json()
        user = (await root.post("/v1/users", json={"name": "alice", "org_id": org["id"]})).json()
        keys = {}
        for role in ("admin", "member"):
            created = await root.post(
                "/v1/api-keys",
                json={"name": role, "role": role, "user_id": user["id"], "org_id": org["id"]},
            )
            assert created.status_code == 201, created.text
            keys[role] = created.json()
    return {"org_id": org["id"], "user_id": user["id"], **keys}


async def _events(api: httpx.AsyncClient, count: int, **params: Any) -> list[dict[str, Any]]:
    """The listed events, once at least `count` are there (the log is written in the background)."""
    deadline = time.monotonic() + 15
    while True:
        listed = await api.get("/v1/audit-events", params=params)
        assert listed.status_code == 200, listed.text
        events: list[dict[str, Any]] = listed.json()
        if len(events) >= count or time.monotonic() > deadline:
            return events
        await asyncio.sleep(0.2)


async def test_writes_are_recorded_with_who_what_and_how_and_reads_are_not(audit_mesh: RunningMesh) -> None:
    tenant = await _tenant(audit_mesh, "audited")
    admin = tenant["admin"]
    async with _client(audit_mesh, admin["secret"]) as api:
        created = await api.post("/v1/agents", json={"name": SECRET_NAME, "model": "openai/gpt-4o-mini"})
        assert created.status_code in (200, 201), created.text
        missing = await api.delete("/v1/agents/agent-00000000-0000-0000-0000-000000000000")
        assert missing.status_code == 404
        assert (await api.get("/v1/agents")).status_code == 200
        events = await _events(api, 2)

    assert len(events) == 2
    deleted, made = events  # newest first
    agent_id = created.json()["id"]
    assert made["org_id"] == tenant["org_id"]
    assert made["user_id"] == tenant["user_id"]
    assert made["key_id"] == admin["id"]
    assert made["action"] == "POST /v1/agents"
    assert made["resource"] == "/v1/agents"
    assert made["request_id"] == created.headers["X-Request-Id"]
    assert (made["outcome"], made["code"], made["surface"]) == ("OK", created.status_code, "rest")
    assert deleted["action"] == "DELETE /v1/agents/{agent_id}"
    assert deleted["outcome"] == "AGENT_NOT_FOUND"
    assert deleted["code"] == 404
    assert deleted["request_id"] == missing.headers["X-Request-Id"]
    text = str(events)
    assert admin["secret"] not in text
    assert SECRET_NAME not in text
    assert agent_id not in made["resource"]


async def test_admins_filter_and_page_members_and_other_organizations_cannot_read(
    audit_mesh: RunningMesh,
) -> None:
    tenant = await _tenant(audit_mesh, "paged")
    other = await _tenant(audit_mesh, "other")
    async with _client(audit_mesh, tenant["admin"]["secret"]) as api:
        for n in range(3):
            await api.post("/v1/agents", json={"name": f"a{n}", "model": "openai/gpt-4o-mini"})
        await api.delete("/v1/agents/agent-00000000-0000-0000-0000-000000000000")
        assert len(await _events(api, 4)) == 4
        only_ok = (await api.get("/v1/audit-events", params={"outcome": "OK"})).json()
        first = await api.get("/v1/audit-events", params={"limit": 2, "action": "POST /v1/agents"})
        token = first.headers["X-Next-Page-Token"]
        second = await api.get(
            "/v1/audit-events", params={"limit": 2, "action": "POST /v1/agents", "page_token": token}
        )
        foreign = await api.get("/v1/audit-events", params={"org_id": other["org_id"]})
    async with _client(audit_mesh, tenant["member"]["secret"]) as member:
        refused = await member.get("/v1/audit-events")
    async with _client(audit_mesh, other["admin"]["secret"]) as other_admin:
        others = (await other_admin.get("/v1/audit-events")).json()

    assert [e["outcome"] for e in only_ok] == ["OK"] * 3
    pages = [e["resource"] for e in first.json()], [e["resource"] for e in second.json()]
    assert pages == (["/v1/agents"] * 2, ["/v1/agents"])
    assert "X-Next-Page-Token" not in second.headers
    assert refused.status_code == 403
    assert foreign.status_code == 404
    assert others == []


async def test_events_queued_at_a_clean_shutdown_are_recorded(env: dict[str, str]) -> None:
    async with running_mesh(env) as first:
        tenant = await _tenant(first, "shutdown")
        async with _client(first, tenant["admin"]["secret"]) as api:
            made = await api.post("/v1/agents", json={"name": "last", "model": "openai/gpt-4o-mini"})
        # Stopped at once: the event is still queued in the gateway.
    async with running_mesh(env) as second, _client(second, tenant["admin"]["secret"]) as api:
        events = await _events(api, 1)
    assert [e["request_id"] for e in events] == [made.headers["X-Request-Id"]]
