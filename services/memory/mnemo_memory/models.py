"""The memory service's tables (its own schema; no other service reads them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mnemo_core.db import Base, UtcDateTime


class MemoryBase(Base):
    """Declarative base of the memory schema."""

    __abstract__ = True


class BlockRow(MemoryBase):
    """A core memory block."""

    __tablename__ = "blocks"

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
    """One message of an agent's history. `content` is the serialized typed content."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("org_id", "agent_id", "seq"),
        Index("ix_messages_batch", "org_id", "agent_id", "run_id", "step", "position", unique=True),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
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
