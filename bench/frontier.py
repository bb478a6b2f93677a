"""The accuracy-size frontier: ECQ / ECQx against tfmot prune + cluster + PCQAT at an equal
fine-tuning budget, over several seeds (a benchmark, not a test; issue 17).

For each zoo model (default ``mnist_mlp`` and ``lenet5``) on the bundled MNIST split (4,000
train / 1,000 test), ONE float model is trained (10 epochs, seed 0, as ``bench/compare.py``) and
every point below is fine-tuned from it with the same optimizer (Adam 1e-3, batch 64) and the
same number of epochs in all (``--epochs``, default 15):

* ``pcqat``: tfmot magnitude pruning to each ``--sparsities`` (80/90/95%) -> 16 clusters with
  sparsity preserved -> cluster- and sparsity-preserving QAT, the three stages splitting the
  budget (``--pcqat-epochs``, default 5 5 5); full-int8 ``.tflite``, TFLM LUT compression;
* ``ecq`` / ``ecqx``: ``ecqx_tf.keras.finetune.quantize_and_train`` at each ``--bits`` (2 3 4) and
  each point of the grid: ``--targets`` (default 0.8 0.9 0.95: the share of zeros of the whole
  model, ``target_sparsity`` with ``target_scope="model"``, i.e. the paper's Lambda chosen at every
  refresh so that the model has that share of zeros, with the paper's split between layers; or
  per layer with ``--target-scope layer``) and/or ``--lambdas`` (the paper's Lambda itself), with
  the training options ``--warmup`` (default 0.6), ``--gradient``, ``--relevance-source``,
  ``--lr-schedule`` (``docs/frontier.md``); exported with ``firmware_export.tflm`` (stored
  integers = assigned levels), also LUT-compressed.

Each point runs for every ``--seeds`` (the fine-tuning seed: batch order, ECQx's relevance
subset; tfmot seeds its k-means++ with a fixed 9, so PCQAT's clusters differ between seeds only
through the pruned weights; the float model is the same). Measured per point (helpers shared with
``bench/compare.py`` in ``bench/common.py``): the test accuracy on the **real TFLM interpreter**
(all 1,000 digits), zeros among the stored weight integers, the **executable bytes** (the
FantastIC4 blob with the size-optimal layout per layer for the MLP; the LUT-compressed
``.tflite`` for LeNet-5, whose TFLM accuracy is measured on that LUT model too), and the
**stored bytes** (the weight integers with lzma and with the project's arithmetic coder
``firmware_export/entropy_coding.py``, + 4 bytes per bias and per weight scale).

Resumable: every point is written (atomically) to the results file as soon as it is measured; a
later run with ``--resume`` skips the points already there and measures the rest. Without
``--resume`` an existing results file is never touched (the run stops with exit code 2).

    nice -n 10 python bench/frontier.py                   # the full run (BENCHMARKS.md, "Frontier")
    nice -n 10 python bench/frontier.py --resume          # finish an interrupted run
    python bench/frontier.py --from-json bench/results/frontier.json [--markdown] [--plots]
    python bench/frontier.py --quick --out /tmp/frontier_quick.json   # script check, a few minutes
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

__all__ = ["main", "Point", "points", "summarize", "format_table", "goals", "ecqx_vs_ecq", "coverage", "runtime", "merge", "collapsed", "render"]

log = logging.getLogger("bench.frontier")

DEFAULT_OUT = ROOT / "results" / "frontier.json"
#: Test digits: accuracy differences under about this many points are noise (binomial 95% at 94%).
NOISE_POINTS = 1.5


# ---------------------------------------------------------------------------------------------
# Points
# ---------------------------------------------------------------------------------------------
class Point(dict):
    """One training run: model, path, its setting and the seed. ``key`` names it in the results."""

    @property
    def key(self) -> str:
        return "|".join(f"{k}={self[k]}" for k in sorted(self) if self[k] is not None)

    @property
    def group(self) -> str:
        """The key without the seed (the seeds of one setting are aggregated)."""
        return "|".join(f"{k}={self[k]}" for k in sorted(self) if self[k] is not None and k != "seed")


def points(args) -> List[Point]:
    """Every point of the run, in the order they are measured (seed-major, so an interrupted run
    has every setting of every model at the first seeds)."""
    out: List[Point] = []
    for seed in args.seeds:
        for model in args.models:
            if "pcqat" in args.paths:
                for s in args.sparsities:
                    out.append(Point(model=model, path="pcqat", prune=float(s), epochs="+".join(map(str, args.pcqat_epochs)),
                                     seed=int(seed)))
            for method in ("ecq", "ecqx"):
                if method not in args.paths:
                    continue
                for bits in args.bits:
                    grid = [("Lambda", float(v)) for v in args.lambdas] + [("target", float(v)) for v in args.targets]
                    for kind, v in grid:
                        out.append(Point(model=model, path=method, bits=int(bits), Lambda=v if kind == "Lambda" else None,
                                         target=v if kind == "target" else None,
                                         scope=args.target_scope if kind == "target" else None,
                                         cap=args.max_layer_sparsity if kind == "target" else None, warmup=float(args.warmup),
                                         gradient=args.gradient, relevance=args.relevance_source if method == "ecqx" else None,
                                         lr=args.lr_schedule, epochs=int(args.epochs), seed=int(seed)))
    return out


# ---------------------------------------------------------------------------------------------
# Measuring one point
# ---------------------------------------------------------------------------------------------
def _measure(row: Dict[str, Any], plain: bytes, lut: Optional[bytes], data, fc_only: bool) -> None:
    """TFLM accuracy, zeros, executable and stored bytes of one exported model."""
    from bench.common import accuracy, f4_blob, stream_stats, tflite_weights, tflm_logits

    row["tflite_bytes"] = len(plain)
    w = tflite_weights(plain)
    st = stream_stats(w["ints"])
    run = tflm_logits(plain, data.x_test)
    row["acc_tflm"] = accuracy(run["logits"], data.y_test)
    row["sparsity"] = st["sparsity"]
    row["entropy"] = st["entropy"]
    row["layer_sparsity"] = st["layer_sparsity"]
    row["layer_distinct"] = st["layer_distinct"]
    row["weights"] = st["weights"]
    extra = w["bias_bytes"] + 4 * w["scales"]
    row["stored_lzma_bytes"] = st["lzma_weight_bytes"] + extra
    row["stored_cabac_bytes"] = st["cabac_weight_bytes"] + extra
    if lut is not None:
        row["lut_bytes"] = len(lut)
    if fc_only:
        blob = f4_blob(plain, "smallest")
        from firmware_export.fantastic4 import format as f4format

        row["f4_bytes"] = len(blob)
        row["f4_layouts"] = [l.layout_name for l in f4format.read_blob(blob).layers]
        row["executable_bytes"] = row["f4_bytes"]
        row["executable"] = "FantastIC4 blob (smallest layout per layer)"
    elif lut is not None:
        lrun = tflm_logits(lut, data.x_test)
        row["acc_tflm_lut"] = accuracy(lrun["logits"], data.y_test)
        row["executable_bytes"] = len(lut)
        row["executable"] = "LUT-compressed .tflite"
        if row["acc_tflm_lut"] != row["acc_tflm"]:
            row["notes"].append(f"LUT model accuracy {row['acc_tflm_lut']} != plain {row['acc_tflm']}")
    else:
        row["executable_bytes"] = len(plain)
        row["executable"] = ".tflite (LUT compression failed)"


def _run_point(p: Point, ctx: Dict[str, Any]) -> Dict[str, Any]:
    from bench.common import convert_int, ecq_tflite, keras_accuracy, lut_compress_all, pcqat

    data, fl = ctx["data"], ctx["float"]
    row: Dict[str, Any] = {"key": p.key, "group": p.group, **p, "notes": []}
    t0 = time.perf_counter()
    if p["path"] == "pcqat":
        epochs = tuple(int(e) for e in p["epochs"].split("+"))
        qat, secs = pcqat(fl, data, p["prune"], epochs, p["seed"])
        row["acc_keras"] = keras_accuracy(qat, data)
        plain = convert_int(qat, data.x_train)
        lut = lut_compress_all(plain)
        row["epoch_s"] = float(np.mean(secs))
        del qat
    else:
        from ecqx_tf.keras.finetune import quantize_and_train

        kw: Dict[str, Any] = dict(bits=p["bits"], method=p["path"], Lambda=p["Lambda"] if p["Lambda"] is not None else 0.0,
                                  p=ctx["p"], epochs=p["epochs"], seed=p["seed"], lr_schedule=p["lr"],
                                  lambda_warmup=p["warmup"], gradient=p["gradient"])
        if p["target"] is not None:
            kw["target_sparsity"] = p["target"]
            kw["target_scope"] = p["scope"]
            kw["max_layer_sparsity"] = p.get("cap")
        if p["path"] == "ecqx":
            kw["relevance_source"] = p["relevance"]
        ft = quantize_and_train(fl, data.x_train, data.y_train, data.x_test, data.y_test, **kw)
        row["acc_keras"] = ft.test_accuracy
        row["epoch_s"] = float(np.mean(ft.epoch_seconds))
        row["layer_stats"] = [{k: r[k] for k in ("layer", "sparsity", "entropy", "used_centroids")} for r in ft.stats]
        plain, lut, notes = ecq_tflite(ft, data, f"{p['model']}_{p['path']}{p['bits']}")
        row["notes"] += notes
        ecq_sparsity = ft.stats[-1]["sparsity"]
        del ft
    _measure(row, plain, lut, data, ctx["fc_only"])
    if p["path"] != "pcqat" and abs(row["sparsity"] - ecq_sparsity) > 1e-12:  # exporter == assignment
        row["notes"].append(f"flatbuffer zeros {row['sparsity']} != layer_stats {ecq_sparsity}")
    row["seconds"] = time.perf_counter() - t0
    gc.collect()
    return row


def _fingerprint(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]


def _float_model(name: str, data, args, results: Dict[str, Any]):
    """The float model of ``name`` (trained once, seed 0; cached under ``--cache``). Its weight
    fingerprint must equal the one recorded in the results file (so a resumed run continues from
    the same float model)."""
    import tensorflow as tf

    from models.train import train_float

    cache = Path(args.cache) / f"{name}_float_e{args.float_epochs}_s0.keras"
    model = None
    if cache.exists():
        model = tf.keras.models.load_model(cache)
    if model is None:
        fl = train_float(name, data, epochs=args.float_epochs, seed=0, verbose=0)
        model = fl.model
        from ecqx_tf.io import atomic_write_with

        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_with(cache, lambda tmp: model.save(tmp))
    fp = _fingerprint(model)
    rec = results["floats"].get(name)
    if rec is not None and rec["fingerprint"] != fp:
        raise SystemExit(f"frontier: the float {name} ({fp}) is not the one of the results file ({rec['fingerprint']}); "
                         f"remove {cache} or use another --out")
    if rec is None:
        from bench.common import accuracy

        logits = model.predict(data.x_test, batch_size=256, verbose=0)
        results["floats"][name] = {"fingerprint": fp, "acc_keras": accuracy(logits, data.y_test),
                                   "float_epochs": args.float_epochs, "params": int(model.count_params())}
    return model


# ---------------------------------------------------------------------------------------------
# Aggregation, table, goals
# ---------------------------------------------------------------------------------------------
def _label(r: Dict[str, Any]) -> str:
    if r["path"] == "pcqat":
        return f"PCQAT prune {round(100 * r['prune'])}% ({r['epochs']} ep.)"
    s = f"{r['path'].upper()} {r['bits']}-bit " + (f"L={r['Lambda']:g}" if r.get("Lambda") is not None else
                                                   f"S*={r['target']:g}" + (" per layer" if r.get("scope") == "layer" else ""))
    opts = []
    if r.get("cap") is not None:
        opts.append(f"layer cap {r['cap']:g}")
    if r.get("warmup"):
        opts.append(f"warm-up {r['warmup']:g}")
    if r.get("gradient") not in (None, "ste"):
        opts.append(r["gradient"])
    if r.get("relevance") == "batch":
        opts.append("batch relevance")
    if r.get("lr") not in (None, "constant"):
        opts.append(r["lr"])
    if r.get("epochs") not in (None, 15):
        opts.append(f"{r['epochs']} ep.")
    return s + (f" ({', '.join(opts)})" if opts else "")


def summarize(rows: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per setting (the seeds aggregated): mean and range of the TFLM accuracy, mean
    zeros and bytes."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        if r.get("acc_tflm") is None:
            continue
        groups.setdefault(r["group"], []).append(r)
    out = []
    for g, rs in groups.items():
        acc = np.array([r["acc_tflm"] for r in rs])
        e = {k: rs[0].get(k) for k in ("model", "path", "bits", "Lambda", "target", "scope", "cap", "warmup", "gradient",
                                        "relevance", "lr", "epochs", "executable")}
        if e["path"] == "pcqat":
            e["target"] = rs[0]["prune"]  # the pruning target
        dead = sum(collapsed(r) for r in rs)
        e.update(group=g, label=_label(rs[0]) + (f" [{dead} of {len(rs)} runs: a kernel all zero]" if dead else ""),
                 seeds=sorted(r["seed"] for r in rs), n=len(rs), collapsed=dead,
                 acc_mean=float(acc.mean()), acc_min=float(acc.min()), acc_max=float(acc.max()),
                 zeros=float(np.mean([r["sparsity"] for r in rs])),
                 zeros_min=float(np.min([r["sparsity"] for r in rs])), zeros_max=float(np.max([r["sparsity"] for r in rs])),
                 layer_zeros=[float(v) for v in np.mean([r["layer_sparsity"] for r in rs], axis=0)],
                 exec_bytes=float(np.mean([r["executable_bytes"] for r in rs])),
                 exec_min=float(np.min([r["executable_bytes"] for r in rs])),
                 exec_max=float(np.max([r["executable_bytes"] for r in rs])),
                 lzma=float(np.mean([r["stored_lzma_bytes"] for r in rs])),
                 cabac=float(np.mean([r["stored_cabac_bytes"] for r in rs])),
                 seconds=float(np.mean([r["seconds"] for r in rs])))
        out.append(e)
    order = {"pcqat": 0, "ecq": 1, "ecqx": 2}
    out.sort(key=lambda e: (e["model"], order[e["path"]], e["bits"] or 0, e["label"]))
    return out


def format_table(summary: Sequence[Dict[str, Any]], markdown: bool = False) -> str:
    header = ["model", "setting", "seeds", "TFLM acc mean", "min-max", "zeros", "zeros per layer", "exec B",
              "stored B lzma", "stored B CABAC", "s/run"]
    body = []
    for e in summary:
        body.append([e["model"], e["label"], str(e["n"]), f"{e['acc_mean']:.4f}", f"{e['acc_min']:.3f}-{e['acc_max']:.3f}",
                     f"{e['zeros']:.1%}", " / ".join(f"{100 * z:.0f}" for z in e["layer_zeros"]),
                     f"{e['exec_bytes']:,.0f}", f"{e['lzma']:,.0f}", f"{e['cabac']:,.0f}", f"{e['seconds']:.0f}"])
    return _table(header, body, markdown)


def collapsed(row: Dict[str, Any]) -> bool:
    """A run in which some kernel is all zero: its output no longer depends on the input."""
    return any(z >= 1.0 for z in row.get("layer_sparsity", []))


def _grid_point(r: Dict[str, Any]) -> str:
    s = f"L={r['Lambda']:g}" if r.get("Lambda") is not None else f"S*={r['target']:g}"
    return s + (f" layer cap {r['cap']:g}" if r.get("cap") is not None else "")


def goals(summary: Sequence[Dict[str, Any]], rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The issue's goals, stated from the measured figures: (1) per model, the ECQ/ECQx settings
    with >= 90% zeros whose mean TFLM accuracy is at least PCQAT-90's at fewer executable bytes;
    (2) ECQx against ECQ at matched zeros (same bits and sparsity target, or nearest zeros)."""
    out = []
    for model in sorted({e["model"] for e in summary}):
        ref = [e for e in summary if e["model"] == model and e["path"] == "pcqat" and abs(e["target"] - 0.9) < 1e-9]
        if not ref:
            out.append(f"{model}: no PCQAT-90 point")
            continue
        r = ref[0]
        win = [e for e in summary if e["model"] == model and e["path"] != "pcqat" and e["zeros"] >= 0.9
               and e["acc_mean"] >= r["acc_mean"] and e["exec_bytes"] < r["exec_bytes"]]
        head = (f"{model}: PCQAT-90 {r['acc_mean']:.4f} ({r['acc_min']:.3f}-{r['acc_max']:.3f}) at {r['zeros']:.1%} zeros, "
                f"{r['exec_bytes']:,.0f} B")
        if win:
            best = max(win, key=lambda e: (e["acc_mean"], -e["exec_bytes"]))
            out.append(f"{head}: MET by {len(win)} setting(s); best {best['label']}: {best['acc_mean']:.4f} "
                       f"({best['acc_min']:.3f}-{best['acc_max']:.3f}) at {best['zeros']:.1%} zeros, {best['exec_bytes']:,.0f} B")
        else:
            near = [e for e in summary if e["model"] == model and e["path"] != "pcqat" and e["zeros"] >= 0.9]
            best = max(near, key=lambda e: e["acc_mean"]) if near else None
            out.append(f"{head}: NOT met" + (f"; best at >= 90% zeros {best['label']}: {best['acc_mean']:.4f} at "
                                              f"{best['zeros']:.1%}, {best['exec_bytes']:,.0f} B" if best else ""))
    # ECQx vs ECQ, paired by (model, bits, grid point, options) and seed
    by = {}
    for r in rows:
        if r.get("path") in ("ecq", "ecqx") and r.get("acc_tflm") is not None:
            k = (r["model"], r["bits"], r.get("Lambda"), r.get("target"), r.get("scope"), r.get("cap"), r.get("warmup"),
                 r.get("gradient"), r.get("lr"), r.get("epochs"), r["seed"])
            by.setdefault(k, {})[r["path"]] = r
    pairs = [(v["ecq"], v["ecqx"]) for v in by.values() if "ecq" in v and "ecqx" in v]
    dead = [(q, x) for q, x in pairs if collapsed(q) or collapsed(x)]
    pairs = [pq for pq in pairs if pq not in dead]
    if dead:
        out.append(f"{len(dead)} ECQ/ECQx pair(s) left out of the comparison below because a kernel of one of the two "
                   "runs is all zero (the model predicts a constant): "
                   + "; ".join(f"{q['model']} {q['bits']}-bit {_grid_point(q)} seed {q['seed']}: ECQ {q['acc_tflm']:.3f}, "
                               f"ECQx {x['acc_tflm']:.3f}" for q, x in dead))
    if pairs:
        d_acc = np.array([x["acc_tflm"] - q["acc_tflm"] for q, x in pairs]) * 100
        d_zero = np.array([x["sparsity"] - q["sparsity"] for q, x in pairs]) * 100
        groups = {}
        for q, x in pairs:
            groups.setdefault((q["model"], q["bits"], q.get("Lambda"), q.get("target"), q.get("cap")), []).append(
                (x["acc_tflm"] - q["acc_tflm"]) * 100)
        g_means = np.array([np.mean(v) for v in groups.values()])
        out.append(f"ECQx - ECQ over {len(pairs)} paired runs (same setting and seed): accuracy {d_acc.mean():+.2f} points "
                   f"on average (min {d_acc.min():+.1f}, max {d_acc.max():+.1f}); zeros {d_zero.mean():+.2f} points "
                   f"(|diff| <= {np.abs(d_zero).max():.1f}); settings (mean over seeds): ECQx ahead by more than "
                   f"{NOISE_POINTS} points in {int(np.sum(g_means > NOISE_POINTS))}, behind by more in "
                   f"{int(np.sum(g_means < -NOISE_POINTS))}, within noise in {int(np.sum(np.abs(g_means) <= NOISE_POINTS))} "
                   f"of {len(g_means)}")
    return out


def coverage(results: Dict[str, Any], grid: Sequence[Point]) -> Dict[str, List[str]]:
    """Which settings of ``grid`` the results file lacks (``"missing"``) and which were tried and
    failed (``"failed"``, with the error), one line per setting, the seeds named."""
    rows = results["rows"]
    missing: Dict[str, List[Point]] = {}
    failed: Dict[str, List[Point]] = {}
    for p in grid:
        r = rows.get(p.key)
        if r is None:
            missing.setdefault(p.group, []).append(p)
        elif "failed" in r:
            failed.setdefault(p.group, []).append(p)
    n_seeds = {}
    for p in grid:
        n_seeds.setdefault(p.group, set()).add(p["seed"])

    def line(ps: List[Point]) -> str:
        seeds = sorted(q["seed"] for q in ps)
        which = "all seeds" if len(seeds) == len(n_seeds[ps[0].group]) else "seed" + ("s " if len(seeds) > 1 else " ") + \
            ", ".join(map(str, seeds))
        return f"{ps[0]['model']}: {_label(ps[0])} ({which})"

    order = {}
    for i, p in enumerate(grid):
        order.setdefault(p.group, i)
    out = {"missing": [line(missing[g]) for g in sorted(missing, key=order.get)], "failed": []}
    for g in sorted(failed, key=order.get):
        ps = failed[g]
        errors = sorted({rows[q.key]["failed"] for q in ps})
        out["failed"].append(f"{line(ps)}: {errors[0]}" + (f" (and {len(errors) - 1} other message(s))" if len(errors) > 1 else ""))
    return out


def ecqx_vs_ecq(rows: Iterable[Dict[str, Any]], markdown: bool = False) -> str:
    """ECQx against ECQ per setting, paired by seed (same model, bits, grid point and options):
    the accuracy of each, the per-seed differences in points, zeros, executable bytes, seconds."""
    by: Dict[tuple, Dict[int, Dict[str, Dict[str, Any]]]] = {}
    for r in rows:
        if r.get("path") in ("ecq", "ecqx") and r.get("acc_tflm") is not None:
            k = (r["model"], r["bits"], r.get("Lambda"), r.get("target"), r.get("scope"), r.get("cap"), r.get("warmup"),
                 r.get("gradient"), r.get("lr"), r.get("epochs"))
            by.setdefault(k, {}).setdefault(r["seed"], {})[r["path"]] = r
    header = ["model", "setting", "paired seeds", "ECQ acc (mean)", "ECQx acc (mean)", "ECQx - ECQ per seed (points)",
              "mean", "zeros ECQ / ECQx", "exec B ECQ / ECQx", "s/run ECQ / ECQx"]
    body = []
    for k in sorted(by, key=lambda k: (k[0], k[1], k[2] or 0, k[3] or 0, k[5] or 0)):
        pairs = [(s, v["ecq"], v["ecqx"]) for s, v in sorted(by[k].items()) if "ecq" in v and "ecqx" in v]
        if not pairs:
            continue
        q = [a for _, a, _ in pairs]
        x = [b for _, _, b in pairs]
        d = [100 * (b["acc_tflm"] - a["acc_tflm"]) for _, a, b in pairs]
        mean = lambda rs, f: float(np.mean([r[f] for r in rs]))  # noqa: E731
        setting = f"{k[1]}-bit " + (f"L={k[2]:g}" if k[2] is not None else f"S*={k[3]:g}" + (" per layer" if k[4] == "layer" else ""))
        if k[5] is not None:
            setting += f" (layer cap {k[5]:g})"
        body.append([k[0], setting, ", ".join(str(s) for s, _, _ in pairs), f"{mean(q, 'acc_tflm'):.4f}", f"{mean(x, 'acc_tflm'):.4f}",
                     ", ".join(f"{v:+.1f}" for v in d), f"{np.mean(d) + 0.0:+.2f}".replace("-0.00", "+0.00"),
                     f"{mean(q, 'sparsity'):.1%} / {mean(x, 'sparsity'):.1%}",
                     f"{mean(q, 'executable_bytes'):,.0f} / {mean(x, 'executable_bytes'):,.0f}",
                     f"{mean(q, 'seconds'):.0f} / {mean(x, 'seconds'):.0f}"])
    return _table(header, body, markdown)


def runtime(results: Dict[str, Any], grid: Optional[Sequence[Point]] = None) -> List[str]:
    """What the run cost: seconds of training and measurement in all, of the points of ``grid``
    alone (when given), and per model, path and bit width (mean, min-max, count), failed points
    included in the totals."""
    rows = list(results["rows"].values())
    total = float(sum(r.get("seconds", 0.0) for r in rows))
    wall = float(sum(i.get("seconds", 0.0) for i in results.get("invocations", [])))
    out = [f"{len(rows)} points ({sum('failed' in r for r in rows)} failed): {total:,.0f} s of training and measurement "
           f"({total / 3600:.1f} h; {wall:,.0f} s wall-clock over {len(results.get('invocations', []))} invocation(s), "
           f"including loading TensorFlow and the float models)"]
    if grid is not None:
        mine = [results["rows"][p.key] for p in grid if p.key in results["rows"]]
        secs = float(sum(r.get("seconds", 0.0) for r in mine))
        out.append(f"of them the {len(mine)} of the grid these options define: {secs:,.0f} s ({secs / 3600:.1f} h)")
    groups: Dict[tuple, List[float]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["path"], r.get("bits") or 0), []).append(r.get("seconds", 0.0))
    for (model, path, bits), secs in sorted(groups.items()):
        name = f"{model} {path.upper()}" + (f" {bits}-bit" if bits else "")
        out.append(f"{name}: {np.mean(secs):.0f} s per point ({min(secs):.0f}-{max(secs):.0f}, n={len(secs)})")
    return out


def _table(header: Sequence[str], body: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
                         + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


# ---------------------------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------------------------
_COLOURS = {"pcqat": "tab:orange", "ecq": "tab:blue", "ecqx": "tab:red"}
_MARKERS = {None: "D", 2: "o", 3: "s", 4: "^", 5: "v"}


def render(results: Dict[str, Any], out_dir: Path) -> List[Path]:
    """``frontier_<model>.png``: TFLM accuracy (mean, bars = min-max over seeds) against the
    executable bytes (mean, bars = min-max), PCQAT / ECQ / ECQx, bits by marker; the settings with
    >= 90% zeros filled, the others open."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ecqx_tf.io import atomic_write_with

    summary = summarize(results["rows"].values())
    written = []
    for model in sorted({e["model"] for e in summary}):
        es = [e for e in summary if e["model"] == model]
        fig, ax = plt.subplots(figsize=(8.5, 5.5))
        seen = set()
        for e in es:
            c = _COLOURS[e["path"]]
            m = _MARKERS.get(e["bits"], "x")
            lab = ("tfmot prune + 16 clusters + PCQAT" if e["path"] == "pcqat" else f"{e['path'].upper()} {e['bits']}-bit"
                   + (" (layer cap)" if e.get("cap") is not None else ""))
            ax.errorbar(e["exec_bytes"], 100 * e["acc_mean"],  # (max with 0: float rounding of equal values)
                        yerr=[[max(0.0, 100 * (e["acc_mean"] - e["acc_min"]))], [max(0.0, 100 * (e["acc_max"] - e["acc_mean"]))]],
                        xerr=[[max(0.0, e["exec_bytes"] - e["exec_min"])], [max(0.0, e["exec_max"] - e["exec_bytes"])]],
                        fmt=m, color=c, mfc=c if e["zeros"] >= 0.9 else "white", ms=7, capsize=2, lw=1,
                        mec="black" if e.get("cap") is not None else c, label=None if lab in seen else lab)
            seen.add(lab)
            ax.annotate(f"{100 * e['zeros']:.0f}%", (e["exec_bytes"], 100 * e["acc_mean"]), fontsize=6,
                        xytext=(4, 3), textcoords="offset points", color=c)
        fl = results["floats"].get(model)
        if fl:
            ax.axhline(100 * fl["acc_keras"], color="grey", ls=":", lw=1, label="float32")
        live = [e for e in es if e.get("collapsed", 0) < e["n"]]
        dead = [e for e in es if e.get("collapsed", 0) == e["n"]]
        if live and dead:  # settings whose every run predicts a constant: named, off the scale
            lo = 100 * min(e["acc_min"] for e in live) - 1.0
            ax.set_ylim(bottom=lo)
            ax.text(0.01, 0.01, "off the scale (a kernel all zero, every seed): " + "; ".join(
                f"{e['label'].split(' [')[0]} {100 * e['acc_mean']:.0f}%" for e in dead), transform=ax.transAxes, fontsize=6)
        ax.set_xscale("log")
        ex = es[0]["executable"] or "executable"
        ax.set_xlabel(f"executable bytes ({ex}; mean, bars: min-max over seeds)")
        ax.set_ylabel("TFLM test accuracy % (mean, bars: min-max)")
        ax.set_title(f"{model}: accuracy vs executable size, {results['budget']} "
                     f"(filled: >= 90% zeros; labels: zeros)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no point hidden
        path = out_dir / f"frontier_{model}.png"
        atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png"))
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def _load(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text())


def run(args) -> Dict[str, Any]:
    import tensorflow as tf

    from bench.common import is_fc_only, machine_info, versions
    from ecqx_tf.io import atomic_write_json
    from models import datasets

    tf.get_logger().setLevel("ERROR")
    out = Path(args.out)
    if out.exists():
        results = _load(out)
    else:
        results = {"definitions": DEFINITIONS, "floats": {}, "rows": {}, "invocations": [],
                   "budget": f"{args.epochs} fine-tuning epochs per point (PCQAT: {'+'.join(map(str, args.pcqat_epochs))})"}
    inv = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "versions": versions(), "machine": machine_info(),
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "points_measured": 0, "seconds": 0.0}
    results["invocations"].append(inv)
    data = datasets.load("mnist_bundled")
    results["dataset"] = data.summary()
    if args.retry_failed:
        for k in [k for k, r in results["rows"].items() if "failed" in r]:
            del results["rows"][k]
    todo = [p for p in points(args) if p.key not in results["rows"]]
    log.info("%d points, %d already in %s, %d to measure", len(points(args)), len(points(args)) - len(todo), out, len(todo))
    t_start = time.perf_counter()
    ctx_by_model: Dict[str, Dict[str, Any]] = {}
    failed = 0
    for i, p in enumerate(todo, 1):
        if p["model"] not in ctx_by_model:
            ctx_by_model.clear()
            gc.collect()
            fl = _float_model(p["model"], data, args, results)
            ctx_by_model[p["model"]] = {"data": data, "float": fl, "fc_only": is_fc_only(fl), "p": args.p}
        ctx = ctx_by_model[p["model"]]
        log.info("[%d/%d] %s", i, len(todo), p.key)
        t_point = time.perf_counter()
        try:
            row = _run_point(p, ctx)
        except Exception as e:  # a point that cannot be trained is a result too: recorded, not retried
            failed += 1
            log.error("%s failed:\n%s", p.key, traceback.format_exc())
            msg = f"{type(e).__name__}: {' '.join(str(e).split())}"[:500]
            inv.setdefault("failed", []).append(f"{p.key}: {msg}")
            row = {"key": p.key, "group": p.group, **p, "failed": msg, "seconds": time.perf_counter() - t_point,
                   "notes": []}
            gc.collect()
        results["rows"][p.key] = row
        inv["points_measured"] += 1
        inv["seconds"] = time.perf_counter() - t_start
        results["seconds_total"] = float(sum(r["seconds"] for r in results["rows"].values()))
        atomic_write_json(out, results)  # one point at a time: an interrupted run loses at most one
        if "failed" in row:
            continue
        log.info("    TFLM %.4f  zeros %.1f%%  exec %s B  (%.0f s)", row["acc_tflm"], 100 * row["sparsity"],
                 f"{row['executable_bytes']:,}", row["seconds"])
    inv["seconds"] = time.perf_counter() - t_start
    inv["failed_points"] = failed
    atomic_write_json(out, results)
    return results


DEFINITIONS = {
    "acc_tflm": "test accuracy on the tflite_micro interpreter (reference kernels), 1 invoke per test digit, all 1,000",
    "acc_tflm_lut": "the same on the LUT-compressed .tflite (LeNet-5: the executable)",
    "sparsity": "zeros among the stored weight integers (kernels only), read back from the .tflite",
    "executable_bytes": "mnist_mlp: FantastIC4 blob, the size-optimal layout per layer (write_blob 'smallest'); "
                        "lenet5: the .tflite with TFLM LUT compression of every weight tensor",
    "stored_lzma_bytes": "xz/lzma preset 9e of the int8 weight-integer stream + 4 B per bias + 4 B per weight scale",
    "stored_cabac_bytes": "the weight integers coded with firmware_export/entropy_coding.py + 4 B per bias and scale",
    "epoch_s": "wall-clock seconds per fine-tuning epoch (shared 2-core machine)",
    "seconds": "wall-clock seconds of the point: fine-tuning, export and measurement",
}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mnist_mlp", "lenet5"])
    ap.add_argument("--paths", nargs="+", default=["pcqat", "ecq", "ecqx"], choices=["pcqat", "ecq", "ecqx"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds (default 0 1 2)")
    ap.add_argument("--epochs", type=int, default=15, help="ECQ/ECQx fine-tuning epochs (default 15)")
    ap.add_argument("--pcqat-epochs", type=int, nargs=3, default=[5, 5, 5], metavar=("PRUNE", "CLUSTER", "QAT"),
                    help="epochs of the three PCQAT stages (default 5 5 5: the same 15 in all)")
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9, 0.95], help="PCQAT pruning targets")
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--lambdas", type=float, nargs="*", default=[], help="ECQ/ECQx grid of the paper's Lambda")
    ap.add_argument("--targets", type=float, nargs="*", default=[0.8, 0.9, 0.95],
                    help="ECQ/ECQx grid of per-layer sparsity targets (target_sparsity)")
    ap.add_argument("--target-scope", choices=["layer", "model"], default="model",
                    help="a target per layer, or for the whole model with the paper's allocation (default model)")
    ap.add_argument("--max-layer-sparsity", type=float, default=None,
                    help="with --target-scope model: no kernel gets more than this share of zeros (default: no cap)")
    ap.add_argument("--warmup", type=float, default=0.6,
                    help="lambda_warmup: fraction of the run over which the target ramps up "
                    "(default 0.6, chosen by the exploration in docs/frontier.md)")
    ap.add_argument("--gradient", choices=["ste", "ec2t"], default="ste")
    ap.add_argument("--relevance-source", choices=["subset", "batch"], default="subset")
    ap.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    ap.add_argument("--p", type=float, default=0.1, help="ECQx p (default 0.1)")
    ap.add_argument("--float-epochs", type=int, default=10)
    ap.add_argument("--cache", default=str(REPO / "out" / "frontier_cache"), help="float models (default out/frontier_cache)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="results file (default bench/results/frontier.json)")
    ap.add_argument("--resume", action="store_true",
                    help="continue the results file: skip the points it has (measured or failed)")
    ap.add_argument("--retry-failed", action="store_true",
                    help="with --resume: train the points recorded as failed again")
    ap.add_argument("--quick", action="store_true", help="script check: mnist_mlp, 1 seed, 1 epoch, 4 bits, one point each")
    ap.add_argument("--plots", action="store_true", help="write frontier_<model>.png next to the results file")
    ap.add_argument("--from-json", metavar="PATH", help="train nothing: table, goals (and --plots) of a results file")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--merge", nargs="+", metavar="PATH",
                    help="train nothing: add the points of these results files (slices run in other processes, "
                    "same float models) to --out")
    return ap


def merge(into: Dict[str, Any], other: Dict[str, Any], name: str = "other") -> int:
    """Add the points of ``other`` (a results file of a run in another process, e.g. a slice run in
    parallel) to ``into``: the float models must be the same (fingerprints), a point in both must
    be the same measurement; ``other``'s invocations are appended. Returns the points added."""
    for model, rec in other.get("floats", {}).items():
        mine = into["floats"].get(model)
        if mine is not None and mine["fingerprint"] != rec["fingerprint"]:
            raise ValueError(f"{name}: the float {model} ({rec['fingerprint']}) is not the one of the results file "
                             f"({mine['fingerprint']})")
        into["floats"].setdefault(model, rec)
    added = 0
    for key, row in other["rows"].items():
        if key in into["rows"]:
            if into["rows"][key] != row:
                raise ValueError(f"{name}: point {key} is in both files with different measurements")
            continue
        into["rows"][key] = row
        added += 1
    into["invocations"] += other.get("invocations", [])
    into["seconds_total"] = float(sum(r.get("seconds", 0.0) for r in into["rows"].values()))
    return added


def _report(results: Dict[str, Any], args, out_dir: Path) -> None:
    summary = summarize(results["rows"].values())
    print(format_table(summary, markdown=args.markdown))
    print()
    for g in goals(summary, list(results["rows"].values())):
        print("* " + g)
    print("\nECQx against ECQ (paired by seed):\n")
    print(ecqx_vs_ecq(results["rows"].values(), markdown=args.markdown))
    cov = coverage(results, points(args))
    print(f"\nNot measured ({len(cov['missing'])} setting(s) of the grid these options define):"
          + ("".join(f"\n* {m}" for m in cov["missing"]) if cov["missing"] else " none"))
    print(f"\nFailed ({len(cov['failed'])} setting(s); recorded in the results file, not retried without "
          "--retry-failed):" + ("".join(f"\n* {m}" for m in cov["failed"]) if cov["failed"] else " none"))
    print("\nRuntime:" + "".join(f"\n* {line}" for line in runtime(results, points(args))))
    if args.plots:
        for p in render(results, out_dir):
            print(f"wrote {p}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.from_json:
        path = Path(args.from_json)
        if not path.is_file():
            print(f"frontier: error: --from-json {path}: no such file", file=sys.stderr)
            return 2
        _report(_load(path), args, path.parent)
        return 0
    if args.merge:
        from ecqx_tf.io import atomic_write_json

        out = Path(args.out)
        if not out.is_file():
            print(f"frontier: error: --merge needs an existing --out results file, got {out}", file=sys.stderr)
            return 2
        results = _load(out)
        for m in args.merge:
            try:
                n = merge(results, _load(Path(m)), m)
            except (OSError, ValueError, KeyError) as e:
                print(f"frontier: error: --merge {m}: {e}", file=sys.stderr)
                return 2
            print(f"{m}: {n} point(s) added to {out}")
        atomic_write_json(out, results)
        return 0
    if args.quick:
        args.models, args.seeds, args.epochs, args.pcqat_epochs = ["mnist_mlp"], [0], 1, [1, 1, 1]
        args.sparsities, args.bits, args.targets, args.lambdas = [0.9], [4], [0.9], [0.3]
    out = Path(args.out)
    problems = []
    if out.exists() and not args.resume:
        problems.append(f"--out {out} exists; pass --resume to continue it (its points are kept) or choose another --out")
    if args.epochs < 1 or min(args.pcqat_epochs) < 1:
        problems.append(f"--epochs and --pcqat-epochs must be >= 1, got {args.epochs} and {args.pcqat_epochs}")
    if any(not 0 < s < 1 for s in args.sparsities) or any(not 0 <= t <= 1 for t in args.targets):
        problems.append(f"--sparsities must be in (0, 1) and --targets in [0, 1], got {args.sparsities} and {args.targets}")
    if any(not 2 <= b <= 8 for b in args.bits):
        problems.append(f"--bits must be in 2..8, got {args.bits}")
    if args.max_layer_sparsity is not None and (not 0 <= args.max_layer_sparsity <= 1 or args.target_scope != "model"):
        problems.append(f"--max-layer-sparsity must be in [0, 1] and needs --target-scope model, got {args.max_layer_sparsity} "
                        f"with --target-scope {args.target_scope}")
    if not 0 <= args.warmup <= 1:
        problems.append(f"--warmup must be a fraction in [0, 1], got {args.warmup}")
    if {"ecq", "ecqx"} & set(args.paths) and not (args.lambdas or args.targets):
        problems.append("ECQ/ECQx need a grid: --lambdas and/or --targets")
    if problems:
        for msg in problems:
            print(f"frontier: error: {msg}", file=sys.stderr)
        return 2
    from models import zoo

    bad = [m for m in args.models if m not in zoo.names()]
    if bad:
        print(f"frontier: error: unknown model(s) {bad}; accepted: {zoo.names()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("firmware_export", "models", "ecqx_tf"):
        logging.getLogger(name).setLevel(logging.WARNING)
    results = run(args)
    print()
    _report(results, args, out.parent)
    return 1 if results["invocations"][-1].get("failed_points") else 0


if __name__ == "__main__":
    sys.exit(main())
