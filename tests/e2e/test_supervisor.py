"""`mnemo server` starts the whole mesh, reports where it listens, and stops it cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from mnemo_llm.local_model import BUNDLED_MODEL, bundled_weights_installed, llama_available
from tests.fakes.llm_provider import FakeProvider, reply
from tests.harness import mesh_env

# With no provider configured, the banner names the offline model where the `local` extra is installed
# (as `make test` does) and says there is none elsewhere.
NO_PROVIDER_BANNER = (
    f"local/{BUNDLED_MODEL} (offline on this machine"
    if llama_available() and bundled_weights_installed()
    else "none configured"
)


def _start(
    home: Path,
    *options: str,
    provider_url: str | None = None,
    log: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = env or mesh_env(home, provider_url=provider_url)
    process = subprocess.Popen(
        [sys.executable, "-m", "mnemo.cli", "server", *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if log is None else log.open("w"),
        text=True,
    )
    return process, env


def _auth(env: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {env['MNEMO_API_KEY']}"}


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


def _child_on_port(process: subprocess.Popen[str], port: int) -> psutil.Process:
    return next(c for c in psutil.Process(process.pid).children() if _listening_on(c, port))


def _wait_for_line(log: Path, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in log.read_text().splitlines() if text in line]
        if found:
            return found[-1]
        time.sleep(0.1)
    pytest.fail(f"no {text!r} in the supervisor's log:\n{log.read_text()}")


def _turn_until_served(client: httpx.Client, agent_id: str, key: str) -> httpx.Response:
    """Sends a turn like a client would: again with the same key after a 503 (or a refused connection)."""
    for _ in range(120):
        try:
            response = client.post(
                f"/v1/agents/{agent_id}/messages",
                json={"messages": [{"content": "still there?"}]},
                headers={"Idempotency-Key": key},
            )
        except httpx.TransportError:
            time.sleep(0.25)
            continue
        if response.status_code != 503:
            return response
        assert response.headers["Retry-After"] == "1"
        time.sleep(0.25)
    pytest.fail("the mesh did not come back")


@pytest.mark.parametrize("victim", ["memory", "gateway"])
def test_a_killed_service_is_restarted_with_its_exit_cause_logged_and_turns_succeed_again(
    tmp_path: Path, fake_provider: FakeProvider, victim: str
) -> None:
    fake_provider.reset()
    log = tmp_path / "supervisor.log"
    process, env = _start(tmp_path, provider_url=fake_provider.base_url, log=log)
    try:
        _banner(process)
        port = int(env["MNEMO_HTTP_PORT" if victim == "gateway" else f"MNEMO_{victim.upper()}_PORT"])
        killed = _child_on_port(process, port)
        others = [c for c in psutil.Process(process.pid).children() if c.pid != killed.pid]
        with httpx.Client(
            base_url=f"http://127.0.0.1:{env['MNEMO_HTTP_PORT']}", headers=_auth(env)
        ) as client:
            agent = client.post("/v1/agents", json={"name": "survivor", "model": "openai/m"}).json()

            os.kill(killed.pid, signal.SIGKILL)

            assert f"{victim} (pid {killed.pid}) killed by SIGKILL; restarting it" in _wait_for_line(
                log, f"{victim} (pid {killed.pid})"
            )
            _wait_for_line(log, f"{victim} is back")
            fake_provider.script(reply("still here"))
            response = _turn_until_served(client, agent["id"], f"after-{victim}-restart")

        assert response.status_code == 200, response.text
        assert response.json()["messages"][-1]["content"] == "still here"
        restarted = _child_on_port(process, port)
        assert restarted.pid != killed.pid
        assert all(c.is_running() for c in others)  # the rest of the mesh kept serving
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


def test_a_crash_looping_service_makes_the_supervisor_give_up_with_a_clear_message(tmp_path: Path) -> None:
    log = tmp_path / "supervisor.log"
    process, env = _start(tmp_path, log=log)
    try:
        _banner(process)
        memory_port = int(env["MNEMO_MEMORY_PORT"])
        memory = _child_on_port(process, memory_port)
        children = psutil.Process(process.pid).children()
        time.sleep(1.5)  # up long enough: its first death is not a fast failure
        os.kill(memory.pid, signal.SIGKILL)
        psutil.wait_procs([memory], timeout=10)
        # Another program takes the memory service's port as it dies: each restart fails to listen.
        with _squatting(memory_port):
            with httpx.Client(
                base_url=f"http://127.0.0.1:{env['MNEMO_HTTP_PORT']}", headers=_auth(env), timeout=30
            ) as client:
                during = client.get("/v1/blocks")
            assert during.status_code == 503, during.text
            assert during.headers["Retry-After"] == "1"

            assert process.wait(timeout=120) == 1
        text = log.read_text()
        assert f"memory (pid {memory.pid}) killed by SIGKILL; restarting it in 0.25 s" in text
        assert text.count("memory (pid") == 5, text  # the kill, then four restarts that failed
        assert "exited with code 1; restarting it in 2 s" in text
        assert "memory exited with code 1; it failed 5 times in a row before it was up for 1 s" in text
        assert "a crash loop (see its log above). Giving up: stopping the mesh" in text
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_service_that_dies_while_the_mesh_starts_is_restarted_and_the_mesh_comes_up(
    tmp_path: Path,
) -> None:
    log = tmp_path / "supervisor.log"
    env = mesh_env(tmp_path, provider_url=None)
    memory_port = int(env["MNEMO_MEMORY_PORT"])
    # Another program holds the memory service's port as the mesh starts: its first start fails.
    with _squatting(memory_port):
        process, env = _start(tmp_path, log=log, env=env)
        try:
            line = _wait_for_line(log, "memory (pid")
        except BaseException:
            process.kill()
            raise
    try:
        assert "memory (pid" in line
        assert "exited with code 1; restarting it in 0.25 s" in line
        _banner(process, timeout=90)
        assert "memory is back" in _wait_for_line(log, "memory is back", timeout=10)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{env['MNEMO_HTTP_PORT']}", headers=_auth(env)
        ) as client:
            assert client.get("/v1/blocks").status_code == 200
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


def test_a_service_that_cannot_start_at_all_is_a_crash_loop_and_the_supervisor_gives_up(
    tmp_path: Path,
) -> None:
    log = tmp_path / "supervisor.log"
    env = mesh_env(tmp_path, provider_url=None)
    with _squatting(int(env["MNEMO_MEMORY_PORT"])):
        process, env = _start(tmp_path, log=log, env=env)
        try:
            assert process.wait(timeout=120) == 1
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.stdout is not None
    assert "Press Ctrl-C" not in process.stdout.read()
    text = log.read_text()
    assert text.count("memory (pid") == 4, text  # four restarts, and the fifth failure gives up
    assert "memory exited with code 1; it failed 5 times in a row before it was up for 1 s" in text
    assert "a crash loop (see its log above). Giving up: stopping the mesh" in text


@contextlib.contextmanager
def _squatting(port: int) -> Iterator[None]:
    """Listens on `port` and closes every connection at once (callers see UNAVAILABLE, not a hang)."""
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    squatter.settimeout(0.1)
    stop = threading.Event()

    def refuse() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                squatter.accept()[0].close()

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        squatter.close()


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


def test_sigterm_lets_in_flight_turns_finish_within_the_grace_period(
    tmp_path: Path, fake_provider: FakeProvider
) -> None:
    fake_provider.reset()
    process, env = _start(tmp_path, provider_url=fake_provider.base_url)
    try:
        _banner(process)
        url = f"http://127.0.0.1:{env['MNEMO_HTTP_PORT']}"
        with httpx.Client(base_url=url, headers=_auth(env), timeout=60) as client:
            agent = client.post("/v1/agents", json={"name": "draining", "model": "openai/plain"}).json()
            other = client.post("/v1/agents", json={"name": "streaming", "model": "openai/streamed"}).json()
        fake_provider.answer_model("plain", reply("finished while stopping", delay=2.0))
        fake_provider.answer_model("streamed", reply("streamed while stopping", delay=2.0))
        results: dict[str, httpx.Response | str] = {}

        def plain() -> None:
            with httpx.Client(base_url=url, headers=_auth(env), timeout=60) as client:
                results["plain"] = client.post(
                    f"/v1/agents/{agent['id']}/messages", json={"messages": [{"content": "slow"}]}
                )

        def streamed() -> None:
            with (
                httpx.Client(base_url=url, headers=_auth(env), timeout=60) as client,
                client.stream(
                    "POST",
                    f"/v1/agents/{other['id']}/messages/stream",
                    json={"messages": [{"content": "slow"}]},
                ) as response,
            ):
                results["stream"] = "".join(response.iter_text())

        threads = [threading.Thread(target=plain), threading.Thread(target=streamed)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(fake_provider.requests()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(fake_provider.requests()) == 2

        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=60)

        assert process.wait(timeout=60) == 0
        finished = results["plain"]
        assert isinstance(finished, httpx.Response)
        assert finished.status_code == 200, finished.text
        assert finished.json()["messages"][-1]["content"] == "finished while stopping"
        assert "streamed while stopping" in str(results["stream"])
        assert '"reason"' not in str(results["stream"])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
