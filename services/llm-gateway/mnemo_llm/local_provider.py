"""The offline chat model: a small instruct GGUF run by llama.cpp in this process, off the event loop.

Needs the `local` extra (llama-cpp-python). Each model loads on first use and runs on one worker thread of
its own; requests queue for it. Tokens travel from that thread to the event loop one by one, and a caller
that goes away stops the generation at the next token.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mnemo.llm.v1 import llm_pb2
from mnemo_core import errors
from mnemo_llm.local_model import (
    LocalModelSpec,
    bundled_model_path,
    chat_messages,
    chat_tools,
    may_be_tool_call,
    parse_tool_calls,
)
from mnemo_llm.providers import (
    CONTEXT_WINDOW_EXCEEDED,
    MODEL_NOT_FOUND,
    ReportedModel,
    completed_event,
    content_event,
    is_context_overflow,
    timeout_error,
    tool_call_event,
    usage,
)

log = logging.getLogger(__name__)

# Longest reply when the request sets none: a tiny model rambles, and the machine has two cores.
DEFAULT_MAX_TOKENS = 1024
_DONE = object()


class _Model:
    """One loaded GGUF and the thread that runs it."""

    def __init__(self, spec: LocalModelSpec, models_dir: Path, threads: int) -> None:
        self.spec = spec
        self._models_dir = models_dir
        self._threads = threads
        self._llama: Any = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{spec.name}")

    def llama(self) -> Any:
        """The loaded model (on the worker thread only)."""
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise errors.FailedPrecondition(
                    "the offline model needs llama-cpp-python: run `uv sync --extra local` (or `make run`)",
                    reason="LOCAL_MODEL_UNAVAILABLE",
                ) from exc
            path = self.spec.path or bundled_model_path(self._models_dir)
            if not path.is_file():
                raise errors.FailedPrecondition(
                    f"local model file {path} does not exist", reason="LOCAL_MODEL_UNAVAILABLE"
                )
            started = time.monotonic()
            self._llama = Llama(
                model_path=str(path),
                n_ctx=self.spec.context_window,
                n_threads=self._threads,
                verbose=False,
            )
            log.info("loaded local/%s from %s in %.1f s", self.spec.name, path, time.monotonic() - started)
        return self._llama


class LocalProvider:
    """Serves GGUF models as "local/<name>" with llama.cpp."""

    def __init__(self, specs: list[LocalModelSpec], *, models_dir: Path, threads: int = 2) -> None:
        self._models = {spec.name.lower(): _Model(spec, models_dir, threads) for spec in specs}
        # llama.cpp's threads meet at an OpenMP barrier after every operation of every token. Spinning
        # there (libgomp's default) makes a shared machine crawl: on 2 cores busy with other work, a
        # 7-token answer took 15-41 s spinning and 2-3 s sleeping, a 29-token one 65-129 s and 6-8 s
        # (ADR 0104). libgomp reads this when llama.cpp is first loaded (on first use, after this); an
        # operator's own OMP_WAIT_POLICY wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    def _model(self, name: str) -> _Model:
        model = self._models.get(name.lower())
        if model is None:
            raise errors.NotFound(
                f"unknown local model '{name}'; available: "
                + ", ".join(f"local/{m.spec.name}" for m in self._models.values()),
                reason=MODEL_NOT_FOUND,
                metadata={"model": f"local/{name}"},
            )
        return model

    async def chat(
        self, model: str, request: llm_pb2.ChatRequest, *, time_budget: float
    ) -> llm_pb2.ChatResponse:
        async for event in self.stream(model, request, time_budget=time_budget):
            if event.HasField("completed"):
                return event.completed
        raise errors.Internal("local model stream ended without a reply")  # pragma: no cover

    async def stream(
        self, model: str, request: llm_pb2.ChatRequest, *, time_budget: float
    ) -> AsyncIterator[llm_pb2.StreamChatResponse]:
        target = self._model(model)
        tools = chat_tools(request)
        tool_names = [t["function"]["name"] for t in tools]
        options: dict[str, Any] = {
            "messages": chat_messages(request),
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        }
        if request.HasField("temperature"):
            options["temperature"] = request.temperature
        if tools:
            options["tools"] = tools
        generation = _Generation(target, options, time_budget)
        text: list[str] = []
        streamed = 0
        async for piece in generation.pieces():
            text.append(piece)
            # With tools offered, text that may be a tool call is held back until it is complete.
            joined = "".join(text)
            if tool_names and may_be_tool_call(joined):
                continue
            if streamed < len(joined):
                yield content_event(joined[streamed:])
                streamed = len(joined)
        content, calls = parse_tool_calls("".join(text), tool_names)
        if not calls and streamed < len(content):
            yield content_event(content[streamed:])
        for call in calls:
            yield tool_call_event(call)
        if calls:
            reason = llm_pb2.FINISH_REASON_TOOL_CALLS
        elif generation.finish == "length":
            reason = llm_pb2.FINISH_REASON_LENGTH
        else:
            reason = llm_pb2.FINISH_REASON_STOP
        completion_tokens = len(text)
        yield completed_event(
            llm_pb2.ChatResponse(
                message=llm_pb2.ChatMessage(
                    role=llm_pb2.CHAT_ROLE_ASSISTANT,
                    content=content if calls else "".join(text),
                    tool_calls=calls,
                ),
                usage=usage(max(0, generation.context_tokens - completion_tokens), completion_tokens),
                finish_reason=reason,
                model=f"local/{target.spec.name}",
            )
        )

    async def list_models(self, *, time_budget: float) -> list[ReportedModel]:
        return [
            ReportedModel(model=m.spec.name, context_window=m.spec.context_window)
            for m in self._models.values()
        ]

    async def aclose(self) -> None:
        for model in self._models.values():
            model.executor.shutdown(wait=False, cancel_futures=True)


class _Generation:
    """One completion running on its model's thread, its tokens handed to the event loop as they come."""

    def __init__(self, model: _Model, options: dict[str, Any], time_budget: float) -> None:
        self._model = model
        self._options = options
        self._budget = time_budget
        self.finish: str | None = None
        # Tokens in the model's context once done: the prompt's and the reply's.
        self.context_tokens = 0

    async def pieces(self) -> AsyncIterator[str]:
        """The reply's text pieces (about one token each); leaving early stops the model."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def generate() -> None:
            # On the model's thread: every chunk, or the failure, goes to the event loop's queue.
            try:
                llama = self._model.llama()
                chunks: Iterator[dict[str, Any]] = llama.create_chat_completion(stream=True, **self._options)
                for chunk in chunks:
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                self.context_tokens = int(getattr(llama, "n_tokens", 0))
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop, which raises it
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        worker = loop.run_in_executor(self._model.executor, generate)
        try:
            while True:
                try:
                    async with asyncio.timeout(self._budget):
                        item = await queue.get()
                except TimeoutError:
                    raise timeout_error(self._budget) from None
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise _map_failure(item) from item
                choice = item["choices"][0]
                if choice.get("finish_reason"):
                    self.finish = choice["finish_reason"]
                piece = choice.get("delta", {}).get("content") or ""
                if piece:
                    yield piece
        finally:
            # Also when the caller went away: the model stops at its next token.
            stop.set()
        await worker


def _map_failure(exc: BaseException) -> errors.MnemoError:
    if isinstance(exc, errors.MnemoError):
        return exc
    message = str(exc)
    if isinstance(exc, ValueError) and (is_context_overflow(message) or "exceed context" in message):
        return errors.InvalidArgument(f"local model: {message}", reason=CONTEXT_WINDOW_EXCEEDED)
    log.error("local model failed", exc_info=exc)
    return errors.Unavailable(f"local model failed: {message}", reason="LOCAL_MODEL_FAILED")
