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
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection, DateTime, Engine, MetaData, Table, TypeDecorator, create_engine, event
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool

from mnemo_core.errors import FailedPrecondition

# Stable constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


WorkT = TypeVar("WorkT")
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
    """A service's engine and sessions: `read()` for queries, `write()` for one atomic transaction."""

    def __init__(self, url: str, *, schema: str) -> None:
        self.url = url
        self.schema = schema
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._sync_engine: Engine | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._file_backed = parsed.database not in (None, "", ":memory:")
        if self.is_sqlite:
            self.engine = _sqlite_engine(url)
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
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for queries; nothing it does is committed."""
        async with self._sessions() as session:
            yield session

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session whose work commits atomically when the block exits, or rolls back on error."""
        async with contextlib.AsyncExitStack() as stack:
            if self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            session = await stack.enter_async_context(self._sessions())
            await stack.enter_async_context(session.begin())
            yield session

    @contextlib.asynccontextmanager
    async def write_connection(self) -> AsyncIterator[AsyncConnection]:
        """A bare connection in one transaction, for hot paths of Core statements (no ORM session)."""
        async with contextlib.AsyncExitStack() as stack:
            if self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            yield await stack.enter_async_context(self.engine.begin())

    async def run_write(self, work: Callable[[Connection], WorkT]) -> WorkT:
        """Runs `work` (Core statements on a sync connection) in one transaction and returns its result.

        The cheapest write path, for statements on a service's hot path: on SQLite the whole
        transaction runs in one hop to a writer thread (aiosqlite needs a hop per statement); on
        Postgres it runs on an async connection through `run_sync`.
        """
        if self._write_lock is None or not self._file_backed:
            async with self.write_connection() as connection:
                return await connection.run_sync(work)
        async with self._write_lock:
            if self._writer is None:
                self._sync_engine = _sqlite_engine_sync(self.url)
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.schema}-writer")
            engine = self._sync_engine
            assert engine is not None

            def transaction() -> WorkT:
                with engine.begin() as connection:
                    return work(connection)

            return await asyncio.get_running_loop().run_in_executor(self._writer, transaction)

    async def dispose(self) -> None:
        """Closes every pooled connection."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
            self._sync_engine = None
        await self.engine.dispose()


# Every SQLite connection of every service, whichever driver opens it.
_PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
    "busy_timeout=30000",
    "cache_size=-32000",
    "temp_store=MEMORY",
)


def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in _PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_engine(url: str) -> AsyncEngine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30})
    event.listen(engine.sync_engine, "connect", _set_pragmas)
    return engine


def _sqlite_engine_sync(url: str) -> Engine:
    """The same SQLite file through the stdlib driver, used only by the writer thread."""
    parsed = make_url(url).set(drivername="sqlite")
    engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=1)
    event.listen(engine, "connect", _set_pragmas)
    return engine


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
    """Runs units of work (`fn(connection, ...)`, sync Core statements) for async callers: `read`, or `write`
    in one transaction (see the module docstring)."""

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
            write_engine = _unit_engine(url, "BEGIN IMMEDIATE")
            read_engine = _unit_engine(url, "BEGIN")
            self._sync_engines = [write_engine, read_engine]
            self._writer = _ThreadConnections(write_engine, 1, f"{db.schema}-db-write")
            self._readers = _ThreadConnections(read_engine, readers, f"{db.schema}-db-read")

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


def _unit_engine(url: URL, begin_sql: str) -> Engine:
    """A sync SQLite engine whose transactions really begin (pysqlite alone defers BEGIN to the first write)."""
    # Each worker thread holds its connection for good; no pool is needed between them.
    engine = create_engine(url, poolclass=NullPool, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        _set_pragmas(dbapi_connection, None)

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin_sql)

    return engine


TxT = TypeVar("TxT")


class Store(Generic[TxT]):
    """Hands out a service's query object (`TxT`, built on a session) for reading or for one transaction."""

    def __init__(self, db: Database, queries: Callable[[AsyncSession], TxT]) -> None:
        self._db = db
        self._queries = queries

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[TxT]:
        """Queries whose writes commit together when the block exits."""
        async with self._db.write() as session:
            yield self._queries(session)

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[TxT]:
        """Queries that only read."""
        async with self._db.read() as session:
            yield self._queries(session)
