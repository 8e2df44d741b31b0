"""/v1/sources and /v1/jobs: sources, their files, and the jobs that process uploads."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from mnemo.rest.common import RequestBody


class SourceCreate(RequestBody):
    """A source to create."""

    name: str
    description: str = ""
    embedding_model: str = Field(default="", description="'provider/model'; the server default when empty.")
    metadata: dict[str, Any] = Field(default_factory=dict)


class SourceUpdate(RequestBody):
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
