"""``ecqx-demo`` (``make demo``): the main job on the embedded default, the bundled MNIST subset.

Stages, each writing under ``--out`` (default ``out/demo/``):

1. ``float/``: the zoo's ``mnist_mlp`` (784-256-128-10) trained in float (``model.keras``).
2. ``ecqx/``: quantized with ECQx at 4 bits and fine-tuned (``qat_model.h5``, ``stripped.keras``,
   ``layer_stats.json``).
3. ``tflm/``: exported for TensorFlow Lite Micro and checked on the real TFLM interpreter.
4. ``fantastic4/``: exported to the packed 4-bit sparse format, built and run as C on the host.

Everything ends in ``results.json`` (machine-readable) and a printed summary table.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

__all__ = ["main", "run", "DEFAULTS"]

log = logging.getLogger("ecqx.demo")

DEFAULTS = dict(
    model="mnist_mlp",
    data="mnist_bundled",
    float_epochs=10,
    bits=4,
    method="ecqx",
    Lambda=0.1,
    p=0.1,
    qat_epochs=3,
    refresh_every=1,
    seed=0,
)


def _versions() -> dict:
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


def _stage_export(target_name: str, request, out_dir: Path) -> dict:
    from ecqx_tf.io import atomic_output_dir
    from firmware_export import targets  # noqa: F401  (registers the targets)
    from firmware_export.registry import TARGETS

    target = TARGETS.get(target_name)()
    with atomic_output_dir(out_dir) as tmp:
        summary = target.export(request, tmp)
    checked = target.simulate(out_dir) if hasattr(target, "simulate") else None
    return {"export": summary, "check": checked}


def run(out: Path, **kw) -> dict:
    import tensorflow as tf

    from ecqx_tf import save_model
    from ecqx_tf.io import atomic_write_json, check_writable_dir
    from ecqx_tf.keras.finetune import quantize_and_train
    from models import datasets
    from models.train import train_float

    cfg = {**DEFAULTS, **{k: v for k, v in kw.items() if v is not None}}
    out = check_writable_dir(out)
    t0 = time.perf_counter()
    data = datasets.load(cfg["data"])
    results = {"config": cfg, "dataset": data.summary(), "versions": _versions(), "stages": {}}

    log.info("[1/4] float training of %s on %s", cfg["model"], cfg["data"])
    fl = train_float(cfg["model"], data, epochs=cfg["float_epochs"], seed=cfg["seed"], out_dir=out / "float", verbose=2)
    results["float"] = {"test_accuracy": fl.test_accuracy, "params": fl.param_count,
                        "weight_bytes_float32": int(sum(np.prod(w.shape) for w in fl.model.weights) * 4),
                        "seconds": fl.seconds}

    log.info("[2/4] %s at %d bits, Lambda %.3g", cfg["method"].upper(), cfg["bits"], cfg["Lambda"])
    ft = quantize_and_train(
        fl.model, data.x_train, data.y_train, data.x_test, data.y_test,
        bits=cfg["bits"], method=cfg["method"], Lambda=cfg["Lambda"], p=cfg["p"],
        epochs=cfg["qat_epochs"], refresh_every=cfg["refresh_every"], seed=cfg["seed"], verbose=2,
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

    from ecqx_tf import quantization_info
    from firmware_export.registry import ExportRequest

    request = ExportRequest(
        model=ft.stripped, quant=quantization_info(ft.qmodel), name="mnist_mlp",
        representative=data.x_train[:500], x_test=data.x_test, y_test=data.y_test,
    )
    for i, target in enumerate(("tflm", "fantastic4"), start=3):
        log.info("[%d/4] export --target %s", i, target)
        try:
            results["stages"][target] = _stage_export(target, request, out / target)
        except Exception as e:  # report, never hide: the table shows the failure
            log.exception("export to %s failed", target)
            results["stages"][target] = {"error": f"{type(e).__name__}: {e}"}
    results["seconds"] = time.perf_counter() - t0
    atomic_write_json(out / "results.json", results)
    return results


def format_table(results: dict) -> str:
    rows: List[Sequence[str]] = [("", "accuracy", "zeros", "bits/weight (entropy)", "weights")]
    fl, q = results["float"], results["ecqx"]
    rows.append(("float32", f"{fl['test_accuracy']:.4f}", "0.0%", "32", f"{fl['weight_bytes_float32']:,} B"))
    rows.append((f"{q['method'].upper()} {q['bits']}-bit (QAT)", f"{q['test_accuracy']:.4f}",
                 f"{100 * q['sparsity']:.1f}%", f"{q['entropy_bits_per_weight']:.2f}", ""))
    for target, st in results["stages"].items():
        if "error" in st:
            rows.append((target, "FAILED", "", "", st["error"][:60]))
            continue
        ex = st.get("export") or {}
        ck = st.get("check") or {}
        acc = ck.get("accuracy", ex.get("accuracy"))
        agree = ck.get("agreement", ex.get("agreement"))
        rows.append((target, f"{acc:.4f}" if isinstance(acc, float) else str(acc or ""), "",
                     f"agree {agree}" if agree is not None else "",
                     f"{ex.get('weight_bytes', '')} B" if ex.get("weight_bytes") else ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="ecqx-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    ap.add_argument("--float-epochs", type=int)
    ap.add_argument("--qat-epochs", type=int)
    ap.add_argument("--bits", type=int)
    ap.add_argument("--Lambda", type=float)
    ap.add_argument("--method", choices=("ecq", "ecqx"))
    ap.add_argument("--seed", type=int)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        results = run(Path(args.out), float_epochs=args.float_epochs, qat_epochs=args.qat_epochs, bits=args.bits,
                      Lambda=args.Lambda, method=args.method, seed=args.seed)
    except (ValueError, TypeError, FileNotFoundError, PermissionError) as e:
        print(f"ecqx-demo: error: {e}", file=sys.stderr)
        return 2
    print()
    print(format_table(results))
    print(f"\nresults: {Path(args.out) / 'results.json'}  ({results['seconds']:.0f} s)")
    failed = [t for t, st in results["stages"].items() if "error" in st]
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
