"""``ecqx-train``: train a zoo model in float on a data set (``models.train.train_float``).

    ecqx-train --model mnist_mlp --data mnist_bundled --epochs 10 --out out/float \\
        [--data-path PATH] [--seed 0] [--batch-size 64] [--lr 1e-3] [--patience 3]

Writes ``OUT/model.keras``, ``OUT/metrics.json`` and ``OUT/manifest.json``; the folder is written
atomically. Exit codes: 0 ok, 2 bad input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from models import datasets as _datasets
from models.names import ZOO_MODELS
from models.train import DEFAULT_EPOCHS

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from cli.common import Parser, add_common_arguments
    from ecqx_tf.config import SEED_MAX, arg_float, arg_int

    p = Parser(
        prog="ecqx-train",
        description="Train a zoo model in float on a data set (reproducible from --seed); writes\n"
        "OUT/model.keras, OUT/metrics.json and OUT/manifest.json. OUT is written atomically and replaced\n"
        "only when it is a previous ecqx-train output (or with --force), never when it is a file or\n"
        "holds the data.",
    )
    add_common_arguments(p)
    p.add_argument("--model", required=True, choices=ZOO_MODELS, help="zoo model name")
    p.add_argument("--data", required=True, choices=_datasets.names(), help="data set name")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--force", action="store_true",
                   help="replace --out even when it is a non-empty folder that ecqx-train did not write (files it "
                        "did not write are kept in OUT.previous; a folder holding an input is never replaced)")
    p.add_argument("--data-path", default=None, help="folder/file of an on-disk data set")
    p.add_argument("--epochs", type=arg_int(low=1), default=DEFAULT_EPOCHS,
                   help=f"max epochs, >= 1 (default {DEFAULT_EPOCHS})")
    p.add_argument("--seed", type=arg_int(0, SEED_MAX), default=0, help="random seed (default 0)")
    p.add_argument("--batch-size", type=arg_int(low=1), default=64, help="batch size, >= 1 (default 64)")
    p.add_argument("--lr", type=arg_float(low=0, low_open=True), default=1e-3,
                   help="Adam learning rate, > 0 (default 1e-3)")
    p.add_argument("--patience", type=arg_int(low=0), default=3, help="early-stopping patience, >= 0 (default 3)")
    p.add_argument("--validation-split", type=arg_float(0, 1, high_open=True), default=0.1,
                   help="fraction of training inputs held out for validation, in [0, 1) (default 0.1)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``ecqx-train`` entry point: 0 ok; bad input: one line on stderr and 2."""
    from cli.common import run, verbosity

    parser = build_parser()
    args = parser.parse_args(argv)
    return run("ecqx-train", lambda: _train(args, verbosity(args)), level=verbosity(args))


def _train(args: argparse.Namespace, level: int = 0) -> int:
    """The command's work; bad input raises ValueError/TypeError/OSError (one line, exit code 2)."""
    from cli.common import keras_verbosity
    from ecqx_tf.io import atomic_output_dir, atomic_write_json, check_output_dir
    from models.train import save_model_atomic, train_float

    inputs = [args.data_path]
    # every input checked before any work
    _datasets.check_data_args(args.data, args.data_path)
    check_output_dir(args.out, "ecqx-train", inputs, args.force)
    result = train_float(
        args.model,
        args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        out_dir=None,
        patience=args.patience,
        verbose=keras_verbosity(level),
        validation_split=args.validation_split,
        data_path=args.data_path,
    )
    with atomic_output_dir(args.out, "ecqx-train", inputs, args.force) as tmp:
        save_model_atomic(result.model, tmp / "model.keras")
        atomic_write_json(tmp / "metrics.json", result.metrics)
    out = Path(args.out)
    m = result.metrics
    print(
        f"{args.model} on {args.data}: test accuracy {result.test_accuracy:.4f}, "
        f"test loss {result.test_loss:.4f}, {result.epochs_run} epochs run (best {result.best_epoch}), "
        f"{result.param_count:,} parameters, seed {result.seed}, {m['seconds']:.1f} s"
    )
    print(f"wrote {out / 'model.keras'} and {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
