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
