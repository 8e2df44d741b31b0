"""The examples in examples/ run as documented against the whole mesh, and say what they did."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import RunningMesh

ROOT = Path(__file__).parents[2]


def _run(mesh: RunningMesh, argv: list[str]) -> str:
    env = {
        **os.environ,
        "MNEMO_BASE_URL": mesh.http_url,
        "MNEMO_API_KEY": mesh.api_key,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "COLUMNS": "200",
    }
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_python_quickstart(mesh: RunningMesh) -> None:
    out = _run(mesh, [sys.executable, "examples/python/quickstart.py"])

    assert "created agent-" in out
    assert "stop: end_turn" in out
    assert "archival: The launch moved to Tuesday, 10:00 UTC." in out
    assert "quickstart agents: 1" in out
    assert "GET agent: HTTP 200, quickstart" in out
    assert "deleted: AGENT_NOT_FOUND" in out or "deleted: 404" in out


def test_python_tools_and_sources(mesh: RunningMesh) -> None:
    out = _run(mesh, [sys.executable, "examples/python/tools_and_sources.py"])

    assert "parameters ['city']" in out
    assert "direct run: Oslo: sunny (station unknown)" in out
    assert "tool environment: ['STATION']" in out
    assert "as the agent: Oslo: sunny (station OSL-1)" in out
    assert "processed: completed" in out
    assert "usage: 1 calls" in out


@pytest.mark.parametrize("script", ["examples/cli/quickstart.sh"])
def test_cli_quickstart(mesh: RunningMesh, script: str) -> None:
    out = _run(mesh, ["bash", script])

    assert "created agent-" in out
    assert "HELLO!" in out
    assert "handbook.md: file-" in out
    assert "imported agent-" in out
    assert "2 agents" in out
