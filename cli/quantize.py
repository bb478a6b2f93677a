"""``ecqx-quantize``: quantize a saved float Keras model with ECQ/ECQx on a named data set.

    ecqx-quantize out/float/model.keras --data mnist_bundled --bits 4 --method ecqx \\
        --Lambda 0.05 --epochs 3 --out out/ecqx

Writes ``qat_model.h5`` (the model in training: input of ``ecqx-export``), ``stripped.keras``
(plain Keras, kernels = centroids), ``layer_stats.json``, ``metrics.json`` and ``manifest.json``
(``"tool": "ecqx-quantize"``, every file with its sha256). The folder is written atomically; an
existing ``--out`` is replaced only when it is a previous ``ecqx-quantize`` output (or with
``--force``), never when it is a file or holds the model or the data. The defaults are the
authors' (``ecqx_tf.config.ECQ_DEFAULTS``, shared with ``ecqx-compress ecq|ecqx`` and the Python
API); ``ecqx-compress ecqx`` writes the same files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

__all__ = ["main", "build_parser", "quantize_to_folder", "QUANTIZE_PARAMS"]


def _names(text: str) -> list:
    """``--exclude a,b`` -> ["a", "b"] (one flag takes one value, so it never swallows MODEL)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected layer names separated by commas, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    from cli.common import Parser, add_common_arguments
    from ecqx_tf.config import (
        BITS_RANGE,
        ECQ_DEFAULTS,
        GRADIENTS,
        LAMBDA_REDUCE,
        LR_SCHEDULES,
        QUANT_METHODS,
        SEED_MAX,
        arg_float,
        arg_int,
    )
    from models import datasets

    d = ECQ_DEFAULTS  # one set of defaults for ecqx-quantize, ecqx-compress ecq|ecqx and the Python API
    from ecqx_tf.grid import GRID_KINDS

    ap = Parser(prog="ecqx-quantize", description=__doc__)
    add_common_arguments(ap)
    ap.add_argument("model", help="saved float Keras model (.keras or .h5)")
    ap.add_argument("--data", required=True, choices=datasets.names(), help="data set name")
    ap.add_argument("--data-path", help="folder of an on-disk data set (mnist, cifar10, speech_commands)")
    ap.add_argument("--out", required=True, help="output folder (written atomically)")
    ap.add_argument("--force", action="store_true",
                    help="replace --out even when it is a non-empty folder that ecqx-quantize did not write (files it "
                         "did not write are kept in OUT.previous; a folder holding an input is never replaced)")
    ap.add_argument("--bits", type=arg_int(*BITS_RANGE), default=d["bits"], metavar="N",
                    help=f"bit width of every quantized kernel, {BITS_RANGE[0]}..{BITS_RANGE[1]}")
    ap.add_argument("--method", choices=QUANT_METHODS, default=d["method"],
                    help="ecq: entropy-constrained assignment; ecqx: ECQ with LRP relevance (sparser at equal accuracy)")
    ap.add_argument("--grid", choices=GRID_KINDS, default=d["grid"],
                    help="symmetric: 2^b - 1 levels around 0 (exported exactly); paper: the authors' 2^b-level grid")
    ap.add_argument("--Lambda", type=arg_float(low=0), default=d["Lambda"], metavar="L",
                    help="rate hyper-parameter, a finite number >= 0 (larger = sparser); a run whose quantized weights "
                         "all come out zero ends with a warning and exit code 1")
    ap.add_argument("--p", type=arg_float(0, 1), default=d["p"], metavar="P",
                    help="ECQx sparsity band, in [0, 1]: per layer, ECQx keeps its share of zeros between ECQ's "
                         "minus P and ECQ's")
    ap.add_argument("--gradient", choices=GRADIENTS, default=d["gradient"],
                    help="backward pass of the quantized kernel: ste (straight-through) or ec2t (|w_c| * g)")
    ap.add_argument("--lambda-reduce", choices=LAMBDA_REDUCE, default=d["lambda_reduce"],
                    help="how the per-layer lambda reduces over the largest weights: min (thesis) or max (authors' code)")
    ap.add_argument("--epochs", type=arg_int(low=1), default=d["epochs"], metavar="N", help="fine-tuning epochs, >= 1")
    ap.add_argument("--batch-size", type=arg_int(low=1), default=d["batch_size"], metavar="N", help="mini-batch size, >= 1")
    ap.add_argument("--lr", type=arg_float(low=0, low_open=True), default=d["lr"], metavar="LR",
                    help="Adam learning rate, > 0")
    ap.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d["lr_schedule"],
                    help="constant (as the authors) or cosine decay to 0 over the run")
    ap.add_argument("--refresh-every", type=arg_int(low=1), default=d["refresh_every"], metavar="K",
                    help="re-assign the indices every K optimizer steps (1: every step, as the paper)")
    ap.add_argument("--relevance-samples", type=arg_int(low=1), default=d["relevance_samples"], metavar="N",
                    help="ECQx: training samples (a fixed seeded subset) whose LRP relevances steer the assignment")
    ap.add_argument("--exclude", type=_names, action="extend", default=[], metavar="LAYER[,LAYER...]",
                    help="layers to keep in float (repeat the flag or separate names with commas); default: none")
    ap.add_argument("--seed", type=arg_int(0, SEED_MAX), default=d["seed"], metavar="N",
                    help="seed of the initial state, the shuffling and the relevance samples")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    from cli.common import run, verbosity

    args = build_parser().parse_args(argv)
    params = {k: getattr(args, k) for k in QUANTIZE_PARAMS}
    return run("ecqx-quantize", lambda: quantize_to_folder(
        "ecqx-quantize", args.model, args.data, args.data_path, args.out, args.force, params, verbosity(args)),
        level=verbosity(args))


#: The training parameters of ``ecqx-quantize`` (``quantize_and_train`` arguments), recorded in
#: ``metrics.json`` under ``args`` by both command lines that quantize with ECQ/ECQx.
QUANTIZE_PARAMS = ("bits", "method", "grid", "Lambda", "p", "gradient", "lambda_reduce", "epochs", "batch_size",
                   "lr", "lr_schedule", "refresh_every", "relevance_samples", "exclude", "seed")


def quantize_to_folder(prog: str, model_path: str, data: str, data_path: Optional[str], out: str, force: bool,
                       params: Mapping[str, Any], level: int = 0,
                       extra: Optional[Callable[[Path, Any, Any], int]] = None) -> int:
    """What ``ecqx-quantize`` and ``ecqx-compress ecq|ecqx`` do, so that both write the same files
    from the same defaults: check the inputs, ``quantize_and_train`` with ``params`` (missing ones
    from ``ECQ_DEFAULTS``), then write ``qat_model.h5``, ``stripped.keras``, ``layer_stats.json``,
    ``metrics.json`` (and the manifest) atomically into ``out``. ``extra(folder, result, data)``
    may add files to the same folder (``ecqx-compress --export``) and returns an exit code.

    Returns the exit code: 0, or 1 when ``extra`` says so or every quantized weight is zero.
    Bad input raises ``ValueError``/``TypeError``/``OSError`` before any work.
    """
    from cli.common import check_input_file, keras_verbosity
    from ecqx_tf.config import ECQ_DEFAULTS
    from ecqx_tf.io import atomic_output_dir, atomic_write_json, check_output_dir
    from models import datasets

    params = {**{k: v for k, v in ECQ_DEFAULTS.items()}, "exclude": [], **params}
    # every input checked before any work (and before TensorFlow is imported)
    check_input_file(model_path)
    datasets.check_data_args(data, data_path)
    inputs = [model_path, data_path]
    check_output_dir(out, prog, inputs, force)

    from ecqx_tf.keras import load_model, save_model
    from ecqx_tf.keras.finetune import quantize_and_train

    ds = datasets.load(data, **({"path": data_path} if data_path else {}))
    model = load_model(model_path)
    ft = quantize_and_train(model, ds.x_train, ds.y_train, ds.x_test, ds.y_test, verbose=keras_verbosity(level),
                            **{k: (tuple(v) if k == "exclude" else v) for k, v in params.items()})
    metrics = {
        "test_accuracy": ft.test_accuracy,
        "stripped_accuracy": ft.stripped_accuracy,
        "sparsity": ft.stats[-1]["sparsity"],
        "entropy_bits_per_weight": ft.stats[-1]["entropy"],
        "epoch_seconds": ft.epoch_seconds,
        "args": {"model": str(model_path), "data": data, "data_path": data_path,
                 **{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in sorted(params.items())}},
    }
    status = 0
    with atomic_output_dir(out, prog, inputs, force) as folder:
        save_model(ft.qmodel, folder / "qat_model.h5")
        save_model(ft.stripped, folder / "stripped.keras")
        atomic_write_json(folder / "layer_stats.json", ft.stats)
        atomic_write_json(folder / "metrics.json", metrics)
        if extra is not None:
            status = extra(folder, ft, ds)
    w = max(len(r["layer"]) for r in ft.stats)
    print(f"\n{'layer'.ljust(w)}  bits  zeros   entropy  used")
    for r in ft.stats:
        print(f"{r['layer'].ljust(w)}  {r['bits']:>4}  {100 * r['sparsity']:5.1f}%  {r['entropy']:7.3f}  {r['used_centroids']:>4}")
    print(f"\ntest accuracy {ft.test_accuracy:.4f}; wrote {Path(out)}")
    return max(status, all_zero_warning(prog, ft.stats[-1], params["Lambda"]))


def all_zero_warning(prog: str, total: dict, Lambda: float) -> int:
    """Exit code for a finished quantization: 1 with a loud warning when every quantized weight
    came out zero (the model then predicts a constant), else 0. ``total`` is the ``"<total>"``
    row of ``ecqx_tf.layer_stats``."""
    from ecqx_tf.config import ECQ_DEFAULTS

    if total.get("sparsity", 0.0) < 1.0:
        return 0
    print(f"{prog}: WARNING: all {total.get('n_weights', 0):,} quantized weights are zero: the model "
          f"predicts a constant. --Lambda {Lambda:g} is too large for this model and data; lower it (the sparsity "
          f"grows with Lambda; the default is {ECQ_DEFAULTS['Lambda']:g}). The files were written; exit code 1.",
          file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
