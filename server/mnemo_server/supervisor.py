"""Runs the whole mesh on one machine: four gRPC services and the REST gateway as child processes.

Children are started together, watched, and stopped together: Ctrl-C / SIGTERM stops all of
them gracefully; if one dies, the others are stopped and the supervisor exits non-zero.

`fork_children` is the fast path of `mnemo server`: the supervisor imports what every service
needs once (grpc, SQLAlchemy, pydantic, the stubs: over a CPU-second per process) and forks the
services from that warm state. It must run before any thread or event loop exists in the
supervisor. `start_children` execs fresh interpreters instead, for callers that are not in that
state (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import runpy
import signal
import ssl
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mnemo_core import mesh_credential
from mnemo_core.channels import mesh_channel
from mnemo_core.lifecycle import as_child_of_this_process
from mnemo_core.settings import GRPC_SERVICES, MnemoSettings

MODULES = {
    "memory": "mnemo_memory",
    "tools": "mnemo_tools",
    "llm": "mnemo_llm",
    "agent": "mnemo_agent",
    "gateway": "mnemo_gateway",
}


# What every service imports; loaded once before forking.
PRELOAD = (
    "grpc",
    "grpc_health.v1.health",
    "grpc_reflection.v1alpha.reflection",
    "sqlalchemy.orm",
    "sqlalchemy.ext.asyncio",
    "aiosqlite",
    "pydantic_settings",
    "mnemo_core.server",
    "mnemo_core.db",
    "mnemo_core.channels",
    "mnemo_core.migrations",
    "mnemo.agent.v1.agent_pb2_grpc",
    "mnemo.memory.v1.block_pb2_grpc",
    "mnemo.memory.v1.message_pb2_grpc",
    "mnemo.tools.v1.tool_pb2_grpc",
    "mnemo.llm.v1.llm_pb2_grpc",
)


class ServiceProcess(Protocol):
    """The part of a process handle the supervisor uses (asyncio's Process has it)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...

    async def wait(self) -> int: ...


@dataclass
class Child:
    """One service process."""

    name: str
    process: ServiceProcess


async def start_children(env: Mapping[str, str]) -> list[Child]:
    """Starts every service as a fresh interpreter (`python -m mnemo_<service>`)."""
    children = []
    for name, module in MODULES.items():
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", module, env=dict(env))
        children.append(Child(name, process))
    return children


class ForkedProcess:
    """A forked service, reaped through a pidfd so the event loop learns when it exits."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited: asyncio.Future[int] | None = None

    def _reap(self) -> None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return
        self.returncode = os.waitstatus_to_exitcode(status)
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(self.returncode)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        if self.returncode is not None:
            return self.returncode
        if self._exited is None:
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            fd = os.pidfd_open(self.pid)

            def readable() -> None:
                self._reap()
                if self.returncode is not None:
                    loop.remove_reader(fd)
                    os.close(fd)

            loop.add_reader(fd, readable)
            readable()
        return await asyncio.shield(self._exited)


def _run_forked(module: str, env: Mapping[str, str]) -> None:
    """The body of a forked child: become the service, never return into the supervisor's code."""
    code = 1
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(env)
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child must report any failure and exit, never unwind into the parent
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def fork_children(env: Mapping[str, str]) -> list[Child]:
    """Preloads the shared modules, then forks every service. Call before any thread or loop exists."""
    for module in PRELOAD:
        importlib.import_module(module)
    children = []
    for name, module in MODULES.items():
        pid = os.fork()
        if pid == 0:
            _run_forked(module, env)
        children.append(Child(name, ForkedProcess(pid)))
    return children


async def _grpc_serving(address: str, trust: bytes | None) -> bool:
    async with mesh_channel(address, trust) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


async def wait_healthy(settings: MnemoSettings, http_url: str, children: list[Child], timeout: float) -> None:
    """Waits until every service reports SERVING and the gateway answers; raises if one dies or time runs out."""
    deadline = time.monotonic() + timeout
    pending = set(GRPC_SERVICES)
    trust = settings.tls_trust()
    # The REST port's certificate: a public one (the system's CAs) or the mesh's own.
    verify = ssl.create_default_context()
    if trust is not None:
        verify.load_verify_locations(cadata=trust.decode())
    async with httpx.AsyncClient(verify=verify) as client:
        while True:
            for child in children:
                if child.process.returncode is not None:
                    raise RuntimeError(
                        f"{child.name} exited with code {child.process.returncode} while starting"
                    )
            for service in list(pending):
                if await _grpc_serving(settings.address_of(service), trust):
                    pending.discard(service)
            if not pending:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{http_url}/v1/health", timeout=1.0)).status_code == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"services not healthy after {timeout:.0f} s: {sorted(pending) or ['gateway']}"
                )
            await asyncio.sleep(0.05)


async def stop_children(children: list[Child], grace: float = 10.0) -> None:
    """SIGTERM to every child, then SIGKILL to those still running after `grace` seconds."""
    for child in children:
        if child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.process.wait() for c in children)), grace)
    except TimeoutError:
        for child in children:
            if child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
        await asyncio.gather(*(c.process.wait() for c in children))


async def supervise(children: list[Child]) -> int:
    """Waits for a stop signal (returns 0) or for a child to die (returns 1); stops all children."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waits = {asyncio.ensure_future(c.process.wait()): c for c in children}
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([*waits, stopper], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for task in done:
        if task in waits:
            child = waits[task]
            print(
                f"mnemo: {child.name} exited with code {child.process.returncode}; stopping", file=sys.stderr
            )
            code = 1
    stopper.cancel()
    await stop_children(children)
    return code


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the service processes: they die with this process (MNEMO_PARENT_PID), and all
    share the mesh's internal credential (MNEMO_INTERNAL_TOKEN, else the install's generated key)."""
    env = dict(os.environ)
    env.update(extra or {})
    env.setdefault("PYTHONUNBUFFERED", "1")
    if not env.get("MNEMO_INTERNAL_TOKEN"):
        home = Path(env.get("MNEMO_HOME") or "~/.mnemo").expanduser()
        env["MNEMO_INTERNAL_TOKEN"] = mesh_credential.ensure_key(home)
    return as_child_of_this_process(env)
