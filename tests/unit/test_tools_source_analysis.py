"""Schema derivation from Python source (no execution), truncation, and requirement checks."""

from __future__ import annotations

import pytest

from mnemo_core.errors import InvalidArgument
from mnemo_tools.environments import check_requirements
from mnemo_tools.source_analysis import analyze_source


@pytest.mark.parametrize(
    ("annotation", "schema"),
    [
        ("str", {"type": "string"}),
        ("int", {"type": "integer"}),
        ("float", {"type": "number"}),
        ("bool", {"type": "boolean"}),
        ("list[int]", {"type": "array", "items": {"type": "integer"}}),
        ("typing.List[str]", {"type": "array", "items": {"type": "string"}}),
        ("dict[str, float]", {"type": "object", "additionalProperties": {"type": "number"}}),
        ("Optional[int]", {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
        ("int | None", {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
        ("Literal['a', 'b']", {"type": "string", "enum": ["a", "b"]}),
        ("Any", {}),
        ("'list[str]'", {"type": "array", "items": {"type": "string"}}),
    ],
)
def test_annotations_map_to_json_schema(annotation: str, schema: dict[str, object]) -> None:
    definition = analyze_source(f'def f(x: {annotation}):\n    """Doc."""')

    assert definition.parameters["properties"]["x"] == schema


@pytest.mark.parametrize(
    "annotation", ["set[int]", "bytes", "tuple[int, int]", "dict[int, str]", "MyClass", "list[int, str]"]
)
def test_non_json_annotations_are_refused(annotation: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        analyze_source(f'def f(x: {annotation}):\n    """Doc."""')

    assert "is not JSON-compatible" in refused.value.violations[0].description


def test_every_problem_of_a_function_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as refused:
        analyze_source("@decorate\ndef f(a, *rest, b: set[int], **more):\n    pass")

    descriptions = " | ".join(v.description for v in refused.value.violations)
    for problem in (
        "decorators are not supported",
        "has no docstring",
        "'*rest'",
        "'**more'",
        "parameter 'a'",
        "parameter 'b'",
    ):
        assert problem in descriptions


def test_private_helpers_and_imports_may_sit_beside_the_tool() -> None:
    source = 'import math\n\nLIMIT = 3\n\ndef _helper():\n    return 1\n\nasync def tool(n: int) -> int:\n    """Tool."""\n    return n'
    definition = analyze_source(source)

    assert definition.name == "tool"
    assert definition.is_async


def test_keyword_only_parameters_with_defaults_are_optional() -> None:
    definition = analyze_source('def f(a: int, *, b: str = "x", c: list[int] = [1]):\n    """Doc."""')

    assert definition.parameters["required"] == ["a"]
    assert definition.parameters["properties"]["c"]["default"] == [1]


def test_requirements_are_plain_pep508_names() -> None:
    assert check_requirements(["humanize==4.9.0", " requests>=2 "], "r") == ["humanize==4.9.0", "requests>=2"]
    for bad in ("-r other.txt", "x @ https://example.com/x.whl", "", "==1.0"):
        with pytest.raises(InvalidArgument):
            check_requirements([bad], "r")
