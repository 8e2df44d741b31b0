"""The whole mesh on a real Postgres: every service in its own schema of one database."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.e2e.test_agent_crash import (
    check_consistent,
    create,
    kill,
    start,
    start_background_turn,
    wait_until_completed,
)
from tests.fakes.llm_provider import FakeProvider, reply, tool_call
from tests.harness import RunningMesh, mesh_env, running_mesh
from tests.postgres import embedded_postgres


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with embedded_postgres() as url:
        yield url


@pytest.fixture(scope="module")
def pg_env(
    tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider, postgres_url: str
) -> dict[str, str]:
    return mesh_env(
        tmp_path_factory.mktemp("pg-mesh"),
        provider_url=fake_provider.base_url,
        # Short leases and frequent sweeps, so a dead replica's runs are taken over within the test.
        extra={
            "MNEMO_DATABASE_URL": postgres_url,
            "MNEMO_RUN_LEASE_SECONDS": "3",
            "MNEMO_RUN_SWEEP_SECONDS": "0.3",
        },
    )


@pytest.fixture(scope="module")
async def pg_mesh(pg_env: dict[str, str]) -> AsyncIterator[RunningMesh]:
    async with running_mesh(pg_env) as mesh:
        yield mesh


async def test_each_service_migrated_its_own_schema(pg_mesh: RunningMesh, postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema LIKE :p"
                ),
                {"p": "%"},
            )
            tables = {(schema, name) for schema, name in rows}
    finally:
        await engine.dispose()

    assert ("agent", "agents") in tables
    assert ("memory", "messages") in tables
    assert ("memory", "blocks") in tables
    assert ("tools", "tools") in tables
    assert not any(schema == "public" and name in {"agents", "messages", "tools"} for schema, name in tables)


def test_a_turn_with_a_memory_edit_works_on_postgres(pg_mesh: RunningMesh, llm: FakeProvider) -> None:
    with httpx.Client(base_url=pg_mesh.http_url, headers=pg_mesh.auth, timeout=30) as api:
        agent = api.post(
            "/v1/agents",
            json={
                "name": "pg",
                "model": "openai/gpt-4o-mini",
                "memory_blocks": [{"label": "human", "value": "", "limit": 50}],
            },
        ).json()
        llm.script(
            tool_call("core_memory_append", {"label": "human", "content": "Name: Ada"}),
            reply("Hello Ada"),
        )

        first = api.post(
            f"/v1/agents/{agent['id']}/messages",
            json={"messages": [{"content": "I am Ada"}]},
            headers={"Idempotency-Key": "pg-1"},
        )
        again = api.post(
            f"/v1/agents/{agent['id']}/messages",
            json={"messages": [{"content": "I am Ada"}]},
            headers={"Idempotency-Key": "pg-1"},
        )
        llm.script(
            tool_call("core_memory_append", {"label": "human", "content": "x" * 60}), reply("too long")
        )
        over = api.post(f"/v1/agents/{agent['id']}/messages", json={"messages": [{"content": "remember"}]})

        assert first.status_code == 200, first.text
        assert again.json() == first.json()
        assert over.json()["messages"][1]["status"] == "error"
        blocks = api.get(f"/v1/agents/{agent['id']}/core-memory/blocks").json()
        assert blocks[0]["value"] == "Name: Ada"
        history = api.get(f"/v1/agents/{agent['id']}/messages", params={"order": "desc", "limit": 3}).json()
        assert [m["message_type"] for m in history] == [
            "assistant_message",
            "tool_return_message",
            "tool_call_message",
        ]
        listed = api.get("/v1/agents", params={"name": "pg"}).json()
        assert [a["id"] for a in listed] == [agent["id"]]
        assert api.delete(f"/v1/agents/{agent['id']}").status_code == 204
        assert api.get(f"/v1/agents/{agent['id']}").status_code == 404


def test_archival_memory_and_recall_work_through_agent_turns_on_postgres(
    pg_mesh: RunningMesh, llm: FakeProvider
) -> None:
    with httpx.Client(base_url=pg_mesh.http_url, headers=pg_mesh.auth, timeout=30) as api:
        agent = api.post("/v1/agents", json={"name": "pg-archivist", "model": "openai/gpt-4o-mini"}).json()
        llm.script(
            tool_call(
                "archival_memory_insert",
                {"content": "The user's daughter Maya was born on 14 June 2019 in Porto."},
            ),
            reply("Noted."),
        )
        first = api.post(
            f"/v1/agents/{agent['id']}/messages", json={"messages": [{"content": "Maya: 14 June"}]}
        )
        # Other memories, so that finding the right one means something.
        for text_ in ("The user drinks oat milk in coffee.", "The user's car is a blue hatchback."):
            stored = api.post(f"/v1/agents/{agent['id']}/archival-memory", json={"text": text_})
            assert stored.status_code == 201, stored.text
        llm.script(
            tool_call("archival_memory_search", {"query": "when is my kid's birthday?", "top_k": 1}),
            reply("14 June."),
        )
        second = api.post(f"/v1/agents/{agent['id']}/messages", json={"messages": [{"content": "Birthday?"}]})
        deadline = time.monotonic() + 30
        while True:  # recall embeds messages in the background
            recalled = api.get(
                f"/v1/agents/{agent['id']}/messages/search", params={"query": "birthday", "mode": "vector"}
            ).json()
            if recalled["pending_embeddings"] == 0 and recalled["results"]:
                break
            assert time.monotonic() < deadline, recalled
            time.sleep(0.1)

    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    (saved,) = [m for m in first.json()["messages"] if m["message_type"] == "tool_return_message"]
    (found,) = [m for m in second.json()["messages"] if m["message_type"] == "tool_return_message"]
    assert saved["status"] == "success"
    assert found["status"] == "success"
    assert "14 June 2019" in found["tool_return"]
    assert recalled["embedding_model"] == "local/all-minilm-l6-v2"


async def test_a_background_run_of_a_crashed_replica_is_taken_over_by_the_sweep(
    pg_mesh: RunningMesh, pg_env: dict[str, str], llm: FakeProvider
) -> None:
    async with httpx.AsyncClient(base_url=pg_mesh.http_url, headers=pg_mesh.auth, timeout=60) as client:
        agent = await create(client)
        run_id = await start_background_turn(client, llm, agent["id"], "swept fact")
        await kill(pg_mesh, "agent")  # the run stays `running` until its lease runs out
        llm.script(reply("finished by the sweep"))
        await start(pg_mesh, pg_env, "agent")

        await wait_until_completed(client, run_id)
        await check_consistent(client, agent["id"], "swept fact", "finished by the sweep")
