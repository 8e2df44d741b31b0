"""An organization may have a bounded number of runs going at once; others' runs and retries are unaffected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from mnemo.common.v1 import turn_pb2
from mnemo_agent.app import MIGRATIONS
from mnemo_agent.runs import COMPLETED, Runs
from mnemo_agent.store import Agent, AgentQueries
from mnemo_core.db import Database
from mnemo_core.errors import ResourceExhausted
from mnemo_core.migrations import upgrade
from mnemo_core.quotas import RETRY_AFTER_KEY
from mnemo_core.wire import utcnow

AGENTS = {"agent-1": "org-1", "agent-2": "org-1", "agent-3": "org-1", "agent-9": "org-2"}


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}", schema="agent")
    await upgrade(database, MIGRATIONS)
    now = utcnow()
    agents = [
        Agent(id=a, org_id=o, created_by="u", name=a, model="openai/m", created_at=now, updated_at=now)
        for a, o in AGENTS.items()
    ]
    await database.write(AgentQueries.insert, agents)
    yield database
    await database.dispose()


async def test_a_run_beyond_the_organizations_cap_is_refused_until_one_finishes(db: Database) -> None:
    runs = Runs(db, max_running_per_org=2)
    first = await runs.start("org-1", "agent-1", "key-1", max_steps=3)
    await runs.start("org-1", "agent-2", "", max_steps=3)

    with pytest.raises(ResourceExhausted) as refused:
        await runs.start("org-1", "agent-3", "", max_steps=3)
    assert refused.value.reason == "ORG_RUNS_EXHAUSTED"
    assert refused.value.metadata == {"max_running_runs": "2", RETRY_AFTER_KEY: "1"}

    other_org = await runs.start("org-2", "agent-9", "", max_steps=3)
    assert not other_org.existing
    retry = await runs.start("org-1", "agent-1", "key-1", max_steps=3)
    assert retry.existing
    assert retry.run.id == first.run.id

    await runs.finish(
        first.run.id,
        status=COMPLETED,
        stop_reason=turn_pb2.STOP_REASON_END_TURN,
        usage=turn_pb2.Usage(),
        message_ids=[],
    )
    third = await runs.start("org-1", "agent-3", "", max_steps=3)
    assert not third.existing


async def test_a_run_whose_lease_ran_out_does_not_count_against_the_cap(db: Database) -> None:
    clock = Clock()
    runs = Runs(db, lease_seconds=60, max_running_per_org=1, clock=clock)
    await runs.start("org-1", "agent-1", "", max_steps=3)
    with pytest.raises(ResourceExhausted):
        await runs.start("org-1", "agent-2", "", max_steps=3)
    clock.now += timedelta(seconds=61)
    started = await runs.start("org-1", "agent-2", "", max_steps=3)
    assert not started.existing
