"""The llm-gateway's domain: route a chat to its provider within the caller's deadline (retrying what may
succeed on a second try), stream it, embed texts, count tokens, list models, and keep the usage ledger."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence

from opentelemetry import trace

from mnemo.common.v1 import turn_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_core.actor import current_actor, remaining_time
from mnemo_core.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    MnemoError,
    NotFound,
    Unavailable,
)
from mnemo_core.validation import check_text, invalid
from mnemo_core.wire import field_time
from mnemo_llm.catalogue import Catalogue
from mnemo_llm.chat_batches import ChatBatches
from mnemo_llm.embeddings import LOCAL_MODEL_NAME, LocalEmbedder
from mnemo_llm.providers import EmbeddingProvider, ModelName, Providers, ReportedModel
from mnemo_llm.resilience import RetryPolicy
from mnemo_llm.telemetry import chat_span, count_tokens, end_chat_span, record_response, start_chat_span
from mnemo_llm.tokens import count_chat, count_text
from mnemo_llm.usage import UsageLedger, UsageQuery

log = logging.getLogger(__name__)

MAX_EMBED_INPUTS = 2048
MAX_EMBED_INPUT_CHARS = 100_000
LOCAL_EMBEDDING_MODEL = ModelName("local", LOCAL_MODEL_NAME)
DEFAULT_EMBEDDING_MODEL = f"{LOCAL_EMBEDDING_MODEL.provider}/{LOCAL_EMBEDDING_MODEL.model}"
# Seconds ListModels waits for each provider's own listing.
LIST_MODELS_TIMEOUT = 10.0


class LlmGateway:
    """Runs chat requests on the configured providers and embeds texts."""

    def __init__(
        self,
        providers: Providers,
        *,
        request_timeout: float,
        embedder: LocalEmbedder | None = None,
        default_embedding_model: str = DEFAULT_EMBEDDING_MODEL,
        retry: RetryPolicy | None = None,
        catalogue: Catalogue | None = None,
        ledger: UsageLedger | None = None,
        chat_batches: ChatBatches | None = None,
    ) -> None:
        self._providers = providers
        self._retry = retry or RetryPolicy(max_retries=0, attempt_timeout=request_timeout)
        self._embedder = embedder or LocalEmbedder()
        self._default_embedding_model = default_embedding_model
        self._catalogue = catalogue or Catalogue(providers.kinds, {})
        self._ledger = ledger
        self._chat_batches = chat_batches
        self._background: set[asyncio.Task[None]] = set()

    def _deadline(self) -> float | None:
        """The caller's monotonic deadline, if any; refuses at once when it has passed."""
        remaining = remaining_time()
        if remaining is None:
            return None
        if remaining <= 0:
            raise DeadlineExceeded("the caller's deadline has passed")
        return time.monotonic() + remaining

    def _record(self, model: str, operation: str, agent_id: str, used: turn_pb2.Usage) -> None:
        count_tokens(model, operation, used)
        if self._ledger is not None:
            self._ledger.record(model, operation, agent_id, used.prompt_tokens, used.completion_tokens)

    async def chat(self, request: llm_pb2.ChatRequest) -> llm_pb2.ChatResponse:
        """One completion; the caller's deadline bounds the provider request and its retries."""
        if not request.messages:
            raise invalid("messages", "must not be empty")
        provider, model = self._providers.resolve(request.model)
        deadline = self._deadline()
        name = ModelName.parse(request.model)
        with chat_span(self._providers.kind_of(name.provider), model, request) as span:
            response = await self._retry.call(
                deadline, lambda budget: provider.chat(model, request, time_budget=budget)
            )
            record_response(span, response)
        self._record(str(name), "chat", request.agent_id, response.usage)
        return response

    async def stream(self, request: llm_pb2.StreamChatRequest) -> AsyncIterator[llm_pb2.StreamChatResponse]:
        """One completion as events: deltas as they arrive, complete tool calls, the whole reply last."""
        chat = request.chat
        if not chat.messages:
            raise invalid("chat.messages", "must not be empty")
        provider, model = self._providers.resolve(chat.model, "chat.model")
        deadline = self._deadline()
        events = self._retry.stream(deadline, lambda budget: provider.stream(model, chat, time_budget=budget))
        parsed = ModelName.parse(chat.model, "chat.model")
        name = str(parsed)
        streamed: list[str] = []  # what the provider sent before a caller went away
        completed = False
        # The span is current only while the provider is read, never across a yield: a generator's
        # context must not leak into its caller's.
        span = start_chat_span(self._providers.kind_of(parsed.provider), model, chat)
        try:
            while True:
                try:
                    with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                        event = await anext(events)
                except StopAsyncIteration:
                    break
                if event.HasField("completed"):
                    completed = True
                    record_response(span, event.completed)
                    self._record(name, "chat", chat.agent_id, event.completed.usage)
                elif event.HasField("tool_call"):
                    streamed += (event.tool_call.name, event.tool_call.arguments)
                else:
                    streamed.append(event.content_delta or event.reasoning_delta)
                yield event
        except BaseException as exc:
            end_chat_span(span, exc)
            raise
        else:
            end_chat_span(span, None)
        finally:
            # Closing it closes the provider's request too, also when the caller went away.
            await events.aclose()  # type: ignore[attr-defined]
            if streamed and not completed:
                # The provider reports usage only at the end: an abandoned stream is recorded estimated.
                task = asyncio.get_running_loop().create_task(self._record_abandoned(chat, "".join(streamed)))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _record_abandoned(self, chat: llm_pb2.ChatRequest, streamed: str) -> None:
        model = ModelName.parse(chat.model, "chat.model")
        kind = self._providers.kind_of(model.provider)
        prompt = await asyncio.to_thread(count_chat, kind, model.model, chat)
        completion = await asyncio.to_thread(count_text, kind, model.model, streamed)
        if self._ledger is not None:
            self._ledger.record(str(model), "chat_abandoned", chat.agent_id, prompt.tokens, completion)

    async def embed(self, request: llm_pb2.EmbedRequest) -> llm_pb2.EmbedResponse:
        """One embedding per input, in input order, from the requested (or default) embedding model."""
        texts = _embed_inputs(request.inputs)
        name = request.model or self._default_embedding_model
        model = ModelName.parse(name)
        deadline = self._deadline()
        if model.provider == LOCAL_EMBEDDING_MODEL.provider:
            if model.model.lower() != LOCAL_EMBEDDING_MODEL.model:
                raise NotFound(
                    f"unknown local embedding model '{model.model}'; available: '{DEFAULT_EMBEDDING_MODEL}'",
                    reason="MODEL_NOT_FOUND",
                    metadata={"model": name},
                )
            result = await self._embedder.embed(texts)
            vectors = result.vectors.tolist()
            dimension = int(result.vectors.shape[1])
            prompt_tokens = result.token_count
            answered = DEFAULT_EMBEDDING_MODEL
        else:
            embedder = self._embedding_provider(model)
            remote = await self._retry.call(
                deadline, lambda budget: embedder.embed(model.model, texts, time_budget=budget)
            )
            vectors = remote.vectors
            dimension = len(vectors[0]) if vectors else 0
            if any(len(v) != dimension for v in vectors):
                raise Unavailable(
                    "provider returned vectors of different lengths", reason="PROVIDER_BAD_RESPONSE"
                )
            prompt_tokens = remote.prompt_tokens
            answered = str(model)
        used = turn_pb2.Usage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens)
        self._record(answered, "embed", request.agent_id, used)
        return llm_pb2.EmbedResponse(
            # tolist() hands protobuf Python floats in one call instead of 384 numpy scalars per row.
            embeddings=[llm_pb2.Embedding(values=row) for row in vectors],
            model=answered,
            dimension=dimension,
            usage=used,
        )

    def _embedding_provider(self, model: ModelName) -> EmbeddingProvider:
        provider = self._providers.providers.get(model.provider)
        if provider is None:
            raise FailedPrecondition(
                f"embedding provider '{model.provider}' is not configured on this server; the bundled "
                f"model '{DEFAULT_EMBEDDING_MODEL}' is always available",
                reason="EMBEDDING_PROVIDER_NOT_CONFIGURED",
                metadata={"provider": model.provider},
            )
        if not isinstance(provider, EmbeddingProvider):
            raise FailedPrecondition(
                f"provider '{model.provider}' ({self._providers.kind_of(model.provider)}) offers no embeddings; "
                f"use an OpenAI-compatible or Ollama provider, or '{DEFAULT_EMBEDDING_MODEL}'",
                reason="EMBEDDING_PROVIDER_NOT_CONFIGURED",
                metadata={"provider": model.provider},
            )
        return provider

    async def count_tokens(self, request: llm_pb2.CountTokensRequest) -> llm_pb2.CountTokensResponse:
        """The tokens a chat request's prompt takes for its model (tiktoken, or an estimate)."""
        chat = request.chat
        model = ModelName.parse(chat.model, "chat.model")
        kind = self._providers.kind_of(model.provider)
        # Encoding takes milliseconds per thousand tokens, and loading an encoding the first time ~1 s.
        counted = await asyncio.to_thread(count_chat, kind, model.model, chat)
        return llm_pb2.CountTokensResponse(
            token_count=counted.tokens,
            exact=counted.exact,
            method=counted.method,
            context_window=self._catalogue.context_window(chat.model),
        )

    async def list_models(self, request: llm_pb2.ListModelsRequest) -> llm_pb2.ListModelsResponse:
        """The catalogue's models of the configured providers, merged with what the providers report."""
        wanted = [p for p in self._providers.names() if not request.provider or p == request.provider.lower()]
        if request.provider and not wanted and request.provider.lower() != LOCAL_EMBEDDING_MODEL.provider:
            raise NotFound(
                f"provider '{request.provider}' is not configured; configured: "
                f"{', '.join(self._providers.names()) or 'none'}",
                reason="PROVIDER_NOT_FOUND",
                metadata={"provider": request.provider},
            )
        reported: dict[str, list[ReportedModel]] = {}
        unreachable: list[str] = []
        if request.include_provider_models:
            budget = min(LIST_MODELS_TIMEOUT, remaining_time() or LIST_MODELS_TIMEOUT)
            results = await asyncio.gather(
                *(self._providers.providers[p].list_models(time_budget=budget) for p in wanted),
                return_exceptions=True,
            )
            for name, result in zip(wanted, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, MnemoError):
                        raise result
                    log.info("provider %s did not list its models: %s", name, result.message)
                    unreachable.append(name)
                else:
                    reported[name] = result
                    self._catalogue.remember(name, result)
        providers = [*wanted]
        if not request.provider or request.provider.lower() == LOCAL_EMBEDDING_MODEL.provider:
            providers.append(LOCAL_EMBEDDING_MODEL.provider)
        return llm_pb2.ListModelsResponse(
            models=self._catalogue.listing(providers, reported), unreachable_providers=unreachable
        )

    async def summarize_usage(self, request: llm_pb2.SummarizeUsageRequest) -> llm_pb2.SummarizeUsageResponse:
        """The caller's organization's usage, summed per group."""
        if self._ledger is None:
            raise FailedPrecondition("this server keeps no usage ledger", reason="USAGE_LEDGER_UNAVAILABLE")
        for i, dimension in enumerate(request.group_by):
            if dimension not in (
                llm_pb2.USAGE_DIMENSION_AGENT,
                llm_pb2.USAGE_DIMENSION_MODEL,
                llm_pb2.USAGE_DIMENSION_DAY,
            ):
                raise invalid(f"group_by[{i}]", "must be AGENT, MODEL or DAY")
        start = field_time(request, "start_time")
        end = field_time(request, "end_time")
        if start is not None and end is not None and end <= start:
            raise invalid("end_time", "must be after start_time")
        summaries = await self._ledger.summarize(
            UsageQuery(
                org_id=current_actor().org_id,
                group_by=tuple(request.group_by),
                agent_id=request.agent_id,
                model=request.model,
                start=start,
                end=end,
            )
        )
        return llm_pb2.SummarizeUsageResponse(summaries=summaries)

    def _batches(self) -> ChatBatches:
        if self._chat_batches is None:
            raise FailedPrecondition("this server keeps no chat batches", reason="CHAT_BATCHES_UNAVAILABLE")
        return self._chat_batches

    async def create_chat_batch(self, request: llm_pb2.CreateChatBatchRequest) -> llm_pb2.ChatBatch:
        """Submits many chat requests of one provider to its batch API (or only validates them)."""
        return await self._batches().create(request, self._deadline())

    async def get_chat_batch(self, request: llm_pb2.GetChatBatchRequest) -> llm_pb2.ChatBatch:
        """A chat batch, with the provider's progress while it runs and its results once finished."""
        return await self._batches().get(request.id, self._deadline())

    async def cancel_chat_batch(self, request: llm_pb2.CancelChatBatchRequest) -> llm_pb2.ChatBatch:
        """Asks the provider to stop a chat batch."""
        return await self._batches().cancel(request.id, self._deadline())

    async def aclose(self) -> None:
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._ledger is not None:
            await self._ledger.aclose()
        await self._providers.aclose()
        self._embedder.close()


def _embed_inputs(inputs: Sequence[str]) -> list[str]:
    """The texts to embed, if there are 1 to MAX_EMBED_INPUTS and each is storable, non-empty text."""
    if not inputs:
        raise invalid("inputs", "must not be empty")
    if len(inputs) > MAX_EMBED_INPUTS:
        raise invalid("inputs", f"has {len(inputs)} texts; the maximum is {MAX_EMBED_INPUTS}")
    violations = []
    for i, text in enumerate(inputs):
        try:
            check_text(text, f"inputs[{i}]", max_chars=MAX_EMBED_INPUT_CHARS, allow_empty=False)
        except InvalidArgument as exc:
            violations.extend(exc.violations)
    if violations:
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise InvalidArgument(f"{first.field}: {first.description}{more}", violations=violations)
    return list(inputs)
