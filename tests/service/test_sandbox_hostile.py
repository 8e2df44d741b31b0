"""Hostile tool code over the real tools service: each attack is contained and reported as a tool error,
and the service stays healthy and keeps serving other runs meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import textwrap
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mnemo.common.v1 import message_pb2
from mnemo.tools.v1 import tool_pb2
from mnemo_core.actor import Actor, acting_as
from tests.service.conftest import Served

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
    children = 0
    for _ in range(10_000):
        try:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            children += 1
        except OSError:
            break
    return children
    """
    with acting_as(actor):
        result = await run_source(tools, "bomb", body)
        after = await run_source(
            tools, "count", "import os\nreturn len([p for p in os.listdir('/proc') if p.isdigit()])"
        )

    assert result.status == SUCCESS
    # RLIMIT_NPROC (16, counted per run uid) stops the forking long before 10 000.
    assert 0 < int(result.content) < 16
    # The children were killed with the run: the next run's private /proc shows only itself.
    assert after.content == "1"
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


async def test_connecting_to_a_server_on_loopback_fails_and_the_server_sees_nothing(
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
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()

    assert result.status == ERROR
    assert "Network is unreachable" in result.content


async def test_writing_outside_the_working_directory_never_reaches_the_host(
    tools: Tools, actor: Actor, tools_service: Served, tmp_path: Path
) -> None:
    os.chmod(tmp_path, 0o777)
    # Names of this run only: the host's /tmp is shared with every other test run on the machine.
    unique = uuid.uuid4().hex
    targets = [
        str(tmp_path / "escaped.txt"),
        f"/tmp/mnemo-escaped-{unique}.txt",
        f"/var/tmp/mnemo-escaped-{unique}.txt",
        f"/root/escaped-{unique}.txt",
    ]
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
    with acting_as(actor):
        result = await run_source(tools, "scribble", body, "paths: list[str]", {"paths": targets})

    outcomes = json.loads(result.content)
    assert outcomes["cwd"] == "/tmp/work"
    # /tmp inside the run is a private, throwaway tmpfs; everything else is read-only or not the run's.
    assert outcomes[str(tmp_path / "escaped.txt")] in ("FileNotFoundError", "PermissionError")
    assert outcomes[targets[2]] in ("PermissionError", "OSError")
    assert outcomes[targets[3]] == "PermissionError"
    for target in targets:
        assert not on_host(target), target
    database = tools_service.app.db.url.split("///", 1)[1]  # type: ignore[attr-defined]
    assert on_host(database)


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
    assert seen["uid"] != os.getuid()
    assert seen["uid"] > 61000


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
