"""The gateway's view of the mesh: stubs of the services REST routes call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mnemo.agent.v1 import agent_pb2_grpc
from mnemo.llm.v1 import llm_pb2_grpc
from mnemo.memory.v1 import message_pb2_grpc
from mnemo_core.actor import Actor, acting_as
from mnemo_core.channels import Peers
from mnemo_core.settings import GRPC_SERVICES, ServiceName
from mnemo_gateway.auth import authenticate
from mnemo_gateway.settings import GatewaySettings


class Backends:
    """Stubs of the agent and memory services, plus health checks of every service."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._peers = Peers(settings)
        self.request_timeout = settings.http_request_timeout
        self.agents = agent_pb2_grpc.AgentServiceStub(self._peers.channel("agent"))
        self.messages = message_pb2_grpc.MessageServiceStub(self._peers.channel("memory"))
        self.llm = llm_pb2_grpc.LlmServiceStub(self._peers.channel("llm"))

    async def health(self) -> dict[ServiceName, str]:
        """Each service's health status name (UNREACHABLE when it does not answer)."""
        result: dict[ServiceName, str] = {}
        for service in GRPC_SERVICES:
            stub = health_pb2_grpc.HealthStub(self._peers.channel(service))
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
                result[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except Exception:  # noqa: BLE001 - any failure means the service cannot be reached
                result[service] = "UNREACHABLE"
        return result

    async def aclose(self) -> None:
        await self._peers.aclose()


def backends(request: Request) -> Backends:
    """The app's Backends (a FastAPI dependency)."""
    found: Backends = request.app.state.backends
    return found


async def acting_actor(
    actor: Annotated[Actor, Depends(authenticate)], mesh: Annotated[Backends, Depends(backends)]
) -> AsyncIterator[Actor]:
    """Authenticates the request and makes its actor (and deadline) travel with every mesh call."""
    with acting_as(actor, deadline=time.monotonic() + mesh.request_timeout):
        yield actor
