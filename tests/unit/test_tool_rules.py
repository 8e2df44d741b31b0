"""Tool rules as an agent's create or update checks them: well formed, and not contradicting each other."""

from __future__ import annotations

from typing import Any

import pytest

from mnemo_agent.tool_rules import Branch, Conditional, check_rules
from mnemo_core.errors import InvalidArgument


def violations(rules: list[dict[str, Any]]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as refused:
        check_rules(rules)
    return [(v.field, v.description) for v in refused.value.violations]


def test_every_rule_type_is_stored_with_only_its_own_fields() -> None:
    stored = check_rules(
        [
            {"tool_name": "a", "type": "terminal", "max_calls": 0, "children": [], "branches": []},
            {"tool_name": "b", "type": "max_count_per_step", "max_calls": 2},
            {"tool_name": "c", "type": "allowed_children", "children": ["d", "e"]},
            {"tool_name": "d", "type": "parent_last", "children": ["f"]},
            {"tool_name": "g", "type": "conditional", "branches": [{"equals": "yes", "next_tool": "h"}]},
            {"tool_name": "i", "type": "required_before_exit"},
            {"tool_name": "j", "type": "continue_loop"},
        ]
    )

    assert stored == [
        {"tool_name": "a", "type": "terminal"},
        {"tool_name": "b", "type": "max_count_per_step", "max_calls": 2},
        {"tool_name": "c", "type": "allowed_children", "children": ["d", "e"]},
        {"tool_name": "d", "type": "parent_last", "children": ["f"]},
        {
            "tool_name": "g",
            "type": "conditional",
            "branches": [{"next_tool": "h", "equals": "yes"}],
            "default_next_tool": "",
        },
        {"tool_name": "i", "type": "required_before_exit"},
        {"tool_name": "j", "type": "continue_loop"},
    ]


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"tool_name": "t", "type": "max_count_per_step"}, "agent.tool_rules[0].max_calls"),
        ({"tool_name": "t", "type": "allowed_children"}, "agent.tool_rules[0].children"),
        (
            {"tool_name": "t", "type": "allowed_children", "children": ["u", "u"]},
            "agent.tool_rules[0].children",
        ),
        ({"tool_name": "t", "type": "parent_last", "children": ["t"]}, "agent.tool_rules[0].children"),
        ({"tool_name": "t", "type": "terminal", "children": ["u"]}, "agent.tool_rules[0].children"),
        ({"tool_name": "t", "type": "conditional"}, "agent.tool_rules[0].branches"),
        (
            {"tool_name": "t", "type": "conditional", "branches": [{"next_tool": "u"}]},
            "agent.tool_rules[0].branches[0]",
        ),
        (
            {
                "tool_name": "t",
                "type": "conditional",
                "branches": [{"equals": "a", "pattern": "b", "next_tool": "u"}],
            },
            "agent.tool_rules[0].branches[0]",
        ),
        (
            {
                "tool_name": "t",
                "type": "conditional",
                "branches": [{"pattern": "(unclosed", "next_tool": "u"}],
            },
            "agent.tool_rules[0].branches[0].pattern",
        ),
        (
            {"tool_name": "t", "type": "conditional", "branches": [{"equals": "a", "next_tool": ""}]},
            "agent.tool_rules[0].branches[0].next_tool",
        ),
        ({"tool_name": "t", "type": "run_first", "default_next_tool": "u"}, "agent.tool_rules[0].branches"),
    ],
)
def test_malformed_rules_name_the_offending_field(rule: dict[str, Any], field: str) -> None:
    assert [f for f, _ in violations([rule])] == [field]


def test_contradicting_rules_are_refused_each_with_a_field_violation() -> None:
    found = violations(
        [
            {"tool_name": "send", "type": "terminal"},
            {"tool_name": "send", "type": "continue_loop"},
            {"tool_name": "check", "type": "conditional", "branches": [{"equals": "y", "next_tool": "a"}]},
            {"tool_name": "check", "type": "allowed_children", "children": ["b"]},
            {"tool_name": "stage", "type": "parent_last", "children": ["commit"]},
            {"tool_name": "commit", "type": "run_first"},
        ]
    )

    assert [field for field, _ in found] == [
        "agent.tool_rules[1]",
        "agent.tool_rules[3]",
        "agent.tool_rules[5]",
    ]
    assert "cannot both end the turn (rule 0) and continue it" in found[0][1]
    assert "already has a conditional rule (rule 2)" in found[1][1]
    assert "could never be called first" in found[2][1]


def test_a_contradiction_has_its_own_reason() -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_rules([{"tool_name": "x", "type": "terminal"}, {"tool_name": "x", "type": "continue_loop"}])

    assert refused.value.reason == "TOOL_RULES_CONTRADICT"


def test_rules_may_name_tools_the_agent_does_not_have() -> None:
    assert check_rules([{"tool_name": "not_attached_yet", "type": "required_before_exit"}])


def test_a_branch_compares_trimmed_text_and_json_scalars_by_value_and_searches_patterns() -> None:
    import re2  # type: ignore[import-untyped]

    rule = Conditional(
        (
            Branch("on_true", equals="true"),
            Branch("on_seven", equals="7"),
            Branch("on_error", pattern=re2.compile(r"(?i)\berror\b")),
        ),
        default="otherwise",
    )

    assert rule.next_tool("  true\n") == "on_true"
    assert rule.next_tool('"7"') == "on_seven"
    assert rule.next_tool("7.0") == "otherwise"
    assert rule.next_tool("An ERROR occurred") == "on_error"
    assert rule.next_tool("fine") == "otherwise"
