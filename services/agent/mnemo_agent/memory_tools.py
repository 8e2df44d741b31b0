"""The built-in memory tools, run against the memory service on the agent's behalf."""

from __future__ import annotations

from typing import Any

from mnemo.memory.v1 import block_pb2
from mnemo_agent.mesh import Mesh


class ToolError(Exception):
    """A tool failed in a way the model should see and can act on."""


def _text(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise ToolError(f"argument '{name}' is required and must be a string")
    return value


class MemoryTools:
    """Runs core_memory_append / core_memory_replace; returns what the model is told."""

    names = frozenset({"core_memory_append", "core_memory_replace"})

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    async def run(self, agent_id: str, name: str, args: dict[str, Any]) -> tuple[str, block_pb2.Block]:
        """Runs one memory tool; returns its result text and the block it changed."""
        if name == "core_memory_append":
            appended = await self._mesh.blocks.AppendBlockValue(
                block_pb2.AppendBlockValueRequest(
                    agent_id=agent_id, label=_text(args, "label"), content=_text(args, "content")
                )
            )
            block, verb = appended.block, "Appended to"
        elif name == "core_memory_replace":
            replaced = await self._mesh.blocks.ReplaceBlockValue(
                block_pb2.ReplaceBlockValueRequest(
                    agent_id=agent_id,
                    label=_text(args, "label"),
                    old_content=_text(args, "old_content"),
                    new_content=_text(args, "new_content"),
                )
            )
            block, verb = replaced.block, "Replaced text in"
        else:
            raise ToolError(f"'{name}' is not a memory tool")
        return f"{verb} block '{block.label}' (now {len(block.value)}/{block.limit} characters).", block
