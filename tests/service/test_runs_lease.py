"""Run records hold their agent: one active run per agent across processes, leases, restarts.

Every test runs on SQLite and on a real Postgres (several replicas share one Postgres).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from mnemo.common.v1 import turn_pb2
from mnemo_agent.app import MIGRATIONS
from mnemo_agent.runs import AWAITING_APPROVAL, COMPLETED, CREATED, FAILED, RUNNING, AgentBusy, Runs
from mnemo_agent.store import Agent, AgentQueries
from mnemo_core.db import Database
from mnemo_core.errors import FailedPrecondition, NotFound
from mnemo_core.migrations import upgrade
from mnemo_core.wire import utcnow
from tests.postgres import embedded_postgres


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A real Postgres 18 for this module's tests (and those that import the fixture)."""
    with embedded_postgres() as url:
        yield url


class Clock:
    """Wall-clock time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}", schema="agent")
    else:
        url = request.getfixturevalue("postgres_url")
        database = Database(url, schema=f"agent_{uuid.uuid4().hex[:12]}")
    await upgrade(database, MIGRATIONS)
    now = utcnow()
    agent = Agent(
        id="agent-1",
        org_id="org-1",
        created_by="u",
        name="a",
        model="openai/m",
        created_at=now,
        updated_at=now,
    )
    await database.write(AgentQueries.insert, [agent])
    yield database
    await database.dispose()


async def test_a_second_running_run_of_one_agent_waits_while_the_first_holds_its_lease(db: Database) -> None:
    # Two Runs objects on one database stand for two replicas of the service.
    first, second = Runs(db, lease_seconds=60), Runs(db, lease_seconds=60)
    held = await first.start("org-1", "agent-1", "", max_steps=3)

    with pytest.raises(AgentBusy):
        await second.start("org-1", "agent-1", "", max_steps=3)

    await first.finish(
        held.run.id,
        status=COMPLETED,
        stop_reason=turn_pb2.STOP_REASON_END_TURN,
        usage=turn_pb2.Usage(),
        message_ids=[],
    )
    taken = await second.start("org-1", "agent-1", "", max_steps=3)
    assert taken.run.status == RUNNING


async def test_a_run_whose_lease_ran_out_is_failed_and_the_agent_taken_over(db: Database) -> None:
    clock = Clock()
    crashed = Runs(db, lease_seconds=60, clock=clock)
    orphan = await crashed.start("org-1", "agent-1", "key-1", max_steps=3)
    clock.advance(61)

    taken = await Runs(db, clock=clock).start("org-1", "agent-1", "", max_steps=3)

    assert taken.run.id != orphan.run.id
    old = await crashed.get("org-1", orphan.run.id)
    assert old.status == FAILED
    assert "interrupted" in old.error
    # A retry with the orphan's key finds it (and resumes it once the agent is free).
    again = await crashed.start("org-1", "agent-1", "key-1", max_steps=3)
    assert again.existing
    assert again.run.id == orphan.run.id


async def test_an_agent_waiting_for_approval_takes_no_new_run(db: Database) -> None:
    runs = Runs(db)
    waiting = await runs.start("org-1", "agent-1", "", max_steps=3)
    await runs.finish(
        waiting.run.id,
        status=AWAITING_APPROVAL,
        stop_reason=turn_pb2.STOP_REASON_REQUIRES_APPROVAL,
        usage=turn_pb2.Usage(),
        message_ids=[],
        pending_approvals=[{"id": "call-1", "name": "t", "arguments": "{}"}],
    )

    with pytest.raises(FailedPrecondition) as refused:
        await runs.start("org-1", "agent-1", "", max_steps=3)

    assert refused.value.reason == "APPROVAL_PENDING"
    assert refused.value.metadata == {"run_id": waiting.run.id}


async def test_restart_fails_running_runs_and_returns_only_background_runs_to_start_again(
    db: Database,
) -> None:
    runs = Runs(db)
    sync_run = await runs.start("org-1", "agent-1", "", max_steps=3, request=b"\n\x07agent-1")
    queued = await runs.start(
        "org-1", "agent-1", "", max_steps=3, status=CREATED, request=b"\n\x07agent-1", background=True
    )

    restart = await runs.interrupted_at_start()

    assert [r.id for r in restart] == [queued.run.id]
    assert (await runs.get("org-1", sync_run.run.id)).status == FAILED
    assert (await runs.get("org-1", queued.run.id)).status == CREATED


async def test_runs_of_another_organization_are_not_found(db: Database) -> None:
    runs = Runs(db)
    started = await runs.start("org-1", "agent-1", "", max_steps=3)

    with pytest.raises(NotFound) as missing:
        await runs.get("org-2", started.run.id)

    assert missing.value.reason == "RUN_NOT_FOUND"


async def test_a_unit_of_work_commits_its_statements_together_or_not_at_all(db: Database) -> None:
    from sqlalchemy import Connection, insert, select

    from mnemo_agent.models import AgentTagRow

    def two_tags(connection: Connection) -> int:
        connection.execute(insert(AgentTagRow), [{"agent_id": "agent-1", "tag": "a"}])
        connection.execute(insert(AgentTagRow), [{"agent_id": "agent-1", "tag": "b"}])
        return 2

    def duplicate(connection: Connection) -> None:
        connection.execute(insert(AgentTagRow), [{"agent_id": "agent-1", "tag": "c"}])
        connection.execute(insert(AgentTagRow), [{"agent_id": "agent-1", "tag": "a"}])

    assert await db.write(two_tags) == 2
    with pytest.raises(IntegrityError):
        await db.write(duplicate)

    tags = await db.read(lambda connection: sorted(connection.scalars(select(AgentTagRow.tag))))
    assert tags == ["a", "b"]
