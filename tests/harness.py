"""Starts the real mesh (five processes on free loopback ports) for end-to-end tests and benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mnemo_core import mesh_credential
from mnemo_core.actor import Actor
from mnemo_core.settings import GRPC_SERVICES, MnemoSettings, ServiceName
from mnemo_server.supervisor import Child, child_env, start_children, stop_children, wait_healthy
from tests.fakes.llm_provider import free_port

API_KEY = "test-key-0123456789"
FAKES = Path(__file__).parent / "fakes"


@dataclass
class RunningMesh:
    """Where a started mesh listens."""

    home: Path
    http_url: str
    # The gRPC front: every service on one address.
    grpc_address: str
    api_key: str
    settings: MnemoSettings
    children: list[Child] = field(default_factory=list)

    def address(self, service: ServiceName) -> str:
        return self.settings.address_of(service)

    @property
    def credential(self) -> str:
        """The mesh's internal credential (what its own hops sign the actor with)."""
        return self.settings.internal_credential()

    def hop(self, org_id: str, user_id: str, role: str = "") -> tuple[tuple[str, str], ...]:
        """The metadata of one of the mesh's own hops acting for that actor (signed; valid for minutes)."""
        return tuple(mesh_credential.actor_metadata(self.credential, Actor(org_id, user_id, role)))

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def mesh_env(
    home: Path,
    *,
    provider_url: str | None,
    extra: Mapping[str, str] | None = None,
    anthropic_url: str | None = None,
    ollama_url: str | None = None,
) -> dict[str, str]:
    """Environment for a mesh under `home` on free ports, talking to `provider_url` (None: no provider)
    and, when given, to Anthropic and Ollama fakes."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MNEMO_", "OTEL_", "OPENAI_", "ANTHROPIC_", "OLLAMA_"))
    }
    env.update(
        {
            "MNEMO_HOME": str(home),
            "MNEMO_API_KEY": API_KEY,
            "MNEMO_HTTP_PORT": str(free_port()),
            "MNEMO_GRPC_PORT": str(free_port()),
            **{f"MNEMO_{service.upper()}_PORT": str(free_port()) for service in GRPC_SERVICES},
            # No Prometheus endpoints unless a test asks for them: meshes run side by side.
            **{f"MNEMO_{service.upper()}_METRICS_PORT": "0" for service in GRPC_SERVICES},
            "MNEMO_PROVIDER_MAX_RETRIES": "0",
            "MNEMO_LOG_LEVEL": "WARNING",
            # The tests' MCP servers: stdio ones are this interpreter running a script of tests/fakes (what
            # it imports made visible in their sandbox); HTTP ones listen on loopback.
            "MNEMO_MCP_STDIO_ENABLED": "true",
            "MNEMO_MCP_STDIO_COMMANDS": json.dumps([sys.executable]),
            "MNEMO_MCP_STDIO_PATHS": json.dumps(sorted({sys.prefix, sys.base_prefix, str(FAKES)})),
            "MNEMO_MCP_HTTP_ALLOWED_NETWORKS": json.dumps(["127.0.0.0/8"]),
        }
    )
    if provider_url:
        env["MNEMO_OPENAI_BASE_URL"] = provider_url
        env["OPENAI_API_KEY"] = "sk-test"
    if anthropic_url:
        env["MNEMO_ANTHROPIC_BASE_URL"] = anthropic_url
        env["ANTHROPIC_API_KEY"] = "sk-ant-test"
    if ollama_url:
        env["MNEMO_OLLAMA_BASE_URL"] = ollama_url
    env.update(extra or {})
    return child_env(env)


def _settings(env: Mapping[str, str]) -> MnemoSettings:
    return MnemoSettings(
        home=Path(env["MNEMO_HOME"]),
        internal_token=env["MNEMO_INTERNAL_TOKEN"],
        tls_cert_file=env.get("MNEMO_TLS_CERT_FILE") or None,
        tls_key_file=env.get("MNEMO_TLS_KEY_FILE") or None,
        **{f"{service}_port": int(env[f"MNEMO_{service.upper()}_PORT"]) for service in GRPC_SERVICES},
    )


@contextlib.asynccontextmanager
async def running_mesh(env: Mapping[str, str], *, timeout: float = 60.0) -> AsyncIterator[RunningMesh]:
    """Starts the mesh with `env`, waits until healthy, yields it, and stops it."""
    settings = _settings(env)
    mesh = RunningMesh(
        home=Path(env["MNEMO_HOME"]),
        http_url=f"{'https' if settings.tls else 'http'}://127.0.0.1:{env['MNEMO_HTTP_PORT']}",
        grpc_address=f"127.0.0.1:{env['MNEMO_GRPC_PORT']}",
        api_key=env["MNEMO_API_KEY"],
        settings=settings,
    )
    mesh.children = await start_children(env)
    try:
        await wait_healthy(settings, mesh.http_url, mesh.children, timeout)
        yield mesh
    finally:
        await stop_children(mesh.children)
