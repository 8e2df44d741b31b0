"""gRPC clients authenticate with API keys like REST clients; actor metadata from outside the mesh is refused."""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc, identity_pb2, identity_pb2_grpc
from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo.memory.v1 import block_pb2, block_pb2_grpc
from mnemo.tools.v1 import mcp_pb2, mcp_pb2_grpc, tool_pb2, tool_pb2_grpc
from mnemo_core import mesh_credential
from mnemo_core.actor import ORG_KEY, ROLE_KEY, USER_KEY
from mnemo_core.settings import GRPC_SERVICES
from tests.harness import RunningMesh

API_KEY_CACHE_SECONDS = 5.0


@pytest.fixture(scope="module")
def root(mesh: RunningMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.http_url, headers=mesh.auth, timeout=30) as api:
        yield api


@pytest.fixture(scope="module")
def tenant(root: httpx.Client) -> dict[str, Any]:
    """An organization with an admin key and a member key, and one agent of its own."""
    org = root.post("/v1/organizations", json={"name": f"grpc-tenant-{time.time_ns()}"})
    assert org.status_code == 201, org.text
    org_id = org.json()["id"]
    user = root.post("/v1/users", json={"name": "grace", "org_id": org_id})
    assert user.status_code == 201, user.text
    keys = {}
    for role in ("admin", "member"):
        key = root.post(
            "/v1/api-keys", json={"name": role, "role": role, "user_id": user.json()["id"], "org_id": org_id}
        )
        assert key.status_code == 201, key.text
        keys[role] = key.json()["secret"]
    agent = httpx.post(
        f"{root.base_url}/v1/agents",
        json={"name": "grpc-agent", "model": "openai/gpt-4o-mini"},
        headers={"Authorization": f"Bearer {keys['member']}"},
        timeout=30,
    )
    assert agent.status_code == 201, agent.text
    return {"org_id": org_id, "user_id": user.json()["id"], "keys": keys, "agent_id": agent.json()["id"]}


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


# One plain call per service, each needing an actor.
CALLS: dict[str, tuple[Any, str, Any]] = {
    "agent": (agent_pb2_grpc.AgentServiceStub, "ListAgents", agent_pb2.ListAgentsRequest()),
    "memory": (block_pb2_grpc.BlockServiceStub, "ListBlocks", block_pb2.ListBlocksRequest()),
    "tools": (tool_pb2_grpc.ToolServiceStub, "ListTools", tool_pb2.ListToolsRequest()),
    "llm": (llm_pb2_grpc.LlmServiceStub, "ListModels", llm_pb2.ListModelsRequest()),
}


async def call(mesh: RunningMesh, service: str, metadata: Any) -> Any:
    stub_cls, method, request = CALLS[service]
    async with grpc.aio.insecure_channel(mesh.address(service)) as channel:
        return await getattr(stub_cls(channel), method)(request, metadata=metadata, timeout=30)


async def test_a_grpc_client_with_an_api_key_acts_for_its_own_organization_on_every_service(
    mesh: RunningMesh, tenant: dict[str, Any]
) -> None:
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=30) as api:
        default_agent = await api.post(
            "/v1/agents", json={"name": "default-org", "model": "openai/gpt-4o-mini"}
        )
    assert default_agent.status_code == 201
    for service in GRPC_SERVICES:
        await call(mesh, service, bearer(tenant["keys"]["member"]))

    listed = await call(mesh, "agent", bearer(tenant["keys"]["member"]))

    assert [agent.id for agent in listed.agents] == [tenant["agent_id"]]


async def test_forged_actor_metadata_is_unauthenticated_on_every_service(
    mesh: RunningMesh, tenant: dict[str, Any]
) -> None:
    forgeries = [
        ((ORG_KEY, tenant["org_id"]), (USER_KEY, "anything")),
        ((ORG_KEY, tenant["org_id"]), (USER_KEY, "anything"), (ROLE_KEY, "root")),
        ((ORG_KEY, tenant["org_id"]), (USER_KEY, "anything"), (mesh_credential.SIGNATURE_KEY, "v1.1.00")),
    ]
    codes = []
    for service in GRPC_SERVICES:
        for metadata in forgeries:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(mesh, service, metadata)
            codes.append(refused.value.code())
        with pytest.raises(grpc.aio.AioRpcError) as wrong_key:
            await call(mesh, service, bearer("mnemo-not-a-key-of-this-install"))
        codes.append(wrong_key.value.code())

    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * (len(GRPC_SERVICES) * (len(forgeries) + 1))


async def test_an_admin_key_cannot_mint_keys_by_claiming_a_role_and_is_never_root(
    mesh: RunningMesh, tenant: dict[str, Any]
) -> None:
    async with grpc.aio.insecure_channel(mesh.address("agent")) as channel:
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as forged:
            await identity.CreateApiKey(
                identity_pb2.CreateApiKeyRequest(
                    api_key=identity_pb2.ApiKey(
                        name="forged", role=identity_pb2.ROLE_ADMIN, user_id=tenant["user_id"]
                    )
                ),
                metadata=((ORG_KEY, tenant["org_id"]), (USER_KEY, tenant["user_id"]), (ROLE_KEY, "admin")),
            )
        with pytest.raises(grpc.aio.AioRpcError) as not_root:
            await identity.CreateOrganization(
                identity_pb2.CreateOrganizationRequest(
                    organization=identity_pb2.Organization(name="by-an-admin")
                ),
                metadata=(*bearer(tenant["keys"]["admin"]), (ROLE_KEY, "root")),
            )
        minted = await identity.CreateApiKey(
            identity_pb2.CreateApiKeyRequest(
                api_key=identity_pb2.ApiKey(
                    name="minted", role=identity_pb2.ROLE_MEMBER, user_id=tenant["user_id"]
                )
            ),
            metadata=bearer(tenant["keys"]["admin"]),
        )

    assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not_root.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert minted.secret.startswith("mnemo-")


async def test_a_revoked_key_stops_working_on_grpc_within_the_cache_time(
    mesh: RunningMesh, tenant: dict[str, Any]
) -> None:
    api = httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=30)
    created = await api.post(
        "/v1/api-keys",
        json={
            "name": f"short-{time.time_ns()}",
            "role": "member",
            "user_id": tenant["user_id"],
            "org_id": tenant["org_id"],
        },
    )
    assert created.status_code == 201, created.text
    key = created.json()
    await call(mesh, "memory", bearer(key["secret"]))
    revoked = await api.delete(f"/v1/api-keys/{key['id']}", params={"org_id": tenant["org_id"]})
    await api.aclose()
    assert revoked.status_code in (200, 204), revoked.text
    revoked_at = time.monotonic()

    code = grpc.StatusCode.OK
    while code == grpc.StatusCode.OK and time.monotonic() - revoked_at < API_KEY_CACHE_SECONDS + 2:
        await asyncio.sleep(0.2)
        try:
            await call(mesh, "memory", bearer(key["secret"]))
        except grpc.aio.AioRpcError as exc:
            code = exc.code()

    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_health_and_reflection_answer_without_credentials(mesh: RunningMesh) -> None:
    for service in GRPC_SERVICES:
        async with grpc.aio.insecure_channel(mesh.address(service)) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            answers = [
                answer
                async for answer in reflection.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
                )
            ]
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert answers[0].list_services_response.service


def test_the_internal_credential_is_kept_private_under_the_data_directory(mesh: RunningMesh) -> None:
    path = mesh_credential.key_file(mesh.home)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == mesh.credential


def _admin_only(tenant: dict[str, Any]) -> list[tuple[str, Any, str, Any]]:
    """Operations for admins only, each as (service, stub, method, request)."""
    unreachable = mcp_pb2.McpServer(
        name="admins-only", streamable_http=mcp_pb2.StreamableHttpTransport(url="http://127.0.0.1:9/mcp")
    )
    return [
        ("agent", identity_pb2_grpc.IdentityServiceStub, "ListUsers", identity_pb2.ListUsersRequest()),
        ("agent", identity_pb2_grpc.IdentityServiceStub, "ListApiKeys", identity_pb2.ListApiKeysRequest()),
        (
            "agent",
            identity_pb2_grpc.IdentityServiceStub,
            "CreateUser",
            identity_pb2.CreateUserRequest(user=identity_pb2.User(name=f"u-{time.time_ns()}")),
        ),
        (
            "tools",
            mcp_pb2_grpc.McpServiceStub,
            "CreateMcpServer",
            mcp_pb2.CreateMcpServerRequest(server=unreachable),
        ),
        (
            "tools",
            mcp_pb2_grpc.McpServiceStub,
            "DeleteMcpServer",
            mcp_pb2.DeleteMcpServerRequest(mcp_server_id="mcp-x"),
        ),
        (
            "tools",
            mcp_pb2_grpc.McpServiceStub,
            "RefreshMcpServer",
            mcp_pb2.RefreshMcpServerRequest(mcp_server_id="mcp-x"),
        ),
        (
            "tools",
            tool_pb2_grpc.ToolServiceStub,
            "UpdateToolEnvironment",
            tool_pb2.UpdateToolEnvironmentRequest(agent_id=tenant["agent_id"], set={"REGION": "eu"}),
        ),
    ]


def _for_members(tenant: dict[str, Any]) -> list[tuple[str, Any, str, Any]]:
    """Operations a member may do (a sample of each service's)."""
    return [
        (
            "agent",
            agent_pb2_grpc.AgentServiceStub,
            "GetAgent",
            agent_pb2.GetAgentRequest(agent_id=tenant["agent_id"]),
        ),
        (
            "memory",
            block_pb2_grpc.BlockServiceStub,
            "CreateBlock",
            block_pb2.CreateBlockRequest(block=block_pb2.Block(label="human")),
        ),
        ("tools", mcp_pb2_grpc.McpServiceStub, "ListMcpServers", mcp_pb2.ListMcpServersRequest()),
        (
            "tools",
            tool_pb2_grpc.ToolServiceStub,
            "GetToolEnvironment",
            tool_pb2.GetToolEnvironmentRequest(agent_id=tenant["agent_id"]),
        ),
        (
            "tools",
            tool_pb2_grpc.ToolServiceStub,
            "UpdateToolEnvironment",
            tool_pb2.UpdateToolEnvironmentRequest(agent_id=tenant["agent_id"], unset=["NONE"]),
        ),
        ("llm", llm_pb2_grpc.LlmServiceStub, "ListModels", llm_pb2.ListModelsRequest()),
    ]


async def _code_of(
    mesh: RunningMesh, key: str, service: str, stub_cls: Any, method: str, request: Any
) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(mesh.address(service)) as channel:
        try:
            await getattr(stub_cls(channel), method)(request, metadata=bearer(key), timeout=30)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_admin_operations_are_refused_to_members_and_done_for_admins_over_grpc(
    mesh: RunningMesh, tenant: dict[str, Any]
) -> None:
    member = {
        m: await _code_of(mesh, tenant["keys"]["member"], s, c, m, r) for s, c, m, r in _admin_only(tenant)
    }
    admin = {
        m: await _code_of(mesh, tenant["keys"]["admin"], s, c, m, r) for s, c, m, r in _admin_only(tenant)
    }

    assert member == {m: grpc.StatusCode.PERMISSION_DENIED for m in member}
    # Past the role check: done, or refused for what the request names (no such server, unreachable URL).
    assert grpc.StatusCode.PERMISSION_DENIED not in admin.values()
    assert admin["ListUsers"] == admin["CreateUser"] == admin["UpdateToolEnvironment"] == grpc.StatusCode.OK
    assert admin["DeleteMcpServer"] == admin["RefreshMcpServer"] == grpc.StatusCode.NOT_FOUND


async def test_members_use_agents_memory_tools_and_models_over_grpc(
    mesh: RunningMesh, tenant: dict[str, Any]
) -> None:
    codes = {
        m: await _code_of(mesh, tenant["keys"]["member"], s, c, m, r) for s, c, m, r in _for_members(tenant)
    }

    assert codes == {m: grpc.StatusCode.OK for m in codes}
