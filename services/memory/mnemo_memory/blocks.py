"""Core memory values as the domain sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


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
