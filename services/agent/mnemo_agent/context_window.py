"""Context window management: token estimates, where to cut, and the summarizer that never fails a turn.

Before every LLM call the request's size is estimated (characters / 4 plus a per-message overhead:
cheap, and deliberately a little pessimistic). At >= 90 % of the window the oldest ~30 % of the
in-context messages are evicted, cutting only between complete exchanges so a tool call and its
return always leave together, and a clipped summary of them goes in front of the window. The
summarizer runs on its own model with its own input budget (never the agent's window setting); if
it fails, the messages are dropped without a summary and a truncation event records it. Evicted
messages stay in the history.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_core.errors import MnemoError

log = logging.getLogger(__name__)

PROACTIVE_THRESHOLD = 0.90
PRESSURE_THRESHOLD = 0.75
EVICT_FRACTION = 0.30
CONTEXT_WINDOW_EXCEEDED = "CONTEXT_WINDOW_EXCEEDED"
_PER_MESSAGE = 4
_ASSISTANT_SIDE = frozenset({"assistant", "reasoning", "tool_call"})
_FRONT_EVENTS = (message_pb2.EVENT_TYPE_SUMMARY, message_pb2.EVENT_TYPE_TRUNCATION)

SUMMARIZER_SYSTEM = """\
You maintain the long-term summary of a conversation between an assistant and a user. You get the
previous summary (if any) and the messages that are about to leave the assistant's context window.
Write one updated summary, in plain text, that keeps every fact, decision, open question and commitment
the assistant will need later; drop small talk. Write at most {words} words. Output only the summary."""


def chat_tokens(request: llm_pb2.ChatRequest) -> int:
    """A cheap, slightly pessimistic token estimate of a chat request (messages and tool schemas)."""
    chars = 0
    for message in request.messages:
        chars += len(message.content) + len(message.reasoning)
        for call in message.tool_calls:
            chars += len(call.name) + len(call.arguments) + len(call.id)
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + len(tool.parameters_json)
    return chars // 4 + _PER_MESSAGE * len(request.messages)


def message_tokens(message: message_pb2.Message) -> int:
    """Estimated tokens of one stored message."""
    kind = message.WhichOneof("content")
    if kind == "tool_call":
        call = message.tool_call.tool_call
        return (len(call.name) + len(call.arguments) + len(call.id)) // 4 + _PER_MESSAGE
    if kind == "tool_return":
        return len(message.tool_return.content) // 4 + _PER_MESSAGE
    if kind is None:
        return 0
    return len(getattr(message, kind).text) // 4 + _PER_MESSAGE


def is_front_summary(message: message_pb2.Message) -> bool:
    """Whether a window's first message is the summary (or truncation note) placed before it."""
    return message.WhichOneof("content") == "event" and message.event.type in _FRONT_EVENTS


def _group(message: message_pb2.Message) -> tuple[str, int] | None:
    if message.WhichOneof("content") in _ASSISTANT_SIDE:
        return (message.run_id, message.step)
    return None


def can_cut_before(body: Sequence[message_pb2.Message], index: int) -> bool:
    """Whether the window may start at body[index]: never at a tool return or inside one model reply."""
    if not 0 < index < len(body):
        return False
    kind = body[index].WhichOneof("content")
    if kind == "tool_return":
        return False
    group = _group(body[index])
    return group is None or group != _group(body[index - 1])


def choose_cut(body: Sequence[message_pb2.Message], fraction: float = EVICT_FRACTION) -> int | None:
    """The index of the first message to keep so that about `fraction` of the tokens leave.

    Prefers cutting before a user message; falls back to any safe boundary; None if there is none.
    At least one message always stays.
    """
    if len(body) < 2:
        return None
    sizes = [message_tokens(m) for m in body]
    target = sum(sizes) * fraction
    evicted = 0
    fallback: int | None = None
    for index in range(1, len(body)):
        evicted += sizes[index - 1]
        if evicted < target or not can_cut_before(body, index):
            continue
        if body[index].WhichOneof("content") == "user":
            return index
        if fallback is None:
            fallback = index
    if fallback is not None:
        return fallback
    # Nothing safe past the target: take the latest safe boundary before it, if any.
    for index in range(len(body) - 1, 0, -1):
        if can_cut_before(body, index):
            return index
    return None


def transcript(messages: Sequence[message_pb2.Message]) -> str:
    """The evicted messages as plain text for the summarizer."""
    lines = []
    for message in messages:
        kind = message.WhichOneof("content")
        if kind == "user":
            lines.append(f"user: {message.user.text}")
        elif kind == "assistant":
            lines.append(f"assistant: {message.assistant.text}")
        elif kind == "reasoning":
            lines.append(f"assistant (thinking): {message.reasoning.text}")
        elif kind == "tool_call":
            call = message.tool_call.tool_call
            lines.append(f"assistant called {call.name}({call.arguments})")
        elif kind == "tool_return":
            lines.append(f"{message.tool_return.name} returned: {message.tool_return.content}")
        elif kind == "system":
            lines.append(f"system: {message.system.text}")
        elif kind == "event":
            lines.append(f"note: {message.event.text}")
    return "\n".join(lines)


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with a marker when it was cut."""
    if len(text) <= limit:
        return text
    marker = " [...]"
    return text[: max(0, limit - len(marker))] + marker


def clip_middle(text: str, limit: int) -> str:
    """`text` with its middle dropped to fit `limit` characters (the start and the latest part stay)."""
    if len(text) <= limit:
        return text
    marker = "\n[... part of the conversation omitted ...]\n"
    head = max(0, limit // 4)
    tail = max(0, limit - head - len(marker))
    return text[:head] + marker + text[len(text) - tail :]


class ChatModel(Protocol):
    """Whole replies of a model (through the llm-gateway)."""

    async def chat(
        self, request: llm_pb2.ChatRequest, *, timeout: float | None = None
    ) -> llm_pb2.ChatResponse:
        """The model's reply; `timeout` (seconds) replaces the default of the caller's."""


@dataclass(frozen=True, slots=True)
class SummarizerSettings:
    """How summaries are made: the summarizer's own input budget in tokens, and its timeout."""

    input_tokens: int
    timeout: float


class Summarizer:
    """Writes the summary of evicted messages with an LLM; raises when it cannot."""

    def __init__(self, llm: ChatModel, settings: SummarizerSettings) -> None:
        self._llm = llm
        self._settings = settings

    async def summarize(
        self, model: str, agent_id: str, previous: str, evicted: Sequence[message_pb2.Message], *, limit: int
    ) -> str:
        """A summary of `previous` plus `evicted`, at most `limit` characters."""
        budget_chars = self._settings.input_tokens * 4
        text = transcript(evicted)
        for attempt in range(2):
            prompt = (
                (f"Previous summary:\n{clip(previous, budget_chars // 4)}\n\n" if previous else "")
                + "Messages leaving the context window:\n"
                + clip_middle(text, budget_chars)
            )
            request = llm_pb2.ChatRequest(
                model=model,
                messages=[
                    llm_pb2.ChatMessage(
                        role=llm_pb2.CHAT_ROLE_SYSTEM,
                        content=SUMMARIZER_SYSTEM.format(words=max(20, limit // 6)),
                    ),
                    llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=prompt),
                ],
                tool_choice=llm_pb2.TOOL_CHOICE_NONE,
                max_tokens=max(64, limit // 3),
                agent_id=agent_id,
            )
            try:
                reply = await self._llm.chat(request, timeout=self._settings.timeout)
            except MnemoError as exc:
                if exc.reason == CONTEXT_WINDOW_EXCEEDED and attempt == 0:
                    budget_chars //= 4  # the summarizer's own window is smaller than configured
                    continue
                raise
            summary = str(reply.message.content).strip()
            if not summary:
                raise SummaryFailed("the summarizer returned an empty summary")
            return clip(summary, limit)
        raise SummaryFailed("the evicted messages do not fit the summarizer's context window")


class SummaryFailed(MnemoError):
    """The summarizer gave nothing usable."""

    default_reason = "SUMMARY_FAILED"


def summary_event(text: str, evicted: int) -> message_pb2.Message:
    """The event placed before the window after a successful summary."""
    return message_pb2.Message(
        event=message_pb2.EventContent(type=message_pb2.EVENT_TYPE_SUMMARY, text=text, evicted_count=evicted)
    )


def truncation_event(evicted: int, why: str, previous: str, limit: int) -> message_pb2.Message:
    """The event placed before the window when messages were dropped without a summary."""
    text = (
        f"{evicted} older messages left your context window without a summary ({why}); "
        "they remain in your history."
    )
    if previous:
        text += "\nEarlier summary:\n" + previous
    return message_pb2.Message(
        event=message_pb2.EventContent(
            type=message_pb2.EVENT_TYPE_TRUNCATION, text=clip(text, limit), evicted_count=evicted
        )
    )


def pressure_event(percent: int) -> message_pb2.Message:
    """The note that tells the model its context is nearly full."""
    return message_pb2.Message(
        event=message_pb2.EventContent(
            type=message_pb2.EVENT_TYPE_MEMORY_PRESSURE,
            text=(
                f"Your context window is {percent}% full. Older messages will soon be summarized and "
                "leave it: save anything important to core memory now."
            ),
        )
    )


def pressure_noted(window: Sequence[message_pb2.Message]) -> bool:
    """Whether the window already holds a memory-pressure note (one per compaction cycle)."""
    return any(
        m.WhichOneof("content") == "event" and m.event.type == message_pb2.EVENT_TYPE_MEMORY_PRESSURE
        for m in window
    )
