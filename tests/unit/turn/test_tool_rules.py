"""Tool rules in the step loop, one behaviour each: what each step offers, what is refused, when the turn ends.

The loop runs against in-memory memory, tools and model (tests/unit/turn/fakes.py); the rules are the
agent's stored rules, checked as an agent's create would check them.
"""

from __future__ import annotations

from typing import Any

import pytest

from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_agent.store import Agent
from mnemo_agent.tool_rules import ToolRules, check_rules
from mnemo_agent.turn import TurnRequest, TurnResult, Turns
from mnemo_agent.turn.recorders import EphemeralRecorder
from mnemo_agent.turn.state import AgentConfig, TurnState
from mnemo_core.actor import Actor
from tests.unit.turn.fakes import Mesh, ToolFailed, calls, reply

FINISH_EDITS = "tool-builtin-memory_finish_edits"


def user(text: str) -> message_pb2.Message:
    return message_pb2.Message(user=message_pb2.UserContent(text=text))


async def send(turns: Turns, actor: Actor, agent: Agent, text: str = "hi", **fields: Any) -> TurnResult:
    return await turns.send(actor, TurnRequest(agent.id, [user(text)], **fields))


def offered(request: llm_pb2.ChatRequest) -> list[str]:
    return [tool.name for tool in request.tools]


def steps(fakes: Mesh) -> list[tuple[list[str], llm_pb2.ToolChoice.ValueType]]:
    """What each model call was offered, and whether it had to call a tool."""
    return [(offered(request), request.tool_choice) for request in fakes.model.requests]


def results(result: TurnResult) -> list[str]:
    return [m.tool_return.content for m in result.messages if m.HasField("tool_return")]


def answering(text: str) -> Any:
    async def tool(arguments: dict[str, Any]) -> str:
        return text

    return tool


async def failing(arguments: dict[str, Any]) -> str:
    raise ToolFailed("it broke")


async def agent_with(fakes: Mesh, actor: Actor, tools: dict[str, Any], rules: list[dict[str, Any]]) -> Agent:
    ids = [fakes.tools.add(name, function) for name, function in tools.items()]
    return await fakes.agent(actor.org_id, tool_ids=ids, tool_rules=check_rules(rules))


REQUIRED, ANY = llm_pb2.TOOL_CHOICE_REQUIRED, llm_pb2.TOOL_CHOICE_UNSPECIFIED


# ----- conditional -----


def conditional(default: str = "") -> dict[str, Any]:
    """check's rule: output "yes" leads to approve, output starting "error" to retry, else `default`."""
    return {
        "tool_name": "check",
        "type": "conditional",
        "branches": [{"equals": "yes", "next_tool": "approve"}, {"pattern": "^error", "next_tool": "retry"}],
        "default_next_tool": default,
    }


async def test_a_conditional_rule_offers_only_the_tool_the_output_selects_then_frees_the_choice(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await agent_with(
        fakes,
        actor,
        {"check": answering(' "yes" '), "approve": answering("approved"), "retry": answering("retried")},
        [conditional()],
    )
    fakes.model.script(calls(("check", {}, "c1")), calls(("approve", {}, "c2")), reply("Approved."))

    result = await send(turns, actor, agent)

    assert steps(fakes) == [
        (["check", "approve", "retry"], ANY),
        (["approve"], REQUIRED),
        (["check", "approve", "retry"], ANY),
    ]
    assert results(result) == [' "yes" ', "approved"]


@pytest.mark.parametrize(
    ("output", "default", "next_step"),
    [
        ("error: disk full", "report", (["retry"], REQUIRED)),
        ("all good", "report", (["report"], REQUIRED)),
        ("all good", "", (["check", "approve", "retry", "report"], ANY)),
    ],
)
async def test_a_conditional_rule_matches_patterns_then_falls_back_to_its_default_or_to_no_constraint(
    fakes: Mesh, actor: Actor, output: str, default: str, next_step: tuple[list[str], int]
) -> None:
    turns = fakes.turns()
    tools = {name: answering("ok") for name in ("approve", "retry", "report")}
    agent = await agent_with(fakes, actor, {"check": answering(output), **tools}, [conditional(default)])
    fakes.model.script(calls(("check", {}, "c1")), reply("Done."))

    await send(turns, actor, agent)

    assert steps(fakes)[1] == next_step


# ----- allowed children -----


async def test_allowed_children_constrain_the_next_step_and_a_call_outside_them_is_refused(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await agent_with(
        fakes,
        actor,
        {"search": answering("3 hits"), "summarize": answering("summary"), "email": answering("sent")},
        [{"tool_name": "search", "type": "allowed_children", "children": ["summarize"]}],
    )
    fakes.model.script(
        calls(("search", {}, "c1")),
        calls(("email", {}, "c2"), ("summarize", {}, "c3")),
        reply("Done."),
    )

    result = await send(turns, actor, agent)

    assert steps(fakes)[1] == (["summarize"], REQUIRED)
    assert results(result) == [
        "3 hits",
        "Error: after search a rule allows only summarize to be called next",
        "summary",
    ]
    assert fakes.tools.ran("email") == []
    assert steps(fakes)[2] == (["search", "summarize", "email"], ANY)


async def test_a_failed_parent_leaves_the_next_step_free_so_the_model_can_fix_its_call(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await agent_with(
        fakes,
        actor,
        {"search": failing, "summarize": answering("summary")},
        [{"tool_name": "search", "type": "allowed_children", "children": ["summarize"]}],
    )
    fakes.model.script(calls(("search", {}, "c1")), reply("Search is broken."))

    await send(turns, actor, agent)

    assert steps(fakes)[1] == (["search", "summarize"], ANY)


# ----- parent last -----


async def test_a_parent_last_child_is_offered_only_right_after_its_parent(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await agent_with(
        fakes,
        actor,
        {"stage": answering("staged"), "commit": answering("committed"), "status": answering("clean")},
        [{"tool_name": "stage", "type": "parent_last", "children": ["commit"]}],
    )
    fakes.model.script(
        calls(("commit", {}, "c1")),
        calls(("stage", {}, "c2")),
        calls(("commit", {}, "c3")),
        reply("Committed."),
    )

    result = await send(turns, actor, agent)

    assert [names for names, _ in steps(fakes)] == [
        ["stage", "status"],
        ["stage", "status"],
        ["stage", "commit", "status"],
        ["stage", "status"],
    ]
    assert results(result) == [
        "Error: 'commit' may only be called right after stage",
        "staged",
        "committed",
    ]


# ----- required before exit -----


async def test_the_turn_cannot_end_before_a_required_tool_succeeded_and_the_model_is_told(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await agent_with(
        fakes,
        actor,
        {"save": answering("saved"), "lookup": answering("found")},
        [{"tool_name": "save", "type": "required_before_exit"}],
    )
    fakes.model.script(
        reply("Bye."),
        calls(("lookup", {}, "c1")),
        calls(("save", {}, "c2")),
        reply("Saved, bye."),
    )

    result = await send(turns, actor, agent)

    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN
    assert [choice for _, choice in steps(fakes)] == [REQUIRED, REQUIRED, REQUIRED, ANY]
    second = fakes.model.requests[1].messages
    assert second[-1].content == (
        "[System note] You cannot end your turn yet: a rule requires calling save first. Call it now."
    )
    notes = [m for m in fakes.memory.histories[agent.id] if m.HasField("event")]
    assert [n.event.type for n in notes] == [message_pb2.EVENT_TYPE_TOOL_RULE]
    assert [m.assistant.text for m in result.messages if m.HasField("assistant")] == ["Bye.", "Saved, bye."]


async def test_a_terminal_tool_does_not_end_the_turn_while_a_required_tool_is_missing(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await agent_with(
        fakes,
        actor,
        {"finish": answering("finished"), "save": answering("saved")},
        [{"tool_name": "finish", "type": "terminal"}, {"tool_name": "save", "type": "required_before_exit"}],
    )
    fakes.model.script(calls(("finish", {}, "c1")), calls(("save", {}, "c2")), calls(("finish", {}, "c3")))

    result = await send(turns, actor, agent)

    assert result.stop_reason == turn_pb2.STOP_REASON_TOOL_RULE
    assert len(fakes.model.requests) == 3


async def test_only_the_step_limit_ends_a_turn_whose_required_tool_never_succeeds(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await agent_with(
        fakes, actor, {"save": failing}, [{"tool_name": "save", "type": "required_before_exit"}]
    )
    fakes.model.script(reply("Bye."), calls(("save", {}, "c1")), reply("It failed, bye."))

    result = await send(turns, actor, agent, max_steps=3)

    assert result.stop_reason == turn_pb2.STOP_REASON_MAX_STEPS
    assert len(fakes.model.requests) == 3


async def test_a_required_tool_the_agent_does_not_have_constrains_nothing(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await agent_with(
        fakes, actor, {"lookup": answering("x")}, [{"tool_name": "save", "type": "required_before_exit"}]
    )
    fakes.model.script(reply("Bye."))

    result = await send(turns, actor, agent)

    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN
    assert steps(fakes) == [(["lookup"], ANY)]


# ----- continue loop -----


async def test_a_continue_loop_tool_keeps_the_turn_going_after_a_terminal_tool_in_the_same_step(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await agent_with(
        fakes,
        actor,
        {"finish": answering("finished"), "log": answering("logged")},
        [{"tool_name": "finish", "type": "terminal"}, {"tool_name": "log", "type": "continue_loop"}],
    )
    fakes.model.script(calls(("finish", {}, "c1"), ("log", {}, "c2")), reply("All done."))

    result = await send(turns, actor, agent)

    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN
    assert len(fakes.model.requests) == 2


# ----- max count per step -----


async def test_calls_beyond_the_per_step_count_are_refused_and_allowed_again_next_step(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await agent_with(
        fakes,
        actor,
        {"search": answering("hit")},
        [{"tool_name": "search", "type": "max_count_per_step", "max_calls": 2}],
    )
    fakes.model.script(
        calls(("search", {}, "c1"), ("search", {}, "c2"), ("search", {}, "c3")),
        calls(("search", {}, "c4")),
        reply("Enough."),
    )

    result = await send(turns, actor, agent)

    assert results(result) == [
        "hit",
        "hit",
        "Error: 'search' may be called at most 2 times in one step; call it again in your next step",
        "hit",
    ]
    assert len(fakes.tools.ran("search")) == 3


# ----- memory_finish_edits -----


async def test_memory_finish_edits_ends_the_turn_unless_a_continue_loop_tool_was_called_with_it(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id, tool_ids=[FINISH_EDITS], memory_tool_set="lines")
    fakes.model.script(calls(("memory_finish_edits", {}, "c1")))

    result = await send(turns, actor, agent)

    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN
    assert results(result) == ["Memory edits finished."]
    assert fakes.memory_tools.runs == [result.run_id]


# ----- rules after a resume -----


def test_a_resumed_turn_knows_its_last_step_and_what_succeeded() -> None:
    def stored(step: int, **content: Any) -> message_pb2.Message:
        return message_pb2.Message(run_id="run-1", step=step, **content)

    def result(name: str, call_id: str, status: int, text: str) -> message_pb2.ToolReturnContent:
        return message_pb2.ToolReturnContent(tool_call_id=call_id, name=name, status=status, content=text)

    ok, error = message_pb2.TOOL_RETURN_STATUS_SUCCESS, message_pb2.TOOL_RETURN_STATUS_ERROR
    call = message_pb2.ToolCallContent
    messages = [
        stored(0, user=message_pb2.UserContent(text="hi")),
        stored(0, tool_call=call(tool_call=message_pb2.ToolCall(id="a", name="save"))),
        stored(0, tool_return=result("save", "a", ok, "saved")),
        stored(1, tool_call=call(tool_call=message_pb2.ToolCall(id="b", name="check"))),
        stored(1, tool_return=result("check", "b", ok, "yes")),
        stored(1, tool_call=call(tool_call=message_pb2.ToolCall(id="c", name="lookup"))),
        stored(1, tool_return=result("lookup", "c", error, "Error: no")),
    ]
    config = AgentConfig(
        id="agent-1",
        model="m",
        system="",
        agent_type="standard",
        context_window=0,
        summarizer_model="",
        llm_options={},
        rules=ToolRules(),
    )
    turn = TurnState(
        agent=config, run_id="run-1", max_steps=10, recorder=EphemeralRecorder(), window_tokens=1000
    )

    turn.restore(messages)

    assert turn.succeeded == {"save", "check"}
    assert [(o.name, o.succeeded, o.output) for o in turn.last_step] == [
        ("check", True, "yes"),
        ("lookup", False, "Error: no"),
    ]
