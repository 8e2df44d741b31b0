"""Runs a command as an ordinary user who may not create user namespaces, as on a kernel that forbids them
(user.max_user_namespaces=0, kernel.unprivileged_userns_clone=0), without changing the machine's setting.

As root:  python3 scripts/without_user_namespaces.py USER COMMAND [ARGS...]
The command runs in a user namespace of its own, in which root and USER are themselves and the limit on
nested user namespaces is 0; its network, files and processes are the machine's own.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import sys

CLONE_NEWUSER = 0x10000000


def main() -> int:
    user = pwd.getpwnam(sys.argv[1])
    command = sys.argv[2:]
    # Found while still root: the user may not be able to search every directory on root's PATH.
    program = shutil.which(command[0]) if command else None
    if os.geteuid() != 0 or program is None:
        print(__doc__, file=sys.stderr)
        return 2
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(to_parent_r)
        os.close(to_child_w)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWUSER) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
        os.write(to_parent_w, b"1")
        os.read(to_child_r, 1)  # the parent has written the id maps
        with open("/proc/sys/user/max_user_namespaces", "w") as limit:
            limit.write("0")
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
        os.environ.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
        os.execv(program, command)  # noqa: S606 - the caller's command, as that user
    os.close(to_parent_w)
    os.close(to_child_r)
    if os.read(to_parent_r, 1) != b"1":
        return 1
    ids = {"uid_map": user.pw_uid, "gid_map": user.pw_gid}
    for name, number in ids.items():
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(f"0 0 1\n{number} {number} 1\n")
    os.write(to_child_w, b"1")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
