"""``ecqx-demo`` (``make demo``): the main job on the embedded default, the bundled MNIST subset.

Stages, each writing under ``--out`` (default ``out/demo/``):

1. ``float/``: the zoo's ``mnist_mlp`` (784-256-128-10) trained in float (``model.keras``).
2. ``ecqx/``: quantized with ECQx at 4 bits and fine-tuned (``qat_model.h5``, ``stripped.keras``,
   ``layer_stats.json``).
3. ``tflm/``: exported for TensorFlow Lite Micro and checked on the real TFLM interpreter.
4. ``fantastic4/``: exported to the packed 4-bit sparse format, built and run as C on the host.

Everything ends in ``results.json`` (machine-readable), ``manifest.json`` (``"tool": "ecqx-demo"``,
every file of the folder with its sha256) and a printed summary table. The whole ``--out`` folder is
the demo's output: it is built in a hidden partial folder beside it and swapped into place at the
end; an existing ``--out`` is replaced only when it is a previous ``ecqx-demo`` output (or with
``--force``), never when it is a file.
"""
from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

__all__ = ["main", "run", "versions", "DEFAULTS"]

log = logging.getLogger("ecqx.demo")

DEFAULTS = dict(
    model="mnist_mlp",
    data="mnist_bundled",
    float_epochs=10,
    bits=4,
    method="ecqx",
    Lambda=0.3,
    p=0.1,
    qat_epochs=15,
    target_sparsity=0.88,  # the whole model's share of zeros, the paper's split between layers (docs/frontier.md)
    lambda_warmup=0.6,
    refresh_every=1,
    seed=0,
)


def versions() -> dict:
    """The versions of the pinned stack (Python, TensorFlow, tfmot, NumPy, ...) recorded in results."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    out = {"python": platform.python_version(), "tensorflow": tf.__version__, "tfmot": tfmot.__version__,
           "numpy": np.__version__, "machine": platform.machine()}
    try:
        from importlib.metadata import version

        out["tflite_micro"] = version("tflite-micro")
        out["innvestigate"] = version("innvestigate")
    except Exception:  # pragma: no cover
        pass
    return out


def _stage_export(target_name: str, model_path: Path, data: str, out_dir: Path) -> dict:
    """Run ``ecqx-export MODEL --target T --out DIR --data D`` exactly as a user would, then the
    target's host check (what ``ecqx-simulate DIR`` runs after verifying the manifest)."""
    from cli import export as cli
    from firmware_export import simulate

    rc = cli.main([str(model_path), "--target", target_name, "--out", str(out_dir), "--data", data,
                   "--name", "mnist_mlp"])
    if rc == 2:
        raise RuntimeError(f"ecqx-export --target {target_name} failed (exit code 2; see the error above)")
    manifest = cli.verify_manifest(out_dir)
    check = simulate(target_name, out_dir)
    return {"export": manifest["summary"], "check": check, "exit_code": rc}


def run(out: Path, force: bool = False, verbose: int = 2, **kw) -> dict:
    """Run the whole job into the output folder ``out`` (see the module docstring for the rules
    on an existing ``out``; ``force`` as ``--force``; ``verbose``: Keras verbosity of the two
    trainings). ``kw`` override :data:`DEFAULTS`.

    Raises:
        OutputFolderError: ``out`` may not be written (before any work).
    """
    from ecqx_tf.io import atomic_output_dir, check_output_dir
    from models.datasets.bundled import mnist_bundled_path

    check_config({**DEFAULTS, **{k: v for k, v in kw.items() if v is not None}})
    inputs = [mnist_bundled_path()]
    check_output_dir(out, "ecqx-demo", inputs, force)  # before any work; touches nothing
    with atomic_output_dir(out, "ecqx-demo", inputs, force) as tmp:
        return _run(tmp, verbose=verbose, **kw)


def check_config(cfg: dict) -> dict:
    """Every setting of the job checked before any work (float training takes minutes).

    Raises:
        ValueError, TypeError: naming the setting, the value and the accepted range.
    """
    from ecqx_tf.config import (
        QUANT_METHODS,
        SEED_MAX,
        validate_bits,
        validate_choice,
        validate_float_range,
        validate_int_range,
    )

    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; accepted: {', '.join(sorted(DEFAULTS))}")
    validate_bits(cfg["bits"])
    validate_choice("method", cfg["method"], QUANT_METHODS)
    validate_float_range("Lambda", cfg["Lambda"], low=0)
    validate_float_range("p", cfg["p"], 0, 1)
    for key in ("float_epochs", "qat_epochs", "refresh_every"):
        validate_int_range(key, cfg[key], low=1)
    validate_int_range("seed", cfg["seed"], 0, SEED_MAX)
    return cfg


def _run(out: Path, verbose: int = 2, **kw) -> dict:
    from ecqx_tf import save_model
    from ecqx_tf.io import atomic_write_json, check_writable_dir
    from ecqx_tf.keras.finetune import quantize_and_train
    from models import datasets
    from models.train import train_float

    cfg = {**DEFAULTS, **{k: v for k, v in kw.items() if v is not None}}
    t0 = time.perf_counter()
    data = datasets.load(cfg["data"])
    results = {"config": cfg, "dataset": data.summary(), "versions": versions(), "stages": {}}

    log.info("[1/4] float training of %s on %s", cfg["model"], cfg["data"])
    fl = train_float(cfg["model"], data, epochs=cfg["float_epochs"], seed=cfg["seed"], out_dir=out / "float", verbose=verbose)
    results["float"] = {"test_accuracy": fl.test_accuracy, "params": fl.param_count,
                        "weight_bytes_float32": int(sum(np.prod(w.shape) for w in fl.model.weights) * 4),
                        "seconds": fl.seconds}

    log.info("[2/4] %s at %d bits, Lambda %.3g", cfg["method"].upper(), cfg["bits"], cfg["Lambda"])
    ft = quantize_and_train(
        fl.model, data.x_train, data.y_train, data.x_test, data.y_test,
        bits=cfg["bits"], method=cfg["method"], Lambda=cfg["Lambda"], p=cfg["p"],
        epochs=cfg["qat_epochs"], refresh_every=cfg["refresh_every"], seed=cfg["seed"], verbose=verbose,
        target_sparsity=cfg["target_sparsity"], target_scope="model", lambda_warmup=cfg["lambda_warmup"],
    )
    qdir = check_writable_dir(out / "ecqx")
    save_model(ft.qmodel, qdir / "qat_model.h5")
    save_model(ft.stripped, qdir / "stripped.keras")
    atomic_write_json(qdir / "layer_stats.json", ft.stats)
    total = ft.stats[-1]
    results["ecqx"] = {
        "bits": cfg["bits"], "method": cfg["method"], "Lambda": cfg["Lambda"],
        "test_accuracy": ft.test_accuracy, "stripped_float_activation_accuracy": ft.stripped_accuracy,
        "sparsity": total["sparsity"], "entropy_bits_per_weight": total["entropy"],
        "used_centroids": total["used_centroids"], "epoch_seconds": ft.epoch_seconds,
        "layers": ft.stats[:-1],
    }

    for i, target in enumerate(("tflm", "fantastic4"), start=3):
        log.info("[%d/4] ecqx-export %s --target %s", i, qdir / "qat_model.h5", target)
        try:
            results["stages"][target] = _stage_export(target, qdir / "qat_model.h5", cfg["data"], out / target)
        except Exception as e:  # report, never hide: the table shows the failure
            log.error("export to %s failed: %s: %s", target, type(e).__name__, e,
                      exc_info=log.isEnabledFor(logging.DEBUG))  # the traceback with -v
            results["stages"][target] = {"error": f"{type(e).__name__}: {e}"}
    results["seconds"] = time.perf_counter() - t0
    results["summary"] = summarize(results)
    atomic_write_json(out / "results.json", results)
    return results


def summarize(results: dict) -> dict:
    """The headline figures of a run (also stored in results.json under ``summary``)."""
    fl, q = results["float"], results["ecqx"]
    out = {
        "float_accuracy": fl["test_accuracy"],
        "float_weight_bytes": fl["weight_bytes_float32"],
        "ecqx_accuracy": q["test_accuracy"],
        "ecqx_sparsity": q["sparsity"],
        "ecqx_entropy_bits_per_weight": q["entropy_bits_per_weight"],
    }
    t = results["stages"].get("tflm", {})
    if "export" in t:
        hc = t["export"]["host_check"]
        out.update(
            tflm_accuracy=hc.get("acc_tflm"),
            tflm_flatbuffer_bytes=t["export"]["flatbuffer_bytes"],
            tflm_weight_bytes=t["export"]["weight_bytes"],
            tflm_arena_bytes=t["export"]["arena"]["recommended"],
            tflm_vs_simulator_mismatches=hc.get("mismatches_simulator"),
            tflm_float_argmax_agreement=hc.get("agreement_float_tflm"),
            tflm_samples=hc.get("samples"),
        )
    f = results["stages"].get("fantastic4", {})
    if "export" in f:
        ex, ck = f["export"], f.get("check") or {}
        ops = ex["ops_per_inference"]["fantastic4"]
        out.update(
            fantastic4_accuracy=ex.get("accuracy"),
            fantastic4_blob_bytes=ex["totals"]["blob_bytes"],
            fantastic4_bytes_per_weight=ex["totals"]["bytes_per_weight"]["chosen"],
            fantastic4_multiplies=ops["multiplies"],
            fantastic4_additions=ops["accumulate_adds"] + ops["product_adds"],
            fantastic4_c_vs_python_mismatches=(ck.get("mismatching_samples") or {}).get("c_vs_python"),
            fantastic4_python_vs_tflm_mismatches=(ck.get("mismatching_samples") or {}).get("python_vs_tflm"),
            fantastic4_samples=ck.get("samples"),
        )
    return out


def format_table(results: dict) -> str:
    s = results["summary"]
    q = results["ecqx"]
    pct = lambda v: "" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    acc = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    rows: List[Sequence[str]] = [("model", "accuracy", "zeros", "bits/weight", "weight bytes", "host check")]
    rows.append(("float32 (Keras)", acc(s["float_accuracy"]), "0.0%", "32", f"{s['float_weight_bytes']:,}", ""))
    rows.append((f"{q['method'].upper()} {q['bits']}-bit (Keras QAT)", acc(s["ecqx_accuracy"]), pct(s["ecqx_sparsity"]),
                 f"{s['ecqx_entropy_bits_per_weight']:.2f} (entropy)", "", ""))
    for target in results["stages"]:
        st = results["stages"][target]
        if "error" in st:
            rows.append((target, "FAILED", "", "", "", st["error"][:70]))
    if "tflm_accuracy" in s:
        rows.append(("TFLM (.tflite, INT4)", acc(s["tflm_accuracy"]), "", "4",
                     f"{s['tflm_weight_bytes']:,} (flatbuffer {s['tflm_flatbuffer_bytes']:,}, arena {s['tflm_arena_bytes']:,})",
                     f"TFLM == simulator on {s['tflm_samples'] - s['tflm_vs_simulator_mismatches']}/{s['tflm_samples']}; "
                     f"argmax = float on {pct(s['tflm_float_argmax_agreement'])}"))
    if "fantastic4_blob_bytes" in s:
        ok = s["fantastic4_samples"] or 0
        bad = max(s["fantastic4_c_vs_python_mismatches"] or 0, s["fantastic4_python_vs_tflm_mismatches"] or 0)
        rows.append(("FantastIC4 C99 runtime", acc(s["fantastic4_accuracy"]), "",
                     f"{8 * s['fantastic4_bytes_per_weight']:.2f} (stored)", f"{s['fantastic4_blob_bytes']:,} (whole blob)",
                     f"C == Python == TFLM on {ok - bad}/{ok}; {s['fantastic4_multiplies']:,.0f} mul, "
                     f"{s['fantastic4_additions']:,.0f} add per inference"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from cli.common import Parser, add_common_arguments
    from ecqx_tf.config import BITS_RANGE, QUANT_METHODS, SEED_MAX, arg_float, arg_int

    ap = Parser(prog="ecqx-demo", description=__doc__)
    add_common_arguments(ap)
    ap.add_argument("--out", default="out/demo", help="output folder (written atomically)")
    ap.add_argument("--force", action="store_true",
                    help="replace --out even when it is a non-empty folder that ecqx-demo did not write (files it "
                         "did not write are kept in OUT.previous)")
    ap.add_argument("--float-epochs", type=arg_int(low=1), help=f"float training epochs, >= 1 (default {DEFAULTS['float_epochs']})")
    ap.add_argument("--qat-epochs", type=arg_int(low=1), help=f"ECQ/ECQx epochs, >= 1 (default {DEFAULTS['qat_epochs']})")
    ap.add_argument("--bits", type=arg_int(*BITS_RANGE), help=f"bit width, {BITS_RANGE[0]}..{BITS_RANGE[1]} (default {DEFAULTS['bits']})")
    ap.add_argument("--Lambda", type=arg_float(low=0),
                    help=f"rate hyper-parameter, a finite number >= 0 (default {DEFAULTS['Lambda']})")
    ap.add_argument("--method", choices=QUANT_METHODS, help=f"quantization method (default {DEFAULTS['method']})")
    ap.add_argument("--seed", type=arg_int(0, SEED_MAX), help=f"seed (default {DEFAULTS['seed']})")
    args = ap.parse_args(argv)
    from cli.common import run as run_command
    from cli.common import verbosity

    return run_command("ecqx-demo", lambda: _main(args, verbosity(args)), level=verbosity(args))


def _main(args: argparse.Namespace, level: int = 0) -> int:
    try:
        results = run(Path(args.out), force=args.force, verbose=0 if level < 0 else 2, float_epochs=args.float_epochs,
                      qat_epochs=args.qat_epochs, bits=args.bits, Lambda=args.Lambda, method=args.method, seed=args.seed)
    except (ValueError, TypeError, FileNotFoundError, PermissionError) as e:
        print(f"ecqx-demo: error: {e}", file=sys.stderr)
        return 2
    print()
    print(format_table(results))
    print(f"\nresults: {Path(args.out) / 'results.json'}  ({results['seconds']:.0f} s)")
    failed = failed_checks(results)
    for f in failed:
        print(f"ecqx-demo: FAILED: {f}", file=sys.stderr)
    return 1 if failed else 0


def failed_checks(results: dict) -> List[str]:
    """Stages that raised, whose exact host checks did not pass, or a quantized model whose
    weights all came out zero."""
    out = []
    q = results.get("ecqx", {})
    if q.get("sparsity", 0.0) >= 1.0:
        out.append(f"ecqx: every quantized weight is zero (Lambda {q.get('Lambda')}): the model predicts a constant; "
                   "lower --Lambda")
    for target, st in results["stages"].items():
        if "error" in st:
            out.append(f"{target}: {st['error']}")
            continue
        for part in ("export", "check"):
            if isinstance(st.get(part), dict) and st[part].get("ok") is False:
                out.append(f"{target} {part}: not bit-exact (see {target}/ in the output folder)")
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
