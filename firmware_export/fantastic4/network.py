r"""The integer network the FantastIC4 runtime executes: :class:`IntegerMLP`, a list of
:class:`IntegerDense` layers taken from an int8 ``.tflite`` flatbuffer.

The FantastIC4 exporter re-encodes **the same integer network** that the TFLite Micro exporter
produces, so both runtimes can be compared bit for bit. One layer computes, exactly like TFLM's
reference ``FULLY_CONNECTED`` (int8 activations, int8 or int4 weights with zero point 0, int32
bias, per-tensor scales):

.. math::

    \mathrm{acc}_r = b_r + \sum_j w_{rj}\,(x_j - z_{in}), \qquad
    y_r = \mathrm{clamp}\big(\mathrm{MBQM}(\mathrm{acc}_r, q, s) + z_{out},\ a_{min},\ a_{max}\big)

with :math:`(q, s)` = ``intmath.quantize_multiplier(intmath.conv_multiplier(s_in, s_w, s_out))`` (the
real multiplier :math:`s_{in} s_w / s_{out}` with the product taken in double, as the TFLM
interpreter computes it; a float32 product gives a different :math:`q` for 99 % of scale triples
and, measured on the demo model, a different output on 1 of 1,000 samples) and MBQM =
``intmath.multiply_by_quantized_multiplier``. Supported graphs: an optional leading
``RESHAPE`` (a no-op on the int8 data) followed by a chain of ``FULLY_CONNECTED`` ops with fused
``NONE``, ``RELU``, ``RELU6`` or ``RELU_N1_TO_1``.

The .tflite is read with the shared reader ``firmware_export.tflm.flatbuffer``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Tuple

import numpy as np

from firmware_export import intmath

__all__ = [
    "MAX_VALUES",
    "IntegerDense",
    "IntegerMLP",
    "activation_range",
    "reference_dense",
    "reference_forward",
]

#: At most 16 distinct weight values per layer (4-bit codebook indices); the value 0 is always
#: codebook entry 0, so at most 15 distinct non-zero values.
MAX_VALUES = 16

_INT8_MIN, _INT8_MAX = -128, 127


def activation_range(activation: str, output_scale: float, output_zero_point: int) -> Tuple[int, int]:
    """TFLite's ``CalculateActivationRangeQuantized`` for an int8 output.

    ``quantize(f) = zero_point + round_half_away(f / scale)`` with the division in float32.

    Raises:
        ValueError: an activation other than NONE, RELU, RELU6, RELU_N1_TO_1.
    """

    def quantize(f: float) -> int:
        v = np.float32(f) / np.float32(output_scale)
        return int(output_zero_point) + int(np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)))

    if activation == "NONE":
        return _INT8_MIN, _INT8_MAX
    if activation == "RELU":
        return max(_INT8_MIN, quantize(0.0)), _INT8_MAX
    if activation == "RELU6":
        return max(_INT8_MIN, quantize(0.0)), min(_INT8_MAX, quantize(6.0))
    if activation == "RELU_N1_TO_1":
        return max(_INT8_MIN, quantize(-1.0)), min(_INT8_MAX, quantize(1.0))
    raise ValueError(
        f"fused activation {activation!r} is not supported; accepted: NONE, RELU, RELU6, RELU_N1_TO_1"
    )


@dataclasses.dataclass(eq=False)
class IntegerDense:
    """One fully connected int8 layer, as TFLM runs it.

    Attributes:
        name: the .tflite output tensor name (for messages).
        weights: int8 ``[out, in]`` (the TFLite FC filter layout), at most 16 distinct values
            counting 0.
        bias: int32 ``[out]`` (the TFLite bias; zeros when the op has none).
        input_zero_point, output_zero_point: int8 zero points of the input/output tensors.
        output_multiplier, output_shift: ``intmath.quantize_multiplier`` of the real multiplier.
        activation_min, activation_max: the int8 clamp (fused activation).
    """

    name: str
    weights: np.ndarray
    bias: np.ndarray
    input_zero_point: int
    output_zero_point: int
    output_multiplier: int
    output_shift: int
    activation_min: int
    activation_max: int

    def __post_init__(self) -> None:
        w = np.asarray(self.weights)
        if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
            raise ValueError(f"layer {self.name!r}: weights must be a non-empty [out, in] matrix, got shape {w.shape}")
        if w.dtype != np.int8:
            if not np.issubdtype(w.dtype, np.integer) or w.min() < _INT8_MIN or w.max() > _INT8_MAX:
                raise ValueError(f"layer {self.name!r}: weights must be int8 values, got dtype {w.dtype}")
            w = w.astype(np.int8)
        self.weights = w
        values = np.unique(w)
        n_values = len(values) + (0 if 0 in values else 1)
        if n_values > MAX_VALUES:
            raise ValueError(
                f"layer {self.name!r}: weights take {len(values)} distinct values "
                f"({n_values} with the implicit zero); the 4-bit codebook holds at most {MAX_VALUES} "
                f"including 0 (quantize the layer to <= 15 non-zero levels)"
            )
        b = np.asarray(self.bias)
        if b.shape != (w.shape[0],):
            raise ValueError(f"layer {self.name!r}: bias must have shape ({w.shape[0]},), got {b.shape}")
        self.bias = b.astype(np.int32)
        for field in ("input_zero_point", "output_zero_point", "activation_min", "activation_max"):
            v = int(getattr(self, field))
            if not _INT8_MIN <= v <= _INT8_MAX:
                raise ValueError(f"layer {self.name!r}: {field} must be in [-128, 127], got {v}")
            setattr(self, field, v)
        if self.activation_min > self.activation_max:
            raise ValueError(
                f"layer {self.name!r}: activation_min {self.activation_min} > activation_max {self.activation_max}"
            )
        self.output_multiplier = int(self.output_multiplier)
        self.output_shift = int(self.output_shift)
        if not 0 <= self.output_multiplier <= intmath.INT32_MAX:
            raise ValueError(f"layer {self.name!r}: output_multiplier must be in [0, 2^31-1], got {self.output_multiplier}")
        if not -31 <= self.output_shift <= 30:
            raise ValueError(f"layer {self.name!r}: output_shift must be in [-31, 30], got {self.output_shift}")

    @property
    def in_features(self) -> int:
        return int(self.weights.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weights.shape[0])

    def codebook(self) -> np.ndarray:
        """int8 codebook: entry 0 is 0 (the implicit value), then the non-zero values ascending."""
        nz = np.unique(self.weights[self.weights != 0])
        return np.concatenate([np.zeros(1, np.int8), nz.astype(np.int8)])

    def codes(self) -> np.ndarray:
        """uint8 ``[out, in]`` codebook index of every weight (0 for a zero weight)."""
        return _codes(self.weights, self.codebook())

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "weights": self.weights.tolist(),
            "bias": self.bias.tolist(),
            "input_zero_point": self.input_zero_point,
            "output_zero_point": self.output_zero_point,
            "output_multiplier": self.output_multiplier,
            "output_shift": self.output_shift,
            "activation_min": self.activation_min,
            "activation_max": self.activation_max,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntegerDense):
            return NotImplemented
        return self.to_dict() == other.to_dict()


def _codes(weights: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    lut = np.zeros(256, np.uint8)
    lut[codebook.astype(np.int16) + 128] = np.arange(len(codebook), dtype=np.uint8)
    return lut[weights.astype(np.int16) + 128]


@dataclasses.dataclass(eq=False)
class IntegerMLP:
    """A chain of :class:`IntegerDense` layers (layer i's output feeds layer i+1).

    Attributes:
        layers: the layers, input first.
        input_scale, output_scale: float scales of the network input and output tensors
            (for quantizing inputs / dequantizing outputs; not used by the integer datapath).
    """

    layers: List[IntegerDense]
    input_scale: float = 1.0
    output_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("an IntegerMLP needs at least one layer, got none")
        for prev, cur in zip(self.layers, self.layers[1:]):
            if prev.out_features != cur.in_features:
                raise ValueError(
                    f"layer {cur.name!r}: in_features {cur.in_features} != out_features "
                    f"{prev.out_features} of the previous layer {prev.name!r}"
                )
            if prev.output_zero_point != cur.input_zero_point:
                raise ValueError(
                    f"layer {cur.name!r}: input_zero_point {cur.input_zero_point} != output_zero_point "
                    f"{prev.output_zero_point} of the previous layer {prev.name!r}"
                )

    @property
    def input_features(self) -> int:
        return self.layers[0].in_features

    @property
    def output_features(self) -> int:
        return self.layers[-1].out_features

    @property
    def input_zero_point(self) -> int:
        return self.layers[0].input_zero_point

    @property
    def output_zero_point(self) -> int:
        return self.layers[-1].output_zero_point

    @classmethod
    def from_tflite(cls, model_bytes: bytes) -> "IntegerMLP":
        """Build the network from an int8 ``.tflite`` flatbuffer (see the module docstring).

        Raises:
            ValueError: an unsupported op, tensor type, per-channel quantization, a non-zero
                weight zero point, non-int8 input/output, or a layer with more than 16
                distinct weight values; the message names the op or tensor.
        """
        return _from_tflite(bytes(model_bytes))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntegerMLP):
            return NotImplemented
        return [l.to_dict() for l in self.layers] == [l.to_dict() for l in other.layers]


# ---------------------------------------------------------------------------------------------
# slow reference, straight from the formula (the tests compare every fast path with it)


def reference_dense(layer: IntegerDense, x: np.ndarray) -> np.ndarray:
    """One layer for int8 ``x`` of shape ``[batch, in]``: plain dense integer loop + intmath."""
    x = np.asarray(x, np.int64)
    acc = (x - layer.input_zero_point) @ layer.weights.astype(np.int64).T + layer.bias.astype(np.int64)
    assert np.all(np.abs(acc) <= intmath.INT32_MAX), "int32 accumulator overflow"
    y = intmath.multiply_by_quantized_multiplier(acc, layer.output_multiplier, layer.output_shift)
    y = y + layer.output_zero_point
    return np.clip(y, layer.activation_min, layer.activation_max).astype(np.int8)


def reference_forward(net: IntegerMLP, x: np.ndarray) -> np.ndarray:
    """The whole network with :func:`reference_dense` (int8 ``[batch, in]`` -> int8 ``[batch, out]``)."""
    y = np.asarray(x, np.int8).reshape(len(x), -1)
    for layer in net.layers:
        y = reference_dense(layer, y)
    return y


# ---------------------------------------------------------------------------------------------
# .tflite -> IntegerMLP


def _from_tflite(model_bytes: bytes) -> IntegerMLP:
    from firmware_export.tflm import flatbuffer as fb

    model = fb.read_model(model_bytes)
    fc = {l.op_index: l for l in fb.fully_connected_layers(model)}
    inp, out = model.tensors[model.inputs[0]], model.tensors[model.outputs[0]]
    for role, t in (("input", inp), ("output", out)):
        if t.dtype != "INT8" or t.quantization is None:
            raise ValueError(f"model {role} tensor {t.name!r} is {t.dtype}; FantastIC4 needs quantized INT8 in/out")
    # Weight producers (TFLM_DECODE of a LUT-compressed model) are not on the activation chain.
    current = model.inputs[0]
    layers: List[IntegerDense] = []
    for op in model.operators:
        y_t = model.tensors[op.outputs[0]]
        if op.name == fb.DECODE_OP:
            continue
        if op.name == "RESHAPE":
            x_t = model.tensors[op.inputs[0]]
            if op.inputs[0] != current or _qparams(x_t) != _qparams(y_t):
                raise ValueError(f"RESHAPE to {y_t.name!r} is not a quantization-preserving no-op on the chain")
            current = op.outputs[0]
            continue
        if op.name != "FULLY_CONNECTED":
            raise ValueError(f"op {op.name} (output {y_t.name!r}) is not supported; accepted: RESHAPE, FULLY_CONNECTED")
        l = fc[op.index]
        if op.inputs[0] != current:
            raise ValueError(f"FULLY_CONNECTED {l.name!r} does not consume the previous op's output")
        x_t = model.tensors[op.inputs[0]]
        if x_t.dtype != "INT8" or y_t.dtype != "INT8":
            raise ValueError(f"FULLY_CONNECTED {l.name!r}: activations must be INT8, got {x_t.dtype} -> {y_t.dtype}")
        if l.weight_dtype not in ("INT8", "INT4"):
            raise ValueError(f"FULLY_CONNECTED {l.name!r}: weights must be INT8 or INT4, got {l.weight_dtype}")
        if np.size(l.weight_scale) != 1:
            raise ValueError(f"FULLY_CONNECTED {l.name!r}: weights are per-channel quantized "
                             f"({np.size(l.weight_scale)} scales); only per-tensor is supported")
        if np.any(np.asarray(l.weight_zero_point) != 0):
            raise ValueError(f"FULLY_CONNECTED {l.name!r}: weight zero point must be 0, got {np.asarray(l.weight_zero_point).tolist()}")
        if l.weights.ndim != 2:
            raise ValueError(f"FULLY_CONNECTED {l.name!r}: weights must be [out, in], got shape {l.weights.shape}")
        bias = l.bias if l.bias is not None else np.zeros(l.weights.shape[0], np.int32)
        w_scale = float(np.asarray(l.weight_scale).reshape(-1)[0])
        q, s = intmath.quantize_multiplier(intmath.conv_multiplier(l.input_scale, w_scale, l.output_scale))
        lo, hi = activation_range(l.fused_activation, l.output_scale, l.output_zero_point)
        layers.append(
            IntegerDense(
                name=l.name, weights=l.weights, bias=np.asarray(bias).reshape(-1),
                input_zero_point=l.input_zero_point, output_zero_point=l.output_zero_point,
                output_multiplier=q, output_shift=s, activation_min=lo, activation_max=hi,
            )
        )
        current = op.outputs[0]
    if not layers:
        raise ValueError("the model has no FULLY_CONNECTED op")
    if current != model.outputs[0]:
        raise ValueError("the last FULLY_CONNECTED op's output is not the model output")
    return IntegerMLP(
        layers,
        input_scale=float(inp.quantization.scale[0]),
        output_scale=float(out.quantization.scale[0]),
    )


def _qparams(t) -> Tuple:
    q = t.quantization
    return None if q is None else (tuple(np.asarray(q.scale).tolist()), tuple(np.asarray(q.zero_point).tolist()))
