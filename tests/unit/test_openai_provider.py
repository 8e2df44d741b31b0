"""The OpenAI chat-completions mapping: request parameters, provider errors, responses."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletion

from mnemo.common.v1 import message_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_core import errors
from mnemo_llm.openai_provider import map_error, request_params, response_from

URL = "http://provider.test/v1/chat/completions"


def fields(error: errors.MnemoError) -> list[str]:
    return [v.field for v in error.violations]


# --- request_params ------------------------------------------------------------------------------------


def conversation() -> list[llm_pb2.ChatMessage]:
    return [
        llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_SYSTEM, content="sys"),
        llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content="hi", name="ada"),
        llm_pb2.ChatMessage(
            role=llm_pb2.CHAT_ROLE_ASSISTANT,
            content="Saving.",
            reasoning="not sent",
            tool_calls=[message_pb2.ToolCall(id="c1", name="save", arguments='{"a":1}')],
        ),
        llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_TOOL, content="done", tool_call_id="c1", name="save"),
        llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_ASSISTANT, content="Saved."),
    ]


def test_messages_are_sent_in_the_openai_wire_format() -> None:
    params = request_params("gpt-4o", llm_pb2.ChatRequest(model="openai/gpt-4o", messages=conversation()))

    assert params == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "hi", "name": "ada"},
            {
                "role": "assistant",
                "content": "Saving.",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "save", "arguments": '{"a":1}'}}
                ],
            },
            {"role": "tool", "content": "done", "tool_call_id": "c1"},
            {"role": "assistant", "content": "Saved."},
        ],
    }


def test_assistant_message_with_only_tool_calls_sends_null_content() -> None:
    message = llm_pb2.ChatMessage(
        role=llm_pb2.CHAT_ROLE_ASSISTANT, tool_calls=[message_pb2.ToolCall(id="c1", name="t", arguments="{}")]
    )

    (wire,) = request_params("m", llm_pb2.ChatRequest(messages=[message]))["messages"]

    assert wire["content"] is None


def test_message_without_a_role_is_invalid_argument_naming_its_index() -> None:
    request = llm_pb2.ChatRequest(messages=[*conversation(), llm_pb2.ChatMessage(content="who?")])

    with pytest.raises(errors.InvalidArgument) as refused:
        request_params("m", request)

    assert fields(refused.value) == ["messages[5].role"]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        (llm_pb2.TOOL_CHOICE_UNSPECIFIED, "auto"),
        (llm_pb2.TOOL_CHOICE_AUTO, "auto"),
        (llm_pb2.TOOL_CHOICE_REQUIRED, "required"),
        (llm_pb2.TOOL_CHOICE_NONE, "none"),
    ],
)
def test_tools_are_sent_as_functions_with_the_tool_choice(
    choice: llm_pb2.ToolChoice.ValueType, wire: str
) -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    request = llm_pb2.ChatRequest(
        messages=conversation()[:2],
        tools=[
            llm_pb2.ToolSchema(name="with_schema", description="d", parameters_json=json.dumps(schema)),
            llm_pb2.ToolSchema(name="without_schema"),
        ],
        tool_choice=choice,
    )

    params = request_params("m", request)

    assert params["tools"] == [
        {"type": "function", "function": {"name": "with_schema", "description": "d", "parameters": schema}},
        {
            "type": "function",
            "function": {"name": "without_schema", "description": "", "parameters": {"type": "object"}},
        },
    ]
    assert params["tool_choice"] == wire
    assert params["parallel_tool_calls"] is False


def test_tool_whose_parameters_are_not_json_is_invalid_argument_naming_it() -> None:
    request = llm_pb2.ChatRequest(
        messages=conversation()[:2],
        tools=[
            llm_pb2.ToolSchema(name="ok", parameters_json="{}"),
            llm_pb2.ToolSchema(name="bad", parameters_json="{"),
        ],
    )

    with pytest.raises(errors.InvalidArgument) as refused:
        request_params("m", request)

    assert fields(refused.value) == ["tools[1].parameters_json"]


def test_temperature_is_sent_only_when_set_even_when_zero_and_max_tokens_only_when_positive() -> None:
    unset = request_params("m", llm_pb2.ChatRequest(messages=conversation()[:1]))
    zero = request_params(
        "m", llm_pb2.ChatRequest(messages=conversation()[:1], temperature=0.0, max_tokens=5)
    )

    assert "temperature" not in unset
    assert "max_tokens" not in unset
    assert "tools" not in unset
    assert zero["temperature"] == 0.0
    assert zero["max_tokens"] == 5


# --- map_error -----------------------------------------------------------------------------------------


def status_error(
    cls: type[openai.APIStatusError], status: int, message: str, code: str | None = None
) -> openai.APIStatusError:
    request = httpx2.Request("POST", URL)
    body = {"message": message, "type": "invalid_request_error", "code": code}
    return cls(message, response=httpx2.Response(status, request=request), body=body)


@pytest.mark.parametrize(
    ("exc", "expected", "reason"),
    [
        (
            openai.APITimeoutError(request=httpx2.Request("POST", URL)),
            errors.DeadlineExceeded,
            "PROVIDER_TIMEOUT",
        ),
        (
            openai.APIConnectionError(message="Connection refused", request=httpx2.Request("POST", URL)),
            errors.Unavailable,
            "PROVIDER_UNAVAILABLE",
        ),
        (
            status_error(openai.AuthenticationError, 401, "bad key"),
            errors.PermissionDenied,
            "PROVIDER_AUTH_FAILED",
        ),
        (
            status_error(openai.PermissionDeniedError, 403, "region"),
            errors.PermissionDenied,
            "PROVIDER_PERMISSION_DENIED",
        ),
        (status_error(openai.NotFoundError, 404, "no such model"), errors.NotFound, "MODEL_NOT_FOUND"),
        (
            status_error(openai.RateLimitError, 429, "slow down"),
            errors.ResourceExhausted,
            "PROVIDER_RATE_LIMITED",
        ),
        (
            status_error(openai.BadRequestError, 400, "too big", code="context_length_exceeded"),
            errors.InvalidArgument,
            "CONTEXT_WINDOW_EXCEEDED",
        ),
        (
            status_error(openai.BadRequestError, 400, "This model's maximum context length is 8192 tokens"),
            errors.InvalidArgument,
            "CONTEXT_WINDOW_EXCEEDED",
        ),
        (
            status_error(openai.UnprocessableEntityError, 422, "Too many tokens in the prompt"),
            errors.InvalidArgument,
            "CONTEXT_WINDOW_EXCEEDED",
        ),
        (
            status_error(openai.BadRequestError, 400, "temperature out of range"),
            errors.InvalidArgument,
            "PROVIDER_BAD_REQUEST",
        ),
        (
            status_error(openai.UnprocessableEntityError, 422, "unprocessable"),
            errors.InvalidArgument,
            "PROVIDER_BAD_REQUEST",
        ),
        (status_error(openai.InternalServerError, 500, "oops"), errors.Unavailable, "PROVIDER_UNAVAILABLE"),
        (status_error(openai.ConflictError, 409, "conflict"), errors.Unavailable, "PROVIDER_UNAVAILABLE"),
    ],
    ids=[
        "timeout",
        "connection",
        "401",
        "403",
        "404",
        "429",
        "400-code",
        "400-message",
        "422-message",
        "400-other",
        "422-other",
        "500",
        "409",
    ],
)
def test_provider_errors_map_to_domain_errors_with_a_reason(
    exc: openai.OpenAIError, expected: type[errors.MnemoError], reason: str
) -> None:
    mapped = map_error(exc)

    assert type(mapped) is expected
    assert mapped.reason == reason


def test_mapped_error_keeps_the_providers_message() -> None:
    mapped = map_error(status_error(openai.NotFoundError, 404, "The model `gpt-9` does not exist"))

    assert mapped.message == "provider error: The model `gpt-9` does not exist"


# --- response_from -------------------------------------------------------------------------------------


def completion(message: dict[str, Any], *, finish: str | None = "stop", **extra: Any) -> ChatCompletion:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-test-2025",
        "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", **message}}],
    }
    body.update(extra)
    return ChatCompletion.model_validate(body)


def test_text_completion_becomes_an_assistant_message_with_usage() -> None:
    response = response_from(
        completion(
            {"content": "Hello"},
            usage={"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        )
    )

    assert response.message == llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_ASSISTANT, content="Hello")
    assert (response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens) == (
        10,
        2,
        12,
    )
    assert response.finish_reason == llm_pb2.FINISH_REASON_STOP
    assert response.model == "gpt-test-2025"


def test_tool_calls_are_parsed_and_missing_arguments_become_an_empty_object() -> None:
    response = response_from(
        completion(
            {
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "a", "arguments": '{"x":1}'}},
                    {"id": "c2", "type": "function", "function": {"name": "b", "arguments": ""}},
                ],
            },
            finish="tool_calls",
        )
    )

    assert response.message.content == ""
    assert list(response.message.tool_calls) == [
        message_pb2.ToolCall(id="c1", name="a", arguments='{"x":1}'),
        message_pb2.ToolCall(id="c2", name="b", arguments="{}"),
    ]
    assert response.finish_reason == llm_pb2.FINISH_REASON_TOOL_CALLS


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_reasoning_of_openai_compatible_servers_is_kept(key: str) -> None:
    response = response_from(completion({"content": "4", key: "2+2"}))

    assert response.message.reasoning == "2+2"


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("stop", llm_pb2.FINISH_REASON_STOP),
        ("tool_calls", llm_pb2.FINISH_REASON_TOOL_CALLS),
        ("function_call", llm_pb2.FINISH_REASON_TOOL_CALLS),
        ("length", llm_pb2.FINISH_REASON_LENGTH),
        ("content_filter", llm_pb2.FINISH_REASON_CONTENT_FILTER),
    ],
)
def test_finish_reasons_are_mapped(finish: str, expected: llm_pb2.FinishReason.ValueType) -> None:
    assert response_from(completion({"content": "x"}, finish=finish)).finish_reason == expected


def test_completion_without_usage_reports_zero_usage() -> None:
    response = response_from(completion({"content": "x"}))

    assert response.usage.prompt_tokens == 0
    assert response.usage.completion_tokens == 0
    assert response.usage.total_tokens == 0


def test_completion_without_choices_is_unavailable_bad_response() -> None:
    empty = ChatCompletion.model_validate(
        {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}
    )

    with pytest.raises(errors.Unavailable) as failed:
        response_from(empty)

    assert failed.value.reason == "PROVIDER_BAD_RESPONSE"


def test_openais_own_api_gets_max_completion_tokens_and_compatible_servers_max_tokens() -> None:
    request = llm_pb2.ChatRequest(messages=conversation()[:1], max_tokens=50)

    official = request_params("o3", request, official=True)
    compatible = request_params("llama", request)

    assert official["max_completion_tokens"] == 50
    assert "max_tokens" not in official
    assert compatible["max_tokens"] == 50
    assert "max_completion_tokens" not in compatible
