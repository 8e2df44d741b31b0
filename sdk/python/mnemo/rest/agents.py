"""/v1/agents: an agent's configuration, as created, changed and returned."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from mnemo.rest.blocks import Block, BlockCreate
from mnemo.rest.common import MAX_INT32, RequestBody


class LlmOptions(BaseModel):
    """Sampling options passed to the model on every step."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int = Field(
        default=0, ge=0, le=MAX_INT32, description="Longest reply per step; 0 = provider default."
    )
    parallel_tool_calls: bool = False


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


class AgentCreate(RequestBody):
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


class AgentUpdate(RequestBody):
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


class SystemPrompt(BaseModel):
    """The compiled system prompt an agent sees on its next step."""

    system_prompt: str
