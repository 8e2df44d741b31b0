"""The built-in block templates every organization sees: the default persona and human blocks."""

from __future__ import annotations

from dataclasses import dataclass

from mnemo_memory.blocks import BlockSpec


@dataclass(frozen=True, slots=True)
class BuiltinTemplate:
    """A template shipped with the server; its id is fixed so that it survives upgrades."""

    name: str
    spec: BlockSpec

    @property
    def id(self) -> str:
        return f"block-template-{self.name}"


BUILTIN_TEMPLATES: tuple[BuiltinTemplate, ...] = (
    BuiltinTemplate(
        name="persona",
        spec=BlockSpec(
            label="persona",
            value=(
                "I am a helpful assistant with a long-term memory. I keep what I learn about the people I "
                "talk with in my core memory, save details worth keeping to my archival memory, and search "
                "my memory before I say that I do not know something."
            ),
            limit=5000,
            description="Who the agent is: its personality, tone and way of working.",
        ),
    ),
    BuiltinTemplate(
        name="human",
        spec=BlockSpec(
            label="human",
            value="",
            limit=5000,
            description="What the agent knows about the person it talks with: name, preferences, facts.",
        ),
    ),
)
