"""The three wheels: the server's runs a service from the wheels alone, and the client's works without the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fakes.llm_provider import FakeProvider, free_port, reply
from tests.harness import RunningMesh

ROOT = Path(__file__).resolve().parents[2]
UV = str(Path(sys.executable).parent / "uv")
SERVER_PACKAGES = ("mnemo_core", "mnemo_agent", "mnemo_memory", "mnemo_tools", "mnemo_llm", "mnemo_gateway")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """mnemo-protos, mnemo-client and mnemo-server, built from this tree."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([UV, "build", "--all-packages", "--wheel", "-q", "-o", str(out)], cwd=ROOT, check=True)
    return {
        name: next(out.glob(f"{name.replace('-', '_')}-*.whl"))
        for name in ("mnemo-protos", "mnemo-client", "mnemo-server")
    }


def _venv(tmp_path: Path, wheels: list[Path], *, package: str | None) -> Path:
    """A fresh virtualenv with `wheels` and the locked third-party requirements of `package` (None: all)."""
    requirements = tmp_path / "requirements.txt"
    scope = ["--package", package] if package else []
    options = ["--frozen", "--no-dev", "--no-emit-workspace", "--no-hashes", "-q"]
    subprocess.run(
        [UV, "export", *scope, *options, "-o", str(requirements)],
        cwd=ROOT,
        check=True,
    )
    venv = tmp_path / "venv"
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([UV, "pip", "install", "-q", "--python", python, "-r", str(requirements)], check=True)
    subprocess.run(
        [UV, "pip", "install", "-q", "--python", python, "--no-deps", *map(str, wheels)], check=True
    )
    return venv


def _clean_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], **extra}


def test_the_server_wheel_holds_every_service_and_the_protos_wheel_the_stubs(wheels: dict[str, Path]) -> None:
    server = set(zipfile.ZipFile(wheels["mnemo-server"]).namelist())
    for package in (*SERVER_PACKAGES, "mnemo_server"):
        assert f"{package}/__init__.py" in server
    assert "mnemo_core/revision_template.py.mako" in server
    # The web console ships built: its static files are in the gateway package.
    assert {f"mnemo_gateway/console/{name}" for name in ("index.html", "console.js", "console.css")} <= server
    for service in ("agent", "memory", "tools"):
        assert f"mnemo_{service}/migrations/env.py" in server
        assert any(n.startswith(f"mnemo_{service}/migrations/versions/") for n in server)
    assert not any(n.startswith("mnemo/") for n in server)

    protos = set(zipfile.ZipFile(wheels["mnemo-protos"]).namelist())
    for stub in (
        "agent/v1/agent_pb2.py",
        "memory/v1/block_pb2_grpc.py",
        "llm/v1/llm_pb2.pyi",
        "tools/v1/tool.proto",
    ):
        assert f"mnemo/{stub}" in protos
    # `mnemo` is a namespace shared with the client: neither wheel owns its __init__.
    assert "mnemo/__init__.py" not in protos

    client = set(zipfile.ZipFile(wheels["mnemo-client"]).namelist())
    assert {
        "mnemo/cli/__init__.py",
        "mnemo/cli/sources.py",
        "mnemo/client/__init__.py",
        "mnemo/rest/agents.py",
    } <= client
    assert not any(n.startswith(("mnemo/agent/", "mnemo_")) for n in client if "dist-info" not in n)


def test_a_service_installed_from_the_wheels_alone_serves_health(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    venv = _venv(tmp_path, list(wheels.values()), package=None)
    port = free_port()
    env = _clean_env(MNEMO_HOME=str(tmp_path / "home"), MNEMO_MEMORY_PORT=str(port))
    # Run from a directory without the source tree, so only the installed wheels can be imported.
    server = subprocess.Popen([str(venv / "bin" / "python"), "-m", "mnemo_memory"], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service="mnemo.memory.v1.BlockService"))
                    break
                except grpc.RpcError:
                    assert server.poll() is None, "the service exited"
                    assert time.monotonic() < deadline, "the service never became healthy"
                    time.sleep(0.2)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        assert (tmp_path / "home" / "data" / "memory.db").is_file()
    finally:
        server.terminate()
        server.wait(timeout=30)


CLIENT_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys

    from mnemo.agent.v1 import agent_pb2
    from mnemo.client import Mnemo, NotFound

    url, key = sys.argv[1:3]
    with Mnemo(url, key) as client:
        agent = client.agents.create(
            name="from-the-wheel",
            model="openai/gpt-4o-mini",
            memory_blocks=[{"label": "human", "value": "Name: Ada"}],
        )
        result = client.messages.send(agent.id, "Who am I?")
        try:
            client.agents.get("agent-00000000-0000-0000-0000-000000000000")
            missing = False
        except NotFound:
            missing = True
        print(json.dumps({
            "agent_id": agent.id,
            "reply": result.messages[-1].content,
            "stop_reason": result.stop_reason.stop_reason,
            "human": client.blocks.get(agent.id, "human").value,
            "missing_is_not_found": missing,
            "stub": agent_pb2.GetAgentRequest(agent_id=agent.id).agent_id == agent.id,
            "importable": sorted(
                name for name in sys.argv[3:] if importlib.util.find_spec(name) is not None
            ),
        }))
    """
)


def test_the_client_wheel_runs_a_turn_in_a_virtualenv_without_the_server(
    wheels: dict[str, Path], tmp_path: Path, mesh: RunningMesh, llm: FakeProvider
) -> None:
    venv = _venv(tmp_path, [wheels["mnemo-protos"], wheels["mnemo-client"]], package="mnemo-client")
    python, mnemo = str(venv / "bin" / "python"), str(venv / "bin" / "mnemo")
    (tmp_path / "turn.py").write_text(CLIENT_SCRIPT)
    server_side = [*SERVER_PACKAGES, "mnemo_server", "fastapi", "sqlalchemy", "grpc_health", "openai"]
    llm.script(reply("You are Ada."))

    ran = subprocess.run(
        [python, "turn.py", mesh.http_url, mesh.api_key, *server_side],
        env=_clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )

    seen = json.loads(ran.stdout)
    assert seen["reply"] == "You are Ada."
    assert seen["stop_reason"] == "end_turn"
    assert seen["human"] == "Name: Ada"
    assert seen["missing_is_not_found"] is True
    assert seen["stub"] is True
    assert seen["importable"] == []

    listed = subprocess.run(
        [mnemo, "agents", "list", "--url", mesh.http_url, "--api-key", mesh.api_key],
        env=_clean_env(COLUMNS="200"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert seen["agent_id"] in listed.stdout
    assert "from-the-wheel" in listed.stdout

    no_server = subprocess.run(
        [mnemo, "server"], env=_clean_env(), cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert no_server.returncode == 1
    assert "pip install mnemo-server" in no_server.stderr
