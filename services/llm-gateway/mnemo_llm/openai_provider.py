"""OpenAI chat completions (and every OpenAI-compatible server) through the official SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
from openai._base_client import make_request_options
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_core import errors
from mnemo_core.validation import invalid

_ROLES = {
    llm_pb2.CHAT_ROLE_SYSTEM: "system",
    llm_pb2.CHAT_ROLE_USER: "user",
    llm_pb2.CHAT_ROLE_ASSISTANT: "assistant",
    llm_pb2.CHAT_ROLE_TOOL: "tool",
}
_TOOL_CHOICES = {
    llm_pb2.TOOL_CHOICE_UNSPECIFIED: "auto",
    llm_pb2.TOOL_CHOICE_AUTO: "auto",
    llm_pb2.TOOL_CHOICE_REQUIRED: "required",
    llm_pb2.TOOL_CHOICE_NONE: "none",
}
_FINISH = {
    "stop": llm_pb2.FINISH_REASON_STOP,
    "tool_calls": llm_pb2.FINISH_REASON_TOOL_CALLS,
    "function_call": llm_pb2.FINISH_REASON_TOOL_CALLS,
    "length": llm_pb2.FINISH_REASON_LENGTH,
    "content_filter": llm_pb2.FINISH_REASON_CONTENT_FILTER,
}
_OVERFLOW_MARKERS = ("context_length_exceeded", "maximum context length", "context window", "too many tokens")


def _message(message: llm_pb2.ChatMessage, index: int) -> dict[str, Any]:
    role = _ROLES.get(message.role)
    if role is None:
        raise invalid(f"messages[{index}].role", "must be set")
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
    try:
        parameters = json.loads(tool.parameters_json) if tool.parameters_json else {"type": "object"}
    except json.JSONDecodeError as exc:
        raise invalid(f"tools[{index}].parameters_json", f"is not JSON: {exc}") from exc
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": parameters},
    }


def request_params(model: str, request: llm_pb2.ChatRequest) -> dict[str, Any]:
    """The chat-completions parameters for a chat request."""
    params: dict[str, Any] = {
        "model": model,
        "messages": [_message(m, i) for i, m in enumerate(request.messages)],
    }
    if request.tools:
        params["tools"] = [_tool(t, i) for i, t in enumerate(request.tools)]
        params["tool_choice"] = _TOOL_CHOICES[request.tool_choice]
        params["parallel_tool_calls"] = request.parallel_tool_calls
    if request.HasField("temperature"):
        params["temperature"] = request.temperature
    if request.max_tokens:
        params["max_tokens"] = request.max_tokens
    return params


def map_error(exc: openai.OpenAIError) -> errors.MnemoError:
    """The domain error for a provider failure, keeping the provider's own message."""
    text = str(getattr(exc, "message", None) or exc)
    detail = f"provider error: {text}"
    if isinstance(exc, openai.APITimeoutError):
        return errors.DeadlineExceeded(detail, reason="PROVIDER_TIMEOUT")
    if isinstance(exc, openai.APIConnectionError):
        return errors.Unavailable(detail, reason="PROVIDER_UNAVAILABLE")
    if isinstance(exc, openai.AuthenticationError):
        return errors.PermissionDenied(detail, reason="PROVIDER_AUTH_FAILED")
    if isinstance(exc, openai.PermissionDeniedError):
        return errors.PermissionDenied(detail, reason="PROVIDER_PERMISSION_DENIED")
    if isinstance(exc, openai.NotFoundError):
        return errors.NotFound(detail, reason="MODEL_NOT_FOUND")
    if isinstance(exc, openai.RateLimitError):
        return errors.ResourceExhausted(detail, reason="PROVIDER_RATE_LIMITED")
    if isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError):
        code = str(getattr(exc, "code", "") or "")
        if code == "context_length_exceeded" or any(m in text.lower() for m in _OVERFLOW_MARKERS):
            return errors.InvalidArgument(detail, reason="CONTEXT_WINDOW_EXCEEDED")
        return errors.InvalidArgument(detail, reason="PROVIDER_BAD_REQUEST")
    return errors.Unavailable(detail, reason="PROVIDER_UNAVAILABLE")


def response_from(completion: Any) -> llm_pb2.ChatResponse:
    """The chat response for a chat-completions result."""
    if not completion.choices:
        raise errors.Unavailable("provider returned no choices", reason="PROVIDER_BAD_RESPONSE")
    choice = completion.choices[0]
    message = choice.message
    extra = message.model_extra or {}
    reasoning = extra.get("reasoning_content") or extra.get("reasoning") or ""
    reply = llm_pb2.ChatMessage(
        role=llm_pb2.CHAT_ROLE_ASSISTANT,
        content=message.content or "",
        reasoning=reasoning if isinstance(reasoning, str) else "",
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
        finish_reason=_FINISH.get(choice.finish_reason or "", llm_pb2.FINISH_REASON_UNSPECIFIED),
        model=completion.model or "",
    )


class OpenAIProvider:
    """Chat completions against api.openai.com or any OpenAI-compatible base URL."""

    def __init__(self, *, api_key: str, base_url: str | None, max_retries: int) -> None:
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url or None, max_retries=max_retries)

    async def chat(
        self, model: str, request: llm_pb2.ChatRequest, *, time_budget: float
    ) -> llm_pb2.ChatResponse:
        params = request_params(model, request)
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
            raise map_error(exc) from exc
        return response_from(completion)

    async def stream_chat(
        self, model: str, request: llm_pb2.ChatRequest, *, time_budget: float
    ) -> AsyncIterator[llm_pb2.StreamChatResponse]:
        """Streams one completion: text and reasoning deltas, each tool call once complete, the reply last."""
        params = {**request_params(model, request), "stream": True, "stream_options": {"include_usage": True}}
        content: list[str] = []
        reasoning: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        finish = ""
        usage = turn_pb2.Usage()
        answered_by = ""
        try:
            stream = await self._client.post(
                "/chat/completions",
                body=params,
                cast_to=ChatCompletion,
                stream=True,
                stream_cls=openai.AsyncStream[ChatCompletionChunk],
                options=make_request_options(timeout=time_budget, security={"bearer_auth": True}),
            )
            async for chunk in stream:
                answered_by = chunk.model or answered_by
                if chunk.usage is not None:
                    usage = turn_pb2.Usage(
                        prompt_tokens=chunk.usage.prompt_tokens or 0,
                        completion_tokens=chunk.usage.completion_tokens or 0,
                        total_tokens=chunk.usage.total_tokens or 0,
                    )
                for choice in chunk.choices:
                    delta = choice.delta
                    finish = choice.finish_reason or finish
                    if delta.content:
                        content.append(delta.content)
                        yield llm_pb2.StreamChatResponse(content_delta=delta.content)
                    extra = delta.model_extra or {}
                    thought = extra.get("reasoning_content") or extra.get("reasoning")
                    if isinstance(thought, str) and thought:
                        reasoning.append(thought)
                        yield llm_pb2.StreamChatResponse(reasoning_delta=thought)
                    for call in delta.tool_calls or []:
                        slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                        slot["id"] = call.id or slot["id"]
                        if call.function is not None:
                            slot["name"] += call.function.name or ""
                            slot["arguments"] += call.function.arguments or ""
        except openai.OpenAIError as exc:
            raise map_error(exc) from exc
        tool_calls = [
            message_pb2.ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"] or "{}")
            for _, c in sorted(calls.items())
        ]
        for complete in tool_calls:
            yield llm_pb2.StreamChatResponse(tool_call=complete)
        reply = llm_pb2.ChatMessage(
            role=llm_pb2.CHAT_ROLE_ASSISTANT,
            content="".join(content),
            reasoning="".join(reasoning),
            tool_calls=tool_calls,
        )
        yield llm_pb2.StreamChatResponse(
            completed=llm_pb2.ChatResponse(
                message=reply,
                usage=usage,
                finish_reason=_FINISH.get(finish, llm_pb2.FINISH_REASON_UNSPECIFIED),
                model=answered_by,
            )
        )

    async def aclose(self) -> None:
        await self._client.close()
