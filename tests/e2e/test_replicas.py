"""Two replicas each of agent, memory and tools on one Postgres, as local processes behind one gateway
whose channels name both: concurrent turns keep each agent's history whole and lose no memory edit."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from mnemo_server.supervisor import _grpc_serving
from tests.e2e.test_agent_crash import kill
from tests.fakes.background import free_port
from tests.fakes.llm_provider import FakeProvider, reply, tool_call
from tests.harness import RunningMesh, mesh_env, running_mesh
from tests.postgres import embedded_postgres

REPLICATED = {"agent": "mnemo_agent", "memory": "mnemo_memory", "tools": "mnemo_tools"}


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with embedded_postgres() as url:
        yield url


@pytest.fixture(scope="module")
async def replicated_mesh(
    tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider, postgres_url: str
) -> AsyncIterator[RunningMesh]:
    """The mesh (its first replicas and the gateway), then a second process of each replicated service."""
    base = mesh_env(tmp_path_factory.mktemp("replicas"), provider_url=fake_provider.base_url)
    second = {service: free_port() for service in REPLICATED}
    env = {
        **base,
        "MNEMO_DATABASE_URL": postgres_url,
        **{
            f"MNEMO_{service.upper()}_ADDR": f"127.0.0.1:{base[f'MNEMO_{service.upper()}_PORT']},127.0.0.1:{port}"
            for service, port in second.items()
        },
    }
    async with running_mesh(env) as mesh:  # the first replicas migrate the schemas
        processes = []
        try:
            for service, module in REPLICATED.items():
                replica_env = {**env, f"MNEMO_{service.upper()}_PORT": str(second[service])}
                processes.append(
                    await asyncio.create_subprocess_exec(sys.executable, "-m", module, env=replica_env)
                )
            for port in second.values():
                for _ in range(600):
                    if await _grpc_serving(f"127.0.0.1:{port}", None):
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise TimeoutError(f"replica on port {port} not serving")
            yield mesh
        finally:
            for process in processes:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
                await process.wait()


async def test_concurrent_turns_over_two_replicas_keep_each_history_whole_and_every_edit(
    replicated_mesh: RunningMesh, llm: FakeProvider
) -> None:
    agents, turns = 4, 4
    async with httpx.AsyncClient(
        base_url=replicated_mesh.http_url, headers=replicated_mesh.auth, timeout=120
    ) as api:
        ids = []
        for i in range(agents):
            created = await api.post(
                "/v1/agents",
                json={
                    "name": f"replicated-{i}",
                    "model": "openai/gpt-4o-mini",
                    "memory_blocks": [{"label": "human", "value": "", "limit": 4000}],
                },
            )
            assert created.status_code in (200, 201), created.text
            ids.append(created.json()["id"])
        total = agents * turns
        # Each turn takes whatever comes next: every edit is made by some turn, every turn ends on a reply.
        for n in range(total):
            llm.script(
                tool_call("core_memory_append", {"label": "human", "content": f"fact {n}"}), reply(f"ok {n}")
            )

        async def send(agent_id: str, t: int) -> httpx.Response:
            return await api.post(
                f"/v1/agents/{agent_id}/messages",
                json={"messages": [{"content": f"{agent_id} turn {t}"}]},
                headers={"Idempotency-Key": f"{agent_id}-{t}"},
            )

        sent = await asyncio.gather(*(send(agent_id, t) for t in range(turns) for agent_id in ids))
        assert [r.status_code for r in sent] == [200] * total, [r.text for r in sent if r.status_code != 200]

        facts: list[str] = []
        for agent_id in ids:
            blocks = (await api.get(f"/v1/agents/{agent_id}/core-memory/blocks")).json()
            facts += [line for line in blocks[0]["value"].split("\n") if line]
            history = (await api.get(f"/v1/agents/{agent_id}/messages", params={"limit": 200})).json()
            users = [m["content"] for m in history if m["message_type"] == "user_message"]
            assert Counter(users) == Counter(f"{agent_id} turn {t}" for t in range(turns))
            # A turn's messages are contiguous: one user message, then that turn's steps, never another's.
            runs = [m["run_id"] for m in history if m.get("run_id")]
            contiguous = [run for i, run in enumerate(runs) if i == 0 or runs[i - 1] != run]
            assert len(contiguous) == len(set(contiguous)) == turns

        assert sorted(facts) == sorted(f"fact {n}" for n in range(total))

        # The first replicas go; the gateway's channels carry on over the second ones. A call that was
        # already on its way to a dead replica gets a retryable 503 (with Retry-After): the client sends
        # it again with the same idempotency key, as any client should.
        for service in REPLICATED:
            await kill(replicated_mesh, service)
        llm.script(reply("still here"))
        for _ in range(5):
            after = await send(ids[0], turns)
            if after.status_code != 503:
                break
            assert after.headers["Retry-After"], after.text
            await asyncio.sleep(float(after.headers["Retry-After"]))
        assert after.status_code == 200, after.text
        assert after.json()["messages"][-1]["content"] == "still here"
