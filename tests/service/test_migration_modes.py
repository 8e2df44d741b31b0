"""A service migrates its schema at start (a laptop), or waits for the migration job (a cluster), on SQLite."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from mnemo_core.db import Database
from mnemo_core.migrations import (
    SchemaNotMigrated,
    SchemaState,
    head_revision,
    schema_state,
    wait_for_schema,
)
from mnemo_memory.app import MIGRATIONS
from mnemo_memory.app import build as build_memory
from mnemo_memory.settings import MemorySettings
from mnemo_server.migrate import migrate, migrations_dir
from tests.postgres import embedded_postgres
from tests.service.conftest import clean_environment

ROOT = Path(__file__).resolve().parents[2]
HEAD = head_revision(MIGRATIONS)


def _mnemo(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed `mnemo` command, in an environment with nothing but the data directory."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "mnemo"), *args],
        env={"PATH": os.environ["PATH"], "MNEMO_HOME": str(home), **env},
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _revision(home: Path) -> str | None:
    db = Database(f"sqlite+aiosqlite:///{home / 'data' / 'memory.db'}", schema="memory")
    try:
        return (await schema_state(db, MIGRATIONS))[1]
    finally:
        await db.dispose()


def test_the_migration_folder_found_without_importing_the_app_is_the_apps() -> None:
    assert HEAD is not None
    assert migrations_dir("memory") == MIGRATIONS


async def test_by_default_a_service_migrates_its_schema_when_it_starts(tmp_path: Path) -> None:
    with clean_environment(tmp_path):
        settings = MemorySettings()
        assert settings.migrate is True
        app = await build_memory(settings)
        await app.aclose()

    assert await _revision(tmp_path) == HEAD


async def test_a_service_that_does_not_migrate_waits_until_the_migration_job_ran(tmp_path: Path) -> None:
    with clean_environment(tmp_path):
        settings = MemorySettings(migrate=False, schema_wait_seconds=60)
        starting = asyncio.create_task(build_memory(settings))
        await asyncio.sleep(1.0)
        assert not starting.done(), "the service started without a schema"
        assert await _revision(tmp_path) is None, "the service migrated although told not to"

        job = await asyncio.to_thread(_mnemo, tmp_path, "migrate", "memory")
        assert job.returncode == 0, job.stderr
        assert f"memory: schema migrated from empty to revision {HEAD}" in job.stdout

        app = await asyncio.wait_for(starting, timeout=30)
        await app.aclose()

    assert await _revision(tmp_path) == HEAD
    again = _mnemo(tmp_path, "migrate", "memory")
    assert again.returncode == 0, again.stderr
    assert f"memory: schema already at revision {HEAD}" in again.stdout


async def test_a_service_gives_up_waiting_and_says_how_to_migrate(tmp_path: Path) -> None:
    with clean_environment(tmp_path), pytest.raises(SchemaNotMigrated, match="run `mnemo migrate memory`"):
        await build_memory(MemorySettings(migrate=False, schema_wait_seconds=0.3))

    # As a process: a clear message and a failing exit code (Kubernetes restarts it), no traceback.
    process = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mnemo_memory"],
        env={
            "PATH": os.environ["PATH"],
            "MNEMO_HOME": str(tmp_path),
            "MNEMO_MIGRATE": "false",
            "MNEMO_SCHEMA_WAIT_SECONDS": "0.5",
            "MNEMO_MEMORY_PORT": "0",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode == 1
    assert "the memory schema is missing" in process.stderr
    assert "Traceback" not in process.stderr
    assert await _revision(tmp_path) is None


async def test_a_schema_behind_this_release_is_waited_for(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}", schema="memory")
    try:
        with clean_environment(tmp_path):
            await migrate("memory", MemorySettings(database_url=str(db.engine.url)))
        head_file = next(
            p for p in (MIGRATIONS / "versions").glob("*.py") if f"revision: str = '{HEAD}'" in p.read_text()
        )
        parent = head_file.read_text().split("down_revision: str | None = '")[1].split("'")[0]
        async with db.engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": parent})

        assert await schema_state(db, MIGRATIONS) == (SchemaState.BEHIND, parent)
        with pytest.raises(SchemaNotMigrated, match="the memory schema is behind"):
            await wait_for_schema(db, MIGRATIONS, timeout=0.2, interval=0.05)
    finally:
        await db.dispose()


async def test_a_schema_a_newer_release_migrated_is_served_and_left_alone(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}"
    db = Database(url, schema="memory")
    try:
        with clean_environment(tmp_path):
            await migrate("memory", MemorySettings(database_url=url))
            async with db.engine.begin() as connection:
                await connection.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))

            assert await wait_for_schema(db, MIGRATIONS, timeout=0) is SchemaState.AHEAD
            done = await migrate("memory", MemorySettings(database_url=url))
        assert done.state is SchemaState.AHEAD
        assert done.before == done.after == "ffffffffffff"
    finally:
        await db.dispose()


def test_migrate_refuses_a_service_without_a_database(tmp_path: Path) -> None:
    result = _mnemo(tmp_path, "migrate", "gateway")

    assert result.returncode == 2
    assert "unknown service 'gateway'" in result.stderr


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with embedded_postgres() as url:
        yield url


async def test_on_postgres_concurrent_jobs_migrate_once_and_a_waiting_service_starts(
    postgres_url: str, tmp_path: Path
) -> None:
    db = Database(postgres_url, schema="memory")
    try:
        with clean_environment(tmp_path):
            settings = MemorySettings(database_url=postgres_url, migrate=False, schema_wait_seconds=120)
            with pytest.raises(SchemaNotMigrated, match="the memory schema is missing"):
                await wait_for_schema(db, MIGRATIONS, timeout=0)
            starting = asyncio.create_task(build_memory(settings))
            await asyncio.sleep(0.5)
            assert not starting.done()

            # Two jobs at once (a retried Job, or two releases): the schema's advisory lock serializes them.
            jobs = await asyncio.gather(
                *(
                    asyncio.to_thread(_mnemo, tmp_path, "migrate", "memory", MNEMO_DATABASE_URL=postgres_url)
                    for _ in range(2)
                )
            )
            for job in jobs:
                assert job.returncode == 0, job.stderr
                assert f"revision {HEAD}" in job.stdout

            app = await asyncio.wait_for(starting, timeout=60)
            await app.aclose()
        assert await schema_state(db, MIGRATIONS) == (SchemaState.CURRENT, HEAD)
    finally:
        await db.dispose()
