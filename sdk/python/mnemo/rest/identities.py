"""/v1/identities: the end users of an application, with their agents and the blocks those agents share.

Not the users of an organization who hold API keys (mnemo.rest.identity): an identity never calls the API,
the application does on its behalf and knows it by its own id (`identifier_key`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from mnemo.rest.common import RequestBody

IdentityType = Literal["user", "org", "other"]


class IdentityCreate(RequestBody):
    """An end user to create, optionally with its agents and blocks."""

    identifier_key: str = Field(
        min_length=1,
        max_length=256,
        description="The application's own id for it; unique in the organization.",
    )
    name: str = Field(default="", max_length=200)
    identity_type: IdentityType = "user"
    properties: dict[str, Any] = Field(default_factory=dict, description="Free-form key/values.")
    agent_ids: list[str] = Field(default_factory=list, description="Its agents, which get its blocks.")
    block_ids: list[str] = Field(
        default_factory=list, description="Its blocks, attached to every one of its agents."
    )


class IdentityUpdate(RequestBody):
    """Fields of an identity to change; unset fields stay."""

    identifier_key: str | None = Field(default=None, min_length=1, max_length=256)
    name: str | None = Field(default=None, max_length=200)
    identity_type: IdentityType | None = None
    properties: dict[str, Any] | None = None


class Identity(BaseModel):
    """An end user of an application, with its agents and blocks."""

    id: str
    identifier_key: str
    name: str
    identity_type: IdentityType
    properties: dict[str, Any]
    agent_ids: list[str]
    block_ids: list[str]
    created_at: datetime | None
    updated_at: datetime | None
