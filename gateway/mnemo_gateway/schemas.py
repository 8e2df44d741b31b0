"""The REST API's JSON shapes. Clients are written against these: change them only compatibly."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The largest integer the gRPC messages behind these bodies carry (int32 fields).
MAX_INT32 = 2**31 - 1


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LlmOptions(BaseModel):
    """Sampling options passed to the model on every step."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int = Field(
        default=0, ge=0, le=MAX_INT32, description="Longest reply per step; 0 = provider default."
    )
    parallel_tool_calls: bool = False


class BlockCreate(_In):
    """A core memory block to create."""

    label: str = Field(description="Name of the block within the agent, e.g. 'human'.")
    value: str = ""
    limit: int | None = Field(
        default=None, ge=1, le=MAX_INT32, description="Character limit; server default when unset."
    )
    description: str = ""
    read_only: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)


class Block(BaseModel):
    """A core memory block."""

    id: str
    label: str
    value: str
    limit: int
    description: str
    read_only: bool
    agent_ids: list[str]
    metadata: dict[str, Any]
    created_at: datetime | None
    updated_at: datetime | None


class ToolRule(BaseModel):
    """A constraint on how the model may call one tool within a turn."""

    tool_name: str
    type: Literal["terminal", "run_first", "max_calls", "requires_approval"] = Field(
        description=(
            "terminal: a successful call ends the turn (stop reason tool_rule); run_first: the first step "
            "of every turn must call it; max_calls: at most max_calls calls per turn; requires_approval: "
            "the run stops (requires_approval) until the call is approved or denied."
        )
    )
    max_calls: int = Field(
        default=0, ge=0, le=MAX_INT32, description="For max_calls rules: calls allowed per turn."
    )


class SleeptimeConfig(BaseModel):
    """A background agent that shares this agent's blocks and reorganises them between turns."""

    enabled: bool = False
    frequency: int = Field(
        default=0, ge=0, le=MAX_INT32, description="Run after every this many turns; 0 = 5."
    )
    model: str = Field(default="", description="Its model; empty uses the agent's model.")


class AgentCreate(_In):
    """An agent to create."""

    name: str
    model: str = Field(description="Chat model as 'provider/model', e.g. 'openai/gpt-4o-mini'.")
    system: str = Field(default="", description="Base system prompt; empty uses the default prompt.")
    description: str = ""
    memory_blocks: list[BlockCreate] = Field(default_factory=list)
    block_ids: list[str] = Field(default_factory=list, description="Existing blocks to attach (shared).")
    tool_ids: list[str] = Field(default_factory=list)
    include_base_tools: bool = Field(default=True, description="Attach the built-in memory tools.")
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    embedding_model: str = ""
    context_window: int = Field(default=0, ge=0, le=MAX_INT32)
    max_steps: int = Field(default=0, ge=0, le=MAX_INT32)
    agent_type: Literal["standard", "voice", "sleeptime"] = "standard"
    llm_options: LlmOptions = Field(default_factory=LlmOptions)
    tool_rules: list[ToolRule] = Field(default_factory=list)
    summarizer_model: str = Field(default="", description="Model that writes summaries; empty = model.")
    sleeptime: SleeptimeConfig = Field(default_factory=SleeptimeConfig)


class AgentUpdate(_In):
    """Fields of an agent to change; the ones left out (or null) keep their value."""

    name: str | None = None
    description: str | None = None
    system: str | None = Field(default=None, description="Base system prompt; empty uses the default prompt.")
    model: str | None = Field(default=None, description="Chat model as 'provider/model'.")
    embedding_model: str | None = None
    context_window: int | None = Field(default=None, ge=0, le=MAX_INT32)
    max_steps: int | None = Field(default=None, ge=0, le=MAX_INT32)
    tool_ids: list[str] | None = Field(default=None, description="Replaces the attached tools.")
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    llm_options: LlmOptions | None = None
    tool_rules: list[ToolRule] | None = None
    summarizer_model: str | None = None


class Agent(BaseModel):
    """A stateful agent with its core memory blocks."""

    id: str
    name: str
    description: str
    system: str
    model: str
    embedding_model: str
    context_window: int
    max_steps: int
    agent_type: str
    tool_ids: list[str]
    tags: list[str]
    metadata: dict[str, Any]
    llm_options: LlmOptions
    blocks: list[Block]
    created_at: datetime | None
    updated_at: datetime | None
    tool_rules: list[ToolRule] = Field(default_factory=list)
    summarizer_model: str = ""
    sleeptime: SleeptimeConfig = Field(default_factory=SleeptimeConfig)
    sleeptime_agent_id: str | None = None
    primary_agent_id: str | None = None


class TextPart(_In):
    """A text part of a message's content."""

    type: Literal["text"] = "text"
    text: str


class MessageCreate(_In):
    """An input message of a turn."""

    role: Literal["user", "system"] = "user"
    content: str | list[TextPart]
    name: str | None = Field(default=None, description="Optional speaker name (user messages).")

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class SendMessageRequest(_In):
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


class Run(BaseModel):
    """One agent turn: its status, outcome and usage."""

    id: str
    agent_id: str
    status: Literal["created", "running", "completed", "failed", "cancelled", "awaiting_approval"]
    stop_reason: str | None
    usage: Usage
    idempotency_key: str | None
    message_ids: list[str]
    error: str | None
    pending_approvals: list[ToolCall]
    batch_id: str | None
    created_at: datetime | None
    completed_at: datetime | None


class Approval(_In):
    """The answer to a run that waits for a tool call to be approved."""

    approve: bool
    reason: str = Field(default="", description="Shown to the model when the call is denied.")


class ContextMessage(_In):
    """A message of an ephemeral turn's earlier conversation, in chat form."""

    role: Literal["user", "assistant", "system", "tool"]
    content: str = ""
    name: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list, description="Assistant messages only.")
    tool_call_id: str = Field(default="", description="Tool messages: the call this answers.")


class EphemeralAgent(_In):
    """The configuration of an agent that exists only for one request."""

    model: str
    system: str = ""
    tool_ids: list[str] = Field(default_factory=list)
    tool_rules: list[ToolRule] = Field(default_factory=list)
    llm_options: LlmOptions = Field(default_factory=LlmOptions)
    context_window: int = Field(default=0, ge=0, le=MAX_INT32)
    max_steps: int = Field(default=0, ge=0, le=MAX_INT32)


class EphemeralRequest(_In):
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


class SystemPrompt(BaseModel):
    """The compiled system prompt an agent sees on its next step."""

    system_prompt: str


class BatchTurn(_In):
    """One turn of a batch."""

    agent_id: str
    messages: list[MessageCreate] = Field(min_length=1)
    max_steps: int = Field(default=0, ge=0, le=MAX_INT32)


BatchMode = Literal["auto", "concurrent", "provider"]


class BatchCreate(_In):
    """Many turns to run in the background."""

    turns: list[BatchTurn] = Field(min_length=1, max_length=1000)
    # "provider": model calls go through the provider's batch API (refused when it has none);
    # "concurrent": ordinary calls, a few turns at a time; "auto": provider where every model's has one.
    mode: BatchMode = "auto"


class Batch(BaseModel):
    """A batch of turns and their runs."""

    id: str
    status: Literal["running", "completed"]
    # The mode the batch runs in ("auto" resolved).
    mode: Literal["concurrent", "provider"]
    runs: list[Run]
    created_at: datetime | None
    # Provider mode: llm-gateway chat batches waiting for the provider now, and rounds submitted so far.
    chat_batch_ids: list[str] = []
    provider_round_count: int = 0


class ErrorBody(BaseModel):
    """The body of every error response."""

    detail: str
    reason: str
    metadata: dict[str, str] | None = None
    violations: list[dict[str, str]] | None = None


class Health(BaseModel):
    """Health of the gateway and every service behind it."""

    status: Literal["ok", "degraded"]
    services: dict[str, str]
