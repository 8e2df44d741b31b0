"""The llm-gateway's domain: route a chat to its provider within the caller's deadline, embed texts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from mnemo.common.v1 import turn_pb2
from mnemo.llm.v1 import llm_pb2
from mnemo_core.actor import remaining_time
from mnemo_core.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, Unimplemented
from mnemo_core.validation import check_text, invalid
from mnemo_llm.embeddings import LOCAL_MODEL_NAME, LocalEmbedder
from mnemo_llm.providers import ModelName, Providers

MAX_EMBED_INPUTS = 2048
MAX_EMBED_INPUT_CHARS = 100_000
LOCAL_EMBEDDING_MODEL = ModelName("local", LOCAL_MODEL_NAME)
DEFAULT_EMBEDDING_MODEL = f"{LOCAL_EMBEDDING_MODEL.provider}/{LOCAL_EMBEDDING_MODEL.model}"


class LlmGateway:
    """Runs chat requests on the configured providers and embeds texts with the local model."""

    def __init__(
        self,
        providers: Providers,
        *,
        request_timeout: float,
        embedder: LocalEmbedder | None = None,
        default_embedding_model: str = DEFAULT_EMBEDDING_MODEL,
    ) -> None:
        self._providers = providers
        self._timeout = request_timeout
        self._embedder = embedder or LocalEmbedder()
        self._default_embedding_model = default_embedding_model

    async def chat(self, request: llm_pb2.ChatRequest) -> llm_pb2.ChatResponse:
        """One completion; the caller's deadline bounds the provider request and its retries."""
        if not request.messages:
            raise invalid("messages", "must not be empty")
        provider, model = self._providers.resolve(request.model)
        timeout = self._timeout
        remaining = remaining_time()
        if remaining is not None:
            if remaining <= 0:
                raise DeadlineExceeded("the caller's deadline has passed")
            timeout = min(timeout, remaining)
        return await provider.chat(model, request, time_budget=timeout)

    async def stream_chat(self, request: llm_pb2.ChatRequest) -> AsyncIterator[llm_pb2.StreamChatResponse]:
        """One completion, streamed, for providers that can stream; the caller's deadline bounds it."""
        if not request.messages:
            raise invalid("messages", "must not be empty")
        provider, model = self._providers.resolve(request.model)
        stream = getattr(provider, "stream_chat", None)
        if stream is None:
            raise Unimplemented("this provider cannot stream", reason="STREAMING_UNAVAILABLE")
        timeout = self._timeout
        remaining = remaining_time()
        if remaining is not None:
            timeout = min(timeout, remaining)
        async for event in stream(model, request, time_budget=timeout):
            yield event

    async def embed(self, request: llm_pb2.EmbedRequest) -> llm_pb2.EmbedResponse:
        """One embedding per input, in input order, from the requested (or default) embedding model."""
        texts = _embed_inputs(request.inputs)
        model = _embedding_model(request.model or self._default_embedding_model)
        remaining = remaining_time()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("the caller's deadline has passed")
        result = await self._embedder.embed(texts)
        return llm_pb2.EmbedResponse(
            # tolist() hands protobuf Python floats in one call instead of 384 numpy scalars per row.
            embeddings=[llm_pb2.Embedding(values=row) for row in result.vectors.tolist()],
            model=f"{model.provider}/{model.model}",
            dimension=result.vectors.shape[1],
            usage=turn_pb2.Usage(prompt_tokens=result.token_count, total_tokens=result.token_count),
        )

    async def aclose(self) -> None:
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


def _embedding_model(name: str) -> ModelName:
    """The embedding model `name` designates, if this server can run it."""
    model = ModelName.parse(name)
    if model.provider != LOCAL_EMBEDDING_MODEL.provider:
        raise FailedPrecondition(
            f"embedding provider '{model.provider}' is not configured on this server; the only embedding "
            f"model available is '{DEFAULT_EMBEDDING_MODEL}' (OpenAI and Ollama embeddings are not "
            "supported yet)",
            reason="EMBEDDING_PROVIDER_NOT_CONFIGURED",
            metadata={"provider": model.provider},
        )
    if model.model.lower() != LOCAL_EMBEDDING_MODEL.model:
        raise NotFound(
            f"unknown local embedding model '{model.model}'; available: '{DEFAULT_EMBEDDING_MODEL}'",
            reason="MODEL_NOT_FOUND",
            metadata={"model": name},
        )
    return LOCAL_EMBEDDING_MODEL
