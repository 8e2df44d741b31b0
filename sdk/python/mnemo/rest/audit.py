"""The audit log: one event per write (never a secret or a request body)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class AuditEvent(BaseModel):
    """One write made through REST, or by a gRPC client with an API key."""

    id: str
    org_id: str
    user_id: str
    key_id: str = Field(description="The API key presented ('root' for the bootstrap key), if any.")
    action: str = Field(description="'POST /v1/agents/{agent_id}/messages', or the gRPC method.")
    resource: str = Field(description="The request path, or the ids a gRPC request named.")
    request_id: str = Field(description="The X-Request-Id of the response (or x-request-id metadata).")
    outcome: str = Field(description="'OK', or the error reason.")
    code: int = Field(description="HTTP status (rest) or gRPC status code (grpc).")
    surface: Literal["rest", "grpc"]
    time: datetime | None
