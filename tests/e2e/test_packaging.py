"""The wheel the container image installs carries everything a service needs, and a service runs from it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fakes.llm_provider import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    uv = Path(sys.executable).parent / "uv"
    subprocess.run([str(uv), "build", "--wheel", "-q", "-o", str(out)], cwd=ROOT, check=True)
    (built,) = out.glob("*.whl")
    return built


def test_wheel_contains_stubs_migrations_and_every_service(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())

    for package in ("mnemo_core", "mnemo_agent", "mnemo_memory", "mnemo_tools", "mnemo_llm", "mnemo_gateway"):
        assert f"{package}/__init__.py" in names
    for stub in ("agent/v1/agent_pb2.py", "memory/v1/block_pb2_grpc.py", "llm/v1/llm_pb2.pyi"):
        assert f"mnemo/{stub}" in names
    assert "mnemo_core/revision_template.py.mako" in names
    for service in ("agent", "memory", "tools"):
        assert f"mnemo_{service}/migrations/env.py" in names
        assert any(n.startswith(f"mnemo_{service}/migrations/versions/") for n in names)


def test_a_service_installed_from_the_wheel_alone_serves_health(wheel: Path, tmp_path: Path) -> None:
    uv = str(Path(sys.executable).parent / "uv")
    requirements = tmp_path / "requirements.txt"
    subprocess.run(
        [
            uv,
            "export",
            "--frozen",
            "--no-dev",
            "--no-emit-project",
            "--no-hashes",
            "-q",
            "-o",
            str(requirements),
        ],
        cwd=ROOT,
        check=True,
    )
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([uv, "pip", "install", "-q", "--python", python, "-r", str(requirements)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--python", python, "--no-deps", str(wheel)], check=True)

    port = free_port()
    env = {"PATH": os.environ["PATH"], "MNEMO_HOME": str(tmp_path / "home"), "MNEMO_MEMORY_PORT": str(port)}
    # Run from a directory without the source tree, so only the installed wheel can be imported.
    server = subprocess.Popen([python, "-m", "mnemo_memory"], env=env, cwd=tmp_path)
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
