"""Embeddings for the memory service, from the llm-gateway's LlmService.Embed over gRPC."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from mnemo.llm.v1 import llm_pb2

if TYPE_CHECKING:
    from mnemo.llm.v1.llm_pb2_grpc import LlmServiceAsyncStub

# The gateway accepts at most 2048 inputs of 100,000 characters per call; the model reads only its
# first few hundred tokens anyway, so longer texts are clipped before they travel.
MAX_INPUTS_PER_CALL = 256
MAX_CHARS_EMBEDDED = 8_000


@dataclass(frozen=True, slots=True)
class Embedded:
    """Unit vectors, one row per text, with the model that made them."""

    vectors: npt.NDArray[np.float32]
    model: str

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


class Embedder:
    """Turns texts into unit vectors with a named model ("" = the gateway's default)."""

    def __init__(self, stub: LlmServiceAsyncStub) -> None:
        self._stub = stub
        # What "" (the gateway's default model) resolved to last time, so callers can start
        # model-dependent work while a query is being embedded.
        self._default = ""

    def resolved(self, model: str) -> str:
        """The concrete model `model` stands for, if known before embedding ("" when not yet known)."""
        return model or self._default

    async def embed(self, texts: Sequence[str], model: str, *, agent_id: str = "") -> Embedded:
        """One vector per text, in order, all from the same model."""
        parts: list[npt.NDArray[np.float32]] = []
        used = ""
        for start in range(0, len(texts), MAX_INPUTS_PER_CALL):
            batch = [text[:MAX_CHARS_EMBEDDED] for text in texts[start : start + MAX_INPUTS_PER_CALL]]
            response = await self._stub.Embed(
                llm_pb2.EmbedRequest(model=model or used, inputs=batch, agent_id=agent_id)
            )
            used = response.model
            if not model:
                self._default = used
            vectors = np.array([list(e.values) for e in response.embeddings], dtype=np.float32)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            parts.append((vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32))
        return Embedded(np.concatenate(parts) if parts else np.empty((0, 0), np.float32), used)
