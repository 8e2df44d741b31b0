"""The richer tool rules through the whole mesh: checked when an agent is created or changed, and enforced by
what each model call is offered, with refusals the model reads."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.test_turn import create_agent, send
from tests.fakes.llm_provider import FakeProvider, reply, tool_call, tool_calls


def offered(request: dict[str, Any]) -> list[str]:
    return sorted(tool["function"]["name"] for tool in request.get("tools", []))


def tool_returns(body: dict[str, Any]) -> list[str]:
    return [m["tool_return"] for m in body["messages"] if m["message_type"] == "tool_return_message"]


def test_contradicting_or_malformed_rules_are_refused_with_field_violations(api: httpx.Client) -> None:
    refused = api.post(
        "/v1/agents",
        json={
            "name": "contradictions",
            "model": "openai/gpt-4o-mini",
            "tool_rules": [
                {"tool_name": "send", "type": "terminal"},
                {"tool_name": "send", "type": "continue_loop"},
                {
                    "tool_name": "check",
                    "type": "conditional",
                    "branches": [{"pattern": "(unclosed", "next_tool": "x"}],
                },
            ],
        },
    )
    assert refused.status_code == 422
    assert [v["field"] for v in refused.json()["violations"]] == ["agent.tool_rules[2].branches[0].pattern"]

    contradiction = api.post(
        "/v1/agents",
        json={
            "name": "contradictions",
            "model": "openai/gpt-4o-mini",
            "tool_rules": [
                {"tool_name": "send", "type": "terminal"},
                {"tool_name": "send", "type": "continue_loop"},
                {"tool_name": "stage", "type": "parent_last", "children": ["commit"]},
                {"tool_name": "commit", "type": "run_first"},
            ],
        },
    )
    assert contradiction.status_code == 422
    assert contradiction.json()["reason"] == "TOOL_RULES_CONTRADICT"
    assert [v["field"] for v in contradiction.json()["violations"]] == [
        "agent.tool_rules[1]",
        "agent.tool_rules[3]",
    ]

    agent = create_agent(api)
    patched = api.patch(
        f"/v1/agents/{agent['id']}",
        json={"tool_rules": [{"tool_name": "a", "type": "allowed_children", "children": []}]},
    )
    assert patched.status_code == 422
    assert patched.json()["violations"][0]["field"] == "agent.tool_rules[0].children"


def test_a_turn_cannot_end_before_its_required_tool_and_children_constrain_the_next_step(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(
        api,
        tool_rules=[
            {"tool_name": "core_memory_append", "type": "required_before_exit"},
            {
                "tool_name": "archival_memory_insert",
                "type": "allowed_children",
                "children": ["core_memory_append"],
            },
        ],
    )
    stored = agent["tool_rules"][1]
    assert (stored["type"], stored["children"]) == ("allowed_children", ["core_memory_append"])
    llm.script(
        reply("Bye."),
        tool_call("archival_memory_insert", {"content": "Ada was born in 1815."}),
        tool_call("conversation_search", {"query": "birthday"}),
        tool_call("core_memory_append", {"label": "human", "content": "Born 1815"}),
        reply("Saved. Bye."),
    )

    body = send(api, agent["id"], "I was born in 1815.").json()

    assert body["stop_reason"]["stop_reason"] == "end_turn"
    requests = llm.requests()
    assert [r.get("tool_choice") for r in requests] == [
        "required",
        "required",
        "required",
        "required",
        "auto",
    ]
    assert "a rule requires calling core_memory_append first" in requests[1]["messages"][-1]["content"]
    assert offered(requests[2]) == ["core_memory_append"]
    assert tool_returns(body)[1] == (
        "Error: after archival_memory_insert a rule allows only core_memory_append to be called next"
    )
    history = api.get(f"/v1/agents/{agent['id']}/messages", params={"limit": 100}).json()
    assert [m["event_type"] for m in history if m["message_type"] == "event_message"] == ["tool_rule"]


def test_a_conditional_rule_picks_the_next_tool_from_the_output_and_per_step_counts_refuse_extras(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(
        api,
        llm_options={"parallel_tool_calls": True},
        tool_rules=[
            {
                "tool_name": "core_memory_append",
                "type": "conditional",
                "branches": [
                    {"pattern": "^Error", "next_tool": "core_memory_replace"},
                    {"pattern": "^Appended", "next_tool": "archival_memory_insert"},
                ],
            },
            {"tool_name": "core_memory_append", "type": "max_count_per_step", "max_calls": 1},
        ],
    )
    llm.script(
        tool_calls(
            [
                ("core_memory_append", {"label": "human", "content": "Likes tea"}, "a1"),
                ("core_memory_append", {"label": "human", "content": "Likes cake"}, "a2"),
            ]
        ),
        tool_call("archival_memory_insert", {"content": "Ada likes tea."}),
        reply("Noted."),
    )

    body = send(api, agent["id"], "I like tea and cake.").json()

    returns = tool_returns(body)
    assert returns[0].startswith("Appended to block 'human'")
    assert (
        returns[1]
        == "Error: 'core_memory_append' may be called at most 1 time in one step; call it again in your next step"
    )
    second = llm.requests()[1]
    assert (offered(second), second.get("tool_choice")) == (["archival_memory_insert"], "required")


def test_the_new_rules_and_the_memory_tool_set_travel_in_an_agent_file(api: httpx.Client) -> None:
    rules = [
        {
            "tool_name": "archival_memory_search",
            "type": "conditional",
            "branches": [{"pattern": "^No results", "next_tool": "conversation_search"}],
            "default_next_tool": "memory_insert",
        },
        {"tool_name": "memory_insert", "type": "required_before_exit"},
    ]
    agent = create_agent(api, memory_tool_set="lines", tool_rules=rules)

    document = api.get(f"/v1/agents/{agent['id']}/export").json()
    imported = api.post("/v1/agents/import", json=document)

    assert imported.status_code == 201, imported.text
    twin = imported.json()
    assert document["agents"][0]["memory_tool_set"] == "lines"
    assert twin["memory_tool_set"] == "lines"
    assert twin["tool_rules"] == agent["tool_rules"]
    assert twin["tool_ids"] == agent["tool_ids"]
