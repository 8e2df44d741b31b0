"""Runs a unit of database work in one hop off the event loop.

Memory is on every agent turn's critical path, and with an async driver every SQL statement (and
every fetch) is its own round trip to a driver thread. Here a whole unit of work - a sync function
of SQLAlchemy Core statements - runs in one call: on SQLite in a dedicated thread with its own
connection (one writer thread, so writes queue as ADR 0004 requires, and a few reader threads under
WAL); on Postgres through the async engine's `run_sync`. Statements stay portable SQLAlchemy Core.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from mnemo_core.db import Database

T = TypeVar("T")
P = ParamSpec("P")

_PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
    "busy_timeout=30000",
    "cache_size=-32000",
    "temp_store=MEMORY",
)


class _ThreadConnections:
    """One executor whose threads each keep one connection for their whole life."""

    def __init__(self, engine: Engine, workers: int, name: str) -> None:
        self._engine = engine
        self._local = threading.local()
        self._all: list[Connection] = []
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    def connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._engine.connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class SqlRunner:
    """Runs sync units of work (`fn(connection, ...)`) for async callers: `read` or `write` (one transaction)."""

    def __init__(self, db: Database, *, readers: int = 2) -> None:
        self.db = db
        self.is_sqlite = db.is_sqlite
        self._sync_engines: list[Engine] = []
        self._writer: _ThreadConnections | None = None
        self._readers: _ThreadConnections | None = None
        if db.is_sqlite:
            url = make_url(db.url).set(drivername="sqlite")
            database = url.database
            if database and database != ":memory:":
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # The writer takes SQLite's write lock when its transaction begins, not at its first
            # write, so a read-then-write unit never meets a lock upgrade failure.
            write_engine = _sqlite_engine(url, "BEGIN IMMEDIATE")
            read_engine = _sqlite_engine(url, "BEGIN")
            self._sync_engines = [write_engine, read_engine]
            self._writer = _ThreadConnections(write_engine, 1, "memory-db-write")
            self._readers = _ThreadConnections(read_engine, readers, "memory-db-read")

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn(connection, *args)` on a read connection; nothing it does is committed."""
        if self._readers is None:
            async with self.db.engine.connect() as conn:
                return await conn.run_sync(fn, *args)
        readers = self._readers

        def call() -> T:
            conn = readers.connection()
            try:
                return fn(conn, *args)
            finally:
                conn.rollback()

        return await asyncio.get_running_loop().run_in_executor(readers.executor, call)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn(connection, *args)` in one transaction: committed when it returns, rolled back if it raises."""
        if self._writer is None:
            async with self.db.engine.begin() as conn:
                return await conn.run_sync(fn, *args)
        writer = self._writer

        def call() -> T:
            conn = writer.connection()
            with conn.begin():
                return fn(conn, *args)

        # The write may be committed even if the caller is cancelled meanwhile: shield keeps the
        # caller's view (its exception) from racing the thread that still finishes the transaction.
        return await asyncio.shield(asyncio.get_running_loop().run_in_executor(writer.executor, call))

    async def aclose(self) -> None:
        """Stops the worker threads and closes their connections."""
        for pool in (self._writer, self._readers):
            if pool is not None:
                await asyncio.to_thread(pool.close)
        for engine in self._sync_engines:
            engine.dispose()
        await self.db.dispose()


def _sqlite_engine(url: Any, begin_sql: str) -> Engine:
    """A sync SQLite engine whose transactions really begin (pysqlite alone defers BEGIN to the first write)."""
    # Each worker thread holds its connection for good; no pool is needed between them.
    engine = create_engine(url, poolclass=NullPool, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in _PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin_sql)

    return engine
