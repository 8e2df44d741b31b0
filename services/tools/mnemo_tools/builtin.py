"""Built-in tools every agent can be given. Memory tools run against the memory service."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mnemo.tools.v1 import tool_pb2


@dataclass(frozen=True, slots=True)
class BuiltinTool:
    """A built-in tool definition; its id is fixed so agents keep it across upgrades."""

    name: str
    description: str
    parameters: dict[str, Any]
    tool_type: tool_pb2.ToolType.ValueType

    @property
    def id(self) -> str:
        return f"tool-builtin-{self.name}"

    @property
    def json_schema(self) -> str:
        return json.dumps(self.parameters, separators=(",", ":"))


def _object(properties: dict[str, dict[str, str]], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


BUILTIN_TOOLS: tuple[BuiltinTool, ...] = (
    BuiltinTool(
        name="core_memory_append",
        description=(
            "Append text to one of your core memory blocks (for example 'human' or 'persona'). "
            "Core memory is always in your context; use it for facts you must keep in mind. "
            "Fails if the block would exceed its character limit."
        ),
        parameters=_object(
            {
                "label": {"type": "string", "description": "Label of the block to edit, e.g. 'human'."},
                "content": {"type": "string", "description": "Text to append on a new line."},
            },
            ["label", "content"],
        ),
        tool_type=tool_pb2.TOOL_TYPE_MEMORY,
    ),
    BuiltinTool(
        name="core_memory_replace",
        description=(
            "Replace text in one of your core memory blocks. old_content must match the block's text "
            "exactly; every occurrence is replaced. Use an empty new_content to delete text."
        ),
        parameters=_object(
            {
                "label": {"type": "string", "description": "Label of the block to edit, e.g. 'human'."},
                "old_content": {"type": "string", "description": "Exact text to find in the block."},
                "new_content": {"type": "string", "description": "Text to put in its place."},
            },
            ["label", "old_content", "new_content"],
        ),
        tool_type=tool_pb2.TOOL_TYPE_MEMORY,
    ),
)
