"""Groups and agent-to-agent messages through the whole mesh, with the fake provider playing every agent.

Each policy (round robin, supervisor, dynamic, sleep-time), the three messaging tools, the loop guards,
cancelling a group run, idempotent retries and tenancy.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.fakes.llm_provider import FakeProvider, reply, tool_call
from tests.harness import RunningMesh

WAIT = "send_message_to_agent_and_wait_for_reply"
ASYNC = "send_message_to_agent_async"
BY_TAGS = "send_message_to_agents_matching_tags"


def agent(api: httpx.Client, name: str, *, model: str = "openai/m", **fields: Any) -> dict[str, Any]:
    body = {"name": name, "model": model, "memory_blocks": [{"label": "human", "value": ""}], **fields}
    response = api.post("/v1/agents", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def group(api: httpx.Client, agents: list[dict[str, Any]], **manager: Any) -> dict[str, Any]:
    body = {"name": "team", "agent_ids": [a["id"] for a in agents], "manager": manager}
    response = api.post("/v1/groups", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def send(api: httpx.Client, group_id: str, text: str, key: str = "", **fields: Any) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return api.post(
        f"/v1/groups/{group_id}/messages", json={"messages": [{"content": text}], **fields}, headers=headers
    )


def said(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(agent id, text) of every assistant message of a group answer."""
    return [
        (m["agent_id"], m["content"]) for m in body["messages"] if m["message_type"] == "assistant_message"
    ]


def user_texts(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "user"]


def tool_result(messages: list[dict[str, Any]]) -> str:
    return str(next(m["tool_return"] for m in messages if m["message_type"] == "tool_return_message"))


def wait_until(check: Any, seconds: float = 15.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("the condition never held")


# ----- policies -----


def test_a_round_robin_group_answers_in_order_and_each_member_hears_the_others(
    api: httpx.Client, llm: FakeProvider
) -> None:
    alpha, beta = agent(api, "alpha"), agent(api, "beta")
    team = group(api, [alpha, beta], type="round_robin")
    llm.script(reply("alpha here"), reply("beta here"))

    response = send(api, team["id"], "hello team")

    assert response.status_code == 200, response.text
    body = response.json()
    assert said(body) == [(alpha["id"], "alpha here"), (beta["id"], "beta here")]
    assert body["stop_reason"]["stop_reason"] == "end_turn"
    assert len(body["run_ids"]) == 2
    first, second = llm.requests()
    assert user_texts(first) == ["hello team"]
    assert user_texts(second) == ["hello team", "[alpha] alpha here"]
    runs = [api.get(f"/v1/runs/{run_id}").json() for run_id in body["run_ids"]]
    assert [r["agent_id"] for r in runs] == [alpha["id"], beta["id"]]
    assert {r["group_run_id"] for r in runs} == {body["group_run_id"]}
    # Each member's own history keeps the conversation: alpha sees its earlier turn on the next message.
    llm.script(reply("alpha again"), reply("beta again"))
    again = send(api, team["id"], "once more")
    assert said(again.json()) == [(alpha["id"], "alpha again"), (beta["id"], "beta again")]
    assert user_texts(llm.requests()[2]) == ["hello team", "once more"]


def test_a_supervisor_delegates_to_every_worker_and_answers_with_what_they_said(
    api: httpx.Client, llm: FakeProvider
) -> None:
    boss, w1, w2 = agent(api, "boss"), agent(api, "w1"), agent(api, "w2")
    team = api.post(
        "/v1/groups",
        json={
            "name": "supervised",
            "agent_ids": [w1["id"], w2["id"]],
            "manager": {"type": "supervisor", "manager_agent_id": boss["id"]},
        },
    ).json()
    llm.script(reply("count the apples"), reply("3 apples"), reply("4 apples"), reply("7 apples in all"))

    body = send(api, team["id"], "how many apples?").json()

    assert said(body) == [
        (boss["id"], "count the apples"),
        (w1["id"], "3 apples"),
        (w2["id"], "4 apples"),
        (boss["id"], "7 apples in all"),
    ]
    requests = llm.requests()
    assert "You supervise these agents" in requests[0]["messages"][-1]["content"]
    assert user_texts(requests[1]) == ["how many apples?", "[boss] count the apples"]
    assert user_texts(requests[3])[-2:] == ["[w1] 3 apples", "[w2] 4 apples"]


def test_a_dynamic_group_follows_its_manager_until_the_termination_token(
    api: httpx.Client, llm: FakeProvider
) -> None:
    lead, alpha, beta = agent(api, "lead"), agent(api, "alpha"), agent(api, "beta")
    team = api.post(
        "/v1/groups",
        json={
            "name": "dynamic",
            "agent_ids": [alpha["id"], beta["id"]],
            "manager": {"type": "dynamic", "manager_agent_id": lead["id"], "termination_token": "FINISHED"},
        },
    ).json()
    llm.script(reply("beta"), reply("b speaks"), reply("Alpha, please"), reply("a speaks"), reply("FINISHED"))

    body = send(api, team["id"], "discuss").json()

    assert [text for _, text in said(body) if _ != lead["id"]] == ["b speaks", "a speaks"]
    assert [a for a, _ in said(body) if a != lead["id"]] == [beta["id"], alpha["id"]]
    assert body["stop_reason"]["stop_reason"] == "end_turn"
    # The manager's choices are not relayed to the members.
    assert user_texts(llm.requests()[3]) == ["discuss", "[beta] b speaks"]


def test_a_dynamic_group_stops_at_its_turn_limit(api: httpx.Client, llm: FakeProvider) -> None:
    lead, alpha = agent(api, "lead"), agent(api, "alpha")
    team = api.post(
        "/v1/groups",
        json={
            "name": "limited",
            "agent_ids": [alpha["id"]],
            "manager": {"type": "dynamic", "manager_agent_id": lead["id"], "max_turns": 1},
        },
    ).json()
    llm.script(reply("alpha"), reply("a speaks"))

    body = send(api, team["id"], "go").json()

    assert body["stop_reason"]["stop_reason"] == "max_steps"
    assert len(llm.requests()) == 2


def test_a_sleeptime_group_shares_the_managers_blocks_and_runs_its_memory_agent_in_the_background(
    api: httpx.Client, llm: FakeProvider
) -> None:
    main = agent(api, "main")
    memory = api.post("/v1/agents", json={"name": "gardener", "model": "openai/gardener"}).json()
    team = api.post(
        "/v1/groups",
        json={
            "name": "with memory",
            "agent_ids": [memory["id"]],
            "manager": {"type": "sleeptime", "manager_agent_id": main["id"], "sleeptime_frequency": 1},
        },
    ).json()
    blocks = api.get(f"/v1/agents/{memory['id']}/core-memory/blocks").json()
    assert [b["id"] for b in blocks] == [b["id"] for b in main["blocks"]]
    llm.script(
        reply("noted"),
        tool_call("core_memory_append", {"label": "human", "content": "likes tea"}),
        reply("ok"),
    )

    body = send(api, team["id"], "I like tea").json()

    assert said(body) == [(main["id"], "noted")]
    runs = wait_until(
        lambda: [
            r
            for r in api.get("/v1/runs", params={"agent_id": memory["id"]}).json()
            if r["status"] == "completed"
        ]
    )
    assert len(runs) == 1
    assert "I like tea" in user_texts(llm.requests()[1])[0]
    shared = api.get(f"/v1/agents/{main['id']}/core-memory/blocks/human").json()
    assert shared["value"] == "likes tea"
    # The group's blocks are the manager's: deleting the group detaches them from the memory agent again.
    assert api.delete(f"/v1/groups/{team['id']}").status_code == 204
    assert api.get(f"/v1/agents/{memory['id']}/core-memory/blocks").json() == []
    assert api.get(f"/v1/agents/{main['id']}/core-memory/blocks/human").json()["value"] == "likes tea"


def test_shared_blocks_of_a_group_reach_every_member_and_go_with_the_group(api: httpx.Client) -> None:
    alpha, beta = agent(api, "alpha"), agent(api, "beta")
    team = api.post(
        "/v1/groups",
        json={
            "name": "shared",
            "agent_ids": [alpha["id"], beta["id"]],
            "shared_blocks": [{"label": "plan", "value": "v1"}],
        },
    ).json()
    (block_id,) = team["shared_block_ids"]
    for member in (alpha, beta):
        labels = [b["label"] for b in api.get(f"/v1/agents/{member['id']}/core-memory/blocks").json()]
        assert labels == ["human", "plan"]
    refused = api.delete(f"/v1/agents/{alpha['id']}")
    assert refused.status_code == 400
    assert refused.json()["reason"] == "AGENT_IN_GROUP"

    assert api.delete(f"/v1/groups/{team['id']}").status_code == 204
    assert api.get(f"/v1/blocks/{block_id}").status_code == 404
    assert api.get(f"/v1/groups/{team['id']}").status_code == 404
    assert api.delete(f"/v1/agents/{alpha['id']}").status_code == 204


def test_a_group_message_streams_every_members_turn_tagged_with_the_member(
    api: httpx.Client, llm: FakeProvider
) -> None:
    alpha, beta = agent(api, "alpha"), agent(api, "beta")
    team = group(api, [alpha, beta])
    llm.script(reply("one"), reply("two"))

    with api.stream(
        "POST", f"/v1/groups/{team['id']}/messages/stream", json={"messages": [{"content": "hi"}]}
    ) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]

    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    kinds = [(e["message_type"], e.get("agent_id")) for e in parsed]
    assert kinds == [
        ("member_turn", alpha["id"]),
        ("assistant_message", alpha["id"]),
        ("member_turn", beta["id"]),
        ("assistant_message", beta["id"]),
        ("stop_reason", None),
        ("usage_statistics", None),
    ]
    assert parsed[4]["group_run_id"] == parsed[4]["run_id"]
    assert parsed[4]["run_ids"] == [parsed[0]["run_id"], parsed[2]["run_id"]]


# ----- idempotency and cancellation -----


def test_a_group_message_retried_with_its_key_is_replayed_without_model_calls(
    api: httpx.Client, llm: FakeProvider
) -> None:
    alpha, beta = agent(api, "alpha"), agent(api, "beta")
    team = group(api, [alpha, beta])
    key = f"group-{uuid.uuid4()}"
    llm.script(reply("one"), reply("two"))
    first = send(api, team["id"], "hi", key)

    again = send(api, team["id"], "hi", key)

    assert again.json() == first.json()
    assert len(llm.requests()) == 2
    history = api.get(f"/v1/agents/{beta['id']}/messages").json()
    assert [m["message_type"] for m in history] == ["user_message", "user_message", "assistant_message"]
    other = send(api, team["id"], "something else", key)
    assert other.status_code == 422
    assert other.json()["reason"] == "IDEMPOTENCY_KEY_REUSED"
    runs = api.get(f"/v1/groups/{team['id']}/runs").json()
    assert [(r["status"], r["run_ids"]) for r in runs] == [("completed", first.json()["run_ids"])]


def test_a_cancelled_group_run_stops_its_member_and_nobody_speaks_after_it(
    api: httpx.Client, llm: FakeProvider
) -> None:
    alpha, beta = agent(api, "alpha"), agent(api, "beta")
    team = group(api, [alpha, beta])
    llm.script(reply("too slow", delay=10.0), reply("never"))
    answer: dict[str, httpx.Response] = {}
    sender = threading.Thread(target=lambda: answer.update(r=send(api, team["id"], "hi")))
    sender.start()
    run = wait_until(lambda: next(iter(api.get(f"/v1/groups/{team['id']}/runs").json()), None))
    wait_until(lambda: len(llm.requests()) == 1)

    cancelled = api.post(f"/v1/groups/{team['id']}/runs/{run['id']}/cancel")
    sender.join(15)

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["stop_reason"] == "cancelled"
    assert answer["r"].json()["stop_reason"]["stop_reason"] == "cancelled"
    member_run = api.get(f"/v1/runs/{cancelled.json()['run_ids'][0]}").json()
    assert member_run["status"] == "cancelled"
    assert len(llm.requests()) == 1
    assert api.get(f"/v1/agents/{beta['id']}/messages").json() == []


# ----- agent-to-agent messages -----


def attach(api: httpx.Client, agent_id: str, *names: str) -> None:
    for name in names:
        response = api.patch(f"/v1/agents/{agent_id}/tools/attach/tool-builtin-{name}")
        assert response.status_code == 200, response.text


def test_an_agent_asks_another_and_gets_its_reply_as_the_tool_result(
    api: httpx.Client, llm: FakeProvider
) -> None:
    asker, expert = agent(api, "asker"), agent(api, "expert")
    attach(api, asker["id"], WAIT)
    llm.script(
        tool_call(WAIT, {"agent_id": expert["id"], "message": "what is 6x7?"}),
        reply("42"),
        reply("The expert says 42."),
    )

    body = api.post(f"/v1/agents/{asker['id']}/messages", json={"messages": [{"content": "ask"}]}).json()

    assert tool_result(body["messages"]) == "42"
    assert body["messages"][-1]["content"] == "The expert says 42."
    (expert_run,) = api.get("/v1/runs", params={"agent_id": expert["id"]}).json()
    assert expert_run["parent_run_id"] == body["run_id"]
    assert "what is 6x7?" in user_texts(llm.requests()[1])[0]
    assert "asker" in user_texts(llm.requests()[1])[0]


def test_an_agent_sends_without_waiting_and_the_other_answers_in_its_own_run(
    api: httpx.Client, llm: FakeProvider
) -> None:
    sender, other = agent(api, "sender"), agent(api, "other")
    attach(api, sender["id"], ASYNC)
    llm.answer_model("later", reply("got it"))
    other = api.patch(f"/v1/agents/{other['id']}", json={"model": "openai/later"}).json()
    llm.script(tool_call(ASYNC, {"agent_id": other["id"], "message": "fyi"}), reply("sent"))

    body = api.post(f"/v1/agents/{sender['id']}/messages", json={"messages": [{"content": "tell"}]}).json()

    assert "does not reply" in tool_result(body["messages"])
    run = wait_until(
        lambda: next(
            (
                r
                for r in api.get("/v1/runs", params={"agent_id": other["id"]}).json()
                if r["status"] == "completed"
            ),
            None,
        )
    )
    assert run["parent_run_id"] == body["run_id"]
    history = api.get(f"/v1/agents/{other['id']}/messages").json()
    assert history[-1]["content"] == "got it"


def test_a_message_to_agents_with_tags_collects_every_reply(api: httpx.Client, llm: FakeProvider) -> None:
    tag = f"team-{uuid.uuid4().hex[:8]}"
    asker = agent(api, "asker")
    agent(api, "north", model="openai/north", tags=[tag])
    agent(api, "south", model="openai/south", tags=[tag])
    agent(api, "elsewhere", model="openai/north")
    attach(api, asker["id"], BY_TAGS)
    llm.answer_model("north", reply("cold"))
    llm.answer_model("south", reply("warm"))
    llm.script(tool_call(BY_TAGS, {"tags": [tag], "message": "weather?"}), reply("mixed"))

    body = api.post(f"/v1/agents/{asker['id']}/messages", json={"messages": [{"content": "poll"}]}).json()

    result = tool_result(body["messages"])
    assert result.startswith("Replies of 2 agent(s):")
    lines = sorted(result.splitlines()[1:])
    assert [line.split(": ", 1)[1] for line in lines] == ["cold", "warm"]
    assert [line.split(" (", 1)[0] for line in lines] == ["- north", "- south"]


def test_an_agent_cannot_ask_the_agent_that_waits_for_its_reply(api: httpx.Client, llm: FakeProvider) -> None:
    first, second = agent(api, "first"), agent(api, "second")
    attach(api, first["id"], WAIT)
    attach(api, second["id"], WAIT)
    llm.script(
        tool_call(WAIT, {"agent_id": second["id"], "message": "ping"}),
        tool_call(WAIT, {"agent_id": first["id"], "message": "pong"}),
        reply("I will answer instead"),
        reply("done"),
    )

    body = api.post(f"/v1/agents/{first['id']}/messages", json={"messages": [{"content": "go"}]}).json()

    assert tool_result(body["messages"]) == "I will answer instead"
    (second_run,) = api.get("/v1/runs", params={"agent_id": second["id"]}).json()
    messages = api.get(f"/v1/runs/{second_run['id']}/messages").json()
    assert "is waiting for your reply" in tool_result(messages)


def test_agents_messaging_each_other_without_waiting_stop_at_the_depth_limit(
    api: httpx.Client, llm: FakeProvider
) -> None:
    ping = agent(api, "ping", model="openai/ping", max_steps=1)
    pong = agent(api, "pong", model="openai/pong", max_steps=1)
    attach(api, ping["id"], ASYNC)
    attach(api, pong["id"], ASYNC)
    # Every turn of each sends the other a message: without guards this never ends.
    llm.answer_model("ping", tool_call(ASYNC, {"agent_id": pong["id"], "message": "ping"}))
    llm.answer_model("pong", tool_call(ASYNC, {"agent_id": ping["id"], "message": "pong"}))

    api.post(f"/v1/agents/{ping['id']}/messages", json={"messages": [{"content": "start"}]})

    def settled() -> list[dict[str, Any]] | None:
        runs = [
            *api.get("/v1/runs", params={"agent_id": ping["id"]}).json(),
            *api.get("/v1/runs", params={"agent_id": pong["id"]}).json(),
        ]
        return runs if len(runs) == 4 and all(r["status"] == "completed" for r in runs) else None

    runs = wait_until(settled)
    deepest = max(runs, key=lambda r: r["created_at"])
    assert "messages deep already" in tool_result(api.get(f"/v1/runs/{deepest['id']}/messages").json())
    time.sleep(0.5)  # nothing more may start; a fifth run would be the guard failing
    assert len(api.get("/v1/runs", params={"agent_id": ping["id"]}).json()) == 2


# ----- tenancy -----


@pytest.fixture(scope="module")
def other_org(mesh: RunningMesh) -> httpx.Client:
    with httpx.Client(base_url=mesh.http_url, headers=mesh.auth, timeout=30) as root:
        org = root.post("/v1/organizations", json={"name": f"groups-{uuid.uuid4().hex[:8]}"}).json()
        user = root.post("/v1/users", json={"name": "bob", "org_id": org["id"]}).json()
        key = root.post(
            "/v1/api-keys", json={"name": "k", "role": "admin", "user_id": user["id"], "org_id": org["id"]}
        ).json()
    return httpx.Client(
        base_url=mesh.http_url, headers={"Authorization": f"Bearer {key['secret']}"}, timeout=30
    )


def test_groups_and_messages_never_cross_organizations(
    api: httpx.Client, other_org: httpx.Client, llm: FakeProvider
) -> None:
    mine = agent(api, "mine")
    team = group(api, [mine])
    theirs = agent(other_org, "theirs")
    attach(other_org, theirs["id"], WAIT)

    assert other_org.get(f"/v1/groups/{team['id']}").status_code == 404
    assert send(other_org, team["id"], "hi").status_code == 404
    assert other_org.get(f"/v1/groups/{team['id']}/export").status_code == 404
    mixed = other_org.post("/v1/groups", json={"name": "mixed", "agent_ids": [theirs["id"], mine["id"]]})
    assert mixed.status_code == 404
    assert mixed.json()["reason"] == "AGENT_NOT_FOUND"
    llm.script(tool_call(WAIT, {"agent_id": mine["id"], "message": "hello?"}), reply("nobody there"))
    body = other_org.post(
        f"/v1/agents/{theirs['id']}/messages", json={"messages": [{"content": "go"}]}
    ).json()
    assert tool_result(body["messages"]) == f"Error: there is no agent {mine['id']}"
    assert api.get("/v1/runs", params={"agent_id": mine["id"]}).json() == []
    other_org.close()


async def test_two_messages_to_one_group_at_once_are_answered_one_after_the_other(
    mesh: RunningMesh, llm: FakeProvider
) -> None:
    async with httpx.AsyncClient(base_url=mesh.http_url, headers=mesh.auth, timeout=30) as client:
        created = [
            (await client.post("/v1/agents", json={"name": n, "model": "openai/m"})).json()
            for n in ("a", "b")
        ]
        team = (
            await client.post("/v1/groups", json={"name": "busy", "agent_ids": [a["id"] for a in created]})
        ).json()
        llm.script(reply("1", delay=0.3), reply("2"), reply("3"), reply("4"))
        first, second = await asyncio.gather(
            *(
                client.post(f"/v1/groups/{team['id']}/messages", json={"messages": [{"content": t}]})
                for t in ("x", "y")
            )
        )
    assert [r.status_code for r in (first, second)] == [200, 200]
    texts = sorted([[t for _, t in said(first.json())], [t for _, t in said(second.json())]])
    assert texts == [["1", "2"], ["3", "4"]]
