"""/v1/blocks and an agent's core memory: blocks and block templates."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

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
    version: int = Field(default=0, description="The latest version of the value (see its history).")


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


class BlockVersion(BaseModel):
    """One kept version of a block's value: who wrote it, how, the value before and after."""

    block_id: str
    version: int
    operation: Literal[
        "create", "update", "append", "replace", "insert", "rewrite", "restore", "undo", "redo"
    ]
    editor_type: Literal["user", "agent"] = Field(
        description="user: a caller of the API (editor_id is its user); agent: its memory tools in a run."
    )
    editor_id: str
    run_id: str | None = Field(default=None, description="The run whose tool call wrote it.")
    before: str
    after: str
    state: Literal["applied", "undone", "discarded"] | None = Field(
        default=None, description="Where an edit stands on the undo stack; null for create, undo and redo."
    )
    target_version: int | None = Field(
        default=None, description="For undo, redo and restore: the version it went back to."
    )
    created_at: datetime | None


class BlockRestore(RequestBody):
    """Which kept version of a block's value to restore."""

    version: int = Field(ge=1, le=MAX_INT32)
