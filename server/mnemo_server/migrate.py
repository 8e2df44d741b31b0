"""`mnemo migrate <service>`: bring one service's database schema to this release's revision, then exit.

The migration job of a cluster runs it once per release before the services roll (they run with
`MNEMO_MIGRATE=false` and wait for their schema). On Postgres, concurrent runs take the schema's advisory
lock, so a second job finds the schema current. Also `python -m mnemo_server.migrate <service>`.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from mnemo_core.db import Database
from mnemo_core.logs import configure_logging
from mnemo_core.migrations import SchemaState, schema_state, upgrade
from mnemo_core.settings import ServiceSettings

# The services that own a database, with their package and settings class.
MIGRATING_SERVICES: dict[str, tuple[str, str]] = {
    "agent": ("mnemo_agent", "AgentSettings"),
    "memory": ("mnemo_memory", "MemorySettings"),
    "tools": ("mnemo_tools", "ToolsSettings"),
    "llm": ("mnemo_llm", "LlmSettings"),
}


@dataclass(frozen=True)
class Migrated:
    """What a migration run found and left."""

    service: str
    before: str | None
    after: str | None
    state: SchemaState


def settings_of(service: str) -> ServiceSettings:
    """The service's settings, read as the service itself reads them (env, config file)."""
    package, class_name = MIGRATING_SERVICES[service]
    settings_cls: type[ServiceSettings] = getattr(importlib.import_module(f"{package}.settings"), class_name)
    return settings_cls()


def migrations_dir(service: str) -> Path:
    """The folder of the service's Alembic history, without importing the service's app."""
    spec = importlib.util.find_spec(MIGRATING_SERVICES[service][0])
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"the {service} service is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "migrations"


async def migrate(service: str, settings: ServiceSettings | None = None) -> Migrated:
    """Upgrades `service`'s schema to head. A schema a newer release migrated is left as it is."""
    settings = settings or settings_of(service)
    folder = migrations_dir(service)
    db = Database(settings.resolved_database_url(), schema=service)
    try:
        state, before = await schema_state(db, folder)
        if state is not SchemaState.AHEAD:
            await upgrade(db, folder)
        state, after = await schema_state(db, folder)
    finally:
        await db.dispose()
    return Migrated(service=service, before=before, after=after, state=state)


def run(service: str) -> int:
    """Migrates `service` and reports it; the process exit code (0: the schema serves this release)."""
    if service not in MIGRATING_SERVICES:
        print(
            f"mnemo migrate: unknown service {service!r}; one of {', '.join(MIGRATING_SERVICES)}",
            file=sys.stderr,
        )
        return 2
    settings = settings_of(service)
    configure_logging(f"{service}-migrate", settings.log_level)
    done = asyncio.run(migrate(service, settings))
    if done.state is SchemaState.AHEAD:
        print(
            f"{service}: schema at revision {done.after}, newer than this release's; left as it is",
            file=sys.stderr,
        )
    elif done.before == done.after:
        print(f"{service}: schema already at revision {done.after}")
    else:
        print(f"{service}: schema migrated from {done.before or 'empty'} to revision {done.after}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m mnemo_server.migrate <{'|'.join(MIGRATING_SERVICES)}>")
    sys.exit(run(sys.argv[1]))
