"""Checking a tool's arguments against its JSON schema, safely for schemas that MCP servers wrote.

A foreign schema is input like any other: a `pattern` such as `^(a+)+$` makes a backtracking regex
engine take exponential time (13.9 s for 29 characters with Python's `re`), and a deeply nested schema
exhausts the stack of a recursive validator. So schemas are capped in size and depth when they are
stored, and arguments are checked by `jsonschema-rs` with the linear-time `regex` engine (no
backtracking: lookaround and backreferences are not supported, and a schema that uses them is not
checked here; its server checks its own arguments), offline (no `$ref` is ever fetched), in a worker
thread, within a time cap.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema_rs

log = logging.getLogger(__name__)

# Deepest nesting of a schema or of arguments (objects and arrays) that is checked.
MAX_DEPTH = 64
# Errors reported to the model at most.
MAX_PROBLEMS = 10
_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="argument-check")


def depth(value: Any) -> int:
    """How deeply objects and arrays nest in a JSON value (iteratively: no recursion limit to hit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:
            stack.extend((child, level + 1) for child in children)
    return deepest


def schema_problem(schema_json: str, max_bytes: int) -> str | None:
    """Why a tool's input schema cannot be stored (too large or too deep), or None."""
    size = len(schema_json.encode())
    if size > max_bytes:
        return f"its input schema has {size} bytes; at most {max_bytes} are accepted"
    if depth(json.loads(schema_json)) > MAX_DEPTH:
        return f"its input schema nests deeper than {MAX_DEPTH} levels"
    return None


def _refuse_retrieval(uri: str) -> Any:
    raise ValueError(f"schemas are never fetched ({uri})")


@functools.lru_cache(maxsize=512)
def _validator(schema_json: str) -> jsonschema_rs.Validator | None:
    """The compiled validator of a schema (None: it cannot be checked safely here)."""
    try:
        schema = json.loads(schema_json or "{}")
        if not isinstance(schema, dict | bool) or depth(schema) > MAX_DEPTH:
            return None
        return jsonschema_rs.validator_for(
            schema,
            validate_formats=False,
            retriever=_refuse_retrieval,
            pattern_options=jsonschema_rs.RegexOptions(),
        )
    except (ValueError, jsonschema_rs.ReferencingError) as exc:
        log.info("a tool's input schema is not checked here: %s", str(exc).splitlines()[0][:200])
        return None


def _problems(schema_json: str, arguments: dict[str, Any]) -> list[str]:
    validator = _validator(schema_json)
    if validator is None:
        return []
    problems = []
    for error in validator.iter_errors(arguments):
        where = ".".join(str(p) for p in error.instance_path)
        problems.append(f"{where}: {error.message}" if where else error.message)
        if len(problems) == MAX_PROBLEMS:
            break
    return problems


async def argument_problems(schema_json: str, arguments: dict[str, Any], timeout: float) -> list[str]:
    """What is wrong with `arguments` for a tool's JSON schema, in words the model can act on."""
    if depth(arguments) > MAX_DEPTH:
        return [f"the arguments nest deeper than {MAX_DEPTH} levels"]
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(
            loop.run_in_executor(_executor, _problems, schema_json, arguments), timeout
        )
    except TimeoutError:
        return [f"the arguments could not be checked within {timeout:g} s"]
