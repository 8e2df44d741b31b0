"""SQL for agents, runs and batches. No business rules here: callers validate, this reads and writes.

Every function takes a sync SQLAlchemy `Connection` and runs inside one unit of work (`Database.read` or
`write`); rows come back as the dataclasses below, never as ORM entities. The statements of the two writes
of every turn (a run's start and finish) are built once, at import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    update,
)

from mnemo_agent.models import AgentRow, AgentTagRow, BatchRow, EndUserAgentRow, RunRow
from mnemo_core.db import table_of

agents_t = table_of(AgentRow)
tags_t = table_of(AgentTagRow)
runs_t = table_of(RunRow)
batches_t = table_of(BatchRow)
_end_user_agents_t = table_of(EndUserAgentRow)

CREATED, RUNNING, COMPLETED, FAILED, CANCELLED, AWAITING_APPROVAL = (
    "created",
    "running",
    "completed",
    "failed",
    "cancelled",
    "awaiting_approval",
)
ACTIVE = (RUNNING, AWAITING_APPROVAL)
INTERRUPTED = "interrupted: the agent service stopped during the turn; retry with the same idempotency key"
# The error of a run cancelled because its caller went away (a dropped connection, a gateway that died),
# not because anyone asked: sending the turn again with the same key finishes it.
CALLER_GONE = "the caller went away during the turn; send it again with the same idempotency key to finish it"


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent's configuration. Its blocks and messages live in the memory service."""

    id: str
    org_id: str
    created_by: str
    name: str
    model: str
    created_at: datetime
    updated_at: datetime
    description: str = ""
    system: str = ""
    embedding_model: str = ""
    context_window: int = 0
    max_steps: int = 0
    tool_ids: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    metadata_json: dict[str, Any] = field(default_factory=dict)
    agent_type: str = "standard"
    llm_options: dict[str, Any] = field(default_factory=dict)
    # [{"tool_name", "type", ...}]; see mnemo_agent.tool_rules.
    tool_rules: list[dict[str, Any]] = field(default_factory=list)
    summarizer_model: str = ""
    # {"enabled", "frequency", "model"} of the sleep-time agent.
    sleeptime: dict[str, Any] = field(default_factory=dict)
    sleeptime_agent_id: str | None = None
    primary_agent_id: str | None = None
    # The built-in tools that edit core memory: "classic" or "lines".
    memory_tool_set: str = "classic"


@dataclass(frozen=True, slots=True)
class Run:
    """One turn of an agent: status, outcome, usage, and the client's idempotency key."""

    id: str
    org_id: str
    agent_id: str
    status: str
    created_at: datetime
    stop_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    step_count: int = 0
    # None when the client sent no key.
    idempotency_key: str | None = None
    message_ids: list[str] = field(default_factory=list)
    error: str = ""
    completed_at: datetime | None = None
    # A running run's holder must extend this while it works; past it, the run counts as orphaned.
    lease_expires_at: datetime | None = None
    # Set by CancelRun when the run executes in another replica; its holder polls it.
    cancel_requested: bool = False
    max_steps: int = 0
    # The serialized SendMessageRequest: a retry with the same key must repeat it, and a background
    # run (async or batch) is started (again) from it.
    request: bytes | None = None
    # Started in the background (async or batch): nobody waits for it, so a restart resumes it.
    background: bool = False
    batch_id: str | None = None
    # Tool calls waiting for approval: [{"id", "name", "arguments"}].
    pending_approvals: list[dict[str, str]] = field(default_factory=list)
    # Agent-to-agent messages: the sending run, the chain's first run, the depth in the chain, the agents
    # waiting for this run's reply. A member turn of a group carries its group run.
    parent_run_id: str | None = None
    root_run_id: str | None = None
    depth: int = 0
    waiting_agent_ids: list[str] = field(default_factory=list)
    group_run_id: str | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch of turns; its items are the runs with its batch_id."""

    id: str
    org_id: str
    created_at: datetime
    run_ids: list[str] = field(default_factory=list)
    # "concurrent" (ordinary model calls) or "provider" (model calls gathered into provider batches).
    mode: str = "concurrent"
    # Provider mode: the rounds waiting for a provider, [{"chat_batch_id", "calls": ["<run>:<step>"]}].
    pending_rounds: list[dict[str, Any]] = field(default_factory=list)
    # Provider mode: rounds submitted so far.
    round_count: int = 0


def _agent(row: Any) -> Agent:
    return Agent(**row._asdict())


def _run(row: Any) -> Run:
    return Run(**row._asdict())


def _batch(row: Any) -> Batch:
    return Batch(**row._asdict())


def newest_first(table: Any, after: tuple[datetime, str] | None) -> Any:
    """Rows older than `after` (created_at, id), the position a newest-first page ended at."""
    if after is None:
        return true()
    created, last_id = after
    return or_(table.c.created_at < created, and_(table.c.created_at == created, table.c.id < last_id))


class AgentQueries:
    """Agent reads and writes on one connection."""

    @staticmethod
    def get(conn: Connection, org_id: str, agent_id: str, *, lock: bool = False) -> Agent | None:
        query = select(agents_t).where(agents_t.c.id == agent_id, agents_t.c.org_id == org_id)
        row = conn.execute(query.with_for_update() if lock else query).first()
        return None if row is None else _agent(row)

    @staticmethod
    def in_org(conn: Connection, org_id: str, agent_ids: Sequence[str]) -> dict[str, Agent]:
        rows = conn.execute(
            select(agents_t).where(agents_t.c.org_id == org_id, agents_t.c.id.in_(list(agent_ids)))
        )
        return {row.id: _agent(row) for row in rows}

    @staticmethod
    def page(
        conn: Connection,
        org_id: str,
        *,
        name: str,
        tags: Sequence[str],
        after: tuple[datetime, str] | None,
        limit: int,
        end_user_id: str = "",
    ) -> list[Agent]:
        """The organization's agents, newest first (of one end user, when given)."""
        query = select(agents_t).where(agents_t.c.org_id == org_id, newest_first(agents_t, after))
        if name:
            query = query.where(agents_t.c.name == name)
        if end_user_id:
            query = query.where(
                agents_t.c.id.in_(
                    select(_end_user_agents_t.c.agent_id).where(
                        _end_user_agents_t.c.end_user_id == end_user_id, _end_user_agents_t.c.org_id == org_id
                    )
                )
            )
        if tags:
            wanted = set(tags)
            tagged = (
                select(tags_t.c.agent_id)
                .where(tags_t.c.tag.in_(wanted))
                .group_by(tags_t.c.agent_id)
                .having(func.count(tags_t.c.tag) == len(wanted))
            )
            query = query.where(agents_t.c.id.in_(tagged))
        query = query.order_by(agents_t.c.created_at.desc(), agents_t.c.id.desc()).limit(limit)
        return [_agent(row) for row in conn.execute(query)]

    @staticmethod
    def insert(conn: Connection, agents: Sequence[Agent]) -> None:
        """Stores new agents with their tags."""
        conn.execute(insert(agents_t), [dataclasses.asdict(agent) for agent in agents])
        AgentQueries._insert_tags(conn, [(agent.id, agent.tags) for agent in agents])

    @staticmethod
    def update(conn: Connection, org_id: str, agent_id: str, values: Mapping[str, Any]) -> bool:
        """Changes the given columns of the organization's agent (its tag rows follow `tags`); whether it exists."""
        changed = conn.execute(
            update(agents_t).where(agents_t.c.id == agent_id, agents_t.c.org_id == org_id).values(**values)
        )
        if not changed.rowcount:
            return False
        if "tags" in values:
            conn.execute(delete(tags_t).where(tags_t.c.agent_id == agent_id))
            AgentQueries._insert_tags(conn, [(agent_id, values["tags"])])
        return True

    @staticmethod
    def delete(conn: Connection, org_id: str, agent_id: str) -> None:
        conn.execute(delete(agents_t).where(agents_t.c.id == agent_id, agents_t.c.org_id == org_id))

    @staticmethod
    def _insert_tags(conn: Connection, tagged: Sequence[tuple[str, Sequence[str]]]) -> None:
        rows = [{"agent_id": agent_id, "tag": tag} for agent_id, tags in tagged for tag in set(tags)]
        if rows:
            conn.execute(insert(tags_t), rows)


_INSERT_RUNS = insert(runs_t)
_FINISHED_FIELDS = (
    "status",
    "stop_reason",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "step_count",
    "message_ids",
    "error",
    "lease_expires_at",
    "pending_approvals",
    "completed_at",
)
_FINISH = (
    update(runs_t)
    .where(runs_t.c.id == bindparam("run_id"))
    .values({name: bindparam(name, type_=runs_t.c[name].type) for name in _FINISHED_FIELDS})
)


class RunQueries:
    """Run reads and writes on one connection."""

    @staticmethod
    def insert(conn: Connection, runs: Sequence[Run]) -> None:
        conn.execute(_INSERT_RUNS, [dataclasses.asdict(run) for run in runs])

    @staticmethod
    def finish(conn: Connection, run_id: str, values: Mapping[str, Any]) -> None:
        """Writes the outcome fields (_FINISHED_FIELDS, every one of them) of a run."""
        conn.execute(_FINISH, {"run_id": run_id, **values})

    @staticmethod
    def get(conn: Connection, org_id: str, run_id: str) -> Run | None:
        row = conn.execute(select(runs_t).where(runs_t.c.id == run_id, runs_t.c.org_id == org_id)).first()
        return None if row is None else _run(row)

    @staticmethod
    def by_key(conn: Connection, org_id: str, agent_id: str, key: str) -> Run | None:
        row = conn.execute(
            select(runs_t).where(
                runs_t.c.agent_id == agent_id, runs_t.c.org_id == org_id, runs_t.c.idempotency_key == key
            )
        ).first()
        return None if row is None else _run(row)

    @staticmethod
    def active(conn: Connection, agent_id: str) -> Run | None:
        """The run that holds the agent, if any."""
        row = conn.execute(
            select(runs_t).where(runs_t.c.agent_id == agent_id, runs_t.c.status.in_(ACTIVE))
        ).first()
        return None if row is None else _run(row)

    @staticmethod
    def many(conn: Connection, org_id: str, run_ids: Sequence[str]) -> dict[str, Run]:
        rows = conn.execute(select(runs_t).where(runs_t.c.org_id == org_id, runs_t.c.id.in_(list(run_ids))))
        return {row.id: _run(row) for row in rows}

    @staticmethod
    def page(
        conn: Connection,
        org_id: str,
        *,
        agent_id: str,
        status: str,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Run]:
        """The organization's runs, newest first."""
        query = select(runs_t).where(runs_t.c.org_id == org_id, newest_first(runs_t, after))
        if agent_id:
            query = query.where(runs_t.c.agent_id == agent_id)
        if status:
            query = query.where(runs_t.c.status == status)
        query = query.order_by(runs_t.c.created_at.desc(), runs_t.c.id.desc()).limit(limit)
        return [_run(row) for row in conn.execute(query)]

    @staticmethod
    def running_in_org(conn: Connection, org_id: str, now: datetime) -> int:
        """How many of the organization's runs are running now (a run whose lease ran out is not)."""
        # The status as a literal, not a bound parameter: only then can the planner use the partial index.
        count = conn.scalar(
            select(func.count()).where(
                runs_t.c.org_id == org_id,
                runs_t.c.status == literal_column(f"'{RUNNING}'"),
                runs_t.c.lease_expires_at > now,
            )
        )
        return int(count or 0)

    @staticmethod
    def in_chain(conn: Connection, root_run_id: str) -> int:
        """How many runs a chain of agent-to-agent messages started from `root_run_id` holds."""
        return int(conn.scalar(select(func.count()).where(runs_t.c.root_run_id == root_run_id)) or 0)

    @staticmethod
    def completed_count(conn: Connection, agent_id: str) -> int:
        count = conn.scalar(
            select(func.count()).where(runs_t.c.agent_id == agent_id, runs_t.c.status == COMPLETED)
        )
        return int(count or 0)

    @staticmethod
    def cancel_requested(conn: Connection, run_id: str) -> bool:
        return bool(conn.scalar(select(runs_t.c.cancel_requested).where(runs_t.c.id == run_id)))

    @staticmethod
    def change(conn: Connection, run_id: str, statuses: Sequence[str], values: Mapping[str, Any]) -> bool:
        """Changes a run that is in one of `statuses` (any status when empty); whether it did."""
        where = runs_t.c.id == run_id
        if statuses:
            where = and_(where, runs_t.c.status.in_(list(statuses)))
        return bool(conn.execute(update(runs_t).where(where).values(**values)).rowcount)

    @staticmethod
    def fail_interrupted(conn: Connection, now: datetime, *, background_lease_before: bool) -> None:
        """Fails running runs as interrupted: every one, or only background runs whose lease ran out."""
        where = runs_t.c.status == RUNNING
        if background_lease_before:
            where = and_(where, runs_t.c.background.is_(True), runs_t.c.lease_expires_at < now)
        conn.execute(
            update(runs_t)
            .where(where)
            .values(status=FAILED, error=INTERRUPTED, lease_expires_at=None, completed_at=now)
        )

    @staticmethod
    def restartable(conn: Connection, now: datetime, lease: timedelta, limit: int) -> list[Run]:
        """Async-send runs to start again: failed as interrupted, or created a whole lease ago and never started."""
        query = (
            select(runs_t)
            .where(
                runs_t.c.background.is_(True),
                runs_t.c.batch_id.is_(None),
                runs_t.c.request.is_not(None),
                or_(
                    and_(runs_t.c.status == FAILED, runs_t.c.error == INTERRUPTED),
                    and_(runs_t.c.status == CREATED, runs_t.c.created_at < now - lease),
                ),
            )
            .order_by(runs_t.c.created_at)
            .limit(limit)
        )
        return [_run(row) for row in conn.execute(query)]

    @staticmethod
    def unfinished(conn: Connection) -> list[Run]:
        """Runs running or created, and those failed as interrupted."""
        query = select(runs_t).where(
            or_(
                runs_t.c.status.in_((RUNNING, CREATED)),
                and_(runs_t.c.status == FAILED, runs_t.c.error == INTERRUPTED),
            )
        )
        return [_run(row) for row in conn.execute(query)]


class BatchQueries:
    """Batch reads and writes on one connection."""

    @staticmethod
    def insert(conn: Connection, batch: Batch, runs: Sequence[Run]) -> None:
        """Stores a batch with its runs."""
        conn.execute(insert(batches_t).values(**dataclasses.asdict(batch)))
        RunQueries.insert(conn, runs)

    @staticmethod
    def get(conn: Connection, batch_id: str, org_id: str | None = None) -> Batch | None:
        """A batch (of the organization, when given)."""
        query = select(batches_t).where(batches_t.c.id == batch_id)
        if org_id is not None:
            query = query.where(batches_t.c.org_id == org_id)
        row = conn.execute(query).first()
        return None if row is None else _batch(row)

    @staticmethod
    def set_rounds(conn: Connection, batch_id: str, pending: list[dict[str, Any]], count: int) -> None:
        conn.execute(
            update(batches_t)
            .where(batches_t.c.id == batch_id)
            .values(pending_rounds=pending, round_count=count)
        )
