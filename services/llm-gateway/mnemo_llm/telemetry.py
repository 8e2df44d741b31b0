"""What an LLM call tells an operator: a span per chat in the OpenTelemetry `gen_ai.*` conventions (model,
tokens, finish reason), whose children are the provider's HTTP requests, and the token counters by model and
organization."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from mnemo.common.v1 import turn_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_core.actor import current_actor_or_none
from mnemo_core.errors import MnemoError

_tracer = trace.get_tracer(__name__)
_meter = metrics.get_meter("mnemo.llm")
_tokens = _meter.create_counter(
    "mnemo.llm.tokens", unit="{token}", description="Tokens spent, by model, organization and type."
)
_FINISH_REASONS = {
    llm_pb2.FINISH_REASON_STOP: "stop",
    llm_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
    llm_pb2.FINISH_REASON_LENGTH: "length",
    llm_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
}


def start_chat_span(provider_kind: str, model: str, request: llm_pb2.ChatRequest) -> Span:
    """The span of one chat (retries included), not yet current; end it with `end_chat_span`."""
    attributes: dict[str, str | int | float] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider_kind,
        "gen_ai.system": provider_kind,
        "gen_ai.request.model": model,
    }
    if request.max_tokens:
        attributes["gen_ai.request.max_tokens"] = request.max_tokens
    if request.HasField("temperature"):
        attributes["gen_ai.request.temperature"] = request.temperature
    if request.agent_id:
        attributes["mnemo.agent.id"] = request.agent_id
    return _tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes)


def end_chat_span(span: Span, error: BaseException | None) -> None:
    """Ends a chat's span, with the failure's reason if it failed."""
    if isinstance(error, MnemoError):
        span.set_attribute("error.type", error.reason)
        span.set_status(Status(StatusCode.ERROR, error.message))
    elif error is not None and not isinstance(error, GeneratorExit):
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(Status(StatusCode.ERROR, str(error)))
    span.end()


@contextlib.contextmanager
def chat_span(provider_kind: str, model: str, request: llm_pb2.ChatRequest) -> Iterator[Span]:
    """The span of one chat, current while the block runs (the provider's HTTP spans are its children)."""
    span = start_chat_span(provider_kind, model, request)
    try:
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            yield span
    except BaseException as exc:
        end_chat_span(span, exc)
        raise
    end_chat_span(span, None)


def record_response(span: Span, response: llm_pb2.ChatResponse) -> None:
    """The answer's side of the `gen_ai` attributes."""
    if not span.is_recording():
        return
    if response.model:
        span.set_attribute("gen_ai.response.model", response.model)
    span.set_attribute("gen_ai.usage.input_tokens", response.usage.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", response.usage.completion_tokens)
    reason = _FINISH_REASONS.get(response.finish_reason)
    if reason is not None:
        span.set_attribute("gen_ai.response.finish_reasons", [reason])


def count_tokens(model: str, operation: str, used: turn_pb2.Usage) -> None:
    """Adds a call's tokens to the counters of its model and the caller's organization."""
    actor = current_actor_or_none()
    org = actor.org_id if actor is not None else ""
    base = {"model": model, "organization": org, "operation": operation}
    if used.prompt_tokens:
        _tokens.add(used.prompt_tokens, {**base, "type": "input"})
    if used.completion_tokens:
        _tokens.add(used.completion_tokens, {**base, "type": "output"})
