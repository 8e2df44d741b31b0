"""Hostile tool code over the real tools service: each attack is contained as far as the sandbox's mode
promises (tests/service/sandbox_promises.py: full isolation as root and with user namespaces; without them
custom tools are refused, or run with the documented holes when allowed), failures are reported as tool
errors, and the service stays healthy and keeps serving other runs meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mnemo.common.v1 import message_pb2
from mnemo.tools.v1 import mcp_pb2, mcp_pb2_grpc, tool_pb2, tool_pb2_grpc
from mnemo_core.actor import ADMIN, Actor, acting_as
from mnemo_core.errors import FailedPrecondition, PermissionDenied
from mnemo_tools.app import build as build_tools
from mnemo_tools.sandbox.runner import UNISOLATED_REFUSAL
from mnemo_tools.settings import ToolsSettings
from tests.fakes.wheels import build_wheel
from tests.service.conftest import Served, clean_environment, new_actor, serving
from tests.service.sandbox_promises import promised

if TYPE_CHECKING:
    from mnemo.tools.v1.tool_pb2_grpc import ToolServiceAsyncStub as Tools

ERROR = message_pb2.TOOL_RETURN_STATUS_ERROR
SUCCESS = message_pb2.TOOL_RETURN_STATUS_SUCCESS
# Short per-tool timeouts keep the suite fast; the limits under test are the service defaults.
TIMEOUT = 2
WHEEL_REQUIREMENT = "mnemo_greeting==1.0"


@pytest.fixture(scope="module")
async def tools_service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    """The tools service with default limits, a wheel directory for requirements, and, where nothing can
    be isolated, runs allowed anyway so that the tests can assert what that opt-in leaves open."""
    base = tmp_path_factory.mktemp("hostile")
    wheels = base / "wheels"
    wheels.mkdir()
    build_wheel(wheels)
    home = base / "home"
    with clean_environment(home):
        settings = ToolsSettings(
            home=home,
            sandbox_pip_find_links=str(wheels),
            sandbox_pip_offline=True,
            sandbox_allow_unisolated=not promised().runs_by_default,
            mcp_stdio_enabled=True,
        )
    async with serving(await build_tools(settings)) as served:
        yield served


async def create_source(
    tools: Tools,
    name: str,
    body: str,
    params: str = "",
    timeout: float = TIMEOUT,
    requirements: tuple[str, ...] = (),
) -> tool_pb2.Tool:
    code = f'def {name}({params}):\n    """Hostile."""\n' + textwrap.indent(textwrap.dedent(body), "    ")
    created = await tools.CreateTool(
        tool_pb2.CreateToolRequest(
            tool=tool_pb2.Tool(
                source_code=code, timeout_seconds=int(timeout), pip_requirements=list(requirements)
            )
        )
    )
    return created.tool


async def run_source(
    tools: Tools,
    name: str,
    body: str,
    params: str = "",
    args: object = None,
    timeout: float = TIMEOUT,
    requirements: tuple[str, ...] = (),
) -> tool_pb2.RunToolResponse:
    tool = await create_source(tools, name, body, params, timeout, requirements)
    return await tools.RunTool(
        tool_pb2.RunToolRequest(tool_id=tool.id, arguments_json=json.dumps(args or {}))
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


# Tries to open each path in `paths` (reading, or writing with `write`) and says how it went.
TRY_PATHS = """
import os
outcomes = {}
for path in paths:
    try:
        with open(path, "ab" if write else "rb") as f:
            outcomes[path] = "written" if write and f.write(b"x") else f.read(15).decode("latin-1")
    except OSError as exc:
        outcomes[path] = type(exc).__name__
return outcomes
"""
CONTAINED = ("FileNotFoundError", "PermissionError", "OSError", "IsADirectoryError")


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

    if promised().private_filesystem:
        assert outcomes["cwd"] == "/tmp/work"
        # /tmp inside the run is a private, throwaway tmpfs; everything else is read-only or not there.
        assert outcomes[str(tmp_path / "escaped.txt")] in CONTAINED
        assert outcomes[shared[1]] in CONTAINED
        assert outcomes[targets[3]] in CONTAINED
        assert written == set()
    else:
        # Documented: the run works in a throwaway directory under $MNEMO_HOME/sandbox/work (removed when
        # it ends) and writes wherever the service's user may.
        assert outcomes[targets[3]] == "PermissionError"
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


async def test_mnemo_home_its_api_key_and_databases_are_not_in_the_run(
    tools: Tools, actor: Actor, tools_service: Served
) -> None:
    home = service_home(tools_service)
    api_key = home / "api_key"
    fd = os.open(api_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("mnemo-root-key")
    readable = home / "config.toml"
    readable.write_text("# mnemo-config\n")
    os.chmod(readable, 0o644)
    paths = [str(api_key), str(readable), str(home / "data" / "tools.db")]
    with acting_as(actor):
        read = await run_source(
            tools, "peek", TRY_PATHS, "paths: list[str], write: bool", {"paths": paths, "write": False}
        )
        written = await run_source(
            tools, "poke", TRY_PATHS, "paths: list[str], write: bool", {"paths": paths, "write": True}
        )

    read_outcomes, write_outcomes = json.loads(read.content), json.loads(written.content)
    if promised().private_filesystem:
        # Not hidden by permissions: MNEMO_HOME is not in the run's file system at all.
        assert read_outcomes == dict.fromkeys(paths, "FileNotFoundError")
        assert write_outcomes == dict.fromkeys(paths, "FileNotFoundError")
        assert api_key.read_text() == "mnemo-root-key"
    else:
        # Documented: an unisolated run is the service's user and reads and writes its secrets and databases.
        assert read_outcomes == {
            paths[0]: "mnemo-root-key",
            paths[1]: "# mnemo-config\n",
            paths[2]: "SQLite format 3",
        }
        assert write_outcomes == dict.fromkeys(paths, "written")


async def test_a_run_cannot_write_the_shared_package_environments(
    tools: Tools, actor: Actor, tools_service: Served
) -> None:
    body = """
    import os, mnemo_greeting
    package = os.path.dirname(mnemo_greeting.__file__)
    environment = os.path.dirname(package)
    outcomes = {"environment": environment}
    for path in (os.path.join(package, "__init__.py"), os.path.join(environment, "planted.py")):
        try:
            with open(path, "a") as f:
                f.write("import os; os.system('echo pwned')\\n")
            outcomes[path] = "written"
        except OSError as exc:
            outcomes[path] = type(exc).__name__
    outcomes["listed"] = sorted(os.listdir(os.path.dirname(environment)))
    return outcomes
    """
    # Another tool's environment, next to the one this tool gets.
    other = service_home(tools_service) / "sandbox" / "packages" / f"other-{uuid.uuid4().hex[:8]}"
    other.mkdir(parents=True)
    (other / "secret.py").write_text("TOKEN = 'other'\n")
    with acting_as(actor):
        result = await run_source(tools, "plant", body, requirements=(WHEEL_REQUIREMENT,))

    outcomes = json.loads(result.content)
    environment = Path(outcomes.pop("environment"))
    source = environment / "mnemo_greeting" / "__init__.py"
    assert environment.parent == service_home(tools_service) / "sandbox" / "packages"
    listed = outcomes.pop("listed")
    if promised().private_filesystem:
        # The tool's own environment is mounted read-only; the other environments are not there.
        assert set(outcomes.values()) <= {"PermissionError", "OSError"}
        assert listed == [environment.name]
        assert "pwned" not in source.read_text()
        assert not (environment / "planted.py").exists()
    else:
        assert other.name in listed


async def test_services_processes_and_their_environment_are_out_of_sight(
    tools: Tools, actor: Actor, tools_service: Served
) -> None:
    body = """
    import os
    outcomes = {"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                outcomes[str(pid)] = f.read().decode("latin-1")
        except OSError as exc:
            outcomes[str(pid)] = type(exc).__name__
    return outcomes
    """
    forkserver = tools_service.app.sandbox._process.pid  # type: ignore[attr-defined]
    services = [os.getpid(), forkserver]
    with acting_as(actor):
        result = await run_source(tools, "snoop", body, "pids: list[int]", {"pids": services})

    outcomes = json.loads(result.content)
    if promised().private_processes:
        assert outcomes == {"pids": [1], **dict.fromkeys(map(str, services), "FileNotFoundError")}
    else:
        # Documented: an unisolated run sees the host's processes and reads its own user's environments.
        assert set(services) <= set(outcomes["pids"])
        assert "PATH=" in outcomes[str(os.getpid())]


async def test_the_mesh_ports_are_unreachable(tools: Tools, actor: Actor, tools_service: Served) -> None:
    port = tools_service.running.port
    body = """
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return "connected"
    except OSError as exc:
        return exc.strerror
    """
    with acting_as(actor):
        result = await run_source(tools, "knock", body, "port: int", {"port": port})

    assert result.content == ("Network is unreachable" if promised().network_blocked else "connected")


async def test_ptrace_mounts_and_new_namespaces_are_refused_and_no_capability_is_left(
    tools: Tools, actor: Actor
) -> None:
    body = """
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    def errno_of(result):
        return os.strerror(ctypes.get_errno()) if result != 0 else "allowed"
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f)
    return {
        "ptrace_service": errno_of(libc.ptrace(16, service, 0, 0)),
        "ptrace_me": errno_of(libc.ptrace(0, 0, 0, 0)),
        "unshare_user": errno_of(libc.unshare(0x10000000)),
        "mount": errno_of(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
        "effective": status["CapEff"].strip(),
        "bounding": status["CapBnd"].strip(),
    }
    """
    with acting_as(actor):
        result = await run_source(tools, "escalate", body, "service: int", {"service": os.getpid()})

    seen = json.loads(result.content)
    refused = "Operation not permitted"
    # The seccomp filter refuses these in every mode.
    assert seen["ptrace_service"] == seen["ptrace_me"] == seen["unshare_user"] == seen["mount"] == refused
    if promised().isolated:
        assert seen["effective"] == seen["bounding"] == "0000000000000000"


async def test_the_probe_and_the_start_log_state_what_this_mode_isolates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mnemo_tools.app")
    with clean_environment(tmp_path):
        settings = ToolsSettings(home=tmp_path)
    app = await build_tools(settings)
    await app.aclose()

    probed = app.sandbox.capabilities
    assert {key: probed[key] for key in promised().capabilities} == promised().capabilities
    logged = [r.getMessage() for r in caplog.records if r.name == "mnemo_tools.app"]
    if promised().start_warning is None:
        assert logged == []
    else:
        assert len(logged) == 1
        assert logged[0].startswith(promised().start_warning)


async def test_custom_tools_are_refused_by_default_exactly_where_runs_cannot_be_isolated(
    tmp_path: Path, actor: Actor
) -> None:
    with clean_environment(tmp_path):
        settings = ToolsSettings(home=tmp_path)
    assert not settings.sandbox_allow_unisolated
    async with serving(await build_tools(settings)) as served:
        tools = served.stub(tool_pb2_grpc.ToolServiceStub)
        with acting_as(actor):
            if promised().runs_by_default:
                result = await run_source(tools, "plain", "return 2")
            else:
                with pytest.raises(FailedPrecondition) as refused:
                    await run_source(tools, "plain", "return 2")

    if promised().runs_by_default:
        assert result.status == SUCCESS
        assert result.content == "2"
    else:
        assert refused.value.reason == "SANDBOX_ISOLATION_UNAVAILABLE"
        assert refused.value.message == UNISOLATED_REFUSAL
        assert "MNEMO_SANDBOX_ALLOW_UNISOLATED=true" in refused.value.message


async def test_a_member_cannot_register_a_stdio_server_and_its_command_never_runs(
    tools_service: Served, tmp_path: Path
) -> None:
    mcp = tools_service.stub(mcp_pb2_grpc.McpServiceStub)
    marker = tmp_path / "ran"
    os.chmod(tmp_path, 0o777)
    command = ["-c", f"open({str(marker)!r}, 'w').write('ran')"]
    server = mcp_pb2.McpServer(name="evil", stdio=mcp_pb2.StdioTransport(command="python3", args=command))
    member = new_actor()
    with acting_as(member), pytest.raises(PermissionDenied) as refused:
        await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=server))
    # An admin may register stdio servers, but only with the operator's commands.
    elsewhere = mcp_pb2.McpServer(
        name="evil", stdio=mcp_pb2.StdioTransport(command=sys.executable, args=command)
    )
    with acting_as(Actor(member.org_id, "admin-1", ADMIN)), pytest.raises(PermissionDenied) as unlisted:
        await mcp.CreateMcpServer(mcp_pb2.CreateMcpServerRequest(server=elsewhere))

    assert refused.value.reason == "ADMIN_ROLE_REQUIRED"
    assert unlisted.value.reason == "MCP_STDIO_COMMAND_NOT_ALLOWED"
    assert not marker.exists()
    with acting_as(member):
        assert list((await mcp.ListMcpServers(mcp_pb2.ListMcpServersRequest())).servers) == []


async def test_one_organizations_flood_of_runs_does_not_hold_up_another_organizations_run(
    tools: Tools, tools_service: Served
) -> None:
    flooder, other = new_actor(), new_actor()
    with acting_as(flooder):
        spinner = await create_source(tools, "spin3", "while True:\n    pass", timeout=8)
        flood = [
            asyncio.ensure_future(tools.RunTool(tool_pb2.RunToolRequest(tool_id=spinner.id)))
            for _ in range(12)
        ]
    per_org = ToolsSettings.model_fields["sandbox_org_concurrency"].default
    deadline = time.monotonic() + 30
    while tools_service.app.sandbox.running(flooder.org_id) < per_org:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the flood never took its slots"
        await asyncio.sleep(0.02)
    with acting_as(other):
        quick = await run_source(tools, "quick_other", "return 'served'", timeout=60)
    flooding_meanwhile = not any(run.done() for run in flood)
    results = await asyncio.gather(*flood)

    assert quick.content == "served"
    assert flooding_meanwhile
    assert all(r.status == ERROR and "did not finish within 8 s" in r.content for r in results)


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
