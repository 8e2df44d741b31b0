"""/v1/runs: agent turns as runs (status, outcome, usage), and their approvals."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from mnemo.rest.common import RequestBody
from mnemo.rest.messages import ToolCall, Usage


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
    parent_run_id: str | None = Field(
        default=None, description="The sending run, for agent-to-agent messages."
    )
    group_run_id: str | None = Field(default=None, description="The group run, for a member turn of a group.")


class Approval(RequestBody):
    """The answer to a run that waits for a tool call to be approved."""

    approve: bool
    reason: str = Field(default="", description="Shown to the model when the call is denied.")
