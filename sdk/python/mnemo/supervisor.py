"""Runs the whole mesh on one machine: four gRPC services and the REST gateway as child processes.

Children are started together, watched, and stopped together: Ctrl-C / SIGTERM stops all of
them gracefully; if one dies, the others are stopped and the supervisor exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mnemo_core.settings import GRPC_SERVICES, MnemoSettings

MODULES = {
    "memory": "mnemo_memory",
    "tools": "mnemo_tools",
    "llm": "mnemo_llm",
    "agent": "mnemo_agent",
    "gateway": "mnemo_gateway",
}


@dataclass
class Child:
    """One service process."""

    name: str
    process: asyncio.subprocess.Process


async def start_children(env: Mapping[str, str]) -> list[Child]:
    """Starts every service process."""
    children = []
    for name, module in MODULES.items():
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", module, env=dict(env))
        children.append(Child(name, process))
    return children


async def _grpc_serving(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
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
    async with httpx.AsyncClient() as client:
        while True:
            for child in children:
                if child.process.returncode is not None:
                    raise RuntimeError(
                        f"{child.name} exited with code {child.process.returncode} while starting"
                    )
            for service in list(pending):
                if await _grpc_serving(settings.address_of(service)):
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
    """The environment of the service processes."""
    env = dict(os.environ)
    env.update(extra or {})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
