"""Derives a custom tool's name, description and JSON schema from its Python source, without running it.

The source is parsed with `ast` only: annotations are resolved from a fixed vocabulary of JSON-compatible
types (never evaluated), defaults must be literals, and the docstring (Google style) supplies the
descriptions. pydantic turns the resolved types into JSON Schema.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

import docstring_parser
from pydantic import TypeAdapter

from mnemo_core.errors import FieldViolation, InvalidArgument

MAX_SOURCE_CHARS = 100_000
TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
SUPPORTED_TYPES = (
    "str, int, float, bool, list[...], dict[str, ...], Literal[...], Optional[...], X | None, Any"
)

_SCALARS: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "Any": Any, "None": None}
_GENERICS = {"list", "List", "dict", "Dict", "Optional", "Union", "Literal"}


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """What the model sees of a custom tool, and how the sandbox calls it."""

    name: str
    description: str
    parameters: dict[str, Any]
    is_async: bool


class _Unsupported(Exception):
    """An annotation outside the JSON-compatible vocabulary."""


def _type_name(node: ast.expr) -> str | None:
    """`str`, `typing.List`, `t.Optional`: the last name of a plain or dotted reference."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.attr
    return None


def _resolve(node: ast.expr) -> Any:
    """The Python type an annotation stands for, built from the allowed vocabulary only."""
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        # A string annotation ("list[int]") is parsed, still never evaluated.
        try:
            return _resolve(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            raise _Unsupported(node.value) from None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return Union[_resolve(node.left), _resolve(node.right)]  # noqa: UP007 - built at run time
    name = _type_name(node)
    if name is not None:
        if name in _SCALARS:
            return _SCALARS[name]
        if name in ("list", "List"):
            return list[Any]
        if name in ("dict", "Dict"):
            return dict[str, Any]
        raise _Unsupported(name)
    if isinstance(node, ast.Subscript):
        outer = _type_name(node.value)
        if outer not in _GENERICS:
            raise _Unsupported(ast.unparse(node))
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if outer == "Literal":
            values = []
            for arg in args:
                if not isinstance(arg, ast.Constant) or not isinstance(arg.value, str | int | float | bool):
                    raise _Unsupported(ast.unparse(node))
                values.append(arg.value)
            return Literal[tuple(values)]
        resolved = [_resolve(arg) for arg in args]
        if outer in ("list", "List") and len(resolved) == 1:
            return list[resolved[0]]  # type: ignore[valid-type]
        if outer in ("dict", "Dict") and len(resolved) == 2 and resolved[0] is str:
            return dict[str, resolved[1]]  # type: ignore[valid-type]
        if outer == "Optional" and len(resolved) == 1:
            return Optional[resolved[0]]  # noqa: UP045 - built at run time
        if outer == "Union" and resolved:
            return Union[tuple(resolved)]  # noqa: UP007 - built at run time
    raise _Unsupported(ast.unparse(node))


def _schema_of(annotation: Any) -> dict[str, Any]:
    schema: dict[str, Any] = TypeAdapter(annotation).json_schema()
    return schema


def _literal_default(node: ast.expr) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _json_value(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list):
        return all(_json_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_value(v) for k, v in value.items())
    return False


def _public_functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_")
    ]


def analyze_source(source: str, field: str = "source_code") -> ToolDefinition:
    """The tool a source defines; INVALID_ARGUMENT naming every problem found in `field`."""
    if not source.strip():
        raise _invalid(field, ["is empty: write one Python function with a docstring"])
    if len(source) > MAX_SOURCE_CHARS:
        raise _invalid(field, [f"is {len(source)} characters long; the maximum is {MAX_SOURCE_CHARS}"])
    if "\x00" in source:
        raise _invalid(field, ["must not contain NUL characters"])
    try:
        tree = ast.parse(source, filename="<tool>")
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        raise _invalid(field, [f"is not valid Python ({where}): {exc.msg}"]) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise _invalid(field, [f"cannot be parsed: {exc}"]) from None
    functions = _public_functions(tree)
    if not functions:
        raise _invalid(
            field,
            ["defines no public top-level function; define exactly one (helpers may start with '_')"],
        )
    if len(functions) > 1:
        names = ", ".join(f.name for f in functions)
        raise _invalid(
            field,
            [
                f"defines {len(functions)} public top-level functions ({names}); "
                "keep exactly one and start helper names with '_'"
            ],
        )
    return _definition(functions[0], field)


def _definition(function: ast.FunctionDef | ast.AsyncFunctionDef, field: str) -> ToolDefinition:
    problems: list[str] = []
    name = function.name
    where = f"function '{name}' (line {function.lineno})"
    if not TOOL_NAME.match(name):
        problems.append(f"{where}: the name must be a letter then letters, digits or '_', at most 64")
    if function.decorator_list:
        problems.append(f"{where}: decorators are not supported")
    docstring = ast.get_docstring(function)
    parsed = docstring_parser.parse(docstring or "", style=docstring_parser.DocstringStyle.GOOGLE)
    description = "\n\n".join(p for p in (parsed.short_description, parsed.long_description) if p)
    if not docstring:
        problems.append(f"{where} has no docstring; describe what it does and its arguments (Google style)")
    elif not description:
        problems.append(f"{where}: the docstring has no description before its sections")
    args = function.args
    if args.vararg is not None:
        problems.append(f"{where}: '*{args.vararg.arg}' is not supported; the model passes named arguments")
    if args.kwarg is not None:
        problems.append(f"{where}: '**{args.kwarg.arg}' is not supported; the model passes named arguments")
    if args.posonlyargs:
        problems.append(f"{where}: positional-only parameters are not supported")
    documented = {p.arg_name: (p.description or "").strip() for p in parsed.params}
    parameters = _parameters(function, where, documented, problems)
    if problems:
        raise _invalid(field, problems)
    return ToolDefinition(
        name=name,
        description=description,
        parameters={
            "type": "object",
            "properties": parameters[0],
            "required": parameters[1],
            "additionalProperties": False,
        },
        is_async=isinstance(function, ast.AsyncFunctionDef),
    )


def _parameters(
    function: ast.FunctionDef | ast.AsyncFunctionDef,
    where: str,
    documented: dict[str, str],
    problems: list[str],
) -> tuple[dict[str, Any], list[str]]:
    """The JSON schema of each parameter and the required names; problems are appended to `problems`."""
    args = function.args
    parameters: list[tuple[ast.arg, ast.expr | None]] = []
    positional = args.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    parameters += list(zip(positional, defaults, strict=True))
    parameters += list(zip(args.kwonlyargs, args.kw_defaults, strict=True))
    properties: dict[str, Any] = {}
    required: list[str] = []
    for arg, default in parameters:
        label = f"{where}, parameter '{arg.arg}'"
        if arg.annotation is None:
            problems.append(f"{label} has no type annotation; use one of {SUPPORTED_TYPES}")
            continue
        try:
            schema = _schema_of(_resolve(arg.annotation))
        except _Unsupported:
            problems.append(
                f"{label}: type '{ast.unparse(arg.annotation)}' is not JSON-compatible; use {SUPPORTED_TYPES}"
            )
            continue
        if documented.get(arg.arg):
            schema["description"] = documented[arg.arg]
        if default is None:
            required.append(arg.arg)
        else:
            ok, value = _literal_default(default)
            if not ok or not _json_value(value):
                problems.append(
                    f"{label}: the default must be a JSON literal (number, string, bool, None, ...)"
                )
                continue
            schema["default"] = value
        properties[arg.arg] = schema
    for extra in sorted(set(documented) - {arg.arg for arg, _ in parameters}):
        problems.append(f"{where}: the docstring documents '{extra}', which is not a parameter")
    return properties, required


def _invalid(field: str, problems: list[str]) -> InvalidArgument:
    message = f"{field}: " + "; ".join(problems)
    return InvalidArgument(message, violations=[FieldViolation(field, p) for p in problems])
