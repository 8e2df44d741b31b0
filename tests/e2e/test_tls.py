"""TLS on the gRPC ports and the REST port, from settings, with a self-signed certificate made here."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc
from mnemo.memory.v1 import block_pb2, block_pb2_grpc
from mnemo_core.settings import GRPC_SERVICES
from tests.fakes.llm_provider import FakeProvider
from tests.harness import RunningMesh, mesh_env, running_mesh


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 signed by its own key, and the key (0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "mnemo.crt", directory / "mnemo.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path


@pytest.fixture(scope="module")
async def tls_mesh(
    tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider
) -> AsyncIterator[tuple[RunningMesh, Path]]:
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    env = mesh_env(
        tmp_path_factory.mktemp("tls-mesh"),
        provider_url=fake_provider.base_url,
        extra={"MNEMO_TLS_CERT_FILE": str(cert), "MNEMO_TLS_KEY_FILE": str(key)},
    )
    async with running_mesh(env) as mesh:
        yield mesh, cert


def secure(mesh: RunningMesh, cert: Path, service: str) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        mesh.address(service), grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    )


async def test_rest_is_served_over_tls_and_every_internal_hop_works_over_it(
    tls_mesh: tuple[RunningMesh, Path],
) -> None:
    mesh, cert = tls_mesh
    async with httpx.AsyncClient(
        base_url=mesh.http_url, headers=mesh.auth, verify=ssl.create_default_context(cafile=cert), timeout=30
    ) as api:
        health = (await api.get("/v1/health")).json()
        # Creating an agent goes gateway → agent → memory (its blocks) → tools (its base tools).
        created = await api.post(
            "/v1/agents",
            json={
                "name": "over-tls",
                "model": "openai/gpt-4o-mini",
                "memory_blocks": [{"label": "human", "value": "reached over TLS"}],
            },
        )
        blocks = await api.get(f"/v1/agents/{created.json()['id']}/core-memory/blocks")

    assert mesh.http_url.startswith("https://")
    assert health["services"] == {service: "SERVING" for service in GRPC_SERVICES}
    assert created.status_code == 201, created.text
    assert blocks.status_code == 200
    assert [block["value"] for block in blocks.json()] == ["reached over TLS"]


async def test_plaintext_and_untrusted_clients_are_refused(tls_mesh: tuple[RunningMesh, Path]) -> None:
    mesh, _ = tls_mesh
    plain_url = mesh.http_url.replace("https://", "http://")
    async with httpx.AsyncClient(timeout=10) as client:
        with pytest.raises(httpx.HTTPError):
            await client.get(f"{plain_url}/v1/health")
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{mesh.http_url}/v1/health")  # the system's CAs do not know this certificate
    async with grpc.aio.insecure_channel(mesh.address("memory")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as plaintext:
            await block_pb2_grpc.BlockServiceStub(channel).ListBlocks(
                block_pb2.ListBlocksRequest(), timeout=5
            )

    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_grpc_client_with_an_api_key_works_over_tls(tls_mesh: tuple[RunningMesh, Path]) -> None:
    mesh, cert = tls_mesh
    async with httpx.AsyncClient(
        base_url=mesh.http_url, headers=mesh.auth, verify=ssl.create_default_context(cafile=cert), timeout=30
    ) as api:
        key: dict[str, Any] = (
            await api.post(
                "/v1/api-keys", json={"name": "grpc-over-tls", "role": "member", "user_id": "user-default"}
            )
        ).json()
        agent = (await api.post("/v1/agents", json={"name": "seen", "model": "openai/gpt-4o-mini"})).json()
    async with secure(mesh, cert, "agent") as channel:
        listed = await agent_pb2_grpc.AgentServiceStub(channel).ListAgents(
            agent_pb2.ListAgentsRequest(page_size=1000),
            metadata=(("authorization", f"Bearer {key['secret']}"),),
            timeout=30,
        )

    assert agent["id"] in [a.id for a in listed.agents]
