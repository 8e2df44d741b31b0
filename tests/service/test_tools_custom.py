"""Custom Python tools over real gRPC: create, derive schemas, update, delete, run in the sandbox."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from google.protobuf import field_mask_pb2

from mnemo.common.v1 import message_pb2
from mnemo.tools.v1 import tool_pb2
from mnemo_core.actor import ADMIN, Actor, acting_as
from mnemo_core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from tests.service.conftest import new_actor, new_agent_id

if TYPE_CHECKING:
    from mnemo.tools.v1.tool_pb2_grpc import ToolServiceAsyncStub as Tools

SUCCESS = message_pb2.TOOL_RETURN_STATUS_SUCCESS
ERROR = message_pb2.TOOL_RETURN_STATUS_ERROR

WEATHER = textwrap.dedent(
    '''
    import json

    def get_weather(city: str, days: int = 1, unit: "Literal['c', 'f']" = "c", hourly: bool | None = None) -> str:
        """Forecast for a city.

        Uses a made-up model.

        Args:
            city: Name of the city.
            days: How many days ahead.
            unit: Temperature unit.
        """
        return json.dumps({"city": city, "days": days, "unit": unit, "hourly": hourly})
    '''
)


def source(name: str, body: str, params: str = "", doc: str = "Does a thing.") -> str:
    return f'def {name}({params}):\n    """{doc}"""\n' + textwrap.indent(textwrap.dedent(body), "    ")


def on_host(path: str) -> bool:
    return os.path.exists(path)


async def create(tools: Tools, code: str, *, validate_only: bool = False, **fields: object) -> tool_pb2.Tool:
    response = await tools.CreateTool(
        tool_pb2.CreateToolRequest(
            tool=tool_pb2.Tool(source_code=code, **fields), validate_only=validate_only
        )
    )
    return response.tool


async def run(
    tools: Tools, tool_id: str, args: object = None, agent_id: str = ""
) -> tool_pb2.RunToolResponse:
    return await tools.RunTool(
        tool_pb2.RunToolRequest(tool_id=tool_id, arguments_json=json.dumps(args or {}), agent_id=agent_id)
    )


async def test_create_tool_derives_name_description_and_schema_from_source(
    tools: Tools, actor: Actor
) -> None:
    with acting_as(actor):
        tool = await create(tools, WEATHER, tags=["weather", "demo"])

    assert tool.id.startswith("tool-")
    assert tool.name == "get_weather"
    assert tool.tool_type == tool_pb2.TOOL_TYPE_CUSTOM
    assert tool.description == "Forecast for a city.\n\nUses a made-up model."
    assert list(tool.tags) == ["weather", "demo"]
    assert tool.return_char_limit == 50_000
    assert tool.source_code == WEATHER
    assert json.loads(tool.json_schema) == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "Name of the city."},
            "days": {"type": "integer", "description": "How many days ahead.", "default": 1},
            "unit": {
                "type": "string",
                "enum": ["c", "f"],
                "description": "Temperature unit.",
                "default": "c",
            },
            "hourly": {"anyOf": [{"type": "boolean"}, {"type": "null"}], "default": None},
        },
        "required": ["city"],
        "additionalProperties": False,
    }


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        ("def f(:\n    pass", "is not valid Python (line 1"),
        ("x = 1", "defines no public top-level function"),
        ("def a():\n    '''A.'''\ndef b():\n    '''B.'''", "defines 2 public top-level functions (a, b)"),
        ("def f(x: int):\n    return x", "has no docstring"),
        ("def f(x):\n    '''Doc.'''", "parameter 'x' has no type annotation"),
        ("def f(x: set[int]):\n    '''Doc.'''", "type 'set[int]' is not JSON-compatible"),
        (
            "import datetime\ndef f(x: datetime.date):\n    '''Doc.'''",
            "type 'datetime.date' is not JSON-compatible",
        ),
        ("def f(*args: int):\n    '''Doc.'''", "'*args' is not supported"),
        ("def f(x: int = int('3')):\n    '''Doc.'''", "the default must be a JSON literal"),
        (
            "def f(x: int):\n    '''Doc.\n\n    Args:\n        y: nope\n    '''",
            "documents 'y', which is not a parameter",
        ),
        ("", "is empty"),
    ],
)
async def test_invalid_source_is_rejected_naming_the_problem(
    tools: Tools, actor: Actor, code: str, problem: str
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await create(tools, code)

    assert [v.field for v in refused.value.violations] == ["tool.source_code"] * len(refused.value.violations)
    assert any(problem in v.description for v in refused.value.violations), refused.value.violations
    with acting_as(actor):
        listed = await tools.ListTools(tool_pb2.ListToolsRequest(tool_type=tool_pb2.TOOL_TYPE_CUSTOM))
    assert list(listed.tools) == []


async def test_validation_never_executes_the_source(tools: Tools, actor: Actor, tmp_path: Path) -> None:
    marker = str(tmp_path / "ran")
    code = f"open({marker!r}, 'w').write('ran')\n" + source("touch", "return 1")
    with acting_as(actor):
        tool = await create(tools, code, validate_only=True)

    assert tool.name == "touch"
    assert not on_host(marker)


async def test_validate_only_stores_nothing(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        await create(tools, WEATHER, validate_only=True)
        listed = await tools.ListTools(tool_pb2.ListToolsRequest(names=["get_weather"]))

    assert list(listed.tools) == []


async def test_a_second_tool_with_the_same_name_is_already_exists(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        first = await create(tools, WEATHER)
        with pytest.raises(AlreadyExists) as taken:
            await create(tools, WEATHER)

    assert taken.value.reason == "TOOL_NAME_TAKEN"
    assert taken.value.metadata["tool_id"] == first.id


async def test_a_tool_named_like_a_builtin_is_already_exists(tools: Tools, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(AlreadyExists):
        await create(tools, source("core_memory_append", "return 1", "label: str"))


async def test_tools_of_another_organization_are_invisible(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        tool = await create(tools, WEATHER)
    other = new_actor()
    with acting_as(other):
        with pytest.raises(NotFound):
            await tools.GetTool(tool_pb2.GetToolRequest(tool_id=tool.id))
        with pytest.raises(NotFound):
            await run(tools, tool.id, {"city": "x"})
        with pytest.raises(NotFound):
            await tools.DeleteTool(tool_pb2.DeleteToolRequest(tool_id=tool.id))
        same_name = await create(tools, WEATHER)

    assert same_name.id != tool.id


async def test_list_tools_filters_by_tags(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        await create(tools, source("one", "return 1"), tags=["a", "b"])
        await create(tools, source("two", "return 2"), tags=["a"])
        both = await tools.ListTools(tool_pb2.ListToolsRequest(tags=["a", "b"]))
        a_only = await tools.ListTools(tool_pb2.ListToolsRequest(tags=["a"]))

    assert [t.name for t in both.tools] == ["one"]
    assert [t.name for t in a_only.tools] == ["one", "two"]


async def test_update_tool_rederives_the_schema_and_keeps_the_id(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        tool = await create(tools, source("calc", "return x", "x: int"))
        new_code = source("calc", "return x * y", "x: int, y: int = 2", doc="Multiplies.")
        updated = (
            await tools.UpdateTool(
                tool_pb2.UpdateToolRequest(
                    tool=tool_pb2.Tool(
                        id=tool.id, source_code=new_code, tags=["math"], return_char_limit=100
                    ),
                    update_mask=field_mask_pb2.FieldMask(paths=["source_code", "tags", "return_char_limit"]),
                )
            )
        ).tool
        result = await run(tools, tool.id, {"x": 4})

    assert updated.id == tool.id
    assert updated.description == "Multiplies."
    assert json.loads(updated.json_schema)["properties"]["y"] == {"type": "integer", "default": 2}
    assert list(updated.tags) == ["math"]
    assert updated.return_char_limit == 100
    assert result.content == "8"


async def test_update_with_invalid_source_changes_nothing(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        tool = await create(tools, source("keep", "return 1"))
        with pytest.raises(InvalidArgument):
            await tools.UpdateTool(
                tool_pb2.UpdateToolRequest(
                    tool=tool_pb2.Tool(id=tool.id, source_code="def keep(:"),
                    update_mask=field_mask_pb2.FieldMask(paths=["source_code"]),
                )
            )
        stored = (await tools.GetTool(tool_pb2.GetToolRequest(tool_id=tool.id))).tool

    assert stored.source_code == tool.source_code


async def test_builtin_tools_cannot_be_updated_or_deleted(tools: Tools, actor: Actor) -> None:
    builtin = "tool-builtin-core_memory_append"
    with acting_as(actor):
        with pytest.raises(PermissionDenied):
            await tools.DeleteTool(tool_pb2.DeleteToolRequest(tool_id=builtin))
        with pytest.raises(PermissionDenied):
            await tools.UpdateTool(
                tool_pb2.UpdateToolRequest(
                    tool=tool_pb2.Tool(id=builtin, tags=["x"]),
                    update_mask=field_mask_pb2.FieldMask(paths=["tags"]),
                )
            )


async def test_deleted_tool_is_gone(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        tool = await create(tools, WEATHER)
        await tools.DeleteTool(tool_pb2.DeleteToolRequest(tool_id=tool.id))
        with pytest.raises(NotFound):
            await tools.GetTool(tool_pb2.GetToolRequest(tool_id=tool.id))
        again = await create(tools, WEATHER)

    assert again.id != tool.id


async def test_run_tool_returns_the_function_result_and_captured_output(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        tool = await create(tools, WEATHER)
        result = await run(tools, tool.id, {"city": "Oslo", "days": 3})
        printing = await create(
            tools,
            source("chatty", "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\nreturn [1, 2]"),
        )
        chatty = await run(tools, printing.id)

    assert result.status == SUCCESS
    assert json.loads(result.content) == {"city": "Oslo", "days": 3, "unit": "c", "hourly": None}
    assert result.duration_seconds > 0
    assert chatty.content == "[1, 2]"
    assert chatty.stdout == "to out\n"
    assert chatty.stderr == "to err\n"


async def test_async_tools_are_awaited(tools: Tools, actor: Actor) -> None:
    code = 'import asyncio\nasync def later(x: int) -> int:\n    """Later."""\n    await asyncio.sleep(0.01)\n    return x + 1'
    with acting_as(actor):
        tool = await create(tools, code)
        result = await run(tools, tool.id, {"x": 1})

    assert result.content == "2"


async def test_a_raising_tool_is_an_error_result_with_its_traceback(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        tool = await create(tools, source("divide", "return a / b", "a: float, b: float"))
        result = await run(tools, tool.id, {"a": 1, "b": 0})

    assert result.status == ERROR
    assert result.content.startswith("Error: ZeroDivisionError: division by zero")
    assert 'File "<tool>", line 3, in divide' in result.content


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"a": "one", "b": 2}', 'a: "one" is not of type "number"'),
        ('{"a": 1}', '"b" is a required property'),
        ('{"a": 1, "b": 2, "c": 3}', "Additional properties are not allowed ('c' was unexpected)"),
    ],
)
async def test_bad_arguments_are_an_error_result_the_model_can_act_on(
    tools: Tools, actor: Actor, arguments: str, problem: str
) -> None:
    with acting_as(actor):
        tool = (await tools.ListTools(tool_pb2.ListToolsRequest(names=["divide2"]))).tools or [
            await create(tools, source("divide2", "return a / b", "a: float, b: float"))
        ]
        result = await tools.RunTool(tool_pb2.RunToolRequest(tool_id=tool[0].id, arguments_json=arguments))

    assert result.status == ERROR
    assert problem in result.content


async def test_long_returns_are_truncated_with_a_marker_within_the_limit(tools: Tools, actor: Actor) -> None:
    with acting_as(actor):
        tool = await create(tools, source("long", "return 'x' * 5000"), return_char_limit=300)
        result = await run(tools, tool.id)

    assert result.status == SUCCESS
    assert len(result.content) <= 300
    assert result.content.startswith("xxx")
    assert result.content.endswith("[... truncated: the tool returned 5000 characters; 234 are shown]")
    assert result.content.count("x") == 234


async def test_agent_environment_variables_are_named_never_returned_and_kept_from_members_direct_runs(
    tools: Tools, actor: Actor
) -> None:
    agent = new_agent_id()
    code = source("env", "import os\nreturn dict(os.environ)")
    with acting_as(Actor(actor.org_id, "admin-1", ADMIN)):
        updated = await tools.UpdateToolEnvironment(
            tool_pb2.UpdateToolEnvironmentRequest(agent_id=agent, set={"API_KEY": "s3cret", "REGION": "eu"})
        )
    with acting_as(actor):
        tool = await create(tools, code)
        # Setting is for admins; a member may remove (as deleting the agent does).
        with pytest.raises(PermissionDenied) as member_sets:
            await tools.UpdateToolEnvironment(
                tool_pb2.UpdateToolEnvironmentRequest(agent_id=agent, set={"REGION": "us"})
            )
        removed = await tools.UpdateToolEnvironment(
            tool_pb2.UpdateToolEnvironmentRequest(agent_id=agent, unset=["REGION"])
        )
        listed = await tools.GetToolEnvironment(tool_pb2.GetToolEnvironmentRequest(agent_id=agent))
        # A member naming the agent is not the agent's turn (tests/e2e has the turns and the admins).
        named = await run(tools, tool.id, agent_id=agent)
        nobody = await run(tools, tool.id)
    with acting_as(new_actor()):
        foreign = await tools.GetToolEnvironment(tool_pb2.GetToolEnvironmentRequest(agent_id=agent))

    assert list(updated.names) == ["API_KEY", "REGION"]
    assert list(removed.names) == ["API_KEY"]
    assert list(listed.names) == ["API_KEY"]
    assert "s3cret" not in str(updated) + str(removed) + str(listed)
    assert json.loads(named.content) == {}
    assert json.loads(nobody.content) == {}
    assert list(foreign.names) == []
    assert member_sets.value.reason == "ADMIN_ROLE_REQUIRED"


async def test_bad_environment_variable_names_are_invalid_argument(tools: Tools, actor: Actor) -> None:
    with acting_as(Actor(actor.org_id, "admin-1", ADMIN)), pytest.raises(InvalidArgument) as refused:
        await tools.UpdateToolEnvironment(
            tool_pb2.UpdateToolEnvironmentRequest(agent_id=new_agent_id(), set={"1BAD": "x"})
        )

    assert refused.value.violations[0].field == "set[1BAD]"


async def test_tool_timeout_is_bounded_by_the_server_maximum(tools: Tools, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await create(tools, source("slow", "return 1"), timeout_seconds=100_000)

    assert refused.value.violations[0].field == "tool.timeout_seconds"


@pytest.mark.parametrize(
    "requirement", ["-e /etc", "pkg @ file:///etc/passwd", "not a requirement!!", "--index-url=http://x"]
)
async def test_pip_requirements_must_be_plain_requirements(
    tools: Tools, actor: Actor, requirement: str
) -> None:
    with acting_as(actor), pytest.raises(InvalidArgument) as refused:
        await create(tools, source("needs", "return 1"), pip_requirements=[requirement])

    assert refused.value.violations[0].field == "tool.pip_requirements[0]"


async def test_memory_tools_are_not_run_by_the_tools_service(tools: Tools, actor: Actor) -> None:
    with acting_as(actor), pytest.raises(FailedPrecondition) as refused:
        await run(tools, "tool-builtin-core_memory_append", {"label": "human", "content": "x"})

    assert refused.value.reason == "TOOL_NOT_RUNNABLE_HERE"
