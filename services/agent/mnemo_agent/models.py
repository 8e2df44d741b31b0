"""The agent service's tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from mnemo_core.db import Base, UtcDateTime


class AgentBase(Base):
    """Declarative base of the agent schema."""

    __abstract__ = True


class AgentRow(AgentBase):
    """An agent's configuration. Its blocks and messages live in the memory service."""

    __tablename__ = "agents"
    __table_args__ = (Index("ix_agents_org_created", "org_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    created_by: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    system: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(String(200))
    embedding_model: Mapped[str] = mapped_column(String(200), default="")
    context_window: Mapped[int] = mapped_column(Integer, default=0)
    max_steps: Mapped[int] = mapped_column(Integer, default=0)
    tool_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    metadata_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    agent_type: Mapped[str] = mapped_column(String(16), default="standard")
    llm_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # [{"tool_name", "type", ...}]; see mnemo_agent.tool_rules.
    tool_rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    summarizer_model: Mapped[str] = mapped_column(String(200), default="")
    # {"enabled", "frequency", "model"} of the sleep-time agent.
    sleeptime: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sleeptime_agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    primary_agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The built-in tools that edit core memory: "classic" or "lines" (mnemo_agent.memory_tools).
    memory_tool_set: Mapped[str] = mapped_column(String(16), default="classic", server_default="classic")


class AgentTagRow(AgentBase):
    """One tag of an agent, for portable tag filters."""

    __tablename__ = "agent_tags"

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(200), primary_key=True)


class RunRow(AgentBase):
    """One turn of an agent: status, outcome, usage, and the client's idempotency key."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("agent_id", "idempotency_key"),
        Index("ix_runs_agent_created", "agent_id", "created_at"),
        Index("ix_runs_org_created", "org_id", "created_at", "id"),
        Index("ix_runs_batch", "batch_id"),
        Index("ix_runs_root", "root_run_id"),
        Index("ix_runs_group_run", "group_run_id"),
        # The organization's running runs, counted when a run starts (the cap of ADR 0412): only the few
        # running rows are indexed, so the count does not grow with the history.
        Index(
            "ix_runs_running_org",
            "org_id",
            "lease_expires_at",
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        # At most one turn of an agent holds it at a time, across every replica of the service:
        # inserting a second running run of the same agent fails (see mnemo_agent.runs).
        Index(
            "uq_runs_one_active_per_agent",
            "agent_id",
            unique=True,
            sqlite_where=text("status IN ('running', 'awaiting_approval')"),
            postgresql_where=text("status IN ('running', 'awaiting_approval')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(32))
    stop_reason: Mapped[str] = mapped_column(String(32), default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    step_count: Mapped[int] = mapped_column(Integer, default=0)
    # NULL when the client sent no key (NULLs never collide in the unique constraint).
    idempotency_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    message_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # A running run's holder must extend this while it works; past it, the run counts as orphaned.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Set by CancelRun when the run executes in another replica; its holder polls it.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    max_steps: Mapped[int] = mapped_column(Integer, default=0)
    # The serialized SendMessageRequest: a retry with the same key must repeat it, and a background
    # run (async or batch) is started (again) from it.
    request: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Started in the background (async or batch): nobody waits for it, so a restart resumes it.
    background: Mapped[bool] = mapped_column(Boolean, default=False)
    batch_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Tool calls waiting for approval: [{"id", "name", "arguments"}].
    pending_approvals: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    # Agent-to-agent messages (mnemo_agent.turn.messaging): the run that sent the message, the first run of
    # the chain (its budget is counted over the runs of the chain), how deep in it this run is, and the
    # agents whose turns wait for this one's reply.
    parent_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    root_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    depth: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    waiting_agent_ids: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    # A member turn of a group run.
    group_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class BatchRow(AgentBase):
    """A batch of turns; its items are the runs with its batch_id."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_org_created", "org_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    run_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # "concurrent" (ordinary model calls) or "provider" (model calls gathered into provider batches).
    mode: Mapped[str] = mapped_column(String(16), default="concurrent", server_default="concurrent")
    # Provider mode: the rounds waiting for a provider, [{"chat_batch_id", "calls": ["<run>:<step>"]}].
    pending_rounds: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, server_default="[]")
    # Provider mode: rounds submitted so far.
    round_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class GroupRow(AgentBase):
    """A group of agents of one organization and the policy that says who speaks (mnemo_agent.groups)."""

    __tablename__ = "groups"
    __table_args__ = (Index("ix_groups_org_created", "org_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # "round_robin", "supervisor", "dynamic" or "sleeptime".
    manager_type: Mapped[str] = mapped_column(String(32))
    manager_agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The members in speaking order.
    agent_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    max_turns: Mapped[int] = mapped_column(Integer, default=0)
    termination_token: Mapped[str] = mapped_column(String(200), default="")
    sleeptime_frequency: Mapped[int] = mapped_column(Integer, default=0)
    shared_block_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Blocks the group created (deleted with it) and attachments it made [[block_id, agent_id]] (undone).
    owned_block_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    attachments: Mapped[list[list[str]]] = mapped_column(JSON, default=list)
    metadata_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class GroupMemberRow(AgentBase):
    """An agent's place in a group (its manager too): an agent in a group cannot be deleted."""

    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="RESTRICT"), primary_key=True)


class GroupRunRow(AgentBase):
    """One message sent to a group; its member turns are runs with this group_run_id."""

    __tablename__ = "group_runs"
    __table_args__ = (
        UniqueConstraint("group_id", "idempotency_key"),
        Index("ix_group_runs_group_created", "group_id", "created_at", "id"),
        # One group run at a time answers a group (its members' turns would interleave otherwise).
        Index(
            "uq_group_runs_one_running",
            "group_id",
            unique=True,
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(32))
    stop_reason: Mapped[str] = mapped_column(String(32), default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    step_count: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    run_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    error: Mapped[str] = mapped_column(Text, default="")
    # The serialized SendGroupMessageRequest: a retry with the same key must repeat it.
    request: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class OrganizationRow(AgentBase):
    """A tenant; "org-default" (made by the migration) is the one the root key acts for."""

    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class UserRow(AgentBase):
    """A user of an organization; deleting the organization deletes it."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("org_id", "name"),
        Index("ix_users_org_created", "org_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiKeyRow(AgentBase):
    """An API key: only the SHA-256 of its secret is kept. Revoked keys stay, with `revoked_at` set."""

    __tablename__ = "api_keys"
    __table_args__ = (
        Index("ix_api_keys_org_created", "org_id", "created_at", "id"),
        # Names are unique among the active keys of an organization; a revoked key's name can be reused.
        Index(
            "uq_api_keys_active_name",
            "org_id",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    display_prefix: Mapped[str] = mapped_column(String(32))
    # Hex SHA-256 of the secret. Secrets are 256 random bits, so a fast hash cannot be brute-forced and
    # a slow (password) hash would only cost every request that is not cached.
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class EndUserRow(AgentBase):
    """An end user of an application (REST: an identity), known by the application's own id for it."""

    __tablename__ = "end_users"
    __table_args__ = (
        UniqueConstraint("org_id", "identifier_key"),
        Index("ix_end_users_org_created", "org_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    identifier_key: Mapped[str] = mapped_column(String(256))
    name: Mapped[str] = mapped_column(String(200), default="")
    # "user", "org" or "other" (mnemo.agent.v1.EndUserType).
    type: Mapped[str] = mapped_column(String(16), default="user")
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class EndUserAgentRow(AgentBase):
    """An agent of an end user; goes with either."""

    __tablename__ = "end_user_agents"
    __table_args__ = (Index("ix_end_user_agents_agent", "agent_id"),)

    end_user_id: Mapped[str] = mapped_column(ForeignKey("end_users.id", ondelete="CASCADE"), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class EndUserBlockRow(AgentBase):
    """A block of an end user (the block lives in the memory service), attached to its agents there."""

    __tablename__ = "end_user_blocks"

    end_user_id: Mapped[str] = mapped_column(ForeignKey("end_users.id", ondelete="CASCADE"), primary_key=True)
    block_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditEventRow(AgentBase):
    """One write made through REST or by a gRPC client with an API key (never a secret or a body)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_org_time", "org_id", "time", "id"),
        # Pruning deletes by time across organizations.
        Index("ix_audit_events_time", "time"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # No foreign key: the log outlives what it records (a deleted organization's events stay until pruned).
    org_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(300))
    resource: Mapped[str] = mapped_column(String(1000))
    request_id: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(128))
    code: Mapped[int] = mapped_column(Integer)
    surface: Mapped[str] = mapped_column(String(8))
    time: Mapped[datetime] = mapped_column(UtcDateTime)
