"""IdentityService over real gRPC: organizations, users, API keys, who may manage them, authentication."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mnemo.agent.v1 import identity_pb2, identity_pb2_grpc
from mnemo_agent.app import MIGRATIONS, AgentApp
from mnemo_agent.app import build as build_agent
from mnemo_agent.identity import Identities
from mnemo_agent.settings import AgentSettings
from mnemo_agent.store import Agent, AgentQueries
from mnemo_core.actor import ADMIN, MEMBER, ROOT, Actor, acting_as
from mnemo_core.db import Database
from mnemo_core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from mnemo_core.migrations import upgrade
from mnemo_core.wire import utcnow
from tests.service.conftest import Served, clean_environment, serving
from tests.service.test_runs_lease import postgres_url  # noqa: F401 - the fixture

ROOT_ACTOR = Actor(org_id="org-default", user_id="user-default", role=ROOT)
if TYPE_CHECKING:
    Stub = identity_pb2_grpc.IdentityServiceAsyncStub


@pytest.fixture(scope="module")
async def agent_service(
    tmp_path_factory: pytest.TempPathFactory, memory_service: Served, tools_service: Served
) -> AsyncIterator[Served]:
    """The agent service; deleting an organization asks memory and tools what it still owns there."""
    home = tmp_path_factory.mktemp("identity")
    with clean_environment(home):
        settings = AgentSettings(
            home=home, memory_addr=memory_service.address, tools_addr=tools_service.address
        )
    app = await build_agent(settings)
    async with serving(app) as served:
        yield served


def agent_app(served: Served) -> AgentApp:
    assert isinstance(served.app, AgentApp)
    return served.app


@pytest.fixture
def identity(agent_service: Served) -> Stub:
    return agent_service.stub(identity_pb2_grpc.IdentityServiceStub)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def new_org(identity: Stub) -> str:
    with acting_as(ROOT_ACTOR):
        response = await identity.CreateOrganization(
            identity_pb2.CreateOrganizationRequest(organization=identity_pb2.Organization(name=unique("org")))
        )
    return response.organization.id


async def new_user(identity: Stub, org_id: str) -> str:
    with acting_as(ROOT_ACTOR):
        response = await identity.CreateUser(
            identity_pb2.CreateUserRequest(org_id=org_id, user=identity_pb2.User(name=unique("user")))
        )
    return response.user.id


async def new_key(
    identity: Stub, org_id: str, user_id: str, role: identity_pb2.Role.ValueType
) -> identity_pb2.CreateApiKeyResponse:
    with acting_as(ROOT_ACTOR):
        return await identity.CreateApiKey(
            identity_pb2.CreateApiKeyRequest(
                org_id=org_id, api_key=identity_pb2.ApiKey(user_id=user_id, name=unique("key"), role=role)
            )
        )


async def test_the_default_organization_and_user_exist_from_the_start(identity: Stub) -> None:
    with acting_as(ROOT_ACTOR):
        org = await identity.GetOrganization(identity_pb2.GetOrganizationRequest(org_id="org-default"))
        user = await identity.GetUser(identity_pb2.GetUserRequest(user_id="user-default"))
        with pytest.raises(FailedPrecondition) as default_org:
            await identity.DeleteOrganization(identity_pb2.DeleteOrganizationRequest(org_id="org-default"))
        with pytest.raises(FailedPrecondition) as default_user:
            await identity.DeleteUser(identity_pb2.DeleteUserRequest(user_id="user-default"))
    assert org.organization.name == "default"
    assert user.user.org_id == "org-default"
    assert default_org.value.reason == "DEFAULT_ORGANIZATION"
    assert default_user.value.reason == "DEFAULT_USER"


async def test_a_created_key_authenticates_as_its_org_user_and_role_and_its_secret_is_stored_hashed(
    identity: Stub, agent_service: Served
) -> None:
    org_id = await new_org(identity)
    user_id = await new_user(identity, org_id)
    created = await new_key(identity, org_id, user_id, identity_pb2.ROLE_ADMIN)

    with acting_as(Actor(org_id="org-default", user_id="gateway")):
        holder = await identity.AuthenticateApiKey(
            identity_pb2.AuthenticateApiKeyRequest(secret=created.secret)
        )
    assert (holder.org_id, holder.user_id, holder.key_id) == (org_id, user_id, created.api_key.id)
    assert holder.role == identity_pb2.ROLE_ADMIN
    assert created.secret.startswith(created.api_key.display_prefix)
    assert len(created.api_key.display_prefix) < 16 < len(created.secret)

    database = agent_app(agent_service).db.url.split("///", 1)[1]
    with sqlite3.connect(database) as connection:
        stored = connection.execute(
            "SELECT secret_sha256 FROM api_keys WHERE id = ?", (created.api_key.id,)
        ).fetchone()[0]
        dump = "\n".join(connection.iterdump())
    assert stored == hashlib.sha256(created.secret.encode()).hexdigest()
    assert created.secret not in dump


async def test_a_revoked_or_unknown_key_does_not_authenticate(identity: Stub) -> None:
    org_id = await new_org(identity)
    created = await new_key(identity, org_id, await new_user(identity, org_id), identity_pb2.ROLE_MEMBER)
    with acting_as(ROOT_ACTOR):
        await identity.DeleteApiKey(
            identity_pb2.DeleteApiKeyRequest(org_id=org_id, key_id=created.api_key.id)
        )
        with pytest.raises(NotFound):
            await identity.GetApiKey(identity_pb2.GetApiKeyRequest(org_id=org_id, key_id=created.api_key.id))
        listed = await identity.ListApiKeys(identity_pb2.ListApiKeysRequest(org_id=org_id))
        for secret in (created.secret, "mnemo-unknown", "not-a-key"):
            with pytest.raises(Unauthenticated) as refused:
                await identity.AuthenticateApiKey(identity_pb2.AuthenticateApiKeyRequest(secret=secret))
            assert refused.value.reason == "API_KEY_INVALID"
    assert listed.api_keys == []


async def test_admins_manage_their_own_organization_only_and_members_manage_nothing(identity: Stub) -> None:
    org_id, other_org = await new_org(identity), await new_org(identity)
    admin = Actor(org_id=org_id, user_id=await new_user(identity, org_id), role=ADMIN)
    member = Actor(org_id=org_id, user_id=await new_user(identity, org_id), role=MEMBER)
    other_user = await new_user(identity, other_org)

    with acting_as(admin):
        key = await identity.CreateApiKey(
            identity_pb2.CreateApiKeyRequest(api_key=identity_pb2.ApiKey(name="for-me"))
        )
        users = await identity.ListUsers(identity_pb2.ListUsersRequest())
        with pytest.raises(NotFound) as foreign_org:
            await identity.ListUsers(identity_pb2.ListUsersRequest(org_id=other_org))
        with pytest.raises(NotFound) as foreign_user:
            await identity.GetUser(identity_pb2.GetUserRequest(user_id=other_user))
        with pytest.raises(PermissionDenied) as orgs:
            await identity.ListOrganizations(identity_pb2.ListOrganizationsRequest())
    with acting_as(member):
        with pytest.raises(PermissionDenied) as member_create:
            await identity.CreateApiKey(
                identity_pb2.CreateApiKeyRequest(api_key=identity_pb2.ApiKey(name="x"))
            )
        with pytest.raises(PermissionDenied):
            await identity.ListApiKeys(identity_pb2.ListApiKeysRequest())
        with pytest.raises(PermissionDenied):
            await identity.DeleteApiKey(identity_pb2.DeleteApiKeyRequest(key_id=key.api_key.id))

    assert key.api_key.user_id == admin.user_id
    assert key.api_key.org_id == org_id
    assert {u.id for u in users.users} == {admin.user_id, member.user_id}
    assert foreign_org.value.reason == "ORGANIZATION_NOT_FOUND"
    assert foreign_user.value.reason == "USER_NOT_FOUND"
    assert orgs.value.reason == "ROOT_ROLE_REQUIRED"
    assert member_create.value.reason == "ADMIN_ROLE_REQUIRED"


async def test_duplicate_names_bad_input_and_unknown_ids_are_refused(identity: Stub) -> None:
    org_id = await new_org(identity)
    user_id = await new_user(identity, org_id)
    with acting_as(ROOT_ACTOR):
        org = await identity.GetOrganization(identity_pb2.GetOrganizationRequest(org_id=org_id))
        with pytest.raises(AlreadyExists):
            await identity.CreateOrganization(
                identity_pb2.CreateOrganizationRequest(
                    organization=identity_pb2.Organization(name=org.organization.name)
                )
            )
        await identity.CreateApiKey(
            identity_pb2.CreateApiKeyRequest(
                org_id=org_id, api_key=identity_pb2.ApiKey(user_id=user_id, name="ci")
            )
        )
        with pytest.raises(AlreadyExists) as duplicate_key:
            await identity.CreateApiKey(
                identity_pb2.CreateApiKeyRequest(
                    org_id=org_id, api_key=identity_pb2.ApiKey(user_id=user_id, name="ci")
                )
            )
        with pytest.raises(InvalidArgument) as empty_name:
            await identity.CreateUser(
                identity_pb2.CreateUserRequest(org_id=org_id, user=identity_pb2.User(name="  "))
            )
        with pytest.raises(InvalidArgument) as no_user:
            await identity.CreateApiKey(
                identity_pb2.CreateApiKeyRequest(org_id=org_id, api_key=identity_pb2.ApiKey(name="x"))
            )
        with pytest.raises(InvalidArgument) as root_role:
            await identity.CreateApiKey(
                identity_pb2.CreateApiKeyRequest(
                    org_id=org_id,
                    api_key=identity_pb2.ApiKey(user_id=user_id, name="r", role=identity_pb2.ROLE_ROOT),
                )
            )
        with pytest.raises(NotFound) as unknown_org:
            await identity.GetOrganization(identity_pb2.GetOrganizationRequest(org_id="org-unknown"))
        with pytest.raises(NotFound) as unknown_user:
            await identity.CreateApiKey(
                identity_pb2.CreateApiKeyRequest(
                    org_id=org_id, api_key=identity_pb2.ApiKey(user_id="user-unknown", name="y")
                )
            )
    assert duplicate_key.value.reason == "NAME_TAKEN"
    assert [v.field for v in empty_name.value.violations] == ["user.name"]
    assert [v.field for v in no_user.value.violations] == ["api_key.user_id"]
    assert [v.field for v in root_role.value.violations] == ["api_key.role"]
    assert unknown_org.value.reason == "ORGANIZATION_NOT_FOUND"
    assert unknown_user.value.reason == "USER_NOT_FOUND"


async def test_listings_page_oldest_first(identity: Stub) -> None:
    org_id = await new_org(identity)
    made = [await new_user(identity, org_id) for _ in range(3)]
    seen: list[str] = []
    token = ""
    with acting_as(ROOT_ACTOR):
        while True:
            page = await identity.ListUsers(
                identity_pb2.ListUsersRequest(org_id=org_id, page_size=2, page_token=token)
            )
            seen += [u.id for u in page.users]
            token = page.next_page_token
            if not token:
                break
        with pytest.raises(InvalidArgument):
            await identity.ListApiKeys(identity_pb2.ListApiKeysRequest(org_id=org_id, page_token="garbage"))
    assert seen == made


async def test_an_organization_with_agents_cannot_be_deleted_and_deleting_one_removes_its_keys(
    identity: Stub, agent_service: Served
) -> None:
    org_id = await new_org(identity)
    created = await new_key(identity, org_id, await new_user(identity, org_id), identity_pb2.ROLE_ADMIN)
    db = agent_app(agent_service).db
    now = utcnow()
    agent = Agent(
        id=f"agent-{uuid.uuid4()}",
        org_id=org_id,
        created_by="u",
        name="a",
        model="openai/x",
        created_at=now,
        updated_at=now,
    )
    await db.write(AgentQueries.insert, [agent])
    with acting_as(ROOT_ACTOR), pytest.raises(FailedPrecondition) as busy:
        await identity.DeleteOrganization(identity_pb2.DeleteOrganizationRequest(org_id=org_id))
    await db.write(AgentQueries.delete, org_id, agent.id)
    with acting_as(ROOT_ACTOR):
        await identity.DeleteOrganization(identity_pb2.DeleteOrganizationRequest(org_id=org_id))
        with pytest.raises(Unauthenticated):
            await identity.AuthenticateApiKey(identity_pb2.AuthenticateApiKeyRequest(secret=created.secret))
        with pytest.raises(NotFound):
            await identity.GetOrganization(identity_pb2.GetOrganizationRequest(org_id=org_id))
    assert busy.value.reason == "ORGANIZATION_HAS_AGENTS"
    assert busy.value.metadata == {"agents": "1"}


@pytest.fixture(params=["sqlite", "postgres"])
async def identities(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Identities]:
    """The domain on a freshly migrated database of each backend."""
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}", schema="agent")
    else:
        url = request.getfixturevalue("postgres_url")
        database = Database(url, schema=f"agent_{uuid.uuid4().hex[:12]}")
    await upgrade(database, MIGRATIONS)
    try:
        yield Identities(database)
    finally:
        await database.dispose()


async def test_on_every_backend_defaults_exist_and_a_revoked_keys_name_is_free_again(
    identities: Identities,
) -> None:
    org = await identities.get_organization(ROOT_ACTOR, "org-default")
    first = await identities.create_key(ROOT_ACTOR, "", "", "ci", MEMBER)
    with pytest.raises(AlreadyExists):
        await identities.create_key(ROOT_ACTOR, "", "", "ci", ADMIN)
    await identities.revoke_key(ROOT_ACTOR, "", first.row.id)
    second = await identities.create_key(ROOT_ACTOR, "", "", "ci", ADMIN)
    holder = await identities.authenticate(second.secret)
    with pytest.raises(Unauthenticated):
        await identities.authenticate(first.secret)
    assert org.name == "default"
    assert (holder.org_id, holder.user_id, holder.role) == ("org-default", "user-default", ADMIN)
