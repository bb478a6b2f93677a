"""ECQ / ECQx against the alternatives, on the bundled MNIST split (a benchmark, not a test).

For each zoo model (default ``mnist_mlp`` and ``lenet5``), from ONE float model trained with a
fixed seed, every path below is fine-tuned from the same float weights and measured the same way:

=================  ============================================================================
path               what
=================  ============================================================================
float32            the float model; float32 ``.tflite`` run on the TFLM interpreter
tfmot int8 QAT     ``tfmot.quantization.keras.quantize_model`` (default 8-bit scheme), full-int8
                   ``.tflite``
tfmot int4 QAT     ``DefaultNBitQuantizeScheme(num_bits_weight=4, num_bits_activation=8)``,
                   converted full-integer (the converter writes INT4 weights for 4-bit FakeQuant)
tfmot collab.      magnitude pruning (``--sparsities``, default 80% and 90%) -> 16-cluster weight
                   clustering (sparsity preserved) -> cluster- and sparsity-preserving QAT
                   (PCQAT), full-int8 ``.tflite``; then TFLM LUT compression
                   (``tflite_micro.compression``) of every weight tensor
ECQ / ECQx         ``ecqx_tf.keras.finetune.quantize_and_train`` at each ``--bits`` and
                   ``--lambdas``, exported with ``firmware_export.tflm.convert`` (stored integers
                   = centroid levels, INT4 at <= 4 bits), also LUT-compressed
=================  ============================================================================

Measured per path: test accuracy in Keras (fake-quantized where QAT) and on the real TFLM
interpreter (``tflite_micro.runtime``, every test digit, one invoke each), zeros among the stored
weight integers, their entropy (bits/weight, pooled over layers), the flatbuffer bytes (plain and
LUT-compressed), the minimum TFLM arena, the packed FantastIC4 blob (FC-only models), the lzma
(xz, preset 9e) bytes of the weight integer stream (TFLite layout, int8 per weight) and of the
whole flatbuffer, the compression ratio ``float32 parameter bytes / stored bytes`` with
``stored = lzma(weight integers) + 4 bytes per bias and per weight scale``, and seconds per
fine-tuning epoch. What could not be measured is recorded as ``null`` with a note, never faked.

    python bench/compare.py                       # full default run (see BENCHMARKS.md)
    python bench/compare.py --quick               # a few minutes: checks the script end to end
    python bench/compare.py --models mnist_mlp --bits 2 4 --lambdas 0.1 0.3 --epochs 5 --plots
    python bench/compare.py --from-json bench/results/compare.json --markdown [--plots]  # table/PNGs again

Writes ``<out>/compare.json`` (default ``bench/results/``; ``out/compare_quick/`` with
``--quick``) and, with ``--plots``, ``<out>/compare_*.png``.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from bench.common import accuracy as _accuracy  # noqa: E402
from bench.common import convert_float as _convert_float  # noqa: E402
from bench.common import convert_int as _convert_int  # noqa: E402
from bench.common import copy_model as _copy_model  # noqa: E402
from bench.common import fit as _fit  # noqa: E402
from bench.common import (  # noqa: E402  (shared with bench/frontier.py; NumPy only at import)
    float_stream_stats,
    lzma_bytes,
    machine_info,
    stream_stats,
    tflite_weights,
    tflm_logits,
    versions,
)
from bench.common import is_fc_only as _is_fc_only  # noqa: E402
from bench.common import keras_accuracy as _keras_accuracy  # noqa: E402
from bench.common import kernels as _kernels  # noqa: E402
from bench.common import lut_compress_all as _lut_compress_all  # noqa: E402

__all__ = ["main", "run", "stream_stats", "lzma_bytes", "format_table", "format_instructions", "PATHS"]

log = logging.getLogger("bench.compare")

#: Path names accepted by ``--paths`` (all by default).
PATHS = ("float", "int8", "int4", "pcqat", "ecq", "ecqx")


# ---------------------------------------------------------------------------------------------
# Measurements (pure functions)
# ---------------------------------------------------------------------------------------------
class InstructionCounter:
    """Instructions per inference (valgrind callgrind, ``bench/instructions.py``) of the TFLM
    interpreter and of the FantastIC4 C runtime, on the first ``samples`` test digits. Before a
    FantastIC4 count, the C runtime's outputs are checked equal to TFLM's on those digits."""

    def __init__(self, x_test: np.ndarray, samples: int):
        import tempfile

        from bench import instructions

        self.ir = instructions
        self.x = np.asarray(x_test[:samples], np.float32)
        self._tmp = tempfile.TemporaryDirectory(prefix="compare_ir_")
        self.tmp = Path(self._tmp.name)
        self._host: Optional[Path] = None

    def _inputs(self, model_bytes: bytes) -> np.ndarray:
        """The samples in the model's input dtype and shape (quantized as TFLM's callers do)."""
        from firmware_export.tflm import flatbuffer as fb
        from firmware_export.tflm.convert import quantize_input

        m = fb.read_model(model_bytes)
        t = m.tensors[m.inputs[0]]
        shape = (len(self.x),) + tuple(int(d) for d in t.shape[1:])
        if t.dtype == "INT8":
            return quantize_input(m, self.x).reshape(shape)
        return self.x.reshape(shape)

    def tflm(self, model_bytes: bytes, arena: int) -> float:
        return self.ir.tflm_instructions(model_bytes, self._inputs(model_bytes), arena, self.tmp)

    def f4(self, model_bytes: bytes, blob: bytes) -> float:
        from firmware_export.fantastic4.target import tflm_reference

        if self._host is None:
            self._host = self.ir.build_f4_host(self.tmp / "f4_host")
        x = self._inputs(model_bytes).reshape(len(self.x), -1)
        c_out = self.ir.f4_outputs(blob, x, self._host, self.tmp)
        if not np.array_equal(c_out, tflm_reference(model_bytes, x)):
            raise RuntimeError("FantastIC4 C outputs differ from TFLM's; instructions not counted")
        return self.ir.f4_instructions(blob, x, self._host, self.tmp)

    def close(self) -> None:
        self._tmp.cleanup()


# ---------------------------------------------------------------------------------------------
# Keras / tfmot helpers
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# One row
# ---------------------------------------------------------------------------------------------
def _new_row(model: str, path: str, label: str, **kw) -> Dict[str, Any]:
    row = {"model": model, "path": path, "label": label, "bits": None, "Lambda": None,
           "acc_keras": None, "acc_tflm": None, "acc_tflm_lut": None, "sparsity": None, "entropy": None,
           "entropy_bound_bytes": None, "lzma_weight_bytes": None, "lzma_tflite_bytes": None,
           "stored_bytes": None, "ratio": None, "tflite_bytes": None, "tflite_lut_bytes": None,
           "weight_types": None, "arena_bytes": None, "arena_lut_bytes": None, "f4_bytes": None,
           "f4_layouts": None, "ir_tflm": None, "ir_tflm_lut": None, "ir_f4": None,
           "ir_f4_cer": None, "f4_cer_bytes": None, "ir_f4_csc": None, "f4_csc_bytes": None, "epoch_s": None, "epochs": None, "layer_sparsity": None,
           "layer_distinct": None, "notes": []}
    row.update(kw)
    return row


def _count(row: Dict[str, Any], key: str, counter: Optional[InstructionCounter], fn: Callable[[], float]) -> None:
    """row[key] = fn() (instructions per inference) when counting; a failure becomes a note."""
    if counter is None:
        return
    try:
        row[key] = float(fn())
    except Exception as e:
        row["notes"].append(f"{key} not measured: {type(e).__name__}: {e}"[:400])


def _measure_tflite(row: Dict[str, Any], model_bytes: bytes, data, float_bytes: int, fc_only: bool,
                    lut: bool = True, lut_bytes: Optional[bytes] = None,
                    counter: Optional[InstructionCounter] = None) -> None:
    """Fill the flatbuffer, TFLM, integer-stream, FantastIC4 and instruction fields of ``row``."""
    row["tflite_bytes"] = len(model_bytes)
    row["lzma_tflite_bytes"] = lzma_bytes(model_bytes)
    w = tflite_weights(model_bytes)
    row["weight_types"] = sorted(set(w["types"]))
    run = tflm_logits(model_bytes, data.x_test)
    row["acc_tflm"] = _accuracy(run["logits"], data.y_test)
    row["arena_bytes"] = run["arena_bytes"]
    _count(row, "ir_tflm", counter, lambda: counter.tflm(model_bytes, run["arena_recommended"]))
    st = stream_stats(w["ints"])
    row.update({k: st[k] for k in ("weights", "sparsity", "entropy", "entropy_bound_bytes", "lzma_weight_bytes",
                                   "layer_sparsity", "layer_distinct")})
    row["lzma_bits_per_weight"] = 8 * st["lzma_weight_bytes"] / st["weights"]
    row["stored_bytes"] = st["lzma_weight_bytes"] + w["bias_bytes"] + 4 * w["scales"]
    row["cabac_weight_bytes"] = st["cabac_weight_bytes"]
    row["stored_bytes_cabac"] = st["cabac_weight_bytes"] + w["bias_bytes"] + 4 * w["scales"]
    row["ratio"] = float_bytes / row["stored_bytes"]
    if lut:
        try:
            lb = lut_bytes if lut_bytes is not None else _lut_compress_all(model_bytes)
            row["tflite_lut_bytes"] = len(lb)
            run = tflm_logits(lb, data.x_test)
            row["acc_tflm_lut"] = _accuracy(run["logits"], data.y_test)
            row["arena_lut_bytes"] = run["arena_bytes"]
            _count(row, "ir_tflm_lut", counter, lambda: counter.tflm(lb, run["arena_recommended"]))
        except Exception as e:  # recorded, never hidden
            row["notes"].append(f"LUT compression not measured: {type(e).__name__}: {e}")
    if fc_only:
        try:
            from firmware_export.fantastic4 import format as f4format
            from firmware_export.fantastic4.network import IntegerMLP

            net = IntegerMLP.from_tflite(model_bytes)
            blob = f4format.write_blob(net, "smallest")
            row["f4_bytes"] = len(blob)
            row["f4_layouts"] = [l.layout_name for l in f4format.read_blob(blob).layers]
            _count(row, "ir_f4", counter, lambda: counter.f4(model_bytes, blob))
            for layout in ("cer", "csc"):  # the row-major and the activation-skipping kernels
                other = f4format.write_blob(net, layout)
                row[f"f4_{layout}_bytes"] = len(other)
                _count(row, f"ir_f4_{layout}", counter, lambda: counter.f4(model_bytes, other))
        except Exception as e:
            row["notes"].append(f"FantastIC4 not measured: {type(e).__name__}: {e}")


# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------
def path_float(ctx) -> List[Dict[str, Any]]:
    fl, data = ctx["float"], ctx["data"]
    row = _new_row(ctx["model"], "float", "float32", bits=32, acc_keras=fl.test_accuracy,
                   epochs=fl.epochs_run, epoch_s=fl.seconds / max(1, fl.epochs_run))
    row["notes"].append("epoch_s = whole float training time / epochs run (includes build and evaluation)")
    mb = _convert_float(fl.model)
    row["tflite_bytes"] = len(mb)
    row["lzma_tflite_bytes"] = lzma_bytes(mb)
    row["weight_types"] = ["FLOAT32"]
    run = tflm_logits(mb, data.x_test)
    row["acc_tflm"] = _accuracy(run["logits"], data.y_test)
    row["arena_bytes"] = run["arena_bytes"]
    counter = ctx.get("counter")
    _count(row, "ir_tflm", counter, lambda: counter.tflm(mb, run["arena_recommended"]))
    st = float_stream_stats(_kernels(fl.model))
    row.update({k: st[k] for k in ("weights", "sparsity", "lzma_weight_bytes", "layer_sparsity", "layer_distinct")})
    row["lzma_bits_per_weight"] = 8 * st["lzma_weight_bytes"] / st["weights"]
    n_bias = ctx["params"] - st["weights"]
    row["stored_bytes"] = st["lzma_weight_bytes"] + 4 * n_bias
    row["ratio"] = ctx["float_bytes"] / row["stored_bytes"]
    return [row]


def _qat_row(ctx, path: str, label: str, bits: int, qat, seconds: List[float], extra_epochs: int = 0,
             notes: Sequence[str] = ()) -> Dict[str, Any]:
    data = ctx["data"]
    row = _new_row(ctx["model"], path, label, bits=bits, acc_keras=_keras_accuracy(qat, data),
                   epoch_s=float(np.mean(seconds)), epochs=len(seconds) + extra_epochs, notes=list(notes))
    mb = _convert_int(qat, data.x_train)
    _measure_tflite(row, mb, data, ctx["float_bytes"], ctx["fc_only"], counter=ctx.get("counter"))
    return row


def path_int8(ctx) -> List[Dict[str, Any]]:
    import tensorflow_model_optimization as tfmot

    qat = tfmot.quantization.keras.quantize_model(_copy_model(ctx["float"].model))
    secs = _fit(qat, ctx["data"], ctx["epochs"], ctx["seed"])
    return [_qat_row(ctx, "int8", "tfmot int8 QAT", 8, qat, secs)]


def path_int4(ctx) -> List[Dict[str, Any]]:
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.experimental.default_n_bit import (
        default_n_bit_quantize_scheme,
    )

    q = tfmot.quantization.keras
    scheme = default_n_bit_quantize_scheme.DefaultNBitQuantizeScheme(num_bits_weight=4, num_bits_activation=8)
    annotated = q.quantize_annotate_model(_copy_model(ctx["float"].model))
    with q.quantize_scope():
        qat = q.quantize_apply(annotated, scheme=scheme)
    secs = _fit(qat, ctx["data"], ctx["epochs"], ctx["seed"])
    return [_qat_row(ctx, "int4", "tfmot int4 QAT", 4, qat, secs)]


def path_pcqat(ctx) -> List[Dict[str, Any]]:
    """Prune -> cluster (16, sparsity preserved) -> PCQAT, each stage ``epochs`` epochs."""
    from bench.common import pcqat

    epochs = ctx["epochs"]
    rows = []
    for s in ctx["sparsities"]:
        qat, secs = pcqat(ctx["float"].model, ctx["data"], s, (epochs, epochs, epochs), ctx["seed"])
        label = f"tfmot prune {round(100 * s)}% + 16 clusters + PCQAT"
        rows.append(_qat_row(ctx, "pcqat", label, 8, qat, secs,
                             notes=[f"3 stages x {epochs} epochs (prune, cluster, PCQAT); epoch_s is their mean"]))
        rows[-1]["target_sparsity"] = float(s)
        del qat
        gc.collect()
    return rows


def _ecq_rows(ctx, method: str) -> List[Dict[str, Any]]:
    from bench.common import ecq_tflite
    from ecqx_tf import quantization_info
    from ecqx_tf.keras.api import ecq_layers
    from ecqx_tf.keras.finetune import quantize_and_train

    data, fl = ctx["data"], ctx["float"]
    rows = []
    for bits in ctx["bits"]:
        for lam in ctx["lambdas"]:
            label = f"{method.upper()} {bits}-bit L={lam:g}"
            log.info("  %s", label)
            row = _new_row(ctx["model"], method, label, bits=bits, Lambda=lam)
            try:
                ft = quantize_and_train(fl.model, data.x_train, data.y_train, data.x_test, data.y_test, bits=bits,
                                        method=method, Lambda=lam, p=ctx["p"], epochs=ctx["epochs"],
                                        refresh_every=ctx["refresh_every"], seed=ctx["seed"])
                row.update(acc_keras=ft.test_accuracy, epoch_s=float(np.mean(ft.epoch_seconds)), epochs=ctx["epochs"])
                tot = ft.stats[-1]
                row["ecq_stats"] = {"sparsity": tot["sparsity"], "entropy": tot["entropy"],
                                    "used_centroids": tot["used_centroids"]}
                info = quantization_info(ft.qmodel)
                plain, lut, notes = ecq_tflite(ft, data, f"{ctx['model']}_{method}{bits}")
                row["notes"] += notes
                _measure_tflite(row, plain, data, ctx["float_bytes"], ctx["fc_only"],
                                lut=lut is not None, lut_bytes=lut, counter=ctx.get("counter"))
                # Stored integers must be exactly the assigned levels (the exporter checks it too).
                if abs(row["sparsity"] - tot["sparsity"]) > 1e-12:
                    row["notes"].append(f"flatbuffer zeros {row['sparsity']} != layer_stats {tot['sparsity']}")
                if ctx.get("figure_run") == (method, bits, lam):
                    ctx["figures"].update(_figure_data(ctx, ft, info, ecq_layers(ft.qmodel)))
                del ft
            except Exception as e:
                row["notes"].append(f"failed: {type(e).__name__}: {e}")
                log.error("%s failed:\n%s", label, traceback.format_exc())
            rows.append(row)
            _print_row(row)
            gc.collect()
    return rows


def path_ecq(ctx):
    return _ecq_rows(ctx, "ecq")


def path_ecqx(ctx):
    return _ecq_rows(ctx, "ecqx")


PATH_FUNCS: Dict[str, Callable] = {"float": path_float, "int8": path_int8, "int4": path_int4,
                                   "pcqat": path_pcqat, "ecq": path_ecq, "ecqx": path_ecqx}


# ---------------------------------------------------------------------------------------------
# Data for the plots (kept in the JSON so plots.py needs nothing else)
# ---------------------------------------------------------------------------------------------
def _figure_data(ctx, ft, info, slots) -> Dict[str, Any]:
    fl = ctx["float"].model
    hist = []
    for name, qk in info.items():
        before = fl.get_layer(name).kernel.numpy().reshape(-1)
        after = qk.values().reshape(-1)
        lo = float(min(before.min(), after.min()))
        hi = float(max(before.max(), after.max()))
        counts, edges = np.histogram(before, bins=80, range=(lo, hi))
        levels = np.asarray(qk.levels, np.int64)
        ints = qk.integers().reshape(-1)
        hist.append({
            "layer": name, "bits": int(qk.bits), "step": float(qk.step),
            "edges": [float(e) for e in edges], "before_counts": [int(c) for c in counts],
            "centroids": [float(np.float32(k) * np.float32(qk.step)) for k in levels],
            "after_counts": [int(np.sum(ints == k)) for k in levels],
        })
    # relevance map of one layer: the first quantized layer
    s = slots[0]
    rel = s.relevance.numpy()
    ints = info[s.name].integers()
    r: Dict[str, Any] = {"layer": s.name, "shape": list(rel.shape), "method": ctx["figure_run"][0],
                         "bits": ctx["figure_run"][1], "Lambda": ctx["figure_run"][2]}
    in_shape = tuple(int(d) for d in fl.input_shape[1:])
    if rel.ndim == 2 and rel.shape[0] == int(np.prod(in_shape)):
        # Dense on the flattened input: per input pixel, the summed relevance of its weights and
        # the fraction of them assigned to zero.
        r["image_shape"] = list(in_shape[:2])
        r["per_input_relevance"] = [float(v) for v in rel.sum(axis=1)]
        r["per_input_zero_fraction"] = [float(v) for v in np.mean(ints == 0, axis=1)]
    if rel.size <= 8192:
        r["relevance"] = [float(v) for v in rel.reshape(-1)]
        r["integers"] = [int(v) for v in ints.reshape(-1)]
    return {"histograms": hist, "relevance": r}


# ---------------------------------------------------------------------------------------------
# Machine, table, driver
# ---------------------------------------------------------------------------------------------
_COLS = [("model", 9, "{}"), ("label", 37, "{}"), ("keras", 6, "{:.4f}"), ("tflm", 6, "{:.4f}"),
         ("zeros", 6, "{:.1%}"), ("H", 5, "{:.2f}"), ("tflite B", 9, "{:,}"), ("LUT B", 9, "{:,}"),
         ("F4 B", 7, "{:,}"), ("lzma B", 7, "{:,}"), ("CABAC B", 7, "{:,}"), ("ratio", 5, "{:.1f}"), ("kIr TFLM", 8, "{:,.0f}"),
         ("kIr F4", 6, "{:,.0f}"), ("kIr CER", 7, "{:,.0f}"), ("kIr CSC", 7, "{:,.0f}"),
         ("s/ep", 5, "{:.1f}")]
_KEYS = ["model", "label", "acc_keras", "acc_tflm", "sparsity", "entropy", "tflite_bytes", "tflite_lut_bytes",
         "f4_bytes", "lzma_weight_bytes", "cabac_weight_bytes", "ratio", "kir_tflm", "kir_f4", "kir_f4_cer", "kir_f4_csc", "epoch_s"]


def _cells(row) -> List[str]:
    out = []
    for (name, width, fmt), key in zip(_COLS, _KEYS):
        v = row.get(key[1:]) / 1000 if key.startswith("kir_") and row.get(key[1:]) is not None else row.get(key)
        out.append("-" if v is None else fmt.format(v))
    return out


def format_table(rows: Sequence[Dict[str, Any]], markdown: bool = False) -> str:
    header = [c[0] for c in _COLS]
    body = [_cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in body]
        return "\n".join(lines)
    widths = [max(c[1], len(h), *(len(b[i]) for b in body)) for i, (h, c) in enumerate(zip(header, _COLS))]
    fmt_line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt_line(header), fmt_line(["-" * w for w in widths])] + [fmt_line(b) for b in body])


def format_instructions(rows: Sequence[Dict[str, Any]], markdown: bool = False) -> str:
    """Instructions per inference of every row that has them, in thousands, with the ratio of the
    fastest FantastIC4 kernel to TFLM running the same model's tfmot int8 QAT flatbuffer."""
    base = {r["model"]: r["ir_tflm"] for r in rows if r["path"] == "int8" and r.get("ir_tflm")}
    header = ["model", "label", "tflm acc", "zeros", "kIr TFLM", "kIr TFLM LUT", "kIr F4", "kIr CER", "kIr CSC",
              "best F4 / TFLM int8"]
    body = []
    for r in rows:
        if not r.get("ir_tflm"):
            continue
        f4 = [r.get(k) for k in ("ir_f4", "ir_f4_cer", "ir_f4_csc") if r.get(k)]
        ratio = min(f4) / base[r["model"]] if f4 and base.get(r["model"]) else None
        cells = [r["model"], r["label"], "-" if r.get("acc_tflm") is None else f"{r['acc_tflm']:.4f}",
                 "-" if r.get("sparsity") is None else f"{r['sparsity']:.1%}"]
        cells += ["-" if not r.get(k) else f"{r[k] / 1000:,.0f}" for k in ("ir_tflm", "ir_tflm_lut", "ir_f4", "ir_f4_cer",
                                                                           "ir_f4_csc")]
        cells.append("-" if ratio is None else f"{ratio:.3f}")
        body.append(cells)
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
                         + ["| " + " | ".join(c) + " |" for c in body])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


def _print_row(row) -> None:
    print(format_table([row]).splitlines()[-1] + ("   [" + "; ".join(n[:80] for n in row["notes"]) + "]" if row["notes"] else ""),
          flush=True)


def run(args) -> Dict[str, Any]:
    import tensorflow as tf

    from ecqx_tf.io import atomic_write_json
    from models import datasets
    from models.train import train_float

    tf.get_logger().setLevel("ERROR")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = datasets.load("mnist_bundled")
    results: Dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "args": vars(args), "versions": versions(), "machine": machine_info(), "dataset": data.summary(),
        "definitions": {
            "acc_keras": "test accuracy of the Keras model (QAT models with fake-quantized activations)",
            "acc_tflm": "test accuracy on the tflite_micro interpreter (reference kernels), 1 invoke per test digit",
            "sparsity": "zeros among the stored weight integers (kernels only, biases excluded)",
            "entropy": "empirical entropy (bits/weight) of the stored integers pooled over layers",
            "entropy_bound_bytes": "sum over layers of n_l * H_l / 8 (zeroth-order entropy-coding bound)",
            "lzma_weight_bytes": "xz/lzma preset 9e of the int8 weight-integer stream, TFLite layout, layers concatenated",
            "lzma_bits_per_weight": "8 * lzma_weight_bytes / weights (compare with entropy)",
            "stored_bytes": "lzma_weight_bytes + 4 bytes per bias + 4 bytes per weight scale",
            "cabac_weight_bytes": "the weight integers coded with firmware_export.entropy_coding (context-adaptive "
                                  "binary arithmetic coder, per layer; exact round trip), the counterpart of the "
                                  "authors' DeepCABAC bytes",
            "stored_bytes_cabac": "cabac_weight_bytes + 4 bytes per bias + 4 bytes per weight scale",
            "ratio": "float32 bytes of all parameters / stored_bytes",
            "tflite_bytes": ".tflite flatbuffer bytes (executable by TFLM)",
            "tflite_lut_bytes": ".tflite with TFLM LUT compression of every weight tensor (TFLM_DECODE)",
            "arena_bytes": "minimum TFLM tensor arena (bisection)",
            "f4_bytes": "FantastIC4 blob bytes, smallest layout per layer (FC-only models)",
            "ir_tflm": "instructions per inference (valgrind callgrind, inside MicroInterpreter::Invoke) of the "
                       "tflite_micro wheel's reference kernels on the plain .tflite, mean over the first "
                       "ir_samples test digits",
            "ir_tflm_lut": "the same on the LUT-compressed .tflite (decodes the weights on every call)",
            "ir_f4": "instructions per f4_invoke of the FantastIC4 C99 runtime (gcc -O2, smallest layout per "
                     "layer, the export default), same digits; C outputs checked equal to TFLM's first",
            "f4_cer_bytes": "FantastIC4 blob bytes with every layer in the CER layout (row-major, skips zero weights)",
            "ir_f4_cer": "as ir_f4 with every layer in the CER layout",
            "f4_csc_bytes": "FantastIC4 blob bytes with every layer in the CSC layout (column-major, skips inputs "
                            "at the zero point)",
            "ir_f4_csc": "as ir_f4 with every layer in the CSC layout (depends on how many inputs sit at the "
                         "zero point: MNIST background, ReLU zeros)",
            "epoch_s": "wall-clock seconds per fine-tuning epoch (callbacks included), shared 2-core machine",
        },
        "models": {}, "rows": [], "figures": {},
    }
    counter = None
    if args.instructions:
        from bench import instructions

        why = instructions.available()
        if why:
            log.warning("instruction counts off: %s", why)
            results["instructions_off"] = why
        else:
            counter = InstructionCounter(data.x_test, args.ir_samples)
    print(format_table([]), flush=True)
    for model_name in args.models:
        log.info("== %s: float training (%d epochs, seed %d)", model_name, args.float_epochs, args.seed)
        fl = train_float(model_name, data, epochs=args.float_epochs, seed=args.seed, verbose=0)
        params = int(fl.model.count_params())
        ctx = {"model": model_name, "data": data, "float": fl, "params": params, "float_bytes": 4 * params,
               "fc_only": _is_fc_only(fl.model), "epochs": args.epochs, "seed": args.seed, "bits": args.bits,
               "lambdas": args.lambdas, "sparsities": args.sparsities, "p": args.p,
               "refresh_every": args.refresh_every, "figures": {}, "counter": counter}
        fig_bits = 4 if 4 in args.bits else max(args.bits)
        fig_lam = args.lambdas[len(args.lambdas) // 2]
        ctx["figure_run"] = ("ecqx" if "ecqx" in args.paths else "ecq", fig_bits, fig_lam)
        results["models"][model_name] = {"params": params, "float32_bytes": 4 * params, "fc_only": ctx["fc_only"],
                                         "float_epochs_run": fl.epochs_run}
        for path in PATHS:
            if path not in args.paths:
                continue
            log.info("== %s: %s", model_name, path)
            try:
                new = PATH_FUNCS[path](ctx)
            except Exception as e:
                log.error("%s %s failed:\n%s", model_name, path, traceback.format_exc())
                new = [_new_row(model_name, path, path, notes=[f"failed: {type(e).__name__}: {e}"])]
            for row in new:
                if path not in ("ecq", "ecqx"):
                    _print_row(row)
            results["rows"] += new
            gc.collect()
        results["figures"][model_name] = ctx["figures"]
        results["seconds"] = time.perf_counter() - t0
        atomic_write_json(out / "compare.json", results)  # partial results survive a crash
        del fl, ctx
        gc.collect()
    if counter is not None:
        counter.close()
    results["seconds"] = time.perf_counter() - t0
    atomic_write_json(out / "compare.json", results)
    return results


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="tiny settings to check the script (float 2 epochs, fine-tune 1, 4 bits, Lambda 0.3, "
                         "sparsity 0.8, output out/compare_quick/)")
    ap.add_argument("--models", nargs="+", default=["mnist_mlp", "lenet5"], help="zoo models (default mnist_mlp lenet5)")
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS, help="paths to run (default all)")
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 5], help="ECQ/ECQx bit widths (default 2 3 4 5)")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 0.3, 0.5],
                    help="ECQ/ECQx Lambda sweep (default 0.1 0.3 0.5)")
    ap.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs of every path (default 5)")
    ap.add_argument("--float-epochs", type=int, default=10, help="float training epochs (default 10)")
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9], help="pruning targets (default 0.8 0.9)")
    ap.add_argument("--p", type=float, default=0.1, help="ECQx relevance p (default 0.1)")
    ap.add_argument("--refresh-every", type=int, default=1, help="ECQ/ECQx assignment refresh interval in steps")
    ap.add_argument("--instructions", action=argparse.BooleanOptionalAction, default=True,
                    help="count TFLM and FantastIC4 instructions per inference with valgrind callgrind "
                         "(default on; about 15 s per executable model)")
    ap.add_argument("--ir-samples", type=int, default=5, help="test digits per instruction count (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output folder (default bench/results, out/compare_quick with --quick)")
    ap.add_argument("--plots", action="store_true", help="write compare_*.png next to compare.json")
    ap.add_argument("--from-json", metavar="PATH", default=None,
                    help="train nothing: print the table of an existing compare.json (and --plots: redraw its PNGs)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    return ap


def _plots_module():
    """bench/plots.py (bench/ is a folder of scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_plots", ROOT / "plots.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.from_json:
        import json

        path = Path(args.from_json)
        results = json.loads(path.read_text())
        print(format_table(results["rows"], markdown=args.markdown))
        if any(r.get("ir_tflm") for r in results["rows"]):
            print()
            print(format_instructions(results["rows"], markdown=args.markdown))
        if args.plots:
            for p in _plots_module().render(results, path.parent):
                print(f"wrote {p}")
        return 0
    explicit = {a.dest for a in ap._actions if a.option_strings and any(o in (argv if argv is not None else sys.argv[1:])
                                                                          for o in a.option_strings)}
    if args.quick:
        for k, v in {"bits": [4], "lambdas": [0.3], "epochs": 1, "float_epochs": 2, "sparsities": [0.8]}.items():
            if k not in explicit:
                setattr(args, k, v)
    if args.out is None:
        args.out = str(REPO / "out" / "compare_quick") if args.quick else str(ROOT / "results")
    for name, v in (("--epochs", args.epochs), ("--float-epochs", args.float_epochs), ("--ir-samples", args.ir_samples)):
        if v < 1:
            ap.error(f"{name} must be >= 1, got {v}")
    if any(not 2 <= b <= 8 for b in args.bits):
        ap.error(f"--bits must be in 2..8, got {args.bits}")
    if any(not 0 < s < 1 for s in args.sparsities):
        ap.error(f"--sparsities must be in (0, 1), got {args.sparsities}")
    from models import zoo

    bad = [m for m in args.models if m not in zoo.names()]
    if bad:
        ap.error(f"unknown model(s) {bad}; accepted: {zoo.names()}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("firmware_export", "models", "ecqx_tf"):  # their progress lines would drown the table
        logging.getLogger(name).setLevel(logging.WARNING)
    results = run(args)
    print()
    print(format_table(results["rows"]))
    if any(r.get("ir_tflm") for r in results["rows"]):
        print()
        print(format_instructions(results["rows"]))
    failed = [r for r in results["rows"] if any(n.startswith("failed") for n in r["notes"])]
    if args.plots:
        written = _plots_module().render(results, Path(args.out))
        for p in written:
            print(f"wrote {p}")
    print(f"\nwrote {Path(args.out) / 'compare.json'} ({results['seconds']:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
