"""Clients of the services the orchestrator calls: memory, tools and the llm-gateway."""

from __future__ import annotations

from mnemo.llm.v1 import llm_pb2_grpc
from mnemo.memory.v1 import block_pb2_grpc, message_pb2_grpc, passage_pb2_grpc, source_pb2_grpc
from mnemo.tools.v1 import mcp_pb2_grpc, tool_pb2_grpc
from mnemo_core.channels import Peers
from mnemo_core.settings import MnemoSettings


class Mesh:
    """Stubs of the peer services; calls forward the current actor and deadline."""

    def __init__(self, settings: MnemoSettings) -> None:
        self._peers = Peers(settings)
        self.blocks = self._peers.stub("memory", block_pb2_grpc.BlockServiceStub)
        self.messages = self._peers.stub("memory", message_pb2_grpc.MessageServiceStub)
        self.passages = self._peers.stub("memory", passage_pb2_grpc.PassageServiceStub)
        self.sources = self._peers.stub("memory", source_pb2_grpc.SourceServiceStub)
        self.tools = self._peers.stub("tools", tool_pb2_grpc.ToolServiceStub)
        self.mcp = self._peers.stub("tools", mcp_pb2_grpc.McpServiceStub)
        self.llm = self._peers.stub("llm", llm_pb2_grpc.LlmServiceStub)

    async def aclose(self) -> None:
        await self._peers.aclose()
