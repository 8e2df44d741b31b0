"""Custom tools with pip requirements: installed once (wheels only) into a cached environment."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mnemo.common.v1 import message_pb2
from mnemo.tools.v1 import tool_pb2, tool_pb2_grpc
from mnemo_core.actor import acting_as
from mnemo_tools.app import build as build_tools
from mnemo_tools.settings import ToolsSettings
from tests.fakes.wheels import GREETING, build_wheel
from tests.service.conftest import Served, clean_environment, new_actor, serving


@pytest.fixture
async def offline_tools(tmp_path: Path) -> AsyncIterator[Served]:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    build_wheel(wheels)
    home = tmp_path / "home"
    with clean_environment(home):
        settings = ToolsSettings(home=home, sandbox_pip_find_links=str(wheels), sandbox_pip_offline=True)
    app = await build_tools(settings)
    async with serving(app) as served:
        yield served


CODE = '''
def greet(who: str) -> str:
    """Greets someone with the installed package."""
    import mnemo_greeting
    return mnemo_greeting.greet(who)
'''


async def test_a_tool_imports_its_requirement_from_a_cached_environment(offline_tools: Served) -> None:
    tools = offline_tools.stub(tool_pb2_grpc.ToolServiceStub)
    with acting_as(new_actor()):
        tool = (
            await tools.CreateTool(
                tool_pb2.CreateToolRequest(
                    tool=tool_pb2.Tool(source_code=CODE, pip_requirements=["mnemo_greeting==1.0"])
                )
            )
        ).tool
        first = await tools.RunTool(
            tool_pb2.RunToolRequest(tool_id=tool.id, arguments_json=json.dumps({"who": "Ada"}))
        )
        second = await tools.RunTool(
            tool_pb2.RunToolRequest(tool_id=tool.id, arguments_json=json.dumps({"who": "Bob"}))
        )

    assert list(tool.pip_requirements) == ["mnemo_greeting==1.0"]
    assert first.status == message_pb2.TOOL_RETURN_STATUS_SUCCESS, first.content
    assert first.content == f"{GREETING}, Ada"
    assert second.content == f"{GREETING}, Bob"
    # Installed once: the second run reuses the environment and is as fast as a plain run.
    assert second.duration_seconds < first.duration_seconds
    environments = list((offline_tools.app.executor._packages._root).iterdir())  # type: ignore[attr-defined]
    assert len([p for p in environments if (p / ".complete").is_file()]) == 1


async def test_a_requirement_that_cannot_be_installed_is_a_tool_error(offline_tools: Served) -> None:
    tools = offline_tools.stub(tool_pb2_grpc.ToolServiceStub)
    with acting_as(new_actor()):
        tool = (
            await tools.CreateTool(
                tool_pb2.CreateToolRequest(
                    tool=tool_pb2.Tool(source_code=CODE, pip_requirements=["mnemo-no-such-package==9.9"])
                )
            )
        ).tool
        result = await tools.RunTool(
            tool_pb2.RunToolRequest(tool_id=tool.id, arguments_json='{"who": "Ada"}')
        )

    assert result.status == message_pb2.TOOL_RETURN_STATUS_ERROR
    assert result.content.startswith("Error: the tool's requirements are not available: could not install")
    assert "mnemo-no-such-package" in result.content
