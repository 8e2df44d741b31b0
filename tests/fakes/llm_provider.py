"""A fake LLM provider speaking the OpenAI chat-completions wire format over real HTTP.

Tests script its replies (text, tool calls, errors, delays) and read back the requests it got;
with nothing scripted it answers "ok" at once (the zero-latency provider of the benchmarks).
Requests with `"stream": true` are answered as server-sent chunks (`pieces` text deltas,
`chunk_delay` seconds apart, tool calls in fragments, usage last when asked for). It also
serves /v1/embeddings (deterministic vectors) and /v1/models. A model can be given a fixed reply
(`answer_model`), and the fake can play a model with a small context window (`limit_context`:
longer prompts get the provider's context-length error).
The Files and Batches APIs are there too: `/v1/files` takes a multipart JSONL upload, `/v1/batches`
creates a batch of its chat requests, which completes after `batch_polls` retrieves: then each
request is answered like a chat request (script, fixed replies, context limit, body checks) into an
output file and an error file, read back through `/v1/files/{id}/content`.
A test fixture only: never a runtime default.

For chaos runs it injects faults at random (`inject_faults`: 429 with Retry-After, 500, timeouts, streams
cut part-way, slow first tokens) and can converse (answer each request from its last message, tool calls
included) instead of following a script, for many clients at once.

Run standalone: `python -m tests.fakes.llm_provider --port 8399`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from random import Random
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.background import KEEP_ALIVE, BackgroundServer, free_port

_ids = itertools.count(1)


def reply(
    text: str, *, prompt_tokens: int = 0, completion_tokens: int = 0, delay: float = 0.0
) -> dict[str, Any]:
    """A scripted plain-text answer."""
    return {"content": text, "usage": _usage(prompt_tokens, completion_tokens), "delay": delay}


def tool_call(
    name: str,
    arguments: dict[str, Any] | str,
    *,
    call_id: str | None = None,
    content: str | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> dict[str, Any]:
    """A scripted answer that calls one tool."""
    return tool_calls(
        [(name, arguments, call_id)],
        content=content,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


def tool_calls(
    calls: list[tuple[str, dict[str, Any] | str, str | None]],
    *,
    content: str | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> dict[str, Any]:
    """A scripted answer that calls several tools at once."""
    return {
        "content": content,
        "tool_calls": [
            {
                "id": call_id or f"call_{next(_ids)}",
                "name": name,
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            }
            for name, arguments, call_id in calls
        ],
        "usage": _usage(prompt_tokens, completion_tokens),
    }


def error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    err_type: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A scripted provider error (HTTP status + OpenAI error body)."""
    return {
        "status": status,
        "error": {"message": message, "type": err_type, "code": code},
        "headers": headers or {},
    }


def _usage(prompt: int, completion: int) -> dict[str, int] | None:
    if not prompt and not completion:
        return None
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _State:
    def __init__(self, *, record: bool = True) -> None:
        self.script: deque[dict[str, Any]] = deque()
        self.requests: list[dict[str, Any]] = []
        self.record = record
        self.lock = threading.Lock()
        # Streams the client closed before the fake had sent everything, and streams sent whole.
        self.abandoned_streams = 0
        self.finished_streams = 0
        # Fixed replies per model name, used instead of the script.
        self.by_model: dict[str, dict[str, Any]] = {}
        # Prompts longer than this many characters fail with context_length_exceeded (0: no limit).
        self.context_limit = 0
        # Files (id -> (purpose, bytes)) and batches (id -> Batch object) of the Files/Batches APIs.
        self.files: dict[str, tuple[str, bytes]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        # Retrieves of a batch before it completes.
        self.batch_polls = 1
        # Answers each chat request from its last message instead of the script (`converse`).
        self.conversing = False
        # Faults injected into chat requests at random (`inject_faults`), and how many of each were.
        self.faults = Faults()
        self.injected: dict[str, int] = {}


@dataclass
class Faults:
    """Chances (0..1) that a chat request meets each fault; `hang` is how long a timed-out request waits."""

    rate_limit: float = 0.0  # 429 with Retry-After
    server_error: float = 0.0  # 500
    timeout: float = 0.0  # no answer for `hang` seconds
    truncate: float = 0.0  # a stream that stops part-way: the connection drops, or it just ends
    slow_first_token: float = 0.0  # `slow` seconds before the first byte
    hang: float = 5.0
    slow: float = 1.0
    retry_after: float = 1.0
    seed: int = 0
    random: Random = field(default_factory=Random)

    def draw(self) -> str | None:
        """The fault this request meets, if any."""
        roll = self.random.random()
        for name in ("rate_limit", "server_error", "timeout", "truncate", "slow_first_token"):
            chance = float(getattr(self, name))
            if roll < chance:
                return name
            roll -= chance
        return None


# What a conversing fake answers: a user message with `#remember <fact>` gets a core_memory_append of the
# fact (then "noted" after the tool's return); any other gets "ack: <its text>".
REMEMBER = "#remember "


def conversing_reply(body: dict[str, Any]) -> dict[str, Any]:
    """The reply of a conversing fake, from the request's last message (the same request, the same reply)."""
    last = (body.get("messages") or [{}])[-1]
    if last.get("role") == "tool":
        return reply("noted")
    text = str(last.get("content") or "")
    if isinstance(last.get("content"), list):
        text = " ".join(str(part.get("text", "")) for part in last["content"] if isinstance(part, dict))
    if REMEMBER in text:
        fact = text.split(REMEMBER, 1)[1].strip()
        return tool_call("core_memory_append", {"label": "human", "content": fact})
    return reply(f"ack: {text.strip()[-80:]}")


class _Truncated(Exception):
    """Raised inside a streamed answer to drop the connection part-way."""


def prompt_chars(body: dict[str, Any]) -> int:
    """Characters of a chat request's messages (content and tool-call arguments)."""
    total = 0
    for message in body.get("messages", []):
        total += len(str(message.get("content") or ""))
        for call in message.get("tool_calls") or []:
            total += len(call["function"]["arguments"])
    return total


# Models /v1/models lists.
MODELS = ["gpt-4o-mini", "gpt-test", "text-embedding-3-small"]
EMBEDDING_DIMENSION = 8


def streamed(item: dict[str, Any], *, pieces: int = 3, chunk_delay: float = 0.0) -> dict[str, Any]:
    """A scripted reply, streamed as `pieces` content deltas `chunk_delay` seconds apart."""
    return {**item, "pieces": pieces, "chunk_delay": chunk_delay}


def fake_embedding(text: str) -> list[float]:
    """A deterministic vector for `text` (equal texts, equal vectors)."""
    seed = sum(text.encode()) % 101
    return [((seed + 7 * i) % 13 - 6) / 6 for i in range(EMBEDDING_DIMENSION)]


def _split(text: str, pieces: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _chunks(body: dict[str, Any], item: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The chat.completion.chunk objects of a reply, as OpenAI streams them."""
    whole = _completion(body, item)
    message = whole["choices"][0]["message"]
    base = {
        "id": whole["id"],
        "object": "chat.completion.chunk",
        "created": whole["created"],
        "model": whole["model"],
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    if message.get("reasoning_content"):
        chunks.append(chunk({"reasoning_content": message["reasoning_content"]}))
    for piece in _split(message.get("content") or "", (item or {}).get("pieces", 3)):
        chunks.append(chunk({"content": piece}))
    for index, call in enumerate(message.get("tool_calls") or []):
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        chunks.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": arguments[:half]},
                        }
                    ]
                }
            )
        )
        chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]}))
    chunks.append(chunk({}, whole["choices"][0]["finish_reason"]))
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**base, "choices": [], "usage": whole["usage"]})
    return chunks


def _completion(body: dict[str, Any], item: dict[str, Any] | None) -> dict[str, Any]:
    prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
    message: dict[str, Any] = {"role": "assistant", "content": "ok"}
    finish = "stop"
    usage = {"prompt_tokens": max(1, prompt_chars // 4), "completion_tokens": 1}
    if item is not None:
        message["content"] = item.get("content")
        if item.get("tool_calls"):
            finish = "tool_calls"
            message["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in item["tool_calls"]
            ]
        if item.get("reasoning_content"):
            message["reasoning_content"] = item["reasoning_content"]
        if item.get("usage"):
            usage = dict(item["usage"])
    usage.setdefault("total_tokens", usage["prompt_tokens"] + usage["completion_tokens"])
    return {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage,
    }


_ROLES = {"system", "user", "assistant", "tool", "developer"}


def _malformed(body: Any) -> dict[str, Any] | None:
    """The 400 error a chat-completions body that OpenAI would refuse gets (None when it is fine)."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
        return error(400, "you must provide a model parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error(400, "'messages' must be a non-empty array")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return error(400, f"Invalid value for 'messages[{i}].role'")
        if message["role"] == "tool" and not message.get("tool_call_id"):
            return error(400, f"'messages[{i}].tool_call_id' is required")
    return None


def _answer(state: _State, body: dict[str, Any]) -> dict[str, Any] | None:
    """The reply to a chat request (caller holds the lock): checks, fixed reply, context limit, script."""
    item = _malformed(body) or state.by_model.get(body.get("model", ""))
    limit = state.context_limit
    if item is None and limit and prompt_chars(body) > limit:
        item = error(
            400,
            f"This model's maximum context length is {limit} characters",
            code="context_length_exceeded",
        )
    elif item is None and state.script:
        item = state.script.popleft()
    elif item is None and state.conversing:
        item = conversing_reply(body)
    return item


def _file(file_id: str, purpose: str, content: bytes, filename: str) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": len(content),
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
    }


def _run_batch(state: _State, batch: dict[str, Any]) -> None:
    """Answers every request of a batch's input file into output and error files (caller holds the lock)."""
    outputs: list[str] = []
    failures: list[str] = []
    for line in state.files[batch["input_file_id"]][1].decode().splitlines():
        entry = json.loads(line)
        body = entry["body"]
        if state.record:
            state.requests.append({"body": body, "headers": {}, "path": "/v1/batches"})
        item = _answer(state, body)
        if item and item.get("status"):
            response = {
                "status_code": item["status"],
                "request_id": f"req_{next(_ids)}",
                "body": {"error": item["error"]},
            }
            target = failures
        else:
            response = {
                "status_code": 200,
                "request_id": f"req_{next(_ids)}",
                "body": _completion(body, item),
            }
            target = outputs
        target.append(
            json.dumps(
                {
                    "id": f"batch_req_{next(_ids)}",
                    "custom_id": entry["custom_id"],
                    "response": response,
                    "error": None,
                }
            )
        )
    for key, lines in (("output_file_id", outputs), ("error_file_id", failures)):
        if lines:
            file_id = f"file-{next(_ids)}"
            state.files[file_id] = ("batch_output", ("\n".join(lines) + "\n").encode())
            batch[key] = file_id
    batch.update(
        status="completed",
        completed_at=int(time.time()),
        request_counts={
            "total": len(outputs) + len(failures),
            "completed": len(outputs),
            "failed": len(failures),
        },
    )


def build_app(state: _State) -> Starlette:
    """The fake's HTTP app."""

    async def chat(request: Request) -> Response:
        body = await request.json()
        with state.lock:
            if state.record:
                state.requests.append({"body": body, "headers": dict(request.headers)})
            item = _answer(state, body)
            fault = state.faults.draw()
            if fault is not None:
                state.injected[fault] = state.injected.get(fault, 0) + 1
        if fault == "rate_limit":
            wait = state.faults.retry_after
            item = error(429, "Rate limit reached", err_type="requests", headers={"Retry-After": f"{wait:g}"})
        elif fault == "server_error":
            item = error(
                500, "The server had an error while processing your request", err_type="server_error"
            )
        elif fault == "timeout":
            await asyncio.sleep(state.faults.hang)
        elif fault == "slow_first_token":
            await asyncio.sleep(state.faults.slow)
        if item and item.get("delay"):
            await asyncio.sleep(item["delay"])
        if item and item.get("status"):
            return JSONResponse(
                {"error": item["error"]}, status_code=item["status"], headers=item.get("headers")
            )
        if body.get("stream"):
            return _stream(body, item, truncate=fault == "truncate")
        if fault == "truncate":
            # Half of a JSON body, as when a proxy cuts the response.
            text = json.dumps(_completion(body, item))
            return Response(text[: len(text) // 2], media_type="application/json")
        return JSONResponse(_completion(body, item))

    def _stream(
        body: dict[str, Any], item: dict[str, Any] | None, *, truncate: bool = False
    ) -> StreamingResponse:
        chunks = _chunks(body, item)
        if truncate:
            # The role chunk and a delta or two, then the connection drops (or, every other time, the
            # stream just ends, with neither a finish reason nor [DONE]).
            chunks = chunks[: max(1, len(chunks) // 2)]
            with state.lock:
                drop = state.injected.get("truncate", 0) % 2 == 1
        delay = (item or {}).get("chunk_delay", 0.0)
        # `stamp`: the first text delta starts with its send time (latency measurements across
        # processes); `stream_pause`: a pause after it, so the first delta never rides on the rest.
        stamp = bool((item or {}).get("stamp"))
        pause = float((item or {}).get("stream_pause", 0.0))

        async def send() -> Any:
            finished = False
            first_text = True
            try:
                for chunk in chunks:
                    delta = chunk["choices"][0]["delta"] if chunk["choices"] else {}
                    is_first_text = bool(delta.get("content")) and first_text
                    if is_first_text and stamp:
                        delta["content"] = f"@{time.time():.6f} " + delta["content"]
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                    if is_first_text:
                        first_text = False
                        if pause:
                            await asyncio.sleep(pause)
                    if delay:
                        await asyncio.sleep(delay)
                if truncate:
                    if drop:
                        raise _Truncated
                    return
                yield b"data: [DONE]\n\n"
                finished = True
            finally:
                with state.lock:
                    if finished:
                        state.finished_streams += 1
                    else:
                        state.abandoned_streams += 1

        return StreamingResponse(send(), media_type="text/event-stream")

    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        with state.lock:
            if state.record:
                state.requests.append(
                    {"body": body, "headers": dict(request.headers), "path": "/v1/embeddings"}
                )
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return JSONResponse(
            {
                "object": "list",
                "model": body.get("model", "fake"),
                "data": [
                    {"object": "embedding", "index": i, "embedding": fake_embedding(text)}
                    for i, text in enumerate(texts)
                ],
                "usage": {"prompt_tokens": sum(len(t.split()) for t in texts), "total_tokens": 0},
            }
        )

    async def upload(request: Request) -> JSONResponse:
        form = await request.form()
        upload = form["file"]
        assert not isinstance(upload, str), "the file must be a multipart file part"
        content = await upload.read()
        purpose = str(form.get("purpose", ""))
        if purpose != "batch" or not all(
            json.loads(line).get("custom_id") for line in content.decode().splitlines()
        ):
            return JSONResponse(
                {"error": {"message": "invalid batch file", "type": "invalid_request_error"}}, 400
            )
        with state.lock:
            file_id = f"file-{next(_ids)}"
            state.files[file_id] = (purpose, content)
            state.requests.append(
                {
                    "body": {"purpose": purpose, "lines": len(content.splitlines())},
                    "headers": dict(request.headers),
                    "path": "/v1/files",
                }
            )
        return JSONResponse(_file(file_id, purpose, content, upload.filename or "upload.jsonl"))

    async def file_content(request: Request) -> Response:
        with state.lock:
            found = state.files.get(request.path_params["file_id"])
        if found is None:
            return JSONResponse(
                {"error": {"message": "No such File object", "type": "invalid_request_error"}}, 404
            )
        return Response(found[1], media_type="application/octet-stream")

    async def create_batch(request: Request) -> JSONResponse:
        body = await request.json()
        with state.lock:
            state.requests.append(
                {"body": body, "headers": dict(request.headers), "path": "/v1/batches/create"}
            )
            if body.get("input_file_id") not in state.files or body.get("endpoint") != "/v1/chat/completions":
                return JSONResponse(
                    {"error": {"message": "invalid batch", "type": "invalid_request_error"}}, 400
                )
            now = int(time.time())
            batch = {
                "id": f"batch_{next(_ids)}",
                "object": "batch",
                "endpoint": body["endpoint"],
                "errors": None,
                "input_file_id": body["input_file_id"],
                "completion_window": body.get("completion_window", "24h"),
                "status": "validating",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": now,
                "expires_at": now + 86400,
                "request_counts": {
                    "total": len(state.files[body["input_file_id"]][1].splitlines()),
                    "completed": 0,
                    "failed": 0,
                },
                "metadata": body.get("metadata"),
                "polls_left": state.batch_polls,
            }
            state.batches[batch["id"]] = batch
            return JSONResponse(_batch_out(batch))

    async def retrieve_batch(request: Request) -> JSONResponse:
        with state.lock:
            batch = state.batches.get(request.path_params["batch_id"])
            if batch is None:
                return JSONResponse(
                    {"error": {"message": "No such batch", "type": "invalid_request_error"}}, 404
                )
            if batch["status"] == "cancelling":
                batch.update(status="cancelled", cancelled_at=int(time.time()))
            elif batch["status"] in ("validating", "in_progress"):
                if batch["polls_left"] <= 0:
                    _run_batch(state, batch)
                else:
                    batch["polls_left"] -= 1
                    batch.update(status="in_progress", in_progress_at=int(time.time()))
            return JSONResponse(_batch_out(batch))

    async def cancel_batch(request: Request) -> JSONResponse:
        with state.lock:
            batch = state.batches.get(request.path_params["batch_id"])
            if batch is None:
                return JSONResponse(
                    {"error": {"message": "No such batch", "type": "invalid_request_error"}}, 404
                )
            if batch["status"] in ("validating", "in_progress"):
                batch.update(status="cancelling", cancelling_at=int(time.time()))
            return JSONResponse(_batch_out(batch))

    async def models(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in MODELS
                ],
            }
        )

    async def script(request: Request) -> JSONResponse:
        items = (await request.json())["responses"]
        with state.lock:
            state.script.extend(items)
        return JSONResponse({"queued": len(state.script)})

    async def requests(request: Request) -> JSONResponse:
        with state.lock:
            return JSONResponse(state.requests)

    async def faults(request: Request) -> JSONResponse:
        if request.method == "POST":
            _set_faults(state, await request.json())
        with state.lock:
            return JSONResponse(dict(state.injected))

    async def reset(request: Request) -> JSONResponse:
        with state.lock:
            state.script.clear()
            state.requests.clear()
            state.by_model.clear()
            state.context_limit = 0
        return JSONResponse({})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/files", upload, methods=["POST"]),
            Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
            Route("/v1/batches", create_batch, methods=["POST"]),
            Route("/v1/batches/{batch_id}", retrieve_batch, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
            Route("/_fake/script", script, methods=["POST"]),
            Route("/_fake/requests", requests, methods=["GET"]),
            Route("/_fake/requests", reset, methods=["DELETE"]),
            Route("/_fake/faults", faults, methods=["GET", "POST"]),
        ]
    )


def _set_faults(state: _State, settings: dict[str, Any]) -> None:
    """Sets the fault chances (keys of `Faults`) and whether the fake converses (`conversing`)."""
    with state.lock:
        conversing = bool(settings.pop("conversing", state.conversing))
        state.conversing = conversing
        state.faults = Faults(**settings)
        state.faults.random.seed(state.faults.seed)
        state.injected = {}


def _batch_out(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k != "polls_left"}


class FakeProvider:
    """Runs the fake in a background thread of the test process; `base_url` is its OpenAI base URL."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._state = _State()
        self._http = BackgroundServer(build_app(self._state), self.port)

    def start(self) -> FakeProvider:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def script(self, *responses: dict[str, Any]) -> None:
        """Queues replies; each chat request takes the next one."""
        with self._state.lock:
            self._state.script.extend(responses)

    def requests(self) -> list[dict[str, Any]]:
        """The chat requests received (JSON bodies), oldest first."""
        with self._state.lock:
            return [r["body"] for r in self._state.requests if r.get("path") is None]

    def batch_requests(self) -> list[dict[str, Any]]:
        """The chat requests answered inside batches (JSON bodies), in the order they were run."""
        with self._state.lock:
            return [r["body"] for r in self._state.requests if r.get("path") == "/v1/batches"]

    def uploads(self) -> list[dict[str, Any]]:
        """The files uploaded: {"purpose", "lines"} each, oldest first."""
        with self._state.lock:
            return [r["body"] for r in self._state.requests if r.get("path") == "/v1/files"]

    def batches(self) -> list[dict[str, Any]]:
        """The batches created, as the Batches API shows them, oldest first."""
        with self._state.lock:
            return [_batch_out(b) for b in self._state.batches.values()]

    def complete_batches_after(self, polls: int) -> None:
        """Batches created from now on complete at their `polls`+1-th retrieve."""
        with self._state.lock:
            self._state.batch_polls = polls

    def embedding_requests(self) -> list[dict[str, Any]]:
        """The embedding requests received (JSON bodies), oldest first."""
        with self._state.lock:
            return [r["body"] for r in self._state.requests if r.get("path") == "/v1/embeddings"]

    def stream_counts(self) -> tuple[int, int]:
        """Streams sent whole and streams the client abandoned, since the last reset."""
        with self._state.lock:
            return self._state.finished_streams, self._state.abandoned_streams

    def wait_for_abandoned_stream(self, timeout: float = 5.0) -> bool:
        """Whether a stream gets abandoned by its client within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stream_counts()[1]:
                return True
            time.sleep(0.01)
        return False

    def reset(self) -> None:
        """Forgets the script, the recorded requests, fixed replies and the context limit."""
        with self._state.lock:
            self._state.script.clear()
            self._state.requests.clear()
            self._state.abandoned_streams = 0
            self._state.finished_streams = 0
            self._state.by_model.clear()
            self._state.context_limit = 0
            self._state.files.clear()
            self._state.batches.clear()
            self._state.batch_polls = 1
            self._state.conversing = False
            self._state.faults = Faults()
            self._state.injected = {}

    def answer_model(self, model: str, response: dict[str, Any] | None) -> None:
        """Gives every request for `model` this reply (None: back to the script)."""
        with self._state.lock:
            if response is None:
                self._state.by_model.pop(model, None)
            else:
                self._state.by_model[model] = response

    def inject_faults(self, *, conversing: bool = False, **chances: Any) -> None:
        """Makes chat requests meet faults at random (chances and timings as in `Faults`); with
        `conversing`, answers each from its last message instead of the script."""
        _set_faults(self._state, {"conversing": conversing, **chances})

    def injected(self) -> dict[str, int]:
        """How many chat requests met each fault since the last `inject_faults`."""
        with self._state.lock:
            return dict(self._state.injected)

    def limit_context(self, chars: int) -> None:
        """Fails prompts longer than `chars` characters with context_length_exceeded (0: no limit)."""
        with self._state.lock:
            self._state.context_limit = chars


class RemoteFake:
    """Drives a fake provider running in another process through its control endpoints."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._root = base_url.removesuffix("/v1")

    def script(self, *responses: dict[str, Any]) -> None:
        httpx.post(f"{self._root}/_fake/script", json={"responses": list(responses)}).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        return [r["body"] for r in httpx.get(f"{self._root}/_fake/requests").json()]

    def reset(self) -> None:
        httpx.delete(f"{self._root}/_fake/requests").raise_for_status()

    def inject_faults(self, *, conversing: bool = False, **chances: Any) -> None:
        httpx.post(
            f"{self._root}/_fake/faults", json={"conversing": conversing, **chances}
        ).raise_for_status()

    def injected(self) -> dict[str, int]:
        return dict(httpx.get(f"{self._root}/_fake/faults").json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8399)
    parser.add_argument("--no-record", action="store_true", help="do not keep requests (for long benchmarks)")
    args = parser.parse_args()
    uvicorn.run(
        build_app(_State(record=not args.no_record)),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE,
    )


if __name__ == "__main__":
    main()
