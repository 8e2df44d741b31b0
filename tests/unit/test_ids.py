"""Resource ids: anything that cannot be an id is invalid input, not a lookup."""

from __future__ import annotations

import pytest

from mnemo_core.errors import InvalidArgument
from mnemo_core.ids import MAX_ID_CHARS, new_id, require_id


def test_made_ids_pass() -> None:
    made = new_id("agent")

    assert require_id(made, "agent_id") == made
    assert require_id("tool-builtin-core_memory_append", "tool_id") == "tool-builtin-core_memory_append"


@pytest.mark.parametrize(
    ("value", "description"),
    [
        ("", "required"),
        ("x" * (MAX_ID_CHARS + 1), f"at most {MAX_ID_CHARS} characters"),
        ("agent-1\x00", "control"),
        ("agent 1", "whitespace"),
        ("agent-1\n", "whitespace"),
    ],
)
def test_what_cannot_be_an_id_is_invalid_argument_naming_the_field(value: str, description: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        require_id(value, "agent_id")

    assert refused.value.violations[0].field == "agent_id"
    assert description in refused.value.violations[0].description
