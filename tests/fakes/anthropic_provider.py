"""A fake Anthropic messages API over real HTTP: /v1/messages (JSON and SSE streaming), /v1/models and
the Message Batches API (/v1/messages/batches: create, retrieve, cancel, JSONL results; a batch ends
after `complete_batches_after` retrieves, its requests answered from the script like /v1/messages).

Tests script replies (text, thinking, tool_use blocks, errors with headers, delays, pauses between stream
events, an error event in the middle of a stream, an answer cut short) and read back the requests and their headers. With
nothing scripted it answers "ok". A test fixture only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.scripted_server import ScriptedServer, ScriptState

_ids = itertools.count(1)
MODELS = [
    {"type": "model", "id": "claude-sonnet-4-5-20250929", "display_name": "Claude Sonnet 4.5"},
    {"type": "model", "id": "claude-haiku-4-5-20251001", "display_name": "Claude Haiku 4.5"},
]


def reply(
    text: str,
    *,
    thinking: str = "",
    input_tokens: int = 10,
    output_tokens: int = 5,
    stop_reason: str = "end_turn",
    delay: float = 0.0,
    event_delay: float = 0.0,
    pieces: int = 3,
) -> dict[str, Any]:
    """A scripted text answer (streamed as `pieces` text deltas, `event_delay` seconds apart)."""
    blocks: list[dict[str, Any]] = []
    if thinking:
        blocks.append({"type": "thinking", "thinking": thinking, "signature": "sig"})
    if text:
        blocks.append({"type": "text", "text": text})
    return {
        "content": blocks,
        "stop_reason": stop_reason,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        "delay": delay,
        "event_delay": event_delay,
        "pieces": pieces,
    }


def tool_use(
    calls: list[tuple[str, dict[str, Any], str]],
    *,
    text: str = "",
    input_tokens: int = 10,
    output_tokens: int = 5,
) -> dict[str, Any]:
    """A scripted answer with tool_use blocks (name, input, id), after an optional text block."""
    item = reply(text, input_tokens=input_tokens, output_tokens=output_tokens, stop_reason="tool_use")
    item["content"].extend(
        {"type": "tool_use", "id": call_id, "name": name, "input": arguments}
        for name, arguments, call_id in calls
    )
    return item


def error(
    status: int, err_type: str, message: str, *, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """A scripted error response in Anthropic's error shape."""
    return {"status": status, "error": {"type": err_type, "message": message}, "headers": headers or {}}


def stream_error(after_events: int, err_type: str, message: str) -> dict[str, Any]:
    """A text answer whose stream breaks with an `error` event after `after_events` events."""
    item = reply("partial answer that never ends", pieces=5)
    item["stream_error"] = {"after": after_events, "error": {"type": err_type, "message": message}}
    return item


def cut_short(after_events: int, *, drop: bool) -> dict[str, Any]:
    """A text answer cut after `after_events` stream events: the connection drops (`drop`), or the stream
    just ends, before its stop reason and `message_stop`. Not streamed, the body is cut in half."""
    item = reply("partial answer that never ends", pieces=5)
    item["cut_short"] = {"after": after_events, "drop": drop}
    return item


class _Dropped(Exception):
    """Raised inside a streamed answer to drop the connection part-way."""


def _message(body: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"msg_{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-fake"),
        "content": item["content"],
        "stop_reason": item["stop_reason"],
        "stop_sequence": None,
        "usage": item["usage"],
    }


def _split(text: str, pieces: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _events(body: dict[str, Any], item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events of a scripted reply, as the messages API streams them."""
    start = _message(body, item)
    start["content"] = []
    start["stop_reason"] = None
    start["usage"] = {"input_tokens": item["usage"]["input_tokens"], "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    events.append(("ping", {"type": "ping"}))
    for index, block in enumerate(item["content"]):
        if block["type"] == "text":
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            for piece in _split(block["text"], item["pieces"]):
                events.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": piece},
                        },
                    )
                )
        elif block["type"] == "thinking":
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                    },
                )
            )
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "thinking_delta", "thinking": block["thinking"]},
                    },
                )
            )
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": "sig"},
                    },
                )
            )
        else:
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": block["id"],
                            "name": block["name"],
                            "input": {},
                        },
                    },
                )
            )
            arguments = json.dumps(block["input"])
            for piece in [arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]]:
                events.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                    )
                )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": item["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": item["usage"]["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _end_batch(state: ScriptState, batch: dict[str, Any], *, cancelled: bool) -> None:
    """Answers (or, cancelled, drops) every request of a batch (caller holds the lock)."""
    results = []
    counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    for entry in batch.pop("_requests"):
        params = entry["params"]
        if cancelled:
            result: dict[str, Any] = {"type": "canceled"}
            counts["canceled"] += 1
        else:
            state.requests.append({"path": "/v1/messages/batches/requests", "body": params, "headers": {}})
            item = state.script.popleft() if state.script else reply("ok")
            if item.get("status"):
                result = {"type": "errored", "error": {"type": "error", "error": item["error"]}}
                counts["errored"] += 1
            else:
                result = {"type": "succeeded", "message": _message(params, item)}
                counts["succeeded"] += 1
        results.append({"custom_id": entry["custom_id"], "result": result})
    batch["_results"] = results
    batch.update(processing_status="ended", request_counts=counts, ended_at=_iso(datetime.now(UTC)))
    batch["results_url"] = f"{batch['_root']}/v1/messages/batches/{batch['id']}/results"


def _batch_out(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def build_app(state: ScriptState) -> Starlette:
    """The fake's HTTP app."""

    async def create_batch(request: Request) -> Response:
        body = await request.json()
        state.record(request, body)
        requests = body.get("requests")
        if not requests or not all(
            r.get("custom_id") and r.get("params", {}).get("messages") for r in requests
        ):
            return JSONResponse(
                {"type": "error", "error": {"type": "invalid_request_error", "message": "bad batch"}}, 400
            )
        now = datetime.now(UTC)
        with state.lock:
            batch = {
                "id": f"msgbatch_{next(_ids)}",
                "type": "message_batch",
                "processing_status": "in_progress",
                "request_counts": {
                    "processing": len(requests),
                    "succeeded": 0,
                    "errored": 0,
                    "canceled": 0,
                    "expired": 0,
                },
                "created_at": _iso(now),
                "expires_at": _iso(now + timedelta(hours=24)),
                "ended_at": None,
                "cancel_initiated_at": None,
                "archived_at": None,
                "results_url": None,
                "_requests": requests,
                "_polls_left": state.batch_polls,
                "_root": str(request.base_url).rstrip("/"),
            }
            state.batches[batch["id"]] = batch
            return JSONResponse(_batch_out(batch))

    async def retrieve_batch(request: Request) -> Response:
        with state.lock:
            batch = state.batches.get(request.path_params["batch_id"])
            if batch is None:
                return JSONResponse(
                    {"type": "error", "error": {"type": "not_found_error", "message": "no batch"}}, 404
                )
            if batch["processing_status"] == "canceling":
                _end_batch(state, batch, cancelled=True)
            elif batch["processing_status"] == "in_progress":
                if batch["_polls_left"] <= 0:
                    _end_batch(state, batch, cancelled=False)
                else:
                    batch["_polls_left"] -= 1
            return JSONResponse(_batch_out(batch))

    async def cancel_batch(request: Request) -> Response:
        with state.lock:
            batch = state.batches.get(request.path_params["batch_id"])
            if batch is None:
                return JSONResponse(
                    {"type": "error", "error": {"type": "not_found_error", "message": "no batch"}}, 404
                )
            if batch["processing_status"] == "in_progress":
                batch.update(processing_status="canceling", cancel_initiated_at=_iso(datetime.now(UTC)))
            return JSONResponse(_batch_out(batch))

    async def batch_results(request: Request) -> Response:
        with state.lock:
            batch = state.batches.get(request.path_params["batch_id"])
            if batch is None or "_results" not in batch:
                return JSONResponse(
                    {"type": "error", "error": {"type": "not_found_error", "message": "no results"}}, 404
                )
            lines = "".join(json.dumps(line) + "\n" for line in batch["_results"])
        return Response(lines, media_type="application/binary")

    async def messages(request: Request) -> Response:
        body = await request.json()
        item = await state.take(request, body) or reply("ok")
        if item.get("delay"):
            await asyncio.sleep(item["delay"])
        if item.get("status"):
            return JSONResponse(
                {"type": "error", "error": item["error"]},
                status_code=item["status"],
                headers=item.get("headers"),
            )
        cut = item.get("cut_short")
        if not body.get("stream"):
            if cut:
                text = json.dumps(_message(body, item))
                return Response(text[: len(text) // 2], media_type="application/json")
            return JSONResponse(_message(body, item))
        events = _events(body, item)
        broken = item.get("stream_error")

        async def send() -> AsyncIterator[bytes]:
            finished = False
            try:
                for n, (name, data) in enumerate(events):
                    if broken and n == broken["after"]:
                        payload = {"type": "error", "error": broken["error"]}
                        yield f"event: error\ndata: {json.dumps(payload)}\n\n".encode()
                        finished = True
                        return
                    if cut and n == cut["after"]:
                        if cut["drop"]:
                            raise _Dropped
                        return
                    yield f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                    if item.get("event_delay"):
                        await asyncio.sleep(item["event_delay"])
                finished = True
            finally:
                state.stream_ended(finished=finished)

        return StreamingResponse(send(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        state.record(request, None)
        return JSONResponse(
            {
                "data": [{**m, "created_at": "2025-09-29T00:00:00Z"} for m in MODELS],
                "has_more": False,
                "first_id": MODELS[0]["id"],
                "last_id": MODELS[-1]["id"],
            }
        )

    return Starlette(
        routes=[
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/messages/batches", create_batch, methods=["POST"]),
            Route("/v1/messages/batches/{batch_id}", retrieve_batch, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
            Route("/v1/messages/batches/{batch_id}/results", batch_results, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


class FakeAnthropic(ScriptedServer):
    """The fake Anthropic API; `base_url` is what the SDK's base_url takes."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(build_app, port)
        self.base_url = self.root
