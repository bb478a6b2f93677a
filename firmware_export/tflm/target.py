"""The ``tflm`` export target: TFLite Micro flatbuffer + C arrays + arena + golden vectors +
host check.

``export(request, out_dir)`` writes (``<name>`` = ``request.name``):

==========================  ================================================================
``<name>.tflite``           the full-integer model (``convert.convert``; LUT-compressed with
                            ``--compress``)
``<name>_model_data.h/.cc`` ``alignas(16) const unsigned char g_<name>_model_data[]``, its size,
                            ``k<Name>TensorArenaSize`` and the ``MicroMutableOpResolver`` snippet
``<name>_golden.npz``       every evaluated sample: ``x_float``, ``x_int8``, ``y_int8`` (TFLM
                            outputs), ``labels`` (-1 when unknown)
``<name>_golden.h``         the first ``golden_header`` (default 8) samples as C arrays
``tflm_report.json``        layers (scheme, type, bytes, zeros, distinct values), notes, arena,
                            ops, host check
==========================  ================================================================

``simulate(out_dir)`` re-runs the TFLM interpreter and the simulator on the golden inputs and
checks both against the stored golden outputs, bit for bit.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ecqx_tf.fields import param, validate_fields
from ecqx_tf.io import atomic_write_bytes, atomic_write_text
from firmware_export.registry import ExportRequest, ExportTarget, register_target

__all__ = ["TFLMTarget", "TFLMOptions", "REPORT", "DEFAULT_GOLDEN_HEADER", "DEFAULT_MAX_EVAL"]

log = logging.getLogger(__name__)

REPORT = "tflm_report.json"
DEFAULT_GOLDEN_HEADER = 8
DEFAULT_MAX_EVAL = 1000


def _fmt_acc(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _class_labels(y, n: int) -> Optional[np.ndarray]:
    """``y`` as one integer class label per sample, or None when it is not that (no labels, or the
    targets of a regression/autoencoder model)."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim != 1 or len(y) < n or not np.issubdtype(y.dtype, np.integer):
        return None
    return y


@dataclasses.dataclass(frozen=True)
class TFLMOptions:
    """Options of the ``tflm`` target (``ecqx-export --target tflm --help``; ``firmware_export.export``)."""

    compress: bool = param(False, "TFLM LUT compression of the quantized weight tensors (<= 7-bit grids; adds "
                                  "TFLM_DECODE; <= 4-bit grids are then stored INT8, not INT4)")
    int8_weights: bool = param(False, "store <= 4-bit grids as INT8 (same integers) instead of packed INT4, e.g. "
                                      "to compare TFLM's int8 and INT4 kernels")
    drop_softmax: bool = param(False, "export the logits of a model that ends in a softmax (otherwise the "
                                      "softmax is exported as a SOFTMAX op)")
    golden_header: int = param(DEFAULT_GOLDEN_HEADER, "samples in <name>_golden.h", low=0)
    max_eval: int = param(DEFAULT_MAX_EVAL, "test samples in the host check", low=1, cli=False)

    def __post_init__(self) -> None:
        validate_fields(self, "tflm options")


@register_target("tflm")
class TFLMTarget(ExportTarget):
    name = "tflm"
    help = ("TensorFlow Lite Micro: full-integer .tflite whose INT4/INT8 weights are the ECQ integers, "
            "C arrays, arena size, golden vectors, host check against the TFLM interpreter")

    options = TFLMOptions

    # ------------------------------------------------------------------------------------------
    def export(self, request: ExportRequest, out_dir: Path) -> Dict[str, Any]:
        """Write the files listed in the module docstring; return the summary.

        Raises:
            ValueError: bad name/options, unsupported model (see ``convert.plan_model``).
        """
        from . import arena as arena_mod
        from .c_arrays import check_identifier, model_data_files
        from .convert import convert
        from .flatbuffer import read_model
        from .simulate import golden_header, host_check, write_golden

        out = Path(out_dir)
        name = check_identifier(request.name)
        opts = dict(request.options or {})
        n_header = int(opts.get("golden_header", DEFAULT_GOLDEN_HEADER))
        if n_header < 0:
            raise ValueError(f"golden_header must be >= 0, got {n_header}")

        log.info("converting to TFLite (compress=%s)", bool(opts.get("compress", False)))
        res = convert(request)
        model_bytes = res.model_bytes
        model = read_model(model_bytes)

        log.info("finding the minimal tensor arena")
        arena_min, arena = arena_mod.arena_sizes(model_bytes)

        if request.x_test is not None and len(request.x_test):
            x_eval = np.asarray(request.x_test, np.float32)
            y_eval = _class_labels(request.y_test, len(x_eval))
            source = "x_test"
        else:
            x_eval, y_eval, source = np.asarray(request.representative, np.float32), None, "representative"
        limit = int(opts.get("max_eval", DEFAULT_MAX_EVAL))
        x_eval = x_eval[:limit]
        y_eval = None if y_eval is None else y_eval[: len(x_eval)]

        log.info("host check on %d samples (TFLM interpreter vs simulator vs BUILTIN_REF)", len(x_eval))
        float_out = res.reference_outputs(x_eval)
        classifier = y_eval is not None or res.operators[-1] in ("SOFTMAX", "LOGISTIC")
        hc = host_check(model_bytes, x_eval, y_eval, float_outputs=float_out, arena_size=arena,
                        argmax=classifier)

        inp = model.tensors[model.inputs[0]]
        outp = model.tensors[model.outputs[0]]
        files: List[str] = []

        def put_bytes(fname: str, data: bytes) -> None:
            atomic_write_bytes(out / fname, data)
            files.append(fname)

        def put_text(fname: str, text: str) -> None:
            atomic_write_text(out / fname, text)
            files.append(fname)

        put_bytes(f"{name}.tflite", model_bytes)
        (h_name, h_text), (cc_name, cc_text) = model_data_files(
            name, model_bytes, arena, res.ops,
            header_comment=[f"{len(model_bytes)} bytes; ops: {', '.join(res.ops)}; "
                            f"minimal arena {arena_min} bytes (host, reference kernels)"],
        )
        put_text(h_name, h_text)
        put_text(cc_name, cc_text)
        golden_npz = f"{name}_golden.npz"
        write_golden(out / golden_npz, x_eval, hc.x_int8, hc.y_tflm, y_eval)
        files.append(golden_npz)
        k = min(n_header, len(x_eval))
        put_text(f"{name}_golden.h", golden_header(
            name, hc.x_int8[:k], hc.y_tflm[:k], None if y_eval is None else y_eval[:k],
            float(inp.quantization.scale[0]), int(inp.quantization.zero_point[0]),
            float(outp.quantization.scale[0]), int(outp.quantization.zero_point[0]),
        ))

        summary = res.summary()
        weight_bytes = summary["weight_bytes"]
        report: Dict[str, Any] = {
            "target": self.name,
            "name": name,
            "tflite": f"{name}.tflite",
            "golden": {"file": golden_npz, "header": f"{name}_golden.h", "samples": int(len(x_eval)),
                       "header_samples": int(k), "source": source},
            "input": {"shape": list(inp.shape), "scale": float(inp.quantization.scale[0]),
                      "zero_point": int(inp.quantization.zero_point[0])},
            "output": {"shape": list(outp.shape), "scale": float(outp.quantization.scale[0]),
                       "zero_point": int(outp.quantization.zero_point[0])},
            "flatbuffer_bytes": len(model_bytes),
            "uncompressed_flatbuffer_bytes": summary["uncompressed_flatbuffer_bytes"],
            "weight_bytes": weight_bytes,
            "compressed": summary["compressed"],
            "ops": res.ops,
            "operators": res.operators,
            "data": request.data_description if request.data_description is not None else {
                "calibration": f"{len(request.representative)} samples given in ExportRequest.representative "
                               "(not described by the caller)"},
            "arena": {"minimum": arena_min, "recommended": arena, "margin": arena_mod.ARENA_MARGIN,
                      "align": arena_mod.ARENA_ALIGN, "kernels": "TFLM reference kernels (host-measured; they "
                      "unpack INT4 filters into the arena, see docs/export-tflm.md)"},
            "layers": summary["layers"],
            "notes": summary["notes"],
            "host_check": hc.to_dict(),
            "ok": bool(hc.ok),
        }
        put_text(REPORT, json.dumps(report, indent=2, sort_keys=True) + "\n")
        report["files"] = sorted(files)
        report["table"] = [
            ["flatbuffer", f"{len(model_bytes):,} bytes" + (
                f" (uncompressed {summary['uncompressed_flatbuffer_bytes']:,})" if summary["compressed"] else "")],
            ["weights", f"{weight_bytes:,} bytes in {len(summary['layers'])} weight tensors "
                        f"({', '.join(sorted({r['weight_type'] for r in summary['layers']}))})"],
            ["arena", f"{arena:,} bytes (minimum {arena_min:,} + {arena_mod.ARENA_MARGIN} margin, 16-aligned)"],
            ["ops", ", ".join(res.ops)],
            ["accuracy float", _fmt_acc(hc.acc_float)],
            ["accuracy TFLite (BUILTIN_REF)", _fmt_acc(hc.acc_tflite) if hc.tflite_ref == "ran" else hc.tflite_ref],
            ["accuracy TFLM", _fmt_acc(hc.acc_tflm)],
            ["argmax agreement float/TFLM", _fmt_acc(hc.agreement_float_tflm)],
            ["TFLM vs simulator", f"{hc.mismatches_simulator} of {hc.samples} samples differ"],
        ]
        if hc.mismatches_tflite_ref is not None:
            report["table"].append(["TFLM vs BUILTIN_REF", f"{hc.mismatches_tflite_ref} of {hc.samples} samples differ"])
        return report

    # ------------------------------------------------------------------------------------------
    def simulate(self, out_dir: Path) -> Dict[str, Any]:
        """Re-run TFLM and the simulator on the stored golden inputs.

        Raises:
            FileNotFoundError: ``out_dir`` is not a tflm export (``tflm_report.json`` missing).
        """
        from .simulate import read_golden, run_tflm, simulate

        out = Path(out_dir)
        rpath = out / REPORT
        if not rpath.is_file():
            raise FileNotFoundError(f"{str(out)!r} is not a tflm export ({REPORT} missing)")
        report = json.loads(rpath.read_text())
        model_bytes = (out / report["tflite"]).read_bytes()
        g = read_golden(out / report["golden"]["file"])
        x, expected = g["x_int8"], g["y_int8"]
        y_tflm = run_tflm(model_bytes, x, report["arena"]["recommended"])
        y_sim = simulate(model_bytes, x)

        def diff(a, b) -> int:
            return int(np.sum(np.any((a != b).reshape(len(x), -1), axis=1)))

        labels = g["labels"]
        acc = None
        if len(labels) == len(x) and np.all(labels >= 0):
            acc = float(np.mean(np.argmax(y_tflm.reshape(len(x), -1), axis=1) == labels))
        result = {
            "target": self.name,
            "samples": int(len(x)),
            "tflm_vs_golden": diff(y_tflm, expected),
            "simulator_vs_golden": diff(y_sim, expected),
            "tflm_vs_simulator": diff(y_tflm, y_sim),
            "accuracy_tflm": acc,
            "arena": report["arena"]["recommended"],
        }
        result["ok"] = result["tflm_vs_golden"] == 0 and result["simulator_vs_golden"] == 0
        return result
