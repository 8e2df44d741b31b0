"""Wires the memory service: database, embeddings client, domain, background work, servicers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from mnemo.llm.v1 import llm_pb2_grpc
from mnemo.memory.v1 import (
    block_pb2,
    block_pb2_grpc,
    message_pb2,
    message_pb2_grpc,
    passage_pb2,
    passage_pb2_grpc,
    source_pb2,
    source_pb2_grpc,
)
from mnemo_core.channels import Peers
from mnemo_core.db import Database
from mnemo_core.migrations import prepare_schema
from mnemo_memory.archival import SPEAKERS_TTL_SECONDS, ArchivalMemory
from mnemo_memory.block_versions import BlockHistory, Versioning
from mnemo_memory.blocks import Retention
from mnemo_memory.core_memory import CoreMemory
from mnemo_memory.embedding import Embedder
from mnemo_memory.files import FileParser, ParseLimits
from mnemo_memory.history import History
from mnemo_memory.passage_store import PassageStore, SqlitePassageStore
from mnemo_memory.passage_store_pg import PgPassageStore
from mnemo_memory.recall import MessageEmbedder, MessageIndex, Recall, SqliteMessageIndex
from mnemo_memory.recall_pg import PgMessageIndex
from mnemo_memory.servicers.blocks import BlockServicer
from mnemo_memory.servicers.messages import MessageServicer
from mnemo_memory.servicers.passages import PassageServicer
from mnemo_memory.servicers.sources import SourceServicer
from mnemo_memory.settings import MemorySettings
from mnemo_memory.sources import FileJobs, Sources
from mnemo_memory.vectors import VectorCache

if TYPE_CHECKING:
    from mnemo_memory.passage_store_weaviate import WeaviatePassageStore

MIGRATIONS = Path(__file__).parent / "migrations"


class MemoryApp:
    """The memory service's servicers, their database and their background tasks."""

    def __init__(self, db: Database, settings: MemorySettings) -> None:
        own = "sqlite" if db.is_sqlite else "postgres"
        if settings.passage_store not in ("", own, "weaviate"):
            raise ValueError(
                f"passage_store {settings.passage_store!r} needs that database; the memory service runs on "
                f"{'SQLite' if db.is_sqlite else 'Postgres'} (use {own!r} or 'weaviate')"
            )
        self.db = db
        self._peers = Peers(settings)
        self.embedder = Embedder(self._peers.stub("llm", llm_pb2_grpc.LlmServiceStub))
        self.vectors = VectorCache(settings.vector_cache_mb * 1024 * 1024)
        # SQLite: one process owns the file, so vectors are searched in memory; Postgres: searched in SQL
        # (pgvector), nothing kept in the process, so replicas can share the database.
        self.passage_store: PassageStore
        message_index: MessageIndex
        if self.db.is_sqlite:
            self.passage_store = SqlitePassageStore(self.db, self.vectors)
            message_index = SqliteMessageIndex(self.db, self.vectors)
        else:
            self.passage_store = PgPassageStore(self.db)
            message_index = PgMessageIndex(self.db)
        self.weaviate: WeaviatePassageStore | None = None
        if settings.passage_store == "weaviate":
            self.weaviate = weaviate_store(self.db, settings)
            self.passage_store = self.weaviate
        self.message_embedder = MessageEmbedder(
            self.db, self.embedder, message_index, model=settings.recall_embedding_model
        )
        max_age = settings.block_history_max_age_days
        versioning = Versioning(
            Retention(
                max_versions=settings.block_history_max_versions,
                max_age=timedelta(days=max_age) if max_age > 0 else None,
            )
        )
        self.core = CoreMemory(self.db, versioning, default_limit=settings.default_block_limit)
        self.block_history = BlockHistory(self.db, versioning)
        self._sweep_seconds = settings.block_history_sweep_seconds
        self._sweeper: asyncio.Task[None] | None = None
        self.history = History(self.db, on_append=self.message_embedder.notify)
        self.recall = Recall(
            self.db,
            self.embedder,
            message_index,
            model=settings.recall_embedding_model,
            ranking=settings.search_ranking,
        )
        self.archival = ArchivalMemory(
            self.passage_store,
            self.embedder,
            ranking=settings.search_ranking,
            # SQLite: this process writes every passage, so the speakers it keeps never go stale.
            speakers_ttl=None if self.db.is_sqlite else SPEAKERS_TTL_SECONDS,
        )
        parser = FileParser(
            ParseLimits(
                seconds=settings.file_parse_seconds,
                memory_bytes=settings.file_parse_memory_mb << 20,
                max_pages=settings.file_parse_max_pages,
                max_text_bytes=settings.file_text_max_bytes,
            )
        )
        self.jobs = FileJobs(self.db, self.passage_store, self.embedder, parser)
        self.sources = Sources(
            self.db,
            self.passage_store,
            self.embedder,
            max_upload_bytes=settings.max_upload_bytes,
            jobs=self.jobs,
        )

    async def start(self) -> None:
        """Installs the built-in templates and starts the background work (resuming what a restart cut off)."""
        if self.weaviate is not None:
            # Fails the start, not the first search, when Weaviate cannot be reached.
            await self.weaviate.connect()
        await self.core.install_builtin_templates()
        self.message_embedder.start()
        await self.jobs.start()
        if self.block_history.sweeps:
            self._sweeper = asyncio.create_task(self.block_history.sweep_every(self._sweep_seconds))

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        block_pb2_grpc.add_BlockServiceServicer_to_server(
            BlockServicer(self.core, self.block_history), server
        )
        message_pb2_grpc.add_MessageServiceServicer_to_server(
            MessageServicer(self.history, self.recall), server
        )
        passage_pb2_grpc.add_PassageServiceServicer_to_server(PassageServicer(self.archival), server)
        source_pb2_grpc.add_SourceServiceServicer_to_server(SourceServicer(self.sources), server)
        return [
            block_pb2.DESCRIPTOR.services_by_name["BlockService"].full_name,
            message_pb2.DESCRIPTOR.services_by_name["MessageService"].full_name,
            passage_pb2.DESCRIPTOR.services_by_name["PassageService"].full_name,
            source_pb2.DESCRIPTOR.services_by_name["SourceService"].full_name,
        ]

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.message_embedder.stop()
        await self.jobs.stop()
        await self._peers.aclose()
        if self.weaviate is not None:
            await self.weaviate.close()
        self.vectors.close()
        await self.db.dispose()


def weaviate_store(db: Database, settings: MemorySettings) -> WeaviatePassageStore:
    """The Weaviate passage store of the settings (which require a URL with it)."""
    # Imported here: weaviate-client is an extra, and takes seconds to import.
    try:
        from mnemo_memory.passage_store_weaviate import WeaviateConfig, WeaviatePassageStore
    except ImportError as error:
        raise RuntimeError(
            "MNEMO_PASSAGE_STORE=weaviate needs weaviate-client, the `weaviate` extra of mnemo-server "
            "(uv sync --extra weaviate; see docs/adr/0206-weaviate-passage-store.md for pip)"
        ) from error
    config = WeaviateConfig(
        url=settings.weaviate_url,
        grpc_address=settings.weaviate_grpc_address,
        api_key=settings.weaviate_api_key.get_secret_value() if settings.weaviate_api_key else None,
        timeout_seconds=settings.weaviate_timeout_seconds,
    )
    return WeaviatePassageStore(db, config)


async def build(settings: MemorySettings) -> MemoryApp:
    """Opens (and migrates) the database and builds the app."""
    db = Database(settings.resolved_database_url(), schema="memory", cache_mb=settings.sqlite_cache_mb)
    await prepare_schema(db, MIGRATIONS, migrate=settings.migrate, wait_seconds=settings.schema_wait_seconds)
    app = MemoryApp(db, settings)
    await app.start()
    return app
