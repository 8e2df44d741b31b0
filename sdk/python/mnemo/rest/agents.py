"""/v1/agents: an agent's configuration, as created, changed and returned."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from mnemo.rest.blocks import Block, BlockCreate
from mnemo.rest.common import MAX_INT32, RequestBody

MemoryToolSet = Literal["classic", "lines"]
MEMORY_TOOL_SET_HELP = (
    "The built-in tools that edit core memory: classic (core_memory_append, core_memory_replace) or lines "
    "(memory_insert, memory_replace, memory_rethink, memory_finish_edits; blocks shown with line numbers). "
    "Changing it swaps the attached built-in editing tools."
)


class LlmOptions(BaseModel):
    """Sampling options passed to the model on every step."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int = Field(
        default=0, ge=0, le=MAX_INT32, description="Longest reply per step; 0 = provider default."
    )
    parallel_tool_calls: bool = False


class ToolOutputBranch(BaseModel):
    """For a conditional rule: the tool that follows when the output matches (give equals or pattern)."""

    equals: str | None = Field(
        default=None, description="The output equals this (trimmed; a JSON scalar output by its value)."
    )
    pattern: str | None = Field(default=None, description="The output contains a match of this RE2 regex.")
    next_tool: str


class ToolRule(BaseModel):
    """A constraint on how the model may call one tool within a turn."""

    tool_name: str = Field(description="The tool it applies to (it need not be attached yet).")
    type: Literal[
        "terminal",
        "run_first",
        "max_calls",
        "requires_approval",
        "conditional",
        "allowed_children",
        "parent_last",
        "required_before_exit",
        "continue_loop",
        "max_count_per_step",
    ] = Field(
        description=(
            "terminal: a successful call ends the turn (stop reason tool_rule); run_first: the first step "
            "of every turn must call it; max_calls: at most max_calls calls per turn; requires_approval: "
            "the run stops (requires_approval) until the call is approved or denied; conditional: after a "
            "successful call only the tool its output selects (branches, else default_next_tool) may follow; "
            "allowed_children: after a successful call only its children may follow; parent_last: its "
            "children may only be called right after it; required_before_exit: the turn cannot end before "
            "it succeeded; continue_loop: a step calling it never ends the turn; max_count_per_step: at "
            "most max_calls calls in one step."
        )
    )
    max_calls: int = Field(
        default=0,
        ge=0,
        le=MAX_INT32,
        description="max_calls rules: calls allowed per turn; max_count_per_step rules: per step.",
    )
    children: list[str] = Field(
        default_factory=list, description="allowed_children and parent_last rules: the tools that follow it."
    )
    branches: list[ToolOutputBranch] = Field(
        default_factory=list, description="conditional rules: the next tool by output, first match wins."
    )
    default_next_tool: str = Field(
        default="", description="conditional rules: the next tool when no branch matches ('' = any)."
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
    memory_tool_set: MemoryToolSet = Field(default="classic", description=MEMORY_TOOL_SET_HELP)


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
    memory_tool_set: MemoryToolSet | None = Field(default=None, description=MEMORY_TOOL_SET_HELP)


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
    memory_tool_set: MemoryToolSet = "classic"


class SystemPrompt(BaseModel):
    """The compiled system prompt an agent sees on its next step."""

    system_prompt: str


class ContextBreakdown(BaseModel):
    """How an agent's next model call would fill its context window now, in tokens per section."""

    context_window: int = Field(description="The window its turns fit into (summaries start at 90 %).")
    model_context_window: int = Field(description="The model's own window; 0 when unknown.")
    total_tokens: int = Field(description="The whole request; the sections below add up to it.")
    system_tokens: int = Field(description="Base system prompt and memory statistics, with the framing.")
    core_memory_tokens: int
    tool_schema_tokens: int
    summary_tokens: int
    message_tokens: int
    message_count: int = Field(description="Messages in the window, the summary not counted.")
    exact: bool = Field(description="Whether the counts are exact for the model (false: an estimate).")
    method: str
