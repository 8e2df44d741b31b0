"""/v1/identities: end users of an application, their agents, and the blocks shared across those agents."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from mnemo.agent.v1 import agent_pb2, end_user_pb2
from mnemo.rest.agents import Agent
from mnemo.rest.identities import Identity, IdentityCreate, IdentityType, IdentityUpdate
from mnemo_core.proto_enums import EnumNames
from mnemo_core.wire import field_time, from_struct, to_struct
from mnemo_gateway import convert
from mnemo_gateway.backends import Backends, acting_actor, backends

router = APIRouter(prefix="/v1/identities", tags=["identities"], dependencies=[Depends(acting_actor)])
Mesh = Annotated[Backends, Depends(backends)]
Limit = Annotated[int, Query(ge=1, le=1000)]
TYPES = EnumNames(end_user_pb2.EndUserType)


def identity_out(end_user: end_user_pb2.EndUser) -> Identity:
    """The REST form of an end user."""
    return Identity.model_validate(
        {
            "id": end_user.id,
            "identifier_key": end_user.identifier_key,
            "name": end_user.name,
            "identity_type": TYPES.name(end_user.type) or "user",
            "properties": from_struct(end_user.properties),
            "agent_ids": list(end_user.agent_ids),
            "block_ids": list(end_user.block_ids),
            "created_at": field_time(end_user, "create_time"),
            "updated_at": field_time(end_user, "update_time"),
        }
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Identity)
async def create_identity(body: IdentityCreate, mesh: Mesh) -> Identity:
    """Creates an end user (409 IDENTITY_KEY_TAKEN when its identifier_key is), with its agents and blocks."""
    response = await mesh.end_users.CreateEndUser(
        end_user_pb2.CreateEndUserRequest(
            end_user=end_user_pb2.EndUser(
                identifier_key=body.identifier_key,
                name=body.name,
                type=TYPES.value(body.identity_type),
                properties=to_struct(body.properties),
            ),
            agent_ids=body.agent_ids,
            block_ids=body.block_ids,
        )
    )
    return identity_out(response.end_user)


@router.get("", response_model=list[Identity])
async def list_identities(
    mesh: Mesh,
    response: Response,
    identifier_key: str = "",
    identity_type: IdentityType | None = None,
    agent_id: str = "",
    limit: Limit = 50,
    page_token: str = "",
) -> list[Identity]:
    """Lists end users, newest first, by identifier_key, type or agent; `X-Next-Page-Token` continues."""
    page = await mesh.end_users.ListEndUsers(
        end_user_pb2.ListEndUsersRequest(
            identifier_key=identifier_key,
            type=TYPES.value(identity_type or ""),
            agent_id=agent_id,
            page_size=limit,
            page_token=page_token,
        )
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [identity_out(end_user) for end_user in page.end_users]


@router.get("/{identity_id}", response_model=Identity)
async def get_identity(identity_id: str, mesh: Mesh) -> Identity:
    """Returns one end user."""
    response = await mesh.end_users.GetEndUser(end_user_pb2.GetEndUserRequest(end_user_id=identity_id))
    return identity_out(response.end_user)


@router.patch("/{identity_id}", response_model=Identity)
async def update_identity(identity_id: str, body: IdentityUpdate, mesh: Mesh) -> Identity:
    """Changes the fields given."""
    changed = {name for name in body.model_fields_set if getattr(body, name) is not None}
    end_user = end_user_pb2.EndUser(
        id=identity_id,
        identifier_key=body.identifier_key or "",
        name=body.name or "",
        type=TYPES.value(body.identity_type or ""),
        properties=to_struct(body.properties or {}),
    )
    paths = sorted("type" if name == "identity_type" else name for name in changed)
    request = end_user_pb2.UpdateEndUserRequest(end_user=end_user)
    request.update_mask.paths.extend(paths)
    response = await mesh.end_users.UpdateEndUser(request)
    return identity_out(response.end_user)


@router.delete("/{identity_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_identity(identity_id: str, mesh: Mesh) -> Response:
    """Deletes an end user; its blocks leave its agents (the blocks and the agents stay)."""
    await mesh.end_users.DeleteEndUser(end_user_pb2.DeleteEndUserRequest(end_user_id=identity_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{identity_id}/agents", response_model=list[Agent])
async def list_identity_agents(
    identity_id: str, mesh: Mesh, response: Response, limit: Limit = 50, page_token: str = ""
) -> list[Agent]:
    """The end user's agents, newest first; `X-Next-Page-Token` continues."""
    await mesh.end_users.GetEndUser(end_user_pb2.GetEndUserRequest(end_user_id=identity_id))
    page = await mesh.agents.ListAgents(
        agent_pb2.ListAgentsRequest(end_user_id=identity_id, page_size=limit, page_token=page_token)
    )
    if page.next_page_token:
        response.headers["X-Next-Page-Token"] = page.next_page_token
    return [convert.agent_out(agent) for agent in page.agents]


@router.patch("/{identity_id}/agents/attach/{agent_id}", response_model=Identity)
async def attach_identity_agent(identity_id: str, agent_id: str, mesh: Mesh) -> Identity:
    """Gives the end user an agent, which gets the end user's blocks (409 when a label is taken there)."""
    response = await mesh.end_users.AttachEndUserAgent(
        end_user_pb2.AttachEndUserAgentRequest(end_user_id=identity_id, agent_id=agent_id)
    )
    return identity_out(response.end_user)


@router.patch("/{identity_id}/agents/detach/{agent_id}", response_model=Identity)
async def detach_identity_agent(identity_id: str, agent_id: str, mesh: Mesh) -> Identity:
    """Takes an agent from the end user; the end user's blocks leave it."""
    response = await mesh.end_users.DetachEndUserAgent(
        end_user_pb2.DetachEndUserAgentRequest(end_user_id=identity_id, agent_id=agent_id)
    )
    return identity_out(response.end_user)


@router.patch("/{identity_id}/blocks/attach/{block_id}", response_model=Identity)
async def attach_identity_block(identity_id: str, block_id: str, mesh: Mesh) -> Identity:
    """Gives the end user a block, attached to every one of its agents."""
    response = await mesh.end_users.AttachEndUserBlock(
        end_user_pb2.AttachEndUserBlockRequest(end_user_id=identity_id, block_id=block_id)
    )
    return identity_out(response.end_user)


@router.patch("/{identity_id}/blocks/detach/{block_id}", response_model=Identity)
async def detach_identity_block(identity_id: str, block_id: str, mesh: Mesh) -> Identity:
    """Takes a block from the end user; it leaves the end user's agents (the block stays)."""
    response = await mesh.end_users.DetachEndUserBlock(
        end_user_pb2.DetachEndUserBlockRequest(end_user_id=identity_id, block_id=block_id)
    )
    return identity_out(response.end_user)
