"""Alembic migrations, one history per service, run at start or as a job.

A service keeps its history in `<package>/migrations/`; its env.py is two lines that call
`run_env(metadata)`. New revisions: `python -m mnemo_core.migrations <service-package> "message"`.

Two ways to bring a schema up to date: the service migrates when it starts (`migrate = true`, the default on
a laptop), or a job runs `mnemo migrate <service>` and the service only waits until its schema is at the
revision its code expects (`migrate = false`, in a cluster; see `wait_for_schema`).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import shutil
import sys
import tempfile
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import MetaData, text
from sqlalchemy.exc import DBAPIError

from mnemo_core.db import Database, UtcDateTime

if TYPE_CHECKING:
    from alembic.config import Config


def _config(migrations_dir: Path) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    return cfg


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    # Revisions stay free of mnemo imports: UtcDateTime is a plain timezone-aware DateTime in the database.
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_env(target_metadata: MetaData) -> None:
    """The body of every service's migrations/env.py: migrate on the connection handed in."""
    from alembic import context

    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


_REVISION = re.compile(r"^revision: str = ['\"]([0-9a-f]+)['\"]", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision: str \| None = ['\"]([0-9a-f]+)['\"]", re.MULTILINE)


log = logging.getLogger(__name__)


def _history(migrations_dir: Path) -> tuple[set[str], set[str]]:
    """The revision ids of a service's history and the ids some revision builds on."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (migrations_dir / "versions").glob("*.py"):
        text = path.read_text()
        revisions.update(_REVISION.findall(text))
        parents.update(_DOWN_REVISION.findall(text))
    return revisions, parents


def head_revision(migrations_dir: Path) -> str | None:
    """The newest revision id of a service's history, read from its revision files."""
    revisions, parents = _history(migrations_dir)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


class SchemaNotMigrated(RuntimeError):
    """The schema did not reach the revision this code needs while the service waited for it."""


class SchemaState(Enum):
    """Where a database's schema stands against the history this code ships."""

    CURRENT = "current"  # at this code's head revision
    BEHIND = "behind"  # an older revision of the history: a migration is still to run
    MISSING = "missing"  # never migrated (no alembic_version table or no row in it)
    AHEAD = "ahead"  # a revision this code does not know: a newer release already migrated it


async def schema_state(db: Database, migrations_dir: Path) -> tuple[SchemaState, str | None]:
    """The schema's state and its current revision id."""
    current = await _current_revision(db)
    if current is None:
        return SchemaState.MISSING, None
    revisions, _ = _history(migrations_dir)
    if current == head_revision(migrations_dir):
        return SchemaState.CURRENT, current
    return (SchemaState.BEHIND if current in revisions else SchemaState.AHEAD), current


async def wait_for_schema(
    db: Database, migrations_dir: Path, *, timeout: float, interval: float = 1.0
) -> SchemaState:
    """Waits until the migration job has brought the schema to this code's revision; never migrates.

    A schema at a revision this code does not know was migrated by a newer release (a rolling update in
    progress, or this pod is the old one): it is accepted, since migrations only add to what older code
    reads (docs/adr/0505-kubernetes-kustomize-components-and-migration-jobs.md). A schema still behind after
    `timeout` seconds raises SchemaNotMigrated naming the command that migrates it.
    """
    head = head_revision(migrations_dir)
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        state, current = await schema_state(db, migrations_dir)
        if state in (SchemaState.CURRENT, SchemaState.AHEAD):
            if state is SchemaState.AHEAD:
                log.warning(
                    "schema %s is at revision %s, newer than this release's %s; serving with it",
                    db.schema,
                    current,
                    head,
                )
            return state
        if time.monotonic() >= deadline:
            raise SchemaNotMigrated(
                f"the {db.schema} schema is {state.value} (revision {current or 'none'}, this release needs "
                f"{head}) after waiting {timeout:g} s: run `mnemo migrate {db.schema}` (the migration job) "
                "or start the service with MNEMO_MIGRATE=true"
            )
        if not announced:
            log.info("waiting for the %s schema to reach revision %s (now %s)", db.schema, head, current)
            announced = True
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))


async def prepare_schema(db: Database, migrations_dir: Path, *, migrate: bool, wait_seconds: float) -> None:
    """At a service's start: migrate (`migrate`), or wait for the migration job to have done it."""
    if migrate:
        await upgrade(db, migrations_dir)
    else:
        await wait_for_schema(db, migrations_dir, timeout=wait_seconds)


async def _current_revision(db: Database) -> str | None:
    try:
        async with db.engine.connect() as connection:
            row = (await connection.execute(text("SELECT version_num FROM alembic_version"))).first()
    except DBAPIError:
        return None
    return None if row is None else str(row[0])


async def upgrade(db: Database, migrations_dir: Path) -> None:
    """Brings the service's schema to the newest revision (creating the Postgres schema if needed).

    A schema already at the head is recognised without loading Alembic, which keeps restarts fast.
    """
    head = head_revision(migrations_dir)
    if head is not None and await _current_revision(db) == head:
        return
    from alembic import command

    cfg = _config(migrations_dir)

    def _run(sync_connection: Any) -> None:
        cfg.attributes["connection"] = sync_connection
        command.upgrade(cfg, "head")

    async with db.engine.begin() as connection:
        if not db.is_sqlite:
            # Replicas starting together migrate one at a time; the later ones find the schema at head.
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"mnemo-migrate-{db.schema}"}
            )
            await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"'))
        await connection.run_sync(_run)


async def _new_revision(package: str, message: str) -> None:
    module = importlib.import_module(package)
    migrations_dir = Path(str(module.__file__)).parent / "migrations"
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{tmp}/scratch.db", schema=package)
        await upgrade(db, migrations_dir)
        cfg = _config(migrations_dir)

        from alembic import command

        def _revise(sync_connection: Any) -> None:
            cfg.attributes["connection"] = sync_connection
            command.revision(cfg, message=message, autogenerate=True)

        # Alembic reads the template from the service's folder; one copy for all lives here.
        template = migrations_dir / "script.py.mako"
        shutil.copy(Path(__file__).parent / "revision_template.py.mako", template)
        try:
            async with db.engine.begin() as connection:
                await connection.run_sync(_revise)
        finally:
            template.unlink()
            await db.dispose()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m mnemo_core.migrations <service-package> <message>")
    asyncio.run(_new_revision(sys.argv[1], sys.argv[2]))
