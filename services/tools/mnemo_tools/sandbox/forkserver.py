"""The sandbox fork server: a small, clean process that starts one supervisor per tool run.

Started by the tools service as `python -I -S forkserver.py FD` (standard library only, nothing of the
service imported), it waits on a Unix socket (descriptor FD) for run requests that carry five file descriptors:
the run's payload (a memfd), stdout, stderr, result and status pipes. The server itself never reads a
payload, so no run's data (arguments, secrets) ever sits in the memory that later runs are forked from.

Per run:  fork server -> supervisor (root, new mount/net/ipc/uts namespaces, private /tmp)
                      -> tool process (pid 1 of a new pid namespace, an unprivileged uid of its own,
                         rlimits, no environment but the agent's variables, cwd /tmp/work).
The supervisor enforces the wall-clock timeout and reports how the tool process ended; when the tool
process ends, the kernel kills everything left in its pid namespace.
"""

from __future__ import annotations

import array

# Modules tools commonly use, imported once here so that each run starts with them loaded.
import asyncio
import base64  # noqa: F401
import collections  # noqa: F401
import ctypes
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import errno
import fcntl
import functools  # noqa: F401
import hashlib  # noqa: F401
import io
import itertools  # noqa: F401
import json
import math  # noqa: F401
import os
import random  # noqa: F401
import re  # noqa: F401
import resource
import select
import signal
import socket
import statistics  # noqa: F401
import string  # noqa: F401
import sys
import textwrap  # noqa: F401
import time
import traceback
import typing  # noqa: F401
import urllib.parse  # noqa: F401
import uuid  # noqa: F401

RESULT_FD = 3
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
# World-writable places that a run must not share with the host or with other runs.
MASKED_DIRS = ("/var/tmp", "/dev/shm", "/dev/mqueue", "/run", "/var/lock")
WORKDIR = "/tmp/work"

# Where the supervisor keeps the run's descriptors, clear of 0-3 which the tool process uses.
HIGH_FD = 100
# The interpreter's own library directories (python -I -S: the standard library only).
STDLIB_DIRS = [path for path in sys.path if os.path.isdir(path)]

_libc = ctypes.CDLL(None, use_errno=True)
_stop_requested = False


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), "prctl")


def _on_term(signum: int, frame: object) -> None:
    # The wakeup fd (set in the supervisor) wakes the wait; the flag says why.
    global _stop_requested
    _stop_requested = True


def _isolate(root: bool, workdir_bytes: int) -> dict[str, bool]:
    """Enters new namespaces and gives the run a private /tmp; returns what was achieved."""
    done = {"mount": False, "network": False, "pid": False}
    if not root:
        # Without root only an unprivileged user namespace can provide a network namespace.
        try:
            uid, gid = os.getuid(), os.getgid()
            _unshare(CLONE_NEWUSER | CLONE_NEWNET)
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"{uid} {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"{gid} {gid} 1")
            done["network"] = True
        except OSError:
            pass
        return done
    try:
        _unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)
        _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
        _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={workdir_bytes},mode=1777")
        for path in MASKED_DIRS:
            if os.path.isdir(path) and not os.path.islink(path):
                flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY
                _mount("tmpfs", path, "tmpfs", flags, "size=4k,mode=755")
        done["mount"] = True
    except OSError:
        pass
    for flag, name in ((CLONE_NEWNET, "network"), (CLONE_NEWPID, "pid")):
        try:
            _unshare(flag)
            done[name] = True
        except OSError:
            pass
    return done


def _move_fds(fds: list[int], first: int) -> list[int]:
    """Duplicates `fds` to first, first+1, ... (above every fd in use), closing the originals."""
    moved = []
    for i, fd in enumerate(fds):
        target = first + i
        os.dup2(fd, target, inheritable=True)
        moved.append(target)
    for fd in fds:
        if fd not in moved:
            os.close(fd)
    return moved


def _tool_process(job: dict[str, object], out: int, err: int, res: int, path_fds: dict[str, int]) -> None:
    """Runs in the tool process: drop privileges, apply limits, run the function, write the result."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    limits = job["limits"]
    assert isinstance(limits, dict)
    root = os.geteuid() == 0
    uid = int(job["uid"])  # type: ignore[call-overload]
    if job.get("pid_namespace"):
        # A private /proc for the new pid namespace: the tool sees only its own processes.
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.dup2(res, RESULT_FD)
    keep = {0, 1, 2, RESULT_FD, *path_fds.values()}
    for fd in (devnull, out, err, res):
        if fd not in keep:
            os.close(fd)
    for fd in _open_fds():
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    os.setsid()
    if job.get("workdir_owner_fix") and root:
        os.makedirs(WORKDIR, mode=0o700, exist_ok=True)
        os.chown(WORKDIR, uid, uid)
    workdir = str(job["workdir"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (int(limits["memory_bytes"]),) * 2)
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limits["file_bytes"]),) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_NPROC, (int(limits["processes"]),) * 2)
    if root:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        # setuid cleared "dumpable", which makes /proc/self root-owned; the import paths below need it.
        _prctl(PR_SET_DUMPABLE, 1)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    os.chdir(workdir)
    os.environ.clear()
    env = job["env"]
    assert isinstance(env, dict)
    os.environ.update({str(k): str(v) for k, v in env.items()})
    # Imports go through directories opened before privileges were dropped (/proc/self/fd/N), so the
    # tool can read the interpreter's library without being able to reach its (private) parents.
    reachable = {path: f"/proc/self/fd/{fd}" for path, fd in path_fds.items()}
    sys.path[:] = list(reachable.values())
    sys.path_importer_cache.clear()
    _repoint_packages(reachable)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="replace", write_through=True
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="replace", write_through=True
    )
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    result = _call(job)
    data = json.dumps(result, ensure_ascii=False).encode("utf-8", "replace")
    view = memoryview(data)
    while view:
        written = os.write(RESULT_FD, view)
        view = view[written:]


def _repoint_packages(reachable: dict[str, str]) -> None:
    """Makes preloaded packages (encodings, urllib, ...) find their submodules through the new paths."""
    for module in list(sys.modules.values()):
        search = getattr(module, "__path__", None)
        if not isinstance(search, list):
            continue
        for i, entry in enumerate(search):
            for original, replacement in reachable.items():
                if entry == original or entry.startswith(original + os.sep):
                    search[i] = replacement + entry[len(original) :]
                    break


def _call(job: dict[str, object]) -> dict[str, object]:
    limit = int(job["return_chars"])  # type: ignore[call-overload]
    namespace: dict[str, object] = {"__name__": "__tool__", "__builtins__": __builtins__}
    try:
        code = compile(str(job["source"]), "<tool>", "exec")
        exec(code, namespace)
        function = namespace[str(job["function"])]
        arguments = job["arguments"]
        assert isinstance(arguments, dict)
        value = function(**arguments)  # type: ignore[operator]
        if job.get("is_async"):
            value = asyncio.run(value)
        if isinstance(value, str):
            text = value
        else:
            try:
                text = json.dumps(value, ensure_ascii=False, default=str)
            except (TypeError, ValueError, RecursionError):
                text = repr(value)
        return {"ok": True, "text": text[:limit], "length": len(text)}
    except MemoryError:
        namespace.clear()
        return {"ok": False, "error": "MemoryError", "kind": "memory"}
    except SystemExit as exc:
        return {"ok": False, "error": f"the tool called sys.exit({exc.code!r})", "kind": "exit"}
    except BaseException as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<tool>"]
        lines = "".join(traceback.format_list(frames))
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return {"ok": False, "error": detail, "traceback": lines[-4000:], "kind": "exception"}


def _open_fds() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))


def _supervise(header: dict[str, object], fds: list[int], control: int) -> int:
    """Runs in the supervisor: read the job, isolate, start the tool process, time it, report."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGTERM, _on_term)
    os.close(control)
    payload, out, err, res, status = _move_fds(fds, HIGH_FD)
    with os.fdopen(payload, "rb") as f:
        job = json.loads(f.read())
    job["uid"] = header["uid"]
    root = os.geteuid() == 0
    limits = job["limits"]
    report: dict[str, object] = {}
    started = time.monotonic()
    # Opened before /tmp is replaced by the run's own: the environments may live anywhere.
    path_fds = {}
    for path in [*STDLIB_DIRS, *job.get("site_dirs", [])]:
        try:
            opened = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        path_fds[path] = fcntl.fcntl(opened, fcntl.F_DUPFD, HIGH_FD + 10)
        os.close(opened)
    try:
        isolation = _isolate(root, int(limits["workdir_bytes"])) if job.get("isolate", True) else {}
    except OSError as exc:
        _report(status, {"setup_error": f"cannot isolate the run: {exc}"})
        return 0
    report["isolation"] = isolation
    if isolation.get("mount"):
        job["workdir"] = WORKDIR
        job["workdir_owner_fix"] = True
    else:
        import tempfile

        job["workdir"] = tempfile.mkdtemp(prefix="mnemo-tool-", dir=str(job.get("fallback_workdir") or None))
        if root:
            os.chown(str(job["workdir"]), int(header["uid"]), int(header["uid"]))  # type: ignore[call-overload]
    job["pid_namespace"] = bool(isolation.get("pid"))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _tool_process(job, out, err, res, path_fds)
            code = 0
        except BaseException:
            try:
                traceback.print_exc()
            except BaseException:
                pass
        finally:
            os._exit(code)
    for fd in (out, err, res, *path_fds.values()):
        os.close(fd)
    timeout = float(limits["timeout_seconds"])
    report.update(_wait(pid, timeout, wake_read))
    report["duration"] = time.monotonic() - started
    if not job["pid_namespace"]:
        # Without a pid namespace, whatever the tool started is still alive: end it.
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        if root:
            _kill_all_of(int(header["uid"]))  # type: ignore[call-overload]
    if not isolation.get("mount"):
        import shutil

        shutil.rmtree(str(job["workdir"]), ignore_errors=True)
    _report(status, report)
    return 0


def _wait(pid: int, timeout: float, wake: int) -> dict[str, object]:
    pidfd = os.pidfd_open(pid)
    outcome: dict[str, object] = {}
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if _stop_requested:
            outcome["stopped"] = True
            os.kill(pid, signal.SIGKILL)
            break
        if remaining <= 0:
            outcome["timeout"] = True
            os.kill(pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([pidfd, wake], [], [], remaining)
        if pidfd in ready:
            break
        if wake in ready:
            try:
                os.read(wake, 4096)
            except BlockingIOError:
                pass
    _, status, usage = os.wait4(pid, 0)
    os.close(pidfd)
    if os.WIFSIGNALED(status):
        outcome["signal"] = os.WTERMSIG(status)
    else:
        outcome["exit"] = os.WEXITSTATUS(status)
    outcome["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    outcome["max_rss_kb"] = usage.ru_maxrss
    return outcome


def _kill_all_of(uid: int) -> None:
    """Without a pid namespace: kill every process of the run's own uid (what the tool left behind)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setresuid(uid, uid, uid)
            for _ in range(100):
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    break
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _report(fd: int, report: dict[str, object]) -> None:
    try:
        os.write(fd, json.dumps(report).encode())
    finally:
        os.close(fd)


def _probe(uid: int) -> dict[str, bool]:
    """What isolation this machine allows, found by trying it in a throwaway child."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        found = {"root": os.geteuid() == 0, "mount": False, "network": False, "pid": False, "setuid": False}
        try:
            found.update(_isolate(found["root"], 1 << 20))
            if found["root"]:
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                found["setuid"] = True
        except OSError:
            pass
        os.write(write, json.dumps(found).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    probed: dict[str, bool] = json.loads(data or b"{}")
    return probed


def serve(control: int) -> None:
    """The fork server's loop: start runs, stop them on request, reap supervisors."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    sock = socket.socket(fileno=control)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    hello = json.loads(sock.recv(65536))
    sock.send(json.dumps({"op": "ready", "capabilities": _probe(int(hello["probe_uid"]))}).encode())
    running: dict[int, int] = {}
    while True:
        try:
            ready, _, _ = select.select([sock.fileno(), wake_read], [], [])
        except InterruptedError:
            continue
        if wake_read in ready:
            try:
                os.read(wake_read, 4096)
            except BlockingIOError:
                pass
            _reap(running)
        if sock.fileno() not in ready:
            continue
        fds = array.array("i")
        try:
            data, ancdata, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(8 * fds.itemsize))
        except InterruptedError:
            continue
        for level, kind, cmsg in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(cmsg[: len(cmsg) - (len(cmsg) % fds.itemsize)])
        if not data:
            for pid in running.values():
                _signal(pid, signal.SIGTERM)
            return
        message = json.loads(data)
        if message["op"] == "run":
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = _supervise(message, list(fds), control)
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(code)
            running[int(message["id"])] = pid
            for fd in fds:
                os.close(fd)
        elif message["op"] == "stop":
            pid_to_stop = running.get(int(message["id"]))
            if pid_to_stop is not None:
                _signal(pid_to_stop, signal.SIGTERM)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(running: dict[int, int]) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        for run_id, child in list(running.items()):
            if child == pid:
                del running[run_id]


if __name__ == "__main__":
    try:
        serve(int(sys.argv[1]))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise
