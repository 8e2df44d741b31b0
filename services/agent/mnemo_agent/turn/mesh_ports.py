"""The ports of a turn over the mesh: memory, tools and the llm-gateway through their gRPC stubs."""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2, llm_pb2_grpc
from mnemo.memory.v1 import block_pb2
from mnemo.memory.v1 import message_pb2 as history_pb2
from mnemo.tools.v1 import tool_pb2
from mnemo_agent.mesh import Mesh
from mnemo_agent.turn.ports import TokenCount, Window


class MeshMemory:
    """The memory service: context windows, core memory blocks and the history (the turn's recorder)."""

    def __init__(self, mesh: Mesh) -> None:
        self._messages = mesh.messages
        self._blocks = mesh.blocks

    async def window(self, agent_id: str) -> Window:
        found = await self._messages.GetContextWindow(history_pb2.GetContextWindowRequest(agent_id=agent_id))
        return Window(list(found.messages), found.history_count)

    async def blocks(self, agent_id: str) -> list[block_pb2.Block]:
        found = await self._blocks.ListBlocks(block_pb2.ListBlocksRequest(agent_id=agent_id, page_size=1000))
        return list(found.blocks)

    async def run_page(
        self, agent_id: str, run_id: str, *, size: int, token: str
    ) -> tuple[list[message_pb2.Message], str]:
        page = await self._messages.ListMessages(
            history_pb2.ListMessagesRequest(
                agent_id=agent_id, run_id=run_id, page_size=size, page_token=token
            )
        )
        return list(page.messages), page.next_page_token

    async def append(
        self, agent_id: str, run_id: str, step: int, messages: list[message_pb2.Message]
    ) -> list[message_pb2.Message]:
        appended = await self._messages.AppendMessages(
            history_pb2.AppendMessagesRequest(agent_id=agent_id, run_id=run_id, step=step, messages=messages)
        )
        return list(appended.messages)

    async def compact(
        self, agent_id: str, keep_from: str, summary: message_pb2.Message, expected_first: str
    ) -> tuple[message_pb2.Message | None, int]:
        response = await self._messages.CompactContextWindow(
            history_pb2.CompactContextWindowRequest(
                agent_id=agent_id,
                keep_from_message_id=keep_from,
                summary=summary,
                expected_first_message_id=expected_first,
            )
        )
        return (response.summary if response.HasField("summary") else None), response.evicted_count


class MeshTools:
    """The tools service: tool definitions, and runs of custom and MCP tools."""

    def __init__(self, mesh: Mesh) -> None:
        self._tools = mesh.tools

    async def get(self, tool_ids: Sequence[str]) -> list[tool_pb2.Tool]:
        found = await self._tools.BatchGetTools(tool_pb2.BatchGetToolsRequest(tool_ids=list(tool_ids)))
        return list(found.tools)

    async def run(
        self, tool: tool_pb2.Tool, arguments_json: str, agent_id: str, run_id: str = ""
    ) -> message_pb2.ToolReturnContent:
        # The run id lets the tools service give the agent's environment variables to its own turns only.
        result = await self._tools.RunTool(
            tool_pb2.RunToolRequest(
                tool_id=tool.id, arguments_json=arguments_json, agent_id=agent_id, run_id=run_id
            )
        )
        return message_pb2.ToolReturnContent(
            content=result.content, status=result.status, stdout=result.stdout, stderr=result.stderr
        )


class MeshModel:
    """The llm-gateway; every call may take `timeout` seconds unless the caller says otherwise."""

    def __init__(self, llm: llm_pb2_grpc.LlmServiceAsyncStub, *, timeout: float) -> None:
        self._llm = llm
        self._timeout = timeout

    async def chat(
        self, request: llm_pb2.ChatRequest, *, timeout: float | None = None
    ) -> llm_pb2.ChatResponse:
        return await self._llm.Chat(request, timeout=self._timeout if timeout is None else timeout)

    def stream(self, request: llm_pb2.ChatRequest) -> AsyncIterable[llm_pb2.StreamChatResponse]:
        return self._llm.StreamChat(llm_pb2.StreamChatRequest(chat=request), timeout=self._timeout)

    async def count_tokens(self, request: llm_pb2.ChatRequest) -> TokenCount:
        counted = await self._llm.CountTokens(llm_pb2.CountTokensRequest(chat=request), timeout=self._timeout)
        return TokenCount(counted.token_count, counted.exact, counted.method, counted.context_window)
