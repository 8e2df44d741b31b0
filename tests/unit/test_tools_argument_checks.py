"""Checking tool arguments against foreign schemas: linear-time patterns, no fetching, bounded size and depth."""

from __future__ import annotations

import json
import socket

from mnemo_tools.argument_checks import MAX_DEPTH, argument_problems, depth, schema_problem

OBJECT = (
    '{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"],"additionalProperties":false}'
)


def nested(levels: int) -> dict[str, object]:
    schema: dict[str, object] = {"type": "string"}
    for _ in range(levels - 1):
        schema = {"type": "array", "items": schema}
    return {"type": "object", "properties": {"x": schema}}


async def test_problems_name_the_argument() -> None:
    assert await argument_problems(OBJECT, {"n": 1}, 2) == []
    assert await argument_problems(OBJECT, {"n": "x"}, 2) == ['n: "x" is not of type "integer"']
    assert await argument_problems(OBJECT, {}, 2) == ['"n" is a required property']


async def test_a_backtracking_pattern_is_matched_in_linear_time() -> None:
    schema = json.dumps({"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}})

    problems = await argument_problems(schema, {"s": "a" * 100_000 + "!"}, 30)

    assert len(problems) == 1
    assert problems[0].endswith('does not match "^(a+)+$"')


async def test_a_pattern_the_linear_engine_cannot_run_leaves_the_arguments_to_the_server() -> None:
    schema = json.dumps(
        {"type": "object", "properties": {"s": {"type": "string", "pattern": "(?=a)(a|b)\\1"}}}
    )

    assert await argument_problems(schema, {"s": "zz"}, 2) == []


async def test_remote_references_are_never_fetched() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    schema = json.dumps(
        {"type": "object", "properties": {"x": {"$ref": f"http://127.0.0.1:{port}/schema.json"}}}
    )
    try:
        problems = await argument_problems(schema, {"x": 1}, 2)
        try:
            listener.accept()
            fetched = True
        except BlockingIOError:
            fetched = False
    finally:
        listener.close()

    assert problems == []
    assert not fetched


async def test_arguments_nested_too_deeply_are_refused_without_validating() -> None:
    deep: object = 1
    for _ in range(10_000):
        deep = [deep]

    assert await argument_problems(OBJECT, {"n": deep}, 2) == [
        f"the arguments nest deeper than {MAX_DEPTH} levels"
    ]


def test_schemas_beyond_the_size_or_depth_caps_are_refused() -> None:
    assert schema_problem(OBJECT, 1000) is None
    assert schema_problem(OBJECT, 50) == f"its input schema has {len(OBJECT)} bytes; at most 50 are accepted"
    assert schema_problem(json.dumps(nested(MAX_DEPTH + 5)), 1 << 20) == (
        f"its input schema nests deeper than {MAX_DEPTH} levels"
    )
    assert depth(nested(3)) == 5
