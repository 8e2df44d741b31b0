"""The history of blocks' values over REST through the whole mesh: what a turn's tools and the API wrote,
undo, redo, restore, and the limits and tenants they keep."""

from __future__ import annotations

from typing import Any

import httpx

from mnemo.client import Mnemo
from tests.e2e.test_agent_runtime import wait_for
from tests.e2e.test_turn import blocks_by_label, create_agent, send
from tests.fakes.llm_provider import FakeProvider, reply, tool_call
from tests.harness import RunningMesh


def history(api: httpx.Client, block_id: str, **params: Any) -> list[dict[str, Any]]:
    response = api.get(f"/v1/blocks/{block_id}/history", params=params)
    assert response.status_code == 200, response.text
    return list(response.json())


def other_tenant(api: httpx.Client, mesh: RunningMesh, name: str) -> httpx.Client:
    """A client with an admin key of a new organization (made with the root key)."""
    org = api.post("/v1/organizations", json={"name": name}).json()
    user = api.post("/v1/users", json={"name": "bob", "org_id": org["id"]}).json()
    key = api.post(
        "/v1/api-keys", json={"name": "k", "role": "admin", "user_id": user["id"], "org_id": org["id"]}
    ).json()
    return httpx.Client(
        base_url=mesh.http_url, headers={"Authorization": f"Bearer {key['secret']}"}, timeout=30
    )


def test_a_turns_edit_and_the_apis_are_versions_with_their_editor_and_run(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api)
    human = blocks_by_label(api, agent["id"])["human"]
    llm.script(tool_call("core_memory_append", {"label": "human", "content": "Name: Ada"}), reply("Hi Ada."))
    turn = send(api, agent["id"], "I am Ada").json()
    patched = api.patch(f"/v1/blocks/{human['id']}", json={"value": "Name: Ada Lovelace"})
    assert patched.status_code == 200, patched.text

    versions = history(api, human["id"])

    assert [(v["version"], v["operation"], v["editor_type"]) for v in versions] == [
        (3, "update", "user"),
        (2, "append", "agent"),
        (1, "create", "user"),
    ]
    update, append, _ = versions
    assert (append["editor_id"], append["run_id"], append["before"], append["after"]) == (
        agent["id"],
        turn["run_id"],
        "",
        "Name: Ada",
    )
    assert (update["run_id"], update["before"], update["after"]) == (None, "Name: Ada", "Name: Ada Lovelace")
    assert patched.json()["version"] == 3
    page = api.get(f"/v1/blocks/{human['id']}/history", params={"limit": 2})
    assert len(page.json()) == 2
    rest = history(api, human["id"], page_token=page.headers["X-Next-Page-Token"])
    assert [v["version"] for v in rest] == [1]


def test_undo_redo_and_restore_over_rest(api: httpx.Client) -> None:
    block = api.post("/v1/blocks", json={"label": "plan", "value": "step 1", "limit": 30}).json()
    for value in ("step 1\nstep 2", "step 1\nstep 2\nstep 3"):
        assert api.patch(f"/v1/blocks/{block['id']}", json={"value": value}).status_code == 200

    undone = api.post(f"/v1/blocks/{block['id']}/undo")
    redone = api.post(f"/v1/blocks/{block['id']}/redo")
    again = api.post(f"/v1/blocks/{block['id']}/redo")
    restored = api.post(f"/v1/blocks/{block['id']}/restore", json={"version": 1})

    assert undone.status_code == 200, undone.text
    assert undone.json()["value"] == "step 1\nstep 2"
    assert redone.json()["value"] == "step 1\nstep 2\nstep 3"
    assert (again.status_code, again.json()["reason"]) == (400, "NOTHING_TO_REDO")
    assert restored.json()["value"] == "step 1"
    latest = history(api, block["id"])[0]
    assert (latest["operation"], latest["target_version"], latest["state"]) == ("restore", 1, "applied")
    assert api.post(f"/v1/blocks/{block['id']}/restore", json={"version": 0}).status_code == 422
    missing = api.post(f"/v1/blocks/{block['id']}/restore", json={"version": 999})
    assert (missing.status_code, missing.json()["reason"]) == (404, "BLOCK_VERSION_NOT_FOUND")


def test_undo_and_restore_keep_the_limit_and_read_only_blocks(api: httpx.Client) -> None:
    block = api.post("/v1/blocks", json={"label": "rules", "value": "a long first value", "limit": 40}).json()
    api.patch(f"/v1/blocks/{block['id']}", json={"value": "short"})
    api.patch(f"/v1/blocks/{block['id']}", json={"limit": 10})

    too_long = api.post(f"/v1/blocks/{block['id']}/undo")
    api.patch(f"/v1/blocks/{block['id']}", json={"limit": 40, "read_only": True})
    read_only = api.post(f"/v1/blocks/{block['id']}/restore", json={"version": 1})

    assert (too_long.status_code, too_long.json()["reason"]) == (422, "BLOCK_LIMIT_EXCEEDED")
    assert (read_only.status_code, read_only.json()["reason"]) == (403, "BLOCK_READ_ONLY")
    assert api.get(f"/v1/blocks/{block['id']}").json()["value"] == "short"


def test_another_organization_cannot_read_or_undo_a_blocks_history(
    api: httpx.Client, mesh: RunningMesh
) -> None:
    block = api.post("/v1/blocks", json={"label": "secret", "value": "v1"}).json()
    api.patch(f"/v1/blocks/{block['id']}", json={"value": "v2"})

    with other_tenant(api, mesh, "history-stranger") as stranger:
        assert stranger.get(f"/v1/blocks/{block['id']}/history").status_code == 404
        assert stranger.post(f"/v1/blocks/{block['id']}/undo").status_code == 404
        assert stranger.post(f"/v1/blocks/{block['id']}/restore", json={"version": 1}).status_code == 404
    assert api.get(f"/v1/blocks/{block['id']}").json()["value"] == "v2"


def test_the_python_client_reads_history_and_undoes(mesh: RunningMesh, api: httpx.Client) -> None:
    block = api.post("/v1/blocks", json={"label": "client", "value": "one"}).json()
    with Mnemo(mesh.http_url, api_key=mesh.api_key) as client:
        api.patch(f"/v1/blocks/{block['id']}", json={"value": "two"})
        versions = client.blocks.history(block["id"])
        undone = client.blocks.undo(block["id"])
        redone = client.blocks.redo(block["id"])
        restored = client.blocks.restore(block["id"], 1)

    assert [v.after for v in versions] == ["two", "one"]
    assert (undone.value, redone.value, restored.value) == ("one", "two", "one")
    assert restored.version == 5


def test_a_sleep_time_agents_edits_are_versions_of_its_own_with_its_run(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api, sleeptime={"enabled": True, "frequency": 1, "model": "openai/sleepy"})
    helper_id = agent["sleeptime_agent_id"]
    human = blocks_by_label(api, agent["id"])["human"]
    llm.script(
        reply("Tea it is."),
        tool_call("core_memory_append", {"label": "human", "content": "Likes tea"}),
        reply("Saved the tea preference."),
    )

    send(api, agent["id"], "I like tea")

    versions = wait_for(lambda: [v for v in history(api, human["id"]) if v["operation"] == "append"])
    latest = versions[0]
    helper_runs = api.get("/v1/runs", params={"agent_id": helper_id}).json()
    assert (latest["operation"], latest["editor_type"], latest["editor_id"]) == ("append", "agent", helper_id)
    assert latest["run_id"] in [run["id"] for run in helper_runs]
