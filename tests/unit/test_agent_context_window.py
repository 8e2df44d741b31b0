"""Where the context window may be cut, token estimates, clipping, and tool rules."""

from __future__ import annotations

from collections import Counter

import pytest

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_agent.context_window import (
    can_cut_before,
    chat_tokens,
    choose_cut,
    clip,
    clip_middle,
    is_front_summary,
    pressure_noted,
    transcript,
)
from mnemo_agent.tool_rules import StepPlan, ToolRules, check_rules
from mnemo_core.errors import InvalidArgument


def user(text: str, run: str = "r1", step: int = 0) -> message_pb2.Message:
    return message_pb2.Message(run_id=run, step=step, user=message_pb2.UserContent(text=text))


def answer(text: str, run: str = "r1", step: int = 0) -> message_pb2.Message:
    return message_pb2.Message(run_id=run, step=step, assistant=message_pb2.AssistantContent(text=text))


def call(call_id: str, run: str = "r1", step: int = 0) -> message_pb2.Message:
    return message_pb2.Message(
        run_id=run,
        step=step,
        tool_call=message_pb2.ToolCallContent(
            tool_call=message_pb2.ToolCall(id=call_id, name="t", arguments="{}")
        ),
    )


def ret(call_id: str, run: str = "r1", step: int = 0) -> message_pb2.Message:
    return message_pb2.Message(
        run_id=run,
        step=step,
        tool_return=message_pb2.ToolReturnContent(tool_call_id=call_id, name="t", content="ok"),
    )


def exchange(run: str, text: str = "x" * 40) -> list[message_pb2.Message]:
    """One turn: the user, a reply that calls two tools, their returns, then the answer."""
    return [
        user(text, run),
        call(f"{run}-a", run),
        call(f"{run}-b", run),
        ret(f"{run}-a", run),
        ret(f"{run}-b", run),
        answer(text, run, 1),
    ]


def test_the_window_is_never_cut_before_a_tool_return_or_inside_one_reply() -> None:
    body = exchange("r1")

    assert [can_cut_before(body, i) for i in range(len(body))] == [False, True, False, False, False, True]


def test_cut_prefers_a_user_message_past_about_thirty_percent() -> None:
    body = exchange("r1") + exchange("r2") + exchange("r3")

    cut = choose_cut(body)

    assert cut == 6
    assert body[cut].WhichOneof("content") == "user"


def test_cut_falls_back_to_a_safe_boundary_when_no_user_message_is_left() -> None:
    body = [
        user("q" * 10),
        call("a"),
        ret("a"),
        answer("y" * 400, step=1),
        call("b", step=2),
        ret("b", step=2),
    ]

    cut = choose_cut(body)

    assert cut is not None
    assert can_cut_before(body, cut)
    assert body[cut].WhichOneof("content") != "tool_return"


def test_nothing_can_be_cut_from_a_single_exchange_without_safe_boundary() -> None:
    assert choose_cut([user("only")]) is None
    assert choose_cut([call("a"), ret("a")]) is None


@pytest.mark.parametrize("size", range(2, 30))
def test_every_cut_keeps_each_call_with_its_returns(size: int) -> None:
    body = [m for i in range(size) for m in exchange(f"r{i}", "z" * (i * 7 % 50))]

    cut = choose_cut(body)

    assert cut is not None
    kept = body[cut:]
    called = {m.tool_call.tool_call.id for m in kept if m.HasField("tool_call")}
    answered = {m.tool_return.tool_call_id for m in kept if m.HasField("tool_return")}
    assert called == answered


def test_token_estimate_counts_messages_tool_calls_and_schemas() -> None:
    request = llm_pb2.ChatRequest(
        messages=[
            llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content="s" * 400),
            llm_pb2.ChatMessage(
                role=llm_pb2.CHAT_ROLE_ASSISTANT,
                tool_calls=[message_pb2.ToolCall(id="c", name="n", arguments="a" * 398)],
            ),
        ],
        tools=[llm_pb2.ToolSchema(name="n", description="d" * 399, parameters_json="")],
    )

    assert chat_tokens(request) == 1200 // 4 + 2 * 4


def test_clipping_marks_what_it_cut_and_keeps_the_latest_part() -> None:
    assert clip("short", 10) == "short"
    assert clip("x" * 100, 20).endswith("[...]")
    assert len(clip("x" * 100, 20)) == 20
    text = "start " + "m" * 1000 + " the latest words"
    clipped = clip_middle(text, 200)
    assert len(clipped) <= 200
    assert clipped.startswith("start ")
    assert clipped.endswith("the latest words")


def test_summary_detection_pressure_note_and_transcript() -> None:
    summary = message_pb2.Message(
        event=message_pb2.EventContent(type=message_pb2.EVENT_TYPE_SUMMARY, text="s")
    )
    pressure = message_pb2.Message(
        event=message_pb2.EventContent(type=message_pb2.EVENT_TYPE_MEMORY_PRESSURE)
    )

    assert is_front_summary(summary)
    assert not is_front_summary(pressure)
    assert pressure_noted([user("a"), pressure])
    assert not pressure_noted([summary, user("a")])
    assert transcript([user("hi"), call("c"), ret("c"), answer("bye")]) == (
        "user: hi\nassistant called t({})\nt returned: ok\nassistant: bye"
    )


def schema(name: str) -> llm_pb2.ToolSchema:
    return llm_pb2.ToolSchema(name=name)


def plan(
    rules: ToolRules, schemas: list[llm_pb2.ToolSchema], *, first_step: bool, calls: Counter[str]
) -> StepPlan:
    return rules.plan(schemas, first_step=first_step, calls=calls, last=[], succeeded=set())


def test_run_first_tools_alone_are_offered_and_required_on_the_first_step() -> None:
    rules = ToolRules.of(check_rules([{"tool_name": "plan", "type": "run_first"}]))
    schemas = [schema("plan"), schema("search")]

    first = plan(rules, schemas, first_step=True, calls=Counter())
    later = plan(rules, schemas, first_step=False, calls=Counter())

    assert [s.name for s in first.offered] == ["plan"]
    assert first.choice == llm_pb2.TOOL_CHOICE_REQUIRED
    assert [s.name for s in later.offered] == ["plan", "search"]
    assert later.choice == llm_pb2.TOOL_CHOICE_UNSPECIFIED
    assert first.refusal("search", turn_calls=Counter(), step_calls=Counter()) is not None
    assert later.refusal("search", turn_calls=Counter(), step_calls=Counter()) is None


def test_max_calls_removes_the_tool_once_used_up_and_refuses_more() -> None:
    rules = ToolRules.of(check_rules([{"tool_name": "search", "type": "max_calls", "max_calls": 2}]))
    used = Counter({"search": 2})

    step = plan(rules, [schema("search"), schema("other")], first_step=False, calls=used)
    fresh = plan(rules, [schema("search"), schema("other")], first_step=False, calls=Counter())

    assert [s.name for s in step.offered] == ["other"]
    assert fresh.refusal("search", turn_calls=Counter({"search": 1}), step_calls=Counter()) is None
    assert "at most 2 times" in str(fresh.refusal("search", turn_calls=used, step_calls=Counter()))


def test_terminal_and_approval_rules() -> None:
    rules = ToolRules.of(
        check_rules(
            [{"tool_name": "send", "type": "terminal"}, {"tool_name": "pay", "type": "requires_approval"}]
        )
    )

    assert rules.ends_turn("send")
    assert not rules.ends_turn("pay")
    assert rules.needs_approval("pay")
    assert not rules.needs_approval("send")


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"tool_name": "", "type": "terminal"}, "agent.tool_rules[0].tool_name"),
        ({"tool_name": "t", "type": "sometimes"}, "agent.tool_rules[0].type"),
        ({"tool_name": "t", "type": "max_calls", "max_calls": 0}, "agent.tool_rules[0].max_calls"),
    ],
)
def test_malformed_rules_name_the_offending_field(rule: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_rules([rule])

    assert refused.value.violations[0].field == field


def with_ids(messages: list[message_pb2.Message], start: int) -> list[message_pb2.Message]:
    for i, message in enumerate(messages):
        message.id = f"message-{start + i}"
    return messages


def test_incremental_chat_conversion_matches_converting_everything() -> None:
    from mnemo_agent.conversation import ChatHistory, to_chat_messages

    chat = ChatHistory()
    history: list[message_pb2.Message] = []
    batches = [
        [user("hi", "r1"), answer("hello", "r1")],
        [user("save", "r2"), call("a", "r2"), ret("a", "r2")],
        [answer("saved", "r2", 1)],
        # A batch stopped for approval: the call is open until the next batch answers it.
        [user("pay", "r3"), call("p", "r3")],
        [ret("p", "r3", 1)],
        [answer("paid", "r3", 2)],
    ]
    for batch in batches:
        history += with_ids(batch, len(history))
        assert chat.of(history) == to_chat_messages(history)
    # The front moved (compaction): everything is converted again.
    assert chat.of(history[3:]) == to_chat_messages(history[3:])
