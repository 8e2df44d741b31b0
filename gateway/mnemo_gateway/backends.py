"""The gateway's view of the mesh: stubs of the services REST routes call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mnemo.agent.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    audit_pb2_grpc,
    batch_pb2_grpc,
    end_user_pb2_grpc,
    group_pb2_grpc,
    identity_pb2_grpc,
    run_pb2_grpc,
)
from mnemo.llm.v1 import llm_pb2_grpc
from mnemo.memory.v1 import block_pb2_grpc, message_pb2_grpc, passage_pb2_grpc, source_pb2_grpc
from mnemo.tools.v1 import mcp_pb2_grpc, tool_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.api_keys import KeyResolver
from mnemo_core.channels import Peers
from mnemo_core.settings import GRPC_SERVICES, ServiceName
from mnemo_gateway.auth import authenticate
from mnemo_gateway.settings import GatewaySettings


class Backends:
    """Stubs of the agent and memory services, plus health checks of every service."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.peers = Peers(settings)
        self.request_timeout = settings.http_request_timeout
        self.agents = self.peers.stub("agent", agent_pb2_grpc.AgentServiceStub)
        self.runs = self.peers.stub("agent", run_pb2_grpc.RunServiceStub)
        self.batches = self.peers.stub("agent", batch_pb2_grpc.BatchServiceStub)
        self.identity = self.peers.stub("agent", identity_pb2_grpc.IdentityServiceStub)
        self.audit = self.peers.stub("agent", audit_pb2_grpc.AuditServiceStub)
        self.groups = self.peers.stub("agent", group_pb2_grpc.GroupServiceStub)
        self.end_users = self.peers.stub("agent", end_user_pb2_grpc.EndUserServiceStub)
        self.messages = self.peers.stub("memory", message_pb2_grpc.MessageServiceStub)
        self.tools = self.peers.stub("tools", tool_pb2_grpc.ToolServiceStub)
        self.mcp = self.peers.stub("tools", mcp_pb2_grpc.McpServiceStub)
        self.blocks = self.peers.stub("memory", block_pb2_grpc.BlockServiceStub)
        self.passages = self.peers.stub("memory", passage_pb2_grpc.PassageServiceStub)
        self.sources = self.peers.stub("memory", source_pb2_grpc.SourceServiceStub)
        self.llm = self.peers.stub("llm", llm_pb2_grpc.LlmServiceStub)
        self.keys = KeyResolver(
            self.identity, settings.api_key_cache_seconds, failures=settings.failure_throttle()
        )

    async def agent(self, agent_id: str) -> agent_pb2.Agent:
        """The agent, or 404 AGENT_NOT_FOUND when it is not in the caller's organization.

        Routes under /v1/agents/{id} that reach another service ask this first, so an unknown agent reads the
        same everywhere; whether a child resource is the agent's is the owning service's check.
        """
        return (await self.agents.GetAgent(agent_pb2.GetAgentRequest(agent_id=agent_id))).agent

    async def health(self) -> dict[ServiceName, str]:
        """Each service's health status name (UNREACHABLE when it does not answer)."""
        result: dict[ServiceName, str] = {}
        for service in GRPC_SERVICES:
            stub = health_pb2_grpc.HealthStub(self.peers.channel(service))
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
                result[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except Exception:  # noqa: BLE001 - any failure means the service cannot be reached
                result[service] = "UNREACHABLE"
        return result

    async def aclose(self) -> None:
        await self.peers.aclose()


async def backends(request: Request) -> Backends:
    """The app's Backends (a FastAPI dependency; async, so FastAPI does not hop to a thread for it)."""
    found: Backends = request.app.state.backends
    return found


async def acting_actor(
    request: Request,
    actor: Annotated[Actor, Depends(authenticate)],
    mesh: Annotated[Backends, Depends(backends)],
) -> AsyncIterator[Actor]:
    """Authenticates and rate-limits the request and makes its actor (and deadline) travel with every
    mesh call."""
    request.state.actor = actor  # for the audit event of the request
    request.app.state.limits.admit(actor)
    with acting_as(actor, deadline=time.monotonic() + mesh.request_timeout):
        yield actor
