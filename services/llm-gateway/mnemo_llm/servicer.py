"""gRPC servicer of the llm-gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo_llm.gateway import LlmGateway

Context = Any


class LlmServicer(llm_pb2_grpc.LlmServiceServicer):
    """LlmService over the LlmGateway."""

    def __init__(self, gateway: LlmGateway) -> None:
        self._gateway = gateway

    async def Chat(self, request: llm_pb2.ChatRequest, context: Context) -> llm_pb2.ChatResponse:
        return await self._gateway.chat(request)

    async def StreamChat(
        self, request: llm_pb2.StreamChatRequest, context: Context
    ) -> AsyncIterator[llm_pb2.StreamChatResponse]:
        async for event in self._gateway.stream_chat(request.chat):
            yield event

    async def Embed(self, request: llm_pb2.EmbedRequest, context: Context) -> llm_pb2.EmbedResponse:
        return await self._gateway.embed(request)
