"""EndUserService: proto <-> end users of an application (REST: identities)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mnemo.agent.v1 import end_user_pb2, end_user_pb2_grpc
from mnemo_agent.end_user_store import EndUser
from mnemo_agent.end_users import END_USER_TYPES, EndUsers, EndUserSpec
from mnemo_core.actor import current_actor
from mnemo_core.proto_enums import EnumNames
from mnemo_core.validation import masked_changes
from mnemo_core.wire import from_struct, to_struct, to_timestamp

Context = Any
_TYPES = EnumNames(end_user_pb2.EndUserType)

assert set(_TYPES.names) == set(END_USER_TYPES)


def end_user_to_proto(end_user: EndUser) -> end_user_pb2.EndUser:
    """The wire form of an end user."""
    return end_user_pb2.EndUser(
        id=end_user.id,
        identifier_key=end_user.identifier_key,
        name=end_user.name,
        type=_TYPES.value(end_user.type),
        properties=to_struct(end_user.properties),
        agent_ids=end_user.agent_ids,
        block_ids=end_user.block_ids,
        create_time=to_timestamp(end_user.created_at),
        update_time=to_timestamp(end_user.updated_at),
    )


def _type(value: end_user_pb2.EndUserType.ValueType) -> str:
    return _TYPES.name(value) or "user"


_MASK_FIELDS: dict[str, Callable[[end_user_pb2.EndUser], Any]] = {
    "identifier_key": lambda e: e.identifier_key,
    "name": lambda e: e.name,
    "type": lambda e: _type(e.type),
    "properties": lambda e: from_struct(e.properties),
}


class EndUserServicer(end_user_pb2_grpc.EndUserServiceServicer):
    """EndUserService over EndUsers."""

    def __init__(self, end_users: EndUsers) -> None:
        self._end_users = end_users

    async def CreateEndUser(
        self, request: end_user_pb2.CreateEndUserRequest, context: Context
    ) -> end_user_pb2.CreateEndUserResponse:
        given = request.end_user
        end_user = await self._end_users.create(
            current_actor().org_id,
            EndUserSpec(
                identifier_key=given.identifier_key,
                name=given.name,
                type=_type(given.type),
                properties=from_struct(given.properties),
            ),
            agent_ids=list(request.agent_ids),
            block_ids=list(request.block_ids),
        )
        return end_user_pb2.CreateEndUserResponse(end_user=end_user_to_proto(end_user))

    async def GetEndUser(
        self, request: end_user_pb2.GetEndUserRequest, context: Context
    ) -> end_user_pb2.GetEndUserResponse:
        end_user = await self._end_users.get(current_actor().org_id, request.end_user_id)
        return end_user_pb2.GetEndUserResponse(end_user=end_user_to_proto(end_user))

    async def ListEndUsers(
        self, request: end_user_pb2.ListEndUsersRequest, context: Context
    ) -> end_user_pb2.ListEndUsersResponse:
        found, token = await self._end_users.list(
            current_actor().org_id,
            identifier_key=request.identifier_key,
            type=_TYPES.name(request.type),
            agent_id=request.agent_id,
            size=request.page_size,
            token=request.page_token,
        )
        return end_user_pb2.ListEndUsersResponse(
            end_users=[end_user_to_proto(e) for e in found], next_page_token=token
        )

    async def UpdateEndUser(
        self, request: end_user_pb2.UpdateEndUserRequest, context: Context
    ) -> end_user_pb2.UpdateEndUserResponse:
        changes = masked_changes(request.update_mask.paths, request.end_user, _MASK_FIELDS)
        end_user = await self._end_users.update(current_actor().org_id, request.end_user.id, changes)
        return end_user_pb2.UpdateEndUserResponse(end_user=end_user_to_proto(end_user))

    async def DeleteEndUser(
        self, request: end_user_pb2.DeleteEndUserRequest, context: Context
    ) -> end_user_pb2.DeleteEndUserResponse:
        await self._end_users.delete(current_actor().org_id, request.end_user_id)
        return end_user_pb2.DeleteEndUserResponse()

    async def AttachEndUserAgent(
        self, request: end_user_pb2.AttachEndUserAgentRequest, context: Context
    ) -> end_user_pb2.AttachEndUserAgentResponse:
        end_user = await self._end_users.attach_agent(
            current_actor().org_id, request.end_user_id, request.agent_id
        )
        return end_user_pb2.AttachEndUserAgentResponse(end_user=end_user_to_proto(end_user))

    async def DetachEndUserAgent(
        self, request: end_user_pb2.DetachEndUserAgentRequest, context: Context
    ) -> end_user_pb2.DetachEndUserAgentResponse:
        end_user = await self._end_users.detach_agent(
            current_actor().org_id, request.end_user_id, request.agent_id
        )
        return end_user_pb2.DetachEndUserAgentResponse(end_user=end_user_to_proto(end_user))

    async def AttachEndUserBlock(
        self, request: end_user_pb2.AttachEndUserBlockRequest, context: Context
    ) -> end_user_pb2.AttachEndUserBlockResponse:
        end_user = await self._end_users.attach_block(
            current_actor().org_id, request.end_user_id, request.block_id
        )
        return end_user_pb2.AttachEndUserBlockResponse(end_user=end_user_to_proto(end_user))

    async def DetachEndUserBlock(
        self, request: end_user_pb2.DetachEndUserBlockRequest, context: Context
    ) -> end_user_pb2.DetachEndUserBlockResponse:
        end_user = await self._end_users.detach_block(
            current_actor().org_id, request.end_user_id, request.block_id
        )
        return end_user_pb2.DetachEndUserBlockResponse(end_user=end_user_to_proto(end_user))
