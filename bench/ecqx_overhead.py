"""Where ECQx's refresh spends its time beyond ECQ's (issue 15, item 2), per model size.

Same models as ``bench/scale.py`` (MLP 784-h1-h2-10 trained one float epoch on the bundled MNIST
split, 4 bits, Lambda 0.1, p 0.1, relevance batch 64), one process per size, interleaved
repetitions, medians. Timed side by side:

  ECQ refresh         ``ECQxCallback.refresh()`` of the ECQ model
  ECQx refresh        the same for the ECQx model (relevance + assignment)
  relevance fused     the ECQx refresh's relevance part as it runs now: mirror sync, LRP of one
                      batch and moving average in one ``tf.function``, relevances read back
  relevance numpy     the same values by the previous path (``_copy_weights`` with
                      ``set_weights``, LRP, float64 sum, NumPy moving average, variable write)
  LRP only            the LRP ``tf.function`` of the engine alone (no sync, no average)
  assign ECQ          ``assign_layer(method="ecq")`` over all kernels (lambda + assignment)
  assign ECQx         ``assign_layer(method="ecqx")`` over all kernels, with the stored relevance
  and its phases, summed over the kernels: nearest-neighbour pass (counts, lambda; shared by both
  methods), the ECQ pass, the best-non-zero pass (ECQx), the switching betas (two float32
  logarithms per weight, histogram) and the beta search with the final indices.

    python bench/ecqx_overhead.py --sizes 1M 4M

Writes ``bench/results/ecqx_overhead.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before bench.common (and TensorFlow) is imported

from bench.common import MLP_SIZES, mlp_weights, wide_mlp  # noqa: E402

RESULTS = REPO / "bench" / "results" / "ecqx_overhead.json"
SIZES = MLP_SIZES
COLUMNS = ["ECQ refresh", "ECQx refresh", "relevance fused", "relevance numpy", "LRP only", "assign ECQ",
           "assign ECQx", "nearest pass", "ECQ pass", "non-zero pass", "switching betas", "beta search + indices"]


def _measure(size: str, repeats: int) -> Dict[str, Any]:
    import tensorflow as tf

    import ecqx_tf
    from ecqx_tf import assign_fast as af
    from ecqx_tf.keras.api import ecq_layers
    from ecqx_tf.relevance import native_engine

    fm, x, y = wide_mlp(*SIZES[size], float_epochs=1)
    rel = (x[:1024], y[:1024])
    models = {m: ecqx_tf.quantize(fm, bits=4, method=m, Lambda=0.1, p=0.1, relevance_data=rel) for m in ("ecq", "ecqx")}

    def callback(method: str, fuse: bool):
        cb = ecqx_tf.ECQxCallback(relevance_batch_size=64, seed=0)
        cb._fuse_relevance = fuse
        cb.set_model(models[method])
        cb.on_train_begin()
        cb.refresh()
        return cb

    ecq_cb, ecqx_cb, numpy_cb = callback("ecq", True), callback("ecqx", True), callback("ecqx", False)
    slots = ecq_layers(models["ecqx"])
    names = [s.name for s in slots]
    engine = native_engine(ecqx_cb._mirror, ecqx_cb.composite, names)
    xa, labels, mode = engine.check_data(x[:64], y[:64], "auto")
    lrp = engine._fn("weights", mode)
    args = (tf.constant(xa), tf.constant(labels), tf.constant(1.0 / 64, tf.float32))
    n_largest = max(s.kernel.numpy().size for s in slots)

    def assign_all(method: str):
        for s in slots:
            af.assign_layer(s.kernel.numpy(), s.centroids.numpy(), 0.1, n_largest, method=method,
                            relevance=s.relevance.numpy() if method == "ecqx" else None, p=0.1)

    def phases(times: Dict[str, List[float]]) -> None:
        acc = dict.fromkeys(COLUMNS[-5:], 0.0)
        for s in slots:
            for k, v in af.pass_times(s.kernel.numpy(), s.centroids.numpy(), s.relevance.numpy(), 0.1, n_largest,
                                      p=0.1).items():
                acc[k] += v
        for k, v in acc.items():
            times[k].append(v)

    ops = {
        "ECQ refresh": ecq_cb.refresh,
        "ECQx refresh": ecqx_cb.refresh,
        "relevance fused": ecqx_cb._relevances,
        "relevance numpy": numpy_cb._relevances,
        "LRP only": lambda: [t.numpy() for t in lrp(*args)],
        "assign ECQ": lambda: assign_all("ecq"),
        "assign ECQx": lambda: assign_all("ecqx"),
    }
    times: Dict[str, List[float]] = {k: [] for k in COLUMNS}
    for op in ops.values():
        op()
    for _ in range(repeats):
        for k, op in ops.items():
            s = time.perf_counter()
            op()
            times[k].append(time.perf_counter() - s)
        phases(times)
    return {"size": size, "weights": mlp_weights(*SIZES[size]), "repeats": repeats,
            "median_s": {k: statistics.median(v) for k, v in times.items()}}


def table(rows: List[Dict[str, Any]]) -> str:
    head = ["weights"] + COLUMNS + ["ECQx / ECQ", "relevance fused / ECQ", "assign ECQx / assign ECQ"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r["median_s"]
        cells = [f"{r['weights'] / 1e6:.2f} M"] + [f"{m[k] * 1e3:.1f} ms" for k in COLUMNS]
        cells += [f"{m['ECQx refresh'] / m['ECQ refresh']:.2f}x", f"{m['relevance fused'] / m['ECQ refresh']:.2f}x",
                  f"{m['assign ECQx'] / m['assign ECQ']:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["1M", "4M"], choices=list(SIZES))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(_measure(a.one, a.repeats)))
        return
    from ecqx_tf.io import atomic_write_json

    rows = []
    for size in a.sizes:
        print(f"[ecqx_overhead] {size} ...", flush=True)
        p = subprocess.run([sys.executable, __file__, "--one", size, "--repeats", str(a.repeats)], check=True,
                           capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
    result = {"what": "ECQx refresh parts against ECQ, medians of interleaved runs in one process per size",
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "rows": rows}
    atomic_write_json(a.out, result)
    print(table(rows))


if __name__ == "__main__":
    main()
