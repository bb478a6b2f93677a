"""``ecqx-compress``: apply a registered compression method to a saved float Keras model.

    ecqx-compress METHOD MODEL --data NAME --out DIR [method options] [--export TARGET]
    ecqx-compress relevance_pruning out/float/model.keras --data mnist_bundled --out out/prune \\
        --sparsity 0.7 --criterion deeplift --bits 4 --export fantastic4

Methods and their options come from ``ecqx_tf.methods.METHODS`` (``ecqx-compress METHOD --help``).
``ecq`` and ``ecqx`` run exactly what ``ecqx-quantize`` runs (same defaults, same files:
``qat_model.h5``, ``stripped.keras``, ``layer_stats.json``, ``metrics.json``). The other methods write
``model.keras`` (the plain compressed model: what the exporters take), ``quant.json``
(layer -> QuantizedKernel, the exact integers; empty for a float model), ``report.json`` (the
method's config and every measured figure), ``qat_model.h5`` when the model in training is an
ordinary ECQ model (``ecqx-export`` reads it), and with ``--export TARGET`` the target's files in
``DIR/TARGET``, and ``manifest.json`` (``"tool": "ecqx-compress"``, every file with its sha256).
The whole folder is written atomically; an existing ``DIR`` is replaced only when it is a previous
``ecqx-compress`` output (or with ``--force``), never when it is a file or holds the model or the
data. Exit codes: 0 ok, 1 the export's host check differs, 2 error.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["main", "build_parser"]

DEFAULT_CALIB = 256
DEFAULT_MAX_EVAL = 1000


def build_parser() -> argparse.ArgumentParser:
    from cli.common import Parser, add_common_arguments
    from ecqx_tf.config import arg_int
    from ecqx_tf.fields import add_field_arguments
    from ecqx_tf.methods.api import METHODS
    from firmware_export import TARGETS
    from models import datasets

    ap = Parser(prog="ecqx-compress", description=__doc__)
    add_common_arguments(ap)
    subs = ap.add_subparsers(dest="command", metavar="METHOD", required=True,
                             help=f"one of: {', '.join(METHODS.names())}")
    for name in METHODS.names():
        cls = METHODS.get(name)
        sub = subs.add_parser(name, help=cls.help, description=f"{name}: {cls.help}")
        add_common_arguments(sub, version_flag=False, defaults=False)
        sub.add_argument("model", metavar="MODEL", help="saved float Keras model (.keras or .h5)")
        sub.add_argument("--data", required=True, choices=datasets.names(), help="data set name")
        sub.add_argument("--data-path", help="folder of an on-disk data set")
        sub.add_argument("--out", required=True, metavar="DIR", help="output folder (written atomically)")
        sub.add_argument("--force", action="store_true",
                         help="replace --out even when it is a non-empty folder that ecqx-compress did not write "
                              "(files it did not write are kept in DIR.previous; a folder holding an input is never "
                              "replaced)")
        sub.add_argument("--export", choices=TARGETS.names(), metavar="TARGET",
                         help=f"also export to TARGET into DIR/TARGET: {', '.join(TARGETS.names())}")
        sub.add_argument("--name", default="model", help="base of the export's file names and C identifiers")
        sub.add_argument("--calib", type=arg_int(low=1), default=DEFAULT_CALIB, help="training samples for calibration")
        sub.add_argument("--max-eval", type=arg_int(low=1), default=DEFAULT_MAX_EVAL,
                         help="test samples in the export checks")
        add_field_arguments(sub.add_argument_group(f"options of {cls.name}"), cls)
    return ap


def _table(report: Dict[str, Any]) -> List[str]:
    lines = []
    w = max([5] + [len(r["layer"]) for r in report["layers"]])
    lines.append(f"{'layer'.ljust(w)}  {'shape':>16}  bits  zeros")
    for r in report["layers"]:
        lines.append(f"{r['layer'].ljust(w)}  {str(r['shape']):>16}  {r['bits']:>4}  {100 * r['zeros']:5.1f}%")
    lines.append(
        f"accuracy {report['accuracy']:.4f}; kernel weights {report['kernel_weights']:,} of "
        f"{report['original_kernel_weights']:,}; sparsity {100 * report['sparsity']:.1f}%; packed weight bytes "
        f"{report['packed_weight_bytes']:,}"
    )
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    from cli.common import run, verbosity

    args = build_parser().parse_args(argv)
    return run("ecqx-compress", lambda: _compress(args), level=verbosity(args))


def _compress(args: argparse.Namespace) -> int:
    status = 0
    try:
        import numpy as np

        from cli.common import check_input_file
        from ecqx_tf.io import atomic_output_dir, atomic_write_json, atomic_write_text, check_output_dir
        from ecqx_tf.methods.api import METHODS
        from ecqx_tf.quantized import info_to_json
        from models import datasets

        cls = METHODS.get(args.command)
        params = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
        method = cls(**params)
        if args.command in ("ecq", "ecqx"):  # the same run and files as ecqx-quantize
            return _quantize_like_ecqx_quantize(args, method)
        # every input checked before any work (and before TensorFlow is imported)
        check_input_file(args.model)
        datasets.check_data_args(args.data, args.data_path)
        inputs = [args.model, args.data_path]
        check_output_dir(args.out, "ecqx-compress", inputs, args.force)

        from ecqx_tf.keras.api import load_model, quantization_info, save_model

        data = datasets.load(args.data, **({"path": args.data_path} if args.data_path else {}))
        model = load_model(args.model)
        result = method.apply(model, data.x_train, data.y_train, data.x_test, data.y_test)
        with atomic_output_dir(args.out, "ecqx-compress", inputs, args.force) as out:
            save_model(result.model, out / "model.keras")
            atomic_write_text(out / "quant.json", info_to_json(result.quant) + "\n")
            files = ["model.keras", "quant.json", "report.json"]
            if result.qmodel is not None:
                try:
                    ordinary = quantization_info(result.qmodel) == result.quant
                except ValueError:
                    ordinary = False
                if ordinary:
                    save_model(result.qmodel, out / "qat_model.h5")
                    files.append("qat_model.h5")
            report = {"method": result.method, "model": str(args.model), "data": args.data, **result.report}
            if args.export:
                from firmware_export import ExportRequest, get_target

                target = get_target(args.export)
                request = ExportRequest.from_result(result, args.name, np.asarray(data.x_train[: args.calib], np.float32),
                                                data.x_test[: args.max_eval], data.y_test[: args.max_eval])
                (out / args.export).mkdir()
                summary = target.export(request, out / args.export)
                report["export"] = {k: v for k, v in summary.items() if k != "table"}
                files.append(args.export + "/")
                if not summary.get("ok", True):
                    status = 1
            report["files"] = files
            atomic_write_json(out / "report.json", report)
    except (ValueError, TypeError, FileNotFoundError, PermissionError) as e:
        print(f"ecqx-compress: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(_table(result.report)))
    if args.export:
        for label, value in summary.get("table", []):
            print(f"{label}: {value}")
    print(f"wrote {Path(args.out)}")
    if result.report.get("sparsity", 0.0) >= 1.0:
        print("ecqx-compress: WARNING: every kernel weight of the compressed model is zero: it predicts a constant; "
              "lower the method's strength (e.g. --Lambda or --sparsity). The files were written; exit code 1.",
              file=sys.stderr)
        status = max(status, 1)
    return status


def _quantize_like_ecqx_quantize(args: argparse.Namespace, method) -> int:
    """``ecqx-compress ecq|ecqx``: ``ecqx-quantize``'s run (``cli.quantize.quantize_to_folder``:
    same defaults, same files: ``qat_model.h5``, ``stripped.keras``, ``layer_stats.json``,
    ``metrics.json``), plus ``--export TARGET`` into ``DIR/TARGET``."""
    from cli.common import verbosity
    from cli.quantize import quantize_to_folder

    def export(folder: Path, ft, ds) -> int:
        if not args.export:
            return 0
        import numpy as np

        from ecqx_tf.keras.api import quantization_info
        from firmware_export import ExportRequest, get_target

        request = ExportRequest(model=ft.stripped, quant=quantization_info(ft.qmodel), name=args.name,
                                representative=np.asarray(ds.x_train[: args.calib], np.float32),
                                x_test=ds.x_test[: args.max_eval], y_test=ds.y_test[: args.max_eval],
                                options={"max_eval": args.max_eval})
        (folder / args.export).mkdir()
        summary = get_target(args.export).export(request, folder / args.export)
        for label, value in summary.get("table", []):
            print(f"{label}: {value}")
        return 0 if summary.get("ok", True) else 1

    return quantize_to_folder("ecqx-compress", args.model, args.data, args.data_path, args.out, args.force,
                              method.quantize_kwargs(), verbosity(args), extra=export)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
