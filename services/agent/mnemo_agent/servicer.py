"""gRPC servicer of the agent service: proto <-> domain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc
from mnemo_agent.agents import AGENT_TYPES, Agents, AgentSpec, AgentView
from mnemo_agent.turns import Turns
from mnemo_core.actor import current_actor
from mnemo_core.validation import invalid
from mnemo_core.wire import from_struct, to_struct, to_timestamp

Context = Any

_AGENT_TYPES = {
    agent_pb2.AGENT_TYPE_UNSPECIFIED: "standard",
    agent_pb2.AGENT_TYPE_STANDARD: "standard",
    agent_pb2.AGENT_TYPE_VOICE: "voice",
    agent_pb2.AGENT_TYPE_SLEEPTIME: "sleeptime",
}
_AGENT_TYPE_VALUES = {name: value for value, name in _AGENT_TYPES.items() if value}
assert set(_AGENT_TYPE_VALUES) == set(AGENT_TYPES)


def _llm_options(options: agent_pb2.LlmOptions) -> dict[str, Any]:
    values: dict[str, Any] = {
        "max_tokens": options.max_tokens,
        "parallel_tool_calls": options.parallel_tool_calls,
    }
    if options.HasField("temperature"):
        values["temperature"] = options.temperature
    return values


def agent_to_proto(view: AgentView) -> agent_pb2.Agent:
    """The wire form of an agent."""
    row = view.row
    options = row.llm_options or {}
    llm_options = agent_pb2.LlmOptions(
        max_tokens=int(options.get("max_tokens", 0)),
        parallel_tool_calls=bool(options.get("parallel_tool_calls", False)),
    )
    if options.get("temperature") is not None:
        llm_options.temperature = float(options["temperature"])
    return agent_pb2.Agent(
        id=row.id,
        name=row.name,
        description=row.description,
        system=row.system,
        model=row.model,
        embedding_model=row.embedding_model,
        context_window=row.context_window,
        max_steps=row.max_steps,
        tool_ids=list(row.tool_ids or []),
        blocks=view.blocks,
        tags=list(row.tags or []),
        metadata=to_struct(row.metadata_json),
        agent_type=_AGENT_TYPE_VALUES.get(row.agent_type, agent_pb2.AGENT_TYPE_STANDARD),
        llm_options=llm_options,
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
    )


_MASK_FIELDS: dict[str, Callable[[agent_pb2.Agent], Any]] = {
    "name": lambda a: a.name,
    "description": lambda a: a.description,
    "system": lambda a: a.system,
    "model": lambda a: a.model,
    "embedding_model": lambda a: a.embedding_model,
    "context_window": lambda a: a.context_window,
    "max_steps": lambda a: a.max_steps,
    "tool_ids": lambda a: list(a.tool_ids),
    "tags": lambda a: list(a.tags),
    "metadata": lambda a: from_struct(a.metadata),
    "llm_options": lambda a: _llm_options(a.llm_options),
}


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """AgentService over Agents and Turns."""

    def __init__(self, agents: Agents, turns: Turns) -> None:
        self._agents = agents
        self._turns = turns

    async def CreateAgent(
        self, request: agent_pb2.CreateAgentRequest, context: Context
    ) -> agent_pb2.CreateAgentResponse:
        agent = request.agent
        spec = AgentSpec(
            name=agent.name,
            model=agent.model,
            description=agent.description,
            system=agent.system,
            embedding_model=agent.embedding_model,
            context_window=agent.context_window,
            max_steps=agent.max_steps,
            tool_ids=list(agent.tool_ids),
            tags=list(agent.tags),
            metadata=from_struct(agent.metadata),
            agent_type=_AGENT_TYPES.get(agent.agent_type, "standard"),
            llm_options=_llm_options(agent.llm_options),
        )
        include = request.include_base_tools if request.HasField("include_base_tools") else True
        view = await self._agents.create(
            current_actor(),
            spec,
            list(request.memory_blocks),
            include_base_tools=include,
            block_ids=list(request.block_ids),
        )
        return agent_pb2.CreateAgentResponse(agent=agent_to_proto(view))

    async def GetAgent(
        self, request: agent_pb2.GetAgentRequest, context: Context
    ) -> agent_pb2.GetAgentResponse:
        view = await self._agents.get(current_actor().org_id, request.agent_id)
        return agent_pb2.GetAgentResponse(agent=agent_to_proto(view))

    async def ListAgents(
        self, request: agent_pb2.ListAgentsRequest, context: Context
    ) -> agent_pb2.ListAgentsResponse:
        views, token = await self._agents.list(
            current_actor().org_id,
            name=request.name,
            tags=list(request.tags),
            size=request.page_size,
            token=request.page_token,
        )
        return agent_pb2.ListAgentsResponse(agents=[agent_to_proto(v) for v in views], next_page_token=token)

    async def UpdateAgent(
        self, request: agent_pb2.UpdateAgentRequest, context: Context
    ) -> agent_pb2.UpdateAgentResponse:
        paths = list(request.update_mask.paths)
        if not paths:
            raise invalid("update_mask", "name at least one field to update")
        unknown = [p for p in paths if p not in _MASK_FIELDS]
        if unknown:
            raise invalid("update_mask", f"cannot update {', '.join(unknown)}")
        changes = {path: _MASK_FIELDS[path](request.agent) for path in paths}
        view = await self._agents.update(current_actor().org_id, request.agent.id, changes)
        return agent_pb2.UpdateAgentResponse(agent=agent_to_proto(view))

    async def DeleteAgent(
        self, request: agent_pb2.DeleteAgentRequest, context: Context
    ) -> agent_pb2.DeleteAgentResponse:
        await self._agents.delete(current_actor().org_id, request.agent_id)
        return agent_pb2.DeleteAgentResponse()

    async def SendMessage(
        self, request: agent_pb2.SendMessageRequest, context: Context
    ) -> agent_pb2.SendMessageResponse:
        result = await self._turns.send(
            current_actor(),
            request.agent_id,
            list(request.messages),
            max_steps=request.max_steps,
            idempotency_key=request.idempotency_key,
        )
        return agent_pb2.SendMessageResponse(
            messages=result.messages, usage=result.usage, stop_reason=result.stop_reason, run_id=result.run_id
        )

    async def AttachTool(
        self, request: agent_pb2.AttachToolRequest, context: Context
    ) -> agent_pb2.AttachToolResponse:
        view = await self._agents.attach_tool(current_actor().org_id, request.agent_id, request.tool_id)
        return agent_pb2.AttachToolResponse(agent=agent_to_proto(view))

    async def DetachTool(
        self, request: agent_pb2.DetachToolRequest, context: Context
    ) -> agent_pb2.DetachToolResponse:
        view = await self._agents.detach_tool(current_actor().org_id, request.agent_id, request.tool_id)
        return agent_pb2.DetachToolResponse(agent=agent_to_proto(view))
