"""Explainability-driven compression methods against their non-explanation baselines, on the
bundled MNIST split (a benchmark, not a test).

For each zoo model (default ``mnist_mlp`` and ``lenet5``), ONE float model is trained with a fixed
seed (``models.train.train_float``); every method below starts from its weights, gets the same
fine-tuning budget and is measured on the same 1,000 test digits, for every ``--seeds`` value
(seed of the fine-tuning and of the reference subset):

===========================  ====================================================================
comparison                   variants (``ecqx_tf.methods``)
===========================  ====================================================================
pruning at ``--sparsities``  ``relevance_pruning`` structured with LRP (epsilon_plus_flat) and with
(share of kernel weights)    DeepLIFT (zero reference); structured by L1 filter norm (same share
                             per layer); unstructured by LRP weight relevance; tfmot
                             ``prune_low_magnitude`` (unstructured). ``--rounds`` steps of the
                             cubic schedule, ``--epochs-per-round`` epochs after each (tfmot: the
                             same number of epochs, polynomial schedule)
weight sharing, 16 clusters  k-means weighted by LRP weight relevance vs plain k-means (zero kept,
                             int8 codebook, ``--epochs`` of QAT with re-clustering)
mixed precision              bits per layer from LRP / DeepLIFT relevance, and from the plain L1
                             quantization error, under the byte budget of uniform b bits (packed;
                             ``--mp-avg-bits``, default 4 and 3); vs uniform b-bit ECQx; all ECQx
                             (Lambda 0.05, p 0.1), ``--epochs``
===========================  ====================================================================

Exactness/size checks on the first seed: the 70% LRP-structured MLP/LeNet quantized to 4 bits and
the tfmot 70% model quantized the same way are exported to TFLM (INT4 weight bytes, TFLM accuracy);
the shared models are exported (INT8 and LUT-compressed bytes, TFLM accuracy); the mixed-precision
and uniform models are exported with LUT compression (weight bytes incl. value tables).

    python bench/xai_methods.py                 # full run (~30 min on 2 shared cores)
    python bench/xai_methods.py --quick         # a few minutes, checks the script end to end

Writes ``bench/results/xai_methods.json`` (``out/xai_methods_quick.json`` with ``--quick``) after every
run (partial results survive a crash) and prints the tables.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PRUNING = {
    "lrp_structured": ("relevance_pruning", {"criterion": "lrp", "structured": True}),
    "deeplift_structured": ("relevance_pruning", {"criterion": "deeplift", "reference": "zeros", "structured": True}),
    "l1_structured": ("relevance_pruning", {"criterion": "magnitude", "scope": "layer", "structured": True}),
    "lrp_unstructured": ("relevance_pruning", {"criterion": "lrp", "structured": False}),
    "tfmot_magnitude": ("magnitude_pruning", {}),
}
SHARING = {
    "lrp_weighted_kmeans": {"weighting": "relevance", "criterion": "lrp"},
    "plain_kmeans": {"weighting": "uniform"},
}
MIXED = {
    "mp_lrp": ("mixed_precision", {"criterion": "lrp"}),
    "mp_deeplift": ("mixed_precision", {"criterion": "deeplift", "reference": "zeros"}),
    "mp_l1_error": ("mixed_precision", {"criterion": "magnitude"}),
    "uniform": ("ecqx", {}),
}


def _tflm_accuracy(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
    from firmware_export.tflm.convert import quantize_input
    from firmware_export.tflm.simulate import run_tflm

    out = run_tflm(model_bytes, quantize_input(model_bytes, x))
    return float(np.mean(np.argmax(out.reshape(len(x), -1), axis=1) == y))


def _export(result, data, name: str, compress: bool = False, lut_shared: bool = False) -> Dict[str, Any]:
    from firmware_export.registry import ExportRequest
    from firmware_export.tflm import flatbuffer as fb
    from firmware_export.tflm.convert import convert, stored_bytes
    from firmware_export.tflm.shared import lut_compress_shared

    req = ExportRequest.from_result(result, name, data.x_train[:256], data.x_test, data.y_test, compress=compress)
    res = convert(req)  # raises if a stored integer differs from QuantizedKernel.integers()
    model_bytes = res.model_bytes
    if lut_shared:
        model_bytes = lut_compress_shared(req)
    parsed = fb.read_model(model_bytes)
    wbytes = [int(stored_bytes(parsed, t)) for _, t in fb.weight_tensors(parsed)]
    return {
        "flatbuffer_bytes": len(model_bytes),
        "weight_bytes": int(sum(wbytes)),
        "weight_types": sorted({r["weight_type"] for r in res.layers}),
        "integers_exact": True,
        "tflm_accuracy": _tflm_accuracy(model_bytes, data.x_test, data.y_test),
        "lut": bool(compress or lut_shared),
    }


def _row(kind: str, model: str, variant: str, seed: int, result, seconds: float, **extra) -> Dict[str, Any]:
    r = result.report
    row = {
        "kind": kind, "model": model, "variant": variant, "seed": seed, "accuracy": r["accuracy"],
        "sparsity": r["sparsity"], "kernel_weights": r["kernel_weights"],
        "original_kernel_weights": r["original_kernel_weights"], "params": r["params"],
        "packed_weight_bytes": r["packed_weight_bytes"], "entropy": r["entropy_bits_per_weight"],
        "seconds": seconds,
    }
    for k in ("qat_accuracy", "clustered_accuracy", "bits", "pruned_accuracy"):
        if k in r:
            row[k] = r[k]
    if "rounds" in r:
        row["units"] = r["rounds"][-1]["units"]
    row.update(extra)
    return row


def run(args) -> Dict[str, Any]:
    import tensorflow as tf

    from ecqx_tf.io import atomic_write_json
    from ecqx_tf.keras.finetune import evaluate_logits
    from ecqx_tf.methods import get_method
    from models import datasets
    from models.train import train_float

    data = datasets.load("mnist_bundled")
    if args.quick:
        from models.datasets import Dataset

        data = Dataset(data.name, data.x_train[:800], data.y_train[:800], data.x_test[:300], data.y_test[:300], 10)
    results: Dict[str, Any] = {
        "args": {k: v for k, v in vars(args).items()},
        "data": data.summary(),
        "tensorflow": tf.__version__,
        "float": {},
        "rows": [],
        "errors": [],
    }
    out = Path(args.out)

    def save():
        atomic_write_json(out, results)

    def attempt(what: str, fn):
        t0 = time.perf_counter()
        try:
            return fn(), time.perf_counter() - t0
        except Exception as e:  # a failed run is recorded, never faked
            results["errors"].append({"what": what, "error": f"{type(e).__name__}: {e}",
                                      "trace": traceback.format_exc()[-2000:]})
            logging.error("%s failed: %s", what, e)
            return None, time.perf_counter() - t0

    for model_name in args.models:
        fl = train_float(model_name, data, epochs=args.float_epochs, seed=0, verbose=0)
        fmodel = fl.model
        results["float"][model_name] = {"accuracy": evaluate_logits(fmodel, data.x_test, data.y_test),
                                        "params": int(fmodel.count_params()), "epochs_run": fl.epochs_run}
        print(f"{model_name}: float accuracy {results['float'][model_name]['accuracy']:.4f}", flush=True)
        save()
        train = (data.x_train, data.y_train, data.x_test, data.y_test)
        for seed in args.seeds:
            for s in args.sparsities:
                for variant, (mname, params) in PRUNING.items():
                    m = get_method(mname, sparsity=s, rounds=args.rounds, epochs_per_round=args.epochs_per_round,
                                   seed=seed, **params)
                    res, sec = attempt(f"{model_name} {variant} {s} seed {seed}", lambda: m.apply(fmodel, *train))
                    if res is None:
                        continue
                    row = _row("pruning", model_name, variant, seed, res, sec, target_sparsity=s)
                    if seed == args.seeds[0] and s == args.export_sparsity and variant in ("lrp_structured", "tfmot_magnitude"):
                        q = get_method(mname, sparsity=s, rounds=args.rounds, epochs_per_round=args.epochs_per_round,
                                       seed=seed, bits=4, quant_epochs=1, **params)
                        qres, _ = attempt(f"{model_name} {variant} export", lambda: q.apply(fmodel, *train))
                        if qres is not None:
                            exp, _ = attempt(f"{model_name} {variant} tflm", lambda: _export(qres, data, "pruned"))
                            row["export_4bit"] = {"accuracy": qres.report["accuracy"], "tflm": exp}
                    results["rows"].append(row)
                    print(f"  pruning {variant:22s} s={s:.1f} seed {seed}: acc {row['accuracy']:.4f} "
                          f"sparsity {row['sparsity']:.3f} kernel weights {row['kernel_weights']} ({sec:.0f}s)", flush=True)
                    save()
            for variant, params in SHARING.items():
                m = get_method("weight_sharing", n_clusters=16, epochs=args.epochs, seed=seed, **params)
                res, sec = attempt(f"{model_name} {variant} seed {seed}", lambda: m.apply(fmodel, *train))
                if res is None:
                    continue
                row = _row("sharing", model_name, variant, seed, res, sec)
                if seed == args.seeds[0]:
                    row["tflm_int8"], _ = attempt("sharing tflm", lambda: _export(res, data, "shared"))
                    row["tflm_lut"], _ = attempt("sharing lut", lambda: _export(res, data, "shared", lut_shared=True))
                results["rows"].append(row)
                print(f"  sharing {variant:22s} seed {seed}: clustered {row['clustered_accuracy']:.4f} -> "
                      f"acc {row['accuracy']:.4f} ({sec:.0f}s)", flush=True)
                save()
            for avg in args.mp_avg_bits:
                for variant, (mname, params) in MIXED.items():
                    params = {**params, **({"bits": int(avg)} if mname == "ecqx" else {"avg_bits": float(avg)})}
                    m = get_method(mname, epochs=args.epochs, seed=seed, **params)
                    res, sec = attempt(f"{model_name} {variant} {avg} seed {seed}", lambda: m.apply(fmodel, *train))
                    if res is None:
                        continue
                    extra = {"avg_bits": float(avg)}
                    if mname == "ecqx":
                        extra["bits"] = {r["layer"]: r["bits"] for r in res.report["layers"]}
                    z = get_method(mname, **{**params, "epochs": 0}, seed=seed)
                    zres, _ = attempt(f"{model_name} {variant} {avg} no-finetune", lambda: z.apply(fmodel, *train))
                    if zres is not None:
                        extra["accuracy_before_finetune"] = zres.report["accuracy"]
                    row = _row("mixed_precision", model_name, variant, seed, res, sec, **extra)
                    if seed == args.seeds[0]:
                        row["tflm_lut"], _ = attempt("mp tflm", lambda: _export(res, data, "mixed", compress=True))
                    results["rows"].append(row)
                    print(f"  mixed   {variant:14s} avg {avg:g} seed {seed}: bits {row.get('bits')} acc "
                          f"{row['accuracy']:.4f} packed {row['packed_weight_bytes']} ({sec:.0f}s)", flush=True)
                    save()
    return results


def _mean(rows: List[Dict[str, Any]], key: str) -> Optional[float]:
    v = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(v)) if v else None


def tables(results: Dict[str, Any]) -> str:
    rows = results["rows"]
    lines = []
    models = list(results["float"])
    lines.append("## Pruning (accuracy on the test split, mean over seeds; kernel-weight sparsity achieved)\n")
    lines.append("| model | variant | " + " | ".join(f"s={s}" for s in results["args"]["sparsities"]) + " |")
    lines.append("|---|---|" + "---|" * len(results["args"]["sparsities"]))
    for m in models:
        for v in PRUNING:
            cells = []
            for s in results["args"]["sparsities"]:
                sel = [r for r in rows if r["kind"] == "pruning" and r["model"] == m and r["variant"] == v
                       and r["target_sparsity"] == s]
                cells.append("-" if not sel else f"{_mean(sel, 'accuracy'):.4f} ({_mean(sel, 'sparsity'):.2f})")
            lines.append(f"| {m} (float {results['float'][m]['accuracy']:.4f}) | {v} | " + " | ".join(cells) + " |")
    lines.append("\n## Weight sharing, 16 clusters (accuracy after clustering -> after QAT; TFLM bytes of the weights)\n")
    lines.append("| model | variant | clustered | final | TFLM acc | INT8 weight bytes | LUT weight bytes |")
    lines.append("|---|---|---|---|---|---|---|")
    for m in models:
        for v in SHARING:
            sel = [r for r in rows if r["kind"] == "sharing" and r["model"] == m and r["variant"] == v]
            if not sel:
                continue
            ex = next((r for r in sel if r.get("tflm_int8")), {})
            i8, lut = ex.get("tflm_int8") or {}, ex.get("tflm_lut") or {}
            lines.append(f"| {m} | {v} | {_mean(sel, 'clustered_accuracy'):.4f} | {_mean(sel, 'accuracy'):.4f} | "
                         f"{lut.get('tflm_accuracy', float('nan')):.4f} | {i8.get('weight_bytes', '-')} | "
                         f"{lut.get('weight_bytes', '-')} |")
    lines.append("\n## Mixed precision at the byte budget of uniform b bits (ECQx)\n")
    lines.append("| model | budget | variant | bits per layer | packed bytes | before fine-tune | final | TFLM LUT weight bytes | TFLM acc |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for m, avg, v in [(m, a, v) for m in models for a in results["args"].get("mp_avg_bits", [4]) for v in MIXED]:
        sel = [r for r in rows if r["kind"] == "mixed_precision" and r["model"] == m and r["variant"] == v
               and r.get("avg_bits") == float(avg)]
        if not sel:
            continue
        ex = next((r.get("tflm_lut") for r in sel if r.get("tflm_lut")), None) or {}
        bits = sel[0].get("bits")
        bits_s = "/".join(str(b) for b in bits.values()) if isinstance(bits, dict) else "-"
        before = _mean(sel, "accuracy_before_finetune")
        lines.append(f"| {m} | {avg:g} bits | {v} | {bits_s} | {sel[0]['packed_weight_bytes']} | "
                     f"{'-' if before is None else f'{before:.4f}'} | {_mean(sel, 'accuracy'):.4f} | "
                     f"{ex.get('weight_bytes', '-')} | {ex.get('tflm_accuracy', float('nan')):.4f} |")
    exp = [r for r in rows if r.get("export_4bit")]
    if exp:
        lines.append("\n## Pruned at s=%s, then 4-bit ECQ (Lambda 0), exported to TFLM\n" % results["args"]["export_sparsity"])
        lines.append("| model | variant | Keras acc | TFLM acc | TFLM weight bytes | weight types |")
        lines.append("|---|---|---|---|---|---|")
        for r in exp:
            t = r["export_4bit"].get("tflm") or {}
            lines.append(f"| {r['model']} | {r['variant']} | {r['export_4bit']['accuracy']:.4f} | "
                         f"{t.get('tflm_accuracy', float('nan')):.4f} | {t.get('weight_bytes', '-')} | "
                         f"{', '.join(t.get('weight_types', []))} |")
    if results.get("errors"):
        lines.append(f"\n{len(results['errors'])} run(s) failed: " + "; ".join(e["what"] for e in results["errors"]))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small data, one seed, one sparsity: checks the script")
    ap.add_argument("--models", nargs="+", default=["mnist_mlp", "lenet5"])
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    ap.add_argument("--export-sparsity", type=float, default=0.7)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs-per-round", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=3, help="QAT epochs of sharing and mixed precision")
    ap.add_argument("--mp-avg-bits", type=int, nargs="+", default=[4, 3],
                    help="mixed-precision budgets: bytes of uniform b bits (default 4 3)")
    ap.add_argument("--float-epochs", type=int, default=10)
    ap.add_argument("--out", default=None)
    ap.add_argument("--from-json", default=None, help="print the tables of an existing results file")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.from_json:
        import json

        print(tables(json.loads(Path(args.from_json).read_text())))
        return 0
    if args.quick:
        args.seeds, args.sparsities, args.export_sparsity, args.mp_avg_bits = [0], [0.7], 0.7, [3]
        args.float_epochs, args.epochs = 2, 1
        args.rounds, args.epochs_per_round = 2, 1
    args.out = args.out or str(REPO / ("out/xai_methods_quick.json" if args.quick else "bench/results/xai_methods.json"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    t0 = time.perf_counter()
    results = run(args)
    results["seconds"] = time.perf_counter() - t0
    from ecqx_tf.io import atomic_write_json

    atomic_write_json(Path(args.out), results)
    print(tables(results))
    print(f"\nwrote {args.out} ({results['seconds']:.0f} s)")
    return 0 if not results["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
