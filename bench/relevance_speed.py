"""Time weight relevance per batch: native backend vs the iNNvestigate worker.

Model: the MNIST MLP 784-256-128-10 (ReLU, logits), random He-normal weights (timing does not
depend on training), random inputs in [0, 1), random labels. Composite: epsilon_plus_flat.

Measured (wall clock, ``time.perf_counter``):
  native   first call   tracing of the tf.function + one batch
  native   per batch    ``weight_relevance(model, x64, y64)`` (validation + graph run), median
  innv.    worker start spawn + TF/iNNvestigate import in the worker, until the first ping
  innv.    first call   analyzer build + one batch (incl. model JSON + weights over the pipe)
  innv.    per batch    ``weight_relevance(..., backend="innvestigate")`` with a built analyzer:
                        weights sent, iNNvestigate LRP in the worker, R_j back, same weight
                        formula in the parent; median

Usage: python bench/relevance_speed.py [--batches 30] [--batch-size 64] [--out bench/results/relevance_speed.json]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ecqx_tf.io import atomic_write_json  # noqa: E402
from ecqx_tf.relevance import InnvestigateWorker, weight_relevance  # noqa: E402

__all__ = ["main", "mnist_mlp"]


def mnist_mlp(seed: int = 0) -> tf.keras.Model:
    """784-256-128-10 ReLU MLP with logits output and random He-normal weights."""
    init = tf.keras.initializers.HeNormal(seed=seed)
    return tf.keras.Sequential(
        [
            tf.keras.Input((784,)),
            tf.keras.layers.Dense(256, activation="relu", kernel_initializer=init, name="fc1"),
            tf.keras.layers.Dense(128, activation="relu", kernel_initializer=init, name="fc2"),
            tf.keras.layers.Dense(10, kernel_initializer=init, name="logits"),
        ]
    )


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=30, help="timed batches per backend")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "relevance_speed.json"))
    args = ap.parse_args(argv)

    rng = np.random.RandomState(0)
    model = mnist_mlp()
    bs = args.batch_size
    xs = rng.rand(args.batches + 1, bs, 784).astype(np.float32)
    ys = rng.randint(0, 10, (args.batches + 1, bs))
    load_before = os.getloadavg()

    native_first = _timed(lambda: weight_relevance(model, xs[0], ys[0], batch_size=bs))
    native_times = [_timed(lambda i=i: weight_relevance(model, xs[i], ys[i], batch_size=bs)) for i in range(1, args.batches + 1)]

    worker = InnvestigateWorker(timeout=900)
    try:
        start = _timed(worker.start)
        inn_first = _timed(lambda: weight_relevance(model, xs[0], ys[0], backend="innvestigate", batch_size=bs, worker=worker))
        inn_times = [
            _timed(lambda i=i: weight_relevance(model, xs[i], ys[i], backend="innvestigate", batch_size=bs, worker=worker))
            for i in range(1, args.batches + 1)
        ]
        r_native = weight_relevance(model, xs[1], ys[1], batch_size=bs)
        r_inn = weight_relevance(model, xs[1], ys[1], backend="innvestigate", batch_size=bs, worker=worker)
        builds = worker.analyzer_builds
    finally:
        worker.close()
    max_rel_diff = max(
        float(np.max(np.abs(r_native[n] - r_inn[n])) / max(float(np.max(np.abs(r_native[n]))), 1e-30)) for n in r_native
    )

    nat_med, inn_med = statistics.median(native_times), statistics.median(inn_times)
    result: Dict[str, Any] = {
        "model": "MLP 784-256-128-10 (ReLU, logits, random weights)",
        "composite": "epsilon_plus_flat",
        "batch_size": bs,
        "timed_batches": args.batches,
        "native": {
            "first_call_s": native_first,
            "per_batch_median_s": nat_med,
            "per_batch_min_s": min(native_times),
            "per_batch_max_s": max(native_times),
        },
        "innvestigate": {
            "worker_start_s": start,
            "first_call_incl_analyzer_build_s": inn_first,
            "per_batch_median_s": inn_med,
            "per_batch_min_s": min(inn_times),
            "per_batch_max_s": max(inn_times),
            "analyzer_builds": builds,
        },
        "speedup_per_batch": inn_med / nat_med,
        "max_abs_diff_over_max_abs": max_rel_diff,
        "environment": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "cpus": os.cpu_count(),
            "loadavg_1min_before": load_before[0],
            "loadavg_1min_after": os.getloadavg()[0],
            "machine": platform.machine(),
        },
    }
    rows = [
        ("native", "first call (trace + 1 batch)", native_first),
        ("native", f"per batch of {bs} (median)", nat_med),
        ("innvestigate", "worker start (spawn + imports)", start),
        ("innvestigate", "first call (analyzer build + 1 batch)", inn_first),
        ("innvestigate", f"per batch of {bs} (median)", inn_med),
    ]
    lines = [f"{'backend':<13} {'what':<40} {'seconds':>9}", "-" * 64]
    lines += [f"{b:<13} {w:<40} {t:>9.4f}" for b, w, t in rows]
    lines.append(f"per-batch speed-up native vs iNNvestigate: {inn_med / nat_med:.1f}x; "
                 f"max |R_native - R_innv| / max|R| = {max_rel_diff:.1e}")
    sys.stdout.write("\n".join(lines) + "\n")
    atomic_write_json(args.out, result)
    sys.stdout.write(f"wrote {args.out}\n")
    return result


if __name__ == "__main__":
    main()
