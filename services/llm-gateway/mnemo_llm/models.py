"""The llm-gateway's tables: the usage ledger and provider batches."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from mnemo_core.db import Base, UtcDateTime


class LlmBase(Base):
    """Declarative base of the llm-gateway schema."""

    __abstract__ = True


class UsageRow(LlmBase):
    """Tokens spent by one model call (Chat, StreamChat or Embed) for an organization."""

    __tablename__ = "usage_entries"
    __table_args__ = (
        Index("ix_usage_entries_org_time", "org_id", "created_at"),
        Index("ix_usage_entries_org_agent", "org_id", "agent_id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    org_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    # Empty when the call was made for no agent.
    agent_id: Mapped[str] = mapped_column(String(64))
    # "provider/model" as requested.
    model: Mapped[str] = mapped_column(String(256))
    # "chat" or "embed".
    operation: Mapped[str] = mapped_column(String(16))
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # UTC day of created_at as YYYY-MM-DD, stored so grouping by day is portable SQL.
    day: Mapped[str] = mapped_column(String(10))


class ChatBatchRow(LlmBase):
    """A chat batch submitted to a provider's batch API (the requests themselves stay with the provider)."""

    __tablename__ = "chat_batches"
    __table_args__ = (Index("ix_chat_batches_org_created", "org_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    # The provider's name (as in "provider/model") and its own id of the batch.
    provider: Mapped[str] = mapped_column(String(128))
    provider_batch_id: Mapped[str] = mapped_column(String(256))
    # ChatBatchState name without its prefix, lower case: "pending", "running", "succeeded", ...
    state: Mapped[str] = mapped_column(String(16))
    request_count: Mapped[int] = mapped_column(Integer)
    succeeded_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    # Per request, in order: {"model": "provider/model", "agent_id"}, for the usage ledger.
    requests: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Once finished: a serialized ChatBatch holding only `results` and `error`.
    outcome: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
