"""cgroup v2 limits for sandbox jobs, where the tools service was given a cgroup of its own to manage.

A delegated cgroup D (systemd `Delegate=yes`, or a directory the operator made writable for the service)
is arranged as D/service (the service and its fork server) and D/runs/<job> (one cgroup per job, with
`memory.max`, `memory.swap.max` = 0 and `pids.max`): the kernel bounds the memory and the processes of
a job as a whole, not only per process as rlimits do. Without such a cgroup, jobs get rlimits alone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids")


@dataclass(frozen=True, slots=True)
class CgroupParent:
    """The cgroup under which each job gets its own (the fork server names them)."""

    path: Path


def own_cgroup(proc_self_cgroup: str) -> str | None:
    """The process's cgroup v2 path from /proc/self/cgroup (its "0::" line), if it has one."""
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def is_delegated(directory: Path) -> bool:
    """Whether a cgroup was handed to this process to manage: systemd marks delegated cgroups with a
    `trusted.delegate` (or, for user managers, `user.delegate`) attribute; an ordinary user may also own
    the directory outright."""
    for attribute in ("trusted.delegate", "user.delegate"):
        try:
            if os.getxattr(directory, attribute).strip(b"\0") == b"1":
                return True
        except OSError:
            continue
    return os.geteuid() != 0 and directory.stat().st_uid == os.geteuid()


def prepare(setting: str) -> CgroupParent | None:
    """Arranges the delegated cgroup for jobs: `setting` is "auto" (this process's own cgroup, when it
    is delegated), a path under /sys/fs/cgroup, or empty (off). None when there is none to use."""
    if not setting:
        return None
    if setting == "auto":
        try:
            relative = own_cgroup(Path("/proc/self/cgroup").read_text())
        except OSError:
            return None
        if relative is None:
            return None
        directory = CGROUP_ROOT / relative.lstrip("/")
        try:
            if not is_delegated(directory):
                return None
        except OSError:
            return None
    else:
        directory = Path(setting)
    try:
        available = (directory / "cgroup.controllers").read_text().split()
        if not all(controller in available for controller in CONTROLLERS):
            log.info("cgroup %s lacks the %s controllers; jobs get rlimits only", directory, CONTROLLERS)
            return None
        service = directory / "service"
        runs = directory / "runs"
        service.mkdir(exist_ok=True)
        # A cgroup that hands controllers to its children may hold no processes itself.
        for pid in (directory / "cgroup.procs").read_text().split():
            try:
                (service / "cgroup.procs").write_text(pid)
            except OSError:
                continue  # a process that has ended meanwhile, or one that is not ours to move
        enable = " ".join(f"+{c}" for c in CONTROLLERS)
        (directory / "cgroup.subtree_control").write_text(enable)
        runs.mkdir(exist_ok=True)
        (runs / "cgroup.subtree_control").write_text(enable)
    except OSError as exc:
        log.warning("cannot use cgroup %s for sandbox limits (%s); jobs get rlimits only", directory, exc)
        return None
    return CgroupParent(runs)
