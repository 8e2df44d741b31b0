"""Alembic migrations, one history per service, run at start or as a job.

A service keeps its history in `<package>/migrations/`; its env.py is two lines that call
`run_env(metadata)`. New revisions: `python -m mnemo_core.migrations <service-package> "message"`.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, text

from mnemo_core.db import Database, UtcDateTime


def _config(migrations_dir: Path) -> Config:
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


async def upgrade(db: Database, migrations_dir: Path) -> None:
    """Brings the service's schema to the newest revision (creating the Postgres schema if needed)."""
    cfg = _config(migrations_dir)

    def _run(sync_connection: Any) -> None:
        cfg.attributes["connection"] = sync_connection
        command.upgrade(cfg, "head")

    async with db.engine.begin() as connection:
        if not db.is_sqlite:
            await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"'))
        await connection.run_sync(_run)


async def _new_revision(package: str, message: str) -> None:
    module = importlib.import_module(package)
    migrations_dir = Path(str(module.__file__)).parent / "migrations"
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{tmp}/scratch.db", schema=package)
        await upgrade(db, migrations_dir)
        cfg = _config(migrations_dir)

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
