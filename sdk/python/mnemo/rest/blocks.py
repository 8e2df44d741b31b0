"""/v1/blocks and an agent's core memory: blocks and block templates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from mnemo.rest.common import MAX_INT32, RequestBody


class BlockCreate(RequestBody):
    """A core memory block to create."""

    label: str = Field(description="Name of the block within the agent, e.g. 'human'.")
    value: str = ""
    limit: int | None = Field(
        default=None, ge=1, le=MAX_INT32, description="Character limit; server default when unset."
    )
    description: str = ""
    read_only: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)


class Block(BaseModel):
    """A core memory block."""

    id: str
    label: str
    value: str
    limit: int
    description: str
    read_only: bool
    agent_ids: list[str]
    metadata: dict[str, Any]
    created_at: datetime | None
    updated_at: datetime | None


class BlockCreateRequest(RequestBody):
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


class BlockUpdate(RequestBody):
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
