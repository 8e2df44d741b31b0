"""IdentityService: proto <-> organizations, users and API keys."""

from __future__ import annotations

from typing import Any

from mnemo.agent.v1 import identity_pb2, identity_pb2_grpc
from mnemo_agent.identity import Identities
from mnemo_agent.identity_store import ApiKey, Organization, User
from mnemo_core.actor import ADMIN, MEMBER, current_actor
from mnemo_core.proto_enums import EnumNames
from mnemo_core.validation import invalid
from mnemo_core.wire import to_timestamp

Context = Any

_ROLES = EnumNames(identity_pb2.Role)


def organization_to_proto(row: Organization) -> identity_pb2.Organization:
    """The wire form of an organization."""
    return identity_pb2.Organization(id=row.id, name=row.name, create_time=to_timestamp(row.created_at))


def user_to_proto(row: User) -> identity_pb2.User:
    """The wire form of a user."""
    return identity_pb2.User(
        id=row.id, org_id=row.org_id, name=row.name, create_time=to_timestamp(row.created_at)
    )


def api_key_to_proto(row: ApiKey) -> identity_pb2.ApiKey:
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
