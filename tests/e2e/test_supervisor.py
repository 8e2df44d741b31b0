"""`mnemo server` starts the whole mesh, reports where it listens, and stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from mnemo_llm.local_model import BUNDLED_MODEL, bundled_weights_installed, llama_available
from tests.harness import mesh_env

# With no provider configured, the banner names the offline model where the `local` extra is installed
# (as `make test` does) and says there is none elsewhere.
NO_PROVIDER_BANNER = (
    f"local/{BUNDLED_MODEL} (offline on this machine"
    if llama_available() and bundled_weights_installed()
    else "none configured"
)


def _start(home: Path, *options: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = mesh_env(home, provider_url=None)
    process = subprocess.Popen(
        [sys.executable, "-m", "mnemo.cli", "server", *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return process, env


def _banner(process: subprocess.Popen[str], timeout: float = 60) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith("Press Ctrl-C"):
            return lines
    pytest.fail(f"no ready banner; got {lines}")


@pytest.mark.parametrize(
    ("stop_signal", "options"),
    [(signal.SIGTERM, ()), (signal.SIGINT, ()), (signal.SIGTERM, ("--no-fork",))],
    ids=["sigterm-forked", "sigint-forked", "sigterm-exec"],
)
def test_server_prints_where_it_listens_and_stops_every_process_on_signal(
    tmp_path: Path, stop_signal: signal.Signals, options: tuple[str, ...]
) -> None:
    process, env = _start(tmp_path, *options)
    try:
        banner = _banner(process)
        children = psutil.Process(process.pid).children()
        http_port = env["MNEMO_HTTP_PORT"]

        text = "\n".join(banner)
        assert f"http://127.0.0.1:{http_port}" in text
        assert env["MNEMO_API_KEY"] in text
        # One gRPC address (the gateway's front), not the services' own ports.
        assert f"gRPC         127.0.0.1:{env['MNEMO_GRPC_PORT']}" in text
        for service in ("agent", "memory", "tools", "llm"):
            assert f"127.0.0.1:{env[f'MNEMO_{service.upper()}_PORT']}" not in text
        assert NO_PROVIDER_BANNER in text
        assert len(children) == 5
        health = httpx.get(f"http://127.0.0.1:{http_port}/v1/health", timeout=5).json()
        assert health["status"] == "ok"

        process.send_signal(stop_signal)

        assert process.wait(timeout=30) == 0
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _listening_on(process: psutil.Process, port: int) -> bool:
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in process.net_connections("tcp")
    )


def test_server_exits_non_zero_when_a_service_dies(tmp_path: Path) -> None:
    process, env = _start(tmp_path)
    try:
        _banner(process)
        memory_port = int(env["MNEMO_MEMORY_PORT"])
        memory = next(c for c in psutil.Process(process.pid).children() if _listening_on(c, memory_port))
        others = [c for c in psutil.Process(process.pid).children() if c.pid != memory.pid]

        os.kill(memory.pid, signal.SIGKILL)

        assert process.wait(timeout=30) == 1
        assert not [c for c in others if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_services_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    process, _ = _start(tmp_path)
    try:
        _banner(process)
        children = psutil.Process(process.pid).children()
        assert len(children) == 5

        process.kill()
        process.wait(timeout=10)

        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
