"""The README's grpcurl walkthrough, run as written against a real mesh through the one gRPC address."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from tests.e2e.external_clients import ROOT, require_grpc_api_keys, tool
from tests.fakes.llm_provider import FakeProvider, reply, tool_call
from tests.harness import RunningMesh

MARKER = "<!-- walkthrough: grpcurl -->"


def walkthrough() -> str:
    """The shell block that follows the marker in README.md."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(re.escape(MARKER) + r"\n```bash\n(.*?)\n```", readme, re.DOTALL)
    assert found, f"README.md has no bash block after {MARKER}"
    return found.group(1)


async def test_the_readme_grpcurl_walkthrough_runs_against_the_mesh(
    mesh: RunningMesh, llm: FakeProvider
) -> None:
    await require_grpc_api_keys(mesh)
    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": "Name: Ada"}),
        reply("Hello Ada, I will remember."),
    )
    script = walkthrough()
    # Where this mesh listens, instead of the defaults the README shows.
    script = script.replace("ADDR=127.0.0.1:8288; KEY=$(cat ~/.mnemo/api_key)", "")
    assert "ADDR=" not in script
    grpcurl = Path(tool("grpcurl")).parent
    env = {
        "PATH": f"{grpcurl}{os.pathsep}/usr/bin:/bin",
        "ADDR": mesh.grpc_address,
        "KEY": mesh.api_key,
    }
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-uo",
        "pipefail",
        "-c",
        script,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 120)
    output = stdout.decode()

    assert "mnemo.memory.v1.PassageService" in output  # list
    assert "rpc StreamMessage ( .mnemo.agent.v1.StreamMessageRequest ) returns ( stream" in output  # describe
    assert '"status": "SERVING"' in output  # health
    assert '"run_id": "run-' in output  # the stream's first event
    assert '"text": "Hello Ada, I will remember."' in output  # the stored assistant message
    assert '"value": "Name: Ada"' in output  # core memory after the turn
    assert (
        "Ada drinks Earl Grey." in output.split("SearchPassages")[-1]
        or output.count("Ada drinks Earl Grey.") >= 2
    )
    assert '"reason":"AGENT_NOT_FOUND"' in output.replace(" ", "")
    assert process.returncode == 69  # the last command: NOT_FOUND
