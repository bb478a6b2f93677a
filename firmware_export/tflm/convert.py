"""Keras (stripped ECQ/ECQx model + ``QuantizedKernel`` integers) -> full-integer ``.tflite``.

The stored integer of every quantized weight equals ``QuantizedKernel.integers()`` (up to the
documented BatchNorm sign, see below); :func:`convert` checks this on the converted bytes and
refuses to return a model where it does not hold.

How (see ``docs/export-tflm.md``):

1. **Plan.** The Keras model (any single-input single-output Functional or Sequential graph) is
   walked in topological order and read into steps, one per TFLite op, each reading numbered
   values and writing one. The accepted layer types and the ops they become come from the layer
   registry (``ecqx_tf.layers``: ``tflm_plan`` picks the planner's handler in ``PLAN_HANDLERS``,
   ``tflm_ops`` names the ops; ``SUPPORTED_LAYERS`` is derived from it): Dense ->
   FULLY_CONNECTED; Conv2D -> CONV_2D; Conv1D -> RESHAPE + CONV_2D + RESHAPE; DepthwiseConv2D ->
   DEPTHWISE_CONV_2D; SeparableConv2D -> DEPTHWISE_CONV_2D + CONV_2D (1x1); Add -> ADD;
   Concatenate -> CONCATENATION; ZeroPadding1D/2D -> PAD; GlobalAveragePooling1D/2D -> MEAN;
   Max/AveragePooling2D -> MAX_POOL_2D/AVERAGE_POOL_2D (1-D pools through RESHAPE);
   GlobalMaxPooling1D/2D -> MAX_POOL_2D over the whole input (+ RESHAPE); Flatten/Reshape ->
   RESHAPE; sigmoid -> LOGISTIC; tanh -> TANH; softmax -> SOFTMAX (a final softmax can be
   dropped with ``drop_softmax``); ReLU/ReLU6 are fused into the op that produces their input
   when nothing else reads that value, else RELU/RELU6; BatchNormalization is folded into the
   kernel op before it, or (float Dense/VALID convolution only) into the one after it; Dropout
   vanishes. Anything else is refused by name.
2. **Export graph.** A ``tf.function`` re-implements the plan with plain TF ops, every weight
   passed through a FakeQuant of FIXED range (the grid's, never the live training quantizer) and
   every activation that gets its own scale through an 8-bit FakeQuant whose range is the min/max
   seen on ``request.representative`` (float calibration, as post-training quantization does).
   Values that TFLite keeps at one scale (through RESHAPE, pools, PAD, CONCATENATION, RELU6) share
   one range: the union of what was seen on each of them.
3. **Convert** with ``optimizations=[DEFAULT]``, ``TFLITE_BUILTINS_INT8``, int8 input and output,
   then check every op, type, scale and stored integer against the plan.

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

FULLY_CONNECTED is per-tensor (TFLM's INT4 FC is per-tensor only); CONV_2D/DEPTHWISE_CONV_2D are
per-channel along the output channel (INT4 or INT8). With ``compress=True`` or
``int8_weights=True`` the <= 4-bit symmetric grids are stored INT8 (same integers).

BatchNorm folding: ``f_c = gamma_c / sqrt(var_c + eps)``; folded kernel ``k * step * f_c``; channel
scale ``step * |f_c|``; stored integer ``sign(f_c) * k`` (``0`` for a channel with ``f_c = 0``);
folded bias ``(b_c - mean_c) * f_c + beta_c``. A quantized Dense followed by a BatchNorm becomes a
per-channel INT8 FULLY_CONNECTED (TFLM runs per-channel FC for INT8 weights, not INT4; the TFLite
converter cannot write it, so the converted weight, its scales and the int32 bias
``round(bias_c / (s_in * s_w[c]))`` are rewritten in the flatbuffer afterwards).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ecqx_tf import layers as registry

from . import flatbuffer as fb

__all__ = [
    "convert_full_int8",
    "SUPPORTED_LAYERS",
    "ALLOWED_OPS",
    "SAME_SCALE_OPS",
    "WeightStep",
    "OpStep",
    "TFLiteExport",
    "plan_model",
    "convert",
    "to_tflite",
    "tflite_layout",
    "quantize_input",
    "dequantize_output",
    "stored_bytes",
]

log = logging.getLogger(__name__)

# Builtin (and custom) ops an export may contain: every op of the layer registry (ecqx_tf.layers) and
# TFLM's DECODE (LUT compression); anything else means the plan went wrong.
ALLOWED_OPS = registry.tflm_op_names() + (fb.DECODE_OP,)
# Ops whose int8 output has the scale and zero point of their input(s): TFLM copies or compares
# the values (RELU requantizes, but its range is the input's: the converter fuses a ReLU into a
# preceding pool, which must then keep its input's scale).
SAME_SCALE_OPS = ("MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "PAD", "CONCATENATION", "RELU", "RELU6")
# Ops whose int8 output has a fixed quantization (scale 1/256, zero point -128; TANH: 1/128, 0).
FIXED_SCALE_OPS = ("LOGISTIC", "SOFTMAX", "TANH")

_ACT_NAMES = {"linear": "NONE", "relu": "RELU", "relu6": "RELU6"}
CALIBRATION_BATCH = 128
CONVERTER_SAMPLES = 100
_WEIGHT_MARK = "ecqxw"  # FakeQuant op names "ecqxw<i>_"; the converter keeps them in the weight tensor names


# --------------------------------------------------------------------------------------------
# Plan
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class WeightStep:
    """One FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D op (kernel in Keras layout:
    Dense ``[in, out]``, Conv2D ``[h, w, in, out]``, DepthwiseConv2D ``[h, w, c, m]``; a Conv1D is a
    CONV_2D with ``conv1d=True`` and kernel ``[1, k, in, out]``)."""

    op: str
    layer: str  # the key of request.quant ("<layer>" or "<layer>/<kernel attr>")
    layers: List[str]  # every Keras layer merged into this op (weight layer, BN, activation)
    kernel: np.ndarray  # float32, Keras layout, BN folded
    bias: Optional[np.ndarray]  # float32 [out] or None
    inputs: List[int] = dataclasses.field(default_factory=list)
    output: int = -1
    activation: str = "NONE"  # "NONE" | "RELU" | "RELU6"
    strides: Tuple[int, int] = (1, 1)
    padding: str = "VALID"
    dilation: Tuple[int, int] = (1, 1)
    depth_multiplier: int = 1
    conv1d: bool = False  # input/output are [L, C]: RESHAPE to [1, L, C] around the CONV_2D
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
    per_channel_fc: bool = False  # FULLY_CONNECTED with per-channel INT8 weights (rewritten after conversion)
    index: int = -1  # position among the weight steps (names the FakeQuant op)

    @property
    def out_channels(self) -> int:
        if self.op == "DEPTHWISE_CONV_2D":
            return int(self.kernel.shape[2] * self.kernel.shape[3])
        return int(self.kernel.shape[-1])

    @property
    def per_channel(self) -> bool:
        return self.op != "FULLY_CONNECTED" or self.per_channel_fc


@dataclasses.dataclass
class OpStep:
    """Any other op: ``params`` holds what the op needs (pool size, shape, axes, paddings...)."""

    op: str
    layers: List[str]
    inputs: List[int]
    output: int
    params: Dict[str, Any] = dataclasses.field(default_factory=dict)
    activation: str = "NONE"  # fused activation (ADD)


Step = Any  # WeightStep | OpStep


@dataclasses.dataclass
class _Plan:
    steps: List[Step]
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]
    notes: List[str]
    input_value: int = 0
    output_value: int = 0
    shapes: Dict[int, Tuple[int, ...]] = dataclasses.field(default_factory=dict)  # value -> shape (no batch)

    def weight_steps(self) -> List[WeightStep]:
        return [s for s in self.steps if isinstance(s, WeightStep)]


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


def _shape(t) -> Tuple[int, ...]:
    return tuple(None if d is None else int(d) for d in t.shape[1:])


class _Planner:
    """Turns a Keras graph into export steps. ``SUPPORTED_LAYERS`` maps each accepted Keras class
    to its handler and is the single source of the 'supported types' error text."""

    def __init__(self, model, quant: Mapping[str, Any], drop_softmax: bool = False):
        self.model = model
        self.quant = dict(quant or {})
        self.drop_softmax = drop_softmax
        self.steps: List[Step] = []
        self.notes: List[str] = []
        self.used_quant: set = set()
        self.producer: Dict[int, Step] = {}  # value -> step that writes it
        self.shapes: Dict[int, Tuple[int, ...]] = {}
        # value written by a BatchNormalization that follows no kernel op -> (layer, scale, shift, input value)
        self.pending_bn: Dict[int, Tuple[Any, np.ndarray, np.ndarray, int]] = {}
        self._next = 1  # value 0 is the model input
        self.single: Dict[int, bool] = {}  # for the layer being planned: input value -> read by this layer only

    # ---- values ----------------------------------------------------------------------------
    def new_value(self, shape: Sequence[int]) -> int:
        v = self._next
        self._next += 1
        self.shapes[v] = tuple(int(d) for d in shape)
        return v

    def add(self, step: Step) -> int:
        self.steps.append(step)
        self.producer[step.output] = step
        for v in step.inputs:
            self._check_no_pending_bn(v, step)
        return step.output

    def _check_no_pending_bn(self, v: int, step: Step) -> None:
        if v in self.pending_bn:
            layer = self.pending_bn[v][0]
            raise _layer_error(
                layer, "this BatchNormalization follows no Dense/Conv layer it could be folded into, and its output "
                f"feeds {step.op} ({', '.join(step.layers)}); it can be folded only into a following float "
                "(not quantized) Dense, or Conv1D/Conv2D with padding='valid', that is its only reader"
            )

    def single_reader(self, v: int) -> bool:
        """The layer being planned is the only reader of its input ``v`` (the model output counts)."""
        return bool(self.single.get(v, False))

    # ---- kernel layers ---------------------------------------------------------------------
    def _quant_for(self, layer, key: str, attr: str, kernel: np.ndarray):
        if key not in self.quant:
            return None
        qk = self.quant[key]
        self.used_quant.add(key)
        got = getattr(qk, "kernel", "kernel")
        if got != attr:
            raise _layer_error(layer, f"QuantizedKernel {key!r} is for kernel {got!r}, expected {attr!r}")
        _check_quantized_kernel(layer, qk, kernel)
        return qk

    def _input_bn(self, layer, step: WeightStep) -> Optional[Tuple[np.ndarray, np.ndarray, str]]:
        """A BatchNorm pending on the step's input, folded into this float layer's input side
        (exact for Dense, and for a convolution without zero padding); the step then reads the
        value before the BatchNorm."""
        v = step.inputs[0]
        if v not in self.pending_bn:
            return None
        bn_layer, scale, shift, pre = self.pending_bn[v]
        ok = (self.single_reader(v) and step.quant is None and step.op != "DEPTHWISE_CONV_2D"
              and (step.op == "FULLY_CONNECTED" or step.padding == "VALID"))
        if not ok:
            self._check_no_pending_bn(v, step)
        del self.pending_bn[v]
        step.inputs = [pre]
        self.notes.append(f"{bn_layer.name}: BatchNormalization folded into the input side of {layer.name!r}")
        return scale, shift, bn_layer.name

    def weight(self, layer, ins: List[int], out_shape) -> int:
        cls = type(layer).__name__
        op = _weight_op(registry.get(cls))
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise _layer_error(layer, "only data_format='channels_last' is supported")
        (v,) = ins
        bias = np.asarray(layer.bias.numpy(), dtype=np.float32) if getattr(layer, "use_bias", False) else None
        in_shape = self.shapes[v]
        if op == "FULLY_CONNECTED":
            if len(in_shape) != 1:
                raise _layer_error(layer, f"Dense on a rank-{len(in_shape) + 1} input {[None, *in_shape]} is not "
                                   "supported; put a Flatten before it")
            kernel = np.asarray(layer.kernel.numpy(), dtype=np.float32)
            qk = self._quant_for(layer, layer.name, "kernel", kernel)
            step = WeightStep(op, layer.name, [layer.name], kernel, bias, inputs=[v], quant=qk)
            bn = self._input_bn(layer, step)
            if bn is not None:
                scale, shift, bn_name = bn
                b = bias.astype(np.float64) if bias is not None else np.zeros(kernel.shape[1])
                step.bias = (b + shift.astype(np.float64) @ kernel.astype(np.float64)).astype(np.float32)
                step.kernel = (kernel * scale.reshape(-1, 1)).astype(np.float32)
                step.layers.insert(0, bn_name)
        else:
            pad = str(layer.padding).upper()
            if pad not in ("SAME", "VALID"):
                raise _layer_error(layer, f"padding {layer.padding!r} is not supported (accepted: 'same', 'valid')")
            if getattr(layer, "groups", 1) != 1:
                raise _layer_error(layer, f"grouped convolution (groups={layer.groups}) is not supported")
            (attr,) = registry.get(cls).kernels
            kernel = np.asarray(getattr(layer, attr).numpy(), dtype=np.float32)
            qk = self._quant_for(layer, layer.name, attr, kernel)
            if cls == "Conv1D":
                if len(in_shape) != 2:
                    raise _layer_error(layer, f"Conv1D input {[None, *in_shape]} is not [batch, steps, channels]")
                step = WeightStep(op, layer.name, [layer.name], kernel[None], bias, inputs=[v], conv1d=True)
                step.strides = (1, int(layer.strides[0]))
                step.dilation = (1, int(layer.dilation_rate[0]))
            else:
                if len(in_shape) != 3:
                    raise _layer_error(layer, f"input {[None, *in_shape]} is not [batch, height, width, channels]")
                step = WeightStep(op, layer.name, [layer.name], kernel, bias, inputs=[v])
                step.strides = _pair(layer.strides)
                step.dilation = _pair(layer.dilation_rate)
                if cls == "DepthwiseConv2D":
                    step.depth_multiplier = int(layer.depth_multiplier)
            step.padding = pad
            step.quant = qk
            bn = self._input_bn(layer, step)
            if bn is not None:
                scale, shift, bn_name = bn
                k64 = step.kernel.astype(np.float64)
                b = step.bias.astype(np.float64) if step.bias is not None else np.zeros(k64.shape[-1])
                step.bias = (b + np.einsum("hwio,i->o", k64, shift.astype(np.float64))).astype(np.float32)
                step.kernel = (step.kernel * scale.reshape(1, 1, -1, 1)).astype(np.float32)
                step.layers.insert(0, bn_name)
        if qk is not None:
            step.kernel = np.asarray(qk.values(), dtype=np.float32).reshape(step.kernel.shape)
        step.output = self.new_value(out_shape)
        self.add(step)
        return self._fused_activation(layer, step)

    def separable(self, layer, ins: List[int], out_shape) -> int:
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise _layer_error(layer, "only data_format='channels_last' is supported")
        pad = str(layer.padding).upper()
        if pad not in ("SAME", "VALID"):
            raise _layer_error(layer, f"padding {layer.padding!r} is not supported (accepted: 'same', 'valid')")
        (v,) = ins
        if len(self.shapes[v]) != 3:
            raise _layer_error(layer, f"input {[None, *self.shapes[v]]} is not [batch, height, width, channels]")
        spec = registry.get(type(layer).__name__)
        op_d, op_p = spec.tflm_ops
        (kd, ad), (kp, ap) = registry.kernel_keys(layer)
        self._check_no_pending_bn(v, OpStep(op_d, [layer.name], [v], -1))
        dk = np.asarray(getattr(layer, ad).numpy(), dtype=np.float32)
        pk = np.asarray(getattr(layer, ap).numpy(), dtype=np.float32)
        qd = self._quant_for(layer, kd, ad, dk)
        qp = self._quant_for(layer, kp, ap, pk)
        dw = WeightStep(op_d, kd, [layer.name], dk, None, inputs=[v])
        dw.strides, dw.dilation, dw.padding = _pair(layer.strides), _pair(layer.dilation_rate), pad
        dw.depth_multiplier = int(layer.depth_multiplier)
        if qd is not None:
            dw.quant, dw.kernel = qd, np.asarray(qd.values(), dtype=np.float32).reshape(dk.shape)
        h, w = out_shape[0], out_shape[1]
        dw.output = self.new_value((h, w, dk.shape[2] * dk.shape[3]))
        self.add(dw)
        bias = np.asarray(layer.bias.numpy(), dtype=np.float32) if layer.use_bias else None
        pw = WeightStep(op_p, kp, [layer.name], pk, bias, inputs=[dw.output])
        if qp is not None:
            pw.quant, pw.kernel = qp, np.asarray(qp.values(), dtype=np.float32).reshape(pk.shape)
        pw.output = self.new_value(out_shape)
        self.add(pw)
        return self._fused_activation(layer, pw)

    # ---- activations -----------------------------------------------------------------------
    def _fused_activation(self, layer, step: WeightStep) -> int:
        """Apply the layer's ``activation=``; returns the value holding the layer's output."""
        name = _activation_name(layer)
        if name == "linear":
            return step.output
        if name in ("relu", "relu6"):
            step.activation = _ACT_NAMES[name]
            return step.output
        # sigmoid / tanh / softmax after the kernel op: a separate op on the kernel's (linear) output
        pre = self.new_value(self.shapes[step.output])
        post = step.output
        step.output = pre
        self.producer[pre] = step
        del self.producer[post]
        self._standalone(layer, name, pre, post)
        return post

    def _standalone(self, layer, name: str, v: int, out: int) -> None:
        """The activation ``name`` as an op of its own (``registry.TFLM_ACTIVATION_OPS``)."""
        ops = registry.TFLM_ACTIVATION_OPS.get(name)
        if not ops:
            accepted = ", ".join(k for k in registry.TFLM_ACTIVATION_OPS)
            raise _layer_error(layer, f"activation {name!r} is not supported (accepted: {accepted})")
        (op,) = ops
        if op == "SOFTMAX" and len(self.shapes[v]) < 1:
            raise _layer_error(layer, "softmax needs at least one feature axis")
        self.add(OpStep(op, [layer.name], [v], out, {"beta": 1.0} if op == "SOFTMAX" else {}))

    def activation(self, layer, ins: List[int], out_shape) -> int:
        cls = type(layer).__name__
        if cls == "ReLU":
            slope = float(np.asarray(layer.negative_slope)) if layer.negative_slope is not None else 0.0
            thr = float(np.asarray(layer.threshold)) if layer.threshold is not None else 0.0
            mx = None if layer.max_value is None else float(np.asarray(layer.max_value))
            if slope != 0.0 or thr != 0.0 or mx not in (None, 6.0):
                raise _layer_error(layer, "only ReLU() and ReLU(max_value=6) are supported")
            name = "relu" if mx is None else "relu6"
        elif cls == "Softmax":
            axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
            if axis not in (-1, len(self.shapes[ins[0]])):
                raise _layer_error(layer, f"softmax over axis {layer.axis} is not supported (last axis only)")
            name = "softmax"
        else:
            name = _activation_name(layer)
        (v,) = ins
        if name == "linear":
            return v
        prev = self.producer.get(v)
        fusable = (name in ("relu", "relu6") and prev is not None and prev.activation == "NONE"
                   and prev.op in registry.TFLM_FUSE_INTO)
        if fusable and self.single_reader(v):
            prev.activation = _ACT_NAMES[name]
            if layer.name not in prev.layers:
                prev.layers.append(layer.name)
            return v
        if fusable and isinstance(prev, WeightStep):
            # The TFLite converter fuses the activation into a copy of the kernel op when the op's
            # output has other readers; plan that copy so that every weight op is accounted for.
            clone = dataclasses.replace(prev, layers=prev.layers + [layer.name], activation=_ACT_NAMES[name],
                                        inputs=list(prev.inputs), output=self.new_value(out_shape))
            self.notes.append(f"{layer.name}: {name} of {prev.layer!r}, whose output is also read elsewhere, is "
                              f"fused into a second {prev.op} (the converter's form; its weights are stored twice)")
            return self.add(clone)
        out = self.new_value(out_shape)
        self._standalone(layer, name, v, out)
        return out

    # ---- BatchNormalization ------------------------------------------------------------------
    def batchnorm(self, layer, ins: List[int], out_shape) -> int:
        (v,) = ins
        rank = len(self.shapes[v]) + 1
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        if axis is None or axis not in (-1, rank - 1):
            raise _layer_error(layer, f"BatchNormalization over axis {layer.axis} cannot be folded (last axis only)")
        n = int(self.shapes[v][-1])
        gamma = layer.gamma.numpy().astype(np.float64) if layer.scale else np.ones(n)
        beta = layer.beta.numpy().astype(np.float64) if layer.center else np.zeros(n)
        mean = layer.moving_mean.numpy().astype(np.float64)
        var = layer.moving_variance.numpy().astype(np.float64)
        factor = (gamma / np.sqrt(var + float(layer.epsilon))).astype(np.float32)
        prev = self.producer.get(v)
        if isinstance(prev, WeightStep) and prev.activation == "NONE" and prev.bn_factor is None and self.single_reader(v):
            b = prev.bias.astype(np.float64) if prev.bias is not None else np.zeros(n)
            prev.bias = ((b - mean) * factor.astype(np.float64) + beta).astype(np.float32)
            prev.bn_factor = factor
            prev.kernel = _scale_out_channels(prev.op, prev.kernel, factor)
            if prev.op == "FULLY_CONNECTED" and prev.quant is not None:
                prev.per_channel_fc = True
                self.notes.append(f"{layer.name}: BatchNormalization after the quantized Dense {prev.layer!r}: "
                                  "per-channel INT8 FULLY_CONNECTED (scales step*|f_c|, integers sign(f_c)*k)")
            prev.layers.append(layer.name)
            return v
        # fold into the next layer if that is possible (checked when the next layer is planned)
        self._check_no_pending_bn(v, OpStep("BatchNormalization", [layer.name], [v], -1))
        shift = (beta - mean * factor.astype(np.float64)).astype(np.float32)
        out = self.new_value(out_shape)
        self.pending_bn[out] = (layer, factor, shift, v)
        return out

    # ---- other ops ---------------------------------------------------------------------------
    def pool(self, layer, ins: List[int], out_shape) -> int:
        cls = type(layer).__name__
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise _layer_error(layer, "only data_format='channels_last' is supported")
        (v,) = ins
        in_shape = self.shapes[v]
        one_d = "1D" in cls
        (op,) = [o for o in registry.get(cls).tflm_ops if o != "RESHAPE"]
        if op == "MEAN":
            axes = [1] if one_d else [1, 2]
            keep = bool(getattr(layer, "keepdims", False))
            return self.add(OpStep(op, [layer.name], [v], self.new_value(out_shape), {"axes": axes, "keep_dims": keep}))
        if cls.startswith("Global"):
            size = (1, in_shape[0]) if one_d else (in_shape[0], in_shape[1])
            params = {"pool": size, "strides": (1, 1), "padding": "VALID", "one_d": one_d}
        else:
            pad = str(layer.padding).upper()
            if pad not in ("SAME", "VALID"):
                raise _layer_error(layer, f"padding {layer.padding!r} is not supported (accepted: 'same', 'valid')")
            if one_d:
                params = {"pool": (1, int(layer.pool_size[0])), "strides": (1, int(layer.strides[0])), "padding": pad,
                          "one_d": True}
            else:
                params = {"pool": _pair(layer.pool_size), "strides": _pair(layer.strides), "padding": pad,
                          "one_d": False}
        return self.add(OpStep(op, [layer.name], [v], self.new_value(out_shape), params))

    def reshape(self, layer, ins: List[int], out_shape) -> int:
        (v,) = ins
        out = self.new_value(out_shape)
        return self.add(OpStep(_one_op(layer), [layer.name], [v], out, {"shape": tuple(out_shape)}))

    def zeropad(self, layer, ins: List[int], out_shape) -> int:
        (v,) = ins
        p = layer.padding
        if type(layer).__name__ == "ZeroPadding1D":
            pads = [[0, 0], [int(p[0]), int(p[1])], [0, 0]]
        else:
            (t, b), (l, r) = p
            pads = [[0, 0], [int(t), int(b)], [int(l), int(r)], [0, 0]]
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise _layer_error(layer, "only data_format='channels_last' is supported")
        return self.add(OpStep(_one_op(layer), [layer.name], [v], self.new_value(out_shape), {"paddings": pads}))

    def add_layer(self, layer, ins: List[int], out_shape) -> int:
        if len(ins) < 2:
            raise _layer_error(layer, "Add needs at least two inputs")
        shapes = {self.shapes[v] for v in ins}
        if len(shapes) != 1:
            raise _layer_error(layer, f"inputs of different shapes {sorted(shapes)} (broadcasting is not supported)")
        acc = ins[0]
        for v in ins[1:]:
            out = self.new_value(out_shape)
            acc = self.add(OpStep(_one_op(layer), [layer.name], [acc, v], out))
        return acc

    def concatenate(self, layer, ins: List[int], out_shape) -> int:
        rank = len(out_shape) + 1
        axis = int(layer.axis) % rank
        if axis == 0:
            raise _layer_error(layer, "concatenation along the batch axis is not supported")
        return self.add(OpStep(_one_op(layer), [layer.name], list(ins), self.new_value(out_shape), {"axis": axis}))

    def skip(self, layer, ins: List[int], out_shape) -> int:
        if type(layer).__name__ != "InputLayer":
            self.notes.append(f"{layer.name}: {type(layer).__name__} is the identity at inference, not exported")
        return ins[0]


def _scale_out_channels(op: str, kernel: np.ndarray, factor: np.ndarray) -> np.ndarray:
    if op == "DEPTHWISE_CONV_2D":
        h, w, c, m = kernel.shape
        return (kernel * factor.reshape(c, m)).astype(np.float32)
    return (kernel * factor).astype(np.float32)


#: The planner's handler per ``tflm_plan`` of the layer registry.
PLAN_HANDLERS: Dict[str, Callable[[_Planner, Any, List[int], Tuple[int, ...]], int]] = {
    "kernel": _Planner.weight,
    "separable": _Planner.separable,
    "batchnorm": _Planner.batchnorm,
    "add": _Planner.add_layer,
    "concatenate": _Planner.concatenate,
    "pad": _Planner.zeropad,
    "pool": _Planner.pool,
    "reshape": _Planner.reshape,
    "activation": _Planner.activation,
    "identity": _Planner.skip,
}
#: Accepted Keras layer type -> handler: exactly the types the layer registry exports to TFLM.
SUPPORTED_LAYERS: Dict[str, Callable[[_Planner, Any, List[int], Tuple[int, ...]], int]] = {
    name: PLAN_HANDLERS[spec.tflm_plan] for name, spec in registry.tflm_layers().items()
}


def _one_op(layer) -> str:
    """The one TFLM op of a layer type that becomes exactly one op (RESHAPE, PAD, ADD, CONCATENATION)."""
    (op,) = registry.get(type(layer).__name__).tflm_ops
    return op


def _weight_op(spec) -> str:
    """The weight op (FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D) of a one-kernel layer type."""
    (op,) = [o for o in spec.tflm_ops if o in registry.TFLM_WEIGHT_OPS]
    return op


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




# --------------------------------------------------------------------------------------------
# The Keras graph
# --------------------------------------------------------------------------------------------
_IDENTITY = tuple(k for k, h in SUPPORTED_LAYERS.items() if h is _Planner.skip)


def _key(t) -> Tuple[str, int, int]:
    layer, node_index, tensor_index = t._keras_history
    return (layer.name, int(node_index), int(tensor_index))


def _nodes(model) -> Tuple[List[Tuple[Any, List[Tuple], Tuple, Tuple[int, ...]]], Tuple, Tuple]:
    """``[(layer, input keys, output key, output shape)]`` in topological order, the model's input
    key and output key. A key names a Keras tensor by (layer, node, index).

    Raises:
        TypeError: not a Keras model.
        ValueError: unbuilt model, several inputs/outputs, unsupported layers (all of them listed
            with the supported set), nested models, shared layers, multi-output layers.
    """
    import tensorflow as tf

    if not isinstance(model, tf.keras.Model):
        raise TypeError(f"model must be a tf.keras Model, got {type(model).__name__}")
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError("the model is not built (give it an input shape or call it once)")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"only single-input single-output models are exported (got {len(model.inputs)} inputs, "
                         f"{len(model.outputs)} outputs)")
    bad = [l for l in model.layers if type(l).__name__ not in SUPPORTED_LAYERS]
    if bad:
        listed = ", ".join(f"{l.name!r} ({type(l).__name__}{': a nested model, flatten it' if isinstance(l, tf.keras.Model) else ''})"
                           for l in bad)
        raise ValueError(f"layer(s) not supported by the TFLM exporter: {listed}; supported: "
                         f"{', '.join(sorted(k for k in SUPPORTED_LAYERS if k != 'InputLayer'))}")
    keys = getattr(model, "_network_nodes", None)
    nodes = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        mine = [(i, n) for i, n in enumerate(layer._inbound_nodes) if keys is None or f"{layer.name}_ib-{i}" in keys]
        if len(mine) != 1:
            raise _layer_error(layer, f"the layer is used {len(mine)} times in the model; shared layers are not "
                               "supported (give each use its own layer)")
        i, node = mine[0]
        ins = tf.nest.flatten(node.keras_inputs)
        outs = tf.nest.flatten(node.outputs)
        if len(outs) != 1:
            raise _layer_error(layer, f"layers with {len(outs)} outputs are not supported")
        shape = _shape(outs[0])
        if any(d is None for d in shape):
            raise _layer_error(layer, f"output shape {[None, *shape]} is not fully defined")
        nodes.append((layer, [_key(t) for t in ins], _key(outs[0]), shape))
    # topological order (Kahn), stable in the model's layer order
    produced = {n[2]: k for k, n in enumerate(nodes)}
    in_key, out_key = _key(model.inputs[0]), _key(model.outputs[0])
    done, order, pending = {in_key}, [], list(range(len(nodes)))
    while pending:
        ready = [k for k in pending if all(i in done for i in nodes[k][1])]
        if not ready:
            missing = {i for k in pending for i in nodes[k][1] if i not in done and i not in produced}
            raise ValueError(f"the model graph reads tensors it does not compute ({sorted(missing)[:3]}); "
                             "only layers between the model's one input and one output are supported")
        for k in ready:
            order.append(nodes[k])
            done.add(nodes[k][2])
        pending = [k for k in pending if k not in ready]
    return order, in_key, out_key


def plan_model(model, quant: Optional[Mapping[str, Any]] = None, drop_softmax: bool = False) -> _Plan:
    """Read a Keras model into export steps (see module docstring).

    Raises:
        TypeError: ``model`` is not a Keras model.
        ValueError: unsupported layer/activation/topology (naming the layer and what is
            accepted), or ``quant`` names a kernel the model does not have, or a
            ``QuantizedKernel`` does not match its kernel.
    """
    order, in_key, out_key = _nodes(model)
    if any(d is None for d in model.input_shape[1:]):
        raise ValueError(f"the model input shape {model.input_shape} must be fully defined (except the batch)")
    in_shape = tuple(int(d) for d in model.input_shape[1:])

    def identity(layer) -> bool:
        cls = type(layer).__name__
        return cls in _IDENTITY or (cls == "Activation" and _activation_name(layer) == "linear")

    # readers per Keras tensor, looking through identity layers (Dropout, linear Activation)
    source: Dict[Tuple, Tuple] = {in_key: in_key}
    readers: Dict[Tuple, int] = {}
    for layer, ins, out, _ in order:
        if identity(layer):
            source[out] = source[ins[0]]
            continue
        source[out] = out
        for k in ins:
            readers[source[k]] = readers.get(source[k], 0) + 1
    readers[source[out_key]] = readers.get(source[out_key], 0) + 1

    planner = _Planner(model, quant or {}, drop_softmax)
    planner.shapes[0] = in_shape
    value_of: Dict[Tuple, int] = {in_key: 0}
    for layer, ins, out, shape in order:
        vals = [value_of[k] for k in ins]
        planner.single = {value_of[k]: readers.get(source[k], 0) == 1 for k in ins}
        value_of[out] = SUPPORTED_LAYERS[type(layer).__name__](planner, layer, vals, shape)
    output_value = value_of[out_key]
    if output_value in planner.pending_bn or planner.pending_bn:
        v = output_value if output_value in planner.pending_bn else next(iter(planner.pending_bn))
        layer = planner.pending_bn[v][0]
        raise _layer_error(layer, "this BatchNormalization follows no Dense/Conv layer it could be folded into and is "
                           "read by no layer it could be folded into (a float Dense, or Conv1D/Conv2D with "
                           "padding='valid', as its only reader)")
    last = planner.producer.get(output_value)
    if drop_softmax and isinstance(last, OpStep) and last.op == "SOFTMAX":
        planner.steps.remove(last)
        output_value = last.inputs[0]
        planner.notes.append(f"{', '.join(last.layers)}: final softmax dropped (drop_softmax): the model outputs "
                             "logits (same argmax)")
    unknown = sorted(set(planner.quant) - planner.used_quant)
    if unknown:
        raise ValueError(f"quantization info names kernel(s) {unknown} that are not quantizable kernels of the model "
                         "(keys: the layer name, or '<layer>/depthwise_kernel' and '<layer>/pointwise_kernel' for "
                         "SeparableConv2D)")
    weights = [s for s in planner.steps if isinstance(s, WeightStep)]
    if not weights:
        raise ValueError("the model has no Dense/Conv1D/Conv2D/DepthwiseConv2D/SeparableConv2D layer to export")
    for i, s in enumerate(weights):
        s.index = i
    return _Plan(planner.steps, in_shape, planner.shapes[output_value], planner.notes, 0, output_value,
                 dict(planner.shapes))


# --------------------------------------------------------------------------------------------
# Weight encoding
# --------------------------------------------------------------------------------------------
def tflite_layout(op: str, kernel: np.ndarray) -> np.ndarray:
    """Keras kernel -> TFLite filter layout: FC [out, in], CONV_2D OHWI, DEPTHWISE [1, H, W, C*M].
    A Conv1D kernel ``[k, in, out]`` is taken as ``[1, k, in, out]``."""
    kernel = np.asarray(kernel)
    if op == "FULLY_CONNECTED":
        return kernel.T
    if op == "CONV_2D":
        if kernel.ndim == 3:
            kernel = kernel[None]
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
    k = np.asarray(qk.integers(), dtype=np.int64).reshape(step.kernel.shape)
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
    int4 = grid == "symmetric" and bits <= 4 and not compress and not int8_weights and not step.per_channel_fc
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
    if step.per_channel_fc:  # converted per-tensor, rewritten per channel afterwards
        absmax = np.float32(max(np.abs(step.kernel).max(), 1e-8))
        step.fq_lo, step.fq_hi = np.array([-absmax], np.float32), np.array([absmax], np.float32)
    step.expected = tflite_layout(step.op, k).astype(np.int8)
    why = ""
    if grid == "symmetric" and bits <= 4 and step.per_channel_fc:
        why = " (INT8: TFLM's per-channel FULLY_CONNECTED refuses INT4)"
    elif grid == "symmetric" and bits <= 4 and compress:
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
    name = f"{_WEIGHT_MARK}{step.index}_"
    if step.op == "DEPTHWISE_CONV_2D":
        h, wd, c, m = step.kernel.shape
        flat = tf.reshape(w, (h, wd, c * m))
        q = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            flat, tf.constant(step.fq_lo), tf.constant(step.fq_hi), num_bits=step.fq_bits, narrow_range=step.fq_narrow,
            name=name)
        return tf.reshape(q, (h, wd, c, m))
    if step.per_channel and not step.per_channel_fc:
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            w, tf.constant(step.fq_lo), tf.constant(step.fq_hi), num_bits=step.fq_bits, narrow_range=step.fq_narrow,
            name=name)
    return tf.quantization.fake_quant_with_min_max_vars(
        w, tf.constant(float(step.fq_lo[0])), tf.constant(float(step.fq_hi[0])), num_bits=step.fq_bits,
        narrow_range=step.fq_narrow, name=name)


def _requantizing(step: Step) -> bool:
    """Steps whose output gets a FakeQuant point (own calibrated range; RELU/RELU6: their input's)."""
    return isinstance(step, WeightStep) or step.op in ("ADD", "MEAN", "RELU", "RELU6")


def _groups(plan: _Plan) -> Tuple[Dict[int, int], set, set]:
    """(value -> group root, FakeQuant points, fixed-scale values): values TFLite keeps at one
    scale are in one group (union-find)."""
    parent: Dict[int, int] = {}

    def find(v: int) -> int:
        parent.setdefault(v, v)
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    points, fixed = {plan.input_value}, set()
    find(plan.input_value)
    for s in plan.steps:
        find(s.output)
        if isinstance(s, OpStep) and s.op in SAME_SCALE_OPS:
            for v in s.inputs:
                parent[find(v)] = find(s.output)
        if isinstance(s, OpStep) and s.op in FIXED_SCALE_OPS:
            fixed.add(s.output)
        elif _requantizing(s):
            points.add(s.output)
    roots = {v: find(v) for v in parent}
    for v in fixed:
        clash = [p for p in points if roots[p] == roots[v]]
        if clash:
            raise ValueError("a sigmoid/softmax output (fixed int8 scale 1/256) is concatenated or padded together "
                             "with other tensors; TFLM cannot run that without requantizing: not supported")
    return roots, points, fixed


def _op_tf(tf, s: OpStep, ins):
    p = s.params
    if s.op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        x = ins[0]
        one_d = p.get("one_d", False)
        if one_d:  # [N, L, C] -> [N, 1, L, C]; the caller reshapes the result back
            x = tf.reshape(x, (-1, 1) + tuple(int(d) for d in ins[0].shape[1:]))
        pool = tf.nn.max_pool2d if s.op == "MAX_POOL_2D" else tf.nn.avg_pool2d
        y = pool(x, ksize=p["pool"], strides=p["strides"], padding=p["padding"])
        return y
    if s.op == "RESHAPE":
        return tf.reshape(ins[0], (-1,) + tuple(p["shape"]))
    if s.op == "PAD":
        return tf.pad(ins[0], tf.constant(p["paddings"], tf.int32))
    if s.op == "MEAN":
        return tf.reduce_mean(ins[0], axis=p["axes"], keepdims=p["keep_dims"])
    if s.op == "ADD":
        y = tf.add(ins[0], ins[1])
        return tf.nn.relu(y) if s.activation == "RELU" else (tf.nn.relu6(y) if s.activation == "RELU6" else y)
    if s.op == "CONCATENATION":
        return tf.concat(list(ins), axis=p["axis"])
    if s.op == "LOGISTIC":
        return tf.math.sigmoid(ins[0])
    if s.op == "TANH":
        return tf.math.tanh(ins[0])
    if s.op == "SOFTMAX":
        return tf.nn.softmax(ins[0], axis=-1)
    if s.op == "RELU":
        return tf.nn.relu(ins[0])
    if s.op == "RELU6":
        return tf.nn.relu6(ins[0])
    raise AssertionError(f"no TF op for {s.op}")  # pragma: no cover - the planner emits only the above


def _weight_tf(tf, s: WeightStep, x, quantize_weights: bool):
    w = _fq_weight(tf, s) if quantize_weights else tf.constant(s.kernel)
    if s.op == "FULLY_CONNECTED":
        y = tf.matmul(x, w)
    elif s.op == "CONV_2D":
        if s.conv1d:
            x = tf.reshape(x, (-1, 1) + tuple(int(d) for d in x.shape[1:]))
        y = tf.nn.conv2d(x, w, strides=(1,) + tuple(s.strides) + (1,), padding=s.padding, dilations=s.dilation)
    else:
        y = tf.nn.depthwise_conv2d(x, w, strides=(1,) + tuple(s.strides) + (1,), padding=s.padding,
                                   dilations=s.dilation)
    if s.bias is not None:
        y = tf.nn.bias_add(y, tf.constant(s.bias))
    if s.activation == "RELU":
        y = tf.nn.relu(y)
    elif s.activation == "RELU6":
        y = tf.nn.relu6(y)
    return y


def _forward(plan: _Plan, x, ranges: Optional[Mapping[int, Tuple[float, float]]] = None,
             observe: Optional[Callable[[Any, Any], None]] = None, quantize_weights: bool = True):
    """The export graph: runs eagerly for calibration (``observe``) and traced for conversion
    (``ranges`` set: every FakeQuant point quantized to 8 bits). ``quantize_weights=False`` gives
    the float model itself (BatchNorm folded, a dropped softmax dropped)."""
    import tensorflow as tf

    def point(v, t):
        if observe is not None:
            observe(v, t)
        if ranges is not None and v in ranges:
            lo, hi = ranges[v]
            t = tf.quantization.fake_quant_with_min_max_vars(
                t, tf.constant(lo, tf.float32), tf.constant(hi, tf.float32), num_bits=8, narrow_range=False)
        return t

    values = {plan.input_value: point(plan.input_value, x)}
    for s in plan.steps:
        ins = [values[v] for v in s.inputs]
        if isinstance(s, WeightStep):
            y = point(s.output, _weight_tf(tf, s, ins[0], quantize_weights))
            if s.conv1d:
                y = tf.reshape(y, (-1,) + tuple(plan.shapes[s.output]))
        else:
            y = _op_tf(tf, s, ins)
            if tuple(int(d) for d in y.shape[1:]) != tuple(plan.shapes[s.output]):
                y = tf.reshape(y, (-1,) + tuple(plan.shapes[s.output]))
            y = point(s.output, y)
        values[s.output] = y
    return values[plan.output_value]


def _calibrate(plan: _Plan, data: np.ndarray) -> Dict[int, Tuple[float, float]]:
    """The FakeQuant range of every point: min/max over ``data`` (float graph, quantized
    weights) of every value of its group, widened to contain 0."""
    import tensorflow as tf

    stats: Dict[Any, List[float]] = {}

    def observe(key, t):
        v = t.numpy()
        lo, hi = float(v.min()), float(v.max())
        if key in stats:
            stats[key][0] = min(stats[key][0], lo)
            stats[key][1] = max(stats[key][1], hi)
        else:
            stats[key] = [lo, hi]

    for i in range(0, len(data), CALIBRATION_BATCH):
        _forward(plan, tf.constant(data[i : i + CALIBRATION_BATCH]), observe=observe)
    roots, points, _ = _groups(plan)
    group: Dict[int, List[float]] = {}
    for v, (lo, hi) in stats.items():
        r = roots.get(v, v)
        g = group.setdefault(r, [0.0, 0.0])
        g[0], g[1] = min(g[0], lo), max(g[1], hi)
    ranges = {}
    for v in points:
        lo, hi = group[roots[v]]
        if hi - lo < 1e-6:
            hi = lo + 1e-6
        ranges[v] = (float(np.float32(lo)), float(np.float32(hi)))
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


def _convert_graph(plan: _Plan, ranges, representative: np.ndarray) -> bytes:
    import tensorflow as tf

    spec = tf.TensorSpec((1,) + tuple(plan.input_shape), tf.float32, name="input")
    fn = tf.function(lambda x: _forward(plan, x, ranges=ranges), input_signature=[spec], autograph=False)
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
    operators: List[str] = dataclasses.field(default_factory=list)  # every op in execution order

    def reference_outputs(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """The float model's outputs on ``x`` as exported (BatchNorm folded, a dropped final softmax
        dropped), to compare with the dequantized int8 outputs."""
        import tensorflow as tf

        x = np.asarray(x, dtype=np.float32)
        outs = [_forward(self.plan, tf.constant(x[i : i + batch]), quantize_weights=False).numpy()
                for i in range(0, len(x), batch)]
        return np.concatenate(outs, axis=0) if outs else np.zeros((0,) + self.output_shape, np.float32)

    def summary(self) -> Dict[str, Any]:
        return {
            "flatbuffer_bytes": len(self.model_bytes),
            "uncompressed_flatbuffer_bytes": self.uncompressed_size,
            "weight_bytes": int(sum(r["weight_bytes"] for r in self.layers)),
            "ops": self.ops,
            "operators": self.operators,
            "compressed": self.compressed,
            "layers": self.layers,
            "notes": self.notes,
        }


def _match_weights(model: fb.TFLiteModel, plan: _Plan) -> List[Tuple[WeightStep, fb.Operator, fb.Tensor]]:
    """Pair every weight step with its converted op and filter tensor: by the ``ecqxw<i>_`` mark
    the FakeQuant op leaves in the tensor name, else (chains) by order.

    Raises:
        RuntimeError: the converted model's weight ops do not correspond to the plan.
    """
    import re

    wsteps = plan.weight_steps()
    wops = fb.weight_tensors(model)
    if len(wops) != len(wsteps):
        raise RuntimeError(f"the converted model has {len(wops)} weight ops {[op.name for op, _ in wops]}, the plan "
                           f"{len(wsteps)} {[s.op for s in wsteps]}")
    by_index: Dict[int, Tuple[fb.Operator, fb.Tensor]] = {}
    for op, t in wops:
        m = re.search(re.escape(_WEIGHT_MARK) + r"(\d+)_", t.name)
        if m is None or int(m.group(1)) in by_index:
            by_index = {}
            break
        by_index[int(m.group(1))] = (op, t)
    if len(by_index) == len(wsteps):
        pairs = [(s, *by_index[s.index]) for s in wsteps]
    else:
        pairs = [(s, op, t) for s, (op, t) in zip(wsteps, wops)]
    for s, op, t in pairs:
        if op.name != s.op:
            raise RuntimeError(f"layer {s.layer!r}: converted to {op.name}, planned {s.op}")
    return pairs


def _exact_scales(model_bytes: bytes, plan: _Plan) -> bytes:
    """Make every stored weight scale exactly the planned float32 (``step`` or ``step*|f_c|``).

    The converter derives the scale from the FakeQuant range as ``(max - min) / levels`` and may
    land 1 ulp away; the integers do not change, the bias (quantized with the converter's scale)
    is off by a relative 1e-7, far below one bias LSB's effect on the output."""
    parsed = fb.read_model(model_bytes)
    try:
        pairs = _match_weights(parsed, plan)
    except RuntimeError:
        return model_bytes  # _verify reports the mismatch
    for s, op, t in pairs:
        q = t.quantization
        if s.per_channel_fc or q is None or q.scale.size != s.scales.size or np.array_equal(q.scale, s.scales):
            continue
        if not np.allclose(q.scale, s.scales, rtol=2e-6, atol=0):
            continue  # not a rounding difference: _verify reports it
        model_bytes = fb.set_tensor_scales(model_bytes, t.index, s.scales)
    return model_bytes


def _per_channel_fully_connected(model_bytes: bytes, plan: _Plan) -> bytes:
    """Rewrite the FULLY_CONNECTED ops that carry a folded BatchNorm on a quantized kernel: weights
    ``sign(f_c) * k`` (INT8, per channel, scales ``step * |f_c|``, axis 0) and the int32 bias
    ``round_half_away(bias_c / (s_in * s_w[c]))`` (double) with scales ``float32(s_in * s_w[c])``."""
    from .fbwrite import replace_constant

    parsed = fb.read_model(model_bytes)
    for s, op, t in _match_weights(parsed, plan):
        if not s.per_channel_fc:
            continue
        s_in = float(parsed.tensors[op.inputs[0]].quantization.scale[0])
        n = s.out_channels
        model_bytes = replace_constant(model_bytes, t.index, s.expected, "INT8", scale=s.scales,
                                       zero_point=np.zeros(n, np.int64), axis=0)
        if len(op.inputs) < 3 or op.inputs[2] < 0:
            raise RuntimeError(f"layer {s.layer!r}: the converted FULLY_CONNECTED has no bias tensor")
        b_scale = (np.float32(s_in) * s.scales).astype(np.float32)
        real = s.bias.astype(np.float64) / (np.float64(np.float32(s_in)) * s.scales.astype(np.float64))
        q = np.clip(np.sign(real) * np.floor(np.abs(real) + 0.5), -2**31, 2**31 - 1).astype(np.int64)
        model_bytes = replace_constant(model_bytes, op.inputs[2], q, "INT32", scale=b_scale,
                                       zero_point=np.zeros(n, np.int64), axis=0)
        parsed = fb.read_model(model_bytes)
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
    for op in model.operators:
        if op.name in SAME_SCALE_OPS:
            y = model.tensors[op.outputs[0]].quantization
            for i in op.inputs[: (len(op.inputs) if op.name == "CONCATENATION" else 1)]:
                x = model.tensors[i].quantization
                if x is None or y is None or x.scale[0] != y.scale[0] or x.zero_point[0] != y.zero_point[0]:
                    raise RuntimeError(f"{op.name} op {op.index}: input and output quantization differ "
                                       "(TFLM copies int8 values through this op)")
    for s, op, t in _match_weights(model, plan):
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
            stored = model.constant_values(t.index)
            if not np.array_equal(stored, s.expected):
                n_bad = int(np.sum(stored != s.expected))
                raise RuntimeError(f"{where}: {n_bad} stored integers differ from QuantizedKernel.integers()")
    return model


def _layer_rows(model: fb.TFLiteModel, plan: _Plan) -> List[Dict[str, Any]]:
    rows = []
    for s, op, t in _match_weights(model, plan):
        v = model.constant_values(t.index)
        scales = [float(x) for x in t.quantization.scale]
        rows.append({
            "layer": s.layer,
            "keras_layers": list(s.layers),
            "op": op.name,
            "op_index": op.index,
            "weight_type": t.dtype if t.is_constant else f"{model.tensors[t.index].dtype} (LUT)",
            "bits": int(s.quant.bits) if s.quant is not None else 8,
            "grid": str(s.quant.grid) if s.quant is not None else "ptq",
            "scheme": s.scheme,
            "shape": list(t.shape),
            "weights": int(v.size),
            "weight_bytes": stored_bytes(model, t),
            "zeros": float(np.mean(v == 0)),
            "distinct_values": int(np.unique(v).size),
            "scales": scales,
            "scale_count": len(scales),
            "zero_points": [int(z) for z in np.unique(t.quantization.zero_point)],
            "per_channel": len(scales) > 1,
            "bn_folded": s.bn_factor is not None,
            "activation": s.activation,
        })
    return rows


def stored_bytes(model: fb.TFLiteModel, t: fb.Tensor) -> int:
    """Bytes a weight tensor occupies in the flatbuffer: its data, or for a LUT-compressed tensor
    the indices plus the ancillary data (header and value tables)."""
    if t.is_constant:
        return len(t.data)
    op = model.producer(t.index)  # LUT: indices + ancillary (header + value tables)
    k = op.outputs.index(t.index)
    return len(model.tensors[op.inputs[2 * k]].data) + len(model.tensors[op.inputs[2 * k + 1]].data)


def _check_request(request) -> Tuple[Any, Mapping[str, Any], np.ndarray]:
    if request.representative is None or len(request.representative) == 0:
        raise ValueError("request.representative is empty: calibration needs a few hundred float inputs")
    rep = np.asarray(request.representative, dtype=np.float32)
    shape = tuple(int(d) if d is not None else None for d in request.model.input_shape[1:])
    if rep.shape[1:] != shape:
        raise ValueError(
            f"request.representative has sample shape {list(rep.shape[1:])}, the model expects {list(shape)}"
        )
    if not np.all(np.isfinite(rep)):
        raise ValueError("request.representative contains NaN or infinite values")
    return request.model, request.quant or {}, rep


def convert(request, compress: Optional[bool] = None, drop_softmax: Optional[bool] = None) -> TFLiteExport:
    """Export ``request.model`` (+ ``request.quant``) to a full-integer TFLite flatbuffer.

    Args:
        request: a ``firmware_export.registry.ExportRequest``.
        compress: apply TFLM LUT compression to the quantized weight tensors (default
            ``request.options.get("compress", False)``).
        drop_softmax: export the logits of a model that ends in a softmax (default
            ``request.options.get("drop_softmax", False)``: the softmax is exported as SOFTMAX).

    Raises:
        ValueError: unsupported model or bad request (see :func:`plan_model`).
        RuntimeError: the converter did not produce the planned integers (exporter bug).
    """
    model, quant, rep = _check_request(request)
    if compress is None:
        compress = bool(request.options.get("compress", False))
    if drop_softmax is None:
        drop_softmax = bool(request.options.get("drop_softmax", False))
    int8_weights = bool(request.options.get("int8_weights", False))
    plan = plan_model(model, quant, drop_softmax=drop_softmax)
    for s in plan.weight_steps():
        _encode(s, compress, int8_weights)
    log.info("calibrating on %d samples", len(rep))
    ranges = _calibrate(plan, rep)
    log.info("converting (%d ops)", len(plan.steps))
    model_bytes = _convert_graph(plan, ranges, rep)
    model_bytes = _exact_scales(model_bytes, plan)
    if any(s.per_channel_fc for s in plan.weight_steps()):
        model_bytes = _per_channel_fully_connected(model_bytes, plan)
    parsed = _verify(model_bytes, plan)
    uncompressed = len(model_bytes)
    notes = list(plan.notes)
    if compress:
        from .compress import lut_compress

        targets, skipped = [], []
        for s, op, t in _match_weights(parsed, plan):
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
            for s, op, t in _match_weights(parsed, plan):
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
        operators=parsed.op_names(),
    )


def to_tflite(request, drop_softmax: Optional[bool] = None) -> bytes:
    """The ``.tflite`` bytes of :func:`convert` (``compress`` from ``request.options``)."""
    return convert(request, drop_softmax=drop_softmax).model_bytes


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
