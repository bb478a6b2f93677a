"""ECQx training of the architectures of the TinyML issue at full size: the four MLPerf Tiny
reference networks (ds_cnn, mobilenet_v1_025, resnet8, fc_autoencoder), the zoo's resnet20 and a
Conv1D sensor model, each through ``ecqx_tf.quantize(..., method="ecqx")`` + ``model.fit`` with
``ECQxCallback`` + ``ecqx_tf.save_model`` (and ``load_model``, predictions compared).

Data: synthetic and seeded (inputs N(0, 1), random labels; the autoencoder reconstructs its input
and gets its relevance from ``x`` alone, i.e. from its whole output). The models start from their
seeded initial weights: this measures that training runs and what it costs, not accuracy.

Per model it prints and stores: the layers (count by type, float model), parameters
(``count_params``), quantized kernels, ``quantize()`` seconds (BN folding, tfmot, initial
assignment), the first step (tf.function tracing of the training step and of the LRP engine
included), the median seconds per later step (optimizer step + LRP relevance + ECQx re-assignment
of every kernel, i.e. the callback's work included) and of its two callback parts (relevance of one
batch; re-assignment of every kernel), the share of zero weights reached (ECQx, over all quantized
kernels), and whether the saved .h5 reloads to identical predictions.

Usage: nice -n 10 python bench/architectures_train.py [--steps 6] [--batch-size 32] [--bits 4]
       [--Lambda 0.1] [--models ds_cnn,...] [--out bench/results/architectures_train.json]
"""
from __future__ import annotations

import argparse
import collections
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import ecqx_tf  # noqa: E402
from ecqx_tf.io import atomic_write_json  # noqa: E402
from ecqx_tf.keras.fold import foldable_batchnorms  # noqa: E402
from models import zoo  # noqa: E402

__all__ = ["MODELS", "main", "run_model"]

#: name -> (input shape, outputs): the full-size configurations
MODELS: Dict[str, tuple] = {
    "ds_cnn": ((49, 10, 1), 12),
    "mobilenet_v1_025": ((96, 96, 3), 2),
    "resnet8": ((32, 32, 3), 10),
    "fc_autoencoder": ((640,), 640),
    "resnet20": ((32, 32, 3), 10),
    "sensor_cnn1d": ((128, 9), 6),
}


class StepTimer(tf.keras.callbacks.Callback):
    """Wall-clock seconds of every training step, the work of the callbacks placed before it in the
    list (the ECQx refresh) included."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: List[float] = []
        self._t = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._t)


class TimedECQxCallback(ecqx_tf.ECQxCallback):
    """``ECQxCallback`` that records the seconds of every refresh and of its relevance part."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.refresh_seconds: List[float] = []
        self.relevance_seconds: List[float] = []

    def _relevances(self):
        t = time.perf_counter()
        out = super()._relevances()
        self.relevance_seconds.append(time.perf_counter() - t)
        return out

    def refresh(self) -> None:
        t = time.perf_counter()
        super().refresh()
        self.refresh_seconds.append(time.perf_counter() - t)


def layer_counts(model: tf.keras.Model) -> Dict[str, int]:
    counts = collections.Counter(type(l).__name__ for l in model.layers if type(l).__name__ != "InputLayer")
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def run_model(name: str, steps: int, batch_size: int, bits: int, Lambda: float, seed: int = 0) -> Dict[str, Any]:
    shape, outputs = MODELS[name]
    tf.keras.utils.set_random_seed(seed)
    model = zoo.build(name, shape, outputs, seed=seed)
    rng = np.random.default_rng(seed)
    n = steps * batch_size
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    autoencoder = name == "fc_autoencoder"
    if autoencoder:
        y, relevance_data, loss = x, x, tf.keras.losses.MeanSquaredError()
    else:
        y = rng.integers(0, outputs, n)
        relevance_data, loss = (x, y), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    t0 = time.perf_counter()
    qmodel = ecqx_tf.quantize(model, bits=bits, method="ecqx", Lambda=Lambda, relevance_data=relevance_data)
    t_quantize = time.perf_counter() - t0
    qmodel.compile(tf.keras.optimizers.Adam(1e-3), loss)
    timer = StepTimer()
    cb = TimedECQxCallback(relevance_batch_size=batch_size, seed=seed)
    t0 = time.perf_counter()
    qmodel.fit(x, y, epochs=1, batch_size=batch_size, shuffle=False, verbose=0, callbacks=[cb, timer])
    t_fit = time.perf_counter() - t0
    stats = ecqx_tf.layer_stats(qmodel)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}_qat.h5"
        ecqx_tf.save_model(qmodel, path)
        h5_bytes = path.stat().st_size
        again = ecqx_tf.load_model(path)
        probe = x[: min(8, n)]
        reload_equal = bool(np.array_equal(qmodel.predict(probe, verbose=0), again.predict(probe, verbose=0)))
    later = timer.seconds[1:]
    return {
        "model": name,
        "input_shape": list(shape),
        "outputs": outputs,
        "layers": layer_counts(model),
        "n_layers": sum(layer_counts(model).values()),
        "params": int(model.count_params()),
        "quantized_kernels": len(stats) - 1,
        "quantized_weights": int(stats[-1]["n_weights"]),
        "folded_batchnorms": len(foldable_batchnorms(model)),
        "quantize_seconds": t_quantize,
        "first_step_seconds": timer.seconds[0],
        "step_seconds_median": statistics.median(later) if later else float("nan"),
        "step_seconds": timer.seconds,
        "relevance_seconds_median": statistics.median(cb.relevance_seconds[1:]) if later else float("nan"),
        "assignment_seconds_median": statistics.median(
            [a - b for a, b in zip(cb.refresh_seconds[1:], cb.relevance_seconds[1:])]) if later else float("nan"),
        "fit_seconds": t_fit,
        "refreshes": cb.refreshes,
        "ecqx_zeros": float(stats[-1]["sparsity"]),
        "entropy_bits": float(stats[-1]["entropy"]),
        "h5_bytes": int(h5_bytes),
        "reload_identical": reload_equal,
        "target": "output (x alone)" if autoencoder else "label",
    }


def _fmt_layers(counts: Dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def print_table(rows: List[Dict[str, Any]]) -> None:
    head = (f"{'model':<17} {'params':>8} {'kernels':>7} {'quantize s':>10} {'1st step s':>10} {'s/step':>7} "
            f"{'LRP s':>6} {'assign s':>8} {'ECQx zeros':>10} {'reload':>6}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<17} {r['params']:>8,} {r['quantized_kernels']:>7} {r['quantize_seconds']:>10.1f} "
              f"{r['first_step_seconds']:>10.1f} {r['step_seconds_median']:>7.2f} {r['relevance_seconds_median']:>6.2f} "
              f"{r['assignment_seconds_median']:>8.2f} {100 * r['ecqx_zeros']:>9.1f}% "
              f"{'same' if r['reload_identical'] else 'DIFF':>6}")
    print()
    for r in rows:
        print(f"{r['model']}: {r['n_layers']} layers: {_fmt_layers(r['layers'])}")


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="training steps per model (default 6)")
    ap.add_argument("--batch-size", type=int, default=32, help="batch size of training and of the relevance")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--Lambda", type=float, default=0.1)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    ap.add_argument("--out", default="bench/results/architectures_train.json")
    args = ap.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown or args.steps < 2:
        ap.error(f"unknown models {unknown}; accepted: {', '.join(MODELS)}" if unknown else "--steps must be >= 2")
    rows = []
    for name in names:
        rows.append(run_model(name, args.steps, args.batch_size, args.bits, args.Lambda))
        print(f"done {name}: {rows[-1]['step_seconds_median']:.2f} s/step", file=sys.stderr, flush=True)
    print_table(rows)
    result = {
        "settings": {"steps": args.steps, "batch_size": args.batch_size, "bits": args.bits, "Lambda": args.Lambda,
                     "method": "ecqx", "data": "synthetic N(0,1), seeded", "seed": 0},
        "machine": {"python": platform.python_version(), "tensorflow": tf.__version__, "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "models": rows,
    }
    atomic_write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
