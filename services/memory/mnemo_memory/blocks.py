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
