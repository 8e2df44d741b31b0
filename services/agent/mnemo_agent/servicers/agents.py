"""AgentService: proto <-> agents and turns (send, stream, ephemeral, summarize)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any, assert_never

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc
from mnemo_agent.agent_files import AgentFiles
from mnemo_agent.agents import AGENT_TYPES, MEMORY_TOOL_SETS, Agents, AgentSpec, AgentView
from mnemo_agent.memory_tools import CLASSIC
from mnemo_agent.servicers.runs import run_to_proto
from mnemo_agent.tool_rules import ToolRules, check_rules
from mnemo_agent.turn import (
    AgentConfig,
    MessagesStored,
    RunStarted,
    TokenDelta,
    TurnEvent,
    TurnRequest,
    TurnResult,
    Turns,
)
from mnemo_core.actor import current_actor
from mnemo_core.proto_enums import EnumNames
from mnemo_core.validation import invalid, masked_changes
from mnemo_core.wire import from_struct, to_struct, to_timestamp

Context = Any

_AGENT_TYPES = EnumNames(agent_pb2.AgentType)

assert set(_AGENT_TYPES.names) == set(AGENT_TYPES)

_RULE_TYPES = EnumNames(agent_pb2.ToolRuleType)
_MEMORY_TOOL_SETS = EnumNames(agent_pb2.MemoryToolSet)

assert set(_MEMORY_TOOL_SETS.names) == set(MEMORY_TOOL_SETS)


def _branch(branch: agent_pb2.ToolOutputBranch) -> dict[str, str]:
    match = branch.WhichOneof("match")
    return {"next_tool": branch.next_tool} | ({match: getattr(branch, match)} if match else {})


def _tool_rules(rules: Any) -> list[dict[str, Any]]:
    """Wire rules as tool_rules.check_rules takes them."""
    return [
        {
            "tool_name": r.tool_name,
            "type": _RULE_TYPES.name(r.type),
            "max_calls": r.max_calls,
            "children": list(r.children),
            "branches": [_branch(b) for b in r.branches],
            "default_next_tool": r.default_next_tool,
        }
        for r in rules
    ]


def _tool_rule_to_proto(rule: dict[str, Any]) -> agent_pb2.ToolRule:
    return agent_pb2.ToolRule(
        tool_name=rule["tool_name"],
        type=_RULE_TYPES.value(rule["type"]),
        max_calls=int(rule.get("max_calls", 0)),
        children=rule.get("children", []),
        branches=[agent_pb2.ToolOutputBranch(**branch) for branch in rule.get("branches", [])],
        default_next_tool=rule.get("default_next_tool", ""),
    )


def _memory_tool_set(value: agent_pb2.MemoryToolSet.ValueType) -> str:
    return _MEMORY_TOOL_SETS.name(value) or CLASSIC


def _sleeptime(config: agent_pb2.SleeptimeConfig) -> dict[str, Any]:
    if not config.enabled:
        return {}
    return {"enabled": True, "frequency": config.frequency, "model": config.model}


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
    sleeptime = row.sleeptime or {}
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
        agent_type=_AGENT_TYPES.value(row.agent_type) or agent_pb2.AGENT_TYPE_STANDARD,
        llm_options=llm_options,
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
        tool_rules=[_tool_rule_to_proto(rule) for rule in row.tool_rules or []],
        summarizer_model=row.summarizer_model or "",
        sleeptime=agent_pb2.SleeptimeConfig(
            enabled=bool(sleeptime.get("enabled")),
            frequency=int(sleeptime.get("frequency", 0)),
            model=str(sleeptime.get("model", "")),
        ),
        sleeptime_agent_id=row.sleeptime_agent_id or "",
        primary_agent_id=row.primary_agent_id or "",
        memory_tool_set=_MEMORY_TOOL_SETS.value(row.memory_tool_set),
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
    "tool_rules": lambda a: _tool_rules(a.tool_rules),
    "summarizer_model": lambda a: a.summarizer_model,
    "memory_tool_set": lambda a: _memory_tool_set(a.memory_tool_set),
}


def _stream_responses(event: TurnEvent) -> list[agent_pb2.StreamMessageResponse]:
    """The StreamMessage responses of one turn event."""
    match event:
        case RunStarted(run_id=run_id):
            return [agent_pb2.StreamMessageResponse(run_id=run_id)]
        case MessagesStored(messages=messages):
            return [agent_pb2.StreamMessageResponse(message=message) for message in messages]
        case TokenDelta(run_id=run_id, step=step, reasoning=reasoning, text=text):
            kind = agent_pb2.DELTA_KIND_REASONING if reasoning else agent_pb2.DELTA_KIND_CONTENT
            return [
                agent_pb2.StreamMessageResponse(
                    delta=agent_pb2.TokenDelta(run_id=run_id, step=step, kind=kind, text=text)
                )
            ]
        case TurnResult(run_id=run_id, usage=usage, stop_reason=stop_reason):
            return [
                agent_pb2.StreamMessageResponse(
                    outcome=agent_pb2.TurnOutcome(run_id=run_id, usage=usage, stop_reason=stop_reason)
                )
            ]
        case _:
            assert_never(event)


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """AgentService over Agents and Turns."""

    def __init__(self, agents: Agents, turns: Turns, files: AgentFiles) -> None:
        self._agents = agents
        self._turns = turns
        self._files = files

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
            agent_type=_AGENT_TYPES.name(agent.agent_type) or "standard",
            llm_options=_llm_options(agent.llm_options),
            tool_rules=_tool_rules(agent.tool_rules),
            summarizer_model=agent.summarizer_model,
            sleeptime=_sleeptime(agent.sleeptime),
            memory_tool_set=_memory_tool_set(agent.memory_tool_set),
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
            end_user_id=request.end_user_id,
            size=request.page_size,
            token=request.page_token,
        )
        return agent_pb2.ListAgentsResponse(agents=[agent_to_proto(v) for v in views], next_page_token=token)

    async def UpdateAgent(
        self, request: agent_pb2.UpdateAgentRequest, context: Context
    ) -> agent_pb2.UpdateAgentResponse:
        changes = masked_changes(request.update_mask.paths, request.agent, _MASK_FIELDS)
        view = await self._agents.update(current_actor().org_id, request.agent.id, changes)
        return agent_pb2.UpdateAgentResponse(agent=agent_to_proto(view))

    async def DeleteAgent(
        self, request: agent_pb2.DeleteAgentRequest, context: Context
    ) -> agent_pb2.DeleteAgentResponse:
        await self._agents.delete(current_actor().org_id, request.agent_id)
        return agent_pb2.DeleteAgentResponse()

    async def StreamMessage(
        self, request: agent_pb2.StreamMessageRequest, context: Context
    ) -> AsyncIterator[agent_pb2.StreamMessageResponse]:
        turn = TurnRequest(
            request.agent_id,
            list(request.messages),
            max_steps=request.max_steps,
            idempotency_key=request.idempotency_key,
            stream_tokens=request.stream_tokens,
        )
        async with self._turns.stream(current_actor(), turn) as events:
            async for event in events:
                for response in _stream_responses(event):
                    yield response

    async def SendMessageAsync(
        self, request: agent_pb2.SendMessageAsyncRequest, context: Context
    ) -> agent_pb2.SendMessageAsyncResponse:
        run = await self._turns.send_async(
            current_actor(),
            TurnRequest(
                request.agent_id,
                list(request.messages),
                max_steps=request.max_steps,
                idempotency_key=request.idempotency_key,
            ),
        )
        return agent_pb2.SendMessageAsyncResponse(run=run_to_proto(run))

    async def SendEphemeralMessage(
        self, request: agent_pb2.SendEphemeralMessageRequest, context: Context
    ) -> agent_pb2.SendEphemeralMessageResponse:
        agent = request.agent
        if not agent.model:
            raise invalid("agent.model", "is required")
        rules = check_rules(_tool_rules(agent.tool_rules))
        config = AgentConfig(
            id="",
            model=agent.model,
            system=agent.system,
            agent_type="standard",
            context_window=max(0, agent.context_window),
            summarizer_model=agent.summarizer_model,
            llm_options=_llm_options(agent.llm_options),
            rules=ToolRules.of(rules),
            memory_tool_set=_memory_tool_set(agent.memory_tool_set),
        )
        result = await self._turns.ephemeral(
            current_actor(),
            config,
            list(request.memory_blocks),
            list(agent.tool_ids),
            list(request.context),
            list(request.messages),
            request.max_steps or agent.max_steps,
        )
        return agent_pb2.SendEphemeralMessageResponse(
            messages=result.messages, usage=result.usage, stop_reason=result.stop_reason
        )

    async def SummarizeAgent(
        self, request: agent_pb2.SummarizeAgentRequest, context: Context
    ) -> agent_pb2.SummarizeAgentResponse:
        evicted, summary = await self._turns.summarize(current_actor(), request.agent_id)
        return agent_pb2.SummarizeAgentResponse(evicted_count=evicted, summary=summary)

    async def RecompileAgent(
        self, request: agent_pb2.RecompileAgentRequest, context: Context
    ) -> agent_pb2.RecompileAgentResponse:
        prompt = await self._turns.recompile(current_actor(), request.agent_id)
        return agent_pb2.RecompileAgentResponse(system_prompt=prompt)

    async def GetAgentContext(
        self, request: agent_pb2.GetAgentContextRequest, context: Context
    ) -> agent_pb2.GetAgentContextResponse:
        found = await self._turns.context(current_actor(), request.agent_id)
        return agent_pb2.GetAgentContextResponse(
            context=agent_pb2.ContextBreakdown(**dataclasses.asdict(found), total_tokens=found.total_tokens)
        )

    async def SendMessage(
        self, request: agent_pb2.SendMessageRequest, context: Context
    ) -> agent_pb2.SendMessageResponse:
        result = await self._turns.send(
            current_actor(),
            TurnRequest(
                request.agent_id,
                list(request.messages),
                max_steps=request.max_steps,
                idempotency_key=request.idempotency_key,
            ),
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

    async def ExportAgent(
        self, request: agent_pb2.ExportAgentRequest, context: Context
    ) -> agent_pb2.ExportAgentResponse:
        document = await self._files.export_agent(
            current_actor(), request.agent_id, include_passages=request.include_passages
        )
        return agent_pb2.ExportAgentResponse(agent_file=document)

    async def ImportAgent(
        self, request: agent_pb2.ImportAgentRequest, context: Context
    ) -> agent_pb2.ImportAgentResponse:
        views = await self._files.import_agents(current_actor(), request.agent_file)
        agents = [agent_to_proto(view) for view in views]
        return agent_pb2.ImportAgentResponse(agent=agents[0], agents=agents)
