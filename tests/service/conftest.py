"""Each service started in-process on a free loopback port, on a real SQLite file, reached over real gRPC.

Servers are started once per session; tests stay independent by acting for a fresh organization
(and fresh agent ids) each time.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from mnemo.llm.v1 import llm_pb2_grpc
from mnemo.memory.v1 import block_pb2_grpc, message_pb2_grpc
from mnemo.tools.v1 import tool_pb2_grpc
from mnemo_core.actor import Actor
from mnemo_core.api_keys import KeyResolver
from mnemo_core.channels import StubT, mesh_channel, mesh_stub
from mnemo_core.server import GrpcApp, RunningServer, start_server
from mnemo_llm.app import build as build_llm
from mnemo_llm.settings import LlmSettings
from mnemo_memory.app import build as build_memory
from mnemo_memory.settings import MemorySettings
from mnemo_tools.app import build as build_tools
from mnemo_tools.settings import ToolsSettings
from tests.fakes.llm_provider import FakeProvider, free_port

# Char limit of a block created without one, on the memory service under test.
DEFAULT_BLOCK_LIMIT = 200
# The internal credential of the services under test (one mesh, so one credential, like `mnemo server`).
TEST_CREDENTIAL = "test-mesh-credential"


@contextlib.contextmanager
def clean_environment(home: Path) -> Iterator[None]:
    """No MNEMO_*/OPENAI_* variable or config file of the developer's machine leaks into the settings."""
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(("MNEMO_", "OPENAI_")) or key == "DATABASE_URL":
                patch.delenv(key)
        patch.setenv("MNEMO_HOME", str(home))
        patch.setenv("MNEMO_CONFIG", str(home / "no-config.toml"))
        patch.setenv("MNEMO_INTERNAL_TOKEN", TEST_CREDENTIAL)
        yield


@dataclass
class Served:
    """A service running in this process and a client channel to it."""

    app: GrpcApp
    running: RunningServer
    channel: grpc.aio.Channel
    credential: str = TEST_CREDENTIAL

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def stub(self, stub_cls: Callable[[grpc.aio.Channel], StubT]) -> StubT:
        """A stub making mesh calls to the service (the actor of `acting_as`, errors as domain errors)."""
        return mesh_stub(stub_cls, self.channel, self.credential)


@contextlib.asynccontextmanager
async def serving(
    app: GrpcApp, *, credential: str = TEST_CREDENTIAL, keys: KeyResolver | None = None
) -> AsyncIterator[Served]:
    """Starts `app` on a free loopback port and opens a mesh channel to it."""
    running = await start_server(app, host="127.0.0.1", port=0, credential=credential, keys=keys)
    channel = mesh_channel(f"127.0.0.1:{running.port}")
    try:
        yield Served(app=app, running=running, channel=channel, credential=credential)
    finally:
        await channel.close()
        await running.stop(0)
        await app.aclose()


def new_actor() -> Actor:
    """An actor of an organization no other test uses."""
    return Actor(org_id=f"org-{uuid.uuid4()}", user_id="user-1")


def new_agent_id() -> str:
    return f"agent-{uuid.uuid4()}"


@pytest.fixture
def actor() -> Actor:
    return new_actor()


@pytest.fixture(scope="session")
async def memory_service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    home = tmp_path_factory.mktemp("memory")
    with clean_environment(home):
        # No llm-gateway here: the background embedder must not reach one a developer runs on the default port.
        settings = MemorySettings(
            home=home, default_block_limit=DEFAULT_BLOCK_LIMIT, llm_addr=f"127.0.0.1:{free_port()}"
        )
    assert settings.resolved_database_url().endswith(str(home / "data" / "memory.db"))
    app = await build_memory(settings)
    async with serving(app) as served:
        yield served


@pytest.fixture(scope="session")
async def tools_service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    home = tmp_path_factory.mktemp("tools")
    with clean_environment(home):
        settings = ToolsSettings(home=home)
    app = await build_tools(settings)
    async with serving(app) as served:
        yield served


@pytest.fixture(scope="session")
async def llm_service(
    tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider
) -> AsyncIterator[Served]:
    """The llm-gateway talking to the fake OpenAI-compatible provider."""
    home = tmp_path_factory.mktemp("llm")
    with clean_environment(home):
        settings = LlmSettings(
            home=home,
            openai_base_url=fake_provider.base_url,
            openai_api_key="sk-test",
            provider_max_retries=0,
            provider_timeout=30.0,
        )
    app = await build_llm(settings)
    async with serving(app) as served:
        yield served


@pytest.fixture(scope="session")
async def unconfigured_llm_service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    """The llm-gateway with no provider configured at all."""
    home = tmp_path_factory.mktemp("llm-none")
    with clean_environment(home):
        settings = LlmSettings(home=home)
    assert settings.openai_api_key is None
    assert not settings.openai_base_url
    app = await build_llm(settings)
    async with serving(app) as served:
        yield served


@pytest.fixture
def blocks(memory_service: Served) -> block_pb2_grpc.BlockServiceAsyncStub:
    return memory_service.stub(block_pb2_grpc.BlockServiceStub)


@pytest.fixture
def messages(memory_service: Served) -> message_pb2_grpc.MessageServiceAsyncStub:
    return memory_service.stub(message_pb2_grpc.MessageServiceStub)


@pytest.fixture
def tools(tools_service: Served) -> tool_pb2_grpc.ToolServiceAsyncStub:
    return tools_service.stub(tool_pb2_grpc.ToolServiceStub)


@pytest.fixture
def chat(llm_service: Served) -> llm_pb2_grpc.LlmServiceAsyncStub:
    return llm_service.stub(llm_pb2_grpc.LlmServiceStub)


@dataclass
class KeyHolder:
    """An API key made by a real IdentityService, and whom it acts for."""

    secret: str
    org_id: str
    user_id: str

    @property
    def metadata(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.secret}"),)


async def make_key_holder(identity: Served, org_id: str = "", *, role: str = "member") -> KeyHolder:
    """A key of a new user in `org_id` (a new organization when empty), made as root over gRPC."""
    from mnemo.agent.v1 import identity_pb2, identity_pb2_grpc
    from mnemo_core.actor import acting_as
    from mnemo_core.api_keys import ROOT_ACTOR

    stub = identity.stub(identity_pb2_grpc.IdentityServiceStub)
    with acting_as(ROOT_ACTOR):
        if not org_id:
            made = await stub.CreateOrganization(
                identity_pb2.CreateOrganizationRequest(
                    organization=identity_pb2.Organization(name=f"org-{uuid.uuid4().hex[:8]}")
                )
            )
            org_id = made.organization.id
        user = await stub.CreateUser(
            identity_pb2.CreateUserRequest(
                org_id=org_id, user=identity_pb2.User(name=f"user-{uuid.uuid4().hex[:8]}")
            )
        )
        key = await stub.CreateApiKey(
            identity_pb2.CreateApiKeyRequest(
                org_id=org_id,
                api_key=identity_pb2.ApiKey(
                    user_id=user.user.id,
                    name=f"key-{uuid.uuid4().hex[:8]}",
                    role=identity_pb2.ROLE_ADMIN if role == "admin" else identity_pb2.ROLE_MEMBER,
                ),
            )
        )
    return KeyHolder(secret=key.secret, org_id=org_id, user_id=user.user.id)


@contextlib.asynccontextmanager
async def identity_service(home: Path) -> AsyncIterator[Served]:
    """An agent service of its own, for its IdentityService (no memory or tools service behind it)."""
    from mnemo_agent.app import build as build_agent
    from mnemo_agent.settings import AgentSettings

    with clean_environment(home):
        settings = AgentSettings(
            home=home, memory_addr=f"127.0.0.1:{free_port()}", tools_addr=f"127.0.0.1:{free_port()}"
        )
    async with serving(await build_agent(settings)) as served:
        yield served
