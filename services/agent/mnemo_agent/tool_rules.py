"""Tool rules: per-agent constraints on the model's tool calls within one turn.

- terminal: a successful call ends the turn (stop reason `tool_rule`); a failed one does not, so the
  model can fix its call.
- run_first: the first step of a turn offers only these tools and requires a call; any other call in
  that step is refused with an error the model sees.
- max_calls: at most N calls of the tool per turn; once used up the tool is no longer offered, and a
  call beyond it is refused.
- max_count_per_step: at most N calls of the tool in one step (one reply of the model); the calls beyond
  are refused, and the model may call it again in its next step.
- requires_approval: a call stops the run (`requires_approval`) until it is approved or denied.
- allowed_children: after a successful call of the tool, the next step offers only its children and
  requires a call of one of them.
- conditional: after a successful call of the tool, the next step offers only the tool its output
  selects (the first matching branch, else the default; no constraint when neither) and requires it.
- parent_last: each of the children is offered only in the step right after a successful call of the
  tool (their parent).
- required_before_exit: the turn cannot end until the tool succeeded in it. While it has not, every step
  requires a tool call; an answer without one, or a terminal tool, does not end the turn (the model is
  told why), except at the turn's step limit.
- continue_loop: a step that calls the tool never ends the turn, even when a terminal tool (or
  memory_finish_edits) succeeded in it. Every tool call continues the turn anyway unless something ends it,
  so the rule matters only next to those.

Rules are enforced by what each step offers the model (`StepPlan`), and a call the model makes anyway is
refused with an error result it can act on. Rules may name tools the agent does not have; those have no
effect until it has them, and a constraint that leaves no tool offers none (the model must answer).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import re2  # type: ignore[import-untyped]

from mnemo.llm.v1 import llm_pb2
from mnemo_core.errors import FieldViolation, InvalidArgument
from mnemo_core.validation import check_text, invalid

RULE_TYPES = (
    "terminal",
    "run_first",
    "max_calls",
    "requires_approval",
    "conditional",
    "allowed_children",
    "parent_last",
    "required_before_exit",
    "continue_loop",
    "max_count_per_step",
)
COUNTED = frozenset({"max_calls", "max_count_per_step"})
WITH_CHILDREN = frozenset({"allowed_children", "parent_last"})
MAX_RULES = 100
MAX_CHILDREN = 100
MAX_BRANCHES = 50
MAX_PATTERN_CHARS = 1000
# The part of a tool's output that conditional branches look at.
MAX_MATCHED_CHARS = 100_000
_UNLIMITED = 1 << 30


def _name(value: Any, field_name: str) -> str:
    text = value if isinstance(value, str) else ""
    return check_text(text, field_name, max_chars=200, allow_empty=False)


def _checked_rule(rule: dict[str, Any], at: str) -> dict[str, Any]:
    """One rule in its stored form, if it is well formed on its own."""
    name = _name(rule.get("tool_name", ""), f"{at}.tool_name")
    kind = rule.get("type", "")
    if kind not in RULE_TYPES:
        raise invalid(f"{at}.type", f"must be one of {', '.join(RULE_TYPES)}")
    stored: dict[str, Any] = {"tool_name": name, "type": kind}
    max_calls = int(rule.get("max_calls", 0) or 0)
    if kind in COUNTED:
        if max_calls < 1:
            raise invalid(f"{at}.max_calls", f"must be at least 1 for a {kind} rule")
        stored["max_calls"] = max_calls
    children = list(rule.get("children") or [])
    if kind in WITH_CHILDREN:
        if not children or len(children) > MAX_CHILDREN:
            raise invalid(f"{at}.children", f"a {kind} rule names 1 to {MAX_CHILDREN} tools")
        names = [_name(child, f"{at}.children[{i}]") for i, child in enumerate(children)]
        if len(set(names)) != len(names):
            raise invalid(f"{at}.children", "must not repeat a tool")
        if kind == "parent_last" and name in names:
            raise invalid(f"{at}.children", f"'{name}' cannot be its own parent: it could never be called")
        stored["children"] = names
    elif children:
        raise invalid(f"{at}.children", "only allowed_children and parent_last rules have children")
    branches = list(rule.get("branches") or [])
    default = rule.get("default_next_tool") or ""
    if kind == "conditional":
        if not branches and not default:
            raise invalid(f"{at}.branches", "a conditional rule needs branches or a default_next_tool")
        if len(branches) > MAX_BRANCHES:
            raise invalid(f"{at}.branches", f"at most {MAX_BRANCHES} branches")
        stored["branches"] = [
            _checked_branch(branch, f"{at}.branches[{i}]") for i, branch in enumerate(branches)
        ]
        stored["default_next_tool"] = _name(default, f"{at}.default_next_tool") if default else ""
    elif branches or default:
        raise invalid(f"{at}.branches", "only conditional rules have branches and a default_next_tool")
    return stored


def _checked_branch(branch: dict[str, Any], at: str) -> dict[str, str]:
    equals, pattern = branch.get("equals"), branch.get("pattern")
    if (equals is None) == (pattern is None):
        raise invalid(at, "give exactly one of equals and pattern")
    stored = {"next_tool": _name(branch.get("next_tool", ""), f"{at}.next_tool")}
    if equals is not None:
        stored["equals"] = check_text(str(equals), f"{at}.equals", max_chars=MAX_PATTERN_CHARS)
        return stored
    text = check_text(str(pattern), f"{at}.pattern", max_chars=MAX_PATTERN_CHARS, allow_empty=False)
    try:
        re2.compile(text)
    except re2.error as exc:
        raise invalid(f"{at}.pattern", f"is not a valid RE2 regular expression: {exc}") from None
    stored["pattern"] = text
    return stored


def _contradictions(rules: Sequence[dict[str, Any]], prefix: str) -> list[FieldViolation]:
    """Rules that cannot hold together, each named by the later rule's index."""
    found: list[FieldViolation] = []
    first: dict[tuple[str, str], int] = {}
    children_of: dict[str, list[int]] = defaultdict(list)
    for i, rule in enumerate(rules):
        name, kind = rule["tool_name"], rule["type"]
        first.setdefault((name, kind), i)
        if kind == "parent_last":
            for child in rule["children"]:
                children_of[child].append(i)

    def clash(i: int, description: str) -> None:
        found.append(FieldViolation(f"{prefix}[{i}]", description))

    for i, rule in enumerate(rules):
        name, kind = rule["tool_name"], rule["type"]
        if kind == "continue_loop" and (name, "terminal") in first:
            clash(i, f"'{name}' cannot both end the turn (rule {first[name, 'terminal']}) and continue it")
        if kind in ("conditional", "allowed_children"):
            for other in ("conditional", "allowed_children"):
                earlier = first.get((name, other))
                if earlier is not None and earlier < i:
                    clash(
                        i,
                        f"'{name}' already has a {other} rule (rule {earlier}) deciding which tool follows it; "
                        "keep one (an allowed_children rule takes every child in its list)",
                    )
        if kind == "run_first" and name in children_of:
            parents = ", ".join(str(j) for j in children_of[name])
            clash(
                i,
                f"'{name}' must be called first in every turn but may only follow its parent "
                f"(parent_last rule {parents}); it could never be called first",
            )
    return found


def check_rules(rules: Sequence[dict[str, Any]], prefix: str = "agent.tool_rules") -> list[dict[str, Any]]:
    """The rules in their stored form, if every one is well formed and they do not contradict each other.

    INVALID_ARGUMENT with one field violation per contradiction otherwise.
    """
    if len(rules) > MAX_RULES:
        raise invalid(prefix, f"at most {MAX_RULES} rules")
    checked = [_checked_rule(rule, f"{prefix}[{i}]") for i, rule in enumerate(rules)]
    violations = _contradictions(checked, prefix)
    if violations:
        raise InvalidArgument(
            f"the tool rules contradict each other: {violations[0].description}",
            reason="TOOL_RULES_CONTRADICT",
            violations=violations,
        )
    return checked


@dataclass(frozen=True, slots=True)
class Branch:
    """A conditional rule's branch: output equal to `equals` (or matching `pattern`) selects `next_tool`."""

    next_tool: str
    equals: str | None = None
    pattern: Any = None  # a compiled re2 pattern

    def matches(self, output: str) -> bool:
        if self.pattern is not None:
            return self.pattern.search(output[:MAX_MATCHED_CHARS]) is not None
        return self.equals is not None and self.equals.strip() in _output_values(output)


def _output_values(output: str) -> set[str]:
    """What an output equals: its trimmed text, and for a JSON scalar, its value as text."""
    text = output.strip()
    values = {text}
    if len(text) <= MAX_MATCHED_CHARS:
        try:
            value = json.loads(text)
        except ValueError:
            return values
        if isinstance(value, bool):
            values.add("true" if value else "false")
        elif isinstance(value, str | int | float):
            values.add(str(value).strip())
    return values


@dataclass(frozen=True, slots=True)
class Conditional:
    """The branches of a conditional rule, and its default."""

    branches: tuple[Branch, ...]
    default: str

    def next_tool(self, output: str) -> str:
        """The tool that follows this output ("" when nothing constrains the next step)."""
        return next((branch.next_tool for branch in self.branches if branch.matches(output)), self.default)


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """A tool call of the previous step, as the rules see it: the tool, whether it succeeded, its output."""

    name: str
    succeeded: bool
    output: str = ""


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What one step offers the model, and why each tool it does not offer is withheld."""

    offered: list[llm_pb2.ToolSchema]
    choice: llm_pb2.ToolChoice.ValueType
    withheld: dict[str, str]
    per_step: dict[str, int]
    per_turn: dict[str, int]

    def refusal(self, name: str, *, turn_calls: Counter[str], step_calls: Counter[str]) -> str | None:
        """Why a call the model made breaks a rule, or None when it may run. Counts are of the calls before
        this one, in the turn and in this step."""
        if name in self.withheld:
            return self.withheld[name]
        limit = self.per_turn.get(name)
        if limit is not None and turn_calls[name] >= limit:
            return _max_calls_reached(name, limit)
        limit = self.per_step.get(name)
        if limit is not None and step_calls[name] >= limit:
            return (
                f"'{name}' may be called at most {limit} time{'s' if limit != 1 else ''} in one step; "
                "call it again in your next step"
            )
        return None


def _max_calls_reached(name: str, limit: int) -> str:
    return f"'{name}' may be called at most {limit} times per turn, and that limit is reached"


def _either(names: Iterable[str]) -> str:
    listed = sorted(names)
    return listed[0] if len(listed) == 1 else f"{', '.join(listed[:-1])} or {listed[-1]}"


@dataclass(frozen=True)
class ToolRules:
    """An agent's tool rules, ready to apply."""

    terminal: frozenset[str] = frozenset()
    run_first: tuple[str, ...] = ()
    max_calls: dict[str, int] = field(default_factory=dict)
    approval: frozenset[str] = frozenset()
    children: dict[str, frozenset[str]] = field(default_factory=dict)
    conditionals: dict[str, Conditional] = field(default_factory=dict)
    parents: dict[str, frozenset[str]] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    continue_loop: frozenset[str] = frozenset()
    max_per_step: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: Iterable[dict[str, Any]]) -> ToolRules:
        """The rules of a stored rule list."""
        by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for rule in rules:
            by_type[rule["type"]].append(rule)

        def names(kind: str) -> tuple[str, ...]:
            return tuple(dict.fromkeys(rule["tool_name"] for rule in by_type[kind]))

        def least(kind: str) -> dict[str, int]:
            limits: dict[str, int] = {}
            for rule in by_type[kind]:
                name = rule["tool_name"]
                limits[name] = min(limits.get(name, rule["max_calls"]), rule["max_calls"])
            return limits

        parents: dict[str, set[str]] = defaultdict(set)
        for rule in by_type["parent_last"]:
            for child in rule["children"]:
                parents[child].add(rule["tool_name"])
        return cls(
            terminal=frozenset(names("terminal")),
            run_first=names("run_first"),
            max_calls=least("max_calls"),
            approval=frozenset(names("requires_approval")),
            children={rule["tool_name"]: frozenset(rule["children"]) for rule in by_type["allowed_children"]},
            conditionals={
                rule["tool_name"]: Conditional(
                    tuple(
                        Branch(
                            branch["next_tool"],
                            equals=branch.get("equals"),
                            pattern=re2.compile(branch["pattern"]) if "pattern" in branch else None,
                        )
                        for branch in rule.get("branches", [])
                    ),
                    rule.get("default_next_tool", ""),
                )
                for rule in by_type["conditional"]
            },
            parents={child: frozenset(names) for child, names in parents.items()},
            required=names("required_before_exit"),
            continue_loop=frozenset(names("continue_loop")),
            max_per_step=least("max_count_per_step"),
        )

    def plan(
        self,
        schemas: Sequence[llm_pb2.ToolSchema],
        *,
        first_step: bool,
        calls: Counter[str],
        last: Sequence[ToolOutcome],
        succeeded: Collection[str],
    ) -> StepPlan:
        """The tools to offer on a step, whether the model must call one, and why the others are withheld.

        `calls` counts the turn's calls so far, `last` holds the previous step's calls, `succeeded` the tools
        that succeeded in the turn.
        """
        available = {schema.name for schema in schemas}
        withheld: dict[str, str] = {}
        choice = llm_pb2.TOOL_CHOICE_UNSPECIFIED
        for name, limit in self.max_calls.items():
            if calls[name] >= limit:
                withheld[name] = _max_calls_reached(name, limit)
        first = [name for name in self.run_first if name in available and name not in withheld]
        if first_step and first:
            for name in available - set(first):
                withheld.setdefault(name, f"a rule requires calling {_either(first)} first in every turn")
            choice = llm_pb2.TOOL_CHOICE_REQUIRED
        else:
            choice = self._after(last, available, withheld, succeeded)
        offered = [schema for schema in schemas if schema.name not in withheld]
        return StepPlan(
            offered,
            choice if offered else llm_pb2.TOOL_CHOICE_UNSPECIFIED,
            withheld,
            self.max_per_step,
            self.max_calls,
        )

    def _after(
        self,
        last: Sequence[ToolOutcome],
        available: set[str],
        withheld: dict[str, str],
        succeeded: Collection[str],
    ) -> llm_pb2.ToolChoice.ValueType:
        """Withholds what the previous step's calls rule out; returns whether a call is required."""
        done = [outcome for outcome in last if outcome.succeeded]
        called = {outcome.name for outcome in done}
        for child, parents in self.parents.items():
            if child in available and not parents & called:
                withheld.setdefault(child, f"'{child}' may only be called right after {_either(parents)}")
        allowed: dict[str, set[str]] = defaultdict(set)  # next tool -> the tools whose rule allows it
        for outcome in done:
            if outcome.name in self.children:
                for child in self.children[outcome.name]:
                    allowed[child].add(outcome.name)
            conditional = self.conditionals.get(outcome.name)
            next_tool = conditional.next_tool(outcome.output) if conditional is not None else ""
            if next_tool:
                allowed[next_tool].add(outcome.name)
        if allowed:
            rulers = {name for names in allowed.values() for name in names}
            for name in available - set(allowed):
                withheld.setdefault(
                    name, f"after {_either(rulers)} a rule allows only {_either(allowed)} to be called next"
                )
            return llm_pb2.TOOL_CHOICE_REQUIRED
        if self.missing_before_exit(succeeded, available):
            return llm_pb2.TOOL_CHOICE_REQUIRED
        return llm_pb2.TOOL_CHOICE_UNSPECIFIED

    def missing_before_exit(self, succeeded: Collection[str], available: Collection[str]) -> list[str]:
        """The tools the turn still has to call successfully before it may end (of those the agent has)."""
        return [name for name in self.required if name in available and name not in succeeded]

    def needs_approval(self, name: str) -> bool:
        """Whether a call of `name` must wait for approval."""
        return name in self.approval

    def ends_turn(self, name: str) -> bool:
        """Whether a successful call of `name` ends the turn."""
        return name in self.terminal

    def continues(self, name: str) -> bool:
        """Whether a call of `name` keeps the turn going whatever else its step did."""
        return name in self.continue_loop
