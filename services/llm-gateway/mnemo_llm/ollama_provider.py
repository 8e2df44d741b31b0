"""Ollama's native API (/api/chat, /api/tags, /api/show, /api/embed) through the official `ollama` client."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import ollama

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_core import errors
from mnemo_llm.providers import (
    PROVIDER_BAD_RESPONSE,
    EmbeddingResult,
    ReportedModel,
    arguments_object,
    chat_role,
    completed_event,
    content_event,
    is_context_overflow,
    reasoning_event,
    status_error,
    timeout_error,
    tool_call_event,
    tool_parameters,
    unreachable_error,
    usage,
)

# Models whose details are fetched at once when listing (each is one /api/show request).
_SHOW_CONCURRENCY = 4


def _message(message: llm_pb2.ChatMessage, index: int) -> dict[str, Any]:
    role = chat_role(message, index)
    wire: dict[str, Any] = {"role": role, "content": message.content}
    if role == "assistant" and message.tool_calls:
        wire["tool_calls"] = [
            {"function": {"name": call.name, "arguments": arguments_object(call.arguments)}}
            for call in message.tool_calls
        ]
    if role == "tool" and message.name:
        wire["tool_name"] = message.name
    return wire


def request_params(model: str, request: llm_pb2.ChatRequest, *, context_window: int = 0) -> dict[str, Any]:
    """The /api/chat body for a chat request (without `stream`).

    `context_window` (from the config file's catalogue) is sent as `num_ctx`: without it Ollama runs the
    model with its own default window (a few thousand tokens) and silently drops the start of longer prompts.
    """
    params: dict[str, Any] = {
        "model": model,
        "messages": [_message(m, i) for i, m in enumerate(request.messages)],
    }
    # Ollama has no tool_choice: "none" is honoured by not offering the tools.
    if request.tools and request.tool_choice != llm_pb2.TOOL_CHOICE_NONE:
        params["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": tool_parameters(t, i),
                },
            }
            for i, t in enumerate(request.tools)
        ]
    options: dict[str, Any] = {}
    if request.HasField("temperature"):
        options["temperature"] = request.temperature
    if request.max_tokens:
        options["num_predict"] = request.max_tokens
    if context_window:
        options["num_ctx"] = context_window
    if options:
        params["options"] = options
    return params


def map_error(exc: BaseException, time_budget: float = 0.0) -> errors.MnemoError:
    """The domain error for an Ollama failure, keeping Ollama's own message."""
    if isinstance(exc, ollama.ResponseError):
        message = str(exc.error)
        status = exc.status_code
        if status < 400:
            # An error line inside a 200 stream carries no status.
            status = 400 if is_context_overflow(message) else 500
        if status == 404 and "not found" not in message.lower():
            message = f"{message} (model not found)"
        return status_error(status, message)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return timeout_error(time_budget)
    if isinstance(exc, ConnectionError | httpx.TransportError):
        return unreachable_error(str(exc) or type(exc).__name__)
    return unreachable_error(str(exc))


_FAILURES = (ollama.ResponseError, httpx.HTTPError, ConnectionError, TimeoutError)


def _calls(part: Any) -> list[message_pb2.ToolCall]:
    """Tool calls of one reply (Ollama sends each whole, with the arguments as an object)."""
    message = part.message
    return [
        message_pb2.ToolCall(
            id=f"call_{uuid.uuid4().hex[:24]}",
            name=call.function.name,
            arguments=json.dumps(dict(call.function.arguments or {})),
        )
        for call in message.tool_calls or []
    ]


def _finish(done_reason: str | None, has_calls: bool) -> llm_pb2.FinishReason.ValueType:
    if has_calls:
        return llm_pb2.FINISH_REASON_TOOL_CALLS
    if done_reason == "length":
        return llm_pb2.FINISH_REASON_LENGTH
    return llm_pb2.FINISH_REASON_STOP


class OllamaProvider:
    """Models served by an Ollama server, through its native API."""

    def __init__(
        self, *, base_url: str, api_key: str = "", context_windows: Mapping[str, int] | None = None
    ) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else None
        self._client = ollama.AsyncClient(host=base_url, headers=headers)
        # Windows to run models with (num_ctx), as configured; "llama3.2" and "llama3.2:latest" are one model.
        self._windows = {name.removesuffix(":latest"): size for name, size in (context_windows or {}).items()}

    def _params(self, model: str, request: llm_pb2.ChatRequest) -> dict[str, Any]:
        window = self._windows.get(model.removesuffix(":latest"), 0)
        return request_params(model, request, context_window=window)

    async def chat(
        self, model: str, request: llm_pb2.ChatRequest, *, time_budget: float
    ) -> llm_pb2.ChatResponse:
        params = self._params(model, request)
        try:
            async with asyncio.timeout(time_budget):
                part = await self._client.chat(**params, stream=False)
        except _FAILURES as exc:
            raise map_error(exc, time_budget) from exc
        calls = _calls(part)
        return llm_pb2.ChatResponse(
            message=llm_pb2.ChatMessage(
                role=llm_pb2.CHAT_ROLE_ASSISTANT,
                content=part.message.content or "",
                reasoning=part.message.thinking or "",
                tool_calls=calls,
            ),
            usage=usage(part.prompt_eval_count or 0, part.eval_count or 0),
            finish_reason=_finish(part.done_reason, bool(calls)),
            model=part.model or model,
        )

    async def stream(
        self, model: str, request: llm_pb2.ChatRequest, *, time_budget: float
    ) -> AsyncIterator[llm_pb2.StreamChatResponse]:
        params = self._params(model, request)
        content: list[str] = []
        reasoning: list[str] = []
        calls: list[message_pb2.ToolCall] = []
        prompt_tokens = completion_tokens = 0
        done_reason: str | None = None
        answered_model = model
        try:
            async with asyncio.timeout(time_budget):
                parts = await self._client.chat(**params, stream=True)
            try:
                while True:
                    # The budget bounds the wait for each line, as a read timeout would.
                    async with asyncio.timeout(time_budget):
                        try:
                            part = await anext(parts)
                        except StopAsyncIteration:
                            break
                    if part.message.thinking:
                        reasoning.append(part.message.thinking)
                        yield reasoning_event(part.message.thinking)
                    if part.message.content:
                        content.append(part.message.content)
                        yield content_event(part.message.content)
                    for call in _calls(part):
                        calls.append(call)
                        yield tool_call_event(call)
                    if part.done:
                        prompt_tokens = part.prompt_eval_count or 0
                        completion_tokens = part.eval_count or 0
                        done_reason = part.done_reason
                        answered_model = part.model or model
            finally:
                # Closing the generator leaves its `async with client.stream(...)`: the request is closed.
                await parts.aclose()  # type: ignore[attr-defined]
        except _FAILURES as exc:
            raise map_error(exc, time_budget) from exc
        yield completed_event(
            llm_pb2.ChatResponse(
                message=llm_pb2.ChatMessage(
                    role=llm_pb2.CHAT_ROLE_ASSISTANT,
                    content="".join(content),
                    reasoning="".join(reasoning),
                    tool_calls=calls,
                ),
                usage=usage(prompt_tokens, completion_tokens),
                finish_reason=_finish(done_reason, bool(calls)),
                model=answered_model,
            )
        )

    async def _describe(self, name: str, time_budget: float) -> ReportedModel:
        try:
            async with asyncio.timeout(time_budget):
                shown = await self._client.show(name)
        except _FAILURES:
            # A model whose details cannot be read is still listed, with an unknown window.
            return ReportedModel(model=name)
        info = dict(shown.modelinfo or {})
        window = next((int(v) for k, v in info.items() if k.endswith(".context_length")), 0)
        dimension = next((int(v) for k, v in info.items() if k.endswith(".embedding_length")), 0)
        capabilities = list(shown.capabilities or [])
        embedding = "embedding" in capabilities and "completion" not in capabilities
        return ReportedModel(
            model=name,
            kind=llm_pb2.MODEL_KIND_EMBEDDING if embedding else llm_pb2.MODEL_KIND_CHAT,
            context_window=window,
            embedding_dimension=dimension if embedding else 0,
        )

    async def list_models(self, *, time_budget: float) -> list[ReportedModel]:
        try:
            async with asyncio.timeout(time_budget):
                listed = await self._client.list()
        except _FAILURES as exc:
            raise map_error(exc, time_budget) from exc
        names = [m.model for m in listed.models if m.model]
        limit = asyncio.Semaphore(_SHOW_CONCURRENCY)

        async def describe(name: str) -> ReportedModel:
            async with limit:
                return await self._describe(name, time_budget)

        return list(await asyncio.gather(*(describe(name) for name in names)))

    async def embed(self, model: str, texts: Sequence[str], *, time_budget: float) -> EmbeddingResult:
        try:
            async with asyncio.timeout(time_budget):
                result = await self._client.embed(model=model, input=list(texts))
        except _FAILURES as exc:
            raise map_error(exc, time_budget) from exc
        if len(result.embeddings) != len(texts):
            raise errors.Unavailable(
                f"provider returned {len(result.embeddings)} embeddings for {len(texts)} inputs",
                reason=PROVIDER_BAD_RESPONSE,
            )
        return EmbeddingResult(
            vectors=[list(vector) for vector in result.embeddings],
            prompt_tokens=result.prompt_eval_count or 0,
        )

    async def aclose(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]
