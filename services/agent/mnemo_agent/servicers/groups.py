"""GroupService: proto <-> groups, group runs and group agent files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, assert_never

from mnemo.agent.v1 import agent_pb2, group_pb2, group_pb2_grpc, run_pb2
from mnemo.common.v1 import turn_pb2
from mnemo_agent.agent_files import AgentFiles
from mnemo_agent.group_managers import MANAGER_TYPES
from mnemo_agent.group_store import Group, GroupRun
from mnemo_agent.group_turns import (
    GroupEvent,
    GroupRequest,
    GroupResult,
    GroupRunStarted,
    GroupTurns,
    MemberTurnStarted,
)
from mnemo_agent.groups import Groups, GroupSpec
from mnemo_agent.runs import STOP_REASONS
from mnemo_agent.servicers.agents import agent_to_proto
from mnemo_agent.turn import MessagesStored, TokenDelta
from mnemo_core.actor import current_actor
from mnemo_core.proto_enums import EnumNames
from mnemo_core.wire import from_struct, to_struct, to_timestamp

Context = Any

_MANAGER_TYPES = EnumNames(group_pb2.ManagerType)
_RUN_STATUSES = EnumNames(run_pb2.RunStatus)

assert set(_MANAGER_TYPES.names) == set(MANAGER_TYPES)


def group_to_proto(group: Group) -> group_pb2.Group:
    """The wire form of a group."""
    return group_pb2.Group(
        id=group.id,
        name=group.name,
        description=group.description,
        agent_ids=list(group.agent_ids),
        manager=group_pb2.GroupManager(
            type=_MANAGER_TYPES.value(group.manager_type),
            manager_agent_id=group.manager_agent_id or "",
            max_turns=group.max_turns,
            termination_token=group.termination_token,
            sleeptime_frequency=group.sleeptime_frequency,
        ),
        shared_block_ids=list(group.shared_block_ids),
        metadata=to_struct(group.metadata_json),
        create_time=to_timestamp(group.created_at),
    )


def group_run_to_proto(run: GroupRun) -> group_pb2.GroupRun:
    """The wire form of a group run."""
    return group_pb2.GroupRun(
        id=run.id,
        group_id=run.group_id,
        status=_RUN_STATUSES.value(run.status),
        stop_reason=STOP_REASONS.value(run.stop_reason),
        usage=turn_pb2.Usage(
            prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens,
            total_tokens=run.total_tokens,
            step_count=run.step_count,
        ),
        idempotency_key=run.idempotency_key or "",
        run_ids=list(run.run_ids or []),
        error=run.error or "",
        create_time=to_timestamp(run.created_at),
        complete_time=to_timestamp(run.completed_at),
    )


def spec_of(group: group_pb2.Group) -> GroupSpec:
    """A group to create, from its wire form."""
    manager = group.manager
    return GroupSpec(
        name=group.name,
        description=group.description,
        manager_type=_MANAGER_TYPES.name(manager.type) or "round_robin",
        agent_ids=list(group.agent_ids),
        manager_agent_id=manager.manager_agent_id,
        max_turns=manager.max_turns,
        termination_token=manager.termination_token,
        sleeptime_frequency=manager.sleeptime_frequency,
        shared_block_ids=list(group.shared_block_ids),
        metadata=from_struct(group.metadata),
    )


def _stream_responses(event: GroupEvent) -> list[group_pb2.StreamGroupMessageResponse]:
    """The StreamGroupMessage responses of one group event."""
    match event:
        case GroupRunStarted(group_run_id=run_id):
            return [group_pb2.StreamGroupMessageResponse(group_run_id=run_id)]
        case MemberTurnStarted(agent_id=agent_id, run_id=run_id, turn=turn):
            member = group_pb2.GroupMemberTurn(agent_id=agent_id, run_id=run_id, turn=turn)
            return [group_pb2.StreamGroupMessageResponse(member_turn=member)]
        case MessagesStored(messages=messages):
            return [group_pb2.StreamGroupMessageResponse(message=message) for message in messages]
        case TokenDelta(run_id=run_id, step=step, reasoning=reasoning, text=text):
            kind = agent_pb2.DELTA_KIND_REASONING if reasoning else agent_pb2.DELTA_KIND_CONTENT
            delta = agent_pb2.TokenDelta(run_id=run_id, step=step, kind=kind, text=text)
            return [group_pb2.StreamGroupMessageResponse(delta=delta)]
        case GroupResult(group_run_id=run_id, usage=usage, stop_reason=stop_reason, run_ids=run_ids):
            outcome = group_pb2.GroupRunOutcome(
                group_run_id=run_id, usage=usage, stop_reason=stop_reason, run_ids=run_ids
            )
            return [group_pb2.StreamGroupMessageResponse(outcome=outcome)]
        case _:
            assert_never(event)


class GroupServicer(group_pb2_grpc.GroupServiceServicer):
    """GroupService over Groups, GroupTurns and AgentFiles."""

    def __init__(self, groups: Groups, group_turns: GroupTurns, files: AgentFiles) -> None:
        self._groups = groups
        self._turns = group_turns
        self._files = files

    async def CreateGroup(
        self, request: group_pb2.CreateGroupRequest, context: Context
    ) -> group_pb2.CreateGroupResponse:
        group = await self._groups.create(
            current_actor(), spec_of(request.group), list(request.shared_blocks)
        )
        return group_pb2.CreateGroupResponse(group=group_to_proto(group))

    async def GetGroup(
        self, request: group_pb2.GetGroupRequest, context: Context
    ) -> group_pb2.GetGroupResponse:
        group = await self._groups.get(current_actor().org_id, request.group_id)
        return group_pb2.GetGroupResponse(group=group_to_proto(group))

    async def ListGroups(
        self, request: group_pb2.ListGroupsRequest, context: Context
    ) -> group_pb2.ListGroupsResponse:
        groups, token = await self._groups.list(
            current_actor().org_id, size=request.page_size, token=request.page_token
        )
        return group_pb2.ListGroupsResponse(groups=[group_to_proto(g) for g in groups], next_page_token=token)

    async def DeleteGroup(
        self, request: group_pb2.DeleteGroupRequest, context: Context
    ) -> group_pb2.DeleteGroupResponse:
        await self._groups.delete(current_actor().org_id, request.group_id)
        return group_pb2.DeleteGroupResponse()

    async def SendGroupMessage(
        self, request: group_pb2.SendGroupMessageRequest, context: Context
    ) -> group_pb2.SendGroupMessageResponse:
        result = await self._turns.send(
            current_actor(),
            GroupRequest(
                request.group_id,
                list(request.messages),
                max_turns=request.max_turns,
                idempotency_key=request.idempotency_key,
            ),
        )
        return group_pb2.SendGroupMessageResponse(
            messages=result.messages,
            usage=result.usage,
            stop_reason=result.stop_reason,
            group_run_id=result.group_run_id,
            run_ids=result.run_ids,
        )

    async def StreamGroupMessage(
        self, request: group_pb2.StreamGroupMessageRequest, context: Context
    ) -> AsyncIterator[group_pb2.StreamGroupMessageResponse]:
        group_request = GroupRequest(
            request.group_id,
            list(request.messages),
            max_turns=request.max_turns,
            idempotency_key=request.idempotency_key,
            stream_tokens=request.stream_tokens,
        )
        async with self._turns.stream(current_actor(), group_request) as events:
            async for event in events:
                for response in _stream_responses(event):
                    yield response

    async def GetGroupRun(
        self, request: group_pb2.GetGroupRunRequest, context: Context
    ) -> group_pb2.GetGroupRunResponse:
        run = await self._turns.get_run(current_actor().org_id, request.group_run_id, request.group_id)
        return group_pb2.GetGroupRunResponse(run=group_run_to_proto(run))

    async def ListGroupRuns(
        self, request: group_pb2.ListGroupRunsRequest, context: Context
    ) -> group_pb2.ListGroupRunsResponse:
        runs, token = await self._turns.list_runs(
            current_actor().org_id, request.group_id, size=request.page_size, token=request.page_token
        )
        return group_pb2.ListGroupRunsResponse(
            runs=[group_run_to_proto(r) for r in runs], next_page_token=token
        )

    async def CancelGroupRun(
        self, request: group_pb2.CancelGroupRunRequest, context: Context
    ) -> group_pb2.CancelGroupRunResponse:
        run = await self._turns.cancel(current_actor(), request.group_run_id, request.group_id)
        return group_pb2.CancelGroupRunResponse(run=group_run_to_proto(run))

    async def ExportGroup(
        self, request: group_pb2.ExportGroupRequest, context: Context
    ) -> group_pb2.ExportGroupResponse:
        document = await self._files.export_group(
            current_actor(), request.group_id, include_passages=request.include_passages
        )
        return group_pb2.ExportGroupResponse(agent_file=document)

    async def ImportGroup(
        self, request: group_pb2.ImportGroupRequest, context: Context
    ) -> group_pb2.ImportGroupResponse:
        group, views = await self._files.import_group(current_actor(), request.agent_file)
        return group_pb2.ImportGroupResponse(
            group=group_to_proto(group), agents=[agent_to_proto(view) for view in views]
        )
