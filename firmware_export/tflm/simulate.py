"""A NumPy integer simulator of TFLM's reference kernels, and the host check that compares it
(and TFLite's BUILTIN_REF interpreter) with the real TFLM interpreter bit for bit.

Every kernel is a ``(prepare, eval)`` pair named after TFLM's: ``prepare`` validates the op and
precomputes what TFLM's Prepare computes (requantization multipliers, activation clamps,
padding), ``eval`` only reads. ``KERNELS`` is the one table that drives dispatch and the
"unsupported op" error. Arithmetic: ``firmware_export.intmath`` (TFLite's
``MultiplyByQuantizedMultiplier`` etc.); the simulator runs a whole batch at once (the leading
dimension of every activation is the sample index, where the model has 1).

Multipliers, as TFLM computes them:

* FULLY_CONNECTED, per-tensor: ``QuantizeMultiplier(double(float(s_in * s_w)) / s_out)``
  (``GetQuantizedConvolutionMultipler``: the product of the two float32 scales in float32);
* FULLY_CONNECTED per-channel, CONV_2D, DEPTHWISE_CONV_2D: per output channel
  ``QuantizeMultiplier(double(s_in) * double(s_w[c]) / double(s_out))``
  (``PopulateConvolutionQuantizationParams``).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import intmath
from . import flatbuffer as fb

__all__ = [
    "KERNELS",
    "simulate",
    "run_tflm",
    "run_tflite_ref",
    "HostCheck",
    "host_check",
    "write_golden",
    "read_golden",
    "golden_header",
]

log = logging.getLogger(__name__)

ModelLike = Union[bytes, fb.TFLiteModel]


def _model(m: ModelLike) -> fb.TFLiteModel:
    return m if isinstance(m, fb.TFLiteModel) else fb.read_model(m)


# --------------------------------------------------------------------------------------------
# Shared helpers (TFLite kernel_util / padding / common)
# --------------------------------------------------------------------------------------------
def _round_half_away(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _quantize_f32(scale: float, zero_point: int, f: float) -> int:
    """kernel_util ``Quantize``: ``zp + (int)TfLiteRound(f / scale)`` in float32."""
    tmp = np.float32(f) / np.float32(scale)
    return int(zero_point) + int(_round_half_away(np.float32(tmp)))


def calculate_activation_range_quantized(activation: str, scale: float, zero_point: int) -> Tuple[int, int]:
    """``CalculateActivationRangeQuantized`` for int8 outputs."""
    qmin, qmax = -128, 127
    if activation == "NONE":
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, _quantize_f32(scale, zero_point, 0.0)), qmax
    if activation == "RELU6":
        return max(qmin, _quantize_f32(scale, zero_point, 0.0)), min(qmax, _quantize_f32(scale, zero_point, 6.0))
    if activation == "RELU_N1_TO_1":
        return max(qmin, _quantize_f32(scale, zero_point, -1.0)), min(qmax, _quantize_f32(scale, zero_point, 1.0))
    raise ValueError(f"fused activation {activation!r} is not simulated (accepted: NONE, RELU, RELU6, RELU_N1_TO_1)")


def compute_padding(in_size: int, filter_size: int, stride: int, dilation: int, padding: str) -> Tuple[int, int]:
    """(out_size, pad_before) as TFLite's ``ComputePaddingHeightWidth``."""
    eff = (filter_size - 1) * dilation + 1
    if padding == "SAME":
        out = (in_size + stride - 1) // stride
    elif padding == "VALID":
        out = (in_size - eff + stride) // stride
    else:
        raise ValueError(f"padding {padding!r} is not simulated (accepted: SAME, VALID)")
    total = max((out - 1) * stride + eff - in_size, 0)
    return out, total // 2


def _trunc_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C++ integer division (truncates toward zero), b > 0."""
    q = np.abs(a) // b
    return np.where(a < 0, -q, q)


def _requantize(acc: np.ndarray, multipliers: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """MultiplyByQuantizedMultiplier per output channel (last axis)."""
    out = np.empty(acc.shape, dtype=np.int64)
    if multipliers.size == 1:
        return np.asarray(intmath.multiply_by_quantized_multiplier(acc, int(multipliers[0]), int(shifts[0])), dtype=np.int64)
    for c in range(acc.shape[-1]):
        out[..., c] = intmath.multiply_by_quantized_multiplier(acc[..., c], int(multipliers[c]), int(shifts[c]))
    return out


def _qparams(t: fb.Tensor, what: str) -> Tuple[float, int]:
    if t.quantization is None:
        raise ValueError(f"{what} tensor {t.name!r} is not quantized")
    return float(t.quantization.scale[0]), int(t.quantization.zero_point[0])


def _check_int8(t: fb.Tensor, what: str) -> None:
    if t.dtype != "INT8":
        raise ValueError(f"{what} tensor {t.name!r} is {t.dtype}; the simulator runs int8 activations only")


# --------------------------------------------------------------------------------------------
# Kernels: prepare (validate + precompute) / eval (read only)
# --------------------------------------------------------------------------------------------
def _prepare_conv_like(model: fb.TFLiteModel, op: fb.Operator, per_tensor_float_product: bool) -> Dict[str, Any]:
    x, w, y = (model.tensors[op.inputs[0]], model.tensors[op.inputs[1]], model.tensors[op.outputs[0]])
    _check_int8(x, op.name + " input")
    _check_int8(y, op.name + " output")
    s_in, zp_in = _qparams(x, op.name + " input")
    s_out, zp_out = _qparams(y, op.name + " output")
    if w.quantization is None:
        raise ValueError(f"{op.name} op {op.index}: weights {w.name!r} are not quantized")
    if np.any(w.quantization.zero_point != 0):
        raise ValueError(f"{op.name} op {op.index}: weights {w.name!r} must have zero point 0")
    weights = model.constant_values(w.index).astype(np.int64)
    w_scales = w.quantization.scale.astype(np.float32)
    bias = None
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = model.constant_values(op.inputs[2]).astype(np.int64)
    n_out = weights.shape[0] if op.name != "DEPTHWISE_CONV_2D" else weights.shape[-1]
    if per_tensor_float_product and w_scales.size == 1:
        m, s = intmath.quantize_multiplier(intmath.conv_multiplier(s_in, float(w_scales[0]), s_out))
        mults, shifts = np.array([m]), np.array([s])
    else:
        scales = np.broadcast_to(w_scales, (n_out,)) if w_scales.size == 1 else w_scales
        pairs = [intmath.quantize_multiplier(float(np.float64(np.float32(s_in))) * float(np.float64(sc)) /
                                             float(np.float64(np.float32(s_out)))) for sc in scales]
        mults = np.array([p[0] for p in pairs], dtype=np.int64)
        shifts = np.array([p[1] for p in pairs], dtype=np.int64)
    act = op.options.get("fused_activation", "NONE")
    act_min, act_max = calculate_activation_range_quantized(act, s_out, zp_out)
    return dict(weights=weights, bias=bias, zp_in=zp_in, zp_out=zp_out, mults=mults, shifts=shifts,
                act_min=act_min, act_max=act_max, out_shape=y.shape)


def prepare_fully_connected(model, op):
    d = _prepare_conv_like(model, op, per_tensor_float_product=True)
    if op.options.get("keep_num_dims"):
        raise ValueError(f"FULLY_CONNECTED op {op.index}: keep_num_dims=True is not simulated")
    return d


def eval_fully_connected(d, x):
    w = d["weights"]  # [out, in]
    xs = x.reshape(-1, w.shape[1]).astype(np.int64) - d["zp_in"]
    acc = xs @ w.T
    if d["bias"] is not None:
        acc = acc + d["bias"]
    acc = _requantize(acc, d["mults"], d["shifts"]) + d["zp_out"]
    return np.clip(acc, d["act_min"], d["act_max"]).astype(np.int8).reshape((x.shape[0],) + tuple(d["out_shape"][1:]))


def _prepare_spatial(model, op, d):
    x = model.tensors[op.inputs[0]]
    o = op.options
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        kh, kw = d["weights"].shape[1], d["weights"].shape[2]
        dh, dw = o.get("dilation_h", 1), o.get("dilation_w", 1)
    else:
        kh, kw = o["filter_height"], o["filter_width"]
        dh = dw = 1
    sh, sw = o["stride_h"], o["stride_w"]
    oh, ph = compute_padding(x.shape[1], kh, sh, dh, o["padding"])
    ow, pw = compute_padding(x.shape[2], kw, sw, dw, o["padding"])
    d.update(kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, oh=oh, ow=ow, ph=ph, pw=pw)
    return d


def _padded(x: np.ndarray, d, fill: int) -> np.ndarray:
    """Pad NHWC so that every window of the op lies inside (``fill`` outside the image)."""
    n, h, w, c = x.shape
    need_h = (d["oh"] - 1) * d["sh"] + (d["kh"] - 1) * d["dh"] + 1
    need_w = (d["ow"] - 1) * d["sw"] + (d["kw"] - 1) * d["dw"] + 1
    bottom = max(need_h - h - d["ph"], 0)
    right = max(need_w - w - d["pw"], 0)
    return np.pad(x, ((0, 0), (d["ph"], bottom), (d["pw"], right), (0, 0)), constant_values=fill)


def _windows(xp: np.ndarray, d):
    for ky in range(d["kh"]):
        for kx in range(d["kw"]):
            y0, x0 = ky * d["dh"], kx * d["dw"]
            yield ky, kx, xp[:, y0 : y0 + (d["oh"] - 1) * d["sh"] + 1 : d["sh"], x0 : x0 + (d["ow"] - 1) * d["sw"] + 1 : d["sw"], :]


def prepare_conv_2d(model, op):
    return _prepare_spatial(model, op, _prepare_conv_like(model, op, per_tensor_float_product=False))


def eval_conv_2d(d, x):
    w = d["weights"]  # OHWI
    # Out-of-image taps contribute nothing in TFLM (the input offset is added only inside), which is
    # the same as padding (x - zp) with zeros.
    xp = _padded(x.astype(np.int64) - d["zp_in"], d, 0)
    acc = np.zeros((x.shape[0], d["oh"], d["ow"], w.shape[0]), dtype=np.int64)
    for ky, kx, patch in _windows(xp, d):
        acc += patch @ w[:, ky, kx, :].T
    if d["bias"] is not None:
        acc += d["bias"]
    acc = _requantize(acc, d["mults"], d["shifts"]) + d["zp_out"]
    return np.clip(acc, d["act_min"], d["act_max"]).astype(np.int8)


def prepare_depthwise_conv_2d(model, op):
    d = _prepare_spatial(model, op, _prepare_conv_like(model, op, per_tensor_float_product=False))
    x = model.tensors[op.inputs[0]]
    mult = op.options.get("depth_multiplier", 1) or d["weights"].shape[-1] // x.shape[-1]
    if d["weights"].shape[-1] != x.shape[-1] * mult:
        raise ValueError(f"DEPTHWISE_CONV_2D op {op.index}: {d['weights'].shape[-1]} filter channels for "
                         f"{x.shape[-1]} inputs x multiplier {mult}")
    d["mult"] = mult
    return d


def eval_depthwise_conv_2d(d, x):
    w = d["weights"][0]  # [H, W, C*M], output channel = ic * M + m
    xp = _padded(x.astype(np.int64) - d["zp_in"], d, 0)
    acc = np.zeros((x.shape[0], d["oh"], d["ow"], w.shape[-1]), dtype=np.int64)
    for ky, kx, patch in _windows(xp, d):
        acc += np.repeat(patch, d["mult"], axis=-1) * w[ky, kx, :]
    if d["bias"] is not None:
        acc += d["bias"]
    acc = _requantize(acc, d["mults"], d["shifts"]) + d["zp_out"]
    return np.clip(acc, d["act_min"], d["act_max"]).astype(np.int8)


def _prepare_pool(model, op):
    x, y = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
    _check_int8(x, op.name + " input")
    _check_int8(y, op.name + " output")
    s_out, zp_out = _qparams(y, op.name + " output")
    if _qparams(x, op.name + " input") != (s_out, zp_out):
        raise ValueError(f"{op.name} op {op.index}: input and output quantization differ (TFLite requires equal)")
    act_min, act_max = calculate_activation_range_quantized(op.options.get("fused_activation", "NONE"), s_out, zp_out)
    return _prepare_spatial(model, op, dict(act_min=act_min, act_max=act_max))


def eval_max_pool_2d(d, x):
    xp = _padded(x.astype(np.int64), d, -(1 << 20))
    out = None
    for _, _, patch in _windows(xp, d):
        out = patch if out is None else np.maximum(out, patch)
    return np.clip(out, d["act_min"], d["act_max"]).astype(np.int8)


def eval_average_pool_2d(d, x):
    xp = _padded(x.astype(np.int64), d, 0)
    inside = _padded(np.ones(x.shape[:3] + (1,), dtype=np.int64), d, 0)
    acc = count = 0
    for (_, _, patch), (_, _, ones) in zip(_windows(xp, d), _windows(inside, d)):
        acc = acc + patch
        count = count + ones
    # reference_integer_ops::AveragePool: round half away from zero with C++ division.
    half = count // 2
    avg = np.where(acc > 0, _trunc_div(acc + half, count), _trunc_div(acc - half, count))
    return np.clip(avg, d["act_min"], d["act_max"]).astype(np.int8)


def prepare_reshape(model, op):
    x, y = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
    if x.dtype != y.dtype or (x.quantization is not None and y.quantization is not None
                              and _qparams(x, "RESHAPE input") != _qparams(y, "RESHAPE output")):
        raise ValueError(f"RESHAPE op {op.index}: input and output type/quantization differ")
    return dict(out_shape=y.shape)


def eval_reshape(d, x):
    return x.reshape((x.shape[0],) + tuple(d["out_shape"][1:]))


def prepare_decode(model, op):
    # The decoded constants are produced by fb.TFLiteModel.constant_values (flatbuffer.decode_lut),
    # which the weight kernels call in their prepare; nothing flows through the activations.
    for k in range(len(op.outputs)):
        model.constant_values(op.outputs[k])
    return {}


KERNELS: Dict[str, Tuple[Callable, Optional[Callable]]] = {
    "FULLY_CONNECTED": (prepare_fully_connected, eval_fully_connected),
    "CONV_2D": (prepare_conv_2d, eval_conv_2d),
    "DEPTHWISE_CONV_2D": (prepare_depthwise_conv_2d, eval_depthwise_conv_2d),
    "MAX_POOL_2D": (_prepare_pool, eval_max_pool_2d),
    "AVERAGE_POOL_2D": (_prepare_pool, eval_average_pool_2d),
    "RESHAPE": (prepare_reshape, eval_reshape),
    fb.DECODE_OP: (prepare_decode, None),
}


def simulate(model_bytes: ModelLike, x_int8: np.ndarray) -> np.ndarray:
    """Run the model's int8 graph on a batch of int8 inputs (shape ``(n, *input_shape[1:])``).

    Raises:
        ValueError: an op outside ``KERNELS`` (naming it and the supported ones), a non-int8
            input, or an input of the wrong shape.
    """
    model = _model(model_bytes)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError("the simulator runs single-input single-output models")
    inp = model.tensors[model.inputs[0]]
    x = np.asarray(x_int8)
    if x.dtype != np.int8:
        raise TypeError(f"x_int8 must be int8, got {x.dtype}")
    if tuple(x.shape[1:]) != tuple(inp.shape[1:]):
        raise ValueError(f"x_int8 has sample shape {list(x.shape[1:])}, the model takes {list(inp.shape[1:])}")
    prepared = []
    for op in model.operators:
        if op.name not in KERNELS:
            raise ValueError(f"op {op.index} {op.name} is not simulated; supported: {', '.join(KERNELS)}")
        prepare, evaluate = KERNELS[op.name]
        prepared.append((op, prepare(model, op), evaluate))
    values: Dict[int, np.ndarray] = {model.inputs[0]: x}
    for op, data, evaluate in prepared:
        if evaluate is None:
            continue
        values[op.outputs[0]] = evaluate(data, values[op.inputs[0]])
    return values[model.outputs[0]]


# --------------------------------------------------------------------------------------------
# Real interpreters
# --------------------------------------------------------------------------------------------
def run_tflm(model_bytes: bytes, x_int8: np.ndarray, arena_size: Optional[int] = None) -> np.ndarray:
    """The real TFLM interpreter (``tflite_micro.runtime``), one invoke per sample."""
    from tflite_micro import runtime

    from .arena import arena_sizes

    if arena_size is None:
        arena_size = arena_sizes(model_bytes)[1]
    interp = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=int(arena_size))
    x = np.asarray(x_int8, dtype=np.int8)
    outs = []
    for i in range(len(x)):
        interp.set_input(x[i : i + 1], 0)
        interp.invoke()
        outs.append(np.array(interp.get_output(0), copy=True))
    return np.concatenate(outs, axis=0) if outs else np.zeros((0,), np.int8)


def run_tflite_ref(model_bytes: bytes, x_int8: np.ndarray) -> np.ndarray:
    """``tf.lite.Interpreter`` with the BUILTIN_REF resolver, one invoke per sample.

    Raises:
        RuntimeError: the interpreter cannot run the model (e.g. INT4 FULLY_CONNECTED v10 on TF 2.14).
    """
    import tensorflow as tf

    try:
        interp = tf.lite.Interpreter(
            model_content=bytes(model_bytes),
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF,
        )
        interp.allocate_tensors()
    except Exception as e:  # TF raises ValueError/RuntimeError for unsupported op versions
        raise RuntimeError(f"tf.lite BUILTIN_REF cannot run the model: {e}") from None
    i_idx = interp.get_input_details()[0]["index"]
    o_idx = interp.get_output_details()[0]["index"]
    x = np.asarray(x_int8, dtype=np.int8)
    outs = []
    for i in range(len(x)):
        interp.set_tensor(i_idx, x[i : i + 1])
        interp.invoke()
        outs.append(np.array(interp.get_tensor(o_idx), copy=True))
    return np.concatenate(outs, axis=0)


def _ref_skip_reason(model: fb.TFLiteModel) -> Optional[str]:
    if any(t.dtype == "INT4" for _, t in fb.weight_tensors(model)):
        return "INT4 weights: TF 2.14's BUILTIN_REF resolver does not run them (FULLY_CONNECTED v10)"
    if fb.DECODE_OP in model.op_set():
        return "TFLM_DECODE is a TFLM-only custom op"
    return None


# --------------------------------------------------------------------------------------------
# Host check
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class HostCheck:
    """TFLM vs simulator (vs BUILTIN_REF) on every sample.

    ``mismatches_*`` count samples whose int8 output vector differs in any element.
    Accuracies are ``None`` without labels; ``acc_float``/``agreement`` need float outputs.
    """

    samples: int
    mismatches_simulator: int
    mismatches_tflite_ref: Optional[int]
    tflite_ref: str  # "ran" or why it was skipped
    acc_float: Optional[float]
    acc_tflite: Optional[float]
    acc_tflm: Optional[float]
    agreement_float_tflm: Optional[float]
    max_abs_error: Optional[float]  # |dequantized TFLM output - float output|, max over all
    x_int8: np.ndarray = dataclasses.field(repr=False)
    y_tflm: np.ndarray = dataclasses.field(repr=False)
    y_simulator: np.ndarray = dataclasses.field(repr=False)

    @property
    def ok(self) -> bool:
        return self.mismatches_simulator == 0 and not self.mismatches_tflite_ref

    def to_dict(self) -> Dict[str, Any]:
        keys = ["samples", "mismatches_simulator", "mismatches_tflite_ref", "tflite_ref", "acc_float", "acc_tflite",
                "acc_tflm", "agreement_float_tflm", "max_abs_error"]
        return {k: getattr(self, k) for k in keys}


def _acc(logits: Optional[np.ndarray], y: Optional[np.ndarray]) -> Optional[float]:
    if logits is None or y is None:
        return None
    return float(np.mean(np.argmax(logits.reshape(len(logits), -1), axis=1) == np.asarray(y).reshape(-1)))


def host_check(model_bytes: bytes, x_float: Optional[np.ndarray] = None, y: Optional[np.ndarray] = None, *,
               x_int8: Optional[np.ndarray] = None, float_outputs: Optional[np.ndarray] = None,
               arena_size: Optional[int] = None) -> HostCheck:
    """Run the real TFLM interpreter, the simulator and (int8 weights only) BUILTIN_REF on every
    sample and compare the int8 outputs bit for bit.

    Args:
        model_bytes: the ``.tflite``.
        x_float: float inputs (quantized with the model's input scale/zero point), or
        x_int8: already-quantized inputs (e.g. golden vectors); one of the two is required.
        y: integer labels, for accuracies.
        float_outputs: the float model's outputs on ``x_float`` (logits or probabilities), for
            the float accuracy and the float-vs-TFLM agreement.
        arena_size: defaults to the recommended arena (``arena.arena_sizes``).
    """
    from .convert import dequantize_output, quantize_input

    model = _model(model_bytes)
    if x_int8 is None:
        if x_float is None:
            raise ValueError("host_check needs x_float or x_int8")
        x_int8 = quantize_input(model, x_float)
    x_int8 = np.asarray(x_int8, dtype=np.int8)
    y_tflm = run_tflm(model_bytes, x_int8, arena_size)
    y_sim = simulate(model, x_int8)
    mism_sim = int(np.sum(np.any((y_tflm != y_sim).reshape(len(x_int8), -1), axis=1)))
    reason = _ref_skip_reason(model)
    y_ref = mism_ref = None
    if reason is None:
        try:
            y_ref = run_tflite_ref(model_bytes, x_int8)
            mism_ref = int(np.sum(np.any((y_tflm != y_ref).reshape(len(x_int8), -1), axis=1)))
            reason = "ran"
        except RuntimeError as e:
            reason = str(e)
    else:
        reason = "skipped: " + reason
    max_err = agreement = None
    if float_outputs is not None:
        fo = np.asarray(float_outputs, dtype=np.float32).reshape(len(x_int8), -1)
        deq = dequantize_output(model, y_tflm).reshape(len(x_int8), -1)
        max_err = float(np.max(np.abs(deq - fo))) if fo.size else 0.0
        agreement = float(np.mean(np.argmax(fo, axis=1) == np.argmax(deq, axis=1)))
    return HostCheck(
        samples=int(len(x_int8)),
        mismatches_simulator=mism_sim,
        mismatches_tflite_ref=mism_ref,
        tflite_ref=reason,
        acc_float=_acc(float_outputs, y),
        acc_tflite=_acc(y_ref, y),
        acc_tflm=_acc(y_tflm, y),
        agreement_float_tflm=agreement,
        max_abs_error=max_err,
        x_int8=x_int8,
        y_tflm=y_tflm,
        y_simulator=y_sim,
    )


# --------------------------------------------------------------------------------------------
# Golden vectors
# --------------------------------------------------------------------------------------------
GOLDEN_KEYS = ("x_float", "x_int8", "y_int8", "labels")


def write_golden(path, x_float: Optional[np.ndarray], x_int8: np.ndarray, y_int8: np.ndarray,
                 labels: Optional[np.ndarray]) -> None:
    """``.npz`` with ``x_float`` (float32), ``x_int8``, ``y_int8`` (the TFLM outputs) and ``labels``
    (int64, -1 when unknown); written atomically and deterministically (no timestamps)."""
    import io as _io
    import zipfile

    from ecqx_tf.io import atomic_write_bytes

    n = len(x_int8)
    arrays = {
        "x_float": np.zeros((0,), np.float32) if x_float is None else np.asarray(x_float, np.float32),
        "x_int8": np.asarray(x_int8, np.int8),
        "y_int8": np.asarray(y_int8, np.int8),
        "labels": np.full(n, -1, np.int64) if labels is None else np.asarray(labels, np.int64).reshape(-1),
    }
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in GOLDEN_KEYS:
            a = _io.BytesIO()
            np.lib.format.write_array(a, arrays[key], allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, a.getvalue())
    atomic_write_bytes(path, buf.getvalue())


def read_golden(path) -> Dict[str, np.ndarray]:
    """Inverse of :func:`write_golden`.

    Raises:
        ValueError: the file is not a golden-vector archive.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in GOLDEN_KEYS}
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{str(path)!r} is not a golden-vector file ({e})") from None
    return out


def _c_rows(values: np.ndarray, per_line: int = 16) -> str:
    flat = [str(int(v)) for v in np.asarray(values).ravel()]
    return "\n".join("    " + ", ".join(flat[i : i + per_line]) + "," for i in range(0, len(flat), per_line))


def golden_header(name: str, x_int8: np.ndarray, y_int8: np.ndarray, labels: Optional[np.ndarray],
                  in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> str:
    """A C header with a few golden samples: int8 inputs, the expected int8 outputs, labels."""
    from .c_arrays import camel_case, check_identifier

    check_identifier(name)
    n = len(x_int8)
    xin = np.asarray(x_int8).reshape(n, -1)
    yout = np.asarray(y_int8).reshape(n, -1)
    lab = np.full(n, -1) if labels is None else np.asarray(labels).reshape(-1)
    guard = f"ECQX_{name.upper()}_GOLDEN_H_"
    cn = camel_case(name)
    lines = [
        "// Golden vectors for the TFLM model g_%s_model_data, generated by ecqx-export. Do not edit." % name,
        "// Inputs are already quantized (int8 = round(x / scale) + zero_point); outputs are what the",
        "// TFLM reference kernels produce. labels[i] is -1 when unknown.",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <cstdint>",
        "",
        f"constexpr int k{cn}GoldenCount = {n};",
        f"constexpr int k{cn}GoldenInputSize = {xin.shape[1]};",
        f"constexpr int k{cn}GoldenOutputSize = {yout.shape[1]};",
        f"constexpr float k{cn}InputScale = {float(np.float32(in_scale))!r}f;",
        f"constexpr int k{cn}InputZeroPoint = {int(in_zp)};",
        f"constexpr float k{cn}OutputScale = {float(np.float32(out_scale))!r}f;",
        f"constexpr int k{cn}OutputZeroPoint = {int(out_zp)};",
        "",
        f"alignas(16) const int8_t g_{name}_golden_inputs[{n}][{xin.shape[1]}] = {{",
    ]
    for i in range(n):
        lines += ["  {", _c_rows(xin[i]), "  },"]
    lines += ["};", "", f"const int8_t g_{name}_golden_outputs[{n}][{yout.shape[1]}] = {{"]
    for i in range(n):
        lines += ["  {", _c_rows(yout[i]), "  },"]
    lines += ["};", "", f"const int g_{name}_golden_labels[{n}] = {{", _c_rows(lab), "};", "", f"#endif  // {guard}", ""]
    return "\n".join(lines)
