"""Memory over REST through the whole mesh: blocks, templates, core memory, archival memory, sources, jobs."""

from __future__ import annotations

import time
from typing import Any

import grpc
import httpx
import pytest

from mnemo.memory.v1 import passage_pb2, passage_pb2_grpc
from tests.harness import RunningMesh

UNKNOWN_AGENT = "agent-00000000-0000-0000-0000-000000000000"


def create_agent(api: httpx.Client, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "rest-memory",
        "model": "openai/gpt-4o-mini",
        "memory_blocks": [{"label": "human", "value": "", "limit": 50}],
    }
    body.update(overrides)
    response = api.post("/v1/agents", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def wait_for_job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed"):
            return dict(job)
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_blocks_crud_list_by_label_and_templates(api: httpx.Client) -> None:
    created = api.post("/v1/blocks", json={"label": "project-x", "value": "Deadline in May.", "limit": 40})
    assert created.status_code == 201, created.text
    block = created.json()
    assert api.get(f"/v1/blocks/{block['id']}").json()["value"] == "Deadline in May."
    by_label = api.get("/v1/blocks", params={"label": "project-x", "limit": 1000}).json()
    assert block["id"] in [b["id"] for b in by_label]
    assert all(b["label"] == "project-x" for b in by_label)

    patched = api.patch(f"/v1/blocks/{block['id']}", json={"value": "Deadline moved to June."})
    assert patched.status_code == 200
    assert patched.json()["value"] == "Deadline moved to June."
    assert patched.json()["limit"] == 40
    too_long = api.patch(f"/v1/blocks/{block['id']}", json={"value": "x" * 41})
    assert too_long.status_code == 422
    assert too_long.json()["reason"] == "BLOCK_LIMIT_EXCEEDED"
    assert too_long.json()["metadata"] == {"label": "project-x", "length": "41", "limit": "40"}
    assert api.get(f"/v1/blocks/{block['id']}").json()["value"] == "Deadline moved to June."

    templates = {t["template_name"]: t for t in api.get("/v1/blocks/templates").json()}
    assert templates["persona"]["builtin"]
    from_template = api.post("/v1/blocks", json={"from_template": "human"})
    assert from_template.status_code == 201
    assert from_template.json()["label"] == "human"

    unknown_agent = api.post("/v1/blocks", json={"label": "x", "agent_id": UNKNOWN_AGENT})
    assert unknown_agent.status_code == 404
    assert api.get("/v1/blocks", params={"label": "x", "agent_id": UNKNOWN_AGENT}).status_code == 404
    assert api.delete(f"/v1/blocks/{block['id']}").status_code == 204
    assert api.get(f"/v1/blocks/{block['id']}").status_code == 404
    assert api.delete(f"/v1/blocks/{block['id']}").status_code == 404


def test_core_memory_by_label_attach_detach_and_sharing(api: httpx.Client) -> None:
    alice, bob = create_agent(api), create_agent(api)
    shared = api.post("/v1/blocks", json={"label": "team", "value": "Standup at 9."}).json()
    for agent in (alice, bob):
        attached = api.patch(f"/v1/agents/{agent['id']}/core-memory/blocks/attach/{shared['id']}")
        assert attached.status_code == 200, attached.text
    assert set(api.get(f"/v1/blocks/{shared['id']}").json()["agent_ids"]) == {alice["id"], bob["id"]}

    updated = api.patch(f"/v1/agents/{alice['id']}/core-memory/blocks/team", json={"value": "Standup at 10."})
    assert updated.status_code == 200
    assert api.get(f"/v1/agents/{bob['id']}/core-memory/blocks/team").json()["value"] == "Standup at 10."

    clash = api.post("/v1/blocks", json={"label": "team", "value": "other"}).json()
    taken = api.patch(f"/v1/agents/{alice['id']}/core-memory/blocks/attach/{clash['id']}")
    assert taken.status_code == 409
    assert taken.json()["reason"] == "BLOCK_LABEL_TAKEN"

    detached = api.patch(f"/v1/agents/{bob['id']}/core-memory/blocks/detach/{shared['id']}")
    assert detached.json()["agent_ids"] == [alice["id"]]
    assert api.get(f"/v1/agents/{bob['id']}/core-memory/blocks/team").status_code == 404
    assert (
        api.get(f"/v1/agents/{UNKNOWN_AGENT}/core-memory/blocks/team").json()["reason"] == "AGENT_NOT_FOUND"
    )
    assert (
        api.patch(f"/v1/agents/{UNKNOWN_AGENT}/core-memory/blocks/attach/{shared['id']}").status_code == 404
    )


def test_archival_memory_insert_list_search_and_delete(api: httpx.Client) -> None:
    agent = create_agent(api)
    base = f"/v1/agents/{agent['id']}/archival-memory"
    inserted = api.post(base, json={"text": "The spare key is under the blue flowerpot.", "tags": ["home"]})
    assert inserted.status_code == 201, inserted.text
    (passage,) = inserted.json()
    assert passage["embedding_model"] == "local/all-minilm-l6-v2"
    api.post(
        base, json={"text": "The dentist appointment is on Thursday.", "created_at": "2024-01-05T10:00:00Z"}
    )

    listed = api.get(base, params={"limit": 1})
    assert len(listed.json()) == 1
    rest = api.get(base, params={"page_token": listed.headers["X-Next-Page-Token"]}).json()
    assert len(rest) == 1

    found = api.get(
        f"{base}/search", params={"query": "where can I find a key to get in?", "top_k": 1}
    ).json()
    assert found["results"][0]["passage"]["id"] == passage["id"]
    assert found["results"][0]["score"]["vector_rank"] == 1
    old = api.get(f"{base}/search", params={"query": "appointment", "end": "2024-02-01T00:00:00Z"}).json()
    assert [r["passage"]["text"] for r in old["results"]] == ["The dentist appointment is on Thursday."]
    tagged = api.get(
        f"{base}/search", params={"query": "appointment", "tags": ["home"], "mode": "keyword"}
    ).json()
    assert tagged["results"] == []

    assert api.delete(f"{base}/{passage['id']}").status_code == 204
    assert api.delete(f"{base}/{passage['id']}").status_code == 404
    other = create_agent(api)
    second = api.get(base).json()[0]
    assert api.delete(f"/v1/agents/{other['id']}/archival-memory/{second['id']}").status_code == 404


def test_archival_bad_input_is_refused_and_stores_nothing(api: httpx.Client) -> None:
    agent = create_agent(api)
    base = f"/v1/agents/{agent['id']}/archival-memory"
    empty = api.post(base, json={"text": ""})
    assert empty.status_code == 422
    assert empty.json()["violations"][0]["field"] == "text"
    assert api.post(base, json={"text": "x" * 100_001}).status_code == 422
    invalid_utf8 = api.post(
        base, content=b'{"text": "caf\xe9"}', headers={"content-type": "application/json"}
    )
    # FastAPI refuses a body that is not UTF-8 before any route runs: 400, "error parsing the body".
    assert invalid_utf8.status_code == 400
    assert "parsing the body" in invalid_utf8.json()["detail"]
    assert api.post(base, json={"text": "ok", "unknown": 1}).status_code == 422
    assert api.get(f"{base}/search", params={"query": ""}).status_code == 422
    assert api.get(f"{base}/search", params={"query": "x", "mode": "psychic"}).status_code == 422
    assert api.get(base).json() == []
    assert api.post(f"/v1/agents/{UNKNOWN_AGENT}/archival-memory", json={"text": "x"}).status_code == 404
    assert (
        api.get(f"/v1/agents/{UNKNOWN_AGENT}/archival-memory/search", params={"query": "x"}).status_code
        == 404
    )
    assert api.get(f"/v1/agents/{UNKNOWN_AGENT}/messages/search", params={"query": "x"}).status_code == 404


def test_source_upload_job_attach_search_and_delete(api: httpx.Client) -> None:
    agent = create_agent(api)
    source = api.post("/v1/sources", json={"name": f"handbook-{agent['id']}"}).json()
    assert source["embedding_model"] == "local/all-minilm-l6-v2"
    text = "# Office handbook\n\nThe office closes at 6 pm on Fridays.\n\nVisitors sign in at reception.\n"
    uploaded = api.post(
        f"/v1/sources/{source['id']}/upload", files={"file": ("handbook.md", text.encode(), "text/markdown")}
    )
    assert uploaded.status_code == 202, uploaded.text
    job = wait_for_job(api, uploaded.json()["job"]["id"])
    assert job["status"] == "completed"
    assert job["progress"] == 1.0
    files = api.get(f"/v1/sources/{source['id']}/files").json()
    assert [f["file_name"] for f in files] == ["handbook.md"]
    assert files[0]["status"] == "completed"
    elsewhere = api.post("/v1/sources", json={"name": f"elsewhere-{agent['id']}"}).json()
    foreign = f"/v1/sources/{elsewhere['id']}/files/{files[0]['id']}"
    assert api.get(foreign).json()["reason"] == "FILE_NOT_FOUND"
    assert api.delete(foreign).status_code == 404
    assert api.get(f"/v1/sources/{source['id']}/files/{files[0]['id']}").json()["id"] == files[0]["id"]

    attach = api.patch(f"/v1/agents/{agent['id']}/sources/attach/{source['id']}")
    assert attach.status_code == 200
    assert [s["id"] for s in api.get(f"/v1/agents/{agent['id']}/sources").json()] == [source["id"]]
    found = api.get(
        f"/v1/agents/{agent['id']}/archival-memory/search", params={"query": "when does the office close?"}
    ).json()
    assert "6 pm" in found["results"][0]["passage"]["text"]
    assert api.get(f"/v1/sources/{source['id']}/passages").json()

    bad = api.post(
        f"/v1/sources/{source['id']}/upload", files={"file": ("bad.txt", b"\xff\xfe\xfa", "text/plain")}
    )
    assert bad.status_code == 422
    assert bad.json()["reason"] == "INVALID_UTF8"
    unsupported = api.post(f"/v1/sources/{source['id']}/upload", files={"file": ("x.exe", b"MZ", "")})
    assert unsupported.status_code == 422
    assert len(api.get(f"/v1/sources/{source['id']}/files").json()) == 1

    assert api.delete(f"/v1/sources/{source['id']}").status_code == 204
    assert api.get(f"/v1/sources/{source['id']}").status_code == 404
    assert api.get(f"/v1/jobs/{job['id']}").status_code == 404
    after = api.get(
        f"/v1/agents/{agent['id']}/archival-memory/search", params={"query": "office close"}
    ).json()
    assert after["results"] == []
    assert (
        api.post("/v1/sources/source-nope/upload", files={"file": ("a.txt", b"a", "text/plain")}).status_code
        == 404
    )


async def test_archival_memory_of_another_org_is_not_found_over_grpc(mesh: RunningMesh) -> None:
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=30) as api:
        agent = (
            await api.post("/v1/agents", json={"name": "secretive", "model": "openai/gpt-4o-mini"})
        ).json()
        inserted = await api.post(f"/v1/agents/{agent['id']}/archival-memory", json={"text": "Secret plan."})
    (passage,) = inserted.json()
    async with grpc.aio.insecure_channel(mesh.address("memory")) as channel:
        stub = passage_pb2_grpc.PassageServiceStub(channel)
        foreign = mesh.hop("org-someone-else", "u")
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.GetPassage(passage_pb2.GetPassageRequest(passage_id=passage["id"]), metadata=foreign)
        assert denied.value.code() == grpc.StatusCode.NOT_FOUND
        searched = await stub.SearchPassages(
            passage_pb2.SearchPassagesRequest(agent_id=agent["id"], query="secret plan"), metadata=foreign
        )
        assert list(searched.matches) == []
