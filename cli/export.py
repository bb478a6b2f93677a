"""``ecqx-export`` and ``ecqx-simulate``.

    ecqx-export MODEL --target tflm --out DIR (--data NAME [--data-path P] | --calib-data FILE | --random-calibration)
    ecqx-simulate DIR

``MODEL`` is a Keras file (``.keras`` or ``.h5``): a model in ECQ/ECQx training saved by
``ecqx_tf`` (read with ``ecqx_tf.load_model`` + ``quantization_info`` + ``strip``: its weight
integers are exported exactly), or a plain float model (int8 post-training quantization). The
activations are calibrated on real inputs: a data set (``--data``: ``--calib`` training samples
calibrate, ``--max-eval`` test samples give the golden vectors, the host check and the accuracy)
or your own file (``--calib-data``: the first ``--calib`` rows calibrate, the next ``--max-eval``
rows are the golden vectors; with labels ``y`` the accuracy is reported). Without either the
export refuses, unless ``--random-calibration`` asks for uniform random inputs in [0, 1]. The
manifest (``data``) and the printed table say which data calibrated the model.

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
import dataclasses
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["main", "simulate_main", "build_parser", "build_simulate_parser", "load_export_model", "write_manifest",
           "verify_manifest", "check_export_folder", "probe_tflm", "EXPORT_CHECKS", "MANIFEST"]

MANIFEST = "manifest.json"
MODEL_SUFFIXES = (".keras", ".h5")
DEFAULT_CALIB = 256
DEFAULT_MAX_EVAL = 1000
RANDOM_CALIB = 256


def _progress(msg: str) -> None:
    """A progress line on stderr (hidden by ``-q``)."""
    logging.getLogger("ecqx-export").info("ecqx-export: %s", msg)


EXPORT_DESCRIPTION = """\
Export a Keras model for a microcontroller target, check the result on the host, and write
everything into one folder (DIR, written atomically, ending with manifest.json).

MODEL is a .h5 saved by ecqx-quantize (a model in ECQ/ECQx training: its weight integers are
exported exactly) or a plain float Keras model (.keras/.h5, int8 post-training quantization).
The activations are calibrated on real inputs: a data set (--data), or your own inputs
(--calib-data); without either the export refuses unless --random-calibration.

DIR must be new, empty or a previous ecqx-export output; a file, a folder holding an input or
any other non-empty folder is refused before any work (the last one unless --force)."""


def _targets():
    from firmware_export import TARGETS

    return TARGETS


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
    from cli.common import Parser, add_common_arguments
    from ecqx_tf.config import arg_int

    targets = _targets()
    ap = Parser(
        prog="ecqx-export", description=EXPORT_DESCRIPTION, epilog=_target_epilog(targets),
        usage="%(prog)s MODEL --target {" + ",".join(targets.names()) + "} --out DIR\n"
              "       (--data NAME [--data-path P] | --calib-data FILE | --random-calibration) [options]\n"
              "       [options of the target: ecqx-export --target NAME --help]",
    )
    add_common_arguments(ap)
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
    ap.add_argument("--calib-data", metavar="FILE",
                    help="your own inputs instead of a data set: a .npy float array (N, *input shape) or (N, prod(input "
                         "shape)), or a .npz with x and optionally y (integer labels, for the accuracy); the first "
                         "--calib rows calibrate, the next --max-eval rows are the golden vectors and the host check")
    ap.add_argument("--random-calibration", action="store_true",
                    help="without --data or --calib-data, calibrate on uniform random inputs in [0, 1] (only for "
                         "models whose inputs look like that; the host check then runs on the same noise)")
    ap.add_argument("--name", help="base of file names and C identifiers (default: from MODEL)")
    ap.add_argument("--calib", type=arg_int(low=1), default=DEFAULT_CALIB, metavar="N",
                    help=f"training samples used for activation calibration (default {DEFAULT_CALIB})")
    ap.add_argument("--max-eval", type=arg_int(low=1), default=DEFAULT_MAX_EVAL, metavar="N",
                    help=f"test samples for the host check and golden vectors (default {DEFAULT_MAX_EVAL})")
    if target in targets:
        group = ap.add_argument_group(f"options of target {target!r}")
        targets.get(target)().add_arguments(group)
    return ap


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    from cli.common import Parser

    argv = list(sys.argv[1:] if argv is None else argv)
    pre = Parser(prog="ecqx-export", add_help=False)
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
    (kind: its quantization method, ``"ecqx"`` or ``"ecq"``; ``"ecq+ecqx"`` if its layers mix
    them); any other Keras model is exported as float (kind ``"float"``). When
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
        return stripped, dict(quant), _quantization_kind(model)
    return model, {}, "float"


CALIB_SUFFIXES = (".npy", ".npz")


def read_calib_file(path: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``--calib-data FILE``: (x, y) from a ``.npy`` array of inputs, or a ``.npz`` with ``x`` and
    optionally ``y`` (integer class labels, one per row). Read without pickles; checked before
    any work: numeric, finite, at least one row, labels 1-D integers >= 0 (floats holding whole
    numbers are accepted).

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file and what is wrong.
    """
    import struct
    import zipfile
    import zlib

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--calib-data file not found: {str(p)!r}")
    if p.suffix not in CALIB_SUFFIXES:
        raise ValueError(f"--calib-data {str(p)!r}: suffix {p.suffix!r} not accepted; accepted: "
                         f"{', '.join(CALIB_SUFFIXES)} (an array of model inputs, or x and optionally y)")
    names: List[str] = []
    try:
        loaded = np.load(p, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as z:
                names = list(z.files)
                x = np.asarray(z["x"]) if "x" in names else None
                y = np.asarray(z["y"]) if "y" in names else None
        else:
            x, y = np.asarray(loaded), None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, struct.error, zlib.error,
            UnicodeDecodeError) as e:
        raise ValueError(f"--calib-data {str(p)!r} is not a readable {p.suffix} file "
                         f"({type(e).__name__}: {str(e) or 'truncated'})") from None
    if x is None:
        raise ValueError(f"--calib-data {str(p)!r} has no array 'x' (arrays: {', '.join(names) or 'none'}); a .npz "
                         "needs x (inputs) and optionally y (labels)")
    if x.dtype.kind not in "iuf" or x.ndim < 1:
        raise ValueError(f"--calib-data {str(p)!r}: x must be a numeric (integer or float) array of inputs with one "
                         f"row per sample, got dtype {x.dtype} shape {list(x.shape)}")
    if len(x) == 0:
        raise ValueError(f"--calib-data {str(p)!r}: x has no rows")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x)))
        raise ValueError(f"--calib-data {str(p)!r}: x holds {bad} NaN or infinite value(s) (after conversion to float32)")
    if y is not None:
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"--calib-data {str(p)!r}: y must hold one class label per row of x ({len(x)}), got "
                             f"shape {list(y.shape)}")
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        if y.dtype.kind not in "iu" or (y.size and int(y.min()) < 0):
            raise ValueError(f"--calib-data {str(p)!r}: y must be integer class labels >= 0, got dtype {y.dtype}"
                             + (f", min {y.min()}" if y.size and y.dtype.kind in "iuf" else ""))
        y = y.astype(np.int64)
    return x, y


def _fit_shape(x: np.ndarray, input_shape: Tuple[int, ...], what: str) -> np.ndarray:
    """``x`` as ``(n, *input_shape)``: as is, or reshaped from ``(n, prod(input_shape))`` (any
    layout with the same number of values per row)."""
    x = np.asarray(x, np.float32)
    if tuple(x.shape[1:]) == tuple(input_shape):
        return x
    if x.ndim >= 2 and int(np.prod(x.shape[1:])) == int(np.prod(input_shape)):
        return x.reshape((len(x),) + tuple(input_shape))
    raise ValueError(f"{what} rows have shape {list(x.shape[1:])} ({int(np.prod(x.shape[1:]))} values), the model "
                     f"takes {list(input_shape)} ({int(np.prod(input_shape))} values)")


def _split_rows(n: int, calib: int, max_eval: int) -> Tuple[slice, slice, bool]:
    """Rows of a user's file: the first ``calib`` calibrate; the following ``max_eval`` are the
    golden vectors and the host check; when no row is left after the calibration rows, the first
    ``max_eval`` rows are used (overlapping the calibration rows: said in the manifest)."""
    c = min(calib, n)
    if n > c:
        return slice(0, c), slice(c, min(n, c + max_eval)), False
    return slice(0, c), slice(0, min(n, max_eval)), True


def _quantization_kind(model) -> str:
    """``"ecqx"``, ``"ecq"`` (or ``"ecq+ecqx"``): the methods of the model's ECQ-quantized layers."""
    try:
        from ecqx_tf.keras.api import ecq_layers

        methods = sorted({str(slot.config.method) for slot in ecq_layers(model)})
    except (ImportError, AttributeError):  # pragma: no cover - a quantization side without methods
        methods = []
    return "+".join(methods) or "ecq"


def _load_data(args, input_shape: Tuple[int, ...], calib: Optional[Tuple[np.ndarray, Optional[np.ndarray]]] = None):
    """(representative, x_test, y_test, description): from ``--calib-data`` (``calib``, read by
    :func:`read_calib_file`), a data set (``--data``), or uniform random inputs
    (``--random-calibration``)."""
    if calib is not None:
        x, y = calib
        x = _fit_shape(x, input_shape, f"--calib-data {args.calib_data!r}")
        cal, ev, overlap = _split_rows(len(x), args.calib, args.max_eval)
        from ecqx_tf.io import sha256_file

        desc = {"source": "file", "file": Path(args.calib_data).name, "sha256": sha256_file(args.calib_data),
                "rows": int(len(x)), "labels": y is not None,
                "calibration_rows": [cal.start, cal.stop], "eval_rows": [ev.start, ev.stop],
                "eval_overlaps_calibration": overlap,
                "calibration": f"rows {cal.start}..{cal.stop - 1} of {Path(args.calib_data).name}"}
        return x[cal], x[ev], (None if y is None else y[ev]), desc
    if args.data is None:
        rng = np.random.default_rng(0)
        rep = rng.random((RANDOM_CALIB,) + tuple(input_shape), dtype=np.float32)
        return rep, None, None, {"source": "random", "name": None,
                                 "calibration": f"{RANDOM_CALIB} uniform random inputs in [0, 1] (seed 0)"}
    from models import datasets

    kw = {"path": args.data_path} if args.data_path else {}
    ds = datasets.load(args.data, **kw)
    rep = _fit_shape(ds.x_train[: args.calib], input_shape, f"data set {args.data!r} training")
    x_test = _fit_shape(ds.x_test[: args.max_eval], input_shape, f"data set {args.data!r} test")
    y_test = np.asarray(ds.y_test[: args.max_eval])
    return rep, x_test, y_test, {"source": "data set", "name": args.data, "path": args.data_path,
                                 "calibration_samples": int(len(rep)), "eval_samples": int(len(x_test)),
                                 "calibration": f"the first {len(rep)} training samples of {args.data}"}


def write_manifest(folder: Path, content: Dict[str, Any]) -> Dict[str, Any]:
    """Write ``manifest.json`` listing every file under ``folder`` (sorted, except the manifest)
    with sha256 and size; deterministic (no dates, no absolute paths). ``content`` gets
    ``"tool": "ecqx-export"`` unless it names the tool (``ecqx_tf.io.write_manifest``)."""
    from ecqx_tf.io import write_manifest as _write

    return _write(folder, {"tool": "ecqx-export", **content})


def verify_manifest(folder: Path) -> Dict[str, Any]:
    """Read ``manifest.json`` and check every listed file's size and sha256.

    Every listed path must stay inside ``folder`` (relative, no ``..``, no symbolic link leaving
    it; ``ecqx_tf.io.safe_join``) and be a regular file.

    Raises:
        FileNotFoundError: no manifest.
        ValueError: unreadable manifest, a path leaving the folder, or a file is missing or
            differs (naming it).
    """
    from ecqx_tf.io import safe_join, sha256_file

    folder = Path(folder)
    mpath = folder / MANIFEST
    if not folder.is_dir():
        raise FileNotFoundError(f"{str(folder)!r} is not a folder; ecqx-simulate takes an ecqx-export output folder")
    if not mpath.is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no {MANIFEST}; is it an ecqx-export output folder?")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        entries = manifest["files"]
        target = manifest["target"]
        if not isinstance(entries, list):
            raise TypeError(f"files is a {type(entries).__name__}, not a list")
        listed = [(e["path"], e["size"], e["sha256"]) for e in entries]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{str(mpath)!r} is not an ecqx-export manifest ({type(e).__name__}: {e})") from None
    if manifest.get("tool", "ecqx-export") != "ecqx-export":
        raise ValueError(f"{str(mpath)!r} was written by {manifest.get('tool')!r}, not ecqx-export")
    if not isinstance(target, str):
        raise ValueError(f"{str(mpath)!r}: target must be a name, got {target!r}")
    for rel, size, digest in listed:
        f = safe_join(folder, rel, f"{MANIFEST} entry")
        if f.is_symlink() or not f.is_file():
            raise ValueError(f"{rel!r} listed in {MANIFEST} is missing" if not f.exists() else
                             f"{rel!r} listed in {MANIFEST} is not a regular file")
        if f.stat().st_size != size or sha256_file(f) != digest:
            raise ValueError(f"{rel!r} differs from its checksum in {MANIFEST}")
    return manifest


# ----------------------------------------------------------------------------------------------
# ecqx-simulate: every file is checked with the project's own readers before an interpreter sees it
def _read_json_object(folder: Path, rel: str) -> Dict[str, Any]:
    from ecqx_tf.io import safe_join

    path = safe_join(folder, rel)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{rel}: not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{rel}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _field(obj: Dict[str, Any], where: str, *keys: str, kind: type = str) -> Any:
    """``obj[k1][k2]...`` checked for presence and type (``ValueError`` naming the entry)."""
    cur: Any = obj
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            raise ValueError(f"{where}: the entry {'.'.join(keys)!r} is missing")
        cur = cur[k]
    if kind is int and (isinstance(cur, bool) or not isinstance(cur, int)):
        raise ValueError(f"{where}: {'.'.join(keys)!r} must be an integer, got {cur!r}")
    if kind is not int and not isinstance(cur, kind):
        raise ValueError(f"{where}: {'.'.join(keys)!r} must be a {kind.__name__}, got {cur!r}")
    return cur


def _listed_path(folder: Path, manifest: Dict[str, Any], rel: Any, where: str) -> Path:
    """A path named by a report: inside the folder and one of the manifest's checked files."""
    from ecqx_tf.io import safe_join

    path = safe_join(folder, rel, f"{where} path")
    if rel not in {e["path"] for e in manifest["files"]}:
        raise ValueError(f"{where} names {rel!r}, which {MANIFEST} does not list")
    return path


def _read_tflite(path: Path, rel: str):
    from firmware_export.tflm.flatbuffer import read_model

    try:
        return read_model(path.read_bytes())
    except ValueError as e:
        raise ValueError(f"{rel}: {e}") from None


def _read_npz(path: Path, rel: str) -> Dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickles), with the archive's errors as ``ValueError``."""
    import struct
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, struct.error, zlib.error,
            UnicodeDecodeError) as e:
        raise ValueError(f"{rel}: not a readable .npz archive ({type(e).__name__}: {str(e) or 'truncated'})") from None


_PROBE = r"""
import sys
import numpy as np
from tflite_micro import runtime
data = sys.stdin.buffer.read()
try:
    interp = runtime.Interpreter.from_bytes(data, arena_size=int(sys.argv[1]))
    d = interp.get_input_details(0)
    interp.set_input(np.zeros(tuple(int(v) for v in d["shape"]), d["dtype"]), 0)
    interp.invoke()
except Exception as e:
    print(type(e).__name__, str(e).splitlines()[0] if str(e) else "", flush=True)
    sys.exit(3)
"""


def probe_tflm(model_bytes: bytes, arena_size: int, rel: str) -> None:
    """Construct the TFLM interpreter on ``model_bytes`` and invoke it once on zeros, in a child
    process: a file that passes the readers but still crashes TFLM (a wrong operator code on
    valid tensors) then gives ``ValueError`` instead of killing this process.

    A Python error of the interpreter (e.g. the arena is too small) is not reported here: the
    in-process run reports it.
    """
    import signal
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _PROBE, str(int(arena_size))], input=bytes(model_bytes),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=600)
    if proc.returncode < 0:
        try:
            signame = signal.Signals(-proc.returncode).name
        except ValueError:
            signame = f"signal {-proc.returncode}"
        raise ValueError(f"{rel}: the TFLM interpreter crashes on this model ({signame}); the file is corrupt")


def _check_tflm_export(folder: Path, manifest: Dict[str, Any]) -> None:
    """What the ``tflm`` target's ``simulate`` reads: its report, the model, the golden vectors."""
    from firmware_export.tflm.simulate import simulate as simulate_model

    report = _read_json_object(folder, "tflm_report.json")
    where = "tflm_report.json"
    tflite = _listed_path(folder, manifest, _field(report, where, "tflite"), where)
    golden = _listed_path(folder, manifest, _field(report, where, "golden", "file"), where)
    arena = _field(report, where, "arena", "recommended", kind=int)
    if not 0 < arena < 1 << 31:
        raise ValueError(f"{where}: arena.recommended must be in 1..{(1 << 31) - 1}, got {arena}")
    model = _read_tflite(tflite, str(tflite.relative_to(folder)))
    g = _read_npz(golden, str(golden.relative_to(folder)))
    grel = str(golden.relative_to(folder))
    for key in ("x_int8", "y_int8", "labels"):
        if key not in g:
            raise ValueError(f"{grel}: the array {key!r} is missing")
    x, y, labels = g["x_int8"], g["y_int8"], g["labels"]
    inp, outp = model.tensors[model.inputs[0]], model.tensors[model.outputs[0]]
    if x.dtype != np.int8 or y.dtype != np.int8 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{grel}: x_int8/y_int8 must be int8 and labels integers, got {x.dtype}/{y.dtype}/{labels.dtype}")
    n = len(x) if x.ndim else -1
    if tuple(x.shape[1:]) != tuple(inp.shape[1:]) or y.shape[:1] != (n,) or \
            int(np.prod(y.shape[1:])) != int(np.prod(outp.shape[1:])) or labels.shape != (n,):
        raise ValueError(f"{grel}: shapes x_int8 {list(x.shape)}, y_int8 {list(y.shape)}, labels {list(labels.shape)} "
                         f"do not fit the model (input {list(inp.shape)}, output {list(outp.shape)})")
    try:
        simulate_model(model, x[:1])
    except Exception as e:  # the project's simulator refuses the model: report it, do not run TFLM on it
        raise ValueError(f"{tflite.relative_to(folder)}: the integer simulator refuses this model "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    probe_tflm(tflite.read_bytes(), arena, str(tflite.relative_to(folder)))


def _check_fantastic4_export(folder: Path, manifest: Dict[str, Any]) -> None:
    """What the ``fantastic4`` target's ``simulate`` reads: its report, the blob, the golden
    vectors, the int8 model that TFLM runs as the reference."""
    from firmware_export.fantastic4.format import read_blob

    where = "fantastic4.json"
    report = _read_json_object(folder, where)
    blob = _listed_path(folder, manifest, _field(report, where, "blob"), where)
    tflite = _listed_path(folder, manifest, _field(report, where, "tflite"), where)
    inputs = _listed_path(folder, manifest, _field(report, where, "golden", "inputs"), where)
    outputs = _listed_path(folder, manifest, _field(report, where, "golden", "outputs"), where)
    n_in = _field(report, where, "golden", "input_features", kind=int)
    n_out = _field(report, where, "golden", "output_features", kind=int)
    try:
        parsed = read_blob(blob.read_bytes())
    except ValueError as e:
        raise ValueError(f"{blob.relative_to(folder)}: {e}") from None
    layers = getattr(parsed, "layers", None)
    if layers:
        first, last = layers[0], layers[-1]
        if getattr(first, "in_features", n_in) != n_in or getattr(last, "out_features", n_out) != n_out:
            raise ValueError(f"{where}: golden features {n_in} -> {n_out} do not match the blob's "
                             f"{getattr(first, 'in_features', '?')} -> {getattr(last, 'out_features', '?')}")
    for path, width in ((inputs, n_in), (outputs, n_out)):
        size = path.stat().st_size
        if width <= 0 or size % width:
            raise ValueError(f"{path.relative_to(folder)}: {size} bytes is not a whole number of {width}-byte vectors")
    if inputs.stat().st_size // max(n_in, 1) != outputs.stat().st_size // max(n_out, 1):
        raise ValueError(f"{where}: the golden inputs and outputs hold different numbers of vectors")
    model = _read_tflite(tflite, str(tflite.relative_to(folder)))
    inp, outp = model.tensors[model.inputs[0]], model.tensors[model.outputs[0]]
    if int(np.prod(inp.shape[1:])) != n_in or int(np.prod(outp.shape[1:])) != n_out:
        raise ValueError(f"{tflite.relative_to(folder)}: model input/output {list(inp.shape)}/{list(outp.shape)} do not "
                         f"match the golden features {n_in} -> {n_out}")
    probe_tflm(tflite.read_bytes(), 16 << 20, str(tflite.relative_to(folder)))


#: target name -> checks of an export folder run by ``ecqx-simulate`` before the target's own
#: ``simulate`` (which hands files to interpreters and compilers). A target without an entry
#: gets the generic checks only.
EXPORT_CHECKS: Dict[str, Callable[[Path, Dict[str, Any]], None]] = {
    "tflm": _check_tflm_export,
    "fantastic4": _check_fantastic4_export,
}


def check_export_folder(folder: Path) -> Dict[str, Any]:
    """Everything ``ecqx-simulate`` checks before running a target: the manifest (paths inside the
    folder, checksums), every listed ``.json`` / ``.npz`` / ``.tflite`` file with the project's
    readers, then the target's own checks (:data:`EXPORT_CHECKS`). Returns the manifest.

    Raises:
        FileNotFoundError: no folder or no manifest.
        ValueError: anything else, naming the file and what is wrong.
    """
    folder = Path(folder)
    manifest = verify_manifest(folder)
    for e in manifest["files"]:
        rel = e["path"]
        path = folder / rel
        if rel.endswith(".json"):
            _read_json_object(folder, rel)
        elif rel.endswith(".npz"):
            _read_npz(path, rel)
        elif rel.endswith(".tflite"):
            _read_tflite(path, rel)
    check = EXPORT_CHECKS.get(manifest["target"])
    if check is not None:
        check(folder, manifest)
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
    from cli.common import run, verbosity

    args = _parse(argv)
    return run("ecqx-export", lambda: _export(args), level=verbosity(args))


def _export(args: argparse.Namespace) -> int:
    try:
        from cli.common import check_input_file
        from ecqx_tf.io import atomic_output_dir, check_output_dir, remove_stale_partials, sha256_file
        from firmware_export import ExportRequest
        from firmware_export.tflm.c_arrays import check_identifier

        t0 = time.time()
        targets = _targets()
        target = targets.get(args.target)()
        out = Path(args.out)
        # every input checked before any work (and before TensorFlow is imported)
        check_input_file(args.model, suffixes=MODEL_SUFFIXES)
        if args.data is None and args.data_path is not None:
            raise ValueError("--data-path needs --data NAME (the data set read from that path)")
        sources = [f for f, v in (("--data", args.data), ("--calib-data", args.calib_data),
                                  ("--random-calibration", args.random_calibration)) if v]
        if len(sources) > 1:
            raise ValueError(f"{' and '.join(sources)} exclude each other: the activations are calibrated on one source")
        if not sources:
            raise ValueError("no calibration data: pass --data NAME (a data set) or --calib-data FILE (a .npy/.npz of "
                             "your model's inputs); --random-calibration calibrates on uniform random inputs in [0, 1] "
                             "instead, which only suits models whose inputs look like that")
        if args.data is not None:
            from models import datasets

            datasets.check_data_args(args.data, args.data_path)
        calib = read_calib_file(args.calib_data) if args.calib_data else None
        inputs = [args.model, args.data_path, args.calib_data]
        plan = check_output_dir(out, "ecqx-export", inputs, args.force)  # before any work; touches nothing
        remove_stale_partials(plan.final.parent)  # left by interrupted runs (marker, process gone)
        name = check_identifier(args.name) if args.name else default_name(args.model)

        _progress(f"[1/4] loading {args.model}")
        model, quant, kind = load_export_model(args.model)
        _progress(f"      {kind} model, {len(quant)} quantized layer(s)"
                  + (": " + ", ".join(f"{k} {q.bits}-bit {q.grid}" for k, q in quant.items()) if quant else ""))
        input_shape = tuple(int(d) for d in model.input_shape[1:])

        _progress("[2/4] loading data " + (args.data or (args.calib_data and f"from {args.calib_data}")
                                           or "(none: uniform random calibration inputs)"))
        rep, x_test, y_test, data_desc = _load_data(args, input_shape, calib)

        # the target's typed options given on the command line (and --max-eval where the target takes it)
        given = {k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(target.options)}}
        typed = target.make_options(given)
        options = {k: getattr(typed, k) for k in given}
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
        rows = [("calibrated on", data_desc["calibration"])]
        if data_desc["source"] == "file":
            ev = data_desc["eval_rows"]
            rows.append(("golden vectors", f"rows {ev[0]}..{ev[1] - 1} of {data_desc['file']}"
                         + (" (the calibration rows: the file has no other rows)" if data_desc["eval_overlaps_calibration"]
                            else "") + ("" if data_desc["labels"] else "; no labels (y), so no accuracy")))
        elif data_desc["source"] == "random":
            rows.append(("golden vectors", "the same random inputs; no accuracy"))
        _print_table(rows + _summary_rows(summary))
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


def build_simulate_parser() -> argparse.ArgumentParser:
    """The ``ecqx-simulate`` parser (targets may add options here)."""
    from cli.common import Parser, add_common_arguments

    ap = Parser(
        prog="ecqx-simulate",
        description="Re-check an ecqx-export output folder on the host (dispatches by the target named in its\n"
                    "manifest.json). Every file is first checked with the project's own readers (checksums,\n"
                    "paths inside DIR, .tflite / .npz / .json / blob structure); a damaged folder gives one\n"
                    "error line and exit code 2.")
    ap.add_argument("dir", metavar="DIR", help="an ecqx-export output folder")
    from firmware_export.fantastic4.cortex_m import CPUS  # NumPy only: --help stays fast

    ap.add_argument("--cortex-m", choices=list(CPUS), metavar="CPU", default=None,
                    help=f"fantastic4 exports: also cross-build the bare-metal harness for {', '.join(CPUS)} and run "
                         "every golden vector in an emulator: Arm == simulator == TFLM, instructions per inference, "
                         "flash, RAM (writes DIR/cortex_m_CPU.json)")
    add_common_arguments(ap)
    return ap


def simulate_main(argv: Optional[Sequence[str]] = None) -> int:
    """``ecqx-simulate DIR``: check the folder (:func:`check_export_folder`), then run the target's
    host check. Exit codes: 0 the host check passed, 1 it differs, 2 bad folder."""
    from cli.common import run, verbosity

    args = build_simulate_parser().parse_args(argv)
    return run("ecqx-simulate", lambda: _simulate(args), level=verbosity(args), bad_input=_SIMULATE_ERRORS)


def _simulate_errors() -> Tuple[type, ...]:
    import struct
    import zipfile
    import zlib

    # what a damaged folder can raise anywhere in a target's simulate (KeyError: a report lacks an
    # entry; struct.error / BadZipFile / EOFError / zlib.error: a truncated archive)
    return (ValueError, TypeError, OSError, KeyError, IndexError, NotImplementedError, RuntimeError, EOFError,
            struct.error, zipfile.BadZipFile, zlib.error)


_SIMULATE_ERRORS = _simulate_errors()


def _simulate(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    manifest = check_export_folder(folder)
    target = _targets().get(manifest["target"])()
    result = target.simulate(folder)
    cm = None
    if args.cortex_m:
        from firmware_export.fantastic4 import cortex_m

        cm = cortex_m.simulate_export(folder, args.cortex_m, manifest["target"])
    print(f"ecqx-simulate: {manifest['target']} export in {args.dir}: checksums ok")
    _print_table([(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in _jsonable(result).items()])
    if cm is not None:
        _print_table(cortex_m.summary_rows(cm))
    return 0 if result.get("ok", False) and (cm is None or cm["ok"]) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
