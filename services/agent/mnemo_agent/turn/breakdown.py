"""An agent's context window, section by section, as its next model call would send it.

Each section is counted by the llm-gateway (CountTokens, for the agent's model) as the difference between
two requests that differ by that section alone, growing in the order the request is assembled: the
system prompt without the blocks, with them, then the tool schemas, the summary, and the messages. So the
sections add up to the whole request, framing included (in the first section).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo.memory.v1 import block_pb2
from mnemo_agent import context_window as cw
from mnemo_agent.conversation import to_chat_messages
from mnemo_agent.prompt import compile_system_prompt
from mnemo_agent.store import Agent
from mnemo_agent.turn.ports import TokenCount, TokenCounter, Window
from mnemo_core.wire import utcnow


@dataclass(frozen=True, slots=True)
class ContextBreakdown:
    """Tokens per section of an agent's next request, and the windows they fit into."""

    context_window: int
    model_context_window: int
    system_tokens: int
    core_memory_tokens: int
    tool_schema_tokens: int
    summary_tokens: int
    message_tokens: int
    message_count: int
    exact: bool
    method: str

    @property
    def total_tokens(self) -> int:
        return (
            self.system_tokens
            + self.core_memory_tokens
            + self.tool_schema_tokens
            + self.summary_tokens
            + self.message_tokens
        )


def _system(text: str) -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content=text)


async def context_breakdown(
    agent: Agent,
    window: Window,
    blocks: Sequence[block_pb2.Block],
    tools: Sequence[llm_pb2.ToolSchema],
    counter: TokenCounter,
    *,
    context_window: int,
) -> ContextBreakdown:
    """The breakdown of `agent`'s next request over its `window`, `blocks` and `tools`."""
    sections = compile_system_prompt(
        agent.system,
        blocks,
        history_count=window.history_count,
        in_context_count=len(window.messages),
        now=utcnow(),
        memory_tool_set=agent.memory_tool_set,
    )
    messages = list(window.messages)
    summary: list[message_pb2.Message] = messages[:1] if messages and cw.is_front_summary(messages[0]) else []
    chat = to_chat_messages(messages)
    summary_chat, rest_chat = chat[: len(summary)], chat[len(summary) :]
    without_blocks = _system(f"{sections.base}\n\n{sections.metadata}")
    system = _system(sections.text)
    prefixes = [
        llm_pb2.ChatRequest(model=agent.model, messages=[without_blocks]),
        llm_pb2.ChatRequest(model=agent.model, messages=[system]),
        llm_pb2.ChatRequest(model=agent.model, messages=[system], tools=tools),
        llm_pb2.ChatRequest(model=agent.model, messages=[system, *summary_chat], tools=tools),
        llm_pb2.ChatRequest(model=agent.model, messages=[system, *summary_chat, *rest_chat], tools=tools),
    ]
    counts: list[TokenCount] = list(await asyncio.gather(*(counter.count_tokens(p) for p in prefixes)))
    tokens = [count.tokens for count in counts]
    return ContextBreakdown(
        context_window=context_window,
        model_context_window=counts[-1].context_window,
        system_tokens=tokens[0],
        core_memory_tokens=max(0, tokens[1] - tokens[0]),
        tool_schema_tokens=max(0, tokens[2] - tokens[1]),
        summary_tokens=max(0, tokens[3] - tokens[2]),
        message_tokens=max(0, tokens[4] - tokens[3]),
        message_count=len(messages) - len(summary),
        exact=all(count.exact for count in counts),
        method=counts[-1].method,
    )
