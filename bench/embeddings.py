"""Local embeddings: all-MiniLM-L6-v2 with its encoder layers in NumPy or in ONNX Runtime, side by side.

Both paths share tokenization, length batching, the word-embedding lookup (memory-mapped) and pooling from
`mnemo_llm.minilm`; only the six transformer layers differ. ONNX Runtime runs them as a graph of its fused
BERT ops (com.microsoft Attention, SkipLayerNormalization, BiasGelu), built in code from the safetensors
weights at load time, with as many intra-op threads as NumPy gets BLAS threads.

Load time and memory come from fresh processes, one per path and round (cold load, their own RSS); the
latencies and throughput from one process holding all paths, which take turns round after round so that a
busy spell on the machine hits them alike. The table shows medians and ORT's factor over NumPy.

    make bench-embeddings                                          # a few minutes on 2 cores
    make bench-embeddings BENCH_ARGS="--rounds 1 --speed-rounds 3"    # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    import onnx

    from mnemo_llm.minilm import Floats, MiniLM, Tensors

SHORT = "The agent stored memory item number 7."  # 10 tokens with [CLS] and [SEP]
MEDIUM = (  # 25 tokens
    "The agent stored memory item number 7 about topic 7, which concerns the quarterly tax filing for "
    "the small bakery downtown."
)
REFERENCE = Path(__file__).parents[1] / "tests" / "fixtures" / "minilm_reference.json"
PATHS = ("numpy", "onnx", "onnx-no-arena")


def onnx_encoder_graph(tensors: Tensors) -> onnx.ModelProto:
    """The six encoder layers as an ONNX graph: `x` (batch, length, 384) and int32 `mask` in, `states` out."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from mnemo_llm.minilm import DIMENSION, take_dense, take_norm

    nodes: list[onnx.NodeProto] = []
    weights: list[onnx.TensorProto] = []

    def weight(name: str, value: Floats) -> str:
        weights.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, inputs: list[str], output: str, **attributes: float | int) -> str:
        nodes.append(helper.make_node(op, inputs, [output], domain="com.microsoft", **attributes))
        return output

    x = "x"
    for i in range(6):
        p = f"encoder.layer.{i}."
        q, k, v = (take_dense(tensors, p + f"attention.self.{n}") for n in ("query", "key", "value"))
        qkv = weight(p + "qkv.weight", np.concatenate([q[0], k[0], v[0]], axis=1))
        qkv_bias = weight(p + "qkv.bias", np.concatenate([q[1], k[1], v[1]]))
        attended = node("Attention", [x, qkv, qkv_bias, "mask"], p + "attended", num_heads=12)
        out, out_bias = take_dense(tensors, p + "attention.output.dense")
        projected = p + "projected"
        nodes.append(helper.make_node("MatMul", [attended, weight(p + "out.weight", out)], [projected]))
        gain, bias = take_norm(tensors, p + "attention.output.LayerNorm")
        norm = [weight(p + "attn_norm.gain", gain), weight(p + "attn_norm.bias", bias)]
        # LayerNorm(projected + x + out_bias) in one op.
        x_attn = node(
            "SkipLayerNormalization",
            [projected, x, *norm, weight(p + "out.bias", out_bias)],
            p + "x_attn",
            epsilon=1e-12,
        )
        up, up_bias = take_dense(tensors, p + "intermediate.dense")
        nodes.append(helper.make_node("MatMul", [x_attn, weight(p + "up.weight", up)], [p + "up"]))
        hidden = node("BiasGelu", [p + "up", weight(p + "up.bias", up_bias)], p + "hidden")  # erf GELU
        down, down_bias = take_dense(tensors, p + "output.dense")
        nodes.append(helper.make_node("MatMul", [hidden, weight(p + "down.weight", down)], [p + "down"]))
        gain, bias = take_norm(tensors, p + "output.LayerNorm")
        norm = [weight(p + "out_norm.gain", gain), weight(p + "out_norm.bias", bias)]
        x = node(
            "SkipLayerNormalization",
            [p + "down", x_attn, *norm, weight(p + "down.bias", down_bias)],
            "states" if i == 5 else p + "x_out",
            epsilon=1e-12,
        )
    graph = helper.make_graph(
        nodes,
        "minilm_encoder",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length", DIMENSION]),
            helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch", "length"]),
        ],
        [helper.make_tensor_value_info("states", TensorProto.FLOAT, ["batch", "length", DIMENSION])],
        weights,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )


class OnnxEncoder:
    """The encoder layers run by ONNX Runtime on the CPU, from a graph built in memory."""

    def __init__(self, tensors: Tensors, *, threads: int = 1, memory_arena: bool = True) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = memory_arena
        self._session = ort.InferenceSession(
            onnx_encoder_graph(tensors).SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, x: Floats, mask: Floats) -> Floats:
        import numpy as np

        states: Floats = self._session.run(None, {"x": x, "mask": mask.astype(np.int32)})[0]
        return states


def varied_sentences(model_dir: Path, count: int) -> list[str]:
    """`count` sentences of 6 to 40 words drawn from the whole vocabulary (many word-embedding rows)."""
    words = [
        w for w in (model_dir / "vocab.txt").read_text().split() if w.isalpha() and not w.startswith("[")
    ]
    rng = random.Random(0)
    return [" ".join(rng.choices(words, k=rng.randint(6, 40))) + "." for _ in range(count)]


def load(path: str, threads: int) -> MiniLM:
    """The model with the encoder of `path`."""
    from mnemo_llm.minilm import MiniLM, NumpyEncoder, bundled_model_dir

    if path == "numpy":
        return MiniLM(bundled_model_dir(), blas_threads=threads, encoder=NumpyEncoder)
    arena = path == "onnx"
    return MiniLM(
        bundled_model_dir(),
        blas_threads=threads,
        encoder=lambda tensors: OnnxEncoder(tensors, threads=threads, memory_arena=arena),
    )


def memory_figures(path: str, threads: int) -> dict[str, float]:
    """Load time and memory of one path, in a fresh process: imports, weights, then 1,000 varied sentences."""
    process = psutil.Process()
    started = time.perf_counter()
    model = load(path, threads)
    figures = {
        "load incl. imports (s)": time.perf_counter() - started,
        "RSS after load (MB)": process.memory_info().rss / 2**20,
    }
    from mnemo_llm.minilm import bundled_model_dir

    model.encode(varied_sentences(bundled_model_dir(), 1000))
    memory = process.memory_full_info()
    figures["RSS after 1,000 sentences (MB)"] = memory.rss / 2**20
    figures["PSS after 1,000 sentences (MB)"] = memory.pss / 2**20
    return figures


def p50_ms(call: Callable[[], object], runs: int) -> float:
    call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def speed_figures(model: MiniLM, runs: int) -> dict[str, float]:
    """One round of latency and throughput figures."""
    # The sentences of `bench.llm`'s throughput figure, 8 batches of 32.
    batch = [f"The agent stored memory item number {i} about topic {i % 37}." for i in range(256)]
    model.encode(batch[:32])
    started = time.perf_counter()
    model.encode(batch, batch_size=32)
    return {
        "short sentence (10 tokens) p50 (ms)": p50_ms(lambda: model.encode([SHORT]), runs),
        "medium sentence (25 tokens) p50 (ms)": p50_ms(lambda: model.encode([MEDIUM]), runs),
        "batch 32 (sentences/s)": len(batch) / (time.perf_counter() - started),
    }


def accuracy(model: MiniLM) -> float:
    """Largest difference to the sentence-transformers reference vectors (the unit tests allow 1e-4)."""
    import numpy as np

    reference = json.loads(REFERENCE.read_text())
    got = model.encode(reference["sentences"]).vectors
    return float(np.abs(got - np.array(reference["vectors"], dtype=np.float32)).max())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per path for memory")
    parser.add_argument("--speed-rounds", type=int, default=10, help="alternating speed rounds")
    parser.add_argument("--runs", type=int, default=50, help="timed calls per latency figure and round")
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS / intra-op threads (MNEMO_EMBEDDING_THREADS)"
    )
    parser.add_argument("--memory-child", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_figures(args.memory_child, args.threads)))
        return

    rounds: dict[str, list[dict[str, float]]] = {path: [] for path in PATHS}
    for _ in range(args.rounds):
        for path in PATHS:
            command = [sys.executable, "-m", "bench.embeddings", "--memory-child", path]
            child = subprocess.run(
                [*command, "--threads", str(args.threads)],
                capture_output=True,
                text=True,
                check=True,
            )
            rounds[path].append(json.loads(child.stdout.strip().splitlines()[-1]))
    # Speed: all paths in this one process, taking turns, so that a busy spell on the machine hits them alike.
    models = {path: load(path, args.threads) for path in PATHS}
    for _ in range(args.speed_rounds):
        for path, model in models.items():
            rounds[path].append(speed_figures(model, args.runs))
    table = {
        path: {name: statistics.median(r[name] for r in results if name in r) for name in NAMES}
        for path, results in rounds.items()
    }
    for path, model in models.items():
        table[path]["max abs diff vs sentence-transformers"] = accuracy(model)

    print(
        f"{args.threads} thread(s); memory: median of {args.rounds} fresh processes per path; speed: median"
    )
    print(f"of {args.speed_rounds} alternating rounds. factor: ORT (with arena) over NumPy, > 1 is better.")
    print(f"\n{'measure':<40} {'numpy':>9} {'onnx':>9} {'no arena':>9} {'factor':>8}")
    for name, value in table["numpy"].items():
        ort_value = table["onnx"][name]
        factor = ""
        if name.endswith(("(ms)", "(s)")):
            factor = f"{value / ort_value:.2f}x"
        elif name.endswith("(sentences/s)"):
            factor = f"{ort_value / value:.2f}x"
        elif name.endswith("(MB)"):
            factor = f"{ort_value - value:+.1f} MB"
        form = ".1e" if "diff" in name else ".2f"
        print(
            f"{name:<40} {value:>9{form}} {ort_value:>9{form}} "
            f"{table['onnx-no-arena'][name]:>9{form}} {factor:>8}"
        )


NAMES = (
    "short sentence (10 tokens) p50 (ms)",
    "medium sentence (25 tokens) p50 (ms)",
    "batch 32 (sentences/s)",
    "load incl. imports (s)",
    "RSS after load (MB)",
    "RSS after 1,000 sentences (MB)",
    "PSS after 1,000 sentences (MB)",
)


if __name__ == "__main__":
    main()
