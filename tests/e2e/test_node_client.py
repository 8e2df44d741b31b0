"""examples/node: the Node.js client (TypeScript from the contract, Connect's gRPC transport) against a real
mesh through the one gRPC address, with an API key."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.e2e.external_clients import ROOT, require_grpc_api_keys, tool
from tests.fakes.llm_provider import FakeProvider, reply, tool_call
from tests.harness import RunningMesh

EXAMPLE = ROOT / "examples" / "node"


async def _run(*command: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, cwd=EXAMPLE, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, (
        f"{command} exited {process.returncode}:\n{stdout.decode()}\n{stderr.decode()}"
    )
    return stdout.decode()


async def test_node_client_creates_an_agent_streams_a_turn_reads_memory_and_reads_an_error_reason(
    mesh: RunningMesh, llm: FakeProvider
) -> None:
    await require_grpc_api_keys(mesh)
    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": "Name: Ada"}),
        reply("Nice to meet you, Ada!"),
    )
    await _run(tool("tsc"), "-p", ".")
    env = {"PATH": "/usr/bin:/bin", "MNEMO_API_KEY": mesh.api_key, "MNEMO_GRPC_ADDRESS": mesh.grpc_address}
    output = await _run(tool("node"), "dist/examples/node/src/main.js", env=env)

    summary = json.loads(output.strip().splitlines()[-1])
    assert summary["streamed"] == "Nice to meet you, Ada!"
    assert summary["toolCalls"] == ["core_memory_append"]
    assert summary["core"] == {"persona": "I am a concise, friendly assistant.", "human": "Name: Ada"}
    assert "Earl Grey" in summary["archival"][0]
    assert summary["errorReason"] == "AGENT_NOT_FOUND"
    # The agent is the same one REST sees.
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth) as client:
        agent = (await client.get(f"/v1/agents/{summary['agentId']}")).json()
    assert agent["name"] == "node-example"
