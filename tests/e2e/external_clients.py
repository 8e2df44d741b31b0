"""What the tests of clients in other languages share: where the tools are, and whether the mesh takes API
keys on gRPC (`authorization: Bearer`), which those clients use."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc
from mnemo_core.rpc_errors import DETAILS_KEY
from tests.harness import RunningMesh

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES_BIN = ROOT / "node_modules" / ".bin"


def tool(name: str) -> str:
    """The path of a tool the test needs (node, tsc, grpcurl): failing, not skipping, when it is missing."""
    for candidate in (NODE_MODULES_BIN / name, Path(sys.executable).parent / name):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (`make install` installs the clients' tools)")
    return found


async def takes_api_keys(mesh: RunningMesh) -> bool:
    """Whether the services authenticate API keys on gRPC (`authorization: Bearer`); until they do, they
    ask for actor metadata instead (reason ACTOR_MISSING)."""
    async with grpc.aio.insecure_channel(mesh.grpc_address) as channel:
        try:
            await agent_pb2_grpc.AgentServiceStub(channel).ListAgents(
                agent_pb2.ListAgentsRequest(page_size=1),
                metadata=(("authorization", f"Bearer {mesh.api_key}"),),
            )
        except grpc.aio.AioRpcError as exc:
            details = dict(exc.trailing_metadata() or ()).get(DETAILS_KEY)
            info = error_details_pb2.ErrorInfo()
            unpacked = bool(details) and status_pb2.Status.FromString(details).details[0].Unpack(info)
            if unpacked and info.reason == "ACTOR_MISSING":
                return False
            raise
    return True


async def require_grpc_api_keys(mesh: RunningMesh) -> None:
    """Skips the test while the services do not take API keys on gRPC: the clients under test send only
    the key."""
    if not await takes_api_keys(mesh):
        pytest.skip("the services do not take API keys on gRPC yet (authorization: Bearer)")
