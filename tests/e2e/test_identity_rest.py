"""Organizations, users and API keys over REST through the whole mesh: tenants see only their own agents,
admins manage keys, members do not, revoked keys stop working, and only hashes are stored."""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mnemo.client import Mnemo, PermissionDenied, Unauthenticated
from tests.fakes.llm_provider import FakeProvider
from tests.harness import RunningMesh, mesh_env, running_mesh

UNKNOWN_KEY = "key-00000000-0000-0000-0000-000000000000"
MCP_SERVER = str(Path(__file__).parents[1] / "fakes" / "mcp_server.py")
TOOL_SOURCE = 'def ping() -> str:\n    """Answers pong."""\n    return "pong"\n'


@pytest.fixture(scope="module")
async def identity_mesh(
    tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider
) -> AsyncIterator[RunningMesh]:
    """A mesh of its own: keys are checked on every request (no cache), and its agent service is stopped
    by the last test."""
    env = mesh_env(
        tmp_path_factory.mktemp("identity"),
        provider_url=fake_provider.base_url,
        extra={"MNEMO_API_KEY_CACHE_SECONDS": "0"},
    )
    async with running_mesh(env) as mesh:
        yield mesh


def client(mesh: RunningMesh, key: str) -> httpx.Client:
    return httpx.Client(base_url=mesh.http_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture(scope="module")
def root(identity_mesh: RunningMesh) -> Iterator[httpx.Client]:
    with client(identity_mesh, identity_mesh.api_key) as api:
        yield api


@pytest.fixture(scope="module")
def tenant(identity_mesh: RunningMesh, root: httpx.Client) -> dict[str, Any]:
    """Organization B, made by the root key, with a user and an admin key."""
    org = root.post("/v1/organizations", json={"name": "tenant-b"})
    assert org.status_code == 201, org.text
    org_id = org.json()["id"]
    user = root.post("/v1/users", json={"name": "alice", "org_id": org_id})
    assert user.status_code == 201, user.text
    key = root.post(
        "/v1/api-keys",
        json={"name": "b-admin", "role": "admin", "user_id": user.json()["id"], "org_id": org_id},
    )
    assert key.status_code == 201, key.text
    return {"org_id": org_id, "user_id": user.json()["id"], "admin_key": key.json()}


def create_agent(api: httpx.Client, name: str) -> dict[str, Any]:
    response = api.post("/v1/agents", json={"name": name, "model": "openai/gpt-4o-mini"})
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_organizations_do_not_see_each_others_agents(
    identity_mesh: RunningMesh, root: httpx.Client, tenant: dict[str, Any]
) -> None:
    default_agent = create_agent(root, "default-org-agent")
    with client(identity_mesh, tenant["admin_key"]["secret"]) as b:
        b_agent = create_agent(b, "b-agent")
        assert b.get(f"/v1/agents/{b_agent['id']}").status_code == 200
        assert b.get(f"/v1/agents/{default_agent['id']}").status_code == 404
        b_listed = [a["id"] for a in b.get("/v1/agents", params={"limit": 1000}).json()]
    assert root.get(f"/v1/agents/{b_agent['id']}").status_code == 404
    root_listed = [a["id"] for a in root.get("/v1/agents", params={"limit": 1000}).json()]
    assert b_listed == [b_agent["id"]]
    assert b_agent["id"] not in root_listed
    assert default_agent["id"] in root_listed


def test_an_admin_creates_a_member_key_that_uses_agents_but_cannot_manage_keys(
    identity_mesh: RunningMesh, tenant: dict[str, Any]
) -> None:
    with client(identity_mesh, tenant["admin_key"]["secret"]) as admin:
        created = admin.post("/v1/api-keys", json={"name": "b-member", "role": "member"})
        assert created.status_code == 201, created.text
        member_key = created.json()
        listed = admin.get("/v1/api-keys")
        assert listed.status_code == 200
        assert admin.get("/v1/organizations").status_code == 403
        other_org = admin.get("/v1/users", params={"org_id": "org-default"})
    assert other_org.status_code == 404
    assert (member_key["user_id"], member_key["org_id"]) == (tenant["user_id"], tenant["org_id"])
    assert member_key["secret"].startswith(member_key["display_prefix"])
    assert {k["name"] for k in listed.json()} == {"b-admin", "b-member"}
    assert all("secret" not in k for k in listed.json())
    assert member_key["secret"] not in listed.text

    with client(identity_mesh, member_key["secret"]) as member:
        agent = create_agent(member, "member-agent")
        assert member.get(f"/v1/agents/{agent['id']}").status_code == 200
        denied = [
            member.post("/v1/api-keys", json={"name": "sneaky"}),
            member.get("/v1/api-keys"),
            member.delete(f"/v1/api-keys/{member_key['id']}"),
            member.post("/v1/users", json={"name": "mallory"}),
            member.get("/v1/organizations"),
        ]
    assert [r.status_code for r in denied] == [403] * 5
    assert denied[0].json()["reason"] == "ADMIN_ROLE_REQUIRED"


def test_a_revoked_key_gets_401_at_once_without_a_cache(
    identity_mesh: RunningMesh, root: httpx.Client, tenant: dict[str, Any]
) -> None:
    key = root.post(
        "/v1/api-keys", json={"name": "short-lived", "org_id": tenant["org_id"], "user_id": tenant["user_id"]}
    )
    assert key.status_code == 201, key.text
    with client(identity_mesh, key.json()["secret"]) as holder:
        assert holder.get("/v1/agents").status_code == 200
        revoked = root.delete(f"/v1/api-keys/{key.json()['id']}", params={"org_id": tenant["org_id"]})
        assert revoked.status_code == 204
        refused = holder.get("/v1/agents")
    assert refused.status_code == 401
    assert refused.json()["reason"] == "API_KEY_INVALID"
    assert (
        root.get(f"/v1/api-keys/{key.json()['id']}", params={"org_id": tenant["org_id"]}).status_code == 404
    )
    with client(identity_mesh, "mnemo-never-issued") as stranger:
        assert stranger.get("/v1/agents").status_code == 401


def test_the_agent_database_holds_only_hashes_of_secrets(
    identity_mesh: RunningMesh, root: httpx.Client, tenant: dict[str, Any]
) -> None:
    secret = tenant["admin_key"]["secret"]
    with sqlite3.connect(identity_mesh.home / "data" / "agent.db") as connection:
        hashes = {row[0] for row in connection.execute("SELECT secret_sha256 FROM api_keys")}
        dump = "\n".join(connection.iterdump())
    assert hashlib.sha256(secret.encode()).hexdigest() in hashes
    assert secret not in dump


def test_bad_input_is_422_and_unknown_ids_are_404(root: httpx.Client, tenant: dict[str, Any]) -> None:
    assert root.post("/v1/organizations", json={"name": ""}).status_code == 422
    assert root.post("/v1/organizations", json={"name": "x", "extra": 1}).status_code == 422
    blank = root.post("/v1/users", json={"name": "   ", "org_id": tenant["org_id"]})
    assert blank.status_code == 422
    assert blank.json()["violations"] == [{"field": "user.name", "description": "must not be empty"}]
    assert root.post("/v1/api-keys", json={"name": "k", "role": "root"}).status_code == 422
    assert root.get("/v1/users", params={"limit": 0}).status_code == 422
    assert root.get("/v1/organizations/org-unknown").status_code == 404
    assert root.get("/v1/users/user-unknown").status_code == 404
    assert root.delete(f"/v1/api-keys/{UNKNOWN_KEY}").status_code == 404
    assert root.post("/v1/organizations", json={"name": "tenant-b"}).status_code == 409


def test_an_organization_with_agents_cannot_be_deleted(root: httpx.Client, tenant: dict[str, Any]) -> None:
    refused = root.delete(f"/v1/organizations/{tenant['org_id']}")
    assert refused.status_code == 400
    assert refused.json()["reason"] == "ORGANIZATION_HAS_AGENTS"
    empty = root.post("/v1/organizations", json={"name": "empty"}).json()
    assert root.delete(f"/v1/organizations/{empty['id']}").status_code == 204
    assert root.get(f"/v1/organizations/{empty['id']}").status_code == 404


def test_the_client_manages_organizations_users_and_keys(identity_mesh: RunningMesh) -> None:
    with Mnemo(identity_mesh.http_url, identity_mesh.api_key) as root_client:
        org = root_client.organizations.create("tenant-sdk")
        user = root_client.users.create("bob", org_id=org.id)
        created = root_client.api_keys.create("bob-admin", role="admin", user_id=user.id, org_id=org.id)
        assert root_client.organizations.get(org.id).name == "tenant-sdk"

    with Mnemo(identity_mesh.http_url, created.secret) as bob:
        agent = bob.agents.create(name="bob-agent", model="openai/gpt-4o-mini")
        listed = bob.api_keys.list()
        assert [k.id for k in listed] == [created.id]
        assert "secret" not in listed.items[0].model_dump()
        assert [u.name for u in bob.users.list()] == ["bob"]
        with pytest.raises(PermissionDenied):
            bob.organizations.list()
        member = bob.api_keys.create("bob-member")
        bob.api_keys.revoke(member.id)
        with Mnemo(identity_mesh.http_url, member.secret) as revoked, pytest.raises(Unauthenticated):
            revoked.agents.list()
        bob.agents.delete(agent.id)


def test_an_organization_that_still_owns_resources_in_other_services_cannot_be_deleted(
    identity_mesh: RunningMesh, root: httpx.Client
) -> None:
    org = root.post("/v1/organizations", json={"name": "owner"}).json()
    user = root.post("/v1/users", json={"name": "o", "org_id": org["id"]}).json()
    key = root.post(
        "/v1/api-keys", json={"name": "o", "role": "admin", "user_id": user["id"], "org_id": org["id"]}
    ).json()
    made: dict[str, str] = {}
    with client(identity_mesh, key["secret"]) as api:
        made["blocks"] = (
            "/v1/blocks/" + api.post("/v1/blocks", json={"label": "l", "value": "v"}).json()["id"]
        )
        made["sources"] = "/v1/sources/" + api.post("/v1/sources", json={"name": "s"}).json()["id"]
        made["tools"] = "/v1/tools/" + api.post("/v1/tools", json={"source_code": TOOL_SOURCE}).json()["id"]
        server = api.post(
            "/v1/mcp-servers",
            json={"name": "m", "transport": "stdio", "command": sys.executable, "args": [MCP_SERVER]},
        )
        assert server.status_code == 201, server.text
        made["mcp_servers"] = "/v1/mcp-servers/" + server.json()["id"]

        refusals = []
        for kind in ("blocks", "sources", "tools", "mcp_servers"):
            refused = root.delete(f"/v1/organizations/{org['id']}")
            refusals.append(
                (refused.status_code, refused.json()["reason"], refused.json()["metadata"]["owns"])
            )
            assert api.get(made[kind]).status_code == 200  # nothing of it was removed
            assert api.delete(made[kind]).status_code == 204
    deleted = root.delete(f"/v1/organizations/{org['id']}")

    assert refusals == [
        (400, "ORGANIZATION_NOT_EMPTY", "blocks,sources,tools,mcp_servers"),
        (400, "ORGANIZATION_NOT_EMPTY", "sources,tools,mcp_servers"),
        (400, "ORGANIZATION_NOT_EMPTY", "tools,mcp_servers"),
        (400, "ORGANIZATION_NOT_EMPTY", "mcp_servers"),
    ]
    assert deleted.status_code == 204


async def test_keys_cannot_be_checked_while_the_agent_service_is_down(
    identity_mesh: RunningMesh, tenant: dict[str, Any]
) -> None:
    agent = next(c for c in identity_mesh.children if c.name == "agent")
    agent.process.terminate()
    await agent.process.wait()
    async with httpx.AsyncClient(
        base_url=identity_mesh.http_url,
        headers={"Authorization": f"Bearer {tenant['admin_key']['secret']}"},
        timeout=30,
    ) as b:
        response = await b.get("/v1/tools")
    assert response.status_code == 503
    assert response.json()["reason"] == "SERVICE_UNAVAILABLE", response.text
