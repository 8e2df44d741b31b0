"""/v1/batches: many turns run in the background."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from mnemo.rest.common import MAX_INT32, RequestBody
from mnemo.rest.messages import MessageCreate
from mnemo.rest.runs import Run


class BatchTurn(RequestBody):
    """One turn of a batch."""

    agent_id: str
    messages: list[MessageCreate] = Field(min_length=1)
    max_steps: int = Field(default=0, ge=0, le=MAX_INT32)


BatchMode = Literal["auto", "concurrent", "provider"]


class BatchCreate(RequestBody):
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
