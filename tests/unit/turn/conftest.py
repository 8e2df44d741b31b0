"""The turn's fakes and the agent database (real SQLite, migrated once per session)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mnemo_agent.app import MIGRATIONS
from mnemo_agent.runs import Runs
from mnemo_core.actor import Actor
from mnemo_core.db import Database
from mnemo_core.migrations import upgrade
from tests.unit.turn.fakes import Mesh


@pytest.fixture(scope="session")
async def agent_db(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('turns') / 'agent.db'}", schema="agent")
    await upgrade(db, MIGRATIONS)
    yield db
    await db.dispose()


@pytest.fixture
async def fakes(agent_db: Database) -> AsyncIterator[Mesh]:
    mesh = Mesh(agent_db, Runs(agent_db, lease_seconds=60.0))
    yield mesh
    await mesh.aclose()


@pytest.fixture
def actor() -> Actor:
    return Actor(org_id="org-turn-tests", user_id="user-turn-tests")
