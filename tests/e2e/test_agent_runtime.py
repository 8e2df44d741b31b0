"""The agent runtime over the real mesh: tool rules, approvals, runs, async and batch turns, streaming,
summarization, ephemeral, voice and sleep-time agents."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest

from mnemo.memory.v1 import block_pb2, block_pb2_grpc
from tests.e2e.test_turn import blocks_by_label, create_agent, send
from tests.fakes.llm_provider import FakeProvider, error, reply, tool_call, tool_calls
from tests.harness import RunningMesh


def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Polls `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def run_of(api: httpx.Client, run_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def history_types(api: httpx.Client, agent_id: str) -> list[str]:
    return [m["message_type"] for m in api.get(f"/v1/agents/{agent_id}/messages").json()]


def sse_events(response: httpx.Response) -> list[Any]:
    events: list[Any] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


# ----- the loop -----


def test_parallel_tool_calls_all_run_and_each_call_is_stored_with_its_return(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api, llm_options={"parallel_tool_calls": True})
    llm.script(
        tool_calls(
            [
                ("core_memory_append", {"label": "human", "content": "Name: Ada"}, "call_a"),
                ("core_memory_append", {"label": "persona", "content": "Calls her Ada."}, "call_b"),
            ]
        ),
        reply("Saved both."),
    )

    body = send(api, agent["id"], "I am Ada").json()

    kinds = [
        (m["message_type"], m.get("tool_call_id") or m.get("tool_call", {}).get("tool_call_id"))
        for m in body["messages"]
    ]
    assert kinds == [
        ("tool_call_message", "call_a"),
        ("tool_call_message", "call_b"),
        ("tool_return_message", "call_a"),
        ("tool_return_message", "call_b"),
        ("assistant_message", None),
    ]
    blocks = blocks_by_label(api, agent["id"])
    assert blocks["human"]["value"] == "Name: Ada"
    assert blocks["persona"]["value"].endswith("Calls her Ada.")
    assert llm.requests()[0]["parallel_tool_calls"] is True
    # The model sees one assistant message with both calls, then both returns.
    second = llm.requests()[1]["messages"]
    assert [c["id"] for c in second[-3]["tool_calls"]] == ["call_a", "call_b"]
    assert [m["tool_call_id"] for m in second[-2:]] == ["call_a", "call_b"]


def test_terminal_tool_rule_ends_the_turn_after_the_tool_ran(api: httpx.Client, llm: FakeProvider) -> None:
    agent = create_agent(api, tool_rules=[{"tool_name": "core_memory_append", "type": "terminal"}])
    assert agent["tool_rules"] == [
        {
            "tool_name": "core_memory_append",
            "type": "terminal",
            "max_calls": 0,
            "children": [],
            "branches": [],
            "default_next_tool": "",
        }
    ]
    llm.script(tool_call("core_memory_append", {"label": "human", "content": "done"}), reply("never asked"))

    body = send(api, agent["id"], "save and stop").json()

    assert body["stop_reason"]["stop_reason"] == "tool_rule"
    assert [m["message_type"] for m in body["messages"]] == ["tool_call_message", "tool_return_message"]
    assert len(llm.requests()) == 1


def test_a_failed_terminal_tool_does_not_end_the_turn(api: httpx.Client, llm: FakeProvider) -> None:
    agent = create_agent(api, tool_rules=[{"tool_name": "core_memory_append", "type": "terminal"}])
    llm.script(
        tool_call("core_memory_append", {"label": "nope", "content": "x"}),
        reply("Sorry, that block does not exist."),
    )

    body = send(api, agent["id"], "save").json()

    assert body["stop_reason"]["stop_reason"] == "end_turn"
    assert body["messages"][1]["status"] == "error"


def test_run_first_rule_offers_only_that_tool_first_and_refuses_other_calls(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api, tool_rules=[{"tool_name": "core_memory_replace", "type": "run_first"}])
    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": "too early"}),
        reply("ok"),
    )

    body = send(api, agent["id"], "hi").json()

    first, second = llm.requests()
    assert [t["function"]["name"] for t in first["tools"]] == ["core_memory_replace"]
    assert first["tool_choice"] == "required"
    assert {t["function"]["name"] for t in second["tools"]} >= {"core_memory_append", "core_memory_replace"}
    ret = body["messages"][1]
    assert ret["status"] == "error"
    assert "core_memory_replace first" in ret["tool_return"]
    assert blocks_by_label(api, agent["id"])["human"]["value"] == ""


def test_max_calls_rule_stops_offering_the_tool_and_refuses_extra_calls(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(
        api, tool_rules=[{"tool_name": "core_memory_append", "type": "max_calls", "max_calls": 1}]
    )
    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": "one"}),
        tool_call("core_memory_append", {"label": "human", "content": "two"}),
        reply("done"),
    )

    body = send(api, agent["id"], "append twice").json()

    returns = [m for m in body["messages"] if m["message_type"] == "tool_return_message"]
    assert [r["status"] for r in returns] == ["success", "error"]
    assert "at most 1 times per turn" in returns[1]["tool_return"]
    offered = [t["function"]["name"] for t in llm.requests()[1]["tools"]]
    assert "core_memory_append" not in offered
    assert "core_memory_replace" in offered
    assert blocks_by_label(api, agent["id"])["human"]["value"] == "one"
    # The limit is per turn: the next turn may call it again.
    llm.script(tool_call("core_memory_append", {"label": "human", "content": "three"}), reply("ok"))
    send(api, agent["id"], "again")
    assert blocks_by_label(api, agent["id"])["human"]["value"] == "one\nthree"


def test_bad_tool_rules_are_rejected(api: httpx.Client) -> None:
    response = api.post(
        "/v1/agents",
        json={"name": "x", "model": "openai/m", "tool_rules": [{"tool_name": "t", "type": "max_calls"}]},
    )

    assert response.status_code == 422
    assert response.json()["violations"][0]["field"] == "agent.tool_rules[0].max_calls"


# ----- approvals -----


def test_tool_requiring_approval_stops_the_run_until_approved_then_resumes(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api, tool_rules=[{"tool_name": "core_memory_append", "type": "requires_approval"}])
    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": "Likes tea"}, call_id="call_tea")
    )

    body = send(api, agent["id"], "I like tea").json()

    assert body["stop_reason"]["stop_reason"] == "requires_approval"
    assert [m["message_type"] for m in body["messages"]] == ["tool_call_message"]
    run = run_of(api, body["run_id"])
    assert run["status"] == "awaiting_approval"
    assert run["pending_approvals"][0]["tool_call_id"] == "call_tea"
    assert blocks_by_label(api, agent["id"])["human"]["value"] == ""
    # The agent takes no new turn while a call waits.
    blocked = send(api, agent["id"], "hello?")
    assert blocked.status_code == 400
    assert blocked.json()["reason"] == "APPROVAL_PENDING"

    llm.script(reply("Saved that you like tea."))
    resumed = api.post(f"/v1/runs/{body['run_id']}/approval", json={"approve": True})

    assert resumed.status_code == 200, resumed.text
    result = resumed.json()
    assert [m["message_type"] for m in result["messages"]] == ["tool_return_message", "assistant_message"]
    assert result["messages"][0]["status"] == "success"
    assert result["stop_reason"]["stop_reason"] == "end_turn"
    assert blocks_by_label(api, agent["id"])["human"]["value"] == "Likes tea"
    assert run_of(api, body["run_id"])["status"] == "completed"
    assert history_types(api, agent["id"]) == [
        "user_message",
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ]
    again = api.post(f"/v1/runs/{body['run_id']}/approval", json={"approve": True})
    assert again.status_code == 400
    assert again.json()["reason"] == "RUN_NOT_AWAITING_APPROVAL"


def test_denied_tool_call_is_reported_to_the_model_and_never_runs(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api, tool_rules=[{"tool_name": "core_memory_append", "type": "requires_approval"}])
    llm.script(tool_call("core_memory_append", {"label": "human", "content": "secret"}))
    run_id = send(api, agent["id"], "remember my secret").json()["run_id"]
    llm.script(reply("Understood, I will not save it."))

    result = api.post(f"/v1/runs/{run_id}/approval", json={"approve": False, "reason": "no secrets"}).json()

    ret = result["messages"][0]
    assert ret["status"] == "error"
    assert "no secrets" in ret["tool_return"]
    assert blocks_by_label(api, agent["id"])["human"]["value"] == ""
    assert llm.requests()[-1]["messages"][-1]["content"] == ret["tool_return"]


def test_cancelling_a_run_that_waits_for_approval_closes_its_call(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api, tool_rules=[{"tool_name": "core_memory_append", "type": "requires_approval"}])
    llm.script(tool_call("core_memory_append", {"label": "human", "content": "x"}))
    run_id = send(api, agent["id"], "save x").json()["run_id"]

    cancelled = api.post(f"/v1/runs/{run_id}/cancel").json()

    assert cancelled["status"] == "cancelled"
    assert history_types(api, agent["id"]) == ["user_message", "tool_call_message", "tool_return_message"]
    llm.script(reply("fine"))
    assert send(api, agent["id"], "never mind").json()["stop_reason"]["stop_reason"] == "end_turn"
    # The next request carries no unanswered call.
    for message in llm.requests()[-1]["messages"]:
        if message.get("tool_calls"):
            ids = {c["id"] for c in message["tool_calls"]}
            assert ids <= {m.get("tool_call_id") for m in llm.requests()[-1]["messages"]}


# ----- runs -----


def test_async_send_returns_a_run_that_can_be_polled_and_read(api: httpx.Client, llm: FakeProvider) -> None:
    agent = create_agent(api)
    llm.script(reply("answered in the background", prompt_tokens=5, completion_tokens=3))

    response = api.post(
        f"/v1/agents/{agent['id']}/messages/async", json={"messages": [{"role": "user", "content": "bg"}]}
    )

    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    assert response.json()["status"] in ("created", "running", "completed")
    run = wait_for(lambda: (r := run_of(api, run_id))["status"] == "completed" and r)
    assert run["stop_reason"] == "end_turn"
    assert run["usage"]["total_tokens"] == 8
    messages = api.get(f"/v1/runs/{run_id}/messages").json()
    assert [(m["message_type"], m["content"]) for m in messages] == [
        ("user_message", "bg"),
        ("assistant_message", "answered in the background"),
    ]
    assert run["message_ids"] == [messages[1]["id"]]
    listed = api.get("/v1/runs", params={"agent_id": agent["id"]}).json()
    assert [r["id"] for r in listed] == [run_id]
    assert api.get("/v1/runs", params={"agent_id": agent["id"], "status": "failed"}).json() == []


def test_cancelling_a_running_run_stops_it_and_frees_the_agent(api: httpx.Client, llm: FakeProvider) -> None:
    agent = create_agent(api)
    llm.script(reply("too late", delay=5.0))
    run_id = api.post(
        f"/v1/agents/{agent['id']}/messages/async", json={"messages": [{"content": "slow"}]}
    ).json()["id"]
    wait_for(lambda: run_of(api, run_id)["status"] == "running" and len(llm.requests()) == 1)

    cancelled = api.post(f"/v1/runs/{run_id}/cancel").json()

    # Cancelled, not finished: the model's (5 s) reply never arrived.
    assert cancelled["status"] == "cancelled"
    assert cancelled["stop_reason"] == "cancelled"
    assert history_types(api, agent["id"]) == []
    llm.script(reply("fresh"))
    assert send(api, agent["id"], "again").json()["messages"][0]["content"] == "fresh"


def test_an_idempotency_key_reused_for_a_different_message_is_refused(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api)
    llm.script(reply("first"))
    assert send(api, agent["id"], "hello", **{"Idempotency-Key": "same"}).status_code == 200

    reused = send(api, agent["id"], "something else", **{"Idempotency-Key": "same"})

    assert reused.status_code == 422
    assert reused.json()["reason"] == "IDEMPOTENCY_KEY_REUSED"
    assert history_types(api, agent["id"]) == ["user_message", "assistant_message"]
    # Keys are per agent: another agent may use the same one.
    other = create_agent(api)
    llm.script(reply("other"))
    assert send(api, other["id"], "something else", **{"Idempotency-Key": "same"}).status_code == 200


def test_runs_of_another_organization_and_unknown_runs_are_not_found(api: httpx.Client) -> None:
    assert api.get("/v1/runs/run-does-not-exist").status_code == 404
    assert api.post("/v1/runs/run-does-not-exist/cancel").status_code == 404


def test_concurrent_sends_to_one_agent_never_interleave(
    api: httpx.Client, mesh: RunningMesh, llm: FakeProvider
) -> None:
    agent = create_agent(api)
    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": "a"}),
        reply("first done", delay=0.3),
        tool_call("core_memory_append", {"label": "human", "content": "b"}),
        reply("second done"),
    )

    async def both() -> list[httpx.Response]:
        import asyncio

        async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=30) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(f"/v1/agents/{agent['id']}/messages", json={"messages": [{"content": t}]})
                        for t in ("one", "two")
                    )
                )
            )

    import asyncio

    responses = asyncio.run(both())

    assert all(r.status_code == 200 for r in responses)
    history = api.get(f"/v1/agents/{agent['id']}/messages").json()
    runs = [m["run_id"] for m in history]
    # Each run's messages are contiguous: one turn completes before the other starts.
    assert runs == sorted(runs, key=runs.index)
    assert len(set(runs)) == 2
    assert [m["message_type"] for m in history] == [
        "user_message",
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ] * 2


# ----- streaming -----


def test_streamed_turn_sends_each_message_as_an_event_then_stop_reason_and_usage(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api)
    llm.script(
        tool_call("core_memory_append", {"label": "human", "content": "streamed"}), reply("All saved.")
    )

    with api.stream(
        "POST", f"/v1/agents/{agent['id']}/messages/stream", json={"messages": [{"content": "stream it"}]}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)

    assert [e if e == "[DONE]" else e["message_type"] for e in events] == [
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
        "stop_reason",
        "usage_statistics",
        "[DONE]",
    ]
    # The same shapes as the non-streaming response.
    stored = api.get(f"/v1/agents/{agent['id']}/messages").json()[1:]
    assert events[:3] == stored
    assert events[3]["stop_reason"] == "end_turn"
    assert events[3]["run_id"] == stored[0]["run_id"]
    assert events[4]["step_count"] == 2


def test_stream_tokens_adds_the_models_text_as_it_is_generated(api: httpx.Client, llm: FakeProvider) -> None:
    agent = create_agent(api)
    llm.script(reply("Hello there, dear Ada!"))

    with api.stream(
        "POST",
        f"/v1/agents/{agent['id']}/messages/stream",
        json={"messages": [{"content": "hi"}], "stream_tokens": True},
    ) as response:
        events = sse_events(response)

    deltas = [e for e in events if e != "[DONE]" and e["message_type"] == "assistant_message_delta"]
    assert len(deltas) > 1
    assert "".join(d["content"] for d in deltas) == "Hello there, dear Ada!"
    kinds = [e if e == "[DONE]" else e["message_type"] for e in events]
    assert kinds.index("assistant_message") > kinds.index("assistant_message_delta")
    assert llm.requests()[0]["stream"] is True


def test_stream_of_an_unknown_agent_is_a_plain_404(api: httpx.Client) -> None:
    response = api.post("/v1/agents/agent-nope/messages/stream", json={"messages": [{"content": "x"}]})

    assert response.status_code == 404
    assert response.json()["reason"] == "AGENT_NOT_FOUND"


def test_a_client_that_disconnects_cancels_the_streamed_run(
    api: httpx.Client, mesh: RunningMesh, llm: FakeProvider
) -> None:
    agent = create_agent(api)
    llm.script(reply("nobody listens", delay=5.0))

    with (
        httpx.Client(base_url=mesh.http_url, headers=mesh.auth, timeout=30) as client,
        client.stream(
            "POST",
            f"/v1/agents/{agent['id']}/messages/stream",
            json={"messages": [{"content": "then leave"}]},
        ) as response,
    ):
        assert response.status_code == 200
        wait_for(lambda: len(llm.requests()) == 1)
    # The connection is closed: the turn is cancelled, its run records it, and the agent is free.

    runs = wait_for(
        lambda: [
            r
            for r in api.get("/v1/runs", params={"agent_id": agent["id"]}).json()
            if r["status"] == "cancelled"
        ]
    )
    assert runs[0]["stop_reason"] == "cancelled"
    assert history_types(api, agent["id"]) == []
    llm.script(reply("back"))
    assert send(api, agent["id"], "hello again").json()["messages"][0]["content"] == "back"


def test_a_streamed_turn_whose_caller_went_away_is_finished_by_a_retry_with_the_same_key(
    api: httpx.Client, mesh: RunningMesh, llm: FakeProvider
) -> None:
    agent = create_agent(api)
    llm.script(reply("nobody listens", delay=5.0))
    key = f"gone-{time.monotonic_ns()}"

    with (
        httpx.Client(base_url=mesh.http_url, headers=mesh.auth, timeout=30) as client,
        client.stream(
            "POST",
            f"/v1/agents/{agent['id']}/messages/stream",
            json={"messages": [{"content": "are you there?"}]},
            headers={"Idempotency-Key": key},
        ) as response,
    ):
        assert response.status_code == 200
        wait_for(lambda: len(llm.requests()) == 1)
    (cancelled,) = wait_for(
        lambda: [
            r
            for r in api.get("/v1/runs", params={"agent_id": agent["id"]}).json()
            if r["status"] == "cancelled"
        ]
    )
    assert "caller went away" in cancelled["error"]
    llm.script(reply("here I am"))

    retried = api.post(
        f"/v1/agents/{agent['id']}/messages",
        json={"messages": [{"content": "are you there?"}]},
        headers={"Idempotency-Key": key},
    )

    assert retried.status_code == 200, retried.text
    assert retried.json()["run_id"] == cancelled["id"]
    assert [m["content"] for m in retried.json()["messages"]] == ["here I am"]
    history = api.get(f"/v1/agents/{agent['id']}/messages").json()
    assert [(m["message_type"], m["content"]) for m in history] == [
        ("user_message", "are you there?"),
        ("assistant_message", "here I am"),
    ]
    assert [r["status"] for r in api.get("/v1/runs", params={"agent_id": agent["id"]}).json()] == [
        "completed"
    ]


def test_a_run_cancelled_on_request_stays_cancelled_when_sent_again(
    api: httpx.Client, mesh: RunningMesh, llm: FakeProvider
) -> None:
    agent = create_agent(api)
    llm.script(reply("too slow", delay=5.0))
    key = f"cancel-{time.monotonic_ns()}"
    started = api.post(
        f"/v1/agents/{agent['id']}/messages/async",
        json={"messages": [{"content": "work"}]},
        headers={"Idempotency-Key": key},
    ).json()
    wait_for(lambda: len(llm.requests()) == 1)
    assert api.post(f"/v1/runs/{started['id']}/cancel").json()["status"] == "cancelled"

    again = api.post(
        f"/v1/agents/{agent['id']}/messages",
        json={"messages": [{"content": "work"}]},
        headers={"Idempotency-Key": key},
    )

    assert again.json()["stop_reason"]["stop_reason"] == "cancelled"
    assert len(llm.requests()) == 1


def test_an_async_turn_that_failed_is_resumed_when_sent_again_with_its_key(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api)
    llm.script(error(500, "The server had an error", err_type="server_error"))
    key = f"async-again-{time.monotonic_ns()}"
    body = {"messages": [{"content": "try twice"}]}
    first = api.post(f"/v1/agents/{agent['id']}/messages/async", json=body, headers={"Idempotency-Key": key})
    run_id = first.json()["id"]
    wait_for(lambda: api.get(f"/v1/runs/{run_id}").json()["status"] == "failed")
    llm.script(reply("second time lucky"))

    again = api.post(f"/v1/agents/{agent['id']}/messages/async", json=body, headers={"Idempotency-Key": key})

    assert again.status_code == 202
    assert again.json()["id"] == run_id
    wait_for(lambda: api.get(f"/v1/runs/{run_id}").json()["status"] == "completed")
    history = api.get(f"/v1/agents/{agent['id']}/messages").json()
    assert [(m["message_type"], m["content"]) for m in history] == [
        ("user_message", "try twice"),
        ("assistant_message", "second time lucky"),
    ]


# ----- context window -----


def test_manual_summarize_evicts_the_oldest_messages_behind_a_summary(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api, summarizer_model="openai/summarizer")
    for i in range(5):
        llm.script(reply(f"answer {i}"))
        send(api, agent["id"], f"question {i}")
    llm.answer_model("summarizer", reply("The user asked questions 0 and 1."))

    response = api.post(f"/v1/agents/{agent['id']}/summarize")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["evicted_count"] == 4
    assert body["summary"]["event_type"] == "summary"
    assert body["summary"]["content"] == "The user asked questions 0 and 1."
    summarizer_request = llm.requests()[-1]
    assert summarizer_request["model"] == "summarizer"
    assert "user: question 0" in summarizer_request["messages"][1]["content"]
    # Evicted messages stay in the history; the model no longer sees them.
    assert len(history_types(api, agent["id"])) == 11
    llm.script(reply("ok"))
    send(api, agent["id"], "what did I ask?")
    seen = llm.requests()[-1]["messages"]
    assert "The user asked questions 0 and 1." in seen[1]["content"]
    assert all(m.get("content") != "question 0" for m in seen)
    assert seen[2]["content"] == "question 2"


def test_small_window_is_summarized_before_it_fills_and_pairs_stay_together(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api, context_window=1400, summarizer_model="openai/summarizer")
    llm.answer_model("summarizer", reply("Summary of the early chat."))
    for i in range(8):
        llm.script(
            tool_call("core_memory_append", {"label": "persona", "content": f"n{i}"}), reply("x" * 300)
        )
        body = send(api, agent["id"], f"turn {i}: " + "y" * 300).json()
        assert body["stop_reason"]["stop_reason"] == "end_turn"

    requests = [r for r in llm.requests() if r["model"] != "summarizer"]
    assert any(r["model"] == "summarizer" for r in llm.requests())
    for request in requests:
        messages = request["messages"]
        chars = sum(len(m.get("content") or "") for m in messages)
        assert chars < 1400 * 4
        for i, message in enumerate(messages):
            if message["role"] == "tool":
                assert messages[i - 1]["role"] in ("assistant", "tool")
            for call in message.get("tool_calls") or []:
                assert any(m.get("tool_call_id") == call["id"] for m in messages[i + 1 :])
    history = api.get(f"/v1/agents/{agent['id']}/messages", params={"limit": 1000}).json()
    assert any(m["message_type"] == "event_message" and m["event_type"] == "summary" for m in history)
    assert any(m["message_type"] == "event_message" and m["event_type"] == "memory_pressure" for m in history)
    assert sum(m["message_type"] == "user_message" for m in history) == 8


def test_provider_overflow_triggers_summarization_and_a_retry(api: httpx.Client, llm: FakeProvider) -> None:
    agent = create_agent(api, summarizer_model="openai/summarizer")
    for i in range(4):
        llm.script(reply("z" * 400))
        send(api, agent["id"], f"long turn {i} " + "w" * 400)
    llm.answer_model("summarizer", reply("Four long turns happened."))
    full = sum(len(m.get("content") or "") for m in llm.requests()[-1]["messages"])
    llm.limit_context(full)  # the provider's real window is smaller than the agent believes
    llm.script(reply("fits now"))

    body = send(api, agent["id"], "one more " + "v" * 400).json()

    assert body["stop_reason"]["stop_reason"] == "end_turn"
    assert body["messages"][-1]["content"] == "fits now"
    models = [r["model"] for r in llm.requests()]
    assert "summarizer" in models
    assert any(
        m["message_type"] == "event_message" and m["event_type"] == "summary" for m in body["messages"]
    ) or any(
        m["message_type"] == "event_message" for m in api.get(f"/v1/agents/{agent['id']}/messages").json()
    )


def test_a_failing_summarizer_never_fails_the_turn(api: httpx.Client, llm: FakeProvider) -> None:
    agent = create_agent(api, context_window=1200, summarizer_model="openai/summarizer")
    llm.answer_model("summarizer", error(500, "summarizer down", err_type="server_error"))
    for i in range(6):
        llm.script(reply("a" * 300))
        body = send(api, agent["id"], f"turn {i} " + "b" * 300).json()
        assert body["stop_reason"]["stop_reason"] == "end_turn", body

    history = api.get(f"/v1/agents/{agent['id']}/messages", params={"limit": 1000}).json()
    truncations = [
        m for m in history if m["message_type"] == "event_message" and m["event_type"] == "truncation"
    ]
    assert truncations
    assert "summarizer failed" in truncations[0]["content"]


# ----- variants and prompt -----


def test_ephemeral_turn_uses_the_given_context_and_stores_nothing(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agents_before = api.get("/v1/agents", params={"limit": 1000}).json()
    runs_before = api.get("/v1/runs", params={"limit": 1000}).json()
    llm.script(reply("Your name is Ada."))

    response = api.post(
        "/v1/agents/ephemeral/messages",
        json={
            "agent": {"model": "openai/gpt-4o-mini", "system": "Be brief."},
            "memory_blocks": [{"label": "human", "value": "Lives in Paris"}],
            "context": [
                {"role": "user", "content": "I am Ada."},
                {"role": "assistant", "content": "Hi Ada!"},
            ],
            "messages": [{"content": "What is my name?"}],
        },
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["messages"][0]["content"] == "Your name is Ada."
    assert body["messages"][0]["id"] == ""
    sent = llm.requests()[-1]["messages"]
    assert sent[0]["role"] == "system"
    assert sent[0]["content"].startswith("Be brief.")
    assert "Lives in Paris" in sent[0]["content"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "I am Ada."),
        ("assistant", "Hi Ada!"),
        ("user", "What is my name?"),
    ]
    assert api.get("/v1/agents", params={"limit": 1000}).json() == agents_before
    assert api.get("/v1/runs", params={"limit": 1000}).json() == runs_before


def test_voice_agents_stream_only_and_always_stream_tokens(api: httpx.Client, llm: FakeProvider) -> None:
    agent = create_agent(api, agent_type="voice")

    refused = send(api, agent["id"], "hi")

    assert refused.status_code == 400
    assert refused.json()["reason"] == "VOICE_AGENT_STREAMS_ONLY"
    llm.script(reply("Hello by voice."))
    with api.stream(
        "POST", f"/v1/agents/{agent['id']}/messages/stream", json={"messages": [{"content": "hi"}]}
    ) as response:
        events = sse_events(response)
    kinds = [e if e == "[DONE]" else e["message_type"] for e in events]
    assert kinds[0] == "assistant_message_delta"
    assert "assistant_message" in kinds


def test_batch_runs_every_turn_in_the_background_in_order_per_agent(
    api: httpx.Client, llm: FakeProvider
) -> None:
    first, second = create_agent(api), create_agent(api)

    response = api.post(
        "/v1/batches",
        json={
            "turns": [
                {"agent_id": first["id"], "messages": [{"content": "a1"}]},
                {"agent_id": second["id"], "messages": [{"content": "b1"}]},
                {"agent_id": first["id"], "messages": [{"content": "a2"}]},
            ]
        },
    )

    assert response.status_code == 202, response.text
    batch_id = response.json()["id"]
    assert len(response.json()["runs"]) == 3
    batch = wait_for(lambda: (b := api.get(f"/v1/batches/{batch_id}").json())["status"] == "completed" and b)
    assert [r["status"] for r in batch["runs"]] == ["completed"] * 3
    assert all(r["batch_id"] == batch_id for r in batch["runs"])
    contents = [m["content"] for m in api.get(f"/v1/agents/{first['id']}/messages").json()]
    assert contents == ["a1", "ok", "a2", "ok"]


def test_provider_batch_gathers_every_turns_model_calls_into_provider_batches_one_round_per_step(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agents = [create_agent(api) for _ in range(3)]
    # Round one answers the three first steps (in the order the turns asked); whoever gets the tool
    # call saves to core memory and asks again in round two.
    llm.script(
        tool_call(
            "core_memory_append",
            {"label": "human", "content": "Likes tea."},
            prompt_tokens=50,
            completion_tokens=5,
        ),
        reply("Hello two.", prompt_tokens=40, completion_tokens=3),
        reply("Hello three.", prompt_tokens=40, completion_tokens=3),
        reply("Saved: tea.", prompt_tokens=60, completion_tokens=4),
    )

    response = api.post(
        "/v1/batches",
        json={
            "mode": "provider",
            "turns": [
                {"agent_id": a["id"], "messages": [{"content": f"hi {i}"}]} for i, a in enumerate(agents)
            ],
        },
    )

    assert response.status_code == 202, response.text
    assert response.json()["mode"] == "provider"
    batch_id = response.json()["id"]
    batch = wait_for(lambda: (b := api.get(f"/v1/batches/{batch_id}").json())["status"] == "completed" and b)
    assert [r["status"] for r in batch["runs"]] == ["completed"] * 3
    assert batch["provider_round_count"] == 2
    assert batch["chat_batch_ids"] == []
    # Two provider batches (three requests, then one), and not one ordinary chat call.
    assert llm.uploads() == [{"purpose": "batch", "lines": 3}, {"purpose": "batch", "lines": 1}]
    assert len(llm.batches()) == 2
    assert llm.requests() == []
    assert len(llm.batch_requests()) == 4
    histories = {a["id"]: api.get(f"/v1/agents/{a['id']}/messages").json() for a in agents}
    (saver,) = [a for a in agents if blocks_by_label(api, a["id"])["human"]["value"] == "Likes tea."]
    assert [m["message_type"] for m in histories[saver["id"]]] == [
        "user_message",
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
    ]
    assert histories[saver["id"]][-1]["content"] == "Saved: tea."
    # The second round carried the tool's return back to the model.
    assert llm.batch_requests()[3]["messages"][-1]["role"] == "tool"
    others = sorted(histories[a["id"]][-1]["content"] for a in agents if a is not saver)
    assert others == ["Hello three.", "Hello two."]
    runs = {r["agent_id"]: r for r in batch["runs"]}
    assert runs[saver["id"]]["usage"]["step_count"] == 2
    assert runs[saver["id"]]["usage"]["total_tokens"] == 55 + 64
    ledger = api.get("/v1/usage", params={"group_by": "agent"}).json()
    spent = {row["agent_id"]: row for row in ledger if row["agent_id"] in runs}
    assert {a: row["total_tokens"] for a, row in spent.items()} == {
        a: run["usage"]["total_tokens"] for a, run in runs.items()
    }
    assert sum(row["request_count"] for row in spent.values()) == 4


def test_auto_batch_runs_concurrently_for_a_provider_without_a_batch_api(
    api: httpx.Client, llm: FakeProvider
) -> None:
    first, second = create_agent(api, model="plain/gpt-4o-mini"), create_agent(api, model="plain/gpt-4o-mini")

    response = api.post(
        "/v1/batches",
        json={"turns": [{"agent_id": a["id"], "messages": [{"content": "hi"}]} for a in (first, second)]},
    )
    demanded = api.post(
        "/v1/batches",
        json={"mode": "provider", "turns": [{"agent_id": first["id"], "messages": [{"content": "hi"}]}]},
    )
    unknown = api.post(
        "/v1/batches",
        json={"mode": "sometimes", "turns": [{"agent_id": first["id"], "messages": [{"content": "hi"}]}]},
    )

    assert response.status_code == 202, response.text
    assert response.json()["mode"] == "concurrent"
    batch_id = response.json()["id"]
    batch = wait_for(lambda: (b := api.get(f"/v1/batches/{batch_id}").json())["status"] == "completed" and b)
    assert [r["status"] for r in batch["runs"]] == ["completed"] * 2
    assert batch["provider_round_count"] == 0
    assert len(llm.requests()) == 2
    assert llm.batches() == []
    assert demanded.status_code == 400
    assert demanded.json()["reason"] == "PROVIDER_BATCH_UNSUPPORTED"
    assert unknown.status_code == 422


def test_batch_with_an_unknown_agent_is_refused_whole(api: httpx.Client) -> None:
    agent = create_agent(api)
    response = api.post(
        "/v1/batches",
        json={
            "turns": [
                {"agent_id": agent["id"], "messages": [{"content": "a"}]},
                {"agent_id": "agent-nope", "messages": [{"content": "b"}]},
            ]
        },
    )

    assert response.status_code == 404
    assert api.get("/v1/runs", params={"agent_id": agent["id"]}).json() == []


def test_sleeptime_agent_shares_the_blocks_and_reorganises_them_after_turns(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api, sleeptime={"enabled": True, "frequency": 1, "model": "openai/sleepy"})
    helper_id = agent["sleeptime_agent_id"]
    assert helper_id
    helper = api.get(f"/v1/agents/{helper_id}").json()
    assert helper["agent_type"] == "sleeptime"
    assert helper["primary_agent_id"] == agent["id"]
    assert helper["model"] == "openai/sleepy"
    assert {b["id"] for b in helper["blocks"]} == {b["id"] for b in agent["blocks"]}
    llm.script(
        reply("Nice, tea it is."),
        tool_call("core_memory_append", {"label": "human", "content": "Likes tea"}),
        reply("Saved the tea preference."),
    )

    answer = send(api, agent["id"], "I like tea").json()

    assert answer["messages"][-1]["content"] == "Nice, tea it is."
    wait_for(lambda: blocks_by_label(api, agent["id"])["human"]["value"] == "Likes tea")
    sleepy = [r for r in llm.requests() if r["model"] == "sleepy"]
    assert "user: I like tea" in sleepy[0]["messages"][-1]["content"]
    assert api.delete(f"/v1/agents/{agent['id']}").status_code == 204
    assert api.get(f"/v1/agents/{helper_id}").status_code == 404


def test_recompile_shows_block_edits_made_outside_the_agent(api: httpx.Client, mesh: RunningMesh) -> None:
    agent = create_agent(api)
    human = next(b for b in agent["blocks"] if b["label"] == "human")
    with grpc.insecure_channel(mesh.address("memory")) as channel:
        block_pb2_grpc.BlockServiceStub(channel).UpdateBlock(
            block_pb2.UpdateBlockRequest(
                block=block_pb2.Block(id=human["id"], value="Edited from outside"),
                update_mask={"paths": ["value"]},
            ),
            metadata=mesh.hop("org-default", "user-default"),
        )

    response = api.post(f"/v1/agents/{agent['id']}/recompile")

    assert response.status_code == 200
    prompt = response.json()["system_prompt"]
    assert "Edited from outside" in prompt
    assert "current time:" in prompt
    assert "messages in your history: 0" in prompt


@pytest.mark.parametrize("path", ["summarize", "recompile"])
def test_agent_actions_on_unknown_agents_are_not_found(api: httpx.Client, path: str) -> None:
    assert api.post(f"/v1/agents/agent-nope/{path}").status_code == 404


async def test_grpc_stream_and_approval_with_the_generated_clients(
    mesh: RunningMesh, llm: FakeProvider
) -> None:
    from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc, run_pb2, run_pb2_grpc
    from mnemo.common.v1 import message_pb2, turn_pb2

    metadata = mesh.hop("org-grpc-runtime", "user-1")
    async with grpc.aio.insecure_channel(mesh.address("agent")) as channel:
        agents = agent_pb2_grpc.AgentServiceStub(channel)
        runs = run_pb2_grpc.RunServiceStub(channel)
        created = await agents.CreateAgent(
            agent_pb2.CreateAgentRequest(
                agent=agent_pb2.Agent(
                    name="g",
                    model="openai/m",
                    tool_rules=[
                        agent_pb2.ToolRule(
                            tool_name="core_memory_append", type=agent_pb2.TOOL_RULE_TYPE_REQUIRES_APPROVAL
                        )
                    ],
                ),
                memory_blocks=[{"label": "human", "value": ""}],
            ),
            metadata=metadata,
        )
        llm.script(reply("Streaming over gRPC."))
        events = [
            event
            async for event in agents.StreamMessage(
                agent_pb2.StreamMessageRequest(
                    agent_id=created.agent.id,
                    messages=[message_pb2.Message(user=message_pb2.UserContent(text="hi"))],
                    stream_tokens=True,
                ),
                metadata=metadata,
            )
        ]
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds[0] == "run_id"
        assert kinds[-1] == "outcome"
        assert "delta" in kinds
        assert kinds.index("message") > kinds.index("delta")
        assert events[-1].outcome.run_id == events[0].run_id

        llm.script(tool_call("core_memory_append", {"label": "human", "content": "via grpc"}))
        paused = await agents.SendMessage(
            agent_pb2.SendMessageRequest(
                agent_id=created.agent.id,
                messages=[message_pb2.Message(user=message_pb2.UserContent(text="save"))],
            ),
            metadata=metadata,
        )
        assert paused.stop_reason == turn_pb2.STOP_REASON_REQUIRES_APPROVAL
        run = await runs.GetRun(run_pb2.GetRunRequest(run_id=paused.run_id), metadata=metadata)
        assert run.run.status == run_pb2.RUN_STATUS_AWAITING_APPROVAL
        llm.script(reply("saved"))
        resumed = await runs.ApproveRun(
            run_pb2.ApproveRunRequest(run_id=paused.run_id, approve=True), metadata=metadata
        )
        assert resumed.stop_reason == turn_pb2.STOP_REASON_END_TURN
        assert resumed.messages[0].tool_return.status == message_pb2.TOOL_RETURN_STATUS_SUCCESS
        done = await runs.GetRun(run_pb2.GetRunRequest(run_id=paused.run_id), metadata=metadata)
        assert done.run.status == run_pb2.RUN_STATUS_COMPLETED
        assert done.run.usage.step_count == 2


def test_a_voice_agents_window_is_summarized_in_the_background_after_its_turns(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(api, agent_type="voice", context_window=900, summarizer_model="openai/summarizer")
    llm.answer_model("summarizer", reply("Earlier voice chat."))
    for i in range(6):
        llm.script(reply("v" * 400))
        with api.stream(
            "POST",
            f"/v1/agents/{agent['id']}/messages/stream",
            json={"messages": [{"content": f"{i} " + "w" * 400}]},
        ) as response:
            events = sse_events(response)
        assert events[-3]["stop_reason"] == "end_turn"

    history = wait_for(
        lambda: [
            m
            for m in api.get(f"/v1/agents/{agent['id']}/messages", params={"limit": 1000}).json()
            if m["message_type"] == "event_message" and m["event_type"] == "summary"
        ]
    )
    assert history[0]["content"] == "Earlier voice chat."
