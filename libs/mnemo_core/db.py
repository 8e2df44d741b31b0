"""One database per service: the embedded SQLite file by default, Postgres (asyncpg) to scale.

The way to use it is the unit of work: a sync function of SQLAlchemy Core statements on a `Connection`,
run by `Database.read` or `Database.write` (one transaction) in one hop off the event loop. On SQLite it runs
in a dedicated thread with its own connection: one writer thread, so writes queue as SQLite requires
(ADR 0004), and a few reader threads under WAL. With an async driver every statement (and every fetch)
would be its own round trip to a driver thread; here a whole unit of work is one. On Postgres it runs on the
async engine's connection through `run_sync`. Each service keeps its units of work in store modules that
return dataclasses (docs/adr/0008-one-way-each-and-ownership-in-the-owning-service.md).

Queries use portable SQLAlchemy constructs only. On Postgres each service lives in its own schema, set
through `search_path`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, DateTime, Engine, MetaData, Table, TypeDecorator, create_engine, event
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool

from mnemo_core.errors import FailedPrecondition
from mnemo_core.sealing import Sealer, attach, private_dir, private_file
from mnemo_core.settings import DEFAULT_SQLITE_CACHE_MB
from mnemo_core.telemetry import trace_engines

# Stable constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


T = TypeVar("T")


class Base(DeclarativeBase):
    """Declarative base for a service's tables; each service subclasses it with its own metadata."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class, for the statements of units of work."""
    return cast(Table, model.__table__)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Database:
    """A service's database: units of work run by `read` (nothing committed) and `write` (one transaction).

    `engine` (async) is for migrations and, on Postgres, what the units of work run on.
    """

    def __init__(
        self, url: str, *, schema: str, readers: int = 2, cache_mb: int = DEFAULT_SQLITE_CACHE_MB
    ) -> None:
        self.url = url
        self.schema = schema
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._sync_engines: list[Engine] = []
        self._writer: _ThreadConnections | None = None
        self._readers: _ThreadConnections | None = None
        if self.is_sqlite:
            self.engine = _sqlite_engine(url, cache_mb)
            sync_url = parsed.set(drivername="sqlite")
            if sync_url.database not in (None, "", ":memory:"):
                # The writer takes SQLite's write lock when its transaction begins, not at its first
                # write, so a read-then-write unit never meets a lock upgrade failure.
                write_engine = _unit_engine(sync_url, "BEGIN IMMEDIATE", cache_mb)
                read_engine = _unit_engine(sync_url, "BEGIN", cache_mb)
                self._sync_engines = [write_engine, read_engine]
                self._writer = _ThreadConnections(write_engine, 1, f"{schema}-db-write")
                self._readers = _ThreadConnections(read_engine, readers, f"{schema}-db-read")
        elif parsed.get_backend_name() == "postgresql":
            self.engine = create_async_engine(
                url,
                pool_size=10,
                max_overflow=10,
                pool_pre_ping=True,
                connect_args={"server_settings": {"search_path": schema}},
            )
        else:
            raise FailedPrecondition(f"unsupported database URL scheme {parsed.drivername!r}")
        trace_engines([self.engine.sync_engine, *self._sync_engines])
        _open.add(self)

    def seal_with(self, sealer: Sealer) -> None:
        """Seals and opens this database's SealedText / SealedJson columns with `sealer`."""
        for engine in [self.engine.sync_engine, *self._sync_engines]:
            attach(engine.dialect, sealer)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn(connection, *args)` on a read connection; nothing it does is committed."""
        if self._readers is None:
            async with self.engine.connect() as conn:
                return await conn.run_sync(fn, *args)
        readers = self._readers

        def call() -> T:
            conn = readers.connection()
            try:
                with readers.busy():
                    return fn(conn, *args)
            finally:
                conn.rollback()

        # The caller's context travels with the unit of work, so its SQL spans are the caller's children.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(readers.executor, context.run, call)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn(connection, *args)` in one transaction: committed when it returns, rolled back if it raises."""
        if self._writer is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn, *args)
        writer = self._writer

        def call() -> T:
            conn = writer.connection()
            with writer.busy(), conn.begin():
                return fn(conn, *args)

        # The write may be committed even if the caller is cancelled meanwhile: shield keeps the
        # caller's view (its exception) from racing the thread that still finishes the transaction.
        context = contextvars.copy_context()
        return await asyncio.shield(
            asyncio.get_running_loop().run_in_executor(writer.executor, context.run, call)
        )

    def connection_usage(self) -> dict[str, int]:
        """Connections by state: `used` (running a unit of work) and `idle`."""
        if self._writer is None or self._readers is None:
            pool: Any = self.engine.sync_engine.pool
            if hasattr(pool, "checkedout"):
                return {"used": int(pool.checkedout()), "idle": int(pool.checkedin())}
            return {}
        used = self._writer.used + self._readers.used
        return {"used": used, "idle": self._writer.opened + self._readers.opened - used}

    async def dispose(self) -> None:
        """Stops the worker threads and closes every connection."""
        for pool in (self._writer, self._readers):
            if pool is not None:
                await asyncio.to_thread(pool.close)
        self._writer = self._readers = None
        for engine in self._sync_engines:
            engine.dispose()
        self._sync_engines = []
        _open.discard(self)
        await self.engine.dispose()


_open: weakref.WeakSet[Database] = weakref.WeakSet()


def open_databases() -> list[Database]:
    """The databases this process has opened and not disposed of (for the connection metrics)."""
    return list(_open)


# Every SQLite connection of every service, whichever driver opens it.
_PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
    "busy_timeout=30000",
    "temp_store=MEMORY",
)


def _set_pragmas(dbapi_connection: Any, cache_mb: int) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in (*_PRAGMAS, f"cache_size=-{cache_mb * 1000}"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_engine(url: str, cache_mb: int) -> AsyncEngine:
    database = make_url(url).database
    if database and database != ":memory:":
        path = Path(database).expanduser()
        # The data directory and files hold secrets (sealed, but still): the service user's alone. SQLite
        # gives its -wal and -shm files the database file's mode.
        private_dir(path.parent)
        private_file(path)
    engine = create_async_engine(url, connect_args={"timeout": 30})
    event.listen(
        engine.sync_engine,
        "connect",
        lambda dbapi_connection, _record: _set_pragmas(dbapi_connection, cache_mb),
    )
    return engine


class _ThreadConnections:
    """One executor whose threads each keep one connection for their whole life."""

    def __init__(self, engine: Engine, workers: int, name: str) -> None:
        self._engine = engine
        self._local = threading.local()
        self._all: list[Connection] = []
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self.used = 0

    @property
    def opened(self) -> int:
        return len(self._all)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Counts the calling thread's connection as used while the block runs."""
        with self._lock:
            self.used += 1
        try:
            yield
        finally:
            with self._lock:
                self.used -= 1

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


def _unit_engine(url: URL, begin_sql: str, cache_mb: int) -> Engine:
    """A sync SQLite engine whose transactions really begin (pysqlite alone defers BEGIN to the first write)."""
    # Each worker thread holds its connection for good; no pool is needed between them.
    engine = create_engine(url, poolclass=NullPool, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        _set_pragmas(dbapi_connection, cache_mb)

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin_sql)

    return engine
