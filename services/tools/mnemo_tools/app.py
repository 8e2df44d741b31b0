"""Wires the tools service: database, registry, servicer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from mnemo.tools.v1 import tool_pb2, tool_pb2_grpc
from mnemo_core.db import Database
from mnemo_core.migrations import upgrade
from mnemo_tools.registry import Registry
from mnemo_tools.servicer import ToolServicer
from mnemo_tools.settings import ToolsSettings

MIGRATIONS = Path(__file__).parent / "migrations"


class ToolsApp:
    """The tools service's servicer and its database."""

    def __init__(self, db: Database, registry: Registry) -> None:
        self.db = db
        self.registry = registry

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        tool_pb2_grpc.add_ToolServiceServicer_to_server(ToolServicer(self.registry), server)
        return [tool_pb2.DESCRIPTOR.services_by_name["ToolService"].full_name]

    async def aclose(self) -> None:
        await self.db.dispose()


async def build(settings: ToolsSettings) -> ToolsApp:
    """Opens (and migrates) the database, installs the built-ins and builds the app."""
    db = Database(settings.resolved_database_url(), schema="tools")
    if settings.migrate:
        await upgrade(db, MIGRATIONS)
    registry = Registry(db, default_return_char_limit=settings.default_return_char_limit)
    await registry.install_builtins()
    return ToolsApp(db, registry)
