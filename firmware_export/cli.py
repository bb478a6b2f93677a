"""``ecqx-export`` and ``ecqx-simulate``.

    ecqx-export MODEL --target tflm --out DIR [--data NAME] [--data-path P] [--compress] [--name NAME]
    ecqx-simulate DIR

``MODEL`` is a Keras file (``.keras`` or ``.h5``): a model in ECQ/ECQx training saved by
``ecqx_tf`` (read with ``ecqx_tf.load_model`` + ``quantization_info`` + ``strip``: its weight
integers are exported exactly), or a plain float model (int8 post-training quantization). The
data set calibrates the activations (``--calib`` training samples) and gives the golden vectors
and accuracies (``--max-eval`` test samples); without ``--data`` the calibration uses uniform
random inputs in [0, 1] and no accuracy is reported.

The whole ``--out`` folder is written atomically (a failed export leaves no folder and no
partial files; an existing folder is replaced only on success) and ends with ``manifest.json``:
``"tool": "ecqx-export"``, the target, the model file's checksum, the options, the target's
summary and every file written with its sha256 and size. ``--out`` must be a new or empty folder
or a previous ``ecqx-export`` output (recognised by that manifest); a file, a folder holding the
model or another input, or any other non-empty folder is refused before any work (exit code 2),
the last one unless ``--force``. Exit codes: 0 ok, 1 the export ran but a host check differs, 2
error.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["main", "simulate_main", "build_parser", "load_export_model", "write_manifest", "verify_manifest",
           "MANIFEST"]

MANIFEST = "manifest.json"
MODEL_SUFFIXES = (".keras", ".h5")
DEFAULT_CALIB = 256
DEFAULT_MAX_EVAL = 1000
RANDOM_CALIB = 256


def _progress(msg: str) -> None:
    print(f"ecqx-export: {msg}", file=sys.stderr, flush=True)


def _targets():
    from firmware_export import targets

    return targets.TARGETS


def _dataset_names() -> List[str]:
    from models import datasets

    return datasets.names()


def _target_epilog(targets) -> str:
    lines = ["targets:"]
    for name in targets.names():
        lines.append(f"  {name:<12} {targets.get(name).help}")
    lines.append("Options of a target are listed by `ecqx-export --target NAME --help`.")
    return "\n".join(lines)


def build_parser(target: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``ecqx-export`` parser; ``target`` adds that target's own options."""
    targets = _targets()
    ap = argparse.ArgumentParser(
        prog="ecqx-export", description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        epilog=_target_epilog(targets), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("model", metavar="MODEL", help="Keras model file (.keras or .h5)")
    ap.add_argument("--target", required=True, choices=targets.names(), help="export target")
    ap.add_argument("--out", required=True, metavar="DIR",
                    help="output folder (written atomically; a previous ecqx-export output is replaced)")
    ap.add_argument("--force", action="store_true",
                    help="replace --out even when it is a non-empty folder that ecqx-export did not write (files it "
                         "did not write are kept in DIR.previous; a folder holding an input, a file or a symbolic "
                         "link is never replaced)")
    ap.add_argument("--data", choices=_dataset_names(), metavar="NAME",
                    help=f"data set for calibration, golden vectors and accuracy: {', '.join(_dataset_names())}")
    ap.add_argument("--data-path", metavar="P", help="folder of an on-disk data set")
    ap.add_argument("--name", help="base of file names and C identifiers (default: from MODEL)")
    ap.add_argument("--calib", type=int, default=DEFAULT_CALIB, metavar="N",
                    help=f"training samples used for activation calibration (default {DEFAULT_CALIB})")
    ap.add_argument("--max-eval", type=int, default=DEFAULT_MAX_EVAL, metavar="N",
                    help=f"test samples for the host check and golden vectors (default {DEFAULT_MAX_EVAL})")
    if target in targets:
        group = ap.add_argument_group(f"options of target {target!r}")
        targets.get(target)().add_arguments(group)
    return ap


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--target")
    known, _ = pre.parse_known_args(argv)
    return build_parser(known.target).parse_args(argv)


def default_name(model_path: str) -> str:
    stem = Path(model_path).stem
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem).strip("_") or "model"
    return name if name[0].isalpha() else "m_" + name


# ----------------------------------------------------------------------------------------------
def load_export_model(path: str) -> Tuple[Any, Dict[str, Any], str]:
    """(stripped/plain Keras model, quantization info, kind) for ``path``.

    A model made by ``ecqx_tf.quantize`` gives its ``quantization_info`` and ``strip``'ed twin
    (kind ``"ecq"``); any other Keras model is exported as float (kind ``"float"``). When
    ``ecqx_tf`` lacks ``load_model``/``quantization_info``/``strip`` the file is read as a plain
    Keras model.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: wrong suffix, or not a loadable Keras model (corrupt, another format).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {str(p)!r}")
    if p.suffix not in MODEL_SUFFIXES:
        raise ValueError(f"model file {str(p)!r}: suffix {p.suffix!r} not accepted; accepted: {', '.join(MODEL_SUFFIXES)}")
    try:
        import ecqx_tf

        load, info, strip = ecqx_tf.load_model, ecqx_tf.quantization_info, ecqx_tf.strip
    except (ImportError, AttributeError):
        load = info = strip = None
    try:
        if load is not None:
            model = load(str(p))
        else:
            import tensorflow as tf

            model = tf.keras.models.load_model(str(p), compile=False)
    except FileNotFoundError:
        raise
    except Exception as e:  # corrupt zip/HDF5, not a model, unknown layers...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{str(p)!r} is not a loadable Keras model ({type(e).__name__}: {msg})") from None
    import tensorflow as tf

    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"{str(p)!r} does not hold a Keras model (got {type(model).__name__})")
    if info is not None:
        try:
            quant = info(model)
        except ValueError:
            return model, {}, "float"  # no ECQ-quantized layer
        try:
            stripped = strip(model)
        except Exception as e:  # a failure of the quantization side, reported with its cause
            raise ValueError(f"{str(p)!r}: ecqx_tf.strip failed ({type(e).__name__}: {e})") from e
        return stripped, dict(quant), "ecq"
    return model, {}, "float"


def _load_data(args, input_shape: Tuple[int, ...]):
    """(representative, x_test, y_test, description)."""
    if args.data is None:
        if args.data_path:
            raise ValueError("--data-path needs --data NAME")
        rng = np.random.default_rng(0)
        rep = rng.random((RANDOM_CALIB,) + tuple(input_shape), dtype=np.float32)
        return rep, None, None, {"name": None, "calibration": f"{RANDOM_CALIB} uniform random inputs in [0, 1] (seed 0)"}
    from models import datasets

    kw = {"path": args.data_path} if args.data_path else {}
    ds = datasets.load(args.data, **kw)

    def fit(x: np.ndarray, split: str) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if tuple(x.shape[1:]) == tuple(input_shape):
            return x
        if int(np.prod(x.shape[1:])) == int(np.prod(input_shape)):
            return x.reshape((len(x),) + tuple(input_shape))
        raise ValueError(
            f"data set {args.data!r} {split} samples have shape {list(x.shape[1:])}, the model takes {list(input_shape)}"
        )

    if args.calib <= 0 or args.max_eval <= 0:
        raise ValueError(f"--calib and --max-eval must be positive, got {args.calib} and {args.max_eval}")
    rep = fit(ds.x_train[: args.calib], "training")
    x_test = fit(ds.x_test[: args.max_eval], "test")
    y_test = np.asarray(ds.y_test[: args.max_eval])
    return rep, x_test, y_test, {"name": args.data, "path": args.data_path, "calibration_samples": int(len(rep)),
                                 "eval_samples": int(len(x_test))}


def write_manifest(folder: Path, content: Dict[str, Any]) -> Dict[str, Any]:
    """Write ``manifest.json`` listing every file under ``folder`` (sorted, except the manifest)
    with sha256 and size; deterministic (no dates, no absolute paths). ``content`` gets
    ``"tool": "ecqx-export"`` unless it names the tool (``ecqx_tf.io.write_manifest``)."""
    from ecqx_tf.io import write_manifest as _write

    return _write(folder, {"tool": "ecqx-export", **content})


def verify_manifest(folder: Path) -> Dict[str, Any]:
    """Read ``manifest.json`` and check every listed file's size and sha256.

    Raises:
        FileNotFoundError: no manifest.
        ValueError: unreadable manifest, or a file is missing or differs (naming it).
    """
    from ecqx_tf.io import sha256_file

    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no {MANIFEST}; is it an ecqx-export output folder?")
    try:
        manifest = json.loads(mpath.read_text())
        entries = manifest["files"]
        target = manifest["target"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{str(mpath)!r} is not an ecqx-export manifest ({type(e).__name__}: {e})") from None
    for e in entries:
        f = folder / e["path"]
        if not f.is_file():
            raise ValueError(f"{e['path']!r} listed in {MANIFEST} is missing")
        if f.stat().st_size != e["size"] or sha256_file(f) != e["sha256"]:
            raise ValueError(f"{e['path']!r} differs from its checksum in {MANIFEST}")
    if not isinstance(target, str):
        raise ValueError(f"{str(mpath)!r}: target must be a name, got {target!r}")
    return manifest


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if k != "table"}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _print_table(rows: List[Tuple[str, str]]) -> None:
    width = max(len(str(k)) for k, _ in rows)
    for k, v in rows:
        print(f"  {str(k):<{width}}  {v}")


def _summary_rows(summary: Dict[str, Any]) -> List[Tuple[str, str]]:
    if isinstance(summary.get("table"), list):
        return [(str(k), str(v)) for k, v in summary["table"]]
    return [(k, str(v)) for k, v in summary.items() if isinstance(v, (int, float, str, bool))]


def _layer_rows(summary: Dict[str, Any]) -> None:
    layers = summary.get("layers")
    if not isinstance(layers, list) or not layers or not isinstance(layers[0], dict) or "op" not in layers[0]:
        return
    print("  layers:")
    hdr = f"    {'layer':<20} {'op':<18} {'weights':>8} {'type':<12} {'bytes':>7} {'zeros':>6} {'values':>6}"
    print(hdr)
    for r in layers:
        print(f"    {r['layer'][:20]:<20} {r['op']:<18} {r['weights']:>8} {r['weight_type'][:12]:<12} "
              f"{r['weight_bytes']:>7} {100 * r['zeros']:>5.1f}% {r['distinct_values']:>6}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ecqx_tf.cli_common import run

    args = _parse(argv)
    return run("ecqx-export", lambda: _export(args))


def _export(args: argparse.Namespace) -> int:
    try:
        from ecqx_tf.io import atomic_output_dir, check_output_dir, remove_stale_partials, sha256_file
        from firmware_export.registry import ExportRequest
        from firmware_export.tflm.c_arrays import check_identifier

        t0 = time.time()
        targets = _targets()
        target = targets.get(args.target)()
        out = Path(args.out)
        inputs = [args.model, args.data_path]
        plan = check_output_dir(out, "ecqx-export", inputs, args.force)  # before any work; touches nothing
        remove_stale_partials(plan.final.parent)  # left by interrupted runs (marker, process gone)
        name = check_identifier(args.name) if args.name else default_name(args.model)

        _progress(f"[1/4] loading {args.model}")
        model, quant, kind = load_export_model(args.model)
        _progress(f"      {kind} model, {len(quant)} quantized layer(s)"
                  + (": " + ", ".join(f"{k} {q.bits}-bit {q.grid}" for k, q in quant.items()) if quant else ""))
        input_shape = tuple(int(d) for d in model.input_shape[1:])

        _progress("[2/4] loading data" + (f" {args.data}" if args.data else " (none: random calibration inputs)"))
        rep, x_test, y_test, data_desc = _load_data(args, input_shape)

        options = {k: v for k, v in vars(args).items()
                   if k not in ("model", "target", "out", "force", "data", "data_path", "name", "calib")}
        request = ExportRequest(model=model, quant=quant, name=name, representative=rep, x_test=x_test,
                                y_test=y_test, options=options)

        _progress(f"[3/4] exporting with target {args.target!r} to {out}")
        with atomic_output_dir(out, "ecqx-export", inputs, args.force) as tmp:
            summary = target.export(request, tmp)
            _progress("[4/4] writing manifest")
            manifest = write_manifest(tmp, {
                "tool": "ecqx-export",
                "target": args.target,
                "name": name,
                "model": {"file": Path(args.model).name, "sha256": sha256_file(args.model),
                          "size": Path(args.model).stat().st_size, "kind": kind,
                          "quantized_layers": sorted(quant)},
                "data": data_desc,
                "options": _jsonable(options),
                "summary": _jsonable(summary),
            })
        print(f"ecqx-export: {args.target} export of {args.model} -> {out} ({len(manifest['files']) + 1} files, "
              f"{time.time() - t0:.1f} s)")
        _print_table(_summary_rows(summary))
        _layer_rows(summary)
        ok = summary.get("ok", True)
        if not ok:
            print("ecqx-export: host check FAILED (see the table above and tflm_report.json)", file=sys.stderr)
            return 1
        return 0
    except (ValueError, TypeError, OSError, RuntimeError, NotImplementedError) as e:
        # OSError covers FileNotFoundError / PermissionError / a failed write; the output folder is
        # then left as it was (atomic_output_dir removed the partial one).
        print(f"ecqx-export: error: {e}", file=sys.stderr)
        return 2


def simulate_main(argv: Optional[Sequence[str]] = None) -> int:
    """``ecqx-simulate DIR``: verify the manifest's checksums, then run the target's host check."""
    from ecqx_tf.cli_common import run

    ap = argparse.ArgumentParser(prog="ecqx-simulate",
                                 description="Re-check an ecqx-export output folder on the host (dispatches by "
                                             "the target named in its manifest.json).")
    ap.add_argument("dir", metavar="DIR", help="an ecqx-export output folder")
    args = ap.parse_args(argv)
    return run("ecqx-simulate", lambda: _simulate(args))


def _simulate(args: argparse.Namespace) -> int:
    try:
        manifest = verify_manifest(Path(args.dir))
        target = _targets().get(manifest["target"])()
        result = target.simulate(Path(args.dir))
    except (ValueError, TypeError, OSError, NotImplementedError, RuntimeError) as e:
        print(f"ecqx-simulate: error: {e}", file=sys.stderr)
        return 2
    print(f"ecqx-simulate: {manifest['target']} export in {args.dir}: checksums ok")
    _print_table([(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in _jsonable(result).items()])
    return 0 if result.get("ok", False) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
