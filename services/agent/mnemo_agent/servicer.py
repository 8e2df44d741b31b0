"""gRPC servicer of the agent service: proto <-> domain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, assert_never

from mnemo.agent.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    batch_pb2,
    batch_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    run_pb2,
    run_pb2_grpc,
)
from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo_agent.agents import AGENT_TYPES, Agents, AgentSpec, AgentView
from mnemo_agent.batches import AUTO, CONCURRENT, PROVIDER, Batches, BatchView
from mnemo_agent.identity import Identities
from mnemo_agent.models import ApiKeyRow, OrganizationRow, RunRow, UserRow
from mnemo_agent.runs import STOP_REASONS, Runs
from mnemo_agent.tool_rules import ToolRules, check_rules
from mnemo_agent.turn import (
    AgentConfig,
    Decision,
    MessagesStored,
    RunStarted,
    TokenDelta,
    TurnEvent,
    TurnRequest,
    TurnResult,
    Turns,
)
from mnemo_core.actor import ADMIN, MEMBER, current_actor
from mnemo_core.proto_enums import EnumNames
from mnemo_core.validation import invalid, masked_changes
from mnemo_core.wire import from_struct, to_struct, to_timestamp

Context = Any

_AGENT_TYPES = EnumNames(agent_pb2.AgentType)
assert set(_AGENT_TYPES.names) == set(AGENT_TYPES)
_RULE_TYPES = EnumNames(agent_pb2.ToolRuleType)
_RUN_STATUSES = EnumNames(run_pb2.RunStatus)
_BATCH_MODES = EnumNames(batch_pb2.BatchMode)
_ROLES = EnumNames(identity_pb2.Role)


def _tool_rules(rules: Any) -> list[dict[str, Any]]:
    return [
        {"tool_name": r.tool_name, "type": _RULE_TYPES.name(r.type), "max_calls": r.max_calls} for r in rules
    ]


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
        tool_rules=[
            agent_pb2.ToolRule(
                tool_name=r["tool_name"],
                type=_RULE_TYPES.value(r["type"]),
                max_calls=int(r.get("max_calls", 0)),
            )
            for r in row.tool_rules or []
        ],
        summarizer_model=row.summarizer_model or "",
        sleeptime=agent_pb2.SleeptimeConfig(
            enabled=bool(sleeptime.get("enabled")),
            frequency=int(sleeptime.get("frequency", 0)),
            model=str(sleeptime.get("model", "")),
        ),
        sleeptime_agent_id=row.sleeptime_agent_id or "",
        primary_agent_id=row.primary_agent_id or "",
    )


def run_to_proto(row: RunRow) -> run_pb2.Run:
    """The wire form of a run."""
    return run_pb2.Run(
        id=row.id,
        agent_id=row.agent_id,
        status=_RUN_STATUSES.value(row.status),
        stop_reason=STOP_REASONS.value(row.stop_reason),
        usage=turn_pb2.Usage(
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            total_tokens=row.total_tokens,
            step_count=row.step_count,
        ),
        idempotency_key=row.idempotency_key or "",
        message_ids=list(row.message_ids or []),
        error=row.error or "",
        create_time=to_timestamp(row.created_at),
        complete_time=to_timestamp(row.completed_at),
        pending_approvals=[message_pb2.ToolCall(**call) for call in row.pending_approvals or []],
        batch_id=row.batch_id or "",
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


class RunServicer(run_pb2_grpc.RunServiceServicer):
    """RunService over Runs and Turns."""

    def __init__(self, runs: Runs, turns: Turns) -> None:
        self._runs = runs
        self._turns = turns

    async def GetRun(self, request: run_pb2.GetRunRequest, context: Context) -> run_pb2.GetRunResponse:
        return run_pb2.GetRunResponse(
            run=run_to_proto(await self._runs.get(current_actor().org_id, request.run_id))
        )

    async def ListRuns(self, request: run_pb2.ListRunsRequest, context: Context) -> run_pb2.ListRunsResponse:
        rows, token = await self._runs.list(
            current_actor().org_id,
            agent_id=request.agent_id,
            status=_RUN_STATUSES.name(request.status),
            size=request.page_size,
            token=request.page_token,
        )
        return run_pb2.ListRunsResponse(runs=[run_to_proto(row) for row in rows], next_page_token=token)

    async def ListRunMessages(
        self, request: run_pb2.ListRunMessagesRequest, context: Context
    ) -> run_pb2.ListRunMessagesResponse:
        messages, token = await self._turns.run_messages(
            current_actor(), request.run_id, size=request.page_size, token=request.page_token
        )
        return run_pb2.ListRunMessagesResponse(messages=messages, next_page_token=token)

    async def CancelRun(
        self, request: run_pb2.CancelRunRequest, context: Context
    ) -> run_pb2.CancelRunResponse:
        return run_pb2.CancelRunResponse(
            run=run_to_proto(await self._turns.cancel(current_actor(), request.run_id))
        )

    async def ApproveRun(
        self, request: run_pb2.ApproveRunRequest, context: Context
    ) -> run_pb2.ApproveRunResponse:
        result = await self._turns.approve(
            current_actor(), request.run_id, Decision(approve=request.approve, reason=request.reason)
        )
        return run_pb2.ApproveRunResponse(
            messages=result.messages, usage=result.usage, stop_reason=result.stop_reason, run_id=result.run_id
        )


def batch_to_proto(view: BatchView) -> batch_pb2.Batch:
    """The wire form of a batch."""
    return batch_pb2.Batch(
        id=view.row.id,
        status=batch_pb2.BATCH_STATUS_COMPLETED if view.completed else batch_pb2.BATCH_STATUS_RUNNING,
        runs=[run_to_proto(run) for run in view.runs],
        create_time=to_timestamp(view.row.created_at),
        mode=_BATCH_MODES.value(view.row.mode),
        chat_batch_ids=[r["chat_batch_id"] for r in view.row.pending_rounds or []],
        provider_round_count=view.row.round_count or 0,
    )


class BatchServicer(batch_pb2_grpc.BatchServiceServicer):
    """BatchService over Batches."""

    def __init__(self, batches: Batches) -> None:
        self._batches = batches

    async def CreateBatch(
        self, request: batch_pb2.CreateBatchRequest, context: Context
    ) -> batch_pb2.CreateBatchResponse:
        mode = AUTO if request.mode == batch_pb2.BATCH_MODE_UNSPECIFIED else _BATCH_MODES.name(request.mode)
        if mode not in (AUTO, CONCURRENT, PROVIDER):
            raise invalid("mode", "must be AUTO, CONCURRENT or PROVIDER")
        view = await self._batches.create(
            current_actor(), [(t.agent_id, list(t.messages), t.max_steps) for t in request.turns], mode=mode
        )
        return batch_pb2.CreateBatchResponse(batch=batch_to_proto(view))

    async def GetBatch(
        self, request: batch_pb2.GetBatchRequest, context: Context
    ) -> batch_pb2.GetBatchResponse:
        return batch_pb2.GetBatchResponse(
            batch=batch_to_proto(await self._batches.get(current_actor().org_id, request.batch_id))
        )


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
            agent_type=_AGENT_TYPES.name(agent.agent_type) or "standard",
            llm_options=_llm_options(agent.llm_options),
            tool_rules=_tool_rules(agent.tool_rules),
            summarizer_model=agent.summarizer_model,
            sleeptime=_sleeptime(agent.sleeptime),
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


def organization_to_proto(row: OrganizationRow) -> identity_pb2.Organization:
    """The wire form of an organization."""
    return identity_pb2.Organization(id=row.id, name=row.name, create_time=to_timestamp(row.created_at))


def user_to_proto(row: UserRow) -> identity_pb2.User:
    """The wire form of a user."""
    return identity_pb2.User(
        id=row.id, org_id=row.org_id, name=row.name, create_time=to_timestamp(row.created_at)
    )


def api_key_to_proto(row: ApiKeyRow) -> identity_pb2.ApiKey:
    """The wire form of an API key: never its secret (which is not stored)."""
    return identity_pb2.ApiKey(
        id=row.id,
        org_id=row.org_id,
        user_id=row.user_id,
        name=row.name,
        role=_ROLES.value(row.role),
        display_prefix=row.display_prefix,
        create_time=to_timestamp(row.created_at),
    )


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    """IdentityService over Identities."""

    def __init__(self, identities: Identities) -> None:
        self._identities = identities

    async def CreateOrganization(
        self, request: identity_pb2.CreateOrganizationRequest, context: Context
    ) -> identity_pb2.CreateOrganizationResponse:
        row = await self._identities.create_organization(current_actor(), request.organization.name)
        return identity_pb2.CreateOrganizationResponse(organization=organization_to_proto(row))

    async def GetOrganization(
        self, request: identity_pb2.GetOrganizationRequest, context: Context
    ) -> identity_pb2.GetOrganizationResponse:
        row = await self._identities.get_organization(current_actor(), request.org_id)
        return identity_pb2.GetOrganizationResponse(organization=organization_to_proto(row))

    async def ListOrganizations(
        self, request: identity_pb2.ListOrganizationsRequest, context: Context
    ) -> identity_pb2.ListOrganizationsResponse:
        rows, token = await self._identities.list_organizations(
            current_actor(), size=request.page_size, token=request.page_token
        )
        return identity_pb2.ListOrganizationsResponse(
            organizations=[organization_to_proto(row) for row in rows], next_page_token=token
        )

    async def DeleteOrganization(
        self, request: identity_pb2.DeleteOrganizationRequest, context: Context
    ) -> identity_pb2.DeleteOrganizationResponse:
        await self._identities.delete_organization(current_actor(), request.org_id)
        return identity_pb2.DeleteOrganizationResponse()

    async def CreateUser(
        self, request: identity_pb2.CreateUserRequest, context: Context
    ) -> identity_pb2.CreateUserResponse:
        row = await self._identities.create_user(current_actor(), request.org_id, request.user.name)
        return identity_pb2.CreateUserResponse(user=user_to_proto(row))

    async def GetUser(
        self, request: identity_pb2.GetUserRequest, context: Context
    ) -> identity_pb2.GetUserResponse:
        row = await self._identities.get_user(current_actor(), request.org_id, request.user_id)
        return identity_pb2.GetUserResponse(user=user_to_proto(row))

    async def ListUsers(
        self, request: identity_pb2.ListUsersRequest, context: Context
    ) -> identity_pb2.ListUsersResponse:
        rows, token = await self._identities.list_users(
            current_actor(), request.org_id, size=request.page_size, token=request.page_token
        )
        return identity_pb2.ListUsersResponse(
            users=[user_to_proto(row) for row in rows], next_page_token=token
        )

    async def DeleteUser(
        self, request: identity_pb2.DeleteUserRequest, context: Context
    ) -> identity_pb2.DeleteUserResponse:
        await self._identities.delete_user(current_actor(), request.org_id, request.user_id)
        return identity_pb2.DeleteUserResponse()

    async def CreateApiKey(
        self, request: identity_pb2.CreateApiKeyRequest, context: Context
    ) -> identity_pb2.CreateApiKeyResponse:
        given = request.api_key.role
        role = MEMBER if given == identity_pb2.ROLE_UNSPECIFIED else _ROLES.name(given)
        if role not in (MEMBER, ADMIN):
            raise invalid("api_key.role", "must be ROLE_MEMBER or ROLE_ADMIN")
        created = await self._identities.create_key(
            current_actor(), request.org_id, request.api_key.user_id, request.api_key.name, role
        )
        return identity_pb2.CreateApiKeyResponse(api_key=api_key_to_proto(created.row), secret=created.secret)

    async def GetApiKey(
        self, request: identity_pb2.GetApiKeyRequest, context: Context
    ) -> identity_pb2.GetApiKeyResponse:
        row = await self._identities.get_key(current_actor(), request.org_id, request.key_id)
        return identity_pb2.GetApiKeyResponse(api_key=api_key_to_proto(row))

    async def ListApiKeys(
        self, request: identity_pb2.ListApiKeysRequest, context: Context
    ) -> identity_pb2.ListApiKeysResponse:
        rows, token = await self._identities.list_keys(
            current_actor(), request.org_id, size=request.page_size, token=request.page_token
        )
        return identity_pb2.ListApiKeysResponse(
            api_keys=[api_key_to_proto(row) for row in rows], next_page_token=token
        )

    async def DeleteApiKey(
        self, request: identity_pb2.DeleteApiKeyRequest, context: Context
    ) -> identity_pb2.DeleteApiKeyResponse:
        await self._identities.revoke_key(current_actor(), request.org_id, request.key_id)
        return identity_pb2.DeleteApiKeyResponse()

    async def AuthenticateApiKey(
        self, request: identity_pb2.AuthenticateApiKeyRequest, context: Context
    ) -> identity_pb2.AuthenticateApiKeyResponse:
        holder = await self._identities.authenticate(request.secret)
        return identity_pb2.AuthenticateApiKeyResponse(
            org_id=holder.org_id, user_id=holder.user_id, key_id=holder.key_id, role=_ROLES.value(holder.role)
        )
