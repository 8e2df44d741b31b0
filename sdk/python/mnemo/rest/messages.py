"""Turns and their messages: what a turn takes, the typed messages it returns, streamed events, recall
search, summarization, and ephemeral (stateless) turns."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from mnemo.rest.agents import LlmOptions, ToolRule
from mnemo.rest.blocks import BlockCreate
from mnemo.rest.common import MAX_INT32, RequestBody, Score


class TextPart(RequestBody):
    """A text part of a message's content."""

    type: Literal["text"] = "text"
    text: str


class MessageCreate(RequestBody):
    """An input message of a turn."""

    role: Literal["user", "system"] = "user"
    content: str | list[TextPart]
    name: str | None = Field(default=None, description="Optional speaker name (user messages).")

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class SendMessageRequest(RequestBody):
    """The body of a send-message request."""

    messages: list[MessageCreate] = Field(min_length=1)
    max_steps: int = Field(
        default=0, ge=0, le=MAX_INT32, description="Most steps for this turn; 0 = the agent's setting."
    )
    stream_tokens: bool = Field(
        default=False, description="Streaming only: also send the model's text as it is generated."
    )


class _MessageBase(BaseModel):
    id: str
    date: datetime | None
    run_id: str
    step: int
    agent_id: str | None = Field(default=None, description="The agent whose history holds the message.")


class UserMessage(_MessageBase):
    message_type: Literal["user_message"] = "user_message"
    content: str
    name: str | None = None


class SystemMessage(_MessageBase):
    message_type: Literal["system_message"] = "system_message"
    content: str


class AssistantMessage(_MessageBase):
    message_type: Literal["assistant_message"] = "assistant_message"
    content: str


class ReasoningMessage(_MessageBase):
    message_type: Literal["reasoning_message"] = "reasoning_message"
    reasoning: str


class ToolCall(BaseModel):
    """A tool the model asked to run."""

    name: str
    arguments: str
    tool_call_id: str


class ToolCallMessage(_MessageBase):
    message_type: Literal["tool_call_message"] = "tool_call_message"
    tool_call: ToolCall


class ToolReturnMessage(_MessageBase):
    message_type: Literal["tool_return_message"] = "tool_return_message"
    tool_return: str
    status: Literal["success", "error"]
    tool_call_id: str
    name: str
    stdout: str | None = None
    stderr: str | None = None


class EventMessage(_MessageBase):
    message_type: Literal["event_message"] = "event_message"
    event_type: str
    content: str


Message = Annotated[
    UserMessage
    | SystemMessage
    | AssistantMessage
    | ReasoningMessage
    | ToolCallMessage
    | ToolReturnMessage
    | EventMessage,
    Field(discriminator="message_type"),
]


class StopReason(BaseModel):
    """Why a turn ended."""

    message_type: Literal["stop_reason"] = "stop_reason"
    stop_reason: str


class Usage(BaseModel):
    """Tokens a turn spent, and its step count."""

    message_type: Literal["usage_statistics"] = "usage_statistics"
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    step_count: int


class SendMessageResponse(BaseModel):
    """The result of a turn: its new messages, why it stopped, and its usage."""

    messages: list[Message]
    stop_reason: StopReason
    usage: Usage
    run_id: str


class StreamStopReason(StopReason):
    """Why a streamed turn ended, with its run."""

    run_id: str


class ContentDelta(BaseModel):
    """Reply text as the model generates it (streaming with stream_tokens)."""

    message_type: Literal["assistant_message_delta"] = "assistant_message_delta"
    run_id: str
    step: int
    content: str


class ReasoningDelta(BaseModel):
    """Reasoning as the model generates it (streaming with stream_tokens)."""

    message_type: Literal["reasoning_message_delta"] = "reasoning_message_delta"
    run_id: str
    step: int
    reasoning: str


# One Server-Sent Event of a streamed turn (each `data:` line): a stored message, a token delta, the stop
# reason with the run, or the usage; `data: [DONE]` ends the stream, and an `ErrorBody` reports a failure
# after the stream began.
StreamEvent = Annotated[
    UserMessage
    | SystemMessage
    | AssistantMessage
    | ReasoningMessage
    | ToolCallMessage
    | ToolReturnMessage
    | EventMessage
    | ContentDelta
    | ReasoningDelta
    | StreamStopReason
    | Usage,
    Field(discriminator="message_type"),
]


class MessageHit(BaseModel):
    """One result of a recall search."""

    message: Message
    score: Score


class MessageSearchResult(BaseModel):
    """The results of a recall search, best first."""

    results: list[MessageHit]
    embedding_model: str
    pending_embeddings: int = Field(description="Messages not embedded yet (found by words only for now).")


class ContextMessage(RequestBody):
    """A message of an ephemeral turn's earlier conversation, in chat form."""

    role: Literal["user", "assistant", "system", "tool"]
    content: str = ""
    name: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list, description="Assistant messages only.")
    tool_call_id: str = Field(default="", description="Tool messages: the call this answers.")


class EphemeralAgent(RequestBody):
    """The configuration of an agent that exists only for one request."""

    model: str
    system: str = ""
    tool_ids: list[str] = Field(default_factory=list)
    tool_rules: list[ToolRule] = Field(default_factory=list)
    llm_options: LlmOptions = Field(default_factory=LlmOptions)
    context_window: int = Field(default=0, ge=0, le=MAX_INT32)
    max_steps: int = Field(default=0, ge=0, le=MAX_INT32)


class EphemeralRequest(RequestBody):
    """Context in, answer out: nothing is stored."""

    agent: EphemeralAgent
    memory_blocks: list[BlockCreate] = Field(default_factory=list, description="Core memory (read-only).")
    context: list[ContextMessage] = Field(default_factory=list)
    messages: list[MessageCreate] = Field(min_length=1)
    max_steps: int = Field(default=0, ge=0, le=MAX_INT32)


class EphemeralResponse(BaseModel):
    """The result of an ephemeral turn (messages carry no ids: nothing was stored)."""

    messages: list[Message]
    stop_reason: StopReason
    usage: Usage


class SummarizeResponse(BaseModel):
    """What a manual summarization did."""

    evicted_count: int
    summary: Message | None
