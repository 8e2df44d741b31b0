"""Tool rules: per-agent constraints on the model's tool calls within one turn.

- terminal: a successful call ends the turn (stop reason `tool_rule`); a failed one does not, so the
  model can fix its call.
- run_first: the first step of a turn offers only these tools and requires a call; any other call in
  that step is refused with an error the model sees.
- max_calls: at most N calls of the tool per turn; once used up the tool is no longer offered, and a
  call beyond it is refused.
- requires_approval: a call stops the run (`requires_approval`) until it is approved or denied.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mnemo.llm.v1 import llm_pb2
from mnemo_core.validation import check_text, invalid

RULE_TYPES = ("terminal", "run_first", "max_calls", "requires_approval")
MAX_RULES = 100


def check_rules(rules: Sequence[dict[str, Any]], prefix: str = "agent.tool_rules") -> list[dict[str, Any]]:
    """The rules in their stored form, if every one is well formed."""
    if len(rules) > MAX_RULES:
        raise invalid(prefix, f"at most {MAX_RULES} rules")
    checked = []
    for i, rule in enumerate(rules):
        name = rule.get("tool_name", "")
        check_text(name, f"{prefix}[{i}].tool_name", max_chars=200, allow_empty=False)
        kind = rule.get("type", "")
        if kind not in RULE_TYPES:
            raise invalid(f"{prefix}[{i}].type", f"must be one of {', '.join(RULE_TYPES)}")
        max_calls = int(rule.get("max_calls", 0) or 0)
        if kind == "max_calls" and max_calls < 1:
            raise invalid(f"{prefix}[{i}].max_calls", "must be at least 1 for a max_calls rule")
        stored: dict[str, Any] = {"tool_name": name, "type": kind}
        if kind == "max_calls":
            stored["max_calls"] = max_calls
        checked.append(stored)
    return checked


@dataclass(frozen=True)
class ToolRules:
    """An agent's tool rules, ready to apply."""

    terminal: frozenset[str] = frozenset()
    run_first: tuple[str, ...] = ()
    max_calls: dict[str, int] = field(default_factory=dict)
    approval: frozenset[str] = frozenset()

    @classmethod
    def of(cls, rules: Iterable[dict[str, Any]]) -> ToolRules:
        """The rules of a stored rule list."""
        terminal, first, approval = set(), [], set()
        max_calls: dict[str, int] = {}
        for rule in rules:
            name, kind = rule["tool_name"], rule["type"]
            if kind == "terminal":
                terminal.add(name)
            elif kind == "run_first" and name not in first:
                first.append(name)
            elif kind == "max_calls":
                max_calls[name] = min(max_calls.get(name, rule["max_calls"]), rule["max_calls"])
            elif kind == "requires_approval":
                approval.add(name)
        return cls(frozenset(terminal), tuple(first), max_calls, frozenset(approval))

    def offered(
        self, schemas: Sequence[llm_pb2.ToolSchema], *, first_step: bool, calls: Counter[str]
    ) -> tuple[list[llm_pb2.ToolSchema], llm_pb2.ToolChoice.ValueType]:
        """The tools to offer on a step, and whether the model must call one."""
        if first_step and self.run_first:
            wanted = [s for s in schemas if s.name in self.run_first]
            if wanted:
                return wanted, llm_pb2.TOOL_CHOICE_REQUIRED
        allowed = [s for s in schemas if calls[s.name] < self.max_calls.get(s.name, 1 << 30)]
        return allowed, llm_pb2.TOOL_CHOICE_UNSPECIFIED

    def refusal(self, name: str, *, first_step: bool, calls: Counter[str]) -> str | None:
        """Why a call breaks a rule (counting it), or None when it may run."""
        if first_step and self.run_first and name not in self.run_first:
            return f"a rule requires calling {' or '.join(self.run_first)} first in every turn"
        limit = self.max_calls.get(name)
        if limit is not None and calls[name] >= limit:
            return f"'{name}' may be called at most {limit} times per turn, and that limit is reached"
        return None

    def needs_approval(self, name: str) -> bool:
        """Whether a call of `name` must wait for approval."""
        return name in self.approval

    def ends_turn(self, name: str) -> bool:
        """Whether a successful call of `name` ends the turn."""
        return name in self.terminal
