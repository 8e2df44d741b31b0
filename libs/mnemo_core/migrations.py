"""Alembic migrations, one history per service, run at start or as a job.

A service keeps its history in `<package>/migrations/`; its env.py is two lines that call
`run_env(metadata)`. New revisions: `python -m mnemo_core.migrations <service-package> "message"`.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import shutil
import sys
import tempfile
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


def head_revision(migrations_dir: Path) -> str | None:
    """The newest revision id of a service's history, read from its revision files."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (migrations_dir / "versions").glob("*.py"):
        text = path.read_text()
        revisions.update(_REVISION.findall(text))
        parents.update(_DOWN_REVISION.findall(text))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


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
