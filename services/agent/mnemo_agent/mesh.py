"""Clients of the services the orchestrator calls: memory, tools and the llm-gateway."""

from __future__ import annotations

from mnemo.llm.v1 import llm_pb2_grpc
from mnemo.memory.v1 import block_pb2_grpc, message_pb2_grpc
from mnemo.tools.v1 import tool_pb2_grpc
from mnemo_core.channels import Peers
from mnemo_core.settings import MnemoSettings


class Mesh:
    """Stubs of the peer services; calls forward the current actor and deadline."""

    def __init__(self, settings: MnemoSettings) -> None:
        self._peers = Peers(settings)
        self.blocks = block_pb2_grpc.BlockServiceStub(self._peers.channel("memory"))
        self.messages = message_pb2_grpc.MessageServiceStub(self._peers.channel("memory"))
        self.tools = tool_pb2_grpc.ToolServiceStub(self._peers.channel("tools"))
        self.llm = llm_pb2_grpc.LlmServiceStub(self._peers.channel("llm"))

    async def aclose(self) -> None:
        await self._peers.aclose()
