"""A NumPy integer simulator of TFLM's reference kernels, and the host check that compares it
(and TFLite's BUILTIN_REF interpreter) with the real TFLM interpreter bit for bit.

The model is run as a graph: tensors by index, operators in the model's order, each operator
reading its activation inputs (one or several) and writing its output. Every kernel is a
``(prepare, eval)`` pair named after TFLM's: ``prepare`` validates the op and precomputes what
TFLM's Prepare computes (requantization multipliers, activation clamps, padding, lookup
constants), ``eval`` only reads. ``KERNELS`` is the one table that drives dispatch and the
"unsupported op" error. The simulator runs a whole batch at once (the leading dimension of every
activation is the sample index where the model has 1).

Sources (tensorflow/tflite-micro; the kernel files under ``tensorflow/lite/micro/kernels`` and the
reference implementations under ``tensorflow/lite/kernels/internal/reference``), per op:

======================  ==========================================================================
FULLY_CONNECTED         ``fully_connected_common.cc`` + ``integer_ops/fully_connected.h``:
                        ``acc = bias + sum (x - zp_in) * w``; ``MultiplyByQuantizedMultiplier``;
                        ``+ zp_out``; clamp. Multiplier ``intmath.conv_multiplier`` (double
                        product), per tensor or per output channel (INT8 only).
CONV_2D                 ``conv_common.cc`` + ``integer_ops/conv.h``: per output channel multipliers
                        (``PopulateConvolutionQuantizationParams``), taps outside the image skipped.
DEPTHWISE_CONV_2D       ``depthwise_conv_common.cc`` + ``integer_ops/depthwise_conv.h``: output
                        channel ``c * depth_multiplier + m`` reads input channel ``c``.
MAX_POOL_2D             ``integer_ops/pooling.h``: max over in-image taps, clamp.
AVERAGE_POOL_2D         same; sum of in-image taps divided by their count, rounded half away from
                        zero with C division.
ADD                     ``add_common.cc`` + ``integer_ops/add.h``: ``left_shift = 20``; inputs
                        rescaled by ``s_i / (2 max(s_1, s_2))``, sum rescaled by
                        ``2 max / (2^20 s_out)`` (``QuantizeMultiplierSmallerThanOneExp``).
CONCATENATION           ``concatenation.cc``: int8 data are copied; the pinned TFLM refuses inputs
                        whose quantization differs from the output's (no requantization).
PAD                     ``pad.cc``: copy, border filled with the output zero point.
MEAN                    ``reduce_common.cc`` + ``reduce.h`` (``QuantizedMeanOrSum``): the int32 sum
                        of ``x - zp_in`` over the ``n`` reduced values, ``MultiplyByQuantizedMultiplier``
                        by ``QuantizeMultiplier(s_in / s_out)`` with ``1/n`` folded in
                        (``k = min(floor(log2 n), 32, 31 + shift)``, multiplier ``(m << k) // n``,
                        shift ``- k``), ``+ zp_out``, clamped; the same for equal and different
                        input/output quantization (checked against the pinned interpreter: its
                        integer MEAN has no separate equal-scale path).
LOGISTIC                ``logistic_common.cc`` + ``integer_ops/logistic.h``: input rescaled to Q4.27
                        (``frexp`` of ``s_in * 2^27``), gemmlowp ``logistic``, output zero point
                        -128, scale 1/256; inputs beyond the range radius saturate.
TANH                    ``tanh.cc`` + ``integer_ops/tanh.h``: the LOGISTIC input scaling (Q4.27,
                        ``frexp``, range radius), gemmlowp ``tanh``, result ``RoundingDivideByPOT``
                        by 2^24 (output scale 1/128, zero point 0: the kernel ignores the output
                        tensor's quantization).
SOFTMAX                 ``softmax_common.cc`` + ``reference/softmax.h``: ``beta * s_in * 2^26``
                        (``PreprocessSoftmaxScaling``), differences to the row maximum below
                        ``diff_min`` give -128, gemmlowp ``exp_on_negative_values`` summed in
                        Q12.19, ``GetReciprocal``, output zero point -128, scale 1/256.
RELU / RELU6            ``activations_common.cc``: RELU requantizes by ``float(s_in / s_out)``;
                        RELU6 clamps to the input's quantized 0 and 6.
RESHAPE                 a copy.
======================  ==========================================================================

The fixed-point functions of LOGISTIC, TANH and SOFTMAX are in :mod:`.fixedpoint`; requantization in
:mod:`firmware_export.intmath`. Every kernel is checked against the TFLM interpreter on every
intermediate tensor by ``tests/test_tflm_differential.py`` and ``bench/tflm_differential.py``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import intmath
from . import fixedpoint as fxp
from . import flatbuffer as fb

__all__ = [
    "KERNELS",
    "simulate",
    "simulate_tensors",
    "run_tflm",
    "run_tflm_tensors",
    "run_tflite_ref",
    "HostCheck",
    "host_check",
    "write_golden",
    "read_golden",
    "golden_header",
    "calculate_activation_range_quantized",
    "compute_padding",
]

log = logging.getLogger(__name__)

ModelLike = Union[bytes, fb.TFLiteModel]


def _model(m: ModelLike) -> fb.TFLiteModel:
    return m if isinstance(m, fb.TFLiteModel) else fb.read_model(m)


# --------------------------------------------------------------------------------------------
# Shared helpers (TFLite kernel_util / padding / common)
# --------------------------------------------------------------------------------------------
def _round_half_away(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + np.asarray(0.5, dtype=np.asarray(v).dtype))


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


def _trunc_div(a: np.ndarray, b) -> np.ndarray:
    """C++ integer division (truncates toward zero), b > 0."""
    a = np.asarray(a, dtype=np.int64)
    q = np.abs(a) // b
    return np.where(a < 0, -q, q)


def _requantize(acc: np.ndarray, multipliers: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """MultiplyByQuantizedMultiplier per output channel (last axis)."""
    if multipliers.size == 1:
        return np.asarray(intmath.multiply_by_quantized_multiplier(acc, int(multipliers[0]), int(shifts[0])),
                          dtype=np.int64)
    out = np.empty(acc.shape, dtype=np.int64)
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


def _io(model: fb.TFLiteModel, op: fb.Operator, n_in: int = 1) -> Tuple[List[fb.Tensor], fb.Tensor]:
    """The first ``n_in`` input tensors and the output tensor, all int8 activations."""
    ins = [model.tensors[i] for i in op.inputs[:n_in]]
    y = model.tensors[op.outputs[0]]
    for k, t in enumerate(ins):
        _check_int8(t, f"{op.name} op {op.index} input {k}")
    _check_int8(y, f"{op.name} op {op.index} output")
    return ins, y


def _batch_shape(n: int, shape: Sequence[int]) -> Tuple[int, ...]:
    return (n,) + tuple(int(d) for d in shape[1:])


# --------------------------------------------------------------------------------------------
# Kernels: prepare (validate + precompute) / eval (read only). eval(d, xs) gets the op's
# activation inputs (constants are read in prepare) as arrays whose first axis is the sample.
# --------------------------------------------------------------------------------------------
def _prepare_conv_like(model: fb.TFLiteModel, op: fb.Operator) -> Dict[str, Any]:
    (x,), y = _io(model, op)
    w = model.tensors[op.inputs[1]]
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
    if w_scales.size not in (1, n_out):
        raise ValueError(f"{op.name} op {op.index}: {w_scales.size} weight scales for {n_out} output channels")
    if op.name == "FULLY_CONNECTED" and w_scales.size > 1 and w.dtype == "INT4":
        raise ValueError(f"FULLY_CONNECTED op {op.index}: per-channel INT4 weights (TFLM refuses them in Prepare)")
    # Per-tensor and per-channel alike: M = double(s_in) * double(s_w) / double(s_out) (see intmath).
    pairs = [intmath.quantize_multiplier(intmath.conv_multiplier(s_in, float(sc), s_out))
             for sc in np.broadcast_to(w_scales, (n_out,) if w_scales.size > 1 else (1,))]
    mults = np.array([p[0] for p in pairs], dtype=np.int64)
    shifts = np.array([p[1] for p in pairs], dtype=np.int64)
    act = op.options.get("fused_activation", "NONE")
    act_min, act_max = calculate_activation_range_quantized(act, s_out, zp_out)
    return dict(weights=weights, bias=bias, zp_in=zp_in, zp_out=zp_out, mults=mults, shifts=shifts,
                act_min=act_min, act_max=act_max, out_shape=y.shape, in_shape=x.shape)


def prepare_fully_connected(model, op):
    d = _prepare_conv_like(model, op)
    if op.options.get("keep_num_dims"):
        raise ValueError(f"FULLY_CONNECTED op {op.index}: keep_num_dims=True is not simulated")
    n_in = int(np.prod(d["in_shape"][1:], dtype=np.int64))
    if d["weights"].ndim != 2 or n_in != d["weights"].shape[1]:
        raise ValueError(f"FULLY_CONNECTED op {op.index}: input {list(d['in_shape'])} does not hold one row of "
                         f"{d['weights'].shape[-1]} values per sample")
    return d


def eval_fully_connected(d, xs):
    (x,) = xs
    w = d["weights"]  # [out, in]
    acc = (x.reshape(len(x), -1).astype(np.int64) - d["zp_in"]) @ w.T
    if d["bias"] is not None:
        acc = acc + d["bias"]
    acc = _requantize(acc, d["mults"], d["shifts"]) + d["zp_out"]
    return np.clip(acc, d["act_min"], d["act_max"]).astype(np.int8).reshape(_batch_shape(len(x), d["out_shape"]))


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
    if len(x.shape) != 4:
        raise ValueError(f"{op.name} op {op.index}: input shape {list(x.shape)} is not NHWC")
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
    return _prepare_spatial(model, op, _prepare_conv_like(model, op))


def eval_conv_2d(d, xs):
    (x,) = xs
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
    d = _prepare_spatial(model, op, _prepare_conv_like(model, op))
    x = model.tensors[op.inputs[0]]
    mult = op.options.get("depth_multiplier", 1) or d["weights"].shape[-1] // x.shape[-1]
    if d["weights"].shape[-1] != x.shape[-1] * mult:
        raise ValueError(f"DEPTHWISE_CONV_2D op {op.index}: {d['weights'].shape[-1]} filter channels for "
                         f"{x.shape[-1]} inputs x multiplier {mult}")
    d["mult"] = mult
    return d


def eval_depthwise_conv_2d(d, xs):
    (x,) = xs
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
    _, y = _io(model, op)
    s_out, zp_out = _qparams(y, op.name + " output")
    act_min, act_max = calculate_activation_range_quantized(op.options.get("fused_activation", "NONE"), s_out, zp_out)
    return _prepare_spatial(model, op, dict(act_min=act_min, act_max=act_max))


def eval_max_pool_2d(d, xs):
    (x,) = xs
    xp = _padded(x.astype(np.int64), d, -(1 << 20))
    out = None
    for _, _, patch in _windows(xp, d):
        out = patch if out is None else np.maximum(out, patch)
    return np.clip(out, d["act_min"], d["act_max"]).astype(np.int8)


def eval_average_pool_2d(d, xs):
    (x,) = xs
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


def prepare_add(model, op):
    (a, b), y = _io(model, op, 2)
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"ADD op {op.index}: broadcasting {list(a.shape)} + {list(b.shape)} is not simulated")
    s1, zp1 = _qparams(a, "ADD input 0")
    s2, zp2 = _qparams(b, "ADD input 1")
    s_out, zp_out = _qparams(y, "ADD output")
    left_shift = 20
    twice_max = 2.0 * float(max(np.float32(s1), np.float32(s2)))  # max of the float scales, doubled in double
    real1 = float(np.float32(s1)) / twice_max
    real2 = float(np.float32(s2)) / twice_max
    real_out = twice_max / ((1 << left_shift) * float(np.float32(s_out)))
    for what, r in (("input 0", real1), ("input 1", real2), ("output", real_out)):
        if not 0.0 < r < 1.0:  # QuantizeMultiplierSmallerThanOneExp aborts in TFLM
            raise ValueError(f"ADD op {op.index}: {what} multiplier {r!r} is outside (0, 1); TFLM cannot run it")
    m1, sh1 = intmath.quantize_multiplier(real1)
    m2, sh2 = intmath.quantize_multiplier(real2)
    mo, sho = intmath.quantize_multiplier(real_out)
    act_min, act_max = calculate_activation_range_quantized(op.options.get("fused_activation", "NONE"), s_out, zp_out)
    return dict(zp1=zp1, zp2=zp2, zp_out=zp_out, left_shift=left_shift, m1=m1, sh1=sh1, m2=m2, sh2=sh2, mo=mo,
                sho=sho, act_min=act_min, act_max=act_max)


def _mbqm_smaller_than_one(x, multiplier: int, shift: int) -> np.ndarray:
    """``MultiplyByQuantizedMultiplierSmallerThanOneExp`` (shift <= 0)."""
    return intmath.rounding_divide_by_pot(intmath.saturating_rounding_doubling_high_mul(x, multiplier), -shift)


def eval_add(d, xs):
    a, b = (np.asarray(v, dtype=np.int64) for v in xs)
    s1 = fxp.wrap32((a - d["zp1"]) * (1 << d["left_shift"]))
    s2 = fxp.wrap32((b - d["zp2"]) * (1 << d["left_shift"]))
    raw_sum = fxp.wrap32(_mbqm_smaller_than_one(s1, d["m1"], d["sh1"]) + _mbqm_smaller_than_one(s2, d["m2"], d["sh2"]))
    out = _mbqm_smaller_than_one(raw_sum, d["mo"], d["sho"]) + d["zp_out"]
    return np.clip(out, d["act_min"], d["act_max"]).astype(np.int8)


def prepare_concatenation(model, op):
    ins, y = _io(model, op, len(op.inputs))
    if op.options.get("fused_activation", "NONE") != "NONE":
        raise ValueError(f"CONCATENATION op {op.index}: a fused activation is refused by TFLM")
    q_out = _qparams(y, "CONCATENATION output")
    for k, t in enumerate(ins):
        q = _qparams(t, f"CONCATENATION input {k}")
        if np.float32(q[0]) != np.float32(q_out[0]) or q[1] != q_out[1]:
            raise ValueError(f"CONCATENATION op {op.index}: input {k} is quantized ({q[0]!r}, {q[1]}), the output "
                             f"({q_out[0]!r}, {q_out[1]}); the pinned TFLM refuses int8 inputs whose scale differs "
                             "from the output's (it copies, never requantizes)")
    axis = int(op.options.get("axis", 0))
    rank = len(y.shape)
    axis = axis + rank if axis < 0 else axis
    if not 1 <= axis < rank:
        raise ValueError(f"CONCATENATION op {op.index}: axis {op.options.get('axis')} (the batch axis or out of "
                         f"range for rank {rank}) is not simulated")
    return dict(axis=axis)


def eval_concatenation(d, xs):
    # TFLM copies int8 inputs as they are (prepare_concatenation checked equal quantization).
    return np.concatenate([np.asarray(v, np.int8) for v in xs], axis=d["axis"])


def prepare_pad(model, op):
    (x,), y = _io(model, op)
    paddings = model.constant_values(op.inputs[1]).astype(np.int64).reshape(-1, 2)
    if paddings.shape[0] != len(x.shape) or np.any(paddings[0] != 0) or np.any(paddings < 0):
        raise ValueError(f"PAD op {op.index}: paddings {paddings.tolist()} (batch padding or negative) not simulated")
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        fill = int(model.constant_values(op.inputs[2]).reshape(-1)[0])
    else:
        fill = _qparams(y, "PAD output")[1]
    return dict(paddings=[(0, 0)] + [tuple(int(v) for v in p) for p in paddings[1:]], fill=fill)


def eval_pad(d, xs):
    (x,) = xs
    return np.pad(np.asarray(x, np.int8), d["paddings"], constant_values=d["fill"])


def _axes(model, op, rank: int) -> List[int]:
    axes = sorted({(int(a) + rank) % rank for a in model.constant_values(op.inputs[1]).reshape(-1)})
    if 0 in axes:
        raise ValueError(f"{op.name} op {op.index}: reducing over the batch axis is not simulated")
    return axes


def prepare_mean(model, op):
    (x,), y = _io(model, op)
    s_in, zp_in = _qparams(x, "MEAN input")
    s_out, zp_out = _qparams(y, "MEAN output")
    axes = _axes(model, op, len(x.shape))
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    mult, shift = intmath.quantize_multiplier(float(np.float32(s_in)) / float(np.float32(s_out)))
    # Fold 1/count into the multiplier: shift by floor(log2(count)) (at most 32 and 31 + shift),
    # multiplier (mult << k) // count, as the reference QuantizedMeanOrSum does.
    k = min(count.bit_length() - 1, 32, 31 + shift)
    mult = (mult << k) // count
    return dict(axes=tuple(axes), count=count, zp_in=zp_in, zp_out=zp_out, mult=int(mult), shift=int(shift - k),
                out_shape=y.shape)


def eval_mean(d, xs):
    (x,) = xs
    shifted_sum = fxp.wrap32(np.sum(np.asarray(x, np.int64), axis=d["axes"]) - d["zp_in"] * d["count"])
    out = intmath.multiply_by_quantized_multiplier(shifted_sum, d["mult"], d["shift"]) + d["zp_out"]
    return np.clip(out, -128, 127).astype(np.int8).reshape(_batch_shape(len(x), d["out_shape"]))


def _frexp_multiplier(real: float) -> Tuple[int, int]:
    """``frexp`` + ``static_cast<int32_t>(TfLiteRound(q * 2^31))`` without the 2^31 correction
    (LOGISTIC's Prepare); 2^31 wraps to -2^31 as the x86 conversion does."""
    q, shift = math.frexp(real)
    m = int(math.floor(abs(q) * (1 << 31) + 0.5)) * (1 if q >= 0 else -1)
    if m == (1 << 31):
        m = -(1 << 31)
    return m, shift


def _input_radius(integer_bits: int, left_shift: int, total_signed_bits: int = 31) -> int:
    """``CalculateInputRadius`` (double arithmetic, floor)."""
    v = 1.0 * ((1 << integer_bits) - 1) * float(1 << (total_signed_bits - integer_bits)) / float(1 << left_shift)
    return int(math.floor(v))


def prepare_logistic(model, op):
    (x,), y = _io(model, op)
    s_in, zp_in = _qparams(x, "LOGISTIC input")
    if _qparams(y, "LOGISTIC output")[1] != -128:
        raise ValueError(f"LOGISTIC op {op.index}: output zero point must be -128 (TFLM refuses others)")
    mult, left_shift = _frexp_multiplier(float(np.float32(s_in)) * float(1 << (31 - 4)))
    if left_shift < 0:
        raise ValueError(f"LOGISTIC op {op.index}: input scale {s_in!r} below 2^-27 is not simulated")
    return dict(zp_in=zp_in, mult=mult, left_shift=left_shift, radius=_input_radius(4, left_shift))


def eval_logistic(d, xs):
    (x,) = xs
    inp = np.asarray(x, np.int64) - d["zp_in"]
    q4 = intmath.multiply_by_quantized_multiplier(inp, d["mult"], d["left_shift"])
    q0 = fxp.logistic(q4, 4)
    out = np.clip(fxp.rdbp(q0, 31 - 8) - 128, -128, 127)
    out = np.where(inp <= -d["radius"], -128, np.where(inp >= d["radius"], 127, out))
    return out.astype(np.int8)


def prepare_tanh(model, op):
    (x,), _ = _io(model, op)
    s_in, zp_in = _qparams(x, "TANH input")
    mult, left_shift = _frexp_multiplier(float(np.float32(s_in)) * float(1 << (31 - 4)))
    if left_shift < 0:
        raise ValueError(f"TANH op {op.index}: input scale {s_in!r} below 2^-27 is not simulated")
    return dict(zp_in=zp_in, mult=mult, left_shift=left_shift, radius=_input_radius(4, left_shift))


def eval_tanh(d, xs):
    (x,) = xs
    inp = np.asarray(x, np.int64) - d["zp_in"]
    q4 = intmath.multiply_by_quantized_multiplier(inp, d["mult"], d["left_shift"])
    out = np.clip(fxp.rdbp(fxp.tanh(q4, 4), 31 - 7), -128, 127)
    out = np.where(inp <= -d["radius"], -128, np.where(inp >= d["radius"], 127, out))
    return out.astype(np.int8)


def prepare_softmax(model, op):
    (x,), y = _io(model, op)
    s_in, _ = _qparams(x, "SOFTMAX input")
    s_out, zp_out = _qparams(y, "SOFTMAX output")
    if zp_out != -128 or np.float32(s_out) != np.float32(1.0 / 256):
        raise ValueError(f"SOFTMAX op {op.index}: output must have scale 1/256 and zero point -128 (TFLM), got "
                         f"{s_out!r}, {zp_out}")
    beta = float(np.float32(op.options.get("beta", 1.0)))
    real = min(beta * float(np.float32(s_in)) * float(1 << (31 - 5)), float((1 << 31) - 1))
    if not real > 1.0:
        raise ValueError(f"SOFTMAX op {op.index}: beta * input scale * 2^26 = {real!r} <= 1 (TFLM aborts)")
    mult, left_shift = intmath.quantize_multiplier(real)
    return dict(mult=mult, left_shift=left_shift, diff_min=-_input_radius(5, left_shift))


def _softmax_exp(d, diff):
    rescaled = intmath.saturating_rounding_doubling_high_mul(fxp.wrap32(diff * (1 << d["left_shift"])), d["mult"])
    return fxp.exp_on_negative_values(rescaled, 5)


def eval_softmax(d, xs):
    (x,) = xs
    v = np.asarray(x, np.int64)
    diff = v - v.max(axis=-1, keepdims=True)
    inside = diff >= d["diff_min"]
    e = _softmax_exp(d, np.where(inside, diff, 0))
    sum_of_exps = fxp.wrap32(np.sum(np.where(inside, fxp.rescale(e, 0, 12), 0), axis=-1, keepdims=True))
    headroom_plus_one = fxp.count_leading_zeros32(sum_of_exps)
    num_bits_over_unit = 12 - headroom_plus_one
    shifted_sum_minus_one = fxp.wrap32(((sum_of_exps & 0xFFFFFFFF) << headroom_plus_one) - (1 << 31))
    shifted_scale = fxp.one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)
    exponent = num_bits_over_unit + 31 - 8
    prod = fxp.srdhm(np.broadcast_to(shifted_scale, e.shape), e)
    unsat = np.empty_like(prod)
    for ex in np.unique(exponent):  # RoundingDivideByPOT takes one exponent at a time
        rows = np.broadcast_to(exponent == ex, prod.shape)
        unsat[rows] = fxp.rdbp(prod[rows], int(ex))
    out = np.clip(unsat - 128, -128, 127)
    return np.where(inside, out, -128).astype(np.int8)


def prepare_relu(model, op):
    (x,), y = _io(model, op)
    s_in, zp_in = _qparams(x, "RELU input")
    s_out, zp_out = _qparams(y, "RELU output")
    mult, shift = intmath.quantize_multiplier(float(np.float32(s_in) / np.float32(s_out)))
    return dict(zp_in=zp_in, zp_out=zp_out, mult=mult, shift=shift, act_min=max(-128, zp_out), act_max=127)


def eval_relu(d, xs):
    (x,) = xs
    v = intmath.multiply_by_quantized_multiplier(np.asarray(x, np.int64) - d["zp_in"], d["mult"], d["shift"])
    return np.clip(v + d["zp_out"], d["act_min"], d["act_max"]).astype(np.int8)


def prepare_relu6(model, op):
    (x,), _ = _io(model, op)
    s_in, zp_in = _qparams(x, "RELU6 input")
    six = int(_round_half_away(np.float32(6.0) / np.float32(s_in))) + zp_in
    return dict(lo=zp_in, hi=int(np.clip(six, -128, 127)))


def eval_relu6(d, xs):
    (x,) = xs
    return np.clip(np.asarray(x, np.int64), d["lo"], d["hi"]).astype(np.int8)


def prepare_reshape(model, op):
    x, y = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
    if x.dtype != y.dtype:
        raise ValueError(f"{op.name} op {op.index}: input {x.dtype} and output {y.dtype} differ")
    if x.size != y.size:
        raise ValueError(f"{op.name} op {op.index}: {x.size} input values, {y.size} output values")
    return dict(out_shape=y.shape)


def eval_reshape(d, xs):
    (x,) = xs
    return np.asarray(x).reshape(_batch_shape(len(x), d["out_shape"]))


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
    "ADD": (prepare_add, eval_add),
    "CONCATENATION": (prepare_concatenation, eval_concatenation),
    "PAD": (prepare_pad, eval_pad),
    "MEAN": (prepare_mean, eval_mean),
    "LOGISTIC": (prepare_logistic, eval_logistic),
    "TANH": (prepare_tanh, eval_tanh),
    "SOFTMAX": (prepare_softmax, eval_softmax),
    "RELU": (prepare_relu, eval_relu),
    "RELU6": (prepare_relu6, eval_relu6),
    "RESHAPE": (prepare_reshape, eval_reshape),
    fb.DECODE_OP: (prepare_decode, None),
}


def _is_constant(model: fb.TFLiteModel, index: int) -> bool:
    t = model.tensors[index]
    if t.is_constant:
        return True
    p = model.producer(index)
    return p is not None and p.name == fb.DECODE_OP


def simulate_tensors(model_bytes: ModelLike, x_int8: np.ndarray) -> Dict[int, np.ndarray]:
    """Run the model's int8 graph on a batch of int8 inputs (shape ``(n, *input_shape[1:])``) and
    return every activation tensor it computes, by tensor index (the input included).

    Raises:
        TypeError: ``x_int8`` is not int8.
        ValueError: an op outside ``KERNELS`` (naming it and the supported ones), a model with
            several inputs or outputs, an input of the wrong shape, or an op configuration the
            kernels do not cover (named).
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
        args = []
        for i in op.inputs:
            if i < 0 or _is_constant(model, i):
                continue
            if i not in values:
                raise ValueError(f"op {op.index} {op.name} reads tensor {i} before any op wrote it")
            args.append(values[i])
        values[op.outputs[0]] = evaluate(data, args)
    return values


def simulate(model_bytes: ModelLike, x_int8: np.ndarray) -> np.ndarray:
    """The model's int8 output for a batch of int8 inputs (see :func:`simulate_tensors`)."""
    model = _model(model_bytes)
    return simulate_tensors(model, x_int8)[model.outputs[0]]


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


def _generous_arena(model: fb.TFLiteModel) -> int:
    """An arena that holds every tensor at once (unpacked), plus 64 KiB: enough for the
    preserve-all-tensors interpreter, which never reuses activation memory."""
    total = 0
    for t in model.tensors:
        item = 4 if t.dtype in ("INT32", "FLOAT32") else (8 if t.dtype == "INT64" else 1)
        total += t.size * item
    return 2 * total + 64 * 1024


def run_tflm_tensors(model_bytes: bytes, x_int8: np.ndarray, arena_size: Optional[int] = None,
                     tensors: Optional[Sequence[int]] = None) -> Dict[int, np.ndarray]:
    """The real TFLM interpreter with every tensor preserved
    (``InterpreterConfig.kPreserveAllTensors``, read back with ``GetTensor``), one invoke per
    sample: the value of each activation tensor (default: every non-constant tensor), stacked
    over the samples, by tensor index.
    """
    from tflite_micro import runtime

    model = _model(model_bytes)
    if tensors is None:
        tensors = [i for i in range(len(model.tensors)) if not _is_constant(model, i)]
    if arena_size is None:
        arena_size = _generous_arena(model)
    interp = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=int(arena_size),
                                            intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    x = np.asarray(x_int8, dtype=np.int8)
    out: Dict[int, List[np.ndarray]] = {int(i): [] for i in tensors}
    for k in range(len(x)):
        interp.set_input(x[k : k + 1], 0)
        interp.invoke()
        for i in out:
            out[i].append(np.array(interp.GetTensor(i, 0)["tensor_data"], copy=True))
    return {i: (np.concatenate(v, axis=0) if v else np.zeros((0,), np.int8)) for i, v in out.items()}


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
               arena_size: Optional[int] = None, argmax: bool = True) -> HostCheck:
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
        argmax: the outputs are class scores, so the float/TFLM argmax agreement is meaningful
            (one output: the decision at 0.5 of a sigmoid); False for e.g. an autoencoder:
            ``agreement_float_tflm`` is then None.
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
        if argmax and fo.shape[1] == 1:  # one sigmoid output: the decision at 0.5
            agreement = float(np.mean((fo[:, 0] > 0.5) == (deq[:, 0] > 0.5)))
        elif argmax:
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
