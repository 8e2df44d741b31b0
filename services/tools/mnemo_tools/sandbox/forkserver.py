"""The sandbox fork server: a small, clean process that starts one supervisor per sandboxed process.

Started by the tools service as `python -I -S forkserver.py FD` (standard library only, nothing of the
service imported), it waits on a Unix socket (descriptor FD) for jobs that carry file descriptors: the
job's payload (a memfd) and the pipes of the process. The server never reads a payload, so no job's data
(arguments, secrets) ever sits in the memory that later jobs are forked from.

Per job:  fork server -> supervisor (enters new user*, mount, pid, network, IPC, UTS and cgroup
                         namespaces and builds the job's root file system)
                      -> sandboxed process (pid 1 of the new pid namespace: a fresh /proc, the minimal
                         read-only root pivoted to, no capabilities, rlimits, a seccomp filter; then it
                         calls a tool's function or executes an MCP server's command).
* As root the namespaces need no user namespace and each job gets a uid of its own; otherwise an
unprivileged user namespace provides them (docs/adr/0300-tool-sandbox.md). The supervisor enforces the
wall-clock timeout and reports how the process ended; when the process ends, the kernel kills everything
left in its pid namespace.
"""

from __future__ import annotations

import array

# Modules tools commonly use, imported once here so that each run starts with them loaded.
import asyncio
import base64  # noqa: F401
import collections  # noqa: F401
import contextlib
import ctypes
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import errno
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
import stat
import statistics  # noqa: F401
import string  # noqa: F401
import sys
import textwrap  # noqa: F401
import time
import traceback
import typing
import urllib.parse  # noqa: F401
import uuid  # noqa: F401

RESULT_FD = 3
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Where a job's root is assembled, in the supervisor's own mount namespace, before it is pivoted to: a
# directory no path a job may need lives under (its package environment may be under /tmp).
STAGING = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
WORKDIR = "/tmp/work"
# What a job's root holds: the system's programs and libraries, read-only. Nothing else of the host's
# file system is there: no /home, /root, /var, /srv, /opt, /mnt or /run, so no MNEMO_HOME.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The part of /etc that programs need to start, resolve names and check certificates.
ETC_ENTRIES = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "gai.conf",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "pki",
    "protocols",
    "resolv.conf",
    "services",
    "ssl",
    "timezone",
)
DEVICES = ("null", "zero", "full", "random", "urandom")
DEVICE_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}
# Packages installed for the interpreter (the service's own, in a container image) are not the tool's.
HIDDEN_UNDER_STDLIB = ("site-packages", "dist-packages")
# Where the supervisor keeps the job's descriptors, clear of 0-3 which the sandboxed process uses.
HIGH_FD = 100
# Descriptors one job message may carry: its payload, three streams and its status.
MAX_FDS = 8
# The interpreter's own library directories (python -I -S: the standard library only).
STDLIB_DIRS = [path for path in sys.path if os.path.isdir(path)]
# System calls a sandboxed process never needs: new namespaces and mounts, reading or changing other
# processes, the kernel's own interfaces (eBPF, perf, keyrings, io_uring, modules) and the clock.
DENIED_SYSCALLS = (
    "unshare",
    "setns",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "kcmp",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "quotactl",
    "quotactl_fd",
    "open_by_handle_at",
    "name_to_handle_at",
    "lookup_dcookie",
    "uselib",
    "vhangup",
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "fanotify_init",
)
# ioctl requests that push input into a terminal (a sandboxed process has none, but may inherit one).
DENIED_IOCTLS = (0x5412, 0x541C)  # TIOCSTI, TIOCLINUX

_libc = ctypes.CDLL(None, use_errno=True)
_stop_requested = False


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _ScmpArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), "prctl")


def _seccomp_program() -> bytes | None:
    """The seccomp filter of every sandboxed process, compiled once with libseccomp (None without it)."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ScmpArgCmp),
    ]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    badarch_attribute = 2  # SCMP_FLTATR_ACT_BADARCH
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    masked_eq = 7
    ctx = lib.seccomp_init(allow)
    if not ctx:
        return None
    try:
        # Other architectures' system call numbers (i386 through int 0x80, x32) end the process.
        lib.seccomp_attr_set(ctx, badarch_attribute, kill)

        def rule(action: int, name: str, *conditions: tuple[int, int, int]) -> None:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                return  # not a system call of this architecture
            args = (_ScmpArgCmp * max(1, len(conditions)))(
                *(_ScmpArgCmp(arg, masked_eq, mask, value) for arg, mask, value in conditions)
            )
            _check(-lib.seccomp_rule_add_array(ctx, action, number, len(conditions), args), f"seccomp {name}")

        for name in DENIED_SYSCALLS:
            rule(eperm, name)
        # clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc fall back to clone.
        rule(enosys, "clone3")
        for flag in (
            CLONE_NEWNS,
            CLONE_NEWCGROUP,
            CLONE_NEWUTS,
            CLONE_NEWIPC,
            CLONE_NEWUSER,
            CLONE_NEWPID,
            CLONE_NEWNET,
        ):
            rule(eperm, "clone", (0, flag, flag))
        for request in DENIED_IOCTLS:
            rule(eperm, "ioctl", (1, 0xFFFFFFFF, request))
        memfd = os.memfd_create("mnemo-seccomp", os.MFD_CLOEXEC)
        try:
            _check(-lib.seccomp_export_bpf(ctx, memfd), "seccomp export")
            os.lseek(memfd, 0, os.SEEK_SET)
            program = b""
            while chunk := os.read(memfd, 65536):
                program += chunk
            return program
        finally:
            os.close(memfd)
    except OSError:
        return None
    finally:
        lib.seccomp_release(ctx)


SECCOMP = _seccomp_program()


def _apply_seccomp() -> None:
    """Installs the filter (no_new_privs must be set)."""
    if SECCOMP is None:
        return
    buffer = ctypes.create_string_buffer(SECCOMP, len(SECCOMP))
    program = _SockFprog(len(SECCOMP) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    _check(
        _libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(program), 0, 0),
        "seccomp",
    )


def _drop_capabilities() -> None:
    """Clears every capability (bounding, effective, permitted, inheritable, ambient)."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            if ctypes.get_errno() == errno.EINVAL:
                break  # past the kernel's last capability
            raise OSError(ctypes.get_errno(), "cannot drop capabilities")
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def _on_term(signum: int, frame: object) -> None:
    # The wakeup fd (set in the supervisor) wakes the wait; the flag says why.
    global _stop_requested
    _stop_requested = True


def _enter_namespaces(root: bool, network: bool) -> None:
    """Enters new namespaces: with root's privileges, or through an unprivileged user namespace."""
    flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID | CLONE_NEWCGROUP
    if not network:
        flags |= CLONE_NEWNET
    if root:
        _unshare(flags)
    else:
        uid, gid = os.getuid(), os.getgid()
        _unshare(flags | CLONE_NEWUSER)
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
        # No namespaces nested in this one: the seccomp filter already refuses them; this holds without it.
        for kind in ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup"):
            try:
                with open(f"/proc/sys/user/max_{kind}_namespaces", "w") as f:
                    f.write("0")
            except OSError:
                pass
    _check(_libc.sethostname(b"sandbox", 7), "sethostname")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def _open_path(path: str) -> int | None:
    try:
        return os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None


def _bind(fd: int, target: str, *, writable: bool = False) -> None:
    """Binds what `fd` (an O_PATH descriptor) names onto `target`, read-only unless `writable`."""
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    if writable:
        return
    # Flags the source mount carries must stay (a user namespace may not clear them); read-only is added.
    kept = os.statvfs(target).f_flag
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
    for stat_flag, mount_flag in (
        (os.ST_NOEXEC, MS_NOEXEC),
        (os.ST_NOATIME, MS_NOATIME),
        (os.ST_NODIRATIME, MS_NODIRATIME),
        (os.ST_RELATIME, MS_RELATIME),
    ):
        if kept & stat_flag:
            flags |= mount_flag
    _mount(None, target, None, flags)


def _covered(path: str, trees: list[str]) -> bool:
    return any(path == tree or path.startswith(tree.rstrip("/") + "/") for tree in trees)


def _mask(target: str) -> None:
    """Covers a directory of the job's root with an empty read-only one."""
    _mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=555")


def _is_dir(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


# What the service said at start: paths hidden in every job's root (its MNEMO_HOME) and the cgroup
# under which each job gets one of its own.
CONFIG: dict[str, object] = {"hidden_paths": [], "cgroup_parent": ""}


def _build_root() -> None:
    """Assembles the part of a job's root that every job shares, under STAGING: the system's directories,
    the interpreter's library and /dev. `_furnish` adds the job's own part when the job arrives."""
    hidden = [str(p) for p in CONFIG["hidden_paths"]]  # type: ignore[attr-defined]
    sources = {path: _open_path(path) for path in (*SYSTEM_DIRS, *STDLIB_DIRS) if not os.path.islink(path)}
    etc = {name: _open_path(f"/etc/{name}") for name in ETC_ENTRIES if not os.path.islink(f"/etc/{name}")}
    devices = {name: _open_path(f"/dev/{name}") for name in DEVICES}
    _mount("tmpfs", STAGING, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=755")
    bound: list[str] = []
    for path in SYSTEM_DIRS:
        fd = sources.get(path)
        if os.path.islink(path):
            os.symlink(os.readlink(path), STAGING + path)
        elif fd is not None:
            os.mkdir(STAGING + path, 0o755)
            _bind(fd, STAGING + path)
            bound.append(path)
    os.mkdir(f"{STAGING}/etc", 0o755)
    for name in ETC_ENTRIES:
        target = f"{STAGING}/etc/{name}"
        if os.path.islink(f"/etc/{name}"):
            os.symlink(os.readlink(f"/etc/{name}"), target)
        elif (fd := etc.get(name)) is not None:
            _bind_new(fd, target)
    for path in STDLIB_DIRS:
        fd = sources.get(path)
        if not _covered(path, bound) and fd is not None:
            _bind_new(fd, STAGING + path)
            bound.append(path)
        for name in HIDDEN_UNDER_STDLIB:
            if os.path.isdir(f"{STAGING}{path}/{name}"):
                _mask(f"{STAGING}{path}/{name}")
    for path in hidden:
        if _covered(path, bound) and os.path.isdir(STAGING + path):
            _mask(STAGING + path)
    os.mkdir(f"{STAGING}/dev", 0o755)
    _mount("tmpfs", f"{STAGING}/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=755")
    for name, fd in devices.items():
        if fd is not None:
            os.close(os.open(f"{STAGING}/dev/{name}", os.O_CREAT | os.O_WRONLY, 0o666))
            _bind(fd, f"{STAGING}/dev/{name}", writable=True)
    for name, destination in DEVICE_LINKS.items():
        os.symlink(destination, f"{STAGING}/dev/{name}")
    os.mkdir(f"{STAGING}/dev/shm", 0o755)
    _mount(None, f"{STAGING}/dev", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    os.mkdir(f"{STAGING}/tmp", 0o755)
    os.mkdir(f"{STAGING}/proc", 0o555)
    for fd in (*sources.values(), *etc.values(), *devices.values()):
        if fd is not None:
            os.close(fd)


def _furnish(job: dict[str, object], uid: int, readonly: list[str]) -> None:
    """The job's own part of its root: a private /tmp (its working directory is /tmp/work) and /dev/shm
    of its size, its user in /etc/passwd, and its read-only paths."""
    limits = job["limits"]
    assert isinstance(limits, dict)
    size = int(limits["workdir_bytes"])
    _mount("tmpfs", f"{STAGING}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777")
    os.mkdir(STAGING + WORKDIR, 0o700)
    os.chown(STAGING + WORKDIR, uid, uid)
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    _mount("tmpfs", f"{STAGING}/dev/shm", "tmpfs", flags, f"size={size},mode=1777")
    with open(f"{STAGING}/etc/passwd", "w") as f:
        f.write(
            f"root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:{uid}:{uid}::{WORKDIR}:/usr/sbin/nologin\n"
        )
    with open(f"{STAGING}/etc/group", "w") as f:
        f.write(f"root:x:0:\nsandbox:x:{uid}:\n")
    for path in readonly:
        fd = _open_path(path) if os.path.isabs(path) and ".." not in path.split("/") else None
        if fd is not None:
            _bind_new(fd, STAGING + os.path.normpath(path))
            os.close(fd)


def _bind_new(fd: int, target: str) -> None:
    """Creates the mount point (a directory or an empty file, like the source) and binds read-only."""
    if _is_dir(fd):
        os.makedirs(target, 0o755, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _bind(fd, target)


def _pivot() -> None:
    """In the sandboxed process: the job's root becomes "/", read-only, and the host's is gone."""
    os.chdir(STAGING)
    _check(_libc.pivot_root(b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


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


def _open_fds() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))


def _send(sock: socket.socket, message: dict[str, object], fds: list[int]) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([json.dumps(message).encode()], ancillary)


def _receive(sock: socket.socket) -> tuple[dict[str, object] | None, list[int]]:
    """One message and its descriptors; (None, []) when the other end is gone."""
    fds = array.array("i")
    while True:
        try:
            data, ancdata, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
            break
        except InterruptedError:
            continue
    for level, kind, cmsg in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(cmsg[: len(cmsg) - (len(cmsg) % fds.itemsize)])
    return (json.loads(data) if data else None), list(fds)


def _read_payload(fd: int) -> dict[str, typing.Any]:
    """The job in a payload memfd (read from its start: its offset is shared with other readers)."""
    job: dict[str, typing.Any] = json.loads(os.pread(fd, os.fstat(fd).st_size, 0))
    return job


def _start_pid1() -> tuple[int, socket.socket]:
    """Forks the sandboxed process ahead of its job: pid 1 of the new pid namespace mounts its /proc
    (while the host's is still there, as the kernel requires in a user namespace) and waits for the job."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ours.close()
            code = _pid1(theirs)
        except BaseException:
            with contextlib.suppress(BaseException):
                traceback.print_exc()
        finally:
            os._exit(code)
    theirs.close()
    return pid, ours


def _pid1(sock: socket.socket) -> int:
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        _mount("proc", f"{STAGING}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        proc = True
    except OSError:
        proc = False  # a container's masked /proc forbids a new one in a user namespace: none, then
    sock.send(b"1" if proc else b"0")
    message, fds = _receive(sock)
    if message is None:
        return 0
    sock.close()
    job = _read_payload(fds[0])
    os.close(fds[0])
    job.update(message)
    _sandboxed(job, fds[1:], True)
    return 0


def _sandboxed(job: dict[str, object], stdio: list[int], isolated: bool) -> None:
    """Runs as the sandboxed process: finish the sandbox, drop every privilege, then do the job."""
    limits = job["limits"]
    assert isinstance(limits, dict)
    root = os.geteuid() == 0
    uid = int(job["uid"])  # type: ignore[call-overload]
    if isolated:
        _pivot()
    devnull = os.open(os.devnull, os.O_RDONLY)
    if job["kind"] == "function":
        stdio = [devnull, *stdio]
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
    keep = set(range(len(stdio)))
    for fd in _open_fds():
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    os.setsid()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for name, kind in (
        ("memory_bytes", resource.RLIMIT_AS),
        ("file_bytes", resource.RLIMIT_FSIZE),
        ("processes", resource.RLIMIT_NPROC),
        ("open_files", resource.RLIMIT_NOFILE),
    ):
        if limits.get(name):
            resource.setrlimit(kind, (int(limits[name]),) * 2)
    if limits.get("cpu_seconds"):
        cpu = int(limits["cpu_seconds"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if isolated or root:
        _drop_capabilities_and_become(uid, root)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _apply_seccomp()
    os.chdir(str(job["workdir"]))
    env = job["env"]
    assert isinstance(env, dict)
    env = {str(k): str(v) for k, v in env.items()}
    if job["kind"] == "command":
        argv = [str(a) for a in job["argv"]]  # type: ignore[attr-defined]
        if job.get("cwd"):
            os.chdir(str(job["cwd"]))
        try:
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            os.write(2, f"cannot start {argv[0]}: {exc.strerror}\n".encode())
            os._exit(127)
    os.environ.clear()
    os.environ.update(env)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="replace", write_through=True
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="replace", write_through=True
    )
    result = _call(job)
    data = json.dumps(result, ensure_ascii=False).encode("utf-8", "replace")
    view = memoryview(data)
    while view:
        written = os.write(RESULT_FD, view)
        view = view[written:]


def _drop_capabilities_and_become(uid: int, root: bool) -> None:
    if root:
        # The bounding set first (that needs CAP_SETPCAP); setresuid away from root clears the rest.
        for cap in range(64):
            if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
                break
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        # setuid cleared "dumpable", which makes /proc/self root-owned.
        _prctl(PR_SET_DUMPABLE, 1)
    else:
        _drop_capabilities()


def _call(job: dict[str, object]) -> dict[str, object]:
    limit = int(job["return_chars"])  # type: ignore[call-overload]
    namespace: dict[str, object] = {"__name__": "__tool__", "__builtins__": __builtins__}
    try:
        sys.path[:] = [*STDLIB_DIRS, *(str(p) for p in job.get("site_dirs", []))]  # type: ignore[attr-defined]
        sys.path_importer_cache.clear()
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


def _enter_cgroup() -> str | None:
    """Puts this supervisor (and so its job) into a cgroup of its own under the delegated one."""
    parent = str(CONFIG.get("cgroup_parent") or "")
    if not parent:
        return None
    path = f"{parent}/job-{os.getpid()}"
    try:
        os.mkdir(path, 0o755)
        with open(f"{path}/cgroup.procs", "w") as f:
            f.write("0")
    except OSError:
        return None
    return path


def _limit_cgroup(path: str | None, limits: dict[str, object]) -> None:
    """The job's memory and process limits for its cgroup as a whole."""
    if path is None:
        return
    for name, value in (
        ("memory.max", limits.get("memory_bytes") or "max"),
        ("memory.swap.max", 0),
        ("pids.max", limits.get("processes") or "max"),
    ):
        with contextlib.suppress(OSError), open(f"{path}/{name}", "w") as f:
            f.write(str(value))


def _oom_kills(path: str | None) -> int:
    if path is None:
        return 0
    try:
        with open(f"{path}/memory.events") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except OSError:
        pass
    return 0


class _Prepared:
    """A supervisor that has entered its namespaces and built the shared part of a job's root, with the
    sandboxed process (pid 1 of its pid namespace) forked and waiting."""

    def __init__(self, network: bool) -> None:
        self.cgroup = _enter_cgroup()
        _enter_namespaces(os.geteuid() == 0, network)
        _build_root()
        self.pid, self.sock = _start_pid1()
        self.proc = self.sock.recv(1) == b"1"


def _supervise(header: dict[str, object], fds: list[int], prepared: _Prepared | None = None) -> int:
    """Runs in the supervisor: read the job, isolate (unless `prepared` already did), start the sandboxed
    process, time it, report."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGTERM, _on_term)
    moved = _move_fds(fds, HIGH_FD)
    streams = int(header.get("streams", 3))  # type: ignore[call-overload]
    payload, stdio, status = moved[0], moved[1 : 1 + streams], moved[1 + streams]
    readonly = [str(p) for p in header.get("readonly_paths", [])]  # type: ignore[attr-defined]
    job = _read_payload(payload)
    root = os.geteuid() == 0
    uid = int(header["uid"]) if root else os.getuid()  # type: ignore[call-overload]
    isolated = bool(job.get("isolate"))
    report: dict[str, object] = {}
    started = time.monotonic()
    extra = {"uid": uid}
    try:
        if isolated:
            prepared = prepared or _Prepared(bool(job.get("network")))
            _limit_cgroup(prepared.cgroup, job["limits"])
            _furnish(job, uid, readonly)
            extra["workdir"] = WORKDIR
        else:
            import tempfile

            extra["workdir"] = tempfile.mkdtemp(
                prefix="mnemo-tool-", dir=str(job.get("fallback_workdir") or None)
            )
            if root:
                os.chown(str(extra["workdir"]), uid, uid)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError as exc:
        _report(status, {"setup_error": f"cannot isolate the run: {exc}"})
        return 0
    if prepared is not None:
        pid = prepared.pid
        _send(prepared.sock, extra, [payload, *stdio])
        prepared.sock.close()
        report["proc"] = prepared.proc
    else:
        job.update(extra)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _sandboxed(job, stdio, False)
                code = 0
            except BaseException:
                with contextlib.suppress(BaseException):
                    traceback.print_exc()
            finally:
                os._exit(code)
    os.close(payload)
    for fd in stdio:
        os.close(fd)
    timeout = job["limits"].get("timeout_seconds")
    report.update(_wait(pid, float(timeout) if timeout else None, wake_read))
    report["duration"] = time.monotonic() - started
    report["oom_kills"] = _oom_kills(prepared.cgroup if prepared else None)
    if not isolated:
        # Without a pid namespace, whatever the process started is still alive: end it.
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        import shutil

        shutil.rmtree(str(extra["workdir"]), ignore_errors=True)
    _report(status, report)
    return 0


def _spare(sock: socket.socket) -> int:
    """A supervisor prepared before its job (off the job's critical path), waiting for the fork server
    to hand it one."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        prepared = _Prepared(network=False)
    except OSError:
        return 1
    message, fds = _receive(sock)
    if message is None:
        return 0
    sock.close()
    return _supervise(message, fds, prepared)


def _wait(pid: int, timeout: float | None, wake: int) -> dict[str, object]:
    pidfd = os.pidfd_open(pid)
    outcome: dict[str, object] = {}
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if _stop_requested:
            outcome["stopped"] = True
            os.kill(pid, signal.SIGKILL)
            break
        if remaining is not None and remaining <= 0:
            outcome["timeout"] = True
            os.kill(pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([pidfd, wake], [], [], remaining)
        if pidfd in ready:
            break
        if wake in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake, 4096)
    _, status, usage = os.wait4(pid, 0)
    os.close(pidfd)
    if os.WIFSIGNALED(status):
        outcome["signal"] = os.WTERMSIG(status)
    else:
        outcome["exit"] = os.WEXITSTATUS(status)
    outcome["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    outcome["max_rss_kb"] = usage.ru_maxrss
    return outcome


def _report(fd: int, report: dict[str, object]) -> None:
    try:
        os.write(fd, json.dumps(report).encode())
    finally:
        os.close(fd)


_PROBE_SOURCE = """
def probe():
    import os
    seen = {"uid": os.getuid(), "root": sorted(os.listdir("/"))}
    seen["pids"] = sorted(p for p in os.listdir("/proc") if p.isdigit()) if os.path.isdir("/proc/self") else []
    with open("/proc/self/status") as f:
        seen["capabilities"] = [line.split()[1] for line in f if line.startswith("CapEff")][0]
    return seen
"""


def _probe(uid: int) -> dict[str, object]:
    """What isolation this machine allows, found by running a probe job in full isolation."""
    found: dict[str, object] = {
        "root": os.geteuid() == 0,
        "isolated": False,
        "user_namespace": False,
        "own_uid": False,
        "proc": False,
        "seccomp": SECCOMP is not None,
        "error": "",
    }
    job = {
        "kind": "function",
        "isolate": True,
        "source": _PROBE_SOURCE,
        "function": "probe",
        "arguments": {},
        "env": {},
        "return_chars": 65536,
        "limits": {"timeout_seconds": 30, "workdir_bytes": 1 << 20},
    }
    memfd = os.memfd_create("mnemo-probe", os.MFD_CLOEXEC)
    os.write(memfd, json.dumps(job).encode())
    pipes = [os.pipe() for _ in range(4)]
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for read, _ in pipes:
                os.close(read)
            code = _supervise({"uid": uid}, [memfd, *(write for _, write in pipes)])
        finally:
            os._exit(code)
    os.close(memfd)
    outputs = []
    for _, write in pipes:
        os.close(write)
    for read, _ in pipes:
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
        os.close(read)
        outputs.append(b"".join(chunks))
    os.waitpid(pid, 0)
    if CONFIG.get("cgroup_parent"):
        with contextlib.suppress(OSError):
            os.rmdir(f"{CONFIG['cgroup_parent']}/job-{pid}")
    _, err, result, status = outputs
    try:
        report = json.loads(status or b"{}")
        seen = json.loads(result or b"{}")
    except ValueError:
        report, seen = {}, {}
    if "setup_error" in report or not seen.get("ok"):
        found["error"] = str(report.get("setup_error") or err.decode("utf-8", "replace").strip()[-500:])
        return found
    inside = json.loads(seen["text"])
    expected = {path.split("/")[1] for path in (*SYSTEM_DIRS, *STDLIB_DIRS, "/etc", "/dev", "/tmp", "/proc")}
    found["isolated"] = set(inside["root"]) <= expected and inside["capabilities"] == "0000000000000000"
    found["user_namespace"] = not found["root"]
    found["own_uid"] = bool(found["root"]) and inside["uid"] == uid
    found["proc"] = bool(report.get("proc")) and inside["pids"] == ["1"]
    return found


class _Server:
    """The fork server's state: the jobs running (by id), the spare supervisor, the cgroups to remove."""

    def __init__(self, control: socket.socket, isolated: bool) -> None:
        self.control = control
        self.isolated = isolated
        self.running: dict[int, int] = {}
        self.cgroups: dict[int, str] = {}
        self.spare: tuple[int, socket.socket] | None = None

    def start_spare(self) -> None:
        if not self.isolated or self.spare is not None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = self._fork(lambda: _spare(theirs), close=[ours])
        theirs.close()
        self.spare = (pid, ours)

    def _fork(self, body: typing.Callable[[], int], close: list[socket.socket]) -> int:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for sock in (self.control, *close):
                    sock.close()
                if self.spare is not None:
                    self.spare[1].close()
                code = body()
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        if CONFIG.get("cgroup_parent"):
            self.cgroups[pid] = f"{CONFIG['cgroup_parent']}/job-{pid}"
        return pid

    def run(self, message: dict[str, object], fds: list[int]) -> None:
        """Hands the job to the spare when it suits (isolated, no network), else to a new supervisor."""
        pid = None
        if self.spare is not None and message.get("spare"):
            pid, sock = self.spare
            self.spare = None
            try:
                _send(sock, message, fds)
            except OSError:
                pid = None  # the spare could not isolate (it has ended): a supervisor of its own
            sock.close()
        if pid is None:
            pid = self._fork(lambda: _supervise(message, fds), close=[])
        self.running[int(message["id"])] = pid  # type: ignore[call-overload]
        for fd in fds:
            os.close(fd)

    def stop(self, run_id: int) -> None:
        pid = self.running.get(run_id)
        if pid is not None:
            _signal(pid, signal.SIGTERM)

    def close(self) -> None:
        for pid in self.running.values():
            _signal(pid, signal.SIGTERM)
        if self.spare is not None:
            _signal(self.spare[0], signal.SIGKILL)

    def reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for run_id, child in list(self.running.items()):
                if child == pid:
                    del self.running[run_id]
            if self.spare is not None and self.spare[0] == pid:
                self.spare[1].close()
                self.spare = None
            cgroup = self.cgroups.pop(pid, None)
            if cgroup is not None:
                with contextlib.suppress(OSError):
                    os.rmdir(cgroup)


def serve(control: int) -> None:
    """The fork server's loop: start jobs, stop them on request, reap supervisors."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    sock = socket.socket(fileno=control)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    hello = json.loads(sock.recv(65536))
    CONFIG.update(
        hidden_paths=list(hello.get("hidden_paths", [])), cgroup_parent=hello.get("cgroup_parent", "")
    )
    capabilities = _probe(int(hello["probe_uid"]))
    sock.send(json.dumps({"op": "ready", "capabilities": capabilities}).encode())
    server = _Server(sock, bool(capabilities["isolated"]))
    server.start_spare()
    while True:
        try:
            ready, _, _ = select.select([sock.fileno(), wake_read], [], [])
        except InterruptedError:
            continue
        if wake_read in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 4096)
            server.reap()
        if sock.fileno() not in ready:
            continue
        message, fds = _receive(sock)
        if message is None:
            server.close()
            return
        if message["op"] == "run":
            server.run(message, fds)
            server.start_spare()
        elif message["op"] == "stop":
            server.stop(int(message["id"]))  # type: ignore[call-overload]


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


if __name__ == "__main__":
    try:
        serve(int(sys.argv[1]))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise
