"""Differential check of the simulator against the real TFLM interpreter on random small models.

Each generator in ``GENERATORS`` writes a small ``.tflite`` directly (:mod:`.fbwrite`) around one
op the exporter emits, with random shapes, options and quantization: activation scales drawn over
several decades (input scale :math:`10^{U(-3, 0.5)}`, weight scales :math:`10^{U(-4, 0)}` per
tensor or independently per channel), random zero points, INT8 and INT4 weights, per-tensor and
per-channel, with and without bias, every fused activation. ``"chain"`` strings several ops
together. :func:`compare` runs a model on random int8 inputs through the TFLM interpreter with every
tensor preserved (``simulate.run_tflm_tensors``) and through ``simulate.simulate_tensors`` and
counts the values of every intermediate and output tensor that differ.

:func:`targeted_fully_connected` builds FULLY_CONNECTED layers whose accumulators are chosen where
the two candidate requantization multipliers (the double product ``s_in * s_w`` and the float32
product) give different outputs, so that a run says which one the interpreter uses.

Used by ``tests/test_tflm_differential.py`` (a seeded sample) and ``bench/tflm_differential.py``
(at least a million compared values).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import intmath
from . import flatbuffer as fb
from . import simulate as sim
from .fbwrite import ModelWriter

__all__ = ["GENERATORS", "RandomModel", "DiffResult", "compare", "run", "targeted_fully_connected"]

ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


@dataclasses.dataclass
class RandomModel:
    """A generated model and what it exercises."""

    op: str  # the generator's name
    model_bytes: bytes
    description: str
    inputs: Optional[np.ndarray] = None  # int8 inputs to use instead of random ones


@dataclasses.dataclass
class DiffResult:
    """Counts over all compared tensors (every tensor the simulator computes, the input excluded)."""

    models: int = 0
    samples: int = 0
    values: int = 0
    differences: int = 0
    per_op: Dict[str, List[int]] = dataclasses.field(default_factory=dict)  # op -> [values, differences]
    failures: List[Dict[str, Any]] = dataclasses.field(default_factory=list)

    def add(self, other: "DiffResult") -> None:
        self.models += other.models
        self.samples += other.samples
        self.values += other.values
        self.differences += other.differences
        for k, (v, d) in other.per_op.items():
            acc = self.per_op.setdefault(k, [0, 0])
            acc[0] += v
            acc[1] += d
        self.failures += other.failures

    def to_dict(self) -> Dict[str, Any]:
        return {"models": self.models, "samples": self.samples, "values": self.values,
                "differences": self.differences,
                "per_op": {k: {"values": v, "differences": d} for k, (v, d) in sorted(self.per_op.items())},
                "failures": self.failures[:20]}


# ---------------------------------------------------------------------------------------------
# random quantization
def _scale(rng, lo: float, hi: float) -> float:
    return float(np.float32(10 ** rng.uniform(lo, hi)))


def _zp(rng) -> int:
    return int(rng.integers(-128, 128))


def _weights(rng, shape, int4: bool) -> np.ndarray:
    lim = 7 if int4 else 127
    w = rng.integers(-lim - (1 if int4 and rng.random() < 0.5 else 0), lim + 1, size=shape)
    w[rng.random(shape) < rng.uniform(0, 0.6)] = 0  # ECQ-like sparsity
    return w.astype(np.int64)


def _weight_scales(rng, n: int, per_channel: bool, base: Optional[float] = None) -> np.ndarray:
    base = rng.uniform(-4, 0) if base is None else base
    if not per_channel:
        return np.array([_scale(rng, base, base)], np.float32)
    return np.array([_scale(rng, base - 0.75, base + 0.75) for _ in range(n)], np.float32)


def _chain_base(rng, s_in: float, fan_in: int, w: np.ndarray) -> float:
    """log10 of a weight scale that puts the next output scale near 10^U(-2.5, -0.5) (chains)."""
    w_std = float(np.std(w)) or 1.0
    per_unit = s_in * w_std * 74.0 * np.sqrt(max(fan_in, 1)) * 3.0 / 127.0
    return float(rng.uniform(-2.5, -0.5) - np.log10(per_unit))


def _out_scale(rng, s_in: float, w_scales: np.ndarray, fan_in: int, w: np.ndarray) -> float:
    """An output scale that puts the typical accumulator in range, times 10^U(-0.6, 0.6)."""
    w_std = float(np.std(w)) or 1.0
    typical = s_in * float(np.median(w_scales)) * w_std * 74.0 * np.sqrt(max(fan_in, 1))
    return float(np.float32(max(typical, 1e-12) * 3.0 / 127.0 * 10 ** rng.uniform(-0.6, 0.6)))


def _bias(rng, s_in: float, w_scales: np.ndarray, n: int, s_out: float) -> Tuple[np.ndarray, np.ndarray]:
    """int32 bias around +-8 output steps, scale = float32(s_in * s_w) as the converter stores it."""
    b_scale = (np.float32(s_in) * np.broadcast_to(w_scales, (n,)).astype(np.float32)).astype(np.float32)
    real = rng.normal(0, 8 * s_out, n)
    return np.clip(np.round(real / b_scale.astype(np.float64)), -2**31, 2**31 - 1).astype(np.int64), b_scale


# ---------------------------------------------------------------------------------------------
# op builders (append to a ModelWriter; return the output tensor index and its (scale, zp))
def _act(rng) -> str:
    return str(rng.choice(ACTIVATIONS))


def _add_fc(w: ModelWriter, rng, x: int, x_shape, s_in: float, n_out: int, *, int4=None, per_channel=None,
            bias=None, act=None, chain: bool = False) -> Tuple[int, Tuple[int, ...], float]:
    n_in = int(np.prod(x_shape[1:]))
    int4 = bool(rng.random() < 0.4) if int4 is None else int4
    per_channel = (not int4 and bool(rng.random() < 0.35)) if per_channel is None else per_channel
    wv = _weights(rng, (n_out, n_in), int4)
    ws = _weight_scales(rng, n_out, per_channel, _chain_base(rng, s_in, n_in, wv) if chain else None)
    s_out = _out_scale(rng, s_in, ws, n_in, wv)
    wt = w.add_tensor((n_out, n_in), "INT4" if int4 else "INT8", scale=ws, zero_point=0, axis=0, data=wv)
    inputs = [x, wt]
    use_bias = bool(rng.random() < 0.75) if bias is None else bias
    if use_bias:
        b, bs = _bias(rng, s_in, ws, n_out, s_out)
        inputs.append(w.add_tensor((n_out,), "INT32", scale=bs, zero_point=0, data=b))
    else:
        inputs.append(-1)
    y = w.add_tensor((1, n_out), "INT8", scale=s_out, zero_point=_zp(rng))
    w.add_op("FULLY_CONNECTED", inputs, [y], fused_activation=act or _act(rng))
    return y, (1, n_out), s_out


def _conv_geometry(rng, h: int, wd: int):
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    dh, dw = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) if rng.random() < 0.3 else (1, 1)
    pad = "SAME" if rng.random() < 0.5 else "VALID"
    oh, _ = sim.compute_padding(h, kh, sh, dh, pad)
    ow, _ = sim.compute_padding(wd, kw, sw, dw, pad)
    if oh < 1 or ow < 1:
        pad = "SAME"
        oh, _ = sim.compute_padding(h, kh, sh, dh, pad)
        ow, _ = sim.compute_padding(wd, kw, sw, dw, pad)
    return kh, kw, sh, sw, dh, dw, pad, oh, ow


def _add_conv(w: ModelWriter, rng, x: int, x_shape, s_in: float, depthwise: bool, chain: bool = False):
    _, h, wd, c = x_shape
    kh, kw, sh, sw, dh, dw, pad, oh, ow = _conv_geometry(rng, h, wd)
    int4 = bool(rng.random() < 0.4)
    if depthwise:
        mult = int(rng.integers(1, 4))
        n_out = c * mult
        wv = _weights(rng, (1, kh, kw, n_out), int4)
        axis = 3
    else:
        n_out = int(rng.integers(1, 9))
        wv = _weights(rng, (n_out, kh, kw, c), int4)
        axis = 0
    fan_in = kh * kw * (1 if depthwise else c)
    ws = _weight_scales(rng, n_out, bool(rng.random() < 0.8), _chain_base(rng, s_in, fan_in, wv) if chain else None)
    s_out = _out_scale(rng, s_in, ws, fan_in, wv)
    wt = w.add_tensor(wv.shape, "INT4" if int4 else "INT8", scale=ws, zero_point=np.zeros(ws.size, np.int64),
                      axis=axis, data=wv)
    inputs = [x, wt]
    if rng.random() < 0.8:
        b, bs = _bias(rng, s_in, ws, n_out, s_out)
        inputs.append(w.add_tensor((n_out,), "INT32", scale=bs, zero_point=np.zeros(bs.size, np.int64), data=b))
    y_shape = (1, oh, ow, n_out)
    y = w.add_tensor(y_shape, "INT8", scale=s_out, zero_point=_zp(rng))
    opts = dict(padding=pad, stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw, fused_activation=_act(rng))
    if depthwise:
        w.add_op("DEPTHWISE_CONV_2D", inputs, [y], depth_multiplier=mult, **opts)
    else:
        w.add_op("CONV_2D", inputs, [y], **opts)
    return y, y_shape, s_out


def _add_pool(w: ModelWriter, rng, x: int, x_shape, s_in: float, zp_in: int, op: str):
    _, h, wd, c = x_shape
    fh, fw = int(rng.integers(1, min(h, 4) + 1)), int(rng.integers(1, min(wd, 4) + 1))
    sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    pad = "SAME" if rng.random() < 0.5 else "VALID"
    oh, _ = sim.compute_padding(h, fh, sh, 1, pad)
    ow, _ = sim.compute_padding(wd, fw, sw, 1, pad)
    y_shape = (1, oh, ow, c)
    y = w.add_tensor(y_shape, "INT8", scale=s_in, zero_point=zp_in)
    w.add_op(op, [x], [y], padding=pad, stride_h=sh, stride_w=sw, filter_height=fh, filter_width=fw,
             fused_activation=str(rng.choice(("NONE", "NONE", "RELU", "RELU6"))))
    return y, y_shape


def _image_input(w: ModelWriter, rng, max_hw: int = 8, max_c: int = 6):
    shape = (1, int(rng.integers(2, max_hw + 1)), int(rng.integers(2, max_hw + 1)), int(rng.integers(1, max_c + 1)))
    s, zp = _scale(rng, -3, 0.5), _zp(rng)
    return w.add_tensor(shape, "INT8", scale=s, zero_point=zp, name="input"), shape, s, zp


def _vector_input(w: ModelWriter, rng, lo: int = 4, hi: int = 48):
    shape = (1, int(rng.integers(lo, hi + 1)))
    s, zp = _scale(rng, -3, 0.5), _zp(rng)
    return w.add_tensor(shape, "INT8", scale=s, zero_point=zp, name="input"), shape, s, zp


# ---------------------------------------------------------------------------------------------
# generators: rng -> RandomModel
def gen_fully_connected(rng) -> RandomModel:
    w = ModelWriter()
    u = rng.random()
    if u < 0.2:  # an image-shaped input that FULLY_CONNECTED flattens
        x, shape, s, _ = _image_input(w, rng, 4, 4)
    elif u < 0.4:  # wide layers: large accumulators, where multiplier rounding shows
        x, shape, s, _ = _vector_input(w, rng, 256, 1024)
    else:
        x, shape, s, _ = _vector_input(w, rng, 4, 96)
    y, _, _ = _add_fc(w, rng, x, shape, s, int(rng.integers(1, 33)))
    return RandomModel("FULLY_CONNECTED", w.to_bytes([x], [y]), f"input {shape}")


def gen_fully_connected_targeted(rng) -> RandomModel:
    """:func:`targeted_fully_connected`: accumulators where the float32 product would differ."""
    with_bias = bool(rng.random() < 0.5)
    model_bytes, x, _, _ = targeted_fully_connected(rng, with_bias)
    return RandomModel("FULLY_CONNECTED (targeted)", model_bytes, f"bias={with_bias}", inputs=x)


def gen_conv_2d(rng) -> RandomModel:
    w = ModelWriter()
    x, shape, s, _ = _image_input(w, rng)
    y, _, _ = _add_conv(w, rng, x, shape, s, depthwise=False)
    return RandomModel("CONV_2D", w.to_bytes([x], [y]), f"input {shape}")


def gen_depthwise_conv_2d(rng) -> RandomModel:
    w = ModelWriter()
    x, shape, s, _ = _image_input(w, rng)
    y, _, _ = _add_conv(w, rng, x, shape, s, depthwise=True)
    return RandomModel("DEPTHWISE_CONV_2D", w.to_bytes([x], [y]), f"input {shape}")


def _gen_pool(op: str):
    def gen(rng) -> RandomModel:
        w = ModelWriter()
        x, shape, s, zp = _image_input(w, rng)
        y, _ = _add_pool(w, rng, x, shape, s, zp, op)
        return RandomModel(op, w.to_bytes([x], [y]), f"input {shape}")
    return gen


def gen_add(rng) -> RandomModel:
    w = ModelWriter()
    x, shape, s, zp = _vector_input(w, rng, 4, 32)
    n = shape[1]
    a, _, s_a = _add_fc(w, rng, x, shape, s, n)
    if rng.random() < 0.5:  # residual: the input itself is the second operand
        b = x
    else:
        b, _, _ = _add_fc(w, rng, x, shape, s, n)
    s_out = _scale(rng, np.log10(s_a) - 0.5, np.log10(s_a) + 0.7)
    y = w.add_tensor((1, n), "INT8", scale=s_out, zero_point=_zp(rng))
    inputs = [a, b] if rng.random() < 0.5 else [b, a]
    w.add_op("ADD", inputs, [y], fused_activation=str(rng.choice(("NONE", "RELU", "RELU6"))))
    return RandomModel("ADD", w.to_bytes([x], [y]), f"input {shape}")


def gen_concatenation(rng) -> RandomModel:
    """Two or three producers written with one shared output quantization (TFLM requires it)."""
    w = ModelWriter()
    if rng.random() < 0.5:
        x, shape, s, zp = _vector_input(w, rng, 4, 24)
        parts = []
        for _ in range(int(rng.integers(2, 4))):
            y, ys, _ = _add_fc(w, rng, x, shape, s, int(rng.integers(1, 12)))
            parts.append((y, ys))
        axis = int(rng.choice((1, -1)))
    else:
        x, shape, s, zp = _image_input(w, rng, 6, 4)
        parts = []
        for _ in range(int(rng.integers(2, 4))):
            n = int(rng.integers(1, 5))
            wv = _weights(rng, (n, 1, 1, shape[3]), False)
            ws = _weight_scales(rng, n, True)
            so = _out_scale(rng, s, ws, shape[3], wv)
            wt = w.add_tensor(wv.shape, "INT8", scale=ws, zero_point=np.zeros(n, np.int64), data=wv)
            ys = shape[:3] + (n,)
            y = w.add_tensor(ys, "INT8", scale=so, zero_point=_zp(rng))
            w.add_op("CONV_2D", [x, wt], [y], padding="VALID", stride_h=1, stride_w=1)
            parts.append((y, ys))
        axis = int(rng.choice((3, -1)))
    ax = axis % len(parts[0][1])
    out_shape = list(parts[0][1])
    out_shape[ax] = sum(p[1][ax] for p in parts)
    q = w.tensors[parts[0][0]].quantization
    for p in parts[1:]:
        w.tensors[p[0]].quantization = q
    y = w.add_tensor(out_shape, "INT8", scale=q.scale[0], zero_point=q.zeroPoint[0])
    w.add_op("CONCATENATION", [p[0] for p in parts], [y], axis=axis)
    return RandomModel("CONCATENATION", w.to_bytes([x], [y]), f"{len(parts)} inputs, axis {axis}")


def gen_pad(rng) -> RandomModel:
    w = ModelWriter()
    if rng.random() < 0.6:
        x, shape, s, zp = _image_input(w, rng)
        pads = [[0, 0], list(rng.integers(0, 3, 2)), list(rng.integers(0, 3, 2)), [0, 0]]
    else:
        shape = (1, int(rng.integers(2, 12)), int(rng.integers(1, 6)))
        s, zp = _scale(rng, -3, 0.5), _zp(rng)
        x = w.add_tensor(shape, "INT8", scale=s, zero_point=zp, name="input")
        pads = [[0, 0], list(rng.integers(0, 4, 2)), [0, 0]]
    pads = np.array(pads, np.int64)
    p = w.add_tensor(pads.shape, "INT32", data=pads)
    out = tuple(int(d + a + b) for d, (a, b) in zip(shape, pads))
    y = w.add_tensor(out, "INT8", scale=s, zero_point=zp)
    w.add_op("PAD", [x, p], [y])
    return RandomModel("PAD", w.to_bytes([x], [y]), f"input {shape}, paddings {pads.tolist()}")


def gen_mean(rng) -> RandomModel:
    w = ModelWriter()
    keep = bool(rng.random() < 0.3)
    if rng.random() < 0.6:
        x, shape, s, zp = _image_input(w, rng, 8, 48)
        axes = np.array([1, 2] if rng.random() < 0.7 else [2, 1], np.int32)
        out = (1, 1, 1, shape[3]) if keep else (1, shape[3])
    else:
        shape = (1, int(rng.integers(2, 40)), int(rng.integers(1, 48)))
        s, zp = _scale(rng, -3, 0.5), _zp(rng)
        x = w.add_tensor(shape, "INT8", scale=s, zero_point=zp, name="input")
        axes = np.array([1 if rng.random() < 0.5 else -2], np.int32)
        out = (1, 1, shape[2]) if keep else (1, shape[2])
    a = w.add_tensor(axes.shape, "INT32", data=axes)
    if rng.random() < 0.4:  # the integer Mean path (same quantization in and out)
        so, zo = s, zp
    else:
        so, zo = _scale(rng, np.log10(s) - 0.5, np.log10(s) + 0.5), _zp(rng)
    y = w.add_tensor(out, "INT8", scale=so, zero_point=zo)
    w.add_op("MEAN", [x, a], [y], keep_dims=keep)
    return RandomModel("MEAN", w.to_bytes([x], [y]), f"input {shape}, axes {axes.tolist()}, same={so == s}")


def gen_logistic(rng) -> RandomModel:
    w = ModelWriter()
    shape = (1, int(rng.integers(4, 64)))
    s, zp = _scale(rng, -3, 0), _zp(rng)
    x = w.add_tensor(shape, "INT8", scale=s, zero_point=zp, name="input")
    y = w.add_tensor(shape, "INT8", scale=1.0 / 256, zero_point=-128)
    w.add_op("LOGISTIC", [x], [y])
    return RandomModel("LOGISTIC", w.to_bytes([x], [y]), f"input scale {s:.3g}")


def gen_tanh(rng) -> RandomModel:
    w = ModelWriter()
    shape = (1, int(rng.integers(4, 64)))
    s, zp = _scale(rng, -3, 0), _zp(rng)
    x = w.add_tensor(shape, "INT8", scale=s, zero_point=zp, name="input")
    y = w.add_tensor(shape, "INT8", scale=1.0 / 128, zero_point=0)
    w.add_op("TANH", [x], [y])
    return RandomModel("TANH", w.to_bytes([x], [y]), f"input scale {s:.3g}")


def gen_softmax(rng) -> RandomModel:
    w = ModelWriter()
    shape = (1, int(rng.integers(2, 40)))
    s, zp = _scale(rng, -2.5, 0), _zp(rng)
    x = w.add_tensor(shape, "INT8", scale=s, zero_point=zp, name="input")
    y = w.add_tensor(shape, "INT8", scale=1.0 / 256, zero_point=-128)
    beta = 1.0 if rng.random() < 0.7 else float(np.float32(rng.uniform(0.3, 3)))
    w.add_op("SOFTMAX", [x], [y], beta=beta)
    return RandomModel("SOFTMAX", w.to_bytes([x], [y]), f"input scale {s:.3g}, beta {beta:.3g}")


def gen_relu(rng) -> RandomModel:
    w = ModelWriter()
    x, shape, s, zp = _vector_input(w, rng, 4, 64)
    if rng.random() < 0.5:
        y = w.add_tensor(shape, "INT8", scale=_scale(rng, np.log10(s) - 0.5, np.log10(s) + 0.3), zero_point=_zp(rng))
        w.add_op("RELU", [x], [y])
        op = "RELU"
    else:
        y = w.add_tensor(shape, "INT8", scale=s, zero_point=zp)
        w.add_op("RELU6", [x], [y])
        op = "RELU6"
    return RandomModel(op, w.to_bytes([x], [y]), f"input scale {s:.3g}")


def gen_chain(rng) -> RandomModel:
    """Conv -> depthwise -> pool -> reshape -> FC -> (softmax | logistic), with random quantization."""
    w = ModelWriter()
    x, shape, s, _ = _image_input(w, rng, 8, 3)
    y, shape, s = _add_conv(w, rng, x, shape, s, depthwise=False, chain=True)
    y, shape, s = _add_conv(w, rng, y, shape, s, depthwise=True, chain=True)
    t = w.tensors[y]
    zp = int(t.quantization.zeroPoint[0])
    if shape[1] > 1 and shape[2] > 1:
        y, shape = _add_pool(w, rng, y, shape, s, zp, str(rng.choice(("MAX_POOL_2D", "AVERAGE_POOL_2D"))))
    flat = (1, int(np.prod(shape[1:])))
    r = w.add_tensor(flat, "INT8", scale=s, zero_point=zp)
    w.add_op("RESHAPE", [y], [r], new_shape=list(flat))
    y, shape, s = _add_fc(w, rng, r, flat, s, int(rng.integers(2, 12)), act="NONE", chain=True)
    out = w.add_tensor(shape, "INT8", scale=1.0 / 256, zero_point=-128)
    if rng.random() < 0.5:
        w.add_op("SOFTMAX", [y], [out], beta=1.0)
    else:
        w.add_op("LOGISTIC", [y], [out])
    return RandomModel("chain", w.to_bytes([x], [out]), "conv/dw/pool/reshape/fc/act")


GENERATORS: Dict[str, Callable[[np.random.Generator], RandomModel]] = {
    "FULLY_CONNECTED": gen_fully_connected,
    "FULLY_CONNECTED_targeted": gen_fully_connected_targeted,
    "CONV_2D": gen_conv_2d,
    "DEPTHWISE_CONV_2D": gen_depthwise_conv_2d,
    "MAX_POOL_2D": _gen_pool("MAX_POOL_2D"),
    "AVERAGE_POOL_2D": _gen_pool("AVERAGE_POOL_2D"),
    "ADD": gen_add,
    "CONCATENATION": gen_concatenation,
    "PAD": gen_pad,
    "MEAN": gen_mean,
    "LOGISTIC": gen_logistic,
    "TANH": gen_tanh,
    "SOFTMAX": gen_softmax,
    "RELU": gen_relu,
    "chain": gen_chain,
}


# ---------------------------------------------------------------------------------------------
def _inputs(rng, model: fb.TFLiteModel, n: int) -> np.ndarray:
    shape = model.tensors[model.inputs[0]].shape
    return rng.integers(-128, 128, size=(n,) + tuple(shape[1:])).astype(np.int8)


def compare(model_bytes: bytes, x_int8: np.ndarray, label: str = "") -> DiffResult:
    """TFLM (every tensor preserved) vs the simulator on ``x_int8``; counts per op type of the
    producing operator."""
    model = fb.read_model(model_bytes)
    mine = sim.simulate_tensors(model, x_int8)
    theirs = sim.run_tflm_tensors(model_bytes, x_int8, tensors=[i for i in mine if i != model.inputs[0]])
    res = DiffResult(models=1, samples=int(len(x_int8)))
    for i, ref in theirs.items():
        op = model.producer(i)
        got = mine[i].reshape(ref.shape)
        n_diff = int(np.sum(got != ref))
        acc = res.per_op.setdefault(op.name, [0, 0])
        acc[0] += int(ref.size)
        acc[1] += n_diff
        res.values += int(ref.size)
        res.differences += n_diff
        if n_diff:
            res.failures.append({"model": label, "op": op.name, "tensor": i, "differences": n_diff,
                                 "values": int(ref.size)})
    return res


def run(seed: int, n_models: int, samples: int = 32, ops: Optional[Sequence[str]] = None,
        min_values: int = 0) -> DiffResult:
    """``n_models`` random models per op in ``ops`` (default: every generator), each compared on
    ``samples`` random inputs; keeps cycling through the ops until ``min_values`` values were
    compared."""
    rng = np.random.default_rng(seed)
    names = list(ops or GENERATORS)
    unknown = [n for n in names if n not in GENERATORS]
    if unknown:
        raise ValueError(f"unknown generator(s) {unknown}; known: {', '.join(GENERATORS)}")
    total = DiffResult()
    rounds = 0
    while rounds < n_models or total.values < min_values:
        for name in names:
            rm = GENERATORS[name](rng)
            model = fb.read_model(rm.model_bytes)
            x = rm.inputs if rm.inputs is not None else _inputs(rng, model, samples)
            total.add(compare(rm.model_bytes, x, f"{name} #{rounds}: {rm.description}"))
        rounds += 1
    return total


# ---------------------------------------------------------------------------------------------
def _float_product_multiplier(s_in: float, s_w: float, s_out: float) -> Tuple[int, int]:
    """Candidate 1: the float32 product of the scales, widened, divided in double."""
    prod = np.float32(s_in) * np.float32(s_w)
    return intmath.quantize_multiplier(float(np.float64(prod) / np.float64(np.float32(s_out))))


def _double_product_multiplier(s_in: float, s_w: float, s_out: float) -> Tuple[int, int]:
    """Candidate 2: the product and the quotient in double (written here, independently of
    ``intmath.conv_multiplier``, so that the check does not assume what it checks)."""
    real = float(np.float64(np.float32(s_in)) * np.float64(np.float32(s_w)) / np.float64(np.float32(s_out)))
    return intmath.quantize_multiplier(real)


def targeted_fully_connected(rng, with_bias: bool, rows: int = 16):
    """A FULLY_CONNECTED layer (int8, per tensor) whose scales make the double-product and the
    float32-product multipliers differ, with weights chosen so that every output row's accumulator
    lands where the two give different int8 outputs.

    Returns ``(model_bytes, x_int8, y_double, y_float)``: the layer, its one input row, and the
    outputs each multiplier predicts (they differ in every element).
    """
    from .. import intmath as im

    for _ in range(100_000):
        s_in, s_w, s_out = (_scale(rng, -4, 0) for _ in range(3))
        md = _double_product_multiplier(s_in, s_w, s_out)
        mf = _float_product_multiplier(s_in, s_w, s_out)
        if md == mf or md[1] > 0:
            continue
        m = s_in * s_w / s_out
        lim = int(min(127 / m, 255 * 127 * 60))
        acc = rng.integers(-lim, lim, size=min(2 * lim, 1 << 17)).astype(np.int64)
        a = im.multiply_by_quantized_multiplier(acc, *md)
        b = im.multiply_by_quantized_multiplier(acc, *mf)
        ok = (a != b) & (np.minimum(a, b) >= -128) & (np.maximum(a, b) <= 127)
        if not np.any(ok):
            continue
        chosen = acc[ok][rng.permutation(int(ok.sum()))[:rows]]
        break
    else:  # pragma: no cover - about one draw in three succeeds
        raise RuntimeError("no scale triple separating the two multipliers was found")
    k = 60
    wts = np.zeros((len(chosen), k + 1), np.int64)
    for r, target in enumerate(chosen):  # x = [-127, 127 x k] with zero point -128: acc = w0 + 255 * sum(w_rest)
        s_, w0 = divmod(int(target), 255)
        if w0 > 127:
            w0 -= 255
            s_ += 1
        wts[r, 0] = w0
        for j in range(1, k + 1):
            v = max(-127, min(127, s_))
            wts[r, j] = v
            s_ -= v
    x = np.array([[-127] + [127] * k], np.int8)
    writer = ModelWriter()
    xi = writer.add_tensor((1, k + 1), "INT8", scale=s_in, zero_point=-128, name="input")
    wi = writer.add_tensor(wts.shape, "INT8", scale=s_w, zero_point=0, data=wts)
    inputs = [xi, wi]
    if with_bias:
        inputs.append(writer.add_tensor((len(chosen),), "INT32", scale=float(np.float32(s_in) * np.float32(s_w)),
                                        zero_point=0, data=np.zeros(len(chosen), np.int64)))
    else:
        inputs.append(-1)
    yi = writer.add_tensor((1, len(chosen)), "INT8", scale=s_out, zero_point=0)
    writer.add_op("FULLY_CONNECTED", inputs, [yi])
    acc = (x.astype(np.int64) + 128) @ wts.T
    y_double = np.clip(im.multiply_by_quantized_multiplier(acc, *md), -128, 127).astype(np.int8)
    y_float = np.clip(im.multiply_by_quantized_multiplier(acc, *mf), -128, 127).astype(np.int8)
    return writer.to_bytes([xi], [yi]), x, y_double, y_float
