"""The service side of the sandbox: starts the fork server, sends it jobs, collects their output.

A tool run takes a slot (fairly shared between organizations; as root also an unprivileged uid of its
own), a memfd with its payload and four pipes whose far ends go to the fork server over a Unix socket.
The service reads stdout, stderr and the result itself, so it can cap them and stop a run that writes
too much. An MCP server's command is a long-lived job of the same sandbox whose stdin and stdout are the
service's connection to it.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnemo_core.errors import FailedPrecondition, ResourceExhausted, Unavailable
from mnemo_tools.sandbox.cgroups import CgroupParent
from mnemo_tools.sandbox.slots import FairSlots

log = logging.getLogger(__name__)

FORKSERVER = Path(__file__).with_name("forkserver.py")
# Bytes of a result beyond the characters a tool may return (JSON framing, escapes).
_RESULT_SLACK = 64 * 1024
# Seconds the service waits beyond a run's own timeout before it gives up on the fork server.
_BACKSTOP = 10.0
# Open files of a tool run's processes.
_OPEN_FILES = 256
# What the refusal says when runs cannot be isolated; tests and docs quote it.
UNISOLATED_REFUSAL = (
    "custom tools cannot run here: this machine gives the tools service neither root nor unprivileged "
    "user namespaces, so tool runs could not be isolated from it. Allow user namespaces "
    "(sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0, or the container "
    "runtime's seccomp/AppArmor profile), run the tools service as root in its own container, or, on a "
    "single-user machine only, set MNEMO_SANDBOX_ALLOW_UNISOLATED=true to run tools as this service's "
    "user (docs/adr/0300-tool-sandbox.md)"
)


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Resource limits of one run."""

    timeout_seconds: float
    memory_bytes: int
    processes: int
    file_bytes: int
    workdir_bytes: int
    output_bytes: int
    kept_output_bytes: int


@dataclass(frozen=True, slots=True)
class SandboxJob:
    """One call of a tool's function."""

    source: str
    function: str
    arguments: dict[str, Any]
    env: dict[str, str]
    limits: SandboxLimits
    return_chars: int
    is_async: bool = False
    site_dirs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SandboxCommand:
    """A long-lived command (an MCP server) in the sandbox, talking over its stdin and stdout."""

    argv: tuple[str, ...]
    env: dict[str, str]
    # Host paths the command may read (its program and what it needs), at the same paths inside.
    readonly_paths: tuple[str, ...] = ()
    cwd: str = ""
    network: bool = False
    processes: int = 64
    file_bytes: int = 64 << 20
    workdir_bytes: int = 256 << 20
    # Address space of each process (0: unlimited; runtimes such as node reserve far more than they use).
    memory_bytes: int = 0


@dataclass(slots=True)
class SandboxOutcome:
    """How a run ended: its result or error, its captured output and what it used."""

    ok: bool
    text: str = ""
    length: int = 0
    error: str = ""
    stdout: str = ""
    stderr: str = ""
    duration_seconds: float = 0.0
    cpu_seconds: float = 0.0
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    output_exceeded: bool = False
    oom_killed: bool = False


@dataclass(slots=True)
class _Stream:
    kept: bytearray = field(default_factory=bytearray)
    total: int = 0


class SandboxProcess:
    """A command running in the sandbox: write to `stdin`, read `stdout` and `stderr` (non-blocking fds)."""

    def __init__(
        self, runner: SandboxRunner, run_id: int, fds: tuple[int, int, int, int], release: Any
    ) -> None:
        self._runner = runner
        self.run_id = run_id
        self.stdin, self.stdout, self.stderr, self._status = fds
        self._release = release
        self.ended = asyncio.Event()
        self.status: dict[str, Any] = {}
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        status = _Stream()
        overflow = asyncio.Event()
        try:
            await _read(self._status, status, 65536, None, overflow)
            with contextlib.suppress(ValueError):
                self.status = json.loads(status.kept or b"{}")
        finally:
            self.ended.set()
            self._release()

    async def stop(self) -> None:
        """Kills the command (and everything it started) and waits until it has ended."""
        if not self.ended.is_set():
            with contextlib.suppress(Unavailable):
                await self._runner._send({"op": "stop", "id": self.run_id}, [])
            await self.ended.wait()
        for fd in (self.stdin, self.stdout, self.stderr):
            with contextlib.suppress(OSError):
                os.close(fd)


class SandboxRunner:
    """Runs jobs in the fork server; tool runs share `slots` fairly between organizations."""

    def __init__(
        self,
        *,
        slots: int,
        slots_per_org: int,
        max_waiting_per_org: int,
        command_slots: int,
        uid_base: int,
        fallback_workdir: Path,
        hidden_paths: Sequence[Path] = (),
        allow_unisolated: bool = False,
        cgroup: CgroupParent | None = None,
        python: str | None = None,
    ) -> None:
        self._slots = FairSlots(slots, per_org=slots_per_org, max_waiting_per_org=max_waiting_per_org)
        self._command_uids = list(range(slots, slots + command_slots))
        self._uid_base = uid_base
        self._fallback_workdir = fallback_workdir
        self._hidden = [str(path) for path in hidden_paths]
        self._allow_unisolated = allow_unisolated
        self._cgroup = cgroup
        self._python = python or getattr(sys, "_base_executable", None) or sys.executable
        self._process: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self.capabilities: dict[str, Any] = {}

    def running(self, org_id: str) -> int:
        """Tool runs of the organization that hold a slot now."""
        return self._slots.held(org_id)

    @property
    def isolated(self) -> bool:
        """Whether runs get the full sandbox (namespaces, their own root, no capabilities)."""
        return bool(self.capabilities.get("isolated"))

    async def start(self) -> dict[str, Any]:
        """Starts the fork server (if it is not running) and returns what isolation it can provide."""
        async with self._start_lock:
            if self._process is not None and self._process.returncode is None:
                return self.capabilities
            await self._stop_process()
            self._fallback_workdir.mkdir(parents=True, exist_ok=True)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                self._process = await asyncio.create_subprocess_exec(
                    self._python,
                    "-I",
                    "-S",
                    "-B",
                    str(FORKSERVER),
                    str(theirs.fileno()),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    env={},
                    pass_fds=(theirs.fileno(),),
                )
            finally:
                theirs.close()
            ours.setblocking(False)
            self._sock = ours
            loop = asyncio.get_running_loop()
            config = {
                "probe_uid": self._uid_base,
                "hidden_paths": self._hidden,
                "cgroup_parent": str(self._cgroup.path) if self._cgroup is not None else "",
            }
            await loop.sock_sendall(ours, json.dumps(config).encode())
            try:
                hello = await asyncio.wait_for(loop.sock_recv(ours, 65536), 30)
            except TimeoutError:
                raise Unavailable("the sandbox did not start", reason="SANDBOX_UNAVAILABLE") from None
            if not hello:
                raise Unavailable("the sandbox exited while starting", reason="SANDBOX_UNAVAILABLE")
            self.capabilities = dict(json.loads(hello)["capabilities"])
            self.capabilities["cgroup"] = self._cgroup is not None
            self._drainer = asyncio.get_running_loop().create_task(self._drain_control(ours))
            return self.capabilities

    async def _drain_control(self, sock: socket.socket) -> None:
        # The fork server only speaks at start; an empty read means it is gone.
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            while await loop.sock_recv(sock, 65536):
                pass

    def check_runnable(self) -> None:
        """FAILED_PRECONDITION when runs cannot be isolated here and running them unisolated is not allowed."""
        if self.capabilities and not self.isolated and not self._allow_unisolated:
            raise FailedPrecondition(
                UNISOLATED_REFUSAL,
                reason="SANDBOX_ISOLATION_UNAVAILABLE",
                metadata={"probe": str(self.capabilities.get("error", ""))[:500]},
            )

    async def run(self, job: SandboxJob, org_id: str = "") -> SandboxOutcome:
        """Runs one job for the organization; every failure of the tool is an outcome, never an exception."""
        self.check_runnable()
        slot = await self._slots.acquire(org_id)
        try:
            await self.start()
            self.check_runnable()
            return await self._run(job, slot)
        finally:
            self._slots.release(org_id, slot)

    def _header(self, run_id: int, slot: int, network: bool, readonly: Sequence[str]) -> dict[str, Any]:
        return {
            "op": "run",
            "id": run_id,
            "uid": self._uid_base + 1 + slot,
            # A job without the network suits the supervisor the fork server prepared ahead of time.
            "spare": self.isolated and not network,
            "streams": 3,
            "readonly_paths": list(readonly),
        }

    def _isolation(self) -> dict[str, Any]:
        return {"isolate": self.isolated, "fallback_workdir": str(self._fallback_workdir)}

    async def _run(self, job: SandboxJob, slot: int) -> SandboxOutcome:
        run_id = next(self._ids)
        limits = job.limits
        payload = {
            "kind": "function",
            **self._isolation(),
            "source": job.source,
            "function": job.function,
            "arguments": job.arguments,
            "env": job.env,
            "is_async": job.is_async,
            "return_chars": job.return_chars,
            "site_dirs": list(job.site_dirs),
            "limits": {
                "timeout_seconds": limits.timeout_seconds,
                "cpu_seconds": max(1, int(limits.timeout_seconds + 0.999)),
                "memory_bytes": limits.memory_bytes,
                "processes": limits.processes,
                "file_bytes": limits.file_bytes,
                "workdir_bytes": limits.workdir_bytes,
                "open_files": _OPEN_FILES,
            },
        }
        header = self._header(run_id, slot, False, job.site_dirs)
        out_fd, err_fd, res_fd, status_fd = await self._launch(header, payload, 4, [])
        started = time.monotonic()
        overflow = asyncio.Event()
        out, err = _Stream(), _Stream()
        result, status = _Stream(), _Stream()
        readers = asyncio.gather(
            _read(out_fd, out, limits.kept_output_bytes, limits.output_bytes, overflow, shared=err),
            _read(err_fd, err, limits.kept_output_bytes, limits.output_bytes, overflow, shared=out),
            _read(res_fd, result, job.return_chars * 4 + _RESULT_SLACK, None, overflow),
            _read(status_fd, status, 65536, None, overflow),
        )
        stopper = asyncio.ensure_future(self._stop_on(overflow, run_id))
        backstop = False
        try:
            await asyncio.wait_for(asyncio.shield(readers), limits.timeout_seconds + _BACKSTOP)
        except TimeoutError:
            backstop = True
            await self._send({"op": "stop", "id": run_id}, [])
            try:
                await asyncio.wait_for(readers, _BACKSTOP)
            except TimeoutError:
                readers.cancel()
                log.warning("sandbox run %d did not end; restarting the fork server", run_id)
                await self._restart()
        except BaseException:
            # The caller went away: stop the run and let the readers finish on their own.
            await self._send({"op": "stop", "id": run_id}, [])
            raise
        finally:
            stopper.cancel()
        outcome = _outcome(job, out, err, result, status, overflow.is_set(), backstop)
        outcome.duration_seconds = time.monotonic() - started
        return outcome

    async def _launch(
        self, header: dict[str, Any], payload: dict[str, Any], pipes: int, readers_first: list[int]
    ) -> list[int]:
        """Sends a job with its payload and `pipes` pipes; returns the service's ends, in order. The
        indexes in `readers_first` are pipes the job reads from (the service keeps their write ends)."""
        memfd = os.memfd_create("mnemo-tool-run", os.MFD_CLOEXEC)
        made = [os.pipe() for _ in range(pipes)]
        theirs = [read if i in readers_first else write for i, (read, write) in enumerate(made)]
        ours = [write if i in readers_first else read for i, (read, write) in enumerate(made)]
        try:
            _write_all(memfd, json.dumps(payload).encode())
            await self._send(header, [memfd, *theirs])
        except BaseException:
            for read, write in made:
                os.close(read)
                os.close(write)
            raise
        finally:
            os.close(memfd)
        for fd in theirs:
            os.close(fd)
        return ours

    async def spawn(self, command: SandboxCommand) -> SandboxProcess:
        """Starts a command in the sandbox; UNAVAILABLE when too many are running already."""
        self.check_runnable()
        if not self._command_uids:
            raise ResourceExhausted(
                "too many MCP server processes are running on this tools service", reason="SANDBOX_BUSY"
            )
        slot = self._command_uids.pop()
        try:
            await self.start()
            run_id = next(self._ids)
            payload = {
                "kind": "command",
                **self._isolation(),
                "network": command.network,
                "argv": list(command.argv),
                "env": command.env,
                "cwd": command.cwd,
                "limits": {
                    "memory_bytes": command.memory_bytes,
                    "processes": command.processes,
                    "file_bytes": command.file_bytes,
                    "workdir_bytes": command.workdir_bytes,
                    "open_files": 4096,
                },
            }
            header = self._header(run_id, slot, command.network, command.readonly_paths)
            fds = await self._launch(header, payload, 4, [0])
        except BaseException:
            self._command_uids.append(slot)
            raise
        for fd in fds:
            os.set_blocking(fd, False)
        stdin, stdout, stderr, status = fds
        return SandboxProcess(
            self, run_id, (stdin, stdout, stderr, status), lambda: self._command_uids.append(slot)
        )

    async def _stop_on(self, overflow: asyncio.Event, run_id: int) -> None:
        await overflow.wait()
        await self._send({"op": "stop", "id": run_id}, [])

    async def _send(self, message: dict[str, Any], fds: list[int]) -> None:
        sock = self._sock
        if sock is None:
            raise Unavailable("the sandbox is not running", reason="SANDBOX_UNAVAILABLE")
        data = json.dumps(message).encode()
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        loop = asyncio.get_running_loop()
        async with self._send_lock:
            while True:
                try:
                    sock.sendmsg([data], ancillary)
                    return
                except BlockingIOError:
                    ready = loop.create_future()
                    loop.add_writer(sock, ready.set_result, None)
                    try:
                        await ready
                    finally:
                        loop.remove_writer(sock)
                except OSError as exc:
                    raise Unavailable(
                        f"the sandbox is not reachable: {exc}", reason="SANDBOX_UNAVAILABLE"
                    ) from exc

    async def _restart(self) -> None:
        await self._stop_process()
        await self.start()

    async def _stop_process(self) -> None:
        # The drainer's reader must go before its socket does: asyncio would keep a stale registration
        # for the fd number, and a new socket given the same number would never be watched.
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
            self._drainer = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            # Closing the socket makes the fork server stop its runs and exit; make sure it does.
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def aclose(self) -> None:
        """Stops the fork server and every run still going."""
        async with self._start_lock:
            await self._stop_process()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _read(
    fd: int,
    into: _Stream,
    keep: int,
    hard_limit: int | None,
    overflow: asyncio.Event,
    *,
    shared: _Stream | None = None,
) -> None:
    """Reads `fd` to its end, keeping the first `keep` bytes; sets `overflow` past `hard_limit`."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    readable = asyncio.Event()
    loop.add_reader(fd, readable.set)
    try:
        while True:
            await readable.wait()
            readable.clear()
            while True:
                try:
                    chunk = os.read(fd, 256 * 1024)
                except BlockingIOError:
                    break
                if not chunk:
                    return
                into.total += len(chunk)
                room = keep - len(into.kept)
                if room > 0:
                    into.kept += chunk[:room]
                limit = hard_limit if hard_limit is not None else keep
                produced = into.total + (shared.total if shared is not None else 0)
                if produced > limit:
                    overflow.set()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _decode(stream: _Stream) -> str:
    text = stream.kept.decode("utf-8", "replace")
    if stream.total > len(stream.kept):
        text += f"\n[... {stream.total - len(stream.kept)} more bytes not kept]"
    return text


_SIGNALS: dict[int, str] = {
    signal.SIGSEGV: "crashed with a segmentation fault",
    signal.SIGBUS: "crashed with a bus error",
    signal.SIGFPE: "crashed with a floating-point exception",
    signal.SIGILL: "crashed with an illegal instruction",
    signal.SIGABRT: "aborted",
    signal.SIGXCPU: "used up its CPU time limit",
    signal.SIGXFSZ: "tried to write a file larger than its file size limit",
}


def _outcome(
    job: SandboxJob,
    out: _Stream,
    err: _Stream,
    result: _Stream,
    status_stream: _Stream,
    overflowed: bool,
    backstop: bool,
) -> SandboxOutcome:
    limits = job.limits
    try:
        status: dict[str, Any] = json.loads(status_stream.kept or b"{}")
    except ValueError:
        status = {}
    outcome = SandboxOutcome(
        ok=False,
        stdout=_decode(out),
        stderr=_decode(err),
        cpu_seconds=float(status.get("cpu_seconds", 0.0)),
        exit_code=status.get("exit"),
        signal=status.get("signal"),
        timed_out=bool(status.get("timeout")) or backstop,
        output_exceeded=overflowed,
        oom_killed=int(status.get("oom_kills") or 0) > 0,
    )
    if "setup_error" in status:
        outcome.error = f"the sandbox could not start the tool: {status['setup_error']}"
        return outcome
    if outcome.timed_out:
        outcome.error = f"the tool did not finish within {limits.timeout_seconds:g} s and was stopped"
        return outcome
    if overflowed:
        if result.total > len(result.kept):
            outcome.error = "the tool returned a result too large to transfer and was stopped"
        else:
            outcome.error = f"the tool wrote more than {limits.output_bytes} bytes of output and was stopped"
        return outcome
    if not status:
        outcome.error = "the sandbox stopped before the tool finished"
        return outcome
    reply: dict[str, Any] | None = None
    if result.kept:
        with contextlib.suppress(ValueError):
            parsed = json.loads(result.kept)
            reply = parsed if isinstance(parsed, dict) else None
    if outcome.signal is not None:
        sig = outcome.signal
        if outcome.oom_killed:
            outcome.error = (
                f"MemoryError: the tool's processes together exceeded the memory limit of "
                f"{limits.memory_bytes // (1 << 20)} MiB and were stopped"
            )
        elif sig == signal.SIGKILL and outcome.cpu_seconds >= int(limits.timeout_seconds + 0.999):
            outcome.error = "the tool used up its CPU time limit and was stopped"
        else:
            name = _SIGNALS.get(sig) or f"was killed by signal {signal.Signals(sig).name}"
            outcome.error = f"the tool {name}"
        return outcome
    if reply is None:
        outcome.error = f"the tool exited with code {outcome.exit_code} before returning a result"
        return outcome
    if reply.get("ok"):
        outcome.ok = True
        outcome.text = str(reply.get("text", ""))
        outcome.length = int(reply.get("length", len(outcome.text)))
        return outcome
    error = str(reply.get("error") or "the tool failed")
    if reply.get("kind") == "memory":
        error = f"MemoryError: the tool exceeded its memory limit of {limits.memory_bytes // (1 << 20)} MiB"
    trace = str(reply.get("traceback") or "")
    outcome.error = f"{error}\n{trace}".rstrip() if trace else error
    return outcome
