"""The line-aware memory tools through the whole mesh: an agent that edits its blocks by line, the errors the
model reads and recovers from, memory_finish_edits, and switching an agent's memory tool set."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.test_turn import blocks_by_label, create_agent, send
from tests.fakes.llm_provider import FakeProvider, reply, tool_call

LINE_TOOLS = {"memory_insert", "memory_replace", "memory_rethink", "memory_finish_edits"}
CLASSIC_TOOLS = {"core_memory_append", "core_memory_replace"}


def tool_names(api: httpx.Client, agent: dict[str, Any]) -> set[str]:
    return {tool["name"] for tool in api.get(f"/v1/agents/{agent['id']}/tools").json()}


def tool_returns(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (m["status"], m["tool_return"])
        for m in body["messages"]
        if m["message_type"] == "tool_return_message"
    ]


def test_an_agent_edits_its_blocks_by_line_and_recovers_from_precise_errors(
    api: httpx.Client, llm: FakeProvider
) -> None:
    agent = create_agent(
        api,
        memory_tool_set="lines",
        memory_blocks=[{"label": "human", "value": "Name: Ada\nLikes tea\nLikes cake", "limit": 200}],
    )
    assert agent["memory_tool_set"] == "lines"
    names = tool_names(api, agent)
    assert names >= LINE_TOOLS
    assert not CLASSIC_TOOLS & names
    llm.script(
        tool_call("memory_insert", {"label": "human", "new_str": "Born 1815", "insert_line": 1}),
        tool_call("memory_replace", {"label": "human", "old_str": "Likes", "new_str": "Loves"}),
        tool_call("memory_replace", {"label": "human", "old_str": "3: Likes tea", "new_str": "Loves tea"}),
        tool_call("memory_replace", {"label": "human", "old_str": "Likes tea", "new_str": "Loves tea"}),
        tool_call("memory_insert", {"label": "human", "new_str": "x", "insert_line": 40}),
        tool_call("memory_finish_edits", {}),
    )

    body = send(api, agent["id"], "I was born in 1815 and I love tea.").json()

    assert body["stop_reason"]["stop_reason"] == "end_turn"
    results = tool_returns(body)
    assert results[0][0] == "success"
    assert results[1][0] == "error"
    assert "occurs 2 times in block 'human' (starting on lines 3, 4)" in results[1][1]
    assert results[2][0] == "error"
    assert "leave them out" in results[2][1]
    assert results[3][0] == "success"
    assert results[4][0] == "error"
    assert "between 0 (insert first) and 4 (insert last)" in results[4][1]
    assert results[5] == ("success", "Memory edits finished.")
    human = blocks_by_label(api, agent["id"])["human"]
    assert human["value"] == "Name: Ada\nBorn 1815\nLoves tea\nLikes cake"
    first = llm.requests()[0]
    offered = {tool["function"]["name"] for tool in first["tools"]}
    assert offered >= LINE_TOOLS
    system = first["messages"][0]["content"]
    assert "1: Name: Ada\n2: Likes tea\n3: Likes cake" in system
    assert "the numbers are not part of the text" in system
    assert "1: Name: Ada\n2: Born 1815\n3: Likes tea" in llm.requests()[1]["messages"][0]["content"]
    kept = api.get(f"/v1/blocks/{human['id']}/history").json()
    assert [v["operation"] for v in kept] == ["replace", "insert", "create"]
    assert {v["run_id"] for v in kept[:2]} == {body["run_id"]}


def test_memory_rethink_rewrites_a_block_whole_within_its_limit(api: httpx.Client, llm: FakeProvider) -> None:
    agent = create_agent(
        api, memory_tool_set="lines", memory_blocks=[{"label": "human", "value": "a\nb\nc", "limit": 20}]
    )
    llm.script(
        tool_call("memory_rethink", {"label": "human", "new_memory": "x" * 21}),
        tool_call("memory_rethink", {"label": "human", "new_memory": "Ada; likes tea"}),
        reply("Tidied."),
    )

    body = send(api, agent["id"], "Tidy up.").json()

    results = tool_returns(body)
    assert results[0][0] == "error"
    assert "would hold 21 characters but its limit is 20" in results[0][1]
    assert results[1][0] == "success"
    assert blocks_by_label(api, agent["id"])["human"]["value"] == "Ada; likes tea"


def test_changing_the_memory_tool_set_swaps_the_built_in_editing_tools(api: httpx.Client) -> None:
    agent = create_agent(api)
    assert agent["memory_tool_set"] == "classic"
    assert tool_names(api, agent) >= CLASSIC_TOOLS

    switched = api.patch(f"/v1/agents/{agent['id']}", json={"memory_tool_set": "lines"})
    assert switched.status_code == 200, switched.text
    names = tool_names(api, agent)
    assert names >= LINE_TOOLS
    assert not CLASSIC_TOOLS & names
    assert {"archival_memory_search", "conversation_search"} <= names

    back = api.patch(f"/v1/agents/{agent['id']}", json={"memory_tool_set": "classic"}).json()
    assert back["memory_tool_set"] == "classic"
    assert not LINE_TOOLS & tool_names(api, agent)
    assert api.patch(f"/v1/agents/{agent['id']}", json={"memory_tool_set": "words"}).status_code == 422
