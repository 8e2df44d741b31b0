"""OpenAI chat completions (and every OpenAI-compatible server) through the official SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import openai
from openai import AsyncStream
from openai._base_client import make_request_options
from openai.types import Batch
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_core import errors
from mnemo_core.proto_enums import EnumNames
from mnemo_llm.providers import (
    FINISHED_BATCH_STATES,
    PROVIDER_BAD_RESPONSE,
    BatchItem,
    BatchProgress,
    EmbeddingResult,
    ReplyBuilder,
    ReportedModel,
    chat_role,
    completed_event,
    content_event,
    not_run_error,
    reasoning_event,
    status_error,
    timeout_error,
    tool_call_event,
    tool_parameters,
    unreachable_error,
)

_TOOL_CHOICES = EnumNames(llm_pb2.ToolChoice)
FINISH_REASONS = {
    "stop": llm_pb2.FINISH_REASON_STOP,
    "tool_calls": llm_pb2.FINISH_REASON_TOOL_CALLS,
    "function_call": llm_pb2.FINISH_REASON_TOOL_CALLS,
    "length": llm_pb2.FINISH_REASON_LENGTH,
    "content_filter": llm_pb2.FINISH_REASON_CONTENT_FILTER,
}

# Batch statuses of the Batches API (`cancelling` still runs: requests may complete until it stops).
BATCH_STATES = {
    "validating": llm_pb2.CHAT_BATCH_STATE_PENDING,
    "in_progress": llm_pb2.CHAT_BATCH_STATE_RUNNING,
    "finalizing": llm_pb2.CHAT_BATCH_STATE_RUNNING,
    "cancelling": llm_pb2.CHAT_BATCH_STATE_RUNNING,
    "completed": llm_pb2.CHAT_BATCH_STATE_SUCCEEDED,
    "failed": llm_pb2.CHAT_BATCH_STATE_FAILED,
    "expired": llm_pb2.CHAT_BATCH_STATE_EXPIRED,
    "cancelled": llm_pb2.CHAT_BATCH_STATE_CANCELLED,
}
BATCH_ENDPOINT: Final = "/v1/chat/completions"


def _message(message: llm_pb2.ChatMessage, index: int) -> dict[str, Any]:
    role = chat_role(message, index)
    wire: dict[str, Any] = {"role": role, "content": message.content}
    if role == "assistant" and message.tool_calls:
        wire["content"] = message.content or None
        wire["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in message.tool_calls
        ]
    if role == "tool":
        wire["tool_call_id"] = message.tool_call_id
    if role == "user" and message.name:
        wire["name"] = message.name
    return wire


def _tool(tool: llm_pb2.ToolSchema, index: int) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool_parameters(tool, index),
        },
    }


def request_params(model: str, request: llm_pb2.ChatRequest, *, official: bool = False) -> dict[str, Any]:
    """The chat-completions parameters for a chat request.

    `official`: OpenAI's own API, which wants `max_completion_tokens` (its reasoning models refuse
    `max_tokens`); compatible servers get the `max_tokens` they all understand.
    """
    params: dict[str, Any] = {
        "model": model,
        "messages": [_message(m, i) for i, m in enumerate(request.messages)],
    }
    if request.tools:
        params["tools"] = [_tool(t, i) for i, t in enumerate(request.tools)]
        params["tool_choice"] = _TOOL_CHOICES.name(request.tool_choice) or "auto"
        params["parallel_tool_calls"] = request.parallel_tool_calls
    if request.HasField("temperature"):
        params["temperature"] = request.temperature
    if request.max_tokens:
        params["max_completion_tokens" if official else "max_tokens"] = request.max_tokens
    return params


def map_error(exc: openai.OpenAIError, time_budget: float = 0.0) -> errors.MnemoError:
    """The domain error for a provider failure, keeping the provider's own message."""
    text = str(getattr(exc, "message", None) or exc)
    if isinstance(exc, openai.APITimeoutError):
        return (
            timeout_error(time_budget)
            if time_budget
            else errors.DeadlineExceeded(f"provider error: {text}", reason="PROVIDER_TIMEOUT")
        )
    if isinstance(exc, openai.APIConnectionError):
        return unreachable_error(text)
    if isinstance(exc, openai.APIStatusError):
        code = str(getattr(exc, "code", "") or "")
        return status_error(exc.status_code, text, code=code, headers=exc.response.headers)
    return unreachable_error(text)


def _reasoning_of(extra: dict[str, Any] | None) -> str:
    if not extra:
        return ""
    reasoning = extra.get("reasoning_content") or extra.get("reasoning") or ""
    return reasoning if isinstance(reasoning, str) else ""


def response_from(completion: Any) -> llm_pb2.ChatResponse:
    """The chat response for a chat-completions result."""
    if not completion.choices:
        raise errors.Unavailable("provider returned no choices", reason=PROVIDER_BAD_RESPONSE)
    choice = completion.choices[0]
    message = choice.message
    reply = llm_pb2.ChatMessage(
        role=llm_pb2.CHAT_ROLE_ASSISTANT,
        content=message.content or "",
        reasoning=_reasoning_of(message.model_extra),
        tool_calls=[
            message_pb2.ToolCall(
                id=call.id, name=call.function.name, arguments=call.function.arguments or "{}"
            )
            for call in message.tool_calls or []
            if getattr(call, "function", None) is not None
        ],
    )
    usage = completion.usage
    return llm_pb2.ChatResponse(
        message=reply,
        usage=turn_pb2.Usage(
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            total_tokens=getattr(usage, "total_tokens", 0) or 0,
        ),
        finish_reason=FINISH_REASONS.get(choice.finish_reason or "", llm_pb2.FINISH_REASON_UNSPECIFIED),
        model=completion.model or "",
    )


def batch_line(item: BatchItem, *, official: bool) -> str:
    """One line of a Batches API input file: the same chat-completions body Chat would post."""
    body = request_params(item.model, item.request, official=official)
    return json.dumps({"custom_id": item.custom_id, "method": "POST", "url": BATCH_ENDPOINT, "body": body})


def batch_result(line: dict[str, Any]) -> llm_pb2.ChatResponse | errors.MnemoError:
    """The reply (or error) of one line of a batch's output or error file."""
    failure = line.get("error")
    if failure:
        code = str(failure.get("code") or "")
        if code in ("batch_expired", "batch_cancelled"):
            return not_run_error(code.removeprefix("batch_"))
        return status_error(500, str(failure.get("message") or code), code=code)
    response = line.get("response") or {}
    status = int(response.get("status_code") or 0)
    body = response.get("body") or {}
    if status != 200:
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        message = str(error.get("message") or f"HTTP {status}")
        return status_error(status or 500, message, code=str(error.get("code") or ""))
    try:
        return response_from(ChatCompletion.model_validate(body))
    except (ValueError, errors.MnemoError) as exc:
        return errors.Unavailable(
            f"provider returned a malformed batch result: {exc}", reason=PROVIDER_BAD_RESPONSE
        )


async def stream_events(
    chunks: AsyncIterator[ChatCompletionChunk],
) -> AsyncIterator[llm_pb2.StreamChatResponse]:
    """Stream events for chat-completions chunks: deltas at once, each tool call once it is complete.

    A stream that ends before a finish reason was cut (a dropped connection, a proxy): its reply is
    incomplete, and raises PROVIDER_UNAVAILABLE rather than pass for a whole answer.
    """
    reply = ReplyBuilder()
    current_call: int | None = None
    finished = False
    async for chunk in chunks:
        if chunk.model:
            reply.model = chunk.model
        if chunk.usage is not None:
            reply.prompt_tokens = chunk.usage.prompt_tokens or 0
            reply.completion_tokens = chunk.usage.completion_tokens or 0
        for choice in chunk.choices[:1]:
            delta = choice.delta
            reasoning = _reasoning_of(delta.model_extra)
            if reasoning:
                reply.reasoning.append(reasoning)
                yield reasoning_event(reasoning)
            if delta.content:
                reply.content.append(delta.content)
                yield content_event(delta.content)
            for fragment in delta.tool_calls or []:
                # Calls arrive one after another: a new index means the previous call is complete.
                if current_call is not None and fragment.index != current_call:
                    done = reply.complete_call(current_call)
                    if done is not None:
                        yield tool_call_event(done)
                current_call = fragment.index
                function = fragment.function
                reply.call_fragment(
                    fragment.index,
                    id=fragment.id or "",
                    name=(function.name or "") if function else "",
                    arguments=(function.arguments or "") if function else "",
                )
            if choice.finish_reason:
                finished = True
                reply.finish_reason = FINISH_REASONS.get(
                    choice.finish_reason, llm_pb2.FINISH_REASON_UNSPECIFIED
                )
                for done in reply.complete_all_calls():
                    yield tool_call_event(done)
    if not finished:
        raise unreachable_error("the stream ended before the answer was complete (no finish reason)")
    for done in reply.complete_all_calls():
        yield tool_call_event(done)
    yield completed_event(reply.response())


class OpenAIProvider:
    """Chat completions against api.openai.com or any OpenAI-compatible base URL."""

    def __init__(
        self, *, api_key: str, base_url: str | None, max_retries: int = 0, batch_api: bool | None = None
    ) -> None:
        # Retries are the gateway's (mnemo_llm.resilience), so the SDK's own are off by default.
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url or None, max_retries=max_retries)
        self._official = not base_url or "api.openai.com" in base_url
        # OpenAI has the Batches API; compatible servers mostly do not, unless configured to say so.
        self.batch_api = self._official if batch_api is None else batch_api

    async def chat(
        self, model: str, request: llm_pb2.ChatRequest, *, time_budget: float
    ) -> llm_pb2.ChatResponse:
        params = request_params(model, request, official=self._official)
        try:
            # `chat.completions.create` first walks the params through the SDK's TypedDict transform, a
            # third of this service's CPU per call; our params are already the exact wire JSON.
            completion = await self._client.post(
                "/chat/completions",
                body=params,
                cast_to=ChatCompletion,
                options=make_request_options(timeout=time_budget, security={"bearer_auth": True}),
            )
        except openai.OpenAIError as exc:
            raise map_error(exc, time_budget) from exc
        except ValueError as exc:  # a body cut short (JSONDecodeError): worth another attempt
            raise unreachable_error(f"the answer was not valid JSON ({exc})") from exc
        return response_from(completion)

    async def stream(
        self, model: str, request: llm_pb2.ChatRequest, *, time_budget: float
    ) -> AsyncIterator[llm_pb2.StreamChatResponse]:
        params = request_params(model, request, official=self._official)
        params["stream"] = True
        params["stream_options"] = {"include_usage": True}
        try:
            chunks = await self._client.post(
                "/chat/completions",
                body=params,
                cast_to=ChatCompletion,
                stream=True,
                stream_cls=AsyncStream[ChatCompletionChunk],
                options=make_request_options(timeout=time_budget, security={"bearer_auth": True}),
            )
        except openai.OpenAIError as exc:
            raise map_error(exc, time_budget) from exc
        try:
            async for event in stream_events(chunks):
                yield event
        except openai.OpenAIError as exc:
            raise map_error(exc, time_budget) from exc
        except ValueError as exc:  # a chunk cut short (JSONDecodeError)
            raise unreachable_error(f"a streamed chunk was not valid JSON ({exc})") from exc
        finally:
            # Also on cancellation: the HTTP response is closed, so the provider stops generating.
            await chunks.close()

    async def list_models(self, *, time_budget: float) -> list[ReportedModel]:
        try:
            page = await self._client.models.list(timeout=time_budget)
        except openai.OpenAIError as exc:
            raise map_error(exc, time_budget) from exc
        reported = []
        for entry in page.data:
            extra = entry.model_extra or {}
            # OpenAI reports no window; vLLM says max_model_len, others context_length / context_window.
            window = next(
                (
                    int(extra[key])
                    for key in ("context_window", "context_length", "max_model_len")
                    if isinstance(extra.get(key), int)
                ),
                0,
            )
            kind = llm_pb2.MODEL_KIND_EMBEDDING if "embed" in entry.id.lower() else llm_pb2.MODEL_KIND_CHAT
            reported.append(ReportedModel(model=entry.id, kind=kind, context_window=window))
        return reported

    async def embed(self, model: str, texts: Sequence[str], *, time_budget: float) -> EmbeddingResult:
        try:
            result = await self._client.embeddings.create(
                model=model, input=list(texts), encoding_format="float", timeout=time_budget
            )
        except openai.OpenAIError as exc:
            raise map_error(exc, time_budget) from exc
        rows = sorted(result.data, key=lambda item: item.index)
        if len(rows) != len(texts):
            raise errors.Unavailable(
                f"provider returned {len(rows)} embeddings for {len(texts)} inputs",
                reason=PROVIDER_BAD_RESPONSE,
            )
        return EmbeddingResult(
            vectors=[list(row.embedding) for row in rows],
            prompt_tokens=result.usage.prompt_tokens if result.usage else 0,
        )

    async def submit_batch(self, items: Sequence[BatchItem], *, time_budget: float) -> BatchProgress:
        lines = "".join(batch_line(item, official=self._official) + "\n" for item in items)
        try:
            uploaded = await self._client.files.create(
                file=("requests.jsonl", lines.encode(), "application/jsonl"),
                purpose="batch",
                timeout=time_budget,
            )
            batch = await self._client.batches.create(
                input_file_id=uploaded.id,
                endpoint=BATCH_ENDPOINT,
                completion_window="24h",
                timeout=time_budget,
            )
        except openai.OpenAIError as exc:
            raise map_error(exc, time_budget) from exc
        return await self._progress(batch, time_budget)

    async def poll_batch(self, provider_batch_id: str, *, time_budget: float) -> BatchProgress:
        try:
            batch = await self._client.batches.retrieve(provider_batch_id, timeout=time_budget)
        except openai.OpenAIError as exc:
            raise map_error(exc, time_budget) from exc
        return await self._progress(batch, time_budget)

    async def cancel_batch(self, provider_batch_id: str, *, time_budget: float) -> BatchProgress:
        try:
            batch = await self._client.batches.cancel(provider_batch_id, timeout=time_budget)
        except openai.OpenAIError as exc:
            raise map_error(exc, time_budget) from exc
        return await self._progress(batch, time_budget)

    async def _progress(self, batch: Batch, time_budget: float) -> BatchProgress:
        """The batch's progress; once it has finished, its output and error files read and parsed."""
        state = BATCH_STATES.get(batch.status, llm_pb2.CHAT_BATCH_STATE_RUNNING)
        counts = batch.request_counts
        progress = BatchProgress(
            batch.id,
            state,
            succeeded=counts.completed if counts else 0,
            failed=counts.failed if counts else 0,
        )
        if state == llm_pb2.CHAT_BATCH_STATE_FAILED:
            found = batch.errors.data if batch.errors and batch.errors.data else []
            progress.error = "; ".join(e.message or e.code or "" for e in found) or "the batch failed"
        if state not in FINISHED_BATCH_STATES or state == llm_pb2.CHAT_BATCH_STATE_FAILED:
            return progress
        progress.results = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            try:
                content = await self._client.files.content(file_id, timeout=time_budget)
            except openai.OpenAIError as exc:
                raise map_error(exc, time_budget) from exc
            for text in content.text.splitlines():
                if text.strip():
                    line = json.loads(text)
                    progress.results[str(line.get("custom_id"))] = batch_result(line)
        return progress

    async def aclose(self) -> None:
        await self._client.close()
