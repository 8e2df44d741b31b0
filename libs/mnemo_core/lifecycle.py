"""A child process never outlives the process that started it, when that process asks for it.

Launchers (`mnemo server`, tests, benchmarks) put their pid in `MNEMO_PARENT_PID`; the started process
asks the kernel for SIGTERM when that parent dies (Linux `PR_SET_PDEATHSIG`). Doing it here, in the
child's own code, keeps launchers on the plain spawn path: running Python between fork and exec in a
process with live gRPC threads is unsafe.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys

PARENT_PID_ENV = "MNEMO_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def follow_parent() -> None:
    """Arranges SIGTERM for this process when the parent named in MNEMO_PARENT_PID exits."""
    wanted = os.environ.get(PARENT_PID_ENV, "")
    if not wanted.isdigit() or sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(wanted):  # the parent is already gone
        os.kill(os.getpid(), signal.SIGTERM)


def as_child_of_this_process(env: dict[str, str]) -> dict[str, str]:
    """`env` for a process this one starts and that should die with it."""
    return {**env, PARENT_PID_ENV: str(os.getpid())}


def freeze_startup_objects() -> None:
    """Moves every object alive now (modules, settings, the built app) out of the garbage collector's reach.

    They live as long as the process. Left tracked, every full collection walks them and writes to their
    headers: CPU on the request path and, in a service forked from `mnemo server`, a private copy of each
    memory page it still shared with the supervisor (docs/adr/0006-supervisor-forks-preloaded-services.md).
    """
    gc.freeze()
