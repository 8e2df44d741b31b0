"""The address form the Kubernetes manifests give (`dns:///<headless service>:<port>`) reaches a real service."""

from __future__ import annotations

from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from mnemo_core.channels import Peers
from mnemo_core.settings import MnemoSettings
from mnemo_memory.app import build as build_memory
from mnemo_memory.settings import MemorySettings
from tests.service.conftest import clean_environment, serving


async def test_a_peer_addressed_through_the_dns_resolver_serves(tmp_path: Path) -> None:
    with clean_environment(tmp_path):
        app = await build_memory(MemorySettings())
        async with serving(app) as memory:
            settings = MnemoSettings(memory_addr=f"dns:///localhost:{memory.running.port}")
            peers = Peers(settings)
            try:
                health = health_pb2_grpc.HealthStub(peers.channel("memory"))
                reply = await health.Check(
                    health_pb2.HealthCheckRequest(service="mnemo.memory.v1.BlockService"), timeout=10
                )
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            finally:
                await peers.aclose()
