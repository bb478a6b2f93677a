"""``ecqx-quantize``: quantize a saved float Keras model with ECQ/ECQx on a named data set.

    ecqx-quantize out/float/model.keras --data mnist_bundled --bits 4 --method ecqx \\
        --Lambda 0.1 --epochs 3 --out out/ecqx

Writes ``qat_model.h5`` (the model in training: input of ``ecqx-export``), ``stripped.keras``
(plain Keras, kernels = centroids), ``layer_stats.json``, ``metrics.json`` and ``manifest.json``
(``"tool": "ecqx-quantize"``, every file with its sha256). The folder is written atomically; an
existing ``--out`` is replaced only when it is a previous ``ecqx-quantize`` output (or with
``--force``), never when it is a file or holds the model or the data.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]


def _names(text: str) -> list:
    """``--exclude a,b`` -> ["a", "b"] (one flag takes one value, so it never swallows MODEL)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected layer names separated by commas, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    from models import datasets

    from .cli_common import Parser, add_common_arguments
    from .config import BITS_RANGE, GRADIENTS, LAMBDA_REDUCE, LR_SCHEDULES, QUANT_METHODS, SEED_MAX, arg_float, arg_int
    from .grid import GRID_KINDS

    ap = Parser(prog="ecqx-quantize", description=__doc__)
    add_common_arguments(ap)
    ap.add_argument("model", help="saved float Keras model (.keras or .h5)")
    ap.add_argument("--data", required=True, choices=datasets.names(), help="data set name")
    ap.add_argument("--data-path", help="folder of an on-disk data set (mnist, cifar10, speech_commands)")
    ap.add_argument("--out", required=True, help="output folder (written atomically)")
    ap.add_argument("--force", action="store_true",
                    help="replace --out even when it is a non-empty folder that ecqx-quantize did not write (files it "
                         "did not write are kept in OUT.previous; a folder holding an input is never replaced)")
    ap.add_argument("--bits", type=arg_int(*BITS_RANGE), default=4, metavar="N",
                    help=f"bit width of every quantized kernel, {BITS_RANGE[0]}..{BITS_RANGE[1]}")
    ap.add_argument("--method", choices=QUANT_METHODS, default="ecqx",
                    help="ecq: entropy-constrained assignment; ecqx: ECQ with LRP relevance (sparser at equal accuracy)")
    ap.add_argument("--grid", choices=GRID_KINDS, default="symmetric",
                    help="symmetric: 2^b - 1 levels around 0 (exported exactly); paper: the authors' 2^b-level grid")
    ap.add_argument("--Lambda", type=arg_float(low=0), default=0.1, metavar="L",
                    help="rate hyper-parameter, a finite number >= 0 (larger = sparser); a run whose quantized weights "
                         "all come out zero ends with a warning and exit code 1")
    ap.add_argument("--p", type=arg_float(0, 1), default=0.1, metavar="P",
                    help="ECQx sparsity band, in [0, 1]: per layer, ECQx keeps its share of zeros between ECQ's "
                         "minus P and ECQ's")
    ap.add_argument("--gradient", choices=GRADIENTS, default="ste",
                    help="backward pass of the quantized kernel: ste (straight-through) or ec2t (|w_c| * g)")
    ap.add_argument("--lambda-reduce", choices=LAMBDA_REDUCE, default="min",
                    help="how the per-layer lambda reduces over the largest weights: min (thesis) or max (authors' code)")
    ap.add_argument("--epochs", type=arg_int(low=1), default=3, metavar="N", help="fine-tuning epochs, >= 1")
    ap.add_argument("--batch-size", type=arg_int(low=1), default=64, metavar="N", help="mini-batch size, >= 1")
    ap.add_argument("--lr", type=arg_float(low=0, low_open=True), default=1e-3, metavar="LR",
                    help="Adam learning rate, > 0")
    ap.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                    help="constant (as the authors) or cosine decay to 0 over the run")
    ap.add_argument("--refresh-every", type=arg_int(low=1), default=1, metavar="K",
                    help="re-assign the indices every K optimizer steps (1: every step, as the paper)")
    ap.add_argument("--exclude", type=_names, action="extend", default=[], metavar="LAYER[,LAYER...]",
                    help="layers to keep in float (repeat the flag or separate names with commas); default: none")
    ap.add_argument("--seed", type=arg_int(0, SEED_MAX), default=0, metavar="N",
                    help="seed of the initial state, the shuffling and the relevance samples")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .cli_common import run, verbosity

    args = build_parser().parse_args(argv)
    return run("ecqx-quantize", lambda: _quantize(args, verbosity(args)), level=verbosity(args))


def _quantize(args: argparse.Namespace, level: int = 0) -> int:
    try:
        from models import datasets

        from .cli_common import check_input_file, keras_verbosity
        from .io import atomic_output_dir, atomic_write_json, check_output_dir

        # every input checked before any work (and before TensorFlow is imported)
        check_input_file(args.model)
        datasets.check_data_args(args.data, args.data_path)
        inputs = [args.model, args.data_path]
        check_output_dir(args.out, "ecqx-quantize", inputs, args.force)

        from .keras import load_model, save_model
        from .keras.finetune import quantize_and_train

        data = datasets.load(args.data, **({"path": args.data_path} if args.data_path else {}))
        model = load_model(args.model)
        ft = quantize_and_train(
            model, data.x_train, data.y_train, data.x_test, data.y_test,
            bits=args.bits, method=args.method, Lambda=args.Lambda, p=args.p, grid=args.grid,
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_schedule=args.lr_schedule,
            refresh_every=args.refresh_every,
            exclude=args.exclude, seed=args.seed, verbose=keras_verbosity(level), gradient=args.gradient, lambda_reduce=args.lambda_reduce,
        )
        metrics = {
            "test_accuracy": ft.test_accuracy,
            "stripped_accuracy": ft.stripped_accuracy,
            "sparsity": ft.stats[-1]["sparsity"],
            "entropy_bits_per_weight": ft.stats[-1]["entropy"],
            "epoch_seconds": ft.epoch_seconds,
            "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
                     if k not in ("force", "quiet", "verbose")},
        }
        with atomic_output_dir(args.out, "ecqx-quantize", inputs, args.force) as out:
            save_model(ft.qmodel, out / "qat_model.h5")
            save_model(ft.stripped, out / "stripped.keras")
            atomic_write_json(out / "layer_stats.json", ft.stats)
            atomic_write_json(out / "metrics.json", metrics)
    except (ValueError, TypeError, FileNotFoundError, PermissionError) as e:
        print(f"ecqx-quantize: error: {e}", file=sys.stderr)
        return 2
    w = max(len(r["layer"]) for r in ft.stats)
    print(f"\n{'layer'.ljust(w)}  bits  zeros   entropy  used")
    for r in ft.stats:
        print(f"{r['layer'].ljust(w)}  {r['bits']:>4}  {100 * r['sparsity']:5.1f}%  {r['entropy']:7.3f}  {r['used_centroids']:>4}")
    print(f"\ntest accuracy {ft.test_accuracy:.4f}; wrote {Path(args.out)}")
    return all_zero_warning("ecqx-quantize", ft.stats[-1], args.Lambda)


def all_zero_warning(prog: str, total: dict, Lambda: float) -> int:
    """Exit code for a finished quantization: 1 with a loud warning when every quantized weight
    came out zero (the model then predicts a constant), else 0. ``total`` is the ``"<total>"``
    row of ``ecqx_tf.layer_stats``."""
    if total.get("sparsity", 0.0) < 1.0:
        return 0
    print(f"{prog}: WARNING: all {total.get('n_weights', 0):,} quantized weights are zero: the model "
          f"predicts a constant. --Lambda {Lambda:g} is too large for this model and data; lower it (the sparsity "
          "grows with Lambda; the default is 0.1). The files were written; exit code 1.", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
