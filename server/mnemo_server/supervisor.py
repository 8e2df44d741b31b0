"""Runs the whole mesh on one machine: four gRPC services and the REST gateway as child processes.

Children are started together and watched: a service that dies is started again (a fresh
interpreter, after a backoff) while the others keep serving, and the restart is logged with the exit
cause. A service that keeps dying soon after each start is a crash loop: the supervisor gives up, stops
the mesh and exits non-zero. Ctrl-C / SIGTERM stops the mesh gracefully: the gateway and the agent
service first (they drain in-flight requests and turns, which still need the others), then the rest.

`fork_children` is the fast path of `mnemo server`: the supervisor imports what every service
needs once (grpc, SQLAlchemy, pydantic, the stubs: over a CPU-second per process) and forks the
services from that warm state. It must run before any thread or event loop exists in the
supervisor. `start_children` execs fresh interpreters instead, for callers that are not in that
state (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import os
import runpy
import signal
import ssl
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mnemo_core import mesh_credential
from mnemo_core.channels import mesh_channel
from mnemo_core.lifecycle import as_child_of_this_process
from mnemo_core.settings import GRPC_SERVICES, MnemoSettings, ServiceName

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
    # The preloaded objects stay shared with the children only while nobody writes to their pages: frozen,
    # no process's garbage collector walks them (a full collection would copy ~30 MB into each child).
    gc.collect()
    gc.freeze()
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


async def wait_healthy(
    settings: MnemoSettings,
    http_url: str,
    children: list[Child],
    timeout: float,
    *,
    restarted: bool = False,
) -> None:
    """Waits until every service reports SERVING and the gateway answers; raises when time runs out, or
    when a service dies, unless `restarted` (a keeper starts dead services again meanwhile)."""
    deadline = time.monotonic() + timeout
    pending = set(GRPC_SERVICES)
    trust = settings.tls_trust()
    # The REST port's certificate: a public one (the system's CAs) or the mesh's own.
    verify = ssl.create_default_context()
    if trust is not None:
        verify.load_verify_locations(cadata=trust.decode())
    async with httpx.AsyncClient(verify=verify) as client:
        while True:
            for child in [] if restarted else children:
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


# Stop order on a graceful stop: the gateway first (its in-flight requests finish against a running mesh,
# its queued audit events reach the agent service), then the agent service (its turns finish while the
# services they call still run), then the others.
STOP_STAGES = (("gateway",), ("agent",))


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead service is started again, and when the supervisor gives up on it.

    A failure is fast when the service dies before it answers, or within `settle` seconds of answering:
    `crash_loop` fast failures in a row are a crash loop. The delay before a restart doubles with each
    fast failure in a row, from `first_delay` up to `max_delay`.
    """

    first_delay: float = 0.25
    max_delay: float = 8.0
    settle: float = 1.0
    crash_loop: int = 5

    def delay(self, fast_failures: int) -> float:
        """Seconds to wait before starting a service again after `fast_failures` fast failures in a row."""
        return float(min(self.max_delay, self.first_delay * 2 ** max(0, fast_failures - 1)))


class CrashLoop(RuntimeError):
    """A service kept dying soon after each start."""


Probe = Callable[[str], Awaitable[bool]]


def exit_cause(returncode: int) -> str:
    """How a process ended, in words: `killed by SIGKILL`, `exited with code 1`."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def say(text: str) -> None:
    """A supervisor message on stderr, timestamped (restarts are read next to the services' logs)."""
    print(f"{time.strftime('%H:%M:%S')} mnemo: {text}", file=sys.stderr, flush=True)


def mesh_probe(settings: MnemoSettings, http_url: str) -> Probe:
    """Whether a service answers: gRPC health SERVING, or any HTTP answer from the gateway."""

    trust = settings.tls_trust()

    async def answering(name: str) -> bool:
        if name != "gateway":
            return await _grpc_serving(settings.address_of(cast(ServiceName, name)), trust)
        # Liveness only (no credential is sent): any answer counts, over TLS with any certificate too.
        async with httpx.AsyncClient(verify=False) as client:  # noqa: S501
            try:
                await client.get(f"{http_url}/v1/health", timeout=1.0)
            except httpx.HTTPError:
                return False
            return True

    return answering


async def restart_child(child: Child, env: Mapping[str, str]) -> None:
    """Starts a dead service again as a fresh interpreter (the supervisor's loop is running: no fork)."""
    child.process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", MODULES[child.name], env=dict(env)
    )


async def _answering_since(child: Child, probe: Probe) -> float | None:
    """When the (re)started `child` first answered; None when it died before."""
    while child.process.returncode is None:
        if await probe(child.name):
            return time.monotonic()
        await asyncio.sleep(0.1)
    return None


async def _first_answer(child: Child, probe: Probe) -> float | None:
    """When a just started `child` first answered; None when it died before (a forked child's exit is
    only seen by waiting for it, so the wait runs alongside the probing)."""
    answering = asyncio.ensure_future(_answering_since(child, probe))
    exited = asyncio.ensure_future(child.process.wait())
    await asyncio.wait({answering, exited}, return_when=asyncio.FIRST_COMPLETED)
    if answering.done():
        exited.cancel()
        return answering.result()
    answering.cancel()
    await asyncio.gather(answering, return_exceptions=True)
    return None


async def keep_alive(
    child: Child, env: Mapping[str, str], probe: Probe, policy: RestartPolicy, *, starting: bool = False
) -> None:
    """Restarts `child` each time it dies, with backoff; raises CrashLoop when it keeps dying fast.

    `starting`: the child has just been started and may not answer yet (a death before it does is fast).
    """
    answered_at = await _first_answer(child, probe) if starting else time.monotonic()
    fast_failures = 0
    while True:
        returncode = await child.process.wait()
        died_at = time.monotonic()
        fast = answered_at is None or died_at - answered_at < policy.settle
        fast_failures = fast_failures + 1 if fast else 0
        cause = exit_cause(returncode)
        if fast_failures >= policy.crash_loop:
            raise CrashLoop(
                f"{child.name} {cause}; it failed {fast_failures} times in a row before it was up for "
                f"{policy.settle:g} s: a crash loop (see its log above). Giving up: stopping the mesh"
            )
        delay = policy.delay(max(1, fast_failures))
        say(f"{child.name} (pid {child.process.pid}) {cause}; restarting it in {delay:g} s")
        await asyncio.sleep(delay)
        started = time.monotonic()
        await restart_child(child, env)
        answered_at = await _answering_since(child, probe)
        if answered_at is not None:
            say(
                f"{child.name} is back (pid {child.process.pid}, answering after {answered_at - started:.1f} s)"
            )


async def _stop_group(children: list[Child], grace: float) -> None:
    for child in children:
        if child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.process.wait() for c in children)), max(grace, 0.1))
    except TimeoutError:
        for child in children:
            if child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
        await asyncio.gather(*(c.process.wait() for c in children))


async def stop_children(children: list[Child], grace: float = 15.0) -> None:
    """Stops the gateway, then the agent service, then the others: SIGTERM, and SIGKILL to those still
    running `grace` seconds later (each stage)."""
    staged = {name for stage in STOP_STAGES for name in stage}
    for stage in STOP_STAGES:
        await _stop_group([c for c in children if c.name in stage], grace)
    await _stop_group([c for c in children if c.name not in staged], grace)


async def supervise(
    children: list[Child],
    env: Mapping[str, str],
    probe: Probe,
    policy: RestartPolicy | None = None,
    grace: float = 15.0,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Keeps every service running until a stop signal (returns 0) or a crash loop (returns 1); then
    stops them all.

    With `ready`, the children have just been started: a service that dies before it first answers is
    restarted like any other (a fast failure), while `ready` waits for the whole mesh; if `ready` fails
    (the mesh is not healthy in time), its error is said and the mesh stopped (returns 1).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    keepers = [
        asyncio.ensure_future(
            keep_alive(c, env, probe, policy or RestartPolicy(), starting=ready is not None)
        )
        for c in children
    ]
    stopper = asyncio.ensure_future(stop.wait())
    readiness = asyncio.ensure_future(ready()) if ready is not None else None
    watched: set[asyncio.Future[Any]] = {*keepers, stopper}
    if readiness is not None:
        watched.add(readiness)
    code = 0
    while True:
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if done == {readiness} and readiness is not None and readiness.exception() is None:
            watched.discard(readiness)  # the mesh is up: supervise on
            continue
        for task in done:
            if task is stopper or (task is readiness and task.exception() is None):
                continue
            code = 1
            error = task.exception()
            if task is readiness or isinstance(error, CrashLoop):
                say(f"{error}; stopping" if task is readiness else str(error))
            else:
                say(f"supervising failed: {error!r}; stopping")
        break
    tasks = [*keepers, stopper, *([readiness] if readiness is not None else [])]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await stop_children(children, grace)
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
