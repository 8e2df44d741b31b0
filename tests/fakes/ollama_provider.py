"""A fake Ollama server over real HTTP: /api/chat (JSON and NDJSON streaming), /api/tags, /api/show and
/api/embed, in Ollama's native wire format.

Tests script chat replies (text, thinking, tool calls, errors, delays, pauses between lines) and the models
it serves, and read back the requests. With nothing scripted it answers "ok". A test fixture only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.scripted_server import ScriptedServer, ScriptState

# Models the fake serves: name -> (context length, capabilities, embedding length).
DEFAULT_MODELS: dict[str, tuple[int, list[str], int]] = {
    "llama3.2:latest": (131072, ["completion", "tools"], 3072),
    "nomic-embed-text:latest": (2048, ["embedding"], 768),
}
CREATED = "2026-01-01T00:00:00.000000Z"


def reply(
    text: str,
    *,
    thinking: str = "",
    prompt_eval_count: int = 10,
    eval_count: int = 5,
    done_reason: str = "stop",
    delay: float = 0.0,
    line_delay: float = 0.0,
    pieces: int = 3,
) -> dict[str, Any]:
    """A scripted answer (streamed as `pieces` lines of text, `line_delay` seconds apart)."""
    return {
        "content": text,
        "thinking": thinking,
        "tool_calls": [],
        "prompt_eval_count": prompt_eval_count,
        "eval_count": eval_count,
        "done_reason": done_reason,
        "delay": delay,
        "line_delay": line_delay,
        "pieces": pieces,
    }


def tool_calls(calls: list[tuple[str, dict[str, Any]]], *, text: str = "") -> dict[str, Any]:
    """A scripted answer that calls tools (Ollama sends each call whole, arguments as an object)."""
    item = reply(text)
    item["tool_calls"] = [{"function": {"name": name, "arguments": arguments}} for name, arguments in calls]
    return item


def error(status: int, message: str) -> dict[str, Any]:
    """A scripted error response, `{"error": message}` as Ollama sends it."""
    return {"status": status, "error": message}


def stream_error(after_lines: int, message: str) -> dict[str, Any]:
    """An answer whose stream carries an error line after `after_lines` lines."""
    item = reply("partial answer that never ends", pieces=5)
    item["stream_error"] = {"after": after_lines, "error": message}
    return item


def fake_embedding(text: str, dimension: int) -> list[float]:
    """A deterministic vector for `text` (equal texts, equal vectors)."""
    seed = hashlib.sha256(text.encode()).digest()
    return [((seed[i % len(seed)] + i) % 17 - 8) / 8 for i in range(dimension)]


def _split(text: str, pieces: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def build_app(state: ScriptState, models: dict[str, tuple[int, list[str], int]]) -> Starlette:
    """The fake's HTTP app."""

    def known(name: str) -> bool:
        return name in models or f"{name}:latest" in models

    def not_found(name: str) -> JSONResponse:
        return JSONResponse({"error": f'model "{name}" not found, try pulling it first'}, status_code=404)

    async def chat(request: Request) -> Response:
        body = await request.json()
        item = await state.take(request, body) or reply("ok")
        if item.get("delay"):
            await asyncio.sleep(item["delay"])
        if item.get("status"):
            return JSONResponse({"error": item["error"]}, status_code=item["status"])
        if not known(body.get("model", "")):
            return not_found(body.get("model", ""))
        model = body["model"]
        final = {
            "model": model,
            "created_at": CREATED,
            "done": True,
            "done_reason": item["done_reason"],
            "total_duration": 1000,
            "prompt_eval_count": item["prompt_eval_count"],
            "eval_count": item["eval_count"],
        }
        if not body.get("stream", True):
            message: dict[str, Any] = {"role": "assistant", "content": item["content"]}
            if item["thinking"]:
                message["thinking"] = item["thinking"]
            if item["tool_calls"]:
                message["tool_calls"] = item["tool_calls"]
            return JSONResponse({**final, "message": message})
        lines: list[dict[str, Any]] = []
        if item["thinking"]:
            lines.append({"role": "assistant", "content": "", "thinking": item["thinking"]})
        lines += [
            {"role": "assistant", "content": piece} for piece in _split(item["content"], item["pieces"])
        ]
        lines += [{"role": "assistant", "content": "", "tool_calls": [call]} for call in item["tool_calls"]]
        broken = item.get("stream_error")

        async def send() -> AsyncIterator[bytes]:
            finished = False
            try:
                for n, message in enumerate(lines):
                    if broken and n == broken["after"]:
                        yield (json.dumps({"error": broken["error"]}) + "\n").encode()
                        finished = True
                        return
                    part = {"model": model, "created_at": CREATED, "message": message, "done": False}
                    yield (json.dumps(part) + "\n").encode()
                    if item.get("line_delay"):
                        await asyncio.sleep(item["line_delay"])
                yield (json.dumps({**final, "message": {"role": "assistant", "content": ""}}) + "\n").encode()
                finished = True
            finally:
                state.stream_ended(finished=finished)

        return StreamingResponse(send(), media_type="application/x-ndjson")

    async def tags(request: Request) -> Response:
        state.record(request, None)
        return JSONResponse(
            {
                "models": [
                    {
                        "name": name,
                        "model": name,
                        "modified_at": CREATED,
                        "size": 1000,
                        "digest": hashlib.sha256(name.encode()).hexdigest(),
                        "details": {"format": "gguf", "family": "llama", "parameter_size": "3B"},
                    }
                    for name in models
                ]
            }
        )

    async def show(request: Request) -> Response:
        body = await request.json()
        state.record(request, body)
        name = body.get("model", "")
        entry = models.get(name) or models.get(f"{name}:latest")
        if entry is None:
            return not_found(name)
        context, capabilities, width = entry
        return JSONResponse(
            {
                "modelfile": "",
                "parameters": "",
                "template": "",
                "details": {"format": "gguf", "family": "llama"},
                "model_info": {
                    "general.architecture": "llama",
                    "llama.context_length": context,
                    "llama.embedding_length": width,
                },
                "capabilities": capabilities,
                "modified_at": CREATED,
            }
        )

    async def embed(request: Request) -> Response:
        body = await request.json()
        state.record(request, body)
        name = body.get("model", "")
        entry = models.get(name) or models.get(f"{name}:latest")
        if entry is None:
            return not_found(name)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return JSONResponse(
            {
                "model": name,
                "embeddings": [fake_embedding(t, entry[2]) for t in texts],
                "prompt_eval_count": sum(len(t.split()) for t in texts),
            }
        )

    return Starlette(
        routes=[
            Route("/api/chat", chat, methods=["POST"]),
            Route("/api/tags", tags, methods=["GET"]),
            Route("/api/show", show, methods=["POST"]),
            Route("/api/embed", embed, methods=["POST"]),
        ]
    )


class FakeOllama(ScriptedServer):
    """The fake Ollama server; `base_url` is what Ollama's host setting takes."""

    def __init__(self, port: int = 0, models: dict[str, tuple[int, list[str], int]] | None = None) -> None:
        served = dict(DEFAULT_MODELS if models is None else models)
        super().__init__(lambda state: build_app(state, served), port)
        self.base_url = self.root
