"""What the tool sandbox promises on the machine running the tests: the one place that says it per mode.

The sandbox isolates runs in every mode the machine allows (docs/adr/0300-tool-sandbox.md):
- as root, every run gets new mount, pid, network, IPC, UTS and cgroup namespaces, a minimal read-only
  root of its own (system directories, the interpreter's library, a private /tmp, /dev and a fresh
  /proc), no capabilities, a seccomp filter, rlimits, and a uid of its own;
- as an ordinary user with unprivileged user namespaces, exactly the same, except that the run's uid on
  the host is the service's (it owns nothing the run can see);
- as an ordinary user without user namespaces, nothing can be isolated: custom tools are refused unless
  `sandbox_allow_unisolated` is set, and then they run as the service's user with rlimits, a scrubbed
  environment, a throwaway working directory and the seccomp filter only.

The hostile-code tests assert the promise of the mode they run in, from the table below; no mode is
skipped. In the mode without user namespaces they run with `sandbox_allow_unisolated` on and assert its
holes, and one test asserts the default refusal.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys

# unshare(2) flags, as the fork server asks for them.
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000


@dataclasses.dataclass(frozen=True, slots=True)
class SandboxPromise:
    """What one mode of the sandbox guarantees a run (True: contained)."""

    mode: str
    # What the fork server's probe must report.
    capabilities: dict[str, bool]
    # The line the tools service logs at start (None: it logs none about isolation).
    start_warning: str | None
    # Custom tools run without `sandbox_allow_unisolated` (else: FAILED_PRECONDITION).
    runs_by_default: bool
    # Connections to any address, loopback and the mesh's ports included, fail with "Network is unreachable".
    network_blocked: bool
    # The run's root is its own: read-only system directories, a private /tmp (the working directory is
    # /tmp/work); MNEMO_HOME, the service's files and other runs' files are not in it at all.
    private_filesystem: bool
    # A pid namespace and a fresh /proc: a run sees only its own processes, and they end with it.
    private_processes: bool
    # A uid of its own: never the service's, and the process limit counts that run's processes alone.
    own_uid: bool

    @property
    def isolated(self) -> bool:
        return self.private_filesystem


ROOT = SandboxPromise(
    mode="root: full isolation, a uid per run",
    capabilities={
        "root": True,
        "isolated": True,
        "user_namespace": False,
        "own_uid": True,
        "proc": True,
        "seccomp": True,
    },
    start_warning=None,
    runs_by_default=True,
    network_blocked=True,
    private_filesystem=True,
    private_processes=True,
    own_uid=True,
)

UNPRIVILEGED = dataclasses.replace(
    ROOT,
    mode="unprivileged with user namespaces: full isolation, the service's uid",
    capabilities={**ROOT.capabilities, "root": False, "user_namespace": True, "own_uid": False},
    own_uid=False,
)

UNPRIVILEGED_WITHOUT_USER_NAMESPACES = SandboxPromise(
    mode="unprivileged without user namespaces: refused, or nothing isolated when allowed",
    capabilities={
        "root": False,
        "isolated": False,
        "user_namespace": False,
        "own_uid": False,
        "proc": False,
        "seccomp": True,
    },
    start_warning="tool runs cannot be isolated on this machine",
    runs_by_default=False,
    network_blocked=False,
    private_filesystem=False,
    private_processes=False,
    own_uid=False,
)


@functools.cache
def promised() -> SandboxPromise:
    """The promise of the mode this test run's tools service is in, told by the kernel, not by the service."""
    if os.geteuid() == 0:
        return ROOT
    return UNPRIVILEGED if user_namespaces_allowed() else UNPRIVILEGED_WITHOUT_USER_NAMESPACES


def user_namespaces_allowed() -> bool:
    """Whether an ordinary process may create a user + network namespace (tried in a throwaway child)."""
    code = (
        "import ctypes, sys\n"
        f"sys.exit(ctypes.CDLL(None, use_errno=True).unshare({_CLONE_NEWUSER | _CLONE_NEWNET}) != 0)\n"
    )
    return subprocess.run([sys.executable, "-I", "-S", "-c", code], check=False).returncode == 0
