"""With no LLM provider configured the mesh still starts, and a turn fails clearly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.harness import RunningMesh, mesh_env, running_mesh


@pytest.fixture(scope="module")
async def bare_mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningMesh]:
    async with running_mesh(mesh_env(tmp_path_factory.mktemp("bare"), provider_url=None)) as mesh:
        yield mesh


def test_turn_without_a_provider_is_503_and_stores_nothing(bare_mesh: RunningMesh) -> None:
    with httpx.Client(base_url=bare_mesh.http_url, headers=bare_mesh.auth, timeout=30) as api:
        assert api.get("/v1/health").json()["status"] == "ok"
        agent = api.post("/v1/agents", json={"name": "lonely", "model": "openai/gpt-4o-mini"}).json()

        response = api.post(f"/v1/agents/{agent['id']}/messages", json={"messages": [{"content": "hello"}]})

        assert response.status_code == 503
        assert response.json()["reason"] == "LLM_PROVIDER_NOT_CONFIGURED"
        assert "no LLM provider configured" in response.json()["detail"]
        assert api.get(f"/v1/agents/{agent['id']}/messages").json() == []


def test_rest_requires_the_api_key(bare_mesh: RunningMesh) -> None:
    with httpx.Client(base_url=bare_mesh.http_url, timeout=30) as anonymous:
        assert anonymous.get("/v1/health").status_code == 200
        missing = anonymous.get("/v1/agents")
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = anonymous.get("/v1/agents", headers={"Authorization": "Bearer not-the-key"})
        assert wrong.status_code == 401
        assert wrong.json()["reason"] == "API_KEY_INVALID"
        assert anonymous.get("/openapi.json").status_code == 200
        assert anonymous.get("/docs").status_code == 200


def test_bad_input_gets_clear_errors_and_writes_nothing(bare_mesh: RunningMesh) -> None:
    with httpx.Client(base_url=bare_mesh.http_url, headers=bare_mesh.auth, timeout=30) as api:
        before = api.get("/v1/agents").json()

        malformed = api.post("/v1/agents", content=b"{not json", headers={"content-type": "application/json"})
        assert malformed.status_code == 422
        missing_field = api.post("/v1/agents", json={"model": "openai/gpt-4o-mini"})
        assert missing_field.status_code == 422
        second_block_bad = api.post(
            "/v1/agents",
            json={
                "name": "half",
                "model": "openai/gpt-4o-mini",
                "memory_blocks": [
                    {"label": "persona", "value": "fine"},
                    {"label": "human", "value": "x" * 20, "limit": 10},
                ],
            },
        )
        assert second_block_bad.status_code == 422
        body = second_block_bad.json()
        assert body["reason"] == "BLOCK_LIMIT_EXCEEDED"
        assert body["violations"][0]["field"] == "memory_blocks[1].value"
        duplicate_labels = api.post(
            "/v1/agents",
            json={
                "name": "dup",
                "model": "openai/gpt-4o-mini",
                "memory_blocks": [{"label": "human"}, {"label": "human"}],
            },
        )
        assert duplicate_labels.status_code == 422
        assert api.get("/v1/agents/agent-nope").status_code == 404
        assert api.delete("/v1/agents/agent-nope").status_code == 404
        assert (
            api.post("/v1/agents/agent-nope/messages", json={"messages": [{"content": "x"}]}).status_code
            == 404
        )
        assert api.post("/v1/agents/agent-nope/messages", json={"messages": []}).status_code == 422

        assert api.get("/v1/agents").json() == before


def test_agent_delete_removes_it_and_its_blocks(bare_mesh: RunningMesh) -> None:
    with httpx.Client(base_url=bare_mesh.http_url, headers=bare_mesh.auth, timeout=30) as api:
        agent = api.post(
            "/v1/agents",
            json={
                "name": "doomed",
                "model": "openai/gpt-4o-mini",
                "memory_blocks": [{"label": "human", "value": "x"}],
            },
        ).json()
        assert api.get(f"/v1/agents/{agent['id']}/core-memory/blocks").json()[0]["value"] == "x"

        assert api.delete(f"/v1/agents/{agent['id']}").status_code == 204

        assert api.get(f"/v1/agents/{agent['id']}").status_code == 404
        assert api.get(f"/v1/agents/{agent['id']}/core-memory/blocks").status_code == 404
        assert api.delete(f"/v1/agents/{agent['id']}").status_code == 404
