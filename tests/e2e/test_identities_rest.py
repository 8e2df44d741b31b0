"""Identities (the end users of an application) over REST through the whole mesh: known by the application's
id, attached to agents, with blocks every one of their agents shares, and kept within their organization."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from mnemo.client import Mnemo
from tests.e2e.test_block_history_rest import other_tenant
from tests.e2e.test_turn import blocks_by_label, create_agent, send
from tests.fakes.llm_provider import FakeProvider, reply, tool_call
from tests.harness import RunningMesh


def new_identity(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"identifier_key": f"customer-{uuid.uuid4()}", "name": "Ada", **fields}
    response = api.post("/v1/identities", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_identities_are_created_found_by_their_external_id_updated_and_deleted(api: httpx.Client) -> None:
    identity = new_identity(api, identity_type="user", properties={"plan": "pro"})
    key = identity["identifier_key"]

    taken = api.post("/v1/identities", json={"identifier_key": key})
    found = api.get("/v1/identities", params={"identifier_key": key}).json()
    updated = api.patch(
        f"/v1/identities/{identity['id']}", json={"name": "Ada L.", "properties": {"plan": "team"}}
    )

    assert (taken.status_code, taken.json()["reason"]) == (409, "IDENTITY_KEY_TAKEN")
    assert [i["id"] for i in found] == [identity["id"]]
    assert (identity["identity_type"], identity["properties"]) == ("user", {"plan": "pro"})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["name"], updated.json()["properties"]) == ("Ada L.", {"plan": "team"})
    assert api.delete(f"/v1/identities/{identity['id']}").status_code == 204
    assert api.get(f"/v1/identities/{identity['id']}").json()["reason"] == "IDENTITY_NOT_FOUND"
    assert api.post("/v1/identities", json={"identifier_key": ""}).status_code == 422


def test_an_identitys_block_is_shared_by_all_its_agents_and_what_one_learns_the_others_see(
    api: httpx.Client, llm: FakeProvider
) -> None:
    support, sales = create_agent(api, name="support"), create_agent(api, name="sales")
    other = create_agent(api, name="unrelated")
    prefs = api.post("/v1/blocks", json={"label": "customer", "value": "", "limit": 200}).json()
    identity = new_identity(api, agent_ids=[support["id"]], block_ids=[prefs["id"]])
    attached = api.patch(f"/v1/identities/{identity['id']}/agents/attach/{sales['id']}")
    assert attached.status_code == 200, attached.text
    assert attached.json()["agent_ids"] == [support["id"], sales["id"]]

    llm.script(
        tool_call("core_memory_append", {"label": "customer", "content": "Prefers email."}), reply("Noted.")
    )
    send(api, support["id"], "Please contact me by email.")

    assert blocks_by_label(api, sales["id"])["customer"]["value"] == "Prefers email."
    assert "customer" not in blocks_by_label(api, other["id"])
    by_identity = api.get("/v1/agents", params={"identity_id": identity["id"]}).json()
    assert {a["id"] for a in by_identity} == {support["id"], sales["id"]}
    listed = api.get(f"/v1/identities/{identity['id']}/agents").json()
    assert {a["id"] for a in listed} == {support["id"], sales["id"]}
    assert [i["id"] for i in api.get("/v1/identities", params={"agent_id": sales["id"]}).json()] == [
        identity["id"]
    ]

    detached = api.patch(f"/v1/identities/{identity['id']}/agents/detach/{sales['id']}")
    assert detached.json()["agent_ids"] == [support["id"]]
    assert "customer" not in blocks_by_label(api, sales["id"])
    assert api.delete(f"/v1/identities/{identity['id']}").status_code == 204
    assert "customer" not in blocks_by_label(api, support["id"])
    assert api.get(f"/v1/blocks/{prefs['id']}").status_code == 200


def test_a_block_whose_label_an_agent_already_has_is_refused_and_nothing_changes(api: httpx.Client) -> None:
    first, second = create_agent(api), create_agent(api)
    identity = new_identity(api, agent_ids=[first["id"], second["id"]])
    clash = api.post(
        "/v1/blocks", json={"label": "human", "value": "x"}
    ).json()  # every test agent has "human"
    fine = api.post("/v1/blocks", json={"label": "account", "value": "gold"}).json()

    refused = api.patch(f"/v1/identities/{identity['id']}/blocks/attach/{clash['id']}")
    given = api.patch(f"/v1/identities/{identity['id']}/blocks/attach/{fine['id']}")

    assert (refused.status_code, refused.json()["reason"]) == (409, "BLOCK_LABEL_TAKEN")
    assert api.get(f"/v1/blocks/{clash['id']}").json()["agent_ids"] == []
    assert given.json()["block_ids"] == [fine["id"]]
    assert set(api.get(f"/v1/blocks/{fine['id']}").json()["agent_ids"]) == {first["id"], second["id"]}
    taken_back = api.patch(f"/v1/identities/{identity['id']}/blocks/detach/{fine['id']}")
    assert taken_back.json()["block_ids"] == []
    assert api.get(f"/v1/blocks/{fine['id']}").json()["agent_ids"] == []


def test_identities_are_their_organizations_own(api: httpx.Client, mesh: RunningMesh) -> None:
    identity = new_identity(api)
    agent = create_agent(api)
    with other_tenant(api, mesh, "identities-stranger") as stranger:
        assert stranger.get(f"/v1/identities/{identity['id']}").status_code == 404
        assert identity["id"] not in [i["id"] for i in stranger.get("/v1/identities").json()]
        own = stranger.post("/v1/identities", json={"identifier_key": identity["identifier_key"]})
        assert own.status_code == 201  # the same external id in another organization is another end user
        attach = stranger.patch(f"/v1/identities/{own.json()['id']}/agents/attach/{agent['id']}")
        assert (attach.status_code, attach.json()["reason"]) == (404, "AGENT_NOT_FOUND")


def test_the_python_client_manages_identities(mesh: RunningMesh, api: httpx.Client) -> None:
    agent = create_agent(api)
    with Mnemo(mesh.http_url, api_key=mesh.api_key) as client:
        identity = client.identities.create(f"client-{uuid.uuid4()}", name="Grace", identity_type="org")
        client.identities.attach_agent(identity.id, agent["id"])
        agents = client.identities.agents(identity.id)
        by_agent = client.agents.list(identity_id=identity.id)
        renamed = client.identities.update(identity.id, name="Grace H.")
        found = client.identities.list(identifier_key=identity.identifier_key)
        client.identities.delete(identity.id)

    assert [a.id for a in agents] == [a.id for a in by_agent] == [agent["id"]]
    assert (renamed.name, renamed.identity_type) == ("Grace H.", "org")
    assert [i.id for i in found] == [identity.id]
