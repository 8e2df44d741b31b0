"""Wires the memory service: database, domain, servicers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from mnemo.memory.v1 import block_pb2, block_pb2_grpc, message_pb2, message_pb2_grpc
from mnemo_core.db import Database
from mnemo_core.migrations import upgrade
from mnemo_memory.core_memory import CoreMemory
from mnemo_memory.history import History
from mnemo_memory.servicer import BlockServicer, MessageServicer
from mnemo_memory.settings import MemorySettings
from mnemo_memory.sql import SqlRunner

MIGRATIONS = Path(__file__).parent / "migrations"


class MemoryApp:
    """The memory service's servicers and their database."""

    def __init__(self, db: Database, settings: MemorySettings) -> None:
        self.db = SqlRunner(db)
        self.core = CoreMemory(self.db, default_limit=settings.default_block_limit)
        self.history = History(self.db)

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        block_pb2_grpc.add_BlockServiceServicer_to_server(BlockServicer(self.core), server)
        message_pb2_grpc.add_MessageServiceServicer_to_server(MessageServicer(self.history), server)
        return [
            block_pb2.DESCRIPTOR.services_by_name["BlockService"].full_name,
            message_pb2.DESCRIPTOR.services_by_name["MessageService"].full_name,
        ]

    async def aclose(self) -> None:
        await self.db.aclose()


async def build(settings: MemorySettings) -> MemoryApp:
    """Opens (and migrates) the database and builds the app."""
    db = Database(settings.resolved_database_url(), schema="memory")
    if settings.migrate:
        await upgrade(db, MIGRATIONS)
    app = MemoryApp(db, settings)
    await app.core.install_builtin_templates()
    return app
