"""What the tools service asks the agent service about agents: whether a tool is attached to an agent and
whether a run is a current turn of it. The agent service owns both; this is its client."""

from __future__ import annotations

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc, run_pb2, run_pb2_grpc
from mnemo_core.channels import Peers
from mnemo_core.errors import NotFound

# Statuses of a run whose turn may still call tools (a batch run waits in CREATED between its steps).
_CURRENT = (run_pb2.RUN_STATUS_RUNNING, run_pb2.RUN_STATUS_CREATED)


class AgentDirectory:
    """The agent service, as the tools service needs it; calls act for the current actor."""

    def __init__(self, peers: Peers) -> None:
        self._agents = peers.stub("agent", agent_pb2_grpc.AgentServiceStub)
        self._runs = peers.stub("agent", run_pb2_grpc.RunServiceStub)

    async def tool_attached(self, agent_id: str, tool_id: str) -> bool:
        """Whether the agent (of the actor's organization) has the tool."""
        try:
            response = await self._agents.GetAgent(agent_pb2.GetAgentRequest(agent_id=agent_id))
        except NotFound:
            return False
        return tool_id in response.agent.tool_ids

    async def current_turn(self, agent_id: str, run_id: str) -> bool:
        """Whether `run_id` is a run of the agent that is still taking its turn."""
        try:
            response = await self._runs.GetRun(run_pb2.GetRunRequest(run_id=run_id))
        except NotFound:
            return False
        return response.run.agent_id == agent_id and response.run.status in _CURRENT
