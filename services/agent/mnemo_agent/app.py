"""Wires the agent service: database, mesh clients, domain, servicer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc
from mnemo_agent.agents import Agents
from mnemo_agent.mesh import Mesh
from mnemo_agent.runs import Runs
from mnemo_agent.servicer import AgentServicer
from mnemo_agent.settings import AgentSettings
from mnemo_agent.turns import Turns
from mnemo_core.db import Database
from mnemo_core.migrations import upgrade

MIGRATIONS = Path(__file__).parent / "migrations"


class AgentApp:
    """The agent service's servicer, database and peer clients."""

    def __init__(self, db: Database, mesh: Mesh, settings: AgentSettings) -> None:
        self.db = db
        self.mesh = mesh
        self.agents = Agents(db, mesh, max_steps_limit=settings.max_steps_limit)
        self.turns = Turns(
            self.agents,
            Runs(db),
            mesh,
            default_max_steps=settings.default_max_steps,
            max_steps_limit=settings.max_steps_limit,
            llm_timeout=settings.llm_timeout,
        )

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(self.agents, self.turns), server)
        return [agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name]

    async def aclose(self) -> None:
        await self.mesh.aclose()
        await self.db.dispose()


async def build(settings: AgentSettings) -> AgentApp:
    """Opens (and migrates) the database, connects to the peers and builds the app."""
    db = Database(settings.resolved_database_url(), schema="agent")
    if settings.migrate:
        await upgrade(db, MIGRATIONS)
    return AgentApp(db, Mesh(settings), settings)
