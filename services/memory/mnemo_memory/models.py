"""The memory service's tables (its own schema; no other service reads them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from mnemo_core.db import Base, UtcDateTime


class Embedding(TypeDecorator[Any]):
    """A float32 vector, bound from a NumPy array: a blob on SQLite, a pgvector `vector` on Postgres.

    The Postgres column has no fixed dimension (each embedding model has its own); its indexes are
    per dimension (docs/adr/0201-postgres-passage-and-recall-search.md). Reads return the blob's bytes
    on SQLite; Postgres searches never read vectors back.
    """

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(VECTOR())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: npt.NDArray[np.float32] | None, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return np.asarray(value, np.float32).tobytes()


class MemoryBase(Base):
    """Declarative base of the memory schema."""

    __abstract__ = True


class BlockRow(MemoryBase):
    """A core memory block, or a template to create blocks from (org "" for the built-in ones)."""

    __tablename__ = "blocks"
    __table_args__ = (UniqueConstraint("org_id", "template_name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128), index=True)
    label: Mapped[str] = mapped_column(String(100))
    value: Mapped[str] = mapped_column(Text)
    char_limit: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    metadata_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Agent the block was created for (inline at agent creation); such blocks die with the agent.
    owner_agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    is_template: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # A template's name (unique per org; NULL for blocks, and NULLs never collide), or for a
    # block, the template it was created from (kept in `from_template`).
    template_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    from_template: Mapped[str] = mapped_column(String(100), default="", server_default="")
    # The latest version of the value (block_versions); 0 for a block written before versions were kept.
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class BlockVersionRow(MemoryBase):
    """One version of a block's value: who wrote it, how, and the value before and after.

    `state` places an edit on the block's undo stack: "applied", "undone" (redo may apply it again) or
    "discarded" (an edit came after it was undone); versions that are not edits themselves (create, undo,
    redo) have "". Rows go with their block, and beyond the retention settings.
    """

    __tablename__ = "block_versions"
    __table_args__ = (
        Index("ix_block_versions_org_block", "org_id", "block_id", "version"),
        Index("ix_block_versions_created", "created_at"),
    )

    block_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    # A mnemo.memory.v1.BlockOperation name: create, update, append, replace, insert, rewrite, restore, undo, redo.
    operation: Mapped[str] = mapped_column(String(16))
    # "user" (through the API: actor_id is the API key's user) or "agent" (its memory tools: the agent's id).
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(128))
    # The run (turn) whose tool call wrote it; "" outside a turn.
    run_id: Mapped[str] = mapped_column(String(64), default="")
    before: Mapped[str] = mapped_column(Text)
    after: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="")
    # The version an undo, redo or restore went back to.
    target_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class BlockAttachmentRow(MemoryBase):
    """A block attached to an agent; the label is copied here so it is unique per agent."""

    __tablename__ = "block_attachments"
    __table_args__ = (UniqueConstraint("org_id", "agent_id", "label"),)

    block_id: Mapped[str] = mapped_column(ForeignKey("blocks.id", ondelete="CASCADE"), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class MessageRow(MemoryBase):
    """One message of an agent's history. `content` is the whole serialized mnemo.common.v1.Message."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("org_id", "agent_id", "seq"),
        Index("ix_messages_batch", "org_id", "agent_id", "run_id", "step", "position", unique=True),
        # Which of an agent's messages still wait for the background embedder (key above its watermark).
        Index("ix_messages_agent_pk", "org_id", "agent_id", "pk"),
        # Keys only grow (never reused after a delete): the background embedder's watermark relies on it.
        {"sqlite_autoincrement": True},
    )

    # Integer key: the full-text index refers to rows by it, and it orders messages by arrival.
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[str] = mapped_column(String(128))
    agent_id: Mapped[str] = mapped_column(String(64))
    # Position in the agent's history, from 1; a message's place never changes.
    seq: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer)
    # Position within its (run, step) batch.
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    # The searchable text of the message.
    text: Mapped[str] = mapped_column(Text)
    # Full-text token of the agent (ranking.scope_token), indexed with the text.
    scope: Mapped[str] = mapped_column(String(80), default="")
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class HistoryRow(MemoryBase):
    """Per-agent bookkeeping: the next sequence number and where the context window starts."""

    __tablename__ = "histories"

    # Keyed by org too: agent ids come from callers, and one org must never collide with another.
    org_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_seq: Mapped[int] = mapped_column(Integer, default=1)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    # First history position inside the context window.
    context_start_seq: Mapped[int] = mapped_column(Integer, default=1)
    # Summary message shown before the window, once older messages were evicted.
    summary_message_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class MessageVectorRow(MemoryBase):
    """The embedding of one message, for recall by meaning."""

    __tablename__ = "message_vectors"
    __table_args__ = (
        Index("ix_message_vectors_scope", "org_id", "agent_id", "embedding_model", "message_pk"),
    )

    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.pk", ondelete="CASCADE"), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    agent_id: Mapped[str] = mapped_column(String(64))
    embedding_model: Mapped[str] = mapped_column(String(200))
    embedding: Mapped[Any] = mapped_column(Embedding)
    # The message's time (epoch seconds) and kind (mnemo.memory.v1.MessageKind), for filters in memory.
    created_epoch: Mapped[float] = mapped_column(Float)
    kind: Mapped[int] = mapped_column(Integer)


class EmbeddingProgressRow(MemoryBase):
    """How far a background embedder got: every row up to `last_pk` was handled."""

    __tablename__ = "embedding_progress"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_pk: Mapped[int] = mapped_column(BigInteger, default=0)


class PassageRow(MemoryBase):
    """A passage of archival memory: of an agent (agent_id) or of a source's file (source_id, file_id)."""

    __tablename__ = "passages"
    __table_args__ = (
        Index("ix_passages_agent", "org_id", "agent_id", "embedding_model", "pk"),
        Index("ix_passages_source", "org_id", "source_id", "embedding_model", "pk"),
        Index("ix_passages_file", "file_id", "embedding_dim", "pk"),
        # Speakers of an agent's passages: the distinct names, and the passages of one (contextual search).
        Index("ix_passages_speaker", "org_id", "agent_id", "speaker", "pk"),
        {"sqlite_autoincrement": True},
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[str] = mapped_column(String(128))
    # Empty for passages of a source.
    agent_id: Mapped[str] = mapped_column(String(64), default="")
    source_id: Mapped[str] = mapped_column(String(64), default="")
    file_id: Mapped[str] = mapped_column(String(64), default="")
    chunk_index: Mapped[int] = mapped_column(Integer, default=0)
    text: Mapped[str] = mapped_column(Text)
    # Full-text token of the agent or source (ranking.scope_token), indexed with the text.
    scope: Mapped[str] = mapped_column(String(80), default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    speaker: Mapped[str] = mapped_column(String(200), default="")
    metadata_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Empty / 0 / NULL while a file's chunk waits for its embedding.
    embedding_model: Mapped[str] = mapped_column(String(200), default="")
    embedding_dim: Mapped[int] = mapped_column(Integer, default=0)
    embedding: Mapped[Any] = mapped_column(Embedding, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # created_at as epoch seconds, so vector filters by time need no datetime parsing.
    created_epoch: Mapped[float] = mapped_column(Float)


class PassageTagRow(MemoryBase):
    """One tag of a passage, for tag filters."""

    __tablename__ = "passage_tags"
    __table_args__ = (Index("ix_passage_tags_tag", "org_id", "tag", "passage_pk"),)

    passage_pk: Mapped[int] = mapped_column(ForeignKey("passages.pk", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))


class SourceRow(MemoryBase):
    """A named collection of files."""

    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    embedding_model: Mapped[str] = mapped_column(String(200))
    embedding_dim: Mapped[int] = mapped_column(Integer)
    metadata_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SourceAttachmentRow(MemoryBase):
    """A source attached to an agent."""

    __tablename__ = "source_attachments"
    __table_args__ = (Index("ix_source_attachments_agent", "org_id", "agent_id"),)

    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FileRow(MemoryBase):
    """A file uploaded to a source, with its processing state."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_source", "org_id", "source_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    file_name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FileContentRow(MemoryBase):
    """An uploaded file's bytes, kept until they are parsed, so an interrupted job can start over."""

    __tablename__ = "file_contents"

    file_id: Mapped[str] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)


class JobRow(MemoryBase):
    """The background processing of one file."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status", "status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    source_id: Mapped[str] = mapped_column(String(64))
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    chunks_total: Mapped[int] = mapped_column(Integer, default=0)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
