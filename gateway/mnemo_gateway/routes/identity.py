"""/v1/organizations (root key only), /v1/users and /v1/api-keys (admin keys, in their organization)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from mnemo.agent.v1 import identity_pb2
from mnemo.rest.common import ErrorBody
from mnemo.rest.identity import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    Organization,
    OrganizationCreate,
    User,
    UserCreate,
)
from mnemo_core.proto_enums import EnumNames
from mnemo_core.wire import field_time
from mnemo_gateway.backends import Backends, acting_actor, backends

router = APIRouter(
    tags=["identity"],
    dependencies=[Depends(acting_actor)],
    responses={403: {"model": ErrorBody, "description": "The key may not manage this."}},
)
Mesh = Annotated[Backends, Depends(backends)]
Limit = Annotated[int, Query(ge=1, le=1000)]
OrgQuery = Annotated[
    str, Query(max_length=200, description="Organization; empty means the caller's (another one needs root).")
]
_ROLES = EnumNames(identity_pb2.Role)


def _organization(org: identity_pb2.Organization) -> Organization:
    return Organization(id=org.id, name=org.name, created_at=field_time(org, "create_time"))


def _user(user: identity_pb2.User) -> User:
    return User(
        id=user.id,
        org_id=user.org_id,
        name=user.name,
        created_at=field_time(user, "create_time"),
    )


def _key(key: identity_pb2.ApiKey) -> ApiKey:
    return ApiKey(
        id=key.id,
        org_id=key.org_id,
        user_id=key.user_id,
        name=key.name,
        role="admin" if key.role == identity_pb2.ROLE_ADMIN else "member",
        display_prefix=key.display_prefix,
        created_at=field_time(key, "create_time"),
    )


def _next_page(response: Response, token: str) -> None:
    if token:
        response.headers["X-Next-Page-Token"] = token


@router.post("/v1/organizations", status_code=status.HTTP_201_CREATED, response_model=Organization)
async def create_organization(body: OrganizationCreate, mesh: Mesh) -> Organization:
    """Creates an organization (root key only); give it users and keys with /v1/users and /v1/api-keys."""
    response = await mesh.identity.CreateOrganization(
        identity_pb2.CreateOrganizationRequest(organization=identity_pb2.Organization(name=body.name))
    )
    return _organization(response.organization)


@router.get("/v1/organizations", response_model=list[Organization])
async def list_organizations(
    mesh: Mesh, response: Response, limit: Limit = 50, page_token: str = ""
) -> list[Organization]:
    """Lists organizations, oldest first (root key only); `X-Next-Page-Token` continues the listing."""
    page = await mesh.identity.ListOrganizations(
        identity_pb2.ListOrganizationsRequest(page_size=limit, page_token=page_token)
    )
    _next_page(response, page.next_page_token)
    return [_organization(org) for org in page.organizations]


@router.get("/v1/organizations/{org_id}", response_model=Organization)
async def get_organization(org_id: str, mesh: Mesh) -> Organization:
    """Returns an organization (root key only)."""
    response = await mesh.identity.GetOrganization(identity_pb2.GetOrganizationRequest(org_id=org_id))
    return _organization(response.organization)


@router.delete(
    "/v1/organizations/{org_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={400: {"model": ErrorBody, "description": "It still has agents, or is the default one."}},
)
async def delete_organization(org_id: str, mesh: Mesh) -> Response:
    """Deletes an organization with its users and API keys (root key only); refused while it has agents."""
    await mesh.identity.DeleteOrganization(identity_pb2.DeleteOrganizationRequest(org_id=org_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/v1/users", status_code=status.HTTP_201_CREATED, response_model=User)
async def create_user(body: UserCreate, mesh: Mesh) -> User:
    """Creates a user in the caller's organization (admin keys; root may name `org_id`)."""
    response = await mesh.identity.CreateUser(
        identity_pb2.CreateUserRequest(org_id=body.org_id, user=identity_pb2.User(name=body.name))
    )
    return _user(response.user)


@router.get("/v1/users", response_model=list[User])
async def list_users(
    mesh: Mesh, response: Response, org_id: OrgQuery = "", limit: Limit = 50, page_token: str = ""
) -> list[User]:
    """Lists the organization's users, oldest first; `X-Next-Page-Token` continues the listing."""
    page = await mesh.identity.ListUsers(
        identity_pb2.ListUsersRequest(org_id=org_id, page_size=limit, page_token=page_token)
    )
    _next_page(response, page.next_page_token)
    return [_user(user) for user in page.users]


@router.get("/v1/users/{user_id}", response_model=User)
async def get_user(user_id: str, mesh: Mesh, org_id: OrgQuery = "") -> User:
    """Returns a user of the organization."""
    response = await mesh.identity.GetUser(identity_pb2.GetUserRequest(org_id=org_id, user_id=user_id))
    return _user(response.user)


@router.delete(
    "/v1/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={400: {"model": ErrorBody, "description": "The default user cannot be deleted."}},
)
async def delete_user(user_id: str, mesh: Mesh, org_id: OrgQuery = "") -> Response:
    """Deletes a user and its API keys."""
    await mesh.identity.DeleteUser(identity_pb2.DeleteUserRequest(org_id=org_id, user_id=user_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/v1/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
async def create_api_key(body: ApiKeyCreate, mesh: Mesh) -> ApiKeyCreated:
    """Creates an API key; the response carries its secret, which is never shown again."""
    response = await mesh.identity.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(
            org_id=body.org_id,
            api_key=identity_pb2.ApiKey(user_id=body.user_id, name=body.name, role=_ROLES.value(body.role)),
        )
    )
    return ApiKeyCreated(**_key(response.api_key).model_dump(), secret=response.secret)


@router.get("/v1/api-keys", response_model=list[ApiKey])
async def list_api_keys(
    mesh: Mesh, response: Response, org_id: OrgQuery = "", limit: Limit = 50, page_token: str = ""
) -> list[ApiKey]:
    """Lists the organization's active API keys (without secrets), oldest first."""
    page = await mesh.identity.ListApiKeys(
        identity_pb2.ListApiKeysRequest(org_id=org_id, page_size=limit, page_token=page_token)
    )
    _next_page(response, page.next_page_token)
    return [_key(key) for key in page.api_keys]


@router.get("/v1/api-keys/{key_id}", response_model=ApiKey)
async def get_api_key(key_id: str, mesh: Mesh, org_id: OrgQuery = "") -> ApiKey:
    """Returns an active API key (without its secret)."""
    response = await mesh.identity.GetApiKey(identity_pb2.GetApiKeyRequest(org_id=org_id, key_id=key_id))
    return _key(response.api_key)


@router.delete("/v1/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(key_id: str, mesh: Mesh, org_id: OrgQuery = "") -> Response:
    """Revokes an API key: it stops authenticating within the gateway's key cache time (a few seconds)."""
    await mesh.identity.DeleteApiKey(identity_pb2.DeleteApiKeyRequest(org_id=org_id, key_id=key_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
