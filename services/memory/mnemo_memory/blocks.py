"""Core memory values as the domain sees them, and the checks every write of a value passes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from mnemo_core.errors import InvalidArgument, PermissionDenied


@dataclass(frozen=True, slots=True)
class BlockSpec:
    """What a caller asks for when creating a block."""

    label: str
    value: str = ""
    limit: int = 0
    description: str = ""
    read_only: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Block:
    """A block as callers see it, with the agents it is attached to."""

    id: str
    label: str
    value: str
    limit: int
    description: str
    read_only: bool
    metadata: dict[str, Any]
    agent_ids: list[str]
    created_at: datetime
    updated_at: datetime
    is_template: bool = False
    # A template's name, or for a block, the template it was created from ("" if none).
    template_name: str = ""
    # A built-in template, shared by every organization and unchangeable.
    builtin: bool = False
    # The latest version of the value (0: unchanged since versions were first kept).
    version: int = 0


@dataclass(frozen=True, slots=True)
class Editor:
    """Who writes a block's value: a caller of the API (its user), or an agent's memory tool in a run."""

    type: Literal["user", "agent"]
    id: str
    run_id: str = ""


@dataclass(frozen=True, slots=True)
class BlockVersion:
    """One kept version of a block's value."""

    block_id: str
    version: int
    operation: str
    editor: Editor
    before: str
    after: str
    # On the undo stack: "applied", "undone", "discarded"; "" for versions that are not edits.
    state: str
    target_version: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Retention:
    """How many versions of each block are kept (0: all), and for how long (None: forever)."""

    max_versions: int = 100
    max_age: timedelta | None = None


def check_fits(label: str, value: str, limit: int, field_name: str = "value") -> None:
    """Refuses a value longer than the block's limit, saying by how much."""
    if len(value) > limit:
        raise InvalidArgument(
            f"block '{label}' would hold {len(value)} characters but its limit is {limit}",
            reason="BLOCK_LIMIT_EXCEEDED",
            metadata={"label": label, "length": str(len(value)), "limit": str(limit)},
        ).with_violation(field_name, f"{len(value)} characters exceed the limit of {limit}")


def check_changeable(block: Block) -> None:
    """Refuses any change of a built-in template."""
    if block.builtin:
        raise PermissionDenied(
            f"'{block.template_name}' is a built-in template and cannot be changed; create your own template "
            "with the same name to shadow it",
            reason="BUILTIN_TEMPLATE",
            metadata={"template_name": block.template_name},
        )


def check_not_read_only(block: Block, refused: str) -> None:
    """Refuses a change of a read-only block's value by agents' memory tools, undo, redo or restore;
    `refused` says what is refused and what to do."""
    if block.read_only:
        raise PermissionDenied(
            f"block '{block.label}' is read-only: {refused}",
            reason="BLOCK_READ_ONLY",
            metadata={"label": block.label},
        )
