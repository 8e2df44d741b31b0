"""Identities: organizations, users and API keys (secrets only in `ApiKeyCreated`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from mnemo.rest.common import RequestBody

Name = Annotated[str, Field(min_length=1, max_length=200, description="1-200 characters.")]


OrgId = Annotated[
    str,
    Field(
        max_length=200,
        description="Organization to act in; empty means the caller's (another one needs the root key).",
    ),
]


class OrganizationCreate(RequestBody):
    """An organization to create (root key only)."""

    name: Name


class Organization(BaseModel):
    """A tenant: every agent, block, tool and run belongs to one."""

    id: str
    name: str
    created_at: datetime | None


class UserCreate(RequestBody):
    """A user to create; its name is unique within the organization."""

    name: Name
    org_id: OrgId = ""


class User(BaseModel):
    """A user of an organization; API keys act for a user."""

    id: str
    org_id: str
    name: str
    created_at: datetime | None


class ApiKeyCreate(RequestBody):
    """An API key to create; its name is unique among the organization's active keys."""

    name: Name
    role: Literal["admin", "member"] = Field(
        default="member",
        description="member: uses the organization's agents, memory and tools; admin: also manages its "
        "users and API keys.",
    )
    user_id: str = Field(
        default="", max_length=200, description="User the key acts for; empty means the caller."
    )
    org_id: OrgId = ""


class ApiKey(BaseModel):
    """An API key, without its secret."""

    id: str
    org_id: str
    user_id: str
    name: str
    role: Literal["admin", "member"]
    display_prefix: str = Field(description="The first characters of the secret, to recognise the key.")
    created_at: datetime | None


class ApiKeyCreated(ApiKey):
    """A new API key with its secret: shown this once, never again."""

    secret: str = Field(description="Send as 'Authorization: Bearer <secret>'. Store it now.")
