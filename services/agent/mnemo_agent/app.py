"""Wires the agent service: database, mesh clients, domain, servicers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import grpc

from mnemo.agent.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    batch_pb2,
    batch_pb2_grpc,
    end_user_pb2,
    end_user_pb2_grpc,
    group_pb2,
    group_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    run_pb2,
    run_pb2_grpc,
)
from mnemo_agent.agent_files import AgentFiles
from mnemo_agent.agents import Agents
from mnemo_agent.audit_log import AuditLog
from mnemo_agent.batches import Batches
from mnemo_agent.end_users import EndUsers
from mnemo_agent.group_turns import GroupTurns
from mnemo_agent.groups import Groups
from mnemo_agent.identity import Identities
from mnemo_agent.mesh import Mesh
from mnemo_agent.org_holdings import MeshHoldings
from mnemo_agent.runs import Runs
from mnemo_agent.servicers.agents import AgentServicer
from mnemo_agent.servicers.audit import AuditServicer
from mnemo_agent.servicers.batches import BatchServicer
from mnemo_agent.servicers.end_users import EndUserServicer
from mnemo_agent.servicers.groups import GroupServicer
from mnemo_agent.servicers.identity import IdentityServicer
from mnemo_agent.servicers.runs import RunServicer
from mnemo_agent.settings import AgentSettings
from mnemo_agent.sleeptime import Sleeptime
from mnemo_agent.store import Run
from mnemo_agent.turn import Turns
from mnemo_core.actor import Actor
from mnemo_core.audit import AuditEvent
from mnemo_core.db import Database
from mnemo_core.migrations import prepare_schema

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


class AgentApp:
    """The agent service's servicers, database and peer clients."""

    def __init__(self, db: Database, mesh: Mesh, settings: AgentSettings) -> None:
        self.db = db
        self.mesh = mesh
        self.agents = Agents(db, mesh, max_steps_limit=settings.max_steps_limit)
        self.runs = Runs(
            db,
            lease_seconds=settings.run_lease_seconds,
            max_running_per_org=settings.max_running_runs_per_org,
        )
        self.turns = Turns.over_mesh(self.agents, self.runs, mesh, settings)
        self.batches = Batches(
            db,
            self.runs,
            self.turns,
            mesh,
            concurrency=settings.batch_concurrency,
            max_steps_limit=settings.max_steps_limit,
            collect_window=settings.batch_collect_window,
            poll_interval=settings.batch_poll_interval,
        )
        self.sleeptime = Sleeptime(
            self.turns, self.runs, mesh, default_frequency=settings.sleeptime_frequency
        )
        self.turns.after_turn = self.sleeptime.after_turn
        self.groups = Groups(db, mesh, max_turns_limit=settings.group_max_turns_limit)
        self.group_turns = GroupTurns(
            db,
            self.groups,
            self.turns,
            self.sleeptime,
            lease_seconds=settings.run_lease_seconds,
            single_writer=db.is_sqlite,
        )
        self.files = AgentFiles(self.agents, self.groups, mesh, max_bytes=settings.agent_file_max_bytes)
        self.identities = Identities(db, MeshHoldings(mesh))
        self.audit = AuditLog(db, retention_days=settings.audit_retention_days)
        self.end_users = EndUsers(db, mesh, self.agents)
        self._sweep_seconds = settings.run_sweep_seconds
        self._sweeper: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        agent_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentServicer(self.agents, self.turns, self.files), server
        )
        group_pb2_grpc.add_GroupServiceServicer_to_server(
            GroupServicer(self.groups, self.group_turns, self.files), server
        )
        run_pb2_grpc.add_RunServiceServicer_to_server(RunServicer(self.runs, self.turns), server)
        batch_pb2_grpc.add_BatchServiceServicer_to_server(BatchServicer(self.batches), server)
        identity_pb2_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(self.identities), server)
        end_user_pb2_grpc.add_EndUserServiceServicer_to_server(EndUserServicer(self.end_users), server)
        audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(self.audit), server)
        return [
            audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
            agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
            run_pb2.DESCRIPTOR.services_by_name["RunService"].full_name,
            batch_pb2.DESCRIPTOR.services_by_name["BatchService"].full_name,
            identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name,
            group_pb2.DESCRIPTOR.services_by_name["GroupService"].full_name,
            end_user_pb2.DESCRIPTOR.services_by_name["EndUserService"].full_name,
        ]

    async def recover(self) -> None:
        """Releases the runs a previous process left behind and restarts its background runs.

        Only for SQLite, where one process owns the database; with Postgres, leases do this per run.
        """
        if not self.db.is_sqlite:
            return
        await self.group_turns.recover()
        batches: dict[str, list[Run]] = defaultdict(list)
        for run in await self.runs.interrupted_at_start():
            log.info("restarting background run %s interrupted by the last stop", run.id)
            if run.batch_id:
                batches[run.batch_id].append(run)
            else:
                self.turns.launch(Actor(org_id=run.org_id, user_id="system"), run)
        for batch_id, runs in batches.items():
            await self.batches.resume(Actor(org_id=runs[0].org_id, user_id="system"), batch_id, runs)

    def start_sweeping(self) -> None:
        """With replicas sharing Postgres: start again, every `run_sweep_seconds`, the async runs of a
        replica that died (their lease ran out). SQLite has one process, which `recover` covers."""
        if not self.db.is_sqlite and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_seconds)
            try:
                for run in await self.runs.orphaned_background():
                    log.info("starting run %s again: the replica running it is gone", run.id)
                    self.turns.launch(Actor(org_id=run.org_id, user_id="system"), run)
            except Exception:
                log.exception("looking for runs of replicas that are gone failed; will look again")

    async def audit_sink(self, events: Sequence[AuditEvent]) -> None:
        """Where this service's own audit events go: straight into its log, no hop."""
        await self.audit.record(events)

    async def aclose(self) -> None:
        await self.audit.aclose()
        self.turns.shutting_down()
        await self.group_turns.aclose()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.sleeptime.aclose()
        await self.batches.aclose()
        await self.turns.aclose()
        await self.mesh.aclose()
        await self.db.dispose()


async def build(settings: AgentSettings) -> AgentApp:
    """Opens (and migrates) the database, connects to the peers and builds the app."""
    db = Database(settings.resolved_database_url(), schema="agent", cache_mb=settings.sqlite_cache_mb)
    await prepare_schema(db, MIGRATIONS, migrate=settings.migrate, wait_seconds=settings.schema_wait_seconds)
    app = AgentApp(db, Mesh(settings), settings)
    await app.recover()
    app.start_sweeping()
    app.audit.start_pruning()
    return app
