"""How ECQ/ECQx training scales with the model: optimizer step, refresh and export of MLPs
784-h1-h2-10 on the bundled MNIST split, 4 bits, a refresh after every optimizer step.

Per size, in ONE fresh process (so the peak memory is that size's), interleaved and repeated
(medians), with the callbacks the training uses:

  step          one optimizer step of the ECQ model (``train_on_batch``, batch 64)
  ECQ refresh   ``ECQxCallback.refresh()`` of the ECQ model (lambda + assignment of every kernel)
  ECQx refresh  the same for the ECQx model, incl. LRP of one batch of 64 (``LRP`` column: the
                relevance part, i.e. mirror sync, LRP and moving average, measured inside the same
                refreshes)
  before        (``--before``) the same two refreshes with ``assignment="reference"``: the
                reference functions (two [K, N] float64 cost matrices per kernel), i.e. the code
                path before the linear assignment, in the same process and loop
  peak RSS      the process's peak resident memory at the end of the timing (models, data, TF)
  refresh heap  peak NumPy/Python heap of one refresh (tracemalloc), fast and reference

Then the ECQx model is saved and exported from the command line, timed as a user runs it
(``ecqx-export MODEL.h5 --target tflm|fantastic4 --data mnist_bundled``, default options,
including the host checks on 1,000 test samples; wall time of the process).

The float model is trained for ``--float-epochs`` (default 1) so that weights and relevances are
those of a trained network. Goals checked at the end (issue 15): ECQ refresh per weight at the
largest size at most 1.3x its per-weight cost at the smallest; ECQ refresh at most 3x the step
at 4 M; ECQx refresh at most 1.3x the ECQ refresh at every size; the FantastIC4 export of the 4 M
model at most 2x its TFLM export (both exports of one size run one after the other in one run).

    python bench/scale.py                        # all sizes, --before, both exports (long: ~1 h)
    python bench/scale.py --sizes 0.23M 1M --repeats 3 --no-export      # a few minutes
    python bench/scale.py --from-json bench/results/scale.json          # print the table again
    python bench/scale.py --from-json bench/results/scale.json bench/results/scale_16M.json

Writes ``bench/results/scale.json``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before bench.common (and TensorFlow) is imported

from bench.common import MLP_SIZES, mlp_weights, wide_mlp  # noqa: E402

RESULTS = REPO / "bench" / "results" / "scale.json"

#: name -> hidden widths (h1, h2) of the MLP 784-h1-h2-10 (weights incl. the 10 outputs)
SIZES: Dict[str, tuple] = MLP_SIZES
BATCH = 64
BITS = 4
LAMBDA = 0.1
P = 0.1

n_weights = mlp_weights


# ----------------------------------------------------------------------------------- one size
def _measure_one(size: str, repeats: int, repeats_before: int, before: bool, float_epochs: int, save: Optional[str]) -> Dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    import ecqx_tf

    h1, h2 = SIZES[size]
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    t0 = time.perf_counter()
    fm, x, y = wide_mlp(h1, h2, float_epochs=float_epochs)
    t_float = time.perf_counter() - t0  # includes loading the data set (a few ms)
    rel = (x[:1024], y[:1024])
    models = {}
    for method in ("ecq", "ecqx"):
        t0 = time.perf_counter()
        q = ecqx_tf.quantize(fm, bits=BITS, method=method, Lambda=LAMBDA, p=P, relevance_data=rel)
        t_quantize = time.perf_counter() - t0
        q.compile(tf.keras.optimizers.Adam(1e-3), loss)
        models[method] = (q, t_quantize)

    lrp_times: List[float] = []

    def callback(method: str, assignment: str):
        cb = ecqx_tf.ECQxCallback(relevance_batch_size=BATCH, seed=0, assignment=assignment)
        cb.set_model(models[method][0])
        cb.on_train_begin()
        if method == "ecqx" and assignment == "fast":
            inner = cb._relevances

            def timed():
                s = time.perf_counter()
                out = inner()
                lrp_times.append(time.perf_counter() - s)
                return out

            cb._relevances = timed
        return cb

    cbs = {"ecq": callback("ecq", "fast"), "ecqx": callback("ecqx", "fast")}
    if before:
        cbs["ecq_before"] = callback("ecq", "reference")
        cbs["ecqx_before"] = callback("ecqx", "reference")
    qe = models["ecq"][0]
    cursor = [0]

    def step():
        a = cursor[0] % (len(x) - BATCH)
        cursor[0] += BATCH
        qe.train_on_batch(x[a : a + BATCH], y[a : a + BATCH])

    ops = {"step": step, **{k: cb.refresh for k, cb in cbs.items()}}
    for op in ops.values():  # warm-up: tracing, first allocation
        op()
    lrp_times.clear()
    times: Dict[str, List[float]] = {k: [] for k in ops}
    for r in range(repeats):
        for k, op in ops.items():
            if k.endswith("_before") and r >= repeats_before:
                continue
            gc.collect()
            s = time.perf_counter()
            op()
            times[k].append(time.perf_counter() - s)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    heap = {}
    for k, cb in cbs.items():
        gc.collect()
        tracemalloc.start()
        cb.refresh()
        heap[k] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # the refresh's assignment is the pure function's (checked once per size, fast path)
    from ecqx_tf import assign
    from ecqx_tf.keras.api import ecq_layers

    checked = 0
    for method in ("ecq", "ecqx"):
        slots = ecq_layers(models[method][0])
        nl = max(s.kernel.numpy().size for s in slots)
        for s in slots:
            if s.kernel.numpy().size > 1_100_000:
                continue  # the reference needs [K, N] float64 matrices; checked on the smaller kernels
            w, c = s.kernel.numpy(), s.centroids.numpy()
            lam = assign.layer_lambda(w, c, LAMBDA, w.size, nl)
            want = assign.ecq_assign(w, c, lam) if method == "ecq" else assign.ecqx_assign(w, c, lam, s.relevance.numpy(), p=P)
            if not np.array_equal(want, s.indices.numpy()):
                raise AssertionError(f"{size}: {method} indices of {s.name} differ from the reference")
            checked += 1
    if save:
        ecqx_tf.save_model(models["ecqx"][0], save)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    stats = ecqx_tf.layer_stats(models["ecqx"][0])[-1]
    return {
        "size": size,
        "hidden": [h1, h2],
        "weights": n_weights(h1, h2),
        "median_s": med,
        "runs": {k: len(v) for k, v in times.items()},
        "lrp_s": statistics.median(lrp_times) if lrp_times else None,
        "peak_rss_bytes": peak_rss,
        "refresh_heap_bytes": heap,
        "quantize_s": {m: models[m][1] for m in models},
        "float_train_s": t_float,
        "ecqx_sparsity": stats.get("sparsity"),
        "kernels_checked_against_reference": checked,
    }


# ----------------------------------------------------------------------------------- export
def _export(model: Path, target: str, out: Path) -> Dict[str, Any]:
    cmd = [sys.executable, "-c", "import sys; from cli.export import main; sys.exit(main())",
           str(model), "--target", target, "--out", str(out), "--data", "mnist_bundled"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), TF_CPP_MIN_LOG_LEVEL="3")
    s = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    t = time.perf_counter() - s
    return {"target": target, "seconds": t, "exit_code": p.returncode, "tail": (p.stdout + p.stderr)[-600:] if p.returncode else ""}


# ----------------------------------------------------------------------------------- table
def _fmt_s(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"


def table(result: Dict[str, Any]) -> str:
    rows = result["rows"]
    has_before = any("ecq_before" in r["median_s"] for r in rows)
    head = ["weights", "optimizer step", "ECQ refresh", "ECQx refresh", "ECQ refresh / step", "ECQx / ECQ",
            "ECQ us per weight", "LRP in ECQx", "(ECQx - LRP) / ECQ", "peak RSS", "refresh heap ECQ / ECQx"]
    if has_before:
        head += ["before: ECQ refresh", "before: ECQx refresh", "before: heap ECQ / ECQx"]
    head += ["export tflm", "export fantastic4"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r["median_s"]
        w = r["weights"]
        hp = r["refresh_heap_bytes"]
        ex = {e["target"]: e for e in r.get("exports", [])}

        def exp(t):
            e = ex.get(t)
            if e is None:
                return "-"
            return _fmt_s(e["seconds"]) + ("" if e["exit_code"] == 0 else f" (FAILED, exit {e['exit_code']})")

        cells = [f"{w / 1e6:.2f} M", _fmt_s(m["step"]), _fmt_s(m["ecq"]), _fmt_s(m["ecqx"]),
                 f"{m['ecq'] / m['step']:.1f}x", f"{m['ecqx'] / m['ecq']:.2f}x", f"{m['ecq'] / w * 1e6:.3f}",
                 _fmt_s(r.get("lrp_s")),
                 (f"{(m['ecqx'] - r['lrp_s']) / m['ecq']:.2f}x" if r.get("lrp_s") else "-"),
                 f"{r['peak_rss_bytes'] / 2**30:.2f} GiB",
                 f"{hp['ecq'] / 2**20:.0f} / {hp['ecqx'] / 2**20:.0f} MiB"]
        if has_before:
            cells += [_fmt_s(m.get("ecq_before")), _fmt_s(m.get("ecqx_before")),
                      (f"{hp['ecq_before'] / 2**20:.0f} / {hp['ecqx_before'] / 2**20:.0f} MiB" if "ecq_before" in hp else "-")]
        cells += [exp("tflm"), exp("fantastic4")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = {r["size"]: r for r in result["rows"]}
    out = []
    if "0.23M" in rows and "16M" in rows:
        a = rows["0.23M"]["median_s"]["ecq"] / rows["0.23M"]["weights"]
        b = rows["16M"]["median_s"]["ecq"] / rows["16M"]["weights"]
        out.append({"goal": "ECQ refresh per weight at 16 M <= 1.3x per weight at 0.23 M",
                    "value": f"{b * 1e6:.4f} / {a * 1e6:.4f} us = {b / a:.2f}x", "met": b / a <= 1.3})
    if "4M" in rows:
        m = rows["4M"]["median_s"]
        out.append({"goal": "ECQ refresh at 4 M <= 3x the optimizer step",
                    "value": f"{m['ecq']:.3f} s / {m['step']:.3f} s = {m['ecq'] / m['step']:.2f}x", "met": m["ecq"] / m["step"] <= 3})
    for size, r in rows.items():
        m = r["median_s"]
        out.append({"goal": f"ECQx refresh <= 1.3x ECQ refresh at {size}",
                    "value": f"{m['ecqx']:.3f} s / {m['ecq']:.3f} s = {m['ecqx'] / m['ecq']:.2f}x"
                             + (f" (LRP {r['lrp_s']:.3f} s of it)" if r.get("lrp_s") else ""),
                    "met": m["ecqx"] / m["ecq"] <= 1.3})
    if "4M" in rows:
        ex = {e["target"]: e for e in rows["4M"].get("exports", [])}
        for e in ex.values():
            out.append({"goal": f"ecqx-export --target {e['target']} of the 4 M ECQx MLP works",
                        "value": f"exit {e['exit_code']}, {e['seconds']:.1f} s", "met": e["exit_code"] == 0})
        if "tflm" in ex and "fantastic4" in ex:
            f4, tflm = ex["fantastic4"], ex["tflm"]
            out.append({"goal": "FantastIC4 export of the 4 M ECQx MLP <= 2x its TFLM export (same run)",
                        "value": f"{f4['seconds']:.1f} s / {tflm['seconds']:.1f} s = {f4['seconds'] / tflm['seconds']:.2f}x",
                        "met": f4["exit_code"] == 0 and tflm["exit_code"] == 0 and f4["seconds"] <= 2 * tflm["seconds"]})
    return out


def render(result: Dict[str, Any]) -> str:
    lines = [table(result), ""]
    for g in goals(result):
        lines.append(f"{'MET    ' if g['met'] else 'NOT MET'}  {g['goal']}: {g['value']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repetitions (medians); default 7")
    ap.add_argument("--repeats-before", type=int, default=3, help="repetitions of the reference path (slow); default 3")
    ap.add_argument("--no-before", dest="before", action="store_false", help="skip the reference ('before') path")
    ap.add_argument("--no-export", dest="export", action="store_false", help="skip the two exports")
    ap.add_argument("--export-targets", nargs="+", default=["tflm", "fantastic4"])
    ap.add_argument("--float-epochs", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--from-json", nargs="+", help="print the table of existing result files (rows of several "
                    "files in the given order, e.g. a separate 16M run after the smaller sizes)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--one-out", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.from_json:
        parts = [json.loads(Path(f).read_text()) for f in a.from_json]
        result = dict(parts[0], rows=[r for part in parts for r in part["rows"]])
        print(render(result))
        return result
    if a.one:
        row = _measure_one(a.one, a.repeats, a.repeats_before, a.before, a.float_epochs, a.save)
        Path(a.one_out).write_text(json.dumps(row))
        return row

    from ecqx_tf.io import atomic_write_json

    work = Path(tempfile.mkdtemp(prefix="ecqx_scale_"))
    rows = []
    try:
        for size in a.sizes:
            one_out = work / f"{size}.json"
            model = work / f"{size}_ecqx.h5"
            cmd = [sys.executable, __file__, "--one", size, "--one-out", str(one_out), "--repeats", str(a.repeats),
                   "--repeats-before", str(a.repeats_before), "--float-epochs", str(a.float_epochs)]
            if not a.before:
                cmd.append("--no-before")
            if a.export:
                cmd += ["--save", str(model)]
            print(f"[scale] {size}: measuring ...", flush=True)
            subprocess.run(cmd, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
            row = json.loads(one_out.read_text())
            if a.export:
                row["exports"] = []
                for target in a.export_targets:
                    print(f"[scale] {size}: ecqx-export --target {target} ...", flush=True)
                    row["exports"].append(_export(model, target, work / f"{size}_{target}"))
                    shutil.rmtree(work / f"{size}_{target}", ignore_errors=True)
            rows.append(row)
            print(f"[scale] {size}: {json.dumps(row['median_s'])}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # our own temporary folder
    result = {
        "what": "MLP 784-h1-h2-10, mnist_bundled, 4 bits, Lambda 0.1, p 0.1, batch 64, refresh every step; "
                "medians of interleaved runs in one process per size",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "repeats": a.repeats,
        "repeats_before": a.repeats_before if a.before else 0,
        "rows": rows,
    }
    result["goals"] = goals(result)
    atomic_write_json(a.out, result)
    print(render(result))
    return result


if __name__ == "__main__":
    main()
