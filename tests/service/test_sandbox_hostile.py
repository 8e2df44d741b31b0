"""Hostile tool code over the real tools service: each attack is contained as far as the sandbox's mode
promises (tests/service/sandbox_promises.py: full isolation as root, the documented degraded mode as an
ordinary user), failures are reported as tool errors, and the service stays healthy and keeps serving
other runs meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import textwrap
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mnemo.common.v1 import message_pb2
from mnemo.tools.v1 import tool_pb2, tool_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.errors import FailedPrecondition
from mnemo_tools.app import build as build_tools
from mnemo_tools.settings import ToolsSettings
from tests.service.conftest import Served, clean_environment, serving
from tests.service.sandbox_promises import promised

if TYPE_CHECKING:
    from mnemo.tools.v1.tool_pb2_grpc import ToolServiceAsyncStub as Tools

ERROR = message_pb2.TOOL_RETURN_STATUS_ERROR
SUCCESS = message_pb2.TOOL_RETURN_STATUS_SUCCESS
# Short per-tool timeouts keep the suite fast; the limits under test are the service defaults.
TIMEOUT = 2


async def run_source(
    tools: Tools, name: str, body: str, params: str = "", args: object = None, timeout: float = TIMEOUT
) -> tool_pb2.RunToolResponse:
    code = f'def {name}({params}):\n    """Hostile."""\n' + textwrap.indent(textwrap.dedent(body), "    ")
    created = await tools.CreateTool(
        tool_pb2.CreateToolRequest(tool=tool_pb2.Tool(source_code=code, timeout_seconds=timeout))
    )
    return await tools.RunTool(
        tool_pb2.RunToolRequest(tool_id=created.tool.id, arguments_json=json.dumps(args or {}))
    )


def on_host(path: str) -> bool:
    """Whether a file exists on the host (outside any sandbox)."""
    return os.path.exists(path)


def service_home(served: Served) -> Path:
    """The tools service's MNEMO_HOME (its database is <home>/data/tools.db)."""
    database = served.app.db.url.split("///", 1)[1]  # type: ignore[attr-defined]
    return Path(database).parent.parent


async def ended(pids: list[int], within: float = 10.0) -> bool:
    """Whether every host process in `pids` has ended (gone, or a zombie left to be reaped), polling until
    `within` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        if not any(_alive(pid) for pid in pids):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def healthy(served: Served) -> bool:
    response = await health_pb2_grpc.HealthStub(served.channel).Check(
        health_pb2.HealthCheckRequest(service="")
    )
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


async def test_infinite_loop_is_stopped_at_the_timeout(
    tools: Tools, actor: Actor, tools_service: Served
) -> None:
    with acting_as(actor):
        result = await run_source(tools, "spin", "while True:\n    pass")

    assert result.status == ERROR
    assert result.content == f"Error: the tool did not finish within {TIMEOUT} s and was stopped"
    assert TIMEOUT <= result.duration_seconds < TIMEOUT + 3
    assert await healthy(tools_service)


async def test_fork_bomb_is_held_to_the_process_limit_and_cleaned_up(
    tools: Tools, actor: Actor, tools_service: Served
) -> None:
    body = """
    import os, time
    children = []
    for _ in range(10_000):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)
    return children
    """
    with acting_as(actor):
        result = await run_source(tools, "bomb", body)
        after = await run_source(
            tools, "count", "import os\nreturn len([p for p in os.listdir('/proc') if p.isdigit()])"
        )

    assert result.status == SUCCESS
    children = json.loads(result.content)
    # RLIMIT_NPROC (16) stops the forking long before 10 000.
    assert len(children) < 16
    if promised().own_uid:
        # Counted per run uid, so the run got to fork some.
        assert len(children) > 0
    if promised().private_processes:
        # The children were killed with the run: the next run's private /proc shows only itself.
        assert after.content == "1"
    else:
        # No pid namespace: the run sees every process of the host, and its leftovers are killed by process
        # group when it ends.
        assert int(after.content) > 1
        assert await ended(children)
    assert await healthy(tools_service)


async def test_endless_fork_bomb_is_stopped_at_the_timeout(
    tools: Tools, actor: Actor, tools_service: Served
) -> None:
    body = """
    import os
    while True:
        try:
            os.fork()
        except OSError:
            pass
    """
    with acting_as(actor):
        result = await run_source(tools, "forever", body)

    assert result.status == ERROR
    assert "did not finish within" in result.content
    assert await healthy(tools_service)


async def test_ten_gigabyte_allocation_fails_with_a_memory_error(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        result = await run_source(tools, "hog", "data = bytearray(10 * 1024**3)\nreturn len(data)")

    assert result.status == ERROR
    assert result.content == "Error: MemoryError: the tool exceeded its memory limit of 512 MiB"


async def test_connecting_to_a_server_on_loopback_reaches_it_only_without_a_network_namespace(
    tools: Tools, actor: Actor
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        with acting_as(actor):
            result = await run_source(
                tools,
                "phone_home",
                "import socket\nsocket.create_connection(('127.0.0.1', port), timeout=1).sendall(b'hi')\nreturn 'sent'",
                "port: int",
                {"port": port},
            )
        if promised().network_blocked:
            with pytest.raises(BlockingIOError):
                listener.accept()
        else:
            # Documented: without user namespaces an ordinary user's tools can reach the network.
            connection, _ = listener.accept()
            connection.close()
    finally:
        listener.close()

    if promised().network_blocked:
        assert result.status == ERROR
        assert "Network is unreachable" in result.content
    else:
        assert result.content == "sent"


async def test_writing_outside_the_working_directory_reaches_the_host_only_without_a_private_filesystem(
    tools: Tools, actor: Actor, tools_service: Served, tmp_path: Path
) -> None:
    os.chmod(tmp_path, 0o777)
    # Names of this run only: the host's /tmp is shared with every other test run on the machine.
    unique = uuid.uuid4().hex
    shared = [f"/tmp/mnemo-escaped-{unique}.txt", f"/var/tmp/mnemo-escaped-{unique}.txt"]
    targets = [str(tmp_path / "escaped.txt"), *shared, f"/root/escaped-{unique}.txt"]
    body = """
    import os
    outcomes = {}
    for path in paths:
        try:
            with open(path, "w") as f:
                f.write("escaped")
            outcomes[path] = "written"
        except OSError as exc:
            outcomes[path] = type(exc).__name__
    with open("inside.txt", "w") as f:
        f.write("fine")
    outcomes["cwd"] = os.getcwd()
    return outcomes
    """
    try:
        with acting_as(actor):
            result = await run_source(tools, "scribble", body, "paths: list[str]", {"paths": targets})
        outcomes = json.loads(result.content)
        written = {target for target in targets if on_host(target)}
    finally:
        for path in shared:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    assert outcomes[targets[3]] == "PermissionError"
    if promised().private_filesystem:
        assert outcomes["cwd"] == "/tmp/work"
        # /tmp inside the run is a private, throwaway tmpfs; everything else is read-only or not the run's.
        assert outcomes[str(tmp_path / "escaped.txt")] in ("FileNotFoundError", "PermissionError")
        assert outcomes[shared[1]] in ("PermissionError", "OSError")
        assert written == set()
    else:
        # Documented: the run works in a throwaway directory under $MNEMO_HOME/sandbox/work (removed when
        # it ends) and writes wherever the service's user may.
        workdir = Path(outcomes["cwd"])
        assert workdir.parent == service_home(tools_service) / "sandbox" / "work"
        assert not on_host(str(workdir))
        assert written == set(targets[:3])
        assert all(outcomes[target] == "written" for target in targets[:3])
    assert on_host(str(service_home(tools_service) / "data" / "tools.db"))


async def test_hundred_megabytes_of_output_stop_the_run_and_keep_only_a_prefix(
    tools: Tools, actor: Actor, tools_service: Served
) -> None:
    with acting_as(actor):
        result = await run_source(
            tools, "flood", "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1_000_000)"
        )

    assert result.status == ERROR
    assert result.content == "Error: the tool wrote more than 1048576 bytes of output and was stopped"
    assert result.stdout.startswith("x" * 65536)
    assert "more bytes not kept]" in result.stdout
    assert len(result.stdout) < 70_000
    assert await healthy(tools_service)


async def test_os_exit_is_reported_with_its_exit_code(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        result = await run_source(tools, "quit", "import os\nos._exit(3)")

    assert result.status == ERROR
    assert result.content == "Error: the tool exited with code 3 before returning a result"


async def test_segfault_is_reported_as_a_crash(tools: Tools, actor: Actor, tools_service: Served) -> None:
    with acting_as(actor):
        result = await run_source(tools, "segv", "import ctypes\nctypes.string_at(0)")

    assert result.status == ERROR
    assert result.content == "Error: the tool crashed with a segmentation fault"
    assert await healthy(tools_service)


async def test_a_run_sees_no_service_environment_and_runs_as_its_own_user(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        result = await run_source(
            tools, "whoami", "import os\nreturn {'uid': os.getuid(), 'env': dict(os.environ)}"
        )

    seen = json.loads(result.content)
    assert seen["env"] == {}
    if promised().own_uid:
        assert seen["uid"] != os.getuid()
        assert seen["uid"] > 61000
    else:
        # Documented: without root a run has no uid of its own.
        assert seen["uid"] == os.getuid()


async def test_the_services_private_files_are_out_of_reach_only_for_a_run_with_a_uid_of_its_own(
    tools: Tools, actor: Actor, tools_service: Served
) -> None:
    home = service_home(tools_service)
    secret = home / f"api_key-{uuid.uuid4().hex[:12]}"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("mnemo-root-key")
    paths = [str(secret), str(home / "data" / "tools.db")]
    body = """
    outcomes = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                outcomes[path] = f.read(15).decode("latin-1")
        except OSError as exc:
            outcomes[path] = type(exc).__name__
    return outcomes
    """
    try:
        with acting_as(actor):
            result = await run_source(tools, "peek", body, "paths: list[str]", {"paths": paths})
    finally:
        secret.unlink()

    outcomes = json.loads(result.content)
    if promised().own_uid:
        assert outcomes[str(secret)] in ("FileNotFoundError", "PermissionError")
    else:
        # Documented: the run is the service's user, so it reads the service's secrets and databases.
        assert outcomes == {str(secret): "mnemo-root-key", paths[1]: "SQLite format 3"}


async def test_the_probe_and_the_start_log_state_what_this_mode_isolates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mnemo_tools.app")
    with clean_environment(tmp_path):
        settings = ToolsSettings(home=tmp_path)
    app = await build_tools(settings)
    await app.aclose()

    assert app.sandbox.capabilities == promised().capabilities
    logged = [r.getMessage() for r in caplog.records if r.name == "mnemo_tools.app"]
    assert logged == [w for w in [promised().start_warning] if w]


async def test_required_isolation_refuses_custom_runs_exactly_where_this_mode_cannot_isolate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, actor: Actor
) -> None:
    caplog.set_level(logging.WARNING, logger="mnemo_tools.app")
    with clean_environment(tmp_path), pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNEMO_SANDBOX_REQUIRE_ISOLATION", "true")
        settings = ToolsSettings(home=tmp_path)
    assert settings.sandbox_require_isolation
    refusing = promised().refuses_required_isolation
    missing = [k for k in ("network", "mount") if not promised().capabilities[k]]
    async with serving(await build_tools(settings)) as served:
        tools = served.stub(tool_pb2_grpc.ToolServiceStub)
        with acting_as(actor):
            if refusing:
                with pytest.raises(FailedPrecondition) as refused:
                    await run_source(tools, "plain", "return 2")
            else:
                result = await run_source(tools, "plain", "return 2")

    logged = [r.getMessage() for r in caplog.records if r.name == "mnemo_tools.app"]
    if refusing:
        assert refused.value.reason == "SANDBOX_ISOLATION_UNAVAILABLE"
        assert refused.value.message == (
            f"this machine cannot isolate tool runs (no {' or '.join(missing)} namespace) and "
            "sandbox_require_isolation is on: run the tools service as root (see "
            "docs/adr/0300-tool-sandbox.md) or turn sandbox_require_isolation off"
        )
        assert logged[-1] == "sandbox_require_isolation is on: custom tool runs will be refused"
    else:
        assert result.status == SUCCESS
        assert result.content == "2"
        assert logged == []


async def test_hostile_runs_do_not_stop_concurrent_runs(
    tools: Tools, actor: Actor, tools_service: Served
) -> None:
    with acting_as(actor):
        # The spinner outlives the quick runs by a wide margin even on a loaded machine; the quick runs get
        # a generous timeout, so only a run that was really stopped by the hostile ones fails.
        spin = asyncio.ensure_future(run_source(tools, "spin2", "while True:\n    pass", timeout=8))
        flood = asyncio.ensure_future(run_source(tools, "flood2", "while True:\n    print('x' * 10000)"))
        quick = await asyncio.gather(
            *(run_source(tools, f"quick{i}", f"return {i}", timeout=60) for i in range(6))
        )
        spinning_meanwhile = not spin.done()
        hostile = await asyncio.gather(spin, flood)

    assert [r.content for r in quick] == [str(i) for i in range(6)]
    assert all(r.status == SUCCESS for r in quick)
    assert spinning_meanwhile
    assert all(r.status == ERROR for r in hostile)
    assert await healthy(tools_service)
