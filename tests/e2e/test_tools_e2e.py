"""Custom and MCP tools through the whole mesh: REST, the agent loop, the sandbox and a real MCP server."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc
from mnemo.tools.v1 import tool_pb2, tool_pb2_grpc
from mnemo_core.actor import MEMBER
from mnemo_gateway.auth import DEFAULT_ACTOR
from tests.fakes.llm_provider import FakeProvider, reply, tool_calls
from tests.harness import RunningMesh

MCP_SERVER = str(Path(__file__).parents[1] / "fakes" / "mcp_server.py")
WEATHER = textwrap.dedent(
    '''
    import os

    def weather_report(city: str, days: int = 1) -> str:
        """Weather forecast for a city.

        Args:
            city: City name.
            days: Days ahead.
        """
        station = os.environ.get("STATION", "none")
        return f"{city}: sunny for {days} day(s) (station {station})"
    '''
)


def unique(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:8]}"


def renamed(source: str, old: str, new: str) -> str:
    return source.replace(f"def {old}(", f"def {new}(")


def create_tool(api: httpx.Client, source: str, **fields: Any) -> dict[str, Any]:
    response = api.post("/v1/tools", json={"source_code": source, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def create_agent(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"name": "tool-user", "model": "openai/gpt-4o-mini", "include_base_tools": False, **fields}
    response = api.post("/v1/agents", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def register_stdio_server(api: httpx.Client, prefix: str) -> dict[str, Any]:
    response = api.post(
        "/v1/mcp-servers",
        json={
            "name": unique("local"),
            "transport": "stdio",
            "command": sys.executable,
            "args": [MCP_SERVER],
            "env": {"MCP_SECRET": "hidden"},
            "tool_prefix": prefix,
        },
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def attach(api: httpx.Client, agent_id: str, tool_id: str) -> httpx.Response:
    return api.patch(f"/v1/agents/{agent_id}/tools/attach/{tool_id}")


def test_agent_calls_a_custom_tool_and_an_mcp_tool_in_one_turn_and_answers_with_their_results(
    api: httpx.Client, llm: FakeProvider
) -> None:
    name = unique("weather")
    tool = create_tool(api, renamed(WEATHER, "weather_report", name))
    prefix = unique("m") + "_"
    server = register_stdio_server(api, prefix)
    add = next(t for t in server["tools"] if t["mcp_tool_name"] == "add")
    agent = create_agent(api)
    assert attach(api, agent["id"], tool["id"]).status_code == 200
    attached = attach(api, agent["id"], add["id"])
    assert attached.status_code == 200, attached.text
    assert attached.json()["tool_ids"] == [tool["id"], add["id"]]
    env = api.patch(f"/v1/agents/{agent['id']}/tool-environment", json={"set": {"STATION": "OSL-7"}})
    assert env.json() == {"names": ["STATION"]}
    llm.script(
        tool_calls(
            [
                (name, {"city": "Oslo", "days": 2}, "call_weather"),
                (add["name"], {"a": 40, "b": 2}, "call_add"),
            ]
        ),
        reply("Oslo will be sunny, and 40 + 2 = 42."),
    )

    response = api.post(
        f"/v1/agents/{agent['id']}/messages", json={"messages": [{"role": "user", "content": "hi"}]}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stop_reason"]["stop_reason"] == "end_turn"
    kinds = [m["message_type"] for m in body["messages"]]
    assert kinds == [
        "tool_call_message",
        "tool_call_message",
        "tool_return_message",
        "tool_return_message",
        "assistant_message",
    ]
    returns = {m["tool_call_id"]: m for m in body["messages"] if m["message_type"] == "tool_return_message"}
    assert returns["call_weather"]["status"] == "success"
    assert returns["call_weather"]["tool_return"] == "Oslo: sunny for 2 day(s) (station OSL-7)"
    assert returns["call_add"]["status"] == "success"
    assert returns["call_add"]["tool_return"] == "42"
    assert body["messages"][-1]["content"] == "Oslo will be sunny, and 40 + 2 = 42."
    # The model saw both tools' schemas, and both results before it answered.
    first, second = llm.requests()[-2:]
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert offered[name]["parameters"]["required"] == ["city"]
    assert offered[add["name"]]["parameters"]["required"] == ["a", "b"]
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == ["Oslo: sunny for 2 day(s) (station OSL-7)", "42"]


def test_failing_tools_are_tool_errors_and_the_turn_goes_on(api: httpx.Client, llm: FakeProvider) -> None:
    broken = unique("broken")
    tool = create_tool(api, f'def {broken}() -> int:\n    """Breaks."""\n    return 1 // 0\n')
    server = register_stdio_server(api, unique("c") + "_")
    crash = next(t for t in server["tools"] if t["mcp_tool_name"] == "crash")
    agent = create_agent(api, tool_ids=[tool["id"], crash["id"]])
    llm.script(tool_calls([(broken, {}, "call_b"), (crash["name"], {}, "call_c")]), reply("Both failed."))

    response = api.post(
        f"/v1/agents/{agent['id']}/messages", json={"messages": [{"role": "user", "content": "go"}]}
    )

    assert response.status_code == 200, response.text
    returns = {
        m["tool_call_id"]: m
        for m in response.json()["messages"]
        if m["message_type"] == "tool_return_message"
    }
    assert returns["call_b"]["status"] == "error"
    assert "ZeroDivisionError" in returns["call_b"]["tool_return"]
    assert returns["call_c"]["status"] == "error"
    assert response.json()["messages"][-1]["content"] == "Both failed."


def test_rest_tools_lifecycle_and_direct_runs(api: httpx.Client) -> None:
    name = unique("weather")
    source = renamed(WEATHER, "weather_report", name)
    invalid = api.post("/v1/tools", json={"source_code": "def f(x):\n    pass"})
    checked = api.post("/v1/tools?validate_only=true", json={"source_code": source})
    tool = create_tool(api, source, tags=["e2e"], return_char_limit=500)
    duplicate = api.post("/v1/tools", json={"source_code": source})
    fetched = api.get(f"/v1/tools/{tool['id']}")
    listed = api.get("/v1/tools", params={"tool_type": "custom", "tags": "e2e", "name": name})
    ran = api.post(f"/v1/tools/{tool['id']}/run", json={"arguments": {"city": "Rome"}})
    bad_args = api.post(f"/v1/tools/{tool['id']}/run", json={"arguments": {"town": "Rome"}})
    patched = api.patch(f"/v1/tools/{tool['id']}", json={"tags": ["e2e", "changed"]})
    deleted = api.delete(f"/v1/tools/{tool['id']}")
    gone = api.get(f"/v1/tools/{tool['id']}")

    assert invalid.status_code == 422
    assert invalid.json()["violations"][0]["field"] == "tool.source_code"
    assert "has no docstring" in invalid.json()["violations"][0]["description"]
    assert checked.status_code == 201
    assert checked.json()["name"] == name
    assert tool["json_schema"]["properties"]["city"] == {"type": "string", "description": "City name."}
    assert duplicate.status_code == 409
    assert fetched.json()["source_code"] == source
    assert [t["id"] for t in listed.json()] == [tool["id"]]
    assert ran.json()["status"] == "success"
    assert ran.json()["content"] == "Rome: sunny for 1 day(s) (station none)"
    assert bad_args.status_code == 200
    assert bad_args.json()["status"] == "error"
    assert '"city" is a required property' in bad_args.json()["content"]
    assert patched.json()["tags"] == ["e2e", "changed"]
    assert deleted.status_code == 204
    assert gone.status_code == 404


def test_attach_and_detach_validate_and_are_idempotent(api: httpx.Client) -> None:
    tool = create_tool(api, renamed(WEATHER, "weather_report", unique("w")))
    agent = create_agent(api)
    missing = attach(api, agent["id"], "tool-does-not-exist")
    twice = [attach(api, agent["id"], tool["id"]).json()["tool_ids"] for _ in range(2)]
    listed = api.get(f"/v1/agents/{agent['id']}/tools")
    no_agent = attach(api, "agent-nope", tool["id"])
    api.delete(f"/v1/tools/{tool['id']}")
    detached = api.patch(f"/v1/agents/{agent['id']}/tools/detach/{tool['id']}")
    detached_again = api.patch(f"/v1/agents/{agent['id']}/tools/detach/{tool['id']}")

    assert missing.status_code == 404
    assert missing.json()["reason"] == "TOOL_NOT_FOUND"
    assert twice == [[tool["id"]], [tool["id"]]]
    assert [t["id"] for t in listed.json()] == [tool["id"]]
    assert no_agent.status_code == 404
    assert detached.status_code == 200
    assert detached.json()["tool_ids"] == []
    assert detached_again.json()["tool_ids"] == []


async def test_concurrent_attaches_all_land(api: httpx.Client, mesh: RunningMesh) -> None:
    tools = [create_tool(api, renamed(WEATHER, "weather_report", unique("race"))) for _ in range(8)]
    agent = create_agent(api)
    metadata = mesh.hop("org-default", "user-default")
    async with grpc.aio.insecure_channel(mesh.address("agent")) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        await asyncio.gather(
            *(
                stub.AttachTool(
                    agent_pb2.AttachToolRequest(agent_id=agent["id"], tool_id=t["id"]), metadata=metadata
                )
                for t in tools
            )
        )
        final = await stub.GetAgent(agent_pb2.GetAgentRequest(agent_id=agent["id"]), metadata=metadata)

    assert sorted(final.agent.tool_ids) == sorted(t["id"] for t in tools)


def test_mcp_servers_over_rest(api: httpx.Client) -> None:
    server = register_stdio_server(api, unique("r") + "_")
    fetched = api.get(f"/v1/mcp-servers/{server['id']}")
    listed = api.get("/v1/mcp-servers")
    tools = api.get(f"/v1/mcp-servers/{server['id']}/tools")
    refreshed = api.post(f"/v1/mcp-servers/{server['id']}/refresh")
    shout = next(t for t in tools.json() if t["mcp_tool_name"] == "shout")
    ran = api.post(f"/v1/tools/{shout['id']}/run", json={"arguments": {"text": "quiet"}})
    unreachable = api.post(
        "/v1/mcp-servers",
        json={"name": unique("down"), "transport": "streamable_http", "url": "http://127.0.0.1:9/mcp"},
    )
    deleted = api.delete(f"/v1/mcp-servers/{server['id']}")
    gone_tool = api.get(f"/v1/tools/{shout['id']}")

    assert fetched.json()["env_names"] == ["MCP_SECRET"]
    assert "hidden" not in fetched.text + listed.text + json.dumps(server)
    assert server["id"] in [s["id"] for s in listed.json()]
    assert sorted(t["id"] for t in tools.json()) == sorted(t["id"] for t in refreshed.json()["tools"])
    assert ran.json() == {**ran.json(), "status": "success", "content": "QUIET"}
    assert unreachable.status_code == 503
    assert unreachable.json()["reason"] == "MCP_SERVER_UNREACHABLE"
    assert deleted.status_code == 204
    assert gone_tool.status_code == 404


def test_deleting_an_agent_deletes_its_tool_secrets(api: httpx.Client, mesh: RunningMesh) -> None:
    agent = create_agent(api)
    env = api.patch(f"/v1/agents/{agent['id']}/tool-environment", json={"set": {"TOKEN": "s3cret"}})
    assert env.json() == {"names": ["TOKEN"]}
    metadata = mesh.hop(DEFAULT_ACTOR.org_id, DEFAULT_ACTOR.user_id)

    assert api.delete(f"/v1/agents/{agent['id']}").status_code == 204

    with grpc.insecure_channel(mesh.address("tools")) as channel:
        left = tool_pb2_grpc.ToolServiceStub(channel).GetToolEnvironment(
            tool_pb2.GetToolEnvironmentRequest(agent_id=agent["id"]), metadata=metadata
        )
    assert list(left.names) == []


def test_an_agents_secrets_reach_only_its_own_turns_and_admins(
    api: httpx.Client, mesh: RunningMesh, llm: FakeProvider
) -> None:
    name = unique("token")
    tool = create_tool(
        api,
        f'import os\n\ndef {name}() -> str:\n    """Tells TOKEN."""\n    return os.environ.get("TOKEN", "none")\n',
    )
    agent = create_agent(api, tool_ids=[tool["id"]])
    other = create_agent(api)
    for owner, secret in ((agent, "s3cret"), (other, "other-s3cret")):
        set_env = api.patch(f"/v1/agents/{owner['id']}/tool-environment", json={"set": {"TOKEN": secret}})
        assert set_env.status_code == 200, set_env.text
    key = api.post("/v1/api-keys", json={"name": unique("member"), "role": "member"})
    assert key.status_code == 201, key.text
    llm.script(tool_calls([(name, {}, "call_token")]), reply("done"))

    def direct(client: httpx.Client, agent_id: str) -> str:
        ran = client.post(f"/v1/tools/{tool['id']}/run", json={"agent_id": agent_id})
        assert ran.status_code == 200, ran.text
        return str(ran.json()["content"])

    with httpx.Client(
        base_url=mesh.http_url, headers={"Authorization": f"Bearer {key.json()['secret']}"}
    ) as member:
        members_direct = direct(member, agent["id"])
        turn = member.post(
            f"/v1/agents/{agent['id']}/messages", json={"messages": [{"role": "user", "content": "?"}]}
        )
    admins_direct, admins_unattached = direct(api, agent["id"]), direct(api, other["id"])
    # A member calling RunTool itself, naming the agent's (finished) run: not a current turn.
    metadata = mesh.hop(DEFAULT_ACTOR.org_id, "user-default", MEMBER)
    with grpc.insecure_channel(mesh.address("tools")) as channel:
        forged = tool_pb2_grpc.ToolServiceStub(channel).RunTool(
            tool_pb2.RunToolRequest(tool_id=tool["id"], agent_id=agent["id"], run_id=turn.json()["run_id"]),
            metadata=metadata,
        )

    returned = [m for m in turn.json()["messages"] if m["message_type"] == "tool_return_message"]
    assert [m["tool_return"] for m in returned] == ["s3cret"]
    assert admins_direct == "s3cret"
    assert members_direct == admins_unattached == forged.content == "none"
