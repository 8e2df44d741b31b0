"""Anthropic's messages API through the official SDK: system prompt, tool_use / tool_result blocks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import anthropic
import httpx2
from anthropic import AsyncStream
from anthropic._base_client import make_request_options
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_core import errors
from mnemo_core.validation import invalid
from mnemo_llm.providers import (
    PROVIDER_BAD_RESPONSE,
    BatchItem,
    BatchProgress,
    ReplyBuilder,
    ReportedModel,
    arguments_object,
    completed_event,
    content_event,
    not_run_error,
    reasoning_event,
    status_error,
    timeout_error,
    tool_call_event,
    tool_parameters,
    unreachable_error,
    usage,
)

# Anthropic requires max_tokens; this is used when the request leaves it at 0.
DEFAULT_MAX_TOKENS = 4096
STOP_REASONS = {
    "end_turn": llm_pb2.FINISH_REASON_STOP,
    "stop_sequence": llm_pb2.FINISH_REASON_STOP,
    "pause_turn": llm_pb2.FINISH_REASON_STOP,
    "tool_use": llm_pb2.FINISH_REASON_TOOL_CALLS,
    "max_tokens": llm_pb2.FINISH_REASON_LENGTH,
    "model_context_window_exceeded": llm_pb2.FINISH_REASON_LENGTH,
    "refusal": llm_pb2.FINISH_REASON_CONTENT_FILTER,
}
# HTTP statuses of Anthropic's error types, for errors that come without one: an `error` event inside a
# 200 stream, or an errored request of a message batch.
ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def _blocks(message: llm_pb2.ChatMessage, index: int) -> tuple[str, list[dict[str, Any]]]:
    """The role and content blocks of one message."""
    role = message.role
    if role in (llm_pb2.CHAT_ROLE_USER, llm_pb2.CHAT_ROLE_SYSTEM):
        return "user", [{"type": "text", "text": message.content}] if message.content else []
    if role == llm_pb2.CHAT_ROLE_ASSISTANT:
        blocks: list[dict[str, Any]] = []
        if message.content:
            blocks.append({"type": "text", "text": message.content})
        for call in message.tool_calls:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": arguments_object(call.arguments),
                }
            )
        return "assistant", blocks
    if role == llm_pb2.CHAT_ROLE_TOOL:
        return "user", [
            {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content}
        ]
    raise invalid(f"messages[{index}].role", "must be set")


def request_params(model: str, request: llm_pb2.ChatRequest) -> dict[str, Any]:
    """The messages-API parameters for a chat request.

    Leading system messages become the system prompt. Consecutive turns of one role are merged into one
    (Anthropic wants user and assistant to alternate; the results of parallel tool calls must come back
    in one user turn); a later system message becomes text of a user turn.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    leading = True
    for index, message in enumerate(request.messages):
        if leading and message.role == llm_pb2.CHAT_ROLE_SYSTEM:
            if message.content:
                system.append(message.content)
            continue
        leading = False
        role, blocks = _blocks(message, index)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        # Anthropic wants a user turn's tool results before any text in it.
        if turn["role"] == "user":
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    params: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": turns,
    }
    if system:
        params["system"] = "\n\n".join(system)
    if request.tools:
        params["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": tool_parameters(t, i)}
            for i, t in enumerate(request.tools)
        ]
        choice = request.tool_choice
        if choice == llm_pb2.TOOL_CHOICE_NONE:
            params["tool_choice"] = {"type": "none"}
        else:
            params["tool_choice"] = {
                "type": "any" if choice == llm_pb2.TOOL_CHOICE_REQUIRED else "auto",
                "disable_parallel_tool_use": not request.parallel_tool_calls,
            }
    if request.HasField("temperature"):
        params["temperature"] = request.temperature
    return params


def _provider_message(exc: anthropic.APIStatusError) -> tuple[str, str]:
    """The provider's own error message and error type, from the error body when there is one."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"]), str(inner.get("type") or "")
    return str(exc.message), ""


def map_error(exc: anthropic.AnthropicError, time_budget: float = 0.0) -> errors.MnemoError:
    """The domain error for an Anthropic failure, keeping the provider's own message."""
    if isinstance(exc, anthropic.APITimeoutError):
        return timeout_error(time_budget)
    if isinstance(exc, anthropic.APIConnectionError):
        return unreachable_error(str(exc.message))
    if isinstance(exc, anthropic.APIStatusError):
        message, kind = _provider_message(exc)
        status = exc.status_code
        if status < 400:
            # An `error` event inside a 200 stream: its type says what went wrong.
            status = ERROR_TYPE_STATUS.get(kind, 500)
        return status_error(status, message, code=kind, headers=exc.response.headers)
    return unreachable_error(str(exc))


def response_from(message: Message) -> llm_pb2.ChatResponse:
    """The chat response for a messages-API result."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: list[message_pb2.ToolCall] = []
    for block in message.content:
        if block.type == "text":
            content.append(block.text)
        elif block.type == "thinking":
            reasoning.append(block.thinking)
        elif block.type == "tool_use":
            calls.append(
                message_pb2.ToolCall(id=block.id, name=block.name, arguments=json.dumps(block.input))
            )
    tokens = message.usage
    prompt = (
        tokens.input_tokens
        + (tokens.cache_read_input_tokens or 0)
        + (tokens.cache_creation_input_tokens or 0)
    )
    return llm_pb2.ChatResponse(
        message=llm_pb2.ChatMessage(
            role=llm_pb2.CHAT_ROLE_ASSISTANT,
            content="".join(content),
            reasoning="".join(reasoning),
            tool_calls=calls,
        ),
        usage=usage(prompt, tokens.output_tokens),
        finish_reason=STOP_REASONS.get(message.stop_reason or "", llm_pb2.FINISH_REASON_UNSPECIFIED),
        model=message.model,
    )


def batch_result(entry: MessageBatchIndividualResponse) -> llm_pb2.ChatResponse | errors.MnemoError:
    """The reply (or error) of one request of an ended message batch."""
    result = entry.result
    if result.type == "succeeded":
        return response_from(result.message)
    if result.type == "errored":
        error = result.error.error
        kind = str(getattr(error, "type", "") or "")
        message = str(getattr(error, "message", "") or kind)
        return status_error(ERROR_TYPE_STATUS.get(kind, 500), message, code=kind)
    return not_run_error("was cancelled" if result.type == "canceled" else "expired")


def batch_progress(batch: MessageBatch) -> BatchProgress:
    """A message batch's state and counts (results are read separately once it has ended)."""
    counts = batch.request_counts
    state: llm_pb2.ChatBatchState.ValueType = llm_pb2.CHAT_BATCH_STATE_RUNNING
    if batch.processing_status == "ended":
        if batch.cancel_initiated_at is not None:
            state = llm_pb2.CHAT_BATCH_STATE_CANCELLED
        elif counts.expired and not (counts.succeeded or counts.errored):
            state = llm_pb2.CHAT_BATCH_STATE_EXPIRED
        else:
            state = llm_pb2.CHAT_BATCH_STATE_SUCCEEDED
    return BatchProgress(
        batch.id,
        state,
        succeeded=counts.succeeded,
        failed=counts.errored + counts.canceled + counts.expired,
    )


async def stream_events(
    events: AsyncIterator[RawMessageStreamEvent],
) -> AsyncIterator[llm_pb2.StreamChatResponse]:
    """Stream events for messages-API events: deltas at once, each tool_use block once it stops.

    A stream that ends before its stop reason was cut (a dropped connection, a proxy): its reply is
    incomplete, and raises PROVIDER_UNAVAILABLE rather than pass for a whole answer.
    """
    reply = ReplyBuilder()
    tool_blocks: set[int] = set()
    finished = False
    async for event in events:
        if event.type == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                reply.content.append(delta.text)
                yield content_event(delta.text)
            elif delta.type == "thinking_delta":
                reply.reasoning.append(delta.thinking)
                yield reasoning_event(delta.thinking)
            elif delta.type == "input_json_delta":
                reply.call_fragment(event.index, arguments=delta.partial_json)
        elif event.type == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                tool_blocks.add(event.index)
                reply.call_fragment(event.index, id=block.id, name=block.name)
            elif block.type == "text" and block.text:
                reply.content.append(block.text)
                yield content_event(block.text)
        elif event.type == "content_block_stop":
            if event.index in tool_blocks:
                done = reply.complete_call(event.index)
                if done is not None:
                    yield tool_call_event(done)
        elif event.type == "message_start":
            start = event.message
            reply.model = start.model
            tokens = start.usage
            reply.prompt_tokens = (
                tokens.input_tokens
                + (tokens.cache_read_input_tokens or 0)
                + (tokens.cache_creation_input_tokens or 0)
            )
            reply.completion_tokens = tokens.output_tokens
        elif event.type == "message_delta":
            if event.delta.stop_reason:
                finished = True
                reply.finish_reason = STOP_REASONS.get(
                    event.delta.stop_reason, llm_pb2.FINISH_REASON_UNSPECIFIED
                )
            reply.completion_tokens = event.usage.output_tokens or reply.completion_tokens
    if not finished:
        raise unreachable_error("the stream ended before the answer was complete (no stop reason)")
    for done in reply.complete_all_calls():
        yield tool_call_event(done)
    yield completed_event(reply.response())


class AnthropicProvider:
    """Claude models through Anthropic's messages API (or a server that speaks it)."""

    def __init__(self, *, api_key: str, base_url: str | None, batch_api: bool = True) -> None:
        # Retries are the gateway's (mnemo_llm.resilience).
        self._client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url or None, max_retries=0)
        self.batch_api = batch_api

    async def chat(
        self, model: str, request: llm_pb2.ChatRequest, *, time_budget: float
    ) -> llm_pb2.ChatResponse:
        params = request_params(model, request)
        try:
            # Like the OpenAI provider: the params are already wire JSON, so the SDK's transform is skipped.
            message = await self._client.post(
                "/v1/messages",
                body=params,
                cast_to=Message,
                options=make_request_options(timeout=time_budget),
            )
        except anthropic.AnthropicError as exc:
            raise map_error(exc, time_budget) from exc
        except ValueError as exc:  # a body cut short (JSONDecodeError): worth another attempt
            raise unreachable_error(f"the answer was not valid JSON ({exc})") from exc
        if not isinstance(message, Message):
            raise errors.Unavailable("provider returned no message", reason=PROVIDER_BAD_RESPONSE)
        return response_from(message)

    async def stream(
        self, model: str, request: llm_pb2.ChatRequest, *, time_budget: float
    ) -> AsyncIterator[llm_pb2.StreamChatResponse]:
        params = request_params(model, request)
        params["stream"] = True
        try:
            events = await self._client.post(
                "/v1/messages",
                body=params,
                cast_to=Message,
                stream=True,
                stream_cls=AsyncStream[RawMessageStreamEvent],
                options=make_request_options(timeout=time_budget),
            )
        except anthropic.AnthropicError as exc:
            raise map_error(exc, time_budget) from exc
        try:
            async for event in stream_events(events):
                yield event
        except anthropic.AnthropicError as exc:
            raise map_error(exc, time_budget) from exc
        except ValueError as exc:  # an event cut short (JSONDecodeError)
            raise unreachable_error(f"a streamed event was not valid JSON ({exc})") from exc
        except httpx2.TimeoutException as exc:
            # This SDK (unlike openai's) lets a failure while reading the stream through unwrapped.
            raise timeout_error(time_budget) from exc
        except httpx2.TransportError as exc:  # the connection dropped mid-way
            raise unreachable_error(f"the stream broke off ({exc})") from exc
        finally:
            await events.close()

    async def submit_batch(self, items: Sequence[BatchItem], *, time_budget: float) -> BatchProgress:
        # The same messages-API parameters Chat posts, one `params` per request.
        requests = [
            {"custom_id": item.custom_id, "params": request_params(item.model, item.request)}
            for item in items
        ]
        try:
            batch = await self._client.messages.batches.create(
                requests=cast(Any, requests), timeout=time_budget
            )
        except anthropic.AnthropicError as exc:
            raise map_error(exc, time_budget) from exc
        return batch_progress(batch)

    async def poll_batch(self, provider_batch_id: str, *, time_budget: float) -> BatchProgress:
        try:
            batch = await self._client.messages.batches.retrieve(provider_batch_id, timeout=time_budget)
            progress = batch_progress(batch)
            if batch.processing_status == "ended":
                decoder = await self._client.messages.batches.results(provider_batch_id, timeout=time_budget)
                progress.results = {entry.custom_id: batch_result(entry) async for entry in decoder}
        except anthropic.AnthropicError as exc:
            raise map_error(exc, time_budget) from exc
        return progress

    async def cancel_batch(self, provider_batch_id: str, *, time_budget: float) -> BatchProgress:
        try:
            batch = await self._client.messages.batches.cancel(provider_batch_id, timeout=time_budget)
        except anthropic.AnthropicError as exc:
            raise map_error(exc, time_budget) from exc
        return batch_progress(batch)

    async def list_models(self, *, time_budget: float) -> list[ReportedModel]:
        try:
            page = await self._client.models.list(limit=1000, timeout=time_budget)
        except anthropic.AnthropicError as exc:
            raise map_error(exc, time_budget) from exc
        reported = []
        for entry in page.data:
            extra = entry.model_extra or {}
            window = extra.get("max_input_tokens") or extra.get("context_window") or 0
            reported.append(ReportedModel(model=entry.id, context_window=int(window)))
        return reported

    async def aclose(self) -> None:
        await self._client.close()
