"""The llm-gateway's tables: the usage ledger."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String
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
