"""Crash safety: SIGKILL the agent service (or the memory service) in the middle of a turn, restart it,
retry with the same idempotency key: the history is consistent, with no orphan and no duplicate.

`MNEMO_KILL_REPEAT=20 pytest tests/e2e/test_agent_crash.py` runs each scenario 20 times in a row.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mnemo_server.supervisor import MODULES, wait_healthy
from tests.fakes.llm_provider import FakeProvider, reply, tool_call
from tests.harness import RunningMesh, mesh_env, running_mesh

REPEAT = int(os.environ.get("MNEMO_KILL_REPEAT", "1"))


@pytest.fixture(scope="module")
async def crash_mesh(
    tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider
) -> AsyncIterator[tuple[RunningMesh, dict[str, str]]]:
    """A mesh of its own, since its processes get killed (the fake has the Batches API, polled often)."""
    env = mesh_env(
        tmp_path_factory.mktemp("crash"),
        provider_url=fake_provider.base_url,
        extra={
            "MNEMO_OPENAI_BATCH": "true",
            "MNEMO_BATCH_POLL_INTERVAL": "0.05",
            "MNEMO_BATCH_COLLECT_WINDOW": "0.3",
        },
    )
    async with running_mesh(env) as mesh:
        yield mesh, env


async def kill(mesh: RunningMesh, name: str) -> None:
    """Kills one service with SIGKILL."""
    child = next(c for c in mesh.children if c.name == name)
    child.process.kill()
    await child.process.wait()


async def start(mesh: RunningMesh, env: dict[str, str], name: str) -> None:
    """Starts a killed service again and waits until the mesh is healthy."""
    child = next(c for c in mesh.children if c.name == name)
    child.process = await asyncio.create_subprocess_exec(sys.executable, "-m", MODULES[name], env=env)
    await wait_healthy(mesh.settings, mesh.http_url, mesh.children, 60)


async def wait_for_requests(llm: FakeProvider, count: int) -> None:
    for _ in range(400):
        if len(llm.requests()) >= count:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"the provider got {len(llm.requests())} requests, expected {count}")


async def send_until_served(client: httpx.AsyncClient, agent_id: str, text: str, key: str) -> httpx.Response:
    """Retries like a client would while a restarted service reconnects (503), with the same key."""
    for _ in range(60):
        response = await client.post(
            f"/v1/agents/{agent_id}/messages",
            json={"messages": [{"content": text}]},
            headers={"Idempotency-Key": key},
        )
        if response.status_code != 503:
            return response
        await asyncio.sleep(0.25)
    raise AssertionError("the mesh did not recover")


async def create(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post(
        "/v1/agents",
        json={"name": "crash", "model": "openai/m", "memory_blocks": [{"label": "human", "value": ""}]},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def start_background_turn(
    client: httpx.AsyncClient, llm: FakeProvider, agent_id: str, fact: str
) -> str:
    """An async turn whose first step (a tool call with its return) is stored and whose second model call
    is slow; returns its run id once that call is out."""
    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": fact}),
        reply("lost", delay=3.0),
    )
    started = await client.post(
        f"/v1/agents/{agent_id}/messages/async", json={"messages": [{"content": "remember"}]}
    )
    assert started.status_code == 202, started.text
    await wait_for_requests(llm, 2)
    return str(started.json()["id"])


async def wait_until_completed(client: httpx.AsyncClient, run_id: str, seconds: float = 15.0) -> None:
    for _ in range(int(seconds / 0.05)):
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        if run["status"] == "completed":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not complete: {run}")


async def check_consistent(client: httpx.AsyncClient, agent_id: str, saved: str, answer: str) -> None:
    history = (await client.get(f"/v1/agents/{agent_id}/messages")).json()
    assert [m["message_type"] for m in history] == [
        "user_message",
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ]
    assert history[-1]["content"] == answer
    assert history[1]["tool_call"]["tool_call_id"] == history[2]["tool_call_id"]
    blocks = (await client.get(f"/v1/agents/{agent_id}/core-memory/blocks")).json()
    assert blocks[0]["value"] == saved  # the tool ran once, not twice
    runs = (await client.get("/v1/runs", params={"agent_id": agent_id})).json()
    assert [r["status"] for r in runs] == ["completed"]


@pytest.mark.parametrize("victim", ["agent", "memory"])
async def test_a_turn_killed_mid_way_is_finished_by_a_retry_with_the_same_key(
    crash_mesh: tuple[RunningMesh, dict[str, str]], llm: FakeProvider, victim: str
) -> None:
    mesh, env = crash_mesh
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=60) as client:
        for attempt in range(REPEAT):
            llm.reset()
            agent = await create(client)
            key = f"crash-{uuid.uuid4()}"
            saved = f"fact {attempt}"
            # Step 0 (a tool call with its return) is stored; step 1's model call is slow, and the
            # victim dies during it.
            llm.script(
                tool_call("core_memory_append", {"label": "human", "content": saved}),
                reply("lost", delay=2.0),
            )
            first = asyncio.create_task(
                client.post(
                    f"/v1/agents/{agent['id']}/messages",
                    json={"messages": [{"content": "remember"}]},
                    headers={"Idempotency-Key": key},
                )
            )
            await wait_for_requests(llm, 2)
            await kill(mesh, victim)
            interrupted = await first
            assert interrupted.status_code == 503, interrupted.text
            await start(mesh, env, victim)
            llm.script(reply("recovered"))

            retried = await send_until_served(client, agent["id"], "remember", key)

            assert retried.status_code == 200, retried.text
            body = retried.json()
            assert [m["message_type"] for m in body["messages"]] == [
                "tool_call_message",
                "tool_return_message",
                "assistant_message",
            ]
            assert body["messages"][-1]["content"] == "recovered"
            await check_consistent(client, agent["id"], saved, "recovered")
            again = await send_until_served(client, agent["id"], "remember", key)
            assert again.json() == body
            await check_consistent(client, agent["id"], saved, "recovered")


async def test_a_background_run_interrupted_by_a_crash_is_finished_after_the_restart(
    crash_mesh: tuple[RunningMesh, dict[str, str]], llm: FakeProvider
) -> None:
    mesh, env = crash_mesh
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=60) as client:
        agent = await create(client)
        run_id = await start_background_turn(client, llm, agent["id"], "async fact")
        await kill(mesh, "agent")
        llm.script(reply("finished after the restart"))
        await start(mesh, env, "agent")

        await wait_until_completed(client, run_id)
        await check_consistent(client, agent["id"], "async fact", "finished after the restart")


async def test_the_sleeptime_rhythm_survives_a_restart_of_the_agent_service(
    crash_mesh: tuple[RunningMesh, dict[str, str]], llm: FakeProvider
) -> None:
    mesh, env = crash_mesh
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=60) as client:
        response = await client.post(
            "/v1/agents",
            json={
                "name": "rhythm",
                "model": "openai/m",
                "sleeptime": {"enabled": True, "frequency": 2, "model": "openai/sleepy"},
            },
        )
        assert response.status_code == 201, response.text
        agent_id = response.json()["id"]
        helper_id = response.json()["sleeptime_agent_id"]
        llm.reset()
        llm.script(reply("first"))
        assert (await send_until_served(client, agent_id, "one", f"rhythm-{uuid.uuid4()}")).status_code == 200

        await kill(mesh, "agent")
        await start(mesh, env, "agent")
        llm.script(reply("second"), reply("memory in order"))
        assert (await send_until_served(client, agent_id, "two", f"rhythm-{uuid.uuid4()}")).status_code == 200

        await wait_for_requests(llm, 3)
        (helper_run,) = (await client.get("/v1/runs", params={"agent_id": helper_id})).json()
        await wait_until_completed(client, helper_run["id"])
        runs = (await client.get("/v1/runs", params={"agent_id": helper_id})).json()

    # One sleep-time turn, after the second turn: the first alone was not due, and the restart kept the count.
    assert [r["model"] for r in llm.requests()] == ["m", "m", "sleepy"]
    assert [r["id"] for r in runs] == [helper_run["id"]]


async def test_a_provider_batch_polls_its_submitted_round_again_after_the_agent_service_is_killed(
    crash_mesh: tuple[RunningMesh, dict[str, str]], llm: FakeProvider
) -> None:
    mesh, env = crash_mesh
    # The provider takes 60 polls (3 s) to answer: long enough to kill and restart in between.
    llm.complete_batches_after(60)
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=30) as client:
        agents = [await create(client), await create(client)]
        created = await client.post(
            "/v1/batches",
            json={
                "mode": "provider",
                "turns": [{"agent_id": a["id"], "messages": [{"content": "hello"}]} for a in agents],
            },
        )
        assert created.status_code == 202, created.text
        batch_id = created.json()["id"]
        for _ in range(200):
            waiting = (await client.get(f"/v1/batches/{batch_id}")).json()["chat_batch_ids"]
            if waiting:
                break
            await asyncio.sleep(0.025)
        assert waiting, "the round was never submitted"

        await kill(mesh, "agent")
        await start(mesh, env, "agent")

        for _ in range(400):
            batch = (await client.get(f"/v1/batches/{batch_id}")).json()
            if batch["status"] == "completed":
                break
            await asyncio.sleep(0.05)
        histories = [(await client.get(f"/v1/agents/{a['id']}/messages")).json() for a in agents]

    assert batch["status"] == "completed"
    assert [r["status"] for r in batch["runs"]] == ["completed", "completed"]
    assert batch["chat_batch_ids"] == []
    # The restarted service polled the round it found on the batch's record instead of submitting again.
    assert len(llm.batches()) == 1
    assert llm.uploads() == [{"purpose": "batch", "lines": 2}]
    for history in histories:
        assert [(m["message_type"], m.get("content")) for m in history] == [
            ("user_message", "hello"),
            ("assistant_message", "ok"),
        ]


async def test_a_background_run_stopped_by_a_graceful_shutdown_is_resumed_not_cancelled(
    crash_mesh: tuple[RunningMesh, dict[str, str]], llm: FakeProvider
) -> None:
    mesh, env = crash_mesh
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=60) as client:
        agent = await create(client)
        run_id = await start_background_turn(client, llm, agent["id"], "deploy fact")
        child = next(c for c in mesh.children if c.name == "agent")
        child.process.send_signal(signal.SIGTERM)  # a rolling deploy, not a crash
        await child.process.wait()
        llm.script(reply("finished after the deploy"))
        await start(mesh, env, "agent")

        await wait_until_completed(client, run_id)
        await check_consistent(client, agent["id"], "deploy fact", "finished after the deploy")


async def test_a_group_run_killed_mid_way_is_finished_by_a_retry_with_the_same_key(
    crash_mesh: tuple[RunningMesh, dict[str, str]], llm: FakeProvider
) -> None:
    mesh, env = crash_mesh
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=60) as client:
        llm.reset()
        first, second = await create(client), await create(client)
        team = (
            await client.post("/v1/groups", json={"name": "crash", "agent_ids": [first["id"], second["id"]]})
        ).json()
        key = f"group-crash-{uuid.uuid4()}"
        # The first member answers; the second member's model call is slow, and the agent service dies in it.
        llm.script(reply("first answer"), reply("lost", delay=2.0))
        interrupted = asyncio.create_task(
            client.post(
                f"/v1/groups/{team['id']}/messages",
                json={"messages": [{"content": "hello"}]},
                headers={"Idempotency-Key": key},
            )
        )
        await wait_for_requests(llm, 2)
        await kill(mesh, "agent")
        assert (await interrupted).status_code == 503
        await start(mesh, env, "agent")
        llm.script(reply("second answer"))

        for _ in range(60):
            retried = await client.post(
                f"/v1/groups/{team['id']}/messages",
                json={"messages": [{"content": "hello"}]},
                headers={"Idempotency-Key": key},
            )
            if retried.status_code != 503:
                break
            await asyncio.sleep(0.25)

        assert retried.status_code == 200, retried.text
        body = retried.json()
        assert [(m["agent_id"], m["content"]) for m in body["messages"]] == [
            (first["id"], "first answer"),
            (second["id"], "second answer"),
        ]
        for member, answer in ((first, "first answer"), (second, "second answer")):
            history = (await client.get(f"/v1/agents/{member['id']}/messages")).json()
            assert [m["message_type"] for m in history][-1] == "assistant_message"
            assert [m["content"] for m in history if m["message_type"] == "assistant_message"] == [answer]
        assert len(llm.requests()) == 3  # the first member's turn was not taken again
        runs = (await client.get(f"/v1/groups/{team['id']}/runs")).json()
        assert [(r["status"], r["run_ids"]) for r in runs] == [("completed", body["run_ids"])]
        again = await client.post(
            f"/v1/groups/{team['id']}/messages",
            json={"messages": [{"content": "hello"}]},
            headers={"Idempotency-Key": key},
        )
        assert again.json() == body
