"""REST shapes of memory: blocks and templates, archival passages, recall search, sources, files and jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mnemo_gateway.schemas import MAX_INT32, Message


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlockCreateRequest(_In):
    """A block (or a template) to create, optionally from a template."""

    label: str = Field(
        default="", description="Name of the block within an agent; from the template if empty."
    )
    value: str = ""
    limit: int | None = Field(
        default=None, ge=1, le=MAX_INT32, description="Character limit; template's or server default."
    )
    description: str = ""
    read_only: bool = Field(default=False, description="Agents' memory tools cannot change it (the API can).")
    metadata: dict[str, Any] = Field(default_factory=dict)
    is_template: bool = Field(default=False, description="Create a template to make blocks from.")
    template_name: str = Field(default="", description="Name of the template (templates only).")
    from_template: str = Field(default="", description="Create the block from this template.")
    agent_id: str = Field(default="", description="Attach the new block to this agent.")


class BlockUpdate(_In):
    """Fields of a block to change; unset fields stay."""

    label: str | None = None
    value: str | None = None
    limit: int | None = Field(default=None, ge=1, le=MAX_INT32)
    description: str | None = None
    read_only: bool | None = None
    metadata: dict[str, Any] | None = None


class Template(BaseModel):
    """A block template."""

    id: str
    template_name: str
    label: str
    value: str
    limit: int
    description: str
    read_only: bool
    metadata: dict[str, Any]
    builtin: bool


class PassageCreate(_In):
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


class Score(BaseModel):
    """How a search hit ranked."""

    score: float
    vector_rank: int | None
    similarity: float | None
    keyword_rank: int | None


class PassageHit(BaseModel):
    """One result of an archival search."""

    passage: Passage
    score: Score


class PassageSearchResult(BaseModel):
    """The results of an archival search, best first."""

    results: list[PassageHit]
    embedding_model: str


class MessageHit(BaseModel):
    """One result of a recall search."""

    message: Message
    score: Score


class MessageSearchResult(BaseModel):
    """The results of a recall search, best first."""

    results: list[MessageHit]
    embedding_model: str
    pending_embeddings: int = Field(description="Messages not embedded yet (found by words only for now).")


class SourceCreate(_In):
    """A source to create."""

    name: str
    description: str = ""
    embedding_model: str = Field(default="", description="'provider/model'; the server default when empty.")
    metadata: dict[str, Any] = Field(default_factory=dict)


class SourceUpdate(_In):
    """Fields of a source to change."""

    name: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None


class Source(BaseModel):
    """A collection of files whose passages agents can search."""

    id: str
    name: str
    description: str
    embedding_model: str
    embedding_dim: int
    metadata: dict[str, Any]
    agent_ids: list[str]
    created_at: datetime | None
    updated_at: datetime | None


JobStatus = Literal["pending", "running", "completed", "failed", "unknown"]


class Job(BaseModel):
    """The background processing of an uploaded file."""

    id: str
    file_id: str
    source_id: str
    status: JobStatus
    chunks_total: int
    chunks_done: int
    progress: float
    error: str
    created_at: datetime | None
    updated_at: datetime | None
    completed_at: datetime | None


class File(BaseModel):
    """A file of a source."""

    id: str
    source_id: str
    file_name: str
    content_type: str
    size_bytes: int
    status: JobStatus
    error: str
    chunk_count: int
    job_id: str
    created_at: datetime | None
    updated_at: datetime | None


class Upload(BaseModel):
    """An accepted upload: the stored file and the job processing it."""

    file: File
    job: Job
