"""/v1/agents/{id}/archival-memory: passages of an agent's archival memory and their search."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from mnemo.rest.common import RequestBody, Score


class PassageCreate(RequestBody):
    """Text to store in an agent's archival memory (cut into passages when long)."""

    text: str = Field(description="At most 100,000 characters.")
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    speaker: str = Field(default="", description="Who said it, for conversation turns.")
    created_at: datetime | None = Field(default=None, description="When it was said; now if unset.")


class Passage(BaseModel):
    """A passage of archival memory."""

    id: str
    agent_id: str
    source_id: str
    file_id: str
    text: str
    tags: list[str]
    speaker: str
    metadata: dict[str, Any]
    embedding_model: str
    embedding_dim: int
    chunk_index: int
    created_at: datetime | None


class PassageHit(BaseModel):
    """One result of an archival search."""

    passage: Passage
    score: Score


class PassageSearchResult(BaseModel):
    """The results of an archival search, best first."""

    results: list[PassageHit]
    embedding_model: str
