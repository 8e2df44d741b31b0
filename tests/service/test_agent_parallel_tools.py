"""Tool calls the model asks for together run concurrently; their results keep the call order.

The tools service here is a test double that records when each RunTool starts and ends (the real
one cannot run custom tools yet); memory and the llm-gateway are the real services in this process.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest

from mnemo.agent.v1 import agent_pb2, agent_pb2_grpc
from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.tools.v1 import tool_pb2, tool_pb2_grpc
from mnemo_agent.app import build as build_agent
from mnemo_agent.settings import AgentSettings
from mnemo_core.actor import acting_as
from tests.fakes.llm_provider import FakeProvider, reply, tool_calls
from tests.service.conftest import Served, clean_environment, new_actor, serving

SLOW = 0.4


class RecordingTools(tool_pb2_grpc.ToolServiceServicer):
    """Two custom tools that take SLOW seconds each; every run's start and end time is kept."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, float, float]] = []
        self.tools = {
            f"tool-{name}": tool_pb2.Tool(
                id=f"tool-{name}",
                name=name,
                description=f"{name} slowly",
                json_schema=json.dumps({"type": "object", "properties": {"q": {"type": "string"}}}),
                tool_type=tool_pb2.TOOL_TYPE_CUSTOM,
                return_char_limit=80,
            )
            for name in ("fetch_weather", "fetch_news")
        }

    async def BatchGetTools(self, request: Any, context: Any) -> tool_pb2.BatchGetToolsResponse:
        return tool_pb2.BatchGetToolsResponse(tools=[self.tools[i] for i in request.tool_ids])

    async def RunTool(self, request: Any, context: Any) -> tool_pb2.RunToolResponse:
        started = time.monotonic()
        await asyncio.sleep(SLOW)
        self.runs.append((request.tool_id, started, time.monotonic()))
        args = json.loads(request.arguments_json)
        if args.get("q") == "fail":
            return tool_pb2.RunToolResponse(content="boom", status=message_pb2.TOOL_RETURN_STATUS_ERROR)
        return tool_pb2.RunToolResponse(
            content=f"{request.tool_id}: result for {args.get('q')} " + "!" * 100,
            status=message_pb2.TOOL_RETURN_STATUS_SUCCESS,
        )


class _ToolsApp:
    def __init__(self, servicer: RecordingTools) -> None:
        self.servicer = servicer

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        tool_pb2_grpc.add_ToolServiceServicer_to_server(self.servicer, server)
        return [tool_pb2.DESCRIPTOR.services_by_name["ToolService"].full_name]

    async def aclose(self) -> None:
        return None


@pytest.fixture(scope="module")
async def recording_tools() -> AsyncIterator[tuple[Served, RecordingTools]]:
    servicer = RecordingTools()
    async with serving(_ToolsApp(servicer)) as served:
        yield served, servicer


@pytest.fixture(scope="module")
async def agent_with_tools(
    tmp_path_factory: pytest.TempPathFactory,
    memory_service: Served,
    llm_service: Served,
    recording_tools: tuple[Served, RecordingTools],
) -> AsyncIterator[Served]:
    home = tmp_path_factory.mktemp("agent-tools")
    with clean_environment(home):
        settings = AgentSettings(
            home=home,
            memory_addr=memory_service.address,
            tools_addr=recording_tools[0].address,
            llm_addr=llm_service.address,
        )
    async with serving(await build_agent(settings)) as served:
        yield served


async def test_tool_calls_of_one_step_run_at_the_same_time_and_keep_their_order(
    agent_with_tools: Served, recording_tools: tuple[Served, RecordingTools], llm: FakeProvider
) -> None:
    _, tools = recording_tools
    tools.runs.clear()
    stub = agent_with_tools.stub(agent_pb2_grpc.AgentServiceStub)
    llm.script(
        tool_calls(
            [
                ("fetch_weather", {"q": "Paris"}, "c1"),
                ("fetch_news", {"q": "fail"}, "c2"),
                ("fetch_weather", {"q": "Rome"}, "c3"),
            ]
        ),
        reply("Here is everything."),
    )
    with acting_as(new_actor()):
        created = await stub.CreateAgent(
            agent_pb2.CreateAgentRequest(
                agent=agent_pb2.Agent(name="p", model="openai/m", tool_ids=list(tools.tools)),
                include_base_tools=False,
            )
        )
        result = await stub.SendMessage(
            agent_pb2.SendMessageRequest(
                agent_id=created.agent.id,
                messages=[message_pb2.Message(user=message_pb2.UserContent(text="news and weather"))],
            )
        )

    assert result.stop_reason == turn_pb2.STOP_REASON_END_TURN
    returns = [m.tool_return for m in result.messages if m.HasField("tool_return")]
    assert [r.tool_call_id for r in returns] == ["c1", "c2", "c3"]
    assert [r.status for r in returns] == [
        message_pb2.TOOL_RETURN_STATUS_SUCCESS,
        message_pb2.TOOL_RETURN_STATUS_ERROR,
        message_pb2.TOOL_RETURN_STATUS_SUCCESS,
    ]
    # The tool's return_char_limit applies, the marker included.
    assert returns[0].content == (
        "tool-fetch_weath\n[... truncated: the tool returned 137 characters; 16 are shown]"
    )
    assert len(returns[0].content) == 80
    # All three ran at once: each started before any other ended.
    assert len(tools.runs) == 3
    latest_start = max(start for _, start, _ in tools.runs)
    earliest_end = min(end for _, _, end in tools.runs)
    assert latest_start < earliest_end
    # The failing tool's error reached the model with the others.
    sent = llm.requests()[-1]["messages"]
    assert [m["tool_call_id"] for m in sent[-3:]] == ["c1", "c2", "c3"]
    assert sent[-2]["content"] == "boom"
