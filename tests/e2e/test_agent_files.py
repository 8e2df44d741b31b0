"""Agent files through the whole mesh: export -> import gives an agent that behaves the same on its next
turn; older files are upgraded, newer ones refused; groups travel with their agents; a failed import
leaves nothing behind; the CLI exports and imports."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from typer.testing import CliRunner

from mnemo.cli import app as cli
from mnemo.rest import agent_files
from tests.fakes.llm_provider import FakeProvider, reply, tool_call
from tests.harness import RunningMesh

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs/schemas/agent-file.v1.json").read_text())
V0 = (ROOT / "tests/fixtures/agent-file-v0.json").read_text()


def custom_tool(api: httpx.Client) -> dict[str, Any]:
    name = f"fold_{uuid.uuid4().hex[:8]}"
    source = f'def {name}(text: str) -> str:\n    """Fold text.\n\n    Args:\n        text: The text.\n    """\n    return text.lower()\n'
    response = api.post("/v1/tools", json={"source_code": source, "tags": ["folding"]})
    assert response.status_code == 201, response.text
    return dict(response.json())


def make_agent(api: httpx.Client, llm: FakeProvider) -> tuple[dict[str, Any], dict[str, Any]]:
    """An agent with blocks, a custom tool, a rule, a history that was summarized once, and a passage."""
    tool = custom_tool(api)
    created = api.post(
        "/v1/agents",
        json={
            "name": f"traveller-{uuid.uuid4().hex[:6]}",
            "model": "openai/m",
            "system": "You travel well.",
            # One block: blocks created together are listed in an order of their random ids.
            "memory_blocks": [{"label": "human", "value": "Ada.", "limit": 500}],
            "tool_ids": [tool["id"]],
            "tool_rules": [{"tool_name": tool["name"], "type": "max_calls", "max_calls": 2}],
            "tags": ["portable"],
            "llm_options": {"temperature": 0.3},
        },
    )
    assert created.status_code == 201, created.text
    agent = created.json()
    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": "Likes maps."}),
        reply("Noted."),
        reply("Paris is nice."),
        reply("Summary: Ada likes maps and asked about Paris."),
        reply("Berlin too."),
    )
    for text in ("I like maps", "Tell me about Paris"):
        assert (
            api.post(f"/v1/agents/{agent['id']}/messages", json={"messages": [{"content": text}]}).status_code
            == 200
        )
    assert api.post(f"/v1/agents/{agent['id']}/summarize").json()["evicted_count"] > 0
    assert (
        api.post(
            f"/v1/agents/{agent['id']}/messages", json={"messages": [{"content": "And Berlin?"}]}
        ).status_code
        == 200
    )
    api.post(
        f"/v1/agents/{agent['id']}/archival-memory",
        json={"text": "Ada was in Lisbon in 2024.", "tags": ["trips"]},
    )
    return agent, tool


def next_request(api: httpx.Client, llm: FakeProvider, agent_id: str) -> dict[str, Any]:
    """What the model is sent on the agent's next turn (its clock line aside)."""
    llm.reset()
    llm.script(reply("same"))
    assert (
        api.post(f"/v1/agents/{agent_id}/messages", json={"messages": [{"content": "next"}]}).status_code
        == 200
    )
    (request,) = llm.requests()
    request["messages"][0]["content"] = re.sub(r"- current time: .*\n", "", request["messages"][0]["content"])
    return request


def test_an_exported_agent_imported_again_behaves_the_same_on_its_next_turn(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent, tool = make_agent(api, llm)

    exported = api.get(f"/v1/agents/{agent['id']}/export", params={"include_passages": True})

    assert exported.status_code == 200, exported.text
    document = exported.json()
    jsonschema.validate(document, SCHEMA)
    (entry,) = document["agents"]
    assert entry["tool_rules"] == [{"tool_name": tool["name"], "type": "max_calls", "max_calls": 2}]
    (custom,) = [t for t in document["tools"] if t["type"] == "custom"]
    assert (custom["name"], custom["source_code"]) == (tool["name"], tool["source_code"])
    assert {t["type"] for t in document["tools"]} == {"custom", "memory"}
    assert entry["context"]["summary"] is not None
    assert [p["text"] for p in entry["passages"]] == ["Ada was in Lisbon in 2024."]

    imported = api.post("/v1/agents/import", json=document)

    assert imported.status_code == 201, imported.text
    twin = imported.json()
    assert twin["id"] != agent["id"]
    assert twin["tool_ids"] == agent["tool_ids"]  # built-ins by name; same name and source: reused
    assert twin["tool_rules"] == agent["tool_rules"]
    assert [(b["label"], b["value"], b["limit"]) for b in twin["blocks"]] == [
        ("human", "Ada.\nLikes maps.", 500)
    ]
    assert {b["id"] for b in twin["blocks"]}.isdisjoint(b["id"] for b in agent["blocks"])
    original_history = api.get(f"/v1/agents/{agent['id']}/messages", params={"limit": 1000}).json()
    twin_history = api.get(f"/v1/agents/{twin['id']}/messages", params={"limit": 1000}).json()
    assert sorted(m["message_type"] for m in twin_history) == sorted(
        m["message_type"] for m in original_history
    )
    passages = api.get(f"/v1/agents/{twin['id']}/archival-memory").json()
    assert [(p["text"], p["tags"]) for p in passages] == [("Ada was in Lisbon in 2024.", ["trips"])]
    assert next_request(api, llm, twin["id"]) == next_request(api, llm, agent["id"])


def test_an_agent_file_imported_into_another_organization_brings_its_custom_tools(
    api: httpx.Client, other_org: httpx.Client, llm: FakeProvider
) -> None:
    agent, tool = make_agent(api, llm)
    document = api.get(f"/v1/agents/{agent['id']}/export").text

    imported = other_org.post(
        "/v1/agents/import", files={"file": ("agent.json", document, "application/json")}
    )

    assert imported.status_code == 201, imported.text
    (tool_id,) = [t for t in imported.json()["tool_ids"] if not t.startswith("tool-builtin-")]
    assert tool_id != tool["id"]
    assert other_org.get(f"/v1/tools/{tool_id}").json()["source_code"] == tool["source_code"]
    assert api.get(f"/v1/agents/{imported.json()['id']}").status_code == 404


def test_a_file_of_an_earlier_version_is_upgraded_on_import(api: httpx.Client, llm: FakeProvider) -> None:
    imported = api.post("/v1/agents/import", content=V0, headers={"content-type": "application/json"})

    assert imported.status_code == 201, imported.text
    agent = imported.json()
    assert agent["name"] == "librarian"
    assert [(b["label"], b["value"]) for b in agent["blocks"]] == [
        ("persona", "I am a careful librarian."),
        ("human", "Reader: Ada. Likes maps."),
    ]
    assert [(r["tool_name"], r["type"], r["max_calls"]) for r in agent["tool_rules"]] == [
        ("core_memory_append", "max_calls", 2)
    ]
    tools = [api.get(f"/v1/tools/{tool_id}").json()["name"] for tool_id in agent["tool_ids"]]
    assert tools == ["core_memory_append", "shelf_of"]
    history = api.get(f"/v1/agents/{agent['id']}/messages").json()
    assert [m["message_type"] for m in history] == [
        "user_message",
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
        "user_message",
        "assistant_message",
    ]
    request = next_request(api, llm, agent["id"])
    assert [m["role"] for m in request["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
        "user",
    ]


def test_files_of_unknown_versions_and_malformed_files_are_refused_and_change_nothing(
    api: httpx.Client,
) -> None:
    before = len(api.get("/v1/agents", params={"limit": 1000}).json())
    future = api.post("/v1/agents/import", json={"format": "mnemo-agent-file", "version": 99, "agents": []})
    assert future.status_code == 422
    assert future.json()["reason"] == "AGENT_FILE_VERSION_UNSUPPORTED"
    assert "99" in future.json()["detail"]
    broken = api.post("/v1/agents/import", json={"version": 1, "agents": [{"id": "agent-0"}]})
    assert broken.status_code == 422
    assert broken.json()["reason"] == "AGENT_FILE_INVALID"
    assert any(v["field"].startswith("agents.0") for v in broken.json()["violations"])
    dangling = api.post(
        "/v1/agents/import",
        json={
            "version": 1,
            "agents": [{"id": "agent-0", "name": "x", "model": "openai/m", "block_ids": ["nope"]}],
        },
    )
    assert dangling.status_code == 422
    assert dangling.json()["violations"][0]["field"] == "agents[0].block_ids[0]"
    assert (
        api.post(
            "/v1/agents/import", content=b"not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    for not_an_object in ([], "text", 7, None):
        refused = api.post("/v1/agents/import", json=not_an_object)
        assert refused.status_code == 422, refused.text
        assert refused.json()["reason"] == "AGENT_FILE_INVALID"
    assert len(api.get("/v1/agents", params={"limit": 1000}).json()) == before


def test_an_import_that_fails_half_way_leaves_nothing_behind(api: httpx.Client) -> None:
    name = f"half-{uuid.uuid4().hex[:6]}"
    tool_name = f"made_{uuid.uuid4().hex[:6]}"
    source = f'def {tool_name}(x: str) -> str:\n    """Echo.\n\n    Args:\n        x: Text.\n    """\n    return x\n'
    document = {
        "version": 1,
        "agents": [
            {
                "id": "agent-0",
                "name": name,
                "model": "openai/m",
                "block_ids": ["block-0"],
                "tool_ids": ["tool-0"],
                "messages": [{"role": "user", "text": "hi", "run": "r"}],
                "context": {"start": 0},
            },
            {"id": "agent-1", "name": name, "model": "not a model"},
        ],
        "blocks": [{"id": "block-0", "label": "human", "value": "kept?"}],
        "tools": [{"id": "tool-0", "name": tool_name, "type": "custom", "source_code": source}],
    }

    refused = api.post("/v1/agents/import", json=document)

    assert refused.status_code == 422, refused.text
    assert api.get("/v1/agents", params={"name": name}).json() == []
    assert api.get("/v1/tools", params={"name": tool_name}).json() == []
    assert [b for b in api.get("/v1/blocks", params={"label": "human"}).json() if b["value"] == "kept?"] == []


def test_a_group_exports_with_its_agents_and_imports_as_a_new_group(
    api: httpx.Client, llm: FakeProvider
) -> None:
    members = [
        api.post("/v1/agents", json={"name": n, "model": "openai/m"}).json() for n in ("left", "right")
    ]
    team = api.post(
        "/v1/groups",
        json={
            "name": "pair",
            "agent_ids": [m["id"] for m in members],
            "shared_blocks": [{"label": "plan", "value": "v1"}],
        },
    ).json()

    exported = api.get(f"/v1/groups/{team['id']}/export")
    assert exported.status_code == 200, exported.text
    jsonschema.validate(exported.json(), SCHEMA)
    imported = api.post("/v1/groups/import", json=exported.json())

    assert imported.status_code == 201, imported.text
    twin = imported.json()
    assert twin["id"] != team["id"]
    assert twin["manager"]["type"] == "round_robin"
    names = [api.get(f"/v1/agents/{a}").json()["name"] for a in twin["agent_ids"]]
    assert names == ["left", "right"]
    assert set(twin["agent_ids"]).isdisjoint(m["id"] for m in members)
    plans = [
        [b["id"] for b in api.get(f"/v1/agents/{a}/core-memory/blocks").json() if b["label"] == "plan"]
        for a in twin["agent_ids"]
    ]
    assert plans[0] == plans[1] != [team["shared_block_ids"][0]]
    llm.script(reply("l"), reply("r"))
    answer = api.post(f"/v1/groups/{twin['id']}/messages", json={"messages": [{"content": "hi"}]})
    assert [m["content"] for m in answer.json()["messages"]] == ["l", "r"]


def test_the_cli_exports_an_agent_to_a_file_and_imports_it(
    api: httpx.Client, mesh: RunningMesh, tmp_path: Path
) -> None:
    agent = api.post("/v1/agents", json={"name": "cli-agent", "model": "openai/m"}).json()
    path = tmp_path / "agent.json"
    env = {"MNEMO_BASE_URL": mesh.http_url, "MNEMO_API_KEY": mesh.api_key}

    exported = CliRunner().invoke(cli, ["agents", "export", agent["id"], "-o", str(path)], env=env)
    imported = CliRunner().invoke(cli, ["agents", "import", str(path)], env=env)

    assert exported.exit_code == 0, exported.output
    assert agent_files.loads(path.read_text()).agents[0].name == "cli-agent"
    assert imported.exit_code == 0, imported.output
    new_id = imported.stdout.strip()
    assert new_id != agent["id"]
    assert api.get(f"/v1/agents/{new_id}").json()["name"] == "cli-agent"


@pytest.fixture(scope="module")
def other_org(mesh: RunningMesh) -> Any:
    with httpx.Client(base_url=mesh.http_url, headers=mesh.auth, timeout=30) as root:
        org = root.post("/v1/organizations", json={"name": f"files-{uuid.uuid4().hex[:8]}"}).json()
        user = root.post("/v1/users", json={"name": "eve", "org_id": org["id"]}).json()
        key = root.post(
            "/v1/api-keys", json={"name": "k", "role": "admin", "user_id": user["id"], "org_id": org["id"]}
        ).json()
    with httpx.Client(
        base_url=mesh.http_url, headers={"Authorization": f"Bearer {key['secret']}"}, timeout=60
    ) as c:
        yield c
