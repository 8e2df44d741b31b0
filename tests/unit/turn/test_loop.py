"""The step loop, specified against in-memory memory, tools and model: rules, steps, tools, the window."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_agent.runs import COMPLETED, FAILED
from mnemo_agent.store import Agent
from mnemo_agent.tool_rules import ToolRules
from mnemo_agent.turn import (
    AgentConfig,
    MessagesStored,
    RunStarted,
    TokenDelta,
    TurnRequest,
    TurnResult,
    Turns,
)
from mnemo_core.actor import Actor
from mnemo_core.errors import FailedPrecondition, Unavailable
from mnemo_core.tool_calls import TRUNCATION_MARKER
from tests.unit.turn.fakes import SUMMARIZER_MODEL, Mesh, ToolFailed, calls, overflow, reply

APPEND = "tool-builtin-core_memory_append"


def user(text: str) -> message_pb2.Message:
    return message_pb2.Message(user=message_pb2.UserContent(text=text))


def answer(text: str) -> message_pb2.Message:
    return message_pb2.Message(assistant=message_pb2.AssistantContent(text=text))


async def send(turns: Turns, actor: Actor, agent: Agent, text: str = "hi", **fields: Any) -> TurnResult:
    return await turns.send(actor, TurnRequest(agent.id, [user(text)], **fields))


def kinds(messages: list[message_pb2.Message]) -> list[str | None]:
    return [m.WhichOneof("content") for m in messages]


def returns(result: TurnResult) -> list[message_pb2.ToolReturnContent]:
    return [m.tool_return for m in result.messages if m.HasField("tool_return")]


def offered(request: llm_pb2.ChatRequest) -> list[str]:
    return [tool.name for tool in request.tools]


async def echo(arguments: dict[str, Any]) -> str:
    return f"echo {arguments.get('q', '')}"


async def failing(arguments: dict[str, Any]) -> str:
    raise ToolFailed("it broke")


# ----- steps -----


async def test_an_answer_without_tool_calls_ends_the_turn_and_stores_the_step_once(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    fakes.model.script(reply("Hello, Ada."))

    result = await send(turns, actor, agent, "I am Ada")

    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN
    assert [m.assistant.text for m in result.messages] == ["Hello, Ada."]
    history = fakes.memory.histories[agent.id]
    assert kinds(history) == ["user", "assistant"]
    assert {(m.run_id, m.step) for m in history} == {(result.run_id, 0)}
    assert result.usage == turn_pb2.Usage(
        prompt_tokens=10, completion_tokens=5, total_tokens=15, step_count=1
    )
    run = await fakes.runs.get(actor.org_id, result.run_id)
    assert run.status == COMPLETED
    assert run.message_ids == [m.id for m in result.messages]
    sent = fakes.model.requests[0]
    assert sent.messages[0].role == llm_pb2.CHAT_ROLE_SYSTEM
    assert [m.content for m in sent.messages[1:]] == ["I am Ada"]


async def test_the_turn_stops_at_max_steps(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    tool = fakes.tools.add("echo", echo)
    agent = await fakes.agent(actor.org_id, tool_ids=[tool], max_steps=5)
    fakes.model.script(*(calls(("echo", {"q": str(i)}, f"c{i}")) for i in range(3)))

    result = await send(turns, actor, agent, max_steps=2)

    assert result.stop_reason == turn_pb2.STOP_REASON_MAX_STEPS
    assert len(fakes.model.requests) == 2
    assert result.usage.step_count == 2
    assert kinds(result.messages) == ["tool_call", "tool_return", "tool_call", "tool_return"]


async def test_a_provider_failure_fails_the_turn_and_its_run_and_stores_nothing(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    fakes.model.script(Unavailable("the provider is down", reason="PROVIDER_UNAVAILABLE"))

    with pytest.raises(Unavailable) as failed:
        await send(turns, actor, agent)

    assert failed.value.reason == "PROVIDER_UNAVAILABLE"

    assert fakes.memory.histories[agent.id] == []
    [run] = (await fakes.runs.list(actor.org_id, agent_id=agent.id))[0]
    assert (run.status, run.error) == (FAILED, "the provider is down")


# ----- tools -----


async def test_a_tool_service_that_goes_away_mid_step_fails_the_turn_as_unavailable_not_internal(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()

    async def gone(arguments: dict[str, Any]) -> str:
        raise Unavailable("Stream removed (Connection reset by peer)", reason="SERVICE_UNAVAILABLE")

    agent = await fakes.agent(actor.org_id, tool_ids=[fakes.tools.add("lookup", gone), APPEND])
    fakes.model.script(
        calls(
            ("lookup", {"q": "x"}, "call-1"), ("core_memory_append", {"label": "human", "content": "y"}, "c2")
        )
    )

    with pytest.raises(Unavailable) as failed:
        await send(turns, actor, agent)

    assert failed.value.reason == "SERVICE_UNAVAILABLE"


async def test_tool_calls_of_one_step_run_together_and_their_results_keep_the_call_order(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    all_started = asyncio.Barrier(3)

    async def together(arguments: dict[str, Any]) -> str:
        # Returns only once all three calls run at the same time.
        async with asyncio.timeout(5):
            await all_started.wait()
        if arguments["q"] == "fail":
            raise ToolFailed("boom")
        return f"news for {arguments['q']}"

    tools = [fakes.tools.add("weather", together), fakes.tools.add("news", together)]
    agent = await fakes.agent(actor.org_id, tool_ids=tools)
    fakes.model.script(
        calls(
            ("weather", {"q": "Paris"}, "c1"), ("news", {"q": "fail"}, "c2"), ("weather", {"q": "Rome"}, "c3")
        ),
        reply("Here is everything."),
    )

    result = await send(turns, actor, agent, "news and weather")

    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN
    assert [(r.tool_call_id, r.status, r.content) for r in returns(result)] == [
        ("c1", message_pb2.TOOL_RETURN_STATUS_SUCCESS, "news for Paris"),
        ("c2", message_pb2.TOOL_RETURN_STATUS_ERROR, "boom"),
        ("c3", message_pb2.TOOL_RETURN_STATUS_SUCCESS, "news for Rome"),
    ]
    # One step holds the calls with their returns; the model sees the returns in call order.
    assert {m.step for m in result.messages if m.WhichOneof("content") in ("tool_call", "tool_return")} == {0}
    sent = fakes.model.requests[1].messages
    assert [(m.tool_call_id, m.content) for m in sent[-3:]] == [
        ("c1", "news for Paris"),
        ("c2", "boom"),
        ("c3", "news for Rome"),
    ]


async def test_memory_tool_calls_of_one_step_run_one_after_another_in_call_order(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id, tool_ids=[APPEND])
    fakes.model.script(
        calls(
            ("core_memory_append", {"label": "human", "content": "Name: Ada"}, "c1"),
            ("core_memory_append", {"label": "human", "content": "Likes tea"}, "c2"),
        ),
        reply("Noted."),
    )

    await send(turns, actor, agent)

    assert fakes.memory.block(agent.id, "human").value == "Name: Ada\nLikes tea"
    assert fakes.memory_tools.most_at_once == 1
    # The next step's system prompt shows the edited block.
    assert "Likes tea" in fakes.model.requests[1].messages[0].content


async def test_a_repeated_memory_edit_is_not_made_again_and_the_next_step_may_only_answer(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id, tool_ids=[APPEND], max_steps=6)
    fakes.model.script(
        calls(("core_memory_append", {"label": "human", "content": "Name: Ada"}, "c1")),
        # The same edit again, its arguments in another key order.
        calls(("core_memory_append", '{"content": "Name: Ada",  "label": "human"}', "c2")),
        reply("Nice to meet you, Ada."),
    )

    result = await send(turns, actor, agent)

    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN
    assert fakes.memory.block(agent.id, "human").value == "Name: Ada"
    first, second = returns(result)
    assert first.status == message_pb2.TOOL_RETURN_STATUS_SUCCESS
    assert second.status == message_pb2.TOOL_RETURN_STATUS_ERROR
    assert "already made earlier in this turn" in second.content
    requests = fakes.model.requests
    # Unspecified is the provider's default ("auto"); after the repeat, no call is allowed.
    assert [r.tool_choice for r in requests] == [
        llm_pb2.TOOL_CHOICE_UNSPECIFIED,
        llm_pb2.TOOL_CHOICE_UNSPECIFIED,
        llm_pb2.TOOL_CHOICE_NONE,
    ]
    assert offered(requests[2]) == ["core_memory_append"]


async def test_the_same_edit_twice_in_one_step_is_made_once_and_a_different_edit_still_runs(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id, tool_ids=[APPEND])
    fakes.model.script(
        calls(
            ("core_memory_append", {"label": "human", "content": "Likes tea"}, "c1"),
            ("core_memory_append", {"label": "human", "content": "Likes tea"}, "c2"),
            ("core_memory_append", {"label": "human", "content": "Likes jazz"}, "c3"),
        ),
        reply("Noted."),
    )

    result = await send(turns, actor, agent)

    assert fakes.memory.block(agent.id, "human").value == "Likes tea\nLikes jazz"
    assert [r.status for r in returns(result)] == [
        message_pb2.TOOL_RETURN_STATUS_SUCCESS,
        message_pb2.TOOL_RETURN_STATUS_ERROR,
        message_pb2.TOOL_RETURN_STATUS_SUCCESS,
    ]


async def test_unknown_tools_and_bad_arguments_become_errors_the_model_sees(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    tool = fakes.tools.add("echo", echo)
    agent = await fakes.agent(actor.org_id, tool_ids=[tool])
    fakes.model.script(
        calls(("launch_rockets", {}, "c1"), ("echo", "{not json", "c2"), ("echo", "[1, 2]", "c3")),
        reply("Sorry."),
    )

    result = await send(turns, actor, agent)

    assert [r.content for r in returns(result)] == [
        "Error: there is no tool named 'launch_rockets'; available: echo",
        "Error: the arguments are not valid JSON (Expecting property name enclosed in double quotes); "
        "send a JSON object",
        "Error: the arguments must be a JSON object",
    ]
    assert {r.status for r in returns(result)} == {message_pb2.TOOL_RETURN_STATUS_ERROR}
    assert fakes.tools.runs == []
    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN


async def test_a_tool_result_is_cut_within_its_return_char_limit(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()

    async def long(arguments: dict[str, Any]) -> str:
        return "x" * 500

    tool = fakes.tools.add("long", long, return_char_limit=100)
    agent = await fakes.agent(actor.org_id, tool_ids=[tool])
    fakes.model.script(calls(("long", {}, "c1")), reply("ok"))

    result = await send(turns, actor, agent)

    [content] = [r.content for r in returns(result)]
    # The marker counts toward the limit: the shown part is what is left of it.
    shown = 100 - len(TRUNCATION_MARKER.format(total=500, shown=100))
    assert content == "x" * shown + TRUNCATION_MARKER.format(total=500, shown=shown)
    assert len(content) <= 100


async def test_a_memory_edit_over_the_block_limit_is_an_error_result_and_changes_nothing(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id, tool_ids=[APPEND])
    fakes.model.script(
        calls(("core_memory_append", {"label": "human", "content": "y" * 101}, "c1")), reply("Too long.")
    )

    result = await send(turns, actor, agent)

    [ret] = returns(result)
    assert ret.status == message_pb2.TOOL_RETURN_STATUS_ERROR
    assert ret.content == "Error: block 'human' would hold 101 characters; its limit is 100"
    assert fakes.memory.block(agent.id, "human").value == ""


async def test_a_tool_that_no_longer_exists_fails_the_turn_before_the_model_is_called(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id, tool_ids=["tool-gone"])

    with pytest.raises(FailedPrecondition) as failed:
        await send(turns, actor, agent)

    assert failed.value.reason == "AGENT_TOOLS_MISSING"

    assert fakes.model.requests == []


async def test_built_in_tools_are_fetched_once_and_custom_tools_every_turn(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    tool = fakes.tools.add("echo", echo)
    builtin_only = await fakes.agent(actor.org_id, tool_ids=[APPEND])
    with_custom = await fakes.agent(actor.org_id, tool_ids=[APPEND, tool])
    fakes.model.script(*(reply("ok") for _ in range(4)))

    for agent in (builtin_only, builtin_only, with_custom, with_custom):
        await send(turns, actor, agent)

    assert fakes.tools.gets == 3
    assert offered(fakes.model.requests[-1]) == ["core_memory_append", "echo"]


# ----- tool rules -----


async def test_a_terminal_tool_ends_the_turn_once_it_succeeded(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    tool = fakes.tools.add("finish", echo)
    agent = await fakes.agent(
        actor.org_id, tool_ids=[tool], tool_rules=[{"tool_name": "finish", "type": "terminal"}]
    )
    fakes.model.script(calls(("finish", {"q": "done"}, "c1")))

    result = await send(turns, actor, agent)

    assert result.stop_reason == turn_pb2.STOP_REASON_TOOL_RULE
    assert [r.content for r in returns(result)] == ["echo done"]
    assert len(fakes.model.requests) == 1


async def test_a_failed_terminal_tool_does_not_end_the_turn(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    tool = fakes.tools.add("finish", failing)
    agent = await fakes.agent(
        actor.org_id, tool_ids=[tool], tool_rules=[{"tool_name": "finish", "type": "terminal"}]
    )
    fakes.model.script(calls(("finish", {}, "c1")), reply("It failed; stopping here."))

    result = await send(turns, actor, agent)

    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN
    assert len(fakes.model.requests) == 2


async def test_run_first_tools_alone_are_offered_and_required_first_and_other_calls_are_refused(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    first, other = fakes.tools.add("plan", echo), fakes.tools.add("act", echo)
    agent = await fakes.agent(
        actor.org_id, tool_ids=[first, other], tool_rules=[{"tool_name": "plan", "type": "run_first"}]
    )
    fakes.model.script(calls(("act", {}, "c1"), ("plan", {"q": "p"}, "c2")), reply("Planned."))

    result = await send(turns, actor, agent)

    opening, following = fakes.model.requests
    assert (offered(opening), opening.tool_choice) == (["plan"], llm_pb2.TOOL_CHOICE_REQUIRED)
    assert (offered(following), following.tool_choice) == (["plan", "act"], llm_pb2.TOOL_CHOICE_UNSPECIFIED)
    assert [r.content for r in returns(result)] == [
        "Error: a rule requires calling plan first in every turn",
        "echo p",
    ]
    assert fakes.tools.ran("act") == []


async def test_max_calls_stops_offering_the_tool_and_refuses_extra_calls(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    tool = fakes.tools.add("search", echo)
    agent = await fakes.agent(
        actor.org_id,
        tool_ids=[tool],
        tool_rules=[{"tool_name": "search", "type": "max_calls", "max_calls": 2}],
    )
    fakes.model.script(
        calls(("search", {"q": "a"}, "c1")),
        calls(("search", {"q": "b"}, "c2"), ("search", {"q": "c"}, "c3")),
        reply("Enough searching."),
    )

    result = await send(turns, actor, agent)

    assert [offered(r) for r in fakes.model.requests] == [["search"], ["search"], []]
    assert [r.content for r in returns(result)] == [
        "echo a",
        "echo b",
        "Error: 'search' may be called at most 2 times per turn, and that limit is reached",
    ]
    assert len(fakes.tools.ran("search")) == 2


# ----- the context window -----


def exchanges(count: int, size: int = 100) -> list[message_pb2.Message]:
    """Earlier turns: a user message and an answer each, from separate runs (about 59 tokens a turn; with
    the system prompt and a new message, 12 make 79 % of a 1,000-token window, 15 make 97 %)."""
    messages = []
    for i in range(count):
        run = f"run-old-{i}"
        messages.append(
            message_pb2.Message(run_id=run, user=message_pb2.UserContent(text=f"{i}:" + "u" * size))
        )
        messages.append(
            message_pb2.Message(run_id=run, assistant=message_pb2.AssistantContent(text=f"{i}:" + "a" * size))
        )
    return messages


async def nearly_full(fakes: Mesh, actor: Actor) -> Agent:
    """An agent whose next request fills 97 % of its 1,000-token window."""
    agent = await fakes.agent(actor.org_id, context_window=1000)
    fakes.memory.seed(agent.id, exchanges(15))
    return agent


async def test_a_window_at_ninety_percent_is_summarized_before_the_model_call(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await nearly_full(fakes, actor)
    fakes.model.script(reply("They talked about u and a."), model=SUMMARIZER_MODEL)
    fakes.model.script(reply("Hello again."))

    result = await send(turns, actor, agent)

    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN
    [summarized] = fakes.model.of(SUMMARIZER_MODEL)
    assert "0:uuu" in summarized.messages[1].content
    window = fakes.memory.in_context(agent.id)
    assert window[0].event.type == message_pb2.EVENT_TYPE_SUMMARY
    assert window[0].event.text == "They talked about u and a."
    # About 30 % left, cut before a user message; what stays starts the window after the summary.
    assert window[1].WhichOneof("content") == "user"
    assert 8 <= window[0].event.evicted_count <= 12
    sent = fakes.model.of()[0].messages
    assert "They talked about u and a." in sent[1].content
    assert len(sent) == 1 + 1 + (2 * 15 - window[0].event.evicted_count) + 1
    # The summary is no message of the turn's own.
    assert kinds(result.messages) == ["assistant"]


async def test_a_window_at_three_quarters_gets_one_pressure_note(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id, context_window=1000)
    fakes.memory.seed(agent.id, exchanges(12))
    fakes.model.script(reply("Noted."), reply("Still here."))

    await send(turns, actor, agent)
    await send(turns, actor, agent)

    notes = [m for m in fakes.memory.histories[agent.id] if m.WhichOneof("content") == "event"]
    assert len(notes) == 1
    assert notes[0].event.type == message_pb2.EVENT_TYPE_MEMORY_PRESSURE
    assert notes[0].event.text.startswith("Your context window is 78% full.")
    first = fakes.model.requests[0].messages
    assert first[-1].content.startswith("[System note] Your context window is")
    assert fakes.model.of(SUMMARIZER_MODEL) == []


async def test_a_context_overflow_from_the_provider_summarizes_and_retries(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    fakes.memory.seed(agent.id, exchanges(10))
    fakes.model.script(overflow(), reply("Fits now."))
    fakes.model.script(reply("Summary."), model=SUMMARIZER_MODEL)

    result = await send(turns, actor, agent)

    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN
    assert [m.assistant.text for m in result.messages if m.HasField("assistant")] == ["Fits now."]
    first, second = fakes.model.of()
    assert len(second.messages) < len(first.messages)
    assert fakes.memory.in_context(agent.id)[0].event.text == "Summary."


async def test_an_overflow_with_nothing_to_evict_ends_the_turn_as_context_overflow(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    fakes.model.script(overflow())

    result = await send(turns, actor, agent, "a very long message")

    assert result.stop_reason == turn_pb2.STOP_REASON_CONTEXT_OVERFLOW
    # The input is kept in the history all the same.
    assert [m.user.text for m in fakes.memory.histories[agent.id]] == ["a very long message"]
    assert fakes.model.of(SUMMARIZER_MODEL) == []


async def test_a_failing_summarizer_truncates_instead_and_the_turn_goes_on(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await nearly_full(fakes, actor)
    fakes.model.script(Unavailable("the summarizer is down"), model=SUMMARIZER_MODEL)
    fakes.model.script(reply("Hello."))

    result = await send(turns, actor, agent)

    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN
    front = fakes.memory.in_context(agent.id)[0]
    assert front.event.type == message_pb2.EVENT_TYPE_TRUNCATION
    assert "the summarizer failed: the summarizer is down" in front.event.text


async def test_summarize_now_evicts_the_oldest_messages_behind_a_summary(fakes: Mesh, actor: Actor) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    fakes.memory.seed(agent.id, exchanges(10, size=200))
    fakes.model.script(reply("Earlier: ten exchanges."), model=SUMMARIZER_MODEL)

    evicted, summary = await turns.summarize(actor, agent.id)

    assert 5 <= evicted <= 7
    assert summary is not None
    assert summary.event.text == "Earlier: ten exchanges."
    assert fakes.memory.in_context(agent.id)[0].id == summary.id
    assert len(fakes.memory.histories[agent.id]) == 21  # nothing left the history


# ----- streams -----


async def test_a_stream_sends_the_run_then_each_stored_step_with_token_deltas_then_the_result(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    tool = fakes.tools.add("echo", echo)
    agent = await fakes.agent(actor.org_id, tool_ids=[tool])
    fakes.model.script(calls(("echo", {"q": "x"}, "c1")), reply("All done now", reasoning="think"))

    async with turns.stream(actor, TurnRequest(agent.id, [user("go")], stream_tokens=True)) as events:
        seen = [event async for event in events]

    started, step0, *deltas, step1, finished = seen
    assert isinstance(started, RunStarted)
    assert isinstance(finished, TurnResult)
    assert finished.run_id == started.run_id
    assert isinstance(step0, MessagesStored)
    assert kinds(list(step0.messages)) == ["tool_call", "tool_return"]
    assert isinstance(step1, MessagesStored)
    assert kinds(list(step1.messages)) == ["reasoning", "assistant"]
    assert deltas == [
        TokenDelta(started.run_id, 1, True, "think"),
        TokenDelta(started.run_id, 1, False, "All"),
        TokenDelta(started.run_id, 1, False, "done"),
        TokenDelta(started.run_id, 1, False, "now"),
    ]
    assert [m.id for m in finished.messages] == [m.id for m in [*step0.messages, *step1.messages]]


async def test_tokens_fall_back_to_whole_replies_when_the_gateway_cannot_stream(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id)
    fakes.model.streams = False
    fakes.model.script(reply("first"), reply("second"))

    for _ in range(2):
        async with turns.stream(actor, TurnRequest(agent.id, [user("go")], stream_tokens=True)) as events:
            seen = [event async for event in events]
        assert [type(event) for event in seen] == [RunStarted, MessagesStored, TurnResult]

    # Asked once; the second turn did not ask again.
    assert fakes.model.streamed == 0
    assert len(fakes.model.requests) == 2


async def test_voice_agents_answer_by_streaming_only_and_always_stream_tokens(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    agent = await fakes.agent(actor.org_id, agent_type="voice")

    with pytest.raises(FailedPrecondition) as refused:
        await send(turns, actor, agent)
    assert refused.value.reason == "VOICE_AGENT_STREAMS_ONLY"
    fakes.model.script(reply("Hi there"))

    async with turns.stream(actor, TurnRequest(agent.id, [user("hello")])) as events:
        deltas = [event.text async for event in events if isinstance(event, TokenDelta)]

    assert deltas == ["Hi", "there"]


# ----- ephemeral turns -----


async def test_an_ephemeral_turn_uses_the_given_context_stores_nothing_and_cannot_write_memory(
    fakes: Mesh, actor: Actor
) -> None:
    turns = fakes.turns()
    config = AgentConfig(
        id="",
        model="fake/agent",
        system="You are brief.",
        agent_type="standard",
        context_window=0,
        summarizer_model="",
        llm_options={},
        rules=ToolRules(),
    )
    fakes.model.script(
        calls(("core_memory_append", {"label": "human", "content": "x"}, "c1")), reply("Nothing saved.")
    )

    result = await turns.ephemeral(
        actor, config, [], [APPEND], [user("earlier"), answer("before")], [user("save x")], 0
    )

    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN
    assert [r.content for r in returns(result)] == [
        "Error: memory is read-only in an ephemeral turn; nothing can be saved"
    ]
    assert [m.content for m in fakes.model.requests[0].messages[1:]] == ["earlier", "before", "save x"]
    assert fakes.model.requests[0].agent_id == ""
    assert fakes.memory_tools.ran == []
    assert fakes.memory.histories == {}
