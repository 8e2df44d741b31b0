"""Settings of the tools service."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field

from mnemo_core.settings import ServiceName, ServiceSettings


class ToolsSettings(ServiceSettings):
    """`MNEMO_*` env and the `[tools]` table of the config file."""

    service: ClassVar[ServiceName] = "tools"
    section: ClassVar[str] = "tools"

    database_url: str = Field(
        default="",
        validation_alias=AliasChoices("MNEMO_TOOLS_DATABASE_URL", "MNEMO_DATABASE_URL"),
    )
    # Longest tool return shown to the model when a tool does not set its own limit.
    default_return_char_limit: int = 50_000
