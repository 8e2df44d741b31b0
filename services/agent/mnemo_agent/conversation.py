"""Stored messages <-> provider-neutral chat messages, and the repair pass before every LLM call.

A model reply is stored as consecutive reasoning / assistant / tool-call messages of one step;
for the model they are merged back into one assistant message. The repair pass drops tool calls
without a return and returns without a call, so a crash can never poison later requests.
"""

from __future__ import annotations

from collections.abc import Sequence

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2

_ASSISTANT_SIDE = ("assistant", "reasoning", "tool_call")


def _event_text(event: message_pb2.EventContent) -> str:
    if event.type == message_pb2.EVENT_TYPE_SUMMARY:
        return f"[Summary of earlier conversation, which has left your context window]\n{event.text}"
    return f"[System note] {event.text}"


def to_chat_messages(history: Sequence[message_pb2.Message]) -> list[llm_pb2.ChatMessage]:
    """The chat messages for stored history, repaired: every tool call has its return, and vice versa."""
    chat: list[llm_pb2.ChatMessage] = []
    group: tuple[str, int] | None = None  # (run, step) of the assistant message being assembled
    for message in history:
        kind = message.WhichOneof("content")
        if kind in _ASSISTANT_SIDE:
            key = (message.run_id, message.step)
            if group != key or not chat or chat[-1].role != llm_pb2.CHAT_ROLE_ASSISTANT:
                chat.append(llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_ASSISTANT))
                group = key
            current = chat[-1]
            if kind == "assistant":
                current.content = f"{current.content}\n{message.assistant.text}".strip("\n")
            elif kind == "reasoning":
                current.reasoning = f"{current.reasoning}\n{message.reasoning.text}".strip("\n")
            else:
                current.tool_calls.append(message.tool_call.tool_call)
            continue
        group = None
        if kind == "system":
            chat.append(llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content=message.system.text))
        elif kind == "user":
            chat.append(
                llm_pb2.ChatMessage(
                    role=llm_pb2.CHAT_ROLE_USER, content=message.user.text, name=message.user.name
                )
            )
        elif kind == "tool_return":
            ret = message.tool_return
            chat.append(
                llm_pb2.ChatMessage(
                    role=llm_pb2.CHAT_ROLE_TOOL,
                    content=ret.content,
                    tool_call_id=ret.tool_call_id,
                    name=ret.name,
                )
            )
        elif kind == "event":
            chat.append(llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=_event_text(message.event)))
    return repair(chat)


def repair(chat: list[llm_pb2.ChatMessage]) -> list[llm_pb2.ChatMessage]:
    """Drops tool calls that have no return right after them, and returns that answer no call."""
    repaired: list[llm_pb2.ChatMessage] = []
    i = 0
    while i < len(chat):
        message = chat[i]
        if message.role == llm_pb2.CHAT_ROLE_TOOL:
            i += 1  # a return whose call was not just before it
            continue
        if message.role != llm_pb2.CHAT_ROLE_ASSISTANT or not message.tool_calls:
            repaired.append(message)
            i += 1
            continue
        returns = []
        j = i + 1
        while j < len(chat) and chat[j].role == llm_pb2.CHAT_ROLE_TOOL:
            returns.append(chat[j])
            j += 1
        answered = {ret.tool_call_id for ret in returns}
        calls = [call for call in message.tool_calls if call.id in answered]
        fixed = llm_pb2.ChatMessage()
        fixed.CopyFrom(message)
        del fixed.tool_calls[:]
        fixed.tool_calls.extend(calls)
        if fixed.tool_calls or fixed.content:
            repaired.append(fixed)
            called = {call.id for call in calls}
            seen: set[str] = set()
            for ret in returns:
                if ret.tool_call_id in called and ret.tool_call_id not in seen:
                    repaired.append(ret)
                    seen.add(ret.tool_call_id)
        i = j
    return repaired


def from_reply(reply: llm_pb2.ChatMessage) -> list[message_pb2.Message]:
    """The messages to store for a model reply: reasoning, then text, then each tool call."""
    messages: list[message_pb2.Message] = []
    if reply.reasoning:
        messages.append(message_pb2.Message(reasoning=message_pb2.ReasoningContent(text=reply.reasoning)))
    if reply.content or not reply.tool_calls:
        messages.append(message_pb2.Message(assistant=message_pb2.AssistantContent(text=reply.content)))
    for call in reply.tool_calls:
        messages.append(message_pb2.Message(tool_call=message_pb2.ToolCallContent(tool_call=call)))
    return messages


class ChatHistory:
    """The chat form of an agent's growing context window, each stored message converted once.

    Batches are appended whole (every call with its returns), so converting only the new messages
    gives what converting everything would, as long as the front did not move and the new part does
    not begin with tool returns (whose calls a previous, approval-stopped batch left open).
    """

    def __init__(self) -> None:
        self._chat: list[llm_pb2.ChatMessage] = []
        self._converted = 0
        self._first = ""

    def of(self, history: Sequence[message_pb2.Message]) -> list[llm_pb2.ChatMessage]:
        """The chat messages for `history` (which must extend the last one given, or it is redone)."""
        first = history[0].id if history else ""
        fresh = history[self._converted :]
        if (
            first != self._first
            or len(history) < self._converted
            or (fresh and fresh[0].WhichOneof("content") == "tool_return")
            or not first
        ):
            self._chat, self._converted, self._first = [], 0, first
            fresh = history
        if fresh:
            self._chat = self._chat + to_chat_messages(fresh)
            self._converted = len(history)
        return self._chat
