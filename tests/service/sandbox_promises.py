"""What the tool sandbox promises on the machine running the tests: the one place that says it per mode.

The sandbox isolates as much as the tools service's privileges allow (docs/adr/0300-tool-sandbox.md):
- as root, every run gets its own mount, network, IPC, UTS and pid namespaces, a private /tmp and a uid
  of its own;
- as an ordinary user, runs get a network namespace (through an unprivileged user namespace, where the
  kernel allows them) and nothing else: they run as the service's user, in the host's /tmp and /proc.

The hostile-code tests assert the promise of the mode they run in, from the table below; no mode is
skipped. Tightening a mode (e.g. a real user-namespace sandbox for ordinary users) means changing its
row here, and the same tests then demand the stronger containment.
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
    # Connections to any address, loopback included, fail with "Network is unreachable".
    network_blocked: bool
    # /tmp is a private tmpfs, the working directory is /tmp/work, and nothing a run writes reaches the host.
    private_filesystem: bool
    # A pid namespace and a private /proc: a run sees only its own processes, and they end with it.
    private_processes: bool
    # A uid of its own: never the service's, so the service's private (0600) files are not the run's,
    # and the process limit counts that run's processes alone.
    own_uid: bool

    @property
    def refuses_required_isolation(self) -> bool:
        """Whether `sandbox_require_isolation=true` makes the service refuse custom tool runs."""
        return not (self.network_blocked and self.private_filesystem)


ROOT = SandboxPromise(
    mode="root: full isolation",
    capabilities={"root": True, "mount": True, "network": True, "pid": True, "setuid": True},
    start_warning=None,
    network_blocked=True,
    private_filesystem=True,
    private_processes=True,
    own_uid=True,
)

UNPRIVILEGED = SandboxPromise(
    mode="unprivileged: network namespace only (user namespaces allowed)",
    capabilities={"root": False, "mount": False, "network": True, "pid": False, "setuid": False},
    start_warning=(
        "tool runs are not fully isolated on this machine (no mount, pid, setuid); "
        "see docs/adr/0300-tool-sandbox.md"
    ),
    network_blocked=True,
    private_filesystem=False,
    private_processes=False,
    own_uid=False,
)

# Without unprivileged user namespaces there is no network namespace either.
UNPRIVILEGED_WITHOUT_USER_NAMESPACES = dataclasses.replace(
    UNPRIVILEGED,
    mode="unprivileged: no isolation (user namespaces not allowed)",
    capabilities={**UNPRIVILEGED.capabilities, "network": False},
    start_warning=(
        "tool runs are not fully isolated on this machine (no network, mount, pid, setuid); "
        "see docs/adr/0300-tool-sandbox.md"
    ),
    network_blocked=False,
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
