"""Local embeddings: all-MiniLM-L6-v2 with its encoder layers in NumPy or in ONNX Runtime, side by side.

Both paths share tokenization, length batching, the word-embedding lookup (memory-mapped) and pooling from
`mnemo_llm.minilm`; only the six transformer layers differ (`mnemo_llm.onnx_encoder` for ONNX Runtime),
with as many intra-op threads as NumPy gets BLAS threads.

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
    from mnemo_llm.minilm import MiniLM

SHORT = "The agent stored memory item number 7."  # 10 tokens with [CLS] and [SEP]
MEDIUM = (  # 25 tokens
    "The agent stored memory item number 7 about topic 7, which concerns the quarterly tax filing for "
    "the small bakery downtown."
)
REFERENCE = Path(__file__).parents[1] / "tests" / "fixtures" / "minilm_reference.json"
PATHS = ("numpy", "onnx", "onnx-no-arena")


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
    from mnemo_llm.onnx_encoder import OnnxEncoder

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
