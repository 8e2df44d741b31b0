"""Settings of the agent service."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field

from mnemo_core.settings import ServiceName, ServiceSettings


class AgentSettings(ServiceSettings):
    """`MNEMO_*` env and the `[agent]` table of the config file."""

    service: ClassVar[ServiceName] = "agent"
    section: ClassVar[str] = "agent"

    database_url: str = Field(
        default="",
        validation_alias=AliasChoices("MNEMO_AGENT_DATABASE_URL", "MNEMO_DATABASE_URL"),
    )
    # Steps per turn when neither the request nor the agent says.
    default_max_steps: int = 10
    # No turn may take more steps than this, whatever it asks.
    max_steps_limit: int = 100
    # Seconds one LLM call may take before the turn fails.
    llm_timeout: float = 180.0
    # Context window in tokens of agents that set none (the model catalogue is not consulted yet).
    default_context_window: int = 128_000
    # Model that writes summaries when an agent names none; empty uses the agent's own model.
    summarizer_model: str = ""
    # Most tokens of evicted conversation sent to the summarizer in one call (its own budget).
    summarizer_input_tokens: int = 32_000
    # Longest summary kept in front of the context window, in characters.
    summary_max_chars: int = 4_000
    # Seconds one summarizer call may take before the fallback (truncation) is used.
    summarizer_timeout: float = 60.0
    # Seconds a running turn holds its agent without extending the lease (crash detection across replicas).
    run_lease_seconds: float = 60.0
    # Runs one organization may have running at once (batch runs aside); beyond it a new turn is refused
    # with RESOURCE_EXHAUSTED (ORG_RUNS_EXHAUSTED). 0: no cap.
    max_running_runs_per_org: int = Field(default=64, ge=0)
    # Days an audit event is kept; older ones are pruned (at start, then hourly).
    audit_retention_days: float = Field(default=90.0, gt=0)
    # With replicas sharing the database (Postgres): how often a running turn checks whether another
    # replica was asked to cancel it.
    run_cancel_poll_seconds: float = Field(default=1.0, gt=0)
    # With replicas sharing the database: how often each looks for async runs whose replica died (their
    # lease ran out) and starts them again.
    run_sweep_seconds: float = Field(default=30.0, gt=0)
    # Most in-context messages a voice agent sends to the model (small context, fast first token).
    voice_max_messages: int = 24
    # Turns of a batch that run at the same time (concurrent mode).
    batch_concurrency: int = 4
    # Provider mode: seconds model calls of a batch's turns are gathered before they go to the provider
    # as one batch (sooner when every live turn of the batch waits for the model).
    batch_collect_window: float = Field(default=1.0, gt=0)
    # Provider mode: seconds between two polls of a provider batch.
    batch_poll_interval: float = Field(default=30.0, gt=0)
    # Sleep-time agents run after every this many turns of their primary agent, by default.
    sleeptime_frequency: int = 5
    # Agent-to-agent messages (send_message_to_agent_*): how many hops a chain of messages may take, and
    # how many turns all its agents may take in all, before the tools refuse (no unbounded ping-pong).
    message_max_depth: int = Field(default=3, ge=1, le=20)
    message_max_turns: int = Field(default=12, ge=1, le=1000)
    # Groups: most member turns one group message may take, whatever it asks.
    group_max_turns_limit: int = Field(default=50, ge=1, le=1000)
    # Agent files: largest file an import accepts, in bytes.
    agent_file_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
