"""Keras (stripped ECQ/ECQx model + ``QuantizedKernel`` integers) -> full-integer ``.tflite``.

The stored integer of every quantized weight equals ``QuantizedKernel.integers()`` (up to the
documented BatchNorm sign, see below); :func:`convert` checks this on the converted bytes and
refuses to return a model where it does not hold.

How (see ``docs/export-tflm.md``):

1. **Plan.** The Keras model (a chain of layers) is read into a list of steps, one per TFLite op:
   Dense -> FULLY_CONNECTED, Conv2D -> CONV_2D, DepthwiseConv2D -> DEPTHWISE_CONV_2D, pools,
   Flatten/Reshape -> RESHAPE. BatchNormalization after a Conv2D/DepthwiseConv2D is folded into
   its kernel and bias; ReLU/ReLU6 are fused; a final softmax is dropped (logits are exported,
   the argmax is unchanged); Dropout-like layers vanish. Anything else is refused by name.
2. **Export graph.** A ``tf.function`` re-implements the plan with plain TF ops, every weight
   passed through a FakeQuant of FIXED range (the grid's, never the live training quantizer) and
   every activation through an 8-bit FakeQuant whose range is the min/max seen on
   ``request.representative`` (float calibration, as post-training quantization does).
3. **Convert** with ``optimizations=[DEFAULT]``, ``TFLITE_BUILTINS_INT8``, int8 input and output.

Weight schemes (``b`` = ``QuantizedKernel.bits``, ``k`` = its integers, ``step`` its step):

=====================  ===========  =====================================================
grid / bits            stored type  FakeQuant (range) and scale
=====================  ===========  =====================================================
symmetric, b <= 4      INT4         4-bit narrow, +-7*step -> scale ``step``, zp 0
symmetric, b in 5..8   INT8         8-bit narrow, +-127*step -> scale ``step``, zp 0
paper, any b           INT8         8-bit narrow (+-127*step) or full ([-128, 127]*step when
                                    k = -128 occurs) -> scale ``step``, zp 0
no QuantizedKernel     INT8         8-bit narrow, +-max|w| (PTQ-equivalent), per-tensor for
                                    FC, per-channel for convolutions
=====================  ===========  =====================================================

FULLY_CONNECTED is per-tensor (TFLM's INT4 FC is per-tensor only). CONV_2D/DEPTHWISE_CONV_2D are
per-channel along the output channel (TFLM requires per-channel or one broadcast scale for
convolutions; without BatchNorm all channel scales equal ``step``). With ``compress=True`` the
<= 4-bit symmetric grids are stored INT8 (same integers) because TFLM's LUT compression refuses
INT4 tensors.

BatchNorm folding: ``f_c = gamma_c / sqrt(var_c + eps)``; folded kernel ``k * step * f_c``; channel
scale ``step * |f_c|``; stored integer ``sign(f_c) * k`` (``0`` for a channel with ``f_c = 0``);
folded bias ``(b_c - mean_c) * f_c + beta_c``. Dense + BatchNorm is refused for a quantized Dense
(FC weights are per-tensor in TFLM, a per-channel BN factor cannot keep the integers) and folded
(int8 PTQ) for a float Dense.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import flatbuffer as fb

__all__ = [
    "convert_full_int8",
    "SUPPORTED_LAYERS",
    "ALLOWED_OPS",
    "WeightStep",
    "PoolStep",
    "ReshapeStep",
    "TFLiteExport",
    "plan_model",
    "convert",
    "to_tflite",
    "tflite_layout",
    "quantize_input",
    "dequantize_output",
]

log = logging.getLogger(__name__)

# Builtin (and custom) ops an export may contain; everything else means the plan went wrong.
ALLOWED_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", fb.DECODE_OP)

_ACT_NAMES = {"linear": "NONE", "relu": "RELU", "relu6": "RELU6"}
CALIBRATION_BATCH = 128
CONVERTER_SAMPLES = 100


# --------------------------------------------------------------------------------------------
# Plan
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class WeightStep:
    """One FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D op (kernel in Keras layout)."""

    op: str
    layer: str  # the Keras weight layer (key of request.quant)
    layers: List[str]  # every Keras layer merged into this op (weight layer, BN, activation)
    kernel: np.ndarray  # float32, Keras layout, BN folded
    bias: Optional[np.ndarray]  # float32 [out] or None
    activation: str = "NONE"  # "NONE" | "RELU" | "RELU6"
    strides: Tuple[int, int] = (1, 1)
    padding: str = "VALID"
    dilation: Tuple[int, int] = (1, 1)
    depth_multiplier: int = 1
    quant: Any = None  # QuantizedKernel or None
    bn_factor: Optional[np.ndarray] = None  # float32 [out] when a BatchNorm was folded
    # weight encoding (filled by _encode)
    storage: str = "INT8"
    scales: Optional[np.ndarray] = None  # float32 [1] or [out]
    fq_bits: int = 8
    fq_narrow: bool = True
    fq_lo: Optional[np.ndarray] = None
    fq_hi: Optional[np.ndarray] = None
    expected: Optional[np.ndarray] = None  # int8 in TFLite layout (quantized layers)
    scheme: str = ""

    @property
    def out_channels(self) -> int:
        if self.op == "DEPTHWISE_CONV_2D":
            return int(self.kernel.shape[2] * self.kernel.shape[3])
        return int(self.kernel.shape[-1])

    @property
    def per_channel(self) -> bool:
        return self.op != "FULLY_CONNECTED"


@dataclasses.dataclass
class PoolStep:
    op: str  # "MAX_POOL_2D" | "AVERAGE_POOL_2D"
    layers: List[str]
    pool: Tuple[int, int]
    strides: Tuple[int, int]
    padding: str


@dataclasses.dataclass
class ReshapeStep:
    op: str
    layers: List[str]
    shape: Tuple[int, ...]  # without the batch dimension


Step = Any  # WeightStep | PoolStep | ReshapeStep


@dataclasses.dataclass
class _Plan:
    steps: List[Step]
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]
    notes: List[str]


def _pair(v) -> Tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def _activation_name(layer) -> str:
    import tensorflow as tf

    try:
        name = tf.keras.activations.serialize(layer.activation)
    except Exception:  # pragma: no cover - exotic callables
        name = getattr(layer.activation, "__name__", repr(layer.activation))
    if isinstance(name, dict):  # pragma: no cover
        name = name.get("class_name", str(name))
    return str(name)


def _layer_error(layer, why: str) -> ValueError:
    return ValueError(f"layer {layer.name!r} ({type(layer).__name__}): {why}")


class _Planner:
    """Turns a chain of Keras layers into export steps; ``SUPPORTED_LAYERS`` maps each accepted
    Keras class to its handler and is the single source of the 'supported types' error text."""

    def __init__(self, model, quant: Mapping[str, Any]):
        self.model = model
        self.quant = dict(quant or {})
        self.steps: List[Step] = []
        self.notes: List[str] = []
        self.used_quant: set = set()

    # ---- handlers --------------------------------------------------------------------------
    def weight(self, layer, is_last: bool):
        cls = type(layer).__name__
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise _layer_error(layer, "only data_format='channels_last' is supported")
        kernel_name = "depthwise_kernel" if cls == "DepthwiseConv2D" else "kernel"
        kernel = np.asarray(getattr(layer, kernel_name).numpy(), dtype=np.float32)
        bias = np.asarray(layer.bias.numpy(), dtype=np.float32) if getattr(layer, "use_bias", False) else None
        op = {"Dense": "FULLY_CONNECTED", "Conv2D": "CONV_2D", "DepthwiseConv2D": "DEPTHWISE_CONV_2D"}[cls]
        step = WeightStep(op=op, layer=layer.name, layers=[layer.name], kernel=kernel, bias=bias)
        if cls == "Dense":
            in_shape = tuple(layer.input_shape[1:])
            if len(in_shape) != 1:
                raise _layer_error(
                    layer, f"Dense on a rank-{len(in_shape) + 1} input {list(layer.input_shape)} is not supported; "
                    "put a Flatten before it"
                )
        else:
            if cls == "Conv2D" and getattr(layer, "groups", 1) != 1:
                raise _layer_error(layer, f"grouped convolution (groups={layer.groups}) is not supported")
            step.strides = _pair(layer.strides)
            step.dilation = _pair(layer.dilation_rate)
            pad = str(layer.padding).upper()
            if pad not in ("SAME", "VALID"):
                raise _layer_error(layer, f"padding {layer.padding!r} is not supported (accepted: 'same', 'valid')")
            step.padding = pad
            if cls == "DepthwiseConv2D":
                step.depth_multiplier = int(layer.depth_multiplier)
        if layer.name in self.quant:
            qk = self.quant[layer.name]
            self.used_quant.add(layer.name)
            _check_quantized_kernel(layer, qk, kernel)
            step.quant = qk
            step.kernel = np.asarray(qk.values(), dtype=np.float32)
        self.steps.append(step)
        self._activation(layer, _activation_name(layer), is_last)

    def _activation(self, layer, name: str, is_last: bool):
        if name == "linear":
            return
        if name == "softmax" and is_last:
            self.notes.append(f"{layer.name}: final softmax dropped, the model outputs logits (same argmax)")
            return
        if name not in _ACT_NAMES:
            raise _layer_error(
                layer, f"activation {name!r} is not supported (accepted: linear, relu, relu6, and softmax as the "
                "last operation)"
            )
        prev = self.steps[-1] if self.steps else None
        if not isinstance(prev, WeightStep) or prev.activation != "NONE":
            raise _layer_error(
                layer, f"activation {name!r} must directly follow a Dense/Conv2D/DepthwiseConv2D (optionally "
                "through a BatchNormalization) so that it can be fused"
            )
        prev.activation = _ACT_NAMES[name]
        if layer.name not in prev.layers:
            prev.layers.append(layer.name)

    def activation(self, layer, is_last: bool):
        cls = type(layer).__name__
        if cls == "ReLU":
            slope = float(np.asarray(layer.negative_slope)) if layer.negative_slope is not None else 0.0
            thr = float(np.asarray(layer.threshold)) if layer.threshold is not None else 0.0
            mx = None if layer.max_value is None else float(np.asarray(layer.max_value))
            if slope != 0.0 or thr != 0.0 or mx not in (None, 6.0):
                raise _layer_error(layer, "only ReLU() and ReLU(max_value=6) are supported")
            name = "relu" if mx is None else "relu6"
        elif cls == "Softmax":
            name = "softmax"
        else:
            name = _activation_name(layer)
        self._activation(layer, name, is_last)

    def batchnorm(self, layer, is_last: bool):
        prev = self.steps[-1] if self.steps else None
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        rank = len(layer.input_shape)
        if axis is None or axis not in (-1, rank - 1):
            raise _layer_error(layer, f"BatchNormalization over axis {layer.axis} cannot be folded (last axis only)")
        if not isinstance(prev, WeightStep) or prev.activation != "NONE" or prev.bn_factor is not None:
            raise _layer_error(
                layer, "BatchNormalization is supported only directly after a Conv2D/DepthwiseConv2D (or a float "
                "Dense) with a linear activation, where it is folded into the kernel"
            )
        if prev.op == "FULLY_CONNECTED" and prev.quant is not None:
            raise _layer_error(
                layer, f"cannot fold BatchNormalization into the quantized Dense {prev.layer!r}: TFLM's FULLY_CONNECTED "
                "INT4/INT8 weights are per-tensor, so a per-output-channel BN factor would change the stored "
                "integers; fold the BN before quantization or remove it"
            )
        n = prev.out_channels
        gamma = layer.gamma.numpy().astype(np.float64) if layer.scale else np.ones(n)
        beta = layer.beta.numpy().astype(np.float64) if layer.center else np.zeros(n)
        mean = layer.moving_mean.numpy().astype(np.float64)
        var = layer.moving_variance.numpy().astype(np.float64)
        factor = (gamma / np.sqrt(var + float(layer.epsilon))).astype(np.float32)
        b = prev.bias.astype(np.float64) if prev.bias is not None else np.zeros(n)
        prev.bias = ((b - mean) * factor.astype(np.float64) + beta).astype(np.float32)
        prev.bn_factor = factor
        prev.kernel = _scale_out_channels(prev.op, prev.kernel, factor)
        prev.layers.append(layer.name)

    def pool(self, layer, is_last: bool):
        cls = type(layer).__name__
        op = "MAX_POOL_2D" if "Max" in cls else "AVERAGE_POOL_2D"
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise _layer_error(layer, "only data_format='channels_last' is supported")
        in_shape = tuple(layer.input_shape[1:])
        if cls.startswith("Global"):
            self.steps.append(PoolStep(op, [layer.name], (in_shape[0], in_shape[1]), (1, 1), "VALID"))
            if not getattr(layer, "keepdims", False):
                self.steps.append(ReshapeStep("RESHAPE", [layer.name], (in_shape[2],)))
            return
        self.steps.append(
            PoolStep(op, [layer.name], _pair(layer.pool_size), _pair(layer.strides), str(layer.padding).upper())
        )

    def reshape(self, layer, is_last: bool):
        shape = tuple(int(d) for d in layer.output_shape[1:])
        self.steps.append(ReshapeStep("RESHAPE", [layer.name], shape))

    def skip(self, layer, is_last: bool):
        if type(layer).__name__ != "InputLayer":
            self.notes.append(f"{layer.name}: {type(layer).__name__} is the identity at inference, not exported")


def _scale_out_channels(op: str, kernel: np.ndarray, factor: np.ndarray) -> np.ndarray:
    if op == "DEPTHWISE_CONV_2D":
        h, w, c, m = kernel.shape
        return (kernel * factor.reshape(c, m)).astype(np.float32)
    return (kernel * factor).astype(np.float32)


SUPPORTED_LAYERS: Dict[str, Callable[[_Planner, Any, bool], None]] = {
    "Dense": _Planner.weight,
    "Conv2D": _Planner.weight,
    "DepthwiseConv2D": _Planner.weight,
    "BatchNormalization": _Planner.batchnorm,
    "MaxPooling2D": _Planner.pool,
    "AveragePooling2D": _Planner.pool,
    "GlobalMaxPooling2D": _Planner.pool,
    "GlobalAveragePooling2D": _Planner.pool,
    "Flatten": _Planner.reshape,
    "Reshape": _Planner.reshape,
    "ReLU": _Planner.activation,
    "Activation": _Planner.activation,
    "Softmax": _Planner.activation,
    "Dropout": _Planner.skip,
    "SpatialDropout2D": _Planner.skip,
    "GaussianNoise": _Planner.skip,
    "GaussianDropout": _Planner.skip,
    "AlphaDropout": _Planner.skip,
    "ActivityRegularization": _Planner.skip,
    "InputLayer": _Planner.skip,
}


def _check_quantized_kernel(layer, qk, kernel: np.ndarray) -> None:
    bits, grid = int(qk.bits), str(qk.grid)
    if not 2 <= bits <= 8:
        raise _layer_error(layer, f"QuantizedKernel.bits = {bits}; accepted: 2..8")
    if grid not in ("symmetric", "paper"):
        raise _layer_error(layer, f"QuantizedKernel.grid = {grid!r}; accepted: 'symmetric', 'paper'")
    step = float(np.float32(qk.step))
    if not np.isfinite(step) or step <= 0:
        raise _layer_error(layer, f"QuantizedKernel.step = {qk.step!r} must be a positive finite number")
    k = np.asarray(qk.integers())
    if k.shape != kernel.shape:
        raise _layer_error(layer, f"QuantizedKernel has shape {list(k.shape)} but the kernel is {list(kernel.shape)}")
    lo, hi = (-(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1) if grid == "symmetric" else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if k.size and (k.min() < lo or k.max() > hi):
        raise _layer_error(
            layer, f"QuantizedKernel integers span [{k.min()}, {k.max()}], outside the {bits}-bit {grid} grid [{lo}, {hi}]"
        )
    values = np.asarray(qk.values(), dtype=np.float32)
    if not np.allclose(values, kernel, rtol=1e-5, atol=1e-6 * step):
        bad = float(np.max(np.abs(values - kernel)))
        raise _layer_error(
            layer, f"the kernel does not equal QuantizedKernel.values() (max difference {bad:.3g}); export the "
            "stripped model that belongs to this quantization info"
        )


def _chain(model) -> Iterator[Any]:
    """The model's layers in order, checking that each consumes the previous one's output."""
    import tensorflow as tf

    if not isinstance(model, tf.keras.Model):
        raise TypeError(f"model must be a tf.keras Model, got {type(model).__name__}")
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError("the model is not built (give it an input shape or call it once)")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"only single-input single-output models are exported (got {len(model.inputs)} inputs, "
                         f"{len(model.outputs)} outputs)")
    prev = model.inputs[0]
    layers = [l for l in model.layers if type(l).__name__ != "InputLayer"]
    for layer in layers:
        cls = type(layer).__name__
        if cls not in SUPPORTED_LAYERS:
            raise _layer_error(layer, f"layer type {cls} is not supported by the TFLM exporter; supported: "
                               f"{', '.join(sorted(k for k in SUPPORTED_LAYERS if k != 'InputLayer'))}")
        try:
            inp = layer.input
        except (AttributeError, ValueError) as e:
            raise _layer_error(layer, f"layer is used more than once or is not connected ({e})") from None
        if inp is not prev:
            raise _layer_error(layer, "only chains of layers are exported (each layer must consume the previous "
                               "layer's output; branches, skips and merges are not supported)")
        prev = layer.output
        yield layer
    if prev is not model.outputs[0]:  # pragma: no cover - guarded by the loop above
        raise ValueError("the model output is not the last layer's output")


def plan_model(model, quant: Optional[Mapping[str, Any]] = None) -> _Plan:
    """Read a Keras model into export steps (see module docstring).

    Raises:
        TypeError: ``model`` is not a Keras model.
        ValueError: unsupported layer/activation/topology (naming the layer and what is
            accepted), or ``quant`` names a layer that is not a Dense/Conv2D/DepthwiseConv2D
            of the model, or a ``QuantizedKernel`` does not match its kernel.
    """
    planner = _Planner(model, quant or {})
    layers = list(_chain(model))
    real = [l for l in layers if SUPPORTED_LAYERS[type(l).__name__] is not _Planner.skip]
    for layer in layers:
        is_last = bool(real) and layer is real[-1]
        SUPPORTED_LAYERS[type(layer).__name__](planner, layer, is_last)
    unknown = sorted(set(planner.quant) - planner.used_quant)
    if unknown:
        raise ValueError(
            f"quantization info names layer(s) {unknown} that are not Dense/Conv2D/DepthwiseConv2D layers of the model"
        )
    if not any(isinstance(s, WeightStep) for s in planner.steps):
        raise ValueError("the model has no Dense/Conv2D/DepthwiseConv2D layer to export")
    in_shape = tuple(int(d) for d in model.input_shape[1:])
    if any(d is None for d in model.input_shape[1:]):
        raise ValueError(f"the model input shape {model.input_shape} must be fully defined (except the batch)")
    out_shape = tuple(int(d) for d in model.output_shape[1:])
    return _Plan(planner.steps, in_shape, out_shape, planner.notes)


# --------------------------------------------------------------------------------------------
# Weight encoding
# --------------------------------------------------------------------------------------------
def tflite_layout(op: str, kernel: np.ndarray) -> np.ndarray:
    """Keras kernel -> TFLite filter layout: FC [out, in], CONV_2D OHWI, DEPTHWISE [1, H, W, C*M]."""
    kernel = np.asarray(kernel)
    if op == "FULLY_CONNECTED":
        return kernel.T
    if op == "CONV_2D":
        return np.transpose(kernel, (3, 0, 1, 2))
    if op == "DEPTHWISE_CONV_2D":
        h, w, c, m = kernel.shape
        return kernel.reshape(1, h, w, c * m)
    raise ValueError(f"no filter layout for op {op!r}")


def _channel_values(op: str, kernel: np.ndarray) -> np.ndarray:
    """Kernel values as [out_channels, -1] (Keras layout)."""
    if op == "DEPTHWISE_CONV_2D":
        h, w, c, m = kernel.shape
        return kernel.reshape(h * w, c * m).T
    return kernel.reshape(-1, kernel.shape[-1]).T


def _encode(step: WeightStep, compress: bool, int8_weights: bool = False) -> None:
    n_out = step.out_channels
    qk = step.quant
    if qk is None:
        absmax = np.abs(_channel_values(step.op, step.kernel)).max(axis=1)
        if not step.per_channel:
            absmax = np.array([absmax.max()])
        absmax = np.maximum(absmax, np.float32(1e-8)).astype(np.float32)
        step.storage, step.fq_bits, step.fq_narrow = "INT8", 8, True
        step.fq_lo, step.fq_hi = -absmax, absmax
        step.scales = (absmax / np.float32(127)).astype(np.float32)
        step.scheme = "int8 PTQ (no QuantizedKernel), " + ("per-channel" if step.per_channel else "per-tensor")
        return
    bits, grid = int(qk.bits), str(qk.grid)
    stepf = np.float32(qk.step)
    k = np.asarray(qk.integers(), dtype=np.int64)
    if step.bn_factor is not None:
        f = step.bn_factor.astype(np.float32)
        sign = np.sign(f).astype(np.int64)
        scales = (stepf * np.abs(f)).astype(np.float32)
        scales = np.where(scales > 0, scales, stepf).astype(np.float32)  # f_c = 0: weights are all 0
        k = _scale_out_channels(step.op, k.astype(np.float64), sign.astype(np.float64)).astype(np.int64)
    else:
        scales = np.full(n_out if step.per_channel else 1, stepf, dtype=np.float32)
    if k.size and (k.min() < -128 or k.max() > 127):
        c = int(np.argmax(np.abs(_channel_values(step.op, k)).max(axis=1)))
        raise ValueError(
            f"layer {step.layer!r}: the {bits}-bit {grid} level -128 meets a negative BatchNorm factor in output "
            f"channel {c}; the folded integer +128 does not fit int8. Use the symmetric grid or fold the "
            "BatchNorm before quantization"
        )
    int4 = grid == "symmetric" and bits <= 4 and not compress and not int8_weights
    if int4:
        step.storage, step.fq_bits, step.fq_narrow = "INT4", 4, True
        lo_k, hi_k = -7, 7
    elif k.size and k.min() < -127:
        step.storage, step.fq_bits, step.fq_narrow = "INT8", 8, False
        lo_k, hi_k = -128, 127
    else:
        step.storage, step.fq_bits, step.fq_narrow = "INT8", 8, True
        lo_k, hi_k = -127, 127
    step.scales = scales
    step.fq_lo = (np.float32(lo_k) * scales).astype(np.float32)
    step.fq_hi = (np.float32(hi_k) * scales).astype(np.float32)
    step.expected = tflite_layout(step.op, k).astype(np.int8)
    why = ""
    if grid == "symmetric" and bits <= 4 and compress:
        why = " (INT8 because LUT compression refuses INT4)"
    elif grid == "symmetric" and bits <= 4 and int8_weights:
        why = " (INT8 requested)"
    step.scheme = (
        f"ECQ {bits}-bit {grid} -> {step.storage}{why}, "
        + ("per-channel" if step.per_channel else "per-tensor")
        + (" (BN folded: scale step*|f_c|, integers sign(f_c)*k)" if step.bn_factor is not None else "")
    )


# --------------------------------------------------------------------------------------------
# Export graph (TF ops + FakeQuant), calibration, conversion
# --------------------------------------------------------------------------------------------
def _fq_weight(tf, step: WeightStep):
    w = tf.constant(step.kernel)
    if step.op == "DEPTHWISE_CONV_2D":
        h, wd, c, m = step.kernel.shape
        flat = tf.reshape(w, (h, wd, c * m))
        q = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            flat, tf.constant(step.fq_lo), tf.constant(step.fq_hi), num_bits=step.fq_bits, narrow_range=step.fq_narrow
        )
        return tf.reshape(q, (h, wd, c, m))
    if step.per_channel:
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            w, tf.constant(step.fq_lo), tf.constant(step.fq_hi), num_bits=step.fq_bits, narrow_range=step.fq_narrow
        )
    return tf.quantization.fake_quant_with_min_max_vars(
        w, tf.constant(float(step.fq_lo[0])), tf.constant(float(step.fq_hi[0])), num_bits=step.fq_bits,
        narrow_range=step.fq_narrow,
    )


def _forward(steps: Sequence[Step], x, ranges: Optional[Mapping[Any, Tuple[float, float]]] = None,
             observe: Optional[Callable[[Any, Any], None]] = None, quantize_weights: bool = True):
    """The export graph: runs eagerly for calibration (``observe``) and traced for conversion
    (``ranges`` set: every activation FakeQuant'ed to 8 bits). ``quantize_weights=False`` gives
    the float model itself (BN folded, final softmax dropped)."""
    import tensorflow as tf

    def point(key, t):
        if observe is not None:
            observe(key, t)
        if ranges is not None:
            lo, hi = ranges[key]
            t = tf.quantization.fake_quant_with_min_max_vars(
                t, tf.constant(lo, tf.float32), tf.constant(hi, tf.float32), num_bits=8, narrow_range=False
            )
        return t

    x = point("input", x)
    for i, s in enumerate(steps):
        if isinstance(s, WeightStep):
            w = _fq_weight(tf, s) if quantize_weights else tf.constant(s.kernel)
            if s.op == "FULLY_CONNECTED":
                y = tf.matmul(x, w)
            elif s.op == "CONV_2D":
                y = tf.nn.conv2d(x, w, strides=(1,) + s.strides + (1,), padding=s.padding, dilations=s.dilation)
            else:
                y = tf.nn.depthwise_conv2d(x, w, strides=(1,) + s.strides + (1,), padding=s.padding, dilations=s.dilation)
            if s.bias is not None:
                y = tf.nn.bias_add(y, tf.constant(s.bias))
            if s.activation == "RELU":
                y = tf.nn.relu(y)
            elif s.activation == "RELU6":
                y = tf.nn.relu6(y)
            x = point(i, y)
        elif isinstance(s, PoolStep):
            pool = tf.nn.max_pool2d if s.op == "MAX_POOL_2D" else tf.nn.avg_pool2d
            x = pool(x, ksize=s.pool, strides=s.strides, padding=s.padding)
        else:
            x = tf.reshape(x, (-1,) + tuple(s.shape))
    return x


def _calibrate(steps: Sequence[Step], data: np.ndarray) -> Dict[Any, Tuple[float, float]]:
    """min/max of every activation FakeQuant point over ``data`` (float graph, quantized weights)."""
    stats: Dict[Any, List[float]] = {}

    def observe(key, t):
        v = t.numpy()
        lo, hi = float(v.min()), float(v.max())
        if key in stats:
            stats[key][0] = min(stats[key][0], lo)
            stats[key][1] = max(stats[key][1], hi)
        else:
            stats[key] = [lo, hi]

    import tensorflow as tf

    for i in range(0, len(data), CALIBRATION_BATCH):
        _forward(steps, tf.constant(data[i : i + CALIBRATION_BATCH]), observe=observe)
    ranges = {}
    for key, (lo, hi) in stats.items():
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if hi - lo < 1e-6:
            hi = lo + 1e-6
        ranges[key] = (float(np.float32(lo)), float(np.float32(hi)))
    return ranges


@contextlib.contextmanager
def _quiet_tf() -> Iterator[None]:
    import tensorflow as tf

    old = tf.get_logger().level
    tf.get_logger().setLevel(logging.ERROR)
    try:
        yield
    finally:
        tf.get_logger().setLevel(old)


def _convert_graph(steps, ranges, input_shape, representative: np.ndarray) -> bytes:
    import tensorflow as tf

    spec = tf.TensorSpec((1,) + tuple(input_shape), tf.float32, name="input")
    fn = tf.function(lambda x: _forward(steps, x, ranges=ranges), input_signature=[spec], autograph=False)
    holder = tf.Module()
    holder.fn = fn
    concrete = fn.get_concrete_function()
    return convert_full_int8(tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder), representative)


def convert_full_int8(conv, representative: np.ndarray) -> bytes:
    """Run a ``tf.lite.TFLiteConverter`` as a full-integer conversion: int8 builtins only, int8
    input and output, activation ranges calibrated on the first ``CONVERTER_SAMPLES`` rows of
    ``representative`` (one sample per step). Weight FakeQuant ops with <= 4 bits give INT4
    weights (TF 2.14)."""
    import warnings

    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rep = np.asarray(representative)[:CONVERTER_SAMPLES].astype(np.float32)
    conv.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with _quiet_tf(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(conv.convert())


# --------------------------------------------------------------------------------------------
# Result and checks
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TFLiteExport:
    """What :func:`convert` produced: the model and one report row per weight op."""

    model_bytes: bytes
    layers: List[Dict[str, Any]]
    notes: List[str]
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]
    compressed: bool
    uncompressed_size: int
    ops: List[str]
    plan: Any = dataclasses.field(default=None, repr=False)

    def reference_outputs(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """The float model's outputs on ``x`` as exported (logits: a final softmax is dropped,
        BatchNorm folded), to compare with the dequantized int8 outputs."""
        import tensorflow as tf

        x = np.asarray(x, dtype=np.float32)
        outs = [_forward(self.plan.steps, tf.constant(x[i : i + batch]), quantize_weights=False).numpy()
                for i in range(0, len(x), batch)]
        return np.concatenate(outs, axis=0) if outs else np.zeros((0,) + self.output_shape, np.float32)

    def summary(self) -> Dict[str, Any]:
        return {
            "flatbuffer_bytes": len(self.model_bytes),
            "uncompressed_flatbuffer_bytes": self.uncompressed_size,
            "weight_bytes": int(sum(r["weight_bytes"] for r in self.layers)),
            "ops": self.ops,
            "compressed": self.compressed,
            "layers": self.layers,
            "notes": self.notes,
        }


def _exact_scales(model_bytes: bytes, plan: _Plan) -> bytes:
    """Make every stored weight scale exactly the planned float32 (``step`` or ``step*|f_c|``).

    The converter derives the scale from the FakeQuant range as ``(max - min) / levels`` and may
    land 1 ulp away; the integers do not change, the bias (quantized with the converter's scale)
    is off by a relative 1e-7, far below one bias LSB's effect on the output."""
    parsed = fb.read_model(model_bytes)
    wsteps = [s for s in plan.steps if isinstance(s, WeightStep)]
    wops = fb.weight_tensors(parsed)
    if len(wops) != len(wsteps):
        return model_bytes  # _verify reports the mismatch
    for s, (op, t) in zip(wsteps, wops):
        q = t.quantization
        if q is None or q.scale.size != s.scales.size or np.array_equal(q.scale, s.scales):
            continue
        if not np.allclose(q.scale, s.scales, rtol=2e-6, atol=0):
            continue  # not a rounding difference: _verify reports it
        model_bytes = fb.set_tensor_scales(model_bytes, t.index, s.scales)
    return model_bytes


def _verify(model_bytes: bytes, plan: _Plan) -> fb.TFLiteModel:
    """Check the converted model against the plan; RuntimeError when the converter did not keep
    what was asked (a bug of this exporter, never a user error)."""
    model = fb.read_model(model_bytes)
    bad_ops = [n for n in model.op_set() if n not in ALLOWED_OPS]
    if bad_ops:
        raise RuntimeError(f"the converted model contains op(s) {bad_ops}; the TFLM export allows only {list(ALLOWED_OPS)}")
    for idx in model.inputs + model.outputs:
        t = model.tensors[idx]
        if t.dtype != "INT8":
            raise RuntimeError(f"model input/output {t.name!r} is {t.dtype}, expected INT8")
    wsteps = [s for s in plan.steps if isinstance(s, WeightStep)]
    wops = fb.weight_tensors(model)
    if [op.name for op, _ in wops] != [s.op for s in wsteps]:
        raise RuntimeError(
            f"converted weight ops {[op.name for op, _ in wops]} do not match the plan {[s.op for s in wsteps]}"
        )
    for s, (op, t) in zip(wsteps, wops):
        where = f"layer {s.layer!r} ({op.name} op {op.index})"
        if t.dtype != s.storage:
            raise RuntimeError(f"{where}: weights stored as {t.dtype}, expected {s.storage}")
        ref = tflite_layout(s.op, s.kernel)
        if tuple(t.shape) != ref.shape:
            raise RuntimeError(f"{where}: filter shape {list(t.shape)}, expected {list(ref.shape)}")
        q = t.quantization
        if q is None or np.any(q.zero_point != 0):
            raise RuntimeError(f"{where}: weights must be symmetric (zero point 0)")
        if q.scale.size != s.scales.size or not np.array_equal(q.scale, s.scales):
            raise RuntimeError(f"{where}: weight scales {q.scale[:4]}... differ from the planned {s.scales[:4]}...")
        if s.expected is not None:
            stored = t.values()
            if not np.array_equal(stored, s.expected):
                n_bad = int(np.sum(stored != s.expected))
                raise RuntimeError(f"{where}: {n_bad} stored integers differ from QuantizedKernel.integers()")
    return model


def _layer_rows(model: fb.TFLiteModel, plan: _Plan) -> List[Dict[str, Any]]:
    rows = []
    wsteps = [s for s in plan.steps if isinstance(s, WeightStep)]
    for s, (op, t) in zip(wsteps, fb.weight_tensors(model)):
        v = model.constant_values(t.index)
        rows.append({
            "layer": s.layer,
            "keras_layers": list(s.layers),
            "op": op.name,
            "weight_type": t.dtype if t.is_constant else f"{model.tensors[t.index].dtype} (LUT)",
            "bits": int(s.quant.bits) if s.quant is not None else 8,
            "grid": str(s.quant.grid) if s.quant is not None else "ptq",
            "scheme": s.scheme,
            "shape": list(t.shape),
            "weights": int(v.size),
            "weight_bytes": _stored_bytes(model, t),
            "zeros": float(np.mean(v == 0)),
            "distinct_values": int(np.unique(v).size),
            "scales": int(t.quantization.scale.size),
            "bn_folded": s.bn_factor is not None,
            "activation": s.activation,
        })
    return rows


def _stored_bytes(model: fb.TFLiteModel, t: fb.Tensor) -> int:
    if t.is_constant:
        return len(t.data)
    op = model.producer(t.index)  # LUT: indices + ancillary (header + value tables)
    k = op.outputs.index(t.index)
    return len(model.tensors[op.inputs[2 * k]].data) + len(model.tensors[op.inputs[2 * k + 1]].data)


def _check_request(request) -> Tuple[Any, Mapping[str, Any], np.ndarray]:
    if request.representative is None or len(request.representative) == 0:
        raise ValueError("request.representative is empty: calibration needs a few hundred float inputs")
    rep = np.asarray(request.representative, dtype=np.float32)
    shape = tuple(int(d) for d in request.model.input_shape[1:])
    if rep.shape[1:] != shape:
        raise ValueError(
            f"request.representative has sample shape {list(rep.shape[1:])}, the model expects {list(shape)}"
        )
    if not np.all(np.isfinite(rep)):
        raise ValueError("request.representative contains NaN or infinite values")
    return request.model, request.quant or {}, rep


def convert(request, compress: Optional[bool] = None) -> TFLiteExport:
    """Export ``request.model`` (+ ``request.quant``) to a full-integer TFLite flatbuffer.

    Args:
        request: a ``firmware_export.registry.ExportRequest``.
        compress: apply TFLM LUT compression to the quantized weight tensors (default
            ``request.options.get("compress", False)``).

    Raises:
        ValueError: unsupported model or bad request (see :func:`plan_model`).
        RuntimeError: the converter did not produce the planned integers (exporter bug).
    """
    model, quant, rep = _check_request(request)
    if compress is None:
        compress = bool(request.options.get("compress", False))
    int8_weights = bool(request.options.get("int8_weights", False))
    plan = plan_model(model, quant)
    for s in plan.steps:
        if isinstance(s, WeightStep):
            _encode(s, compress, int8_weights)
    log.info("calibrating %d activation ranges on %d samples", 1 + sum(isinstance(s, WeightStep) for s in plan.steps), len(rep))
    ranges = _calibrate(plan.steps, rep)
    log.info("converting (%d ops)", len(plan.steps))
    model_bytes = _convert_graph(plan.steps, ranges, plan.input_shape, rep)
    model_bytes = _exact_scales(model_bytes, plan)
    parsed = _verify(model_bytes, plan)
    uncompressed = len(model_bytes)
    notes = list(plan.notes)
    if compress:
        from .compress import lut_compress

        targets, skipped = [], []
        wsteps = [s for s in plan.steps if isinstance(s, WeightStep)]
        for s, (op, t) in zip(wsteps, fb.weight_tensors(parsed)):
            if s.quant is None:
                skipped.append(f"{s.layer}: no QuantizedKernel (int8 PTQ weights have up to 255 values)")
            elif int(s.quant.bits) > 7:
                skipped.append(f"{s.layer}: {s.quant.bits}-bit grid exceeds the 7-bit LUT index limit")
            else:
                targets.append((t.index, int(s.quant.bits)))
        notes += [f"not LUT-compressed: {m}" for m in skipped]
        if targets:
            model_bytes = lut_compress(model_bytes, targets)
            parsed = fb.read_model(model_bytes)
            for s, (op, t) in zip(wsteps, fb.weight_tensors(parsed)):
                if s.expected is not None and not np.array_equal(parsed.constant_values(t.index), s.expected):
                    raise RuntimeError(f"layer {s.layer!r}: LUT-decoded integers differ from QuantizedKernel.integers()")
        else:
            notes.append("compress=True but no weight tensor qualifies; the model is not compressed")
            compress = False
    return TFLiteExport(
        model_bytes=model_bytes,
        layers=_layer_rows(parsed, plan),
        notes=notes,
        input_shape=plan.input_shape,
        output_shape=plan.output_shape,
        compressed=bool(compress),
        uncompressed_size=uncompressed,
        ops=parsed.op_set(),
        plan=plan,
    )


def to_tflite(request) -> bytes:
    """The ``.tflite`` bytes of :func:`convert` (``compress`` from ``request.options``)."""
    return convert(request).model_bytes


# --------------------------------------------------------------------------------------------
# Input / output quantization helpers (what the firmware does around the model)
# --------------------------------------------------------------------------------------------
def _io_params(model: fb.TFLiteModel, which: str) -> Tuple[float, int]:
    t = model.tensors[(model.inputs if which == "input" else model.outputs)[0]]
    return float(t.quantization.scale[0]), int(t.quantization.zero_point[0])


def quantize_input(model_bytes, x: np.ndarray) -> np.ndarray:
    """float -> int8 with the model's input scale/zero point: ``clamp(round_half_away(x / s) + zp)``
    computed in float32 (TFLite's ``Quantize``)."""
    model = model_bytes if isinstance(model_bytes, fb.TFLiteModel) else fb.read_model(model_bytes)
    scale, zp = _io_params(model, "input")
    v = np.asarray(x, dtype=np.float32) / np.float32(scale)
    r = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
    return np.clip(r + zp, -128, 127).astype(np.int8)


def dequantize_output(model_bytes, y: np.ndarray) -> np.ndarray:
    model = model_bytes if isinstance(model_bytes, fb.TFLiteModel) else fb.read_model(model_bytes)
    scale, zp = _io_params(model, "output")
    return ((np.asarray(y, dtype=np.int32) - zp) * np.float32(scale)).astype(np.float32)
