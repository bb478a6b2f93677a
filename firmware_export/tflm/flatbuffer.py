"""Read ``.tflite`` flatbuffers back into plain NumPy: operators, tensors, quantization, weights.

Public so that every exporter can re-read what the TFLite converter wrote (the FantastIC4 exporter
repacks the FULLY_CONNECTED layers from :func:`fully_connected_layers`).

Byte-level facts this module relies on (TFLite schema, ``schema.fbs``):

* bytes 4..8 of a model are the file identifier ``b"TFL3"``; bytes 0..4 the little-endian offset
  of the root ``Model`` table.
* ``TensorType.INT4`` (17) tensors are packed two per byte: element ``2k`` in the LOW nibble of
  byte ``k``, element ``2k+1`` in the HIGH nibble, two's complement (``[1, 2, 3, 4]`` ->
  ``[0x21, 0x43]``); an odd count leaves the last high nibble 0.
* FULLY_CONNECTED filters are ``[out, in]``, CONV_2D filters ``OHWI``, DEPTHWISE_CONV_2D filters
  ``[1, H, W, C*M]``.
* A tensor compressed by ``tflite_micro.compression`` (LUT) becomes a UINT8 tensor of indices
  packed MSB first, read by the custom operator ``TFLM_DECODE`` together with an ancillary tensor:
  a 16-byte DECODE common metadata header (byte 0 decode type, 0 = LUT; byte 1 version; byte 4 LUT
  version; byte 5 ``axis << 4 | bitwidth`` with axis 15 meaning one table; byte 6 value-table
  stride) followed by the value tables. :func:`decode_lut` undoes it.

Only the generated schema module is used (``tensorflow.lite.python.schema_py_generated``, or the
copy inside the ``tflite_micro`` wheel when TensorFlow is absent); nothing here runs a model.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "FILE_IDENTIFIER",
    "TENSOR_TYPES",
    "DECODE_OP",
    "Quantization",
    "Tensor",
    "Operator",
    "TFLiteModel",
    "FullyConnectedLayer",
    "read_model",
    "load_schema",
    "dtype_of",
    "pack_int4",
    "unpack_int4",
    "decode_lut",
    "fully_connected_layers",
    "weight_tensors",
    "set_tensor_scales",
]

FILE_IDENTIFIER = b"TFL3"
DECODE_OP = "TFLM_DECODE"

# TensorType code -> (name, numpy dtype of one element as stored, bits per element).
# INT4 is stored packed; its values are returned unpacked as int8.
TENSOR_TYPES: Dict[int, Tuple[str, Optional[np.dtype], int]] = {
    0: ("FLOAT32", np.dtype("<f4"), 32),
    1: ("FLOAT16", np.dtype("<f2"), 16),
    2: ("INT32", np.dtype("<i4"), 32),
    3: ("UINT8", np.dtype("u1"), 8),
    4: ("INT64", np.dtype("<i8"), 64),
    5: ("STRING", None, 0),
    6: ("BOOL", np.dtype("?"), 8),
    7: ("INT16", np.dtype("<i2"), 16),
    8: ("COMPLEX64", np.dtype("<c8"), 64),
    9: ("INT8", np.dtype("i1"), 8),
    10: ("FLOAT64", np.dtype("<f8"), 64),
    11: ("COMPLEX128", np.dtype("<c16"), 128),
    12: ("UINT64", np.dtype("<u8"), 64),
    13: ("RESOURCE", None, 0),
    14: ("VARIANT", None, 0),
    15: ("UINT32", np.dtype("<u4"), 32),
    16: ("UINT16", np.dtype("<u2"), 16),
    17: ("INT4", np.dtype("i1"), 4),
}

_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_PADDINGS = {0: "SAME", 1: "VALID"}


def load_schema():
    """The generated TFLite flatbuffer schema module (TensorFlow's copy; tflite-micro's as fallback)."""
    try:
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError:  # pragma: no cover - TensorFlow is a dependency; the wheel copy is a fallback
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
    return schema


def _builtin_names() -> Dict[int, str]:
    schema = load_schema()
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


@dataclasses.dataclass(frozen=True)
class Quantization:
    """Affine quantization: ``real = scale * (q - zero_point)``, per channel along ``axis`` when
    ``scale`` has more than one entry."""

    scale: np.ndarray  # float32
    zero_point: np.ndarray  # int64
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


@dataclasses.dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    dtype: str  # TENSOR_TYPES name, e.g. "INT8", "INT4"
    shape: Tuple[int, ...]
    quantization: Optional[Quantization]
    buffer: int
    data: Optional[bytes]  # constant data as stored (packed for INT4), None for activations

    @property
    def is_constant(self) -> bool:
        return self.data is not None and len(self.data) > 0

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    def values(self) -> np.ndarray:
        """The constant data as an array of ``shape`` (INT4 unpacked to int8).

        Raises:
            ValueError: the tensor has no constant data, or the data does not match the shape.
        """
        if not self.is_constant:
            raise ValueError(f"tensor {self.index} ({self.name!r}) holds no constant data")
        _, dtype, bits = TENSOR_TYPES.get(self._type_code(), (self.dtype, None, 0))
        if dtype is None:
            raise ValueError(f"tensor {self.index} ({self.name!r}): type {self.dtype} has no array form")
        if self.dtype == "INT4":
            return unpack_int4(self.data, self.size).reshape(self.shape)
        expected = self.size * dtype.itemsize
        if len(self.data) != expected:
            raise ValueError(
                f"tensor {self.index} ({self.name!r}): {len(self.data)} data bytes, expected {expected} "
                f"for shape {list(self.shape)} of {self.dtype}"
            )
        return np.frombuffer(self.data, dtype=dtype).reshape(self.shape).copy()

    def _type_code(self) -> int:
        for code, (name, _, _) in TENSOR_TYPES.items():
            if name == self.dtype:
                return code
        return -1


@dataclasses.dataclass(frozen=True)
class Operator:
    index: int
    name: str  # builtin name ("FULLY_CONNECTED") or the custom code ("TFLM_DECODE")
    builtin_code: int
    custom_code: Optional[str]
    version: int
    inputs: Tuple[int, ...]  # tensor indices, -1 = optional input left out
    outputs: Tuple[int, ...]
    options: Dict[str, Any]  # parsed builtin options (snake_case), see _OPTION_FIELDS


@dataclasses.dataclass(frozen=True)
class TFLiteModel:
    """One-subgraph view of a model (TFLM models have one subgraph; others are listed in
    ``num_subgraphs`` but not parsed)."""

    version: int
    description: str
    size: int
    tensors: Tuple[Tensor, ...]
    operators: Tuple[Operator, ...]
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    num_subgraphs: int
    num_buffers: int

    def op_names(self) -> List[str]:
        """Operator names in execution order."""
        return [op.name for op in self.operators]

    def op_set(self) -> List[str]:
        """Distinct operator names, in order of first use."""
        return list(dict.fromkeys(self.op_names()))

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    def producer(self, tensor_index: int) -> Optional[Operator]:
        for op in self.operators:
            if tensor_index in op.outputs:
                return op
        return None

    def constant_values(self, tensor_index: int) -> np.ndarray:
        """Values of a constant input, following a TFLM_DECODE op when the tensor is decoded at
        run time (LUT-compressed models)."""
        t = self.tensors[tensor_index]
        if t.is_constant:
            return t.values()
        op = self.producer(tensor_index)
        if op is not None and op.name == DECODE_OP:
            k = op.outputs.index(tensor_index)
            enc, anc = self.tensors[op.inputs[2 * k]], self.tensors[op.inputs[2 * k + 1]]
            if anc.data and len(anc.data) > 5 and t.quantization is not None and t.quantization.per_channel:
                axis = anc.data[5] >> 4
                if axis != t.quantization.axis:
                    raise ValueError(
                        f"tensor {tensor_index} ({t.name!r}) is per-channel quantized along axis "
                        f"{t.quantization.axis} but its LUT has {'one table' if axis == 15 else f'tables along axis {axis}'}; "
                        "the TFLM_DECODE kernel takes one table per quantization channel and would decode it wrongly"
                    )
            return decode_lut(enc.data, anc.data, t.shape, dtype_of(t.dtype))
        raise ValueError(f"tensor {tensor_index} ({t.name!r}) is not a constant")


def dtype_of(name: str) -> np.dtype:
    """The NumPy dtype of a TFLite tensor type name (``"INT8"`` -> ``int8``)."""
    for _, (n, dtype, _) in TENSOR_TYPES.items():
        if n == name and dtype is not None:
            return dtype
    raise ValueError(f"tensor type {name} has no array form")


# builtin option field (schema object API) -> our snake_case key, with enum decoding.
_OPTION_FIELDS = {
    "fusedActivationFunction": ("fused_activation", _ACTIVATIONS),
    "padding": ("padding", _PADDINGS),
    "strideW": ("stride_w", None),
    "strideH": ("stride_h", None),
    "dilationWFactor": ("dilation_w", None),
    "dilationHFactor": ("dilation_h", None),
    "depthMultiplier": ("depth_multiplier", None),
    "filterWidth": ("filter_width", None),
    "filterHeight": ("filter_height", None),
    "keepNumDims": ("keep_num_dims", None),
    "weightsFormat": ("weights_format", None),
    "asymmetricQuantizeInputs": ("asymmetric_quantize_inputs", None),
    "newShape": ("new_shape", None),
    "beta": ("beta", None),
    "axis": ("axis", None),
    "keepDims": ("keep_dims", None),
    "squeezeDims": ("squeeze_dims", None),
}


def _options(obj: Any) -> Dict[str, Any]:
    if obj is None:
        return {}
    out: Dict[str, Any] = {}
    for field, value in vars(obj).items():
        if field not in _OPTION_FIELDS:
            continue
        key, enum = _OPTION_FIELDS[field]
        if enum is not None:
            value = enum.get(int(value), f"UNKNOWN_{int(value)}")
        elif isinstance(value, np.ndarray):
            value = [int(v) for v in value]
        elif isinstance(value, (bool, np.bool_)):
            value = bool(value)
        elif isinstance(value, (int, np.integer)):
            value = int(value)
        elif isinstance(value, (float, np.floating)):
            value = float(value)
        out[key] = value
    return out


def _as_bytes(data: Union[bytes, bytearray, memoryview]) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"model must be bytes, got {type(data).__name__}")


def read_model(data: Union[bytes, bytearray, memoryview]) -> TFLiteModel:
    """Parse ``.tflite`` bytes.

    Raises:
        TypeError: ``data`` is not bytes-like.
        ValueError: not a TFLite flatbuffer (too short, file identifier is not ``TFL3``) or
            corrupt / truncated (an offset, a buffer or an index points outside the data).
    """
    buf = _as_bytes(data)
    n = len(buf)
    if n < 8:
        raise ValueError(f"not a .tflite model: {n} bytes is shorter than a flatbuffer header")
    ident = buf[4:8]
    if ident != FILE_IDENTIFIER:
        raise ValueError(
            f"not a .tflite model: file identifier is {ident!r}, expected {FILE_IDENTIFIER!r}"
        )
    (root,) = struct.unpack_from("<I", buf, 0)
    if not 8 <= root < n:
        raise ValueError(f"corrupt .tflite model: root table offset {root} outside the {n} bytes")
    schema = load_schema()
    try:
        fb = schema.Model.GetRootAsModel(buf, 0)
        m = schema.ModelT.InitFromObj(fb)
    except Exception as e:  # flatbuffers raises struct.error/IndexError/ValueError on bad offsets
        raise ValueError(f"corrupt or truncated .tflite model ({n} bytes): {type(e).__name__}: {e}") from None
    try:
        return _build(m, buf)
    except (IndexError, KeyError, TypeError, AttributeError, struct.error) as e:
        raise ValueError(f"corrupt .tflite model ({n} bytes): {type(e).__name__}: {e}") from None


def _build(m: Any, buf: bytes) -> TFLiteModel:
    n = len(buf)
    if not m.subgraphs:
        raise ValueError("corrupt .tflite model: no subgraph")
    buffers = m.buffers or []
    names = _builtin_names()
    sg = m.subgraphs[0]
    tensors: List[Tensor] = []
    for i, t in enumerate(sg.tensors or []):
        if t.type not in TENSOR_TYPES:
            raise ValueError(f"corrupt .tflite model: tensor {i} has unknown type code {t.type}")
        if not 0 <= t.buffer < max(len(buffers), 1):
            raise ValueError(f"corrupt .tflite model: tensor {i} names buffer {t.buffer} of {len(buffers)}")
        data = None
        if buffers:
            b = buffers[t.buffer]
            if b.data is not None and len(b.data):
                data = np.asarray(b.data, dtype=np.uint8).tobytes()
            elif getattr(b, "offset", 0) and getattr(b, "size", 0):
                off, size = int(b.offset), int(b.size)
                if off + size > n:
                    raise ValueError(f"truncated .tflite model: buffer {t.buffer} ends at {off + size} > {n} bytes")
                data = buf[off : off + size]
        q = None
        if t.quantization is not None and t.quantization.scale is not None and len(t.quantization.scale):
            zp = t.quantization.zeroPoint
            scale = np.asarray(t.quantization.scale, dtype=np.float32)
            q = Quantization(
                scale=scale,
                zero_point=np.asarray(zp if zp is not None else np.zeros(scale.size), dtype=np.int64),
                axis=int(t.quantization.quantizedDimension),
            )
        name = t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else str(t.name or "")
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        _check_tensor(i, name, TENSOR_TYPES[t.type][0], shape, q)
        tensor = Tensor(i, name, TENSOR_TYPES[t.type][0], shape, q, int(t.buffer), data)
        if data is not None and tensor.dtype not in ("STRING", "RESOURCE", "VARIANT"):
            bits = TENSOR_TYPES[t.type][2]
            expected = (tensor.size * bits + 7) // 8
            if len(data) != expected:
                raise ValueError(
                    f"corrupt .tflite model: tensor {i} ({name!r}) has {len(data)} data bytes, "
                    f"expected {expected} for shape {list(shape)} of {tensor.dtype}"
                )
        tensors.append(tensor)
    opcodes = m.operatorCodes or []
    ops: List[Operator] = []
    for i, op in enumerate(sg.operators or []):
        if not 0 <= op.opcodeIndex < len(opcodes):
            raise ValueError(f"corrupt .tflite model: operator {i} names opcode {op.opcodeIndex} of {len(opcodes)}")
        oc = opcodes[op.opcodeIndex]
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        custom = oc.customCode.decode("utf-8", "replace") if isinstance(oc.customCode, bytes) else oc.customCode
        name = custom if (code == 32 and custom) else names.get(code, f"UNKNOWN_{code}")
        ins = tuple(int(v) for v in (op.inputs if op.inputs is not None else []))
        outs = tuple(int(v) for v in (op.outputs if op.outputs is not None else []))
        for v in ins + outs:
            if not -1 <= v < len(tensors):
                raise ValueError(f"corrupt .tflite model: operator {i} ({name}) names tensor {v} of {len(tensors)}")
        if not outs or -1 in outs:
            raise ValueError(f"corrupt .tflite model: operator {i} ({name}) has outputs {list(outs)}; every operator "
                             "needs at least one output tensor")
        ops.append(Operator(i, name, code, custom, int(oc.version), ins, outs, _options(op.builtinOptions)))
    inputs = tuple(int(v) for v in (sg.inputs if sg.inputs is not None else []))
    outputs = tuple(int(v) for v in (sg.outputs if sg.outputs is not None else []))
    for v in inputs + outputs:
        if not 0 <= v < len(tensors):
            raise ValueError(f"corrupt .tflite model: subgraph input/output names tensor {v} of {len(tensors)}")
    if not inputs or not outputs:
        raise ValueError(f"corrupt .tflite model: the subgraph has {len(inputs)} input(s) and {len(outputs)} "
                         f"output(s) ({len(tensors)} tensors, {len(ops)} operators); a model needs at least one of each")
    desc = m.description.decode("utf-8", "replace") if isinstance(m.description, bytes) else (m.description or "")
    return TFLiteModel(
        version=int(m.version),
        description=desc,
        size=n,
        tensors=tuple(tensors),
        operators=tuple(ops),
        inputs=inputs,
        outputs=outputs,
        num_subgraphs=len(m.subgraphs),
        num_buffers=len(buffers),
    )


_MAX_ELEMENTS = 1 << 31


def _check_tensor(i: int, name: str, dtype: str, shape: Tuple[int, ...], q: Optional[Quantization]) -> None:
    """Structural checks that the interpreters rely on without checking them (a flipped bit here
    made TFLM read out of bounds): dimensions >= 0 and a size below 2^31 elements; as many zero
    points as scales; for integer tensors quantized per channel, an axis inside the shape with one
    scale per channel (a LUT-encoded UINT8 tensor keeps the decoded tensor's scales)."""
    if any(d < 0 for d in shape):
        raise ValueError(f"corrupt .tflite model: tensor {i} ({name!r}) has shape {list(shape)} with a negative dimension")
    size = 1
    for d in shape:
        size *= d
    if size >= _MAX_ELEMENTS:
        raise ValueError(f"corrupt .tflite model: tensor {i} ({name!r}) has shape {list(shape)} ({size} elements, "
                         f"at most {_MAX_ELEMENTS - 1} accepted)")
    if q is None:
        return
    if q.zero_point.size != q.scale.size:
        raise ValueError(f"corrupt .tflite model: tensor {i} ({name!r}) has {q.scale.size} scales but "
                         f"{q.zero_point.size} zero points")
    if not np.all(np.isfinite(q.scale)):
        raise ValueError(f"corrupt .tflite model: tensor {i} ({name!r}) has a non-finite quantization scale")
    if q.scale.size > 1 and dtype in ("INT4", "INT8", "INT16", "INT32", "INT64"):
        if not 0 <= q.axis < len(shape):
            raise ValueError(f"corrupt .tflite model: tensor {i} ({name!r}) is quantized per channel along axis "
                             f"{q.axis}, outside its shape {list(shape)}")
        if shape[q.axis] != q.scale.size:
            raise ValueError(f"corrupt .tflite model: tensor {i} ({name!r}) has {q.scale.size} scales for "
                             f"{shape[q.axis]} channels along axis {q.axis}")


def pack_int4(values: Sequence[int]) -> bytes:
    """Pack int values in [-8, 7] two per byte: element 2k low nibble, 2k+1 high nibble.

    Raises:
        ValueError: a value is outside [-8, 7].
    """
    v = np.asarray(values, dtype=np.int64).ravel()
    if v.size and (v.min() < -8 or v.max() > 7):
        raise ValueError(f"INT4 values must be in [-8, 7], got range [{v.min()}, {v.max()}]")
    nib = (v & 0xF).astype(np.uint8)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_int4(packed: Union[bytes, np.ndarray], count: int) -> np.ndarray:
    """Unpack ``count`` two's-complement nibbles (low nibble first) into int8.

    Raises:
        ValueError: ``packed`` holds fewer than ``ceil(count / 2)`` bytes.
    """
    b = np.frombuffer(bytes(packed), dtype=np.uint8) if not isinstance(packed, np.ndarray) else packed.astype(np.uint8).ravel()
    need = (int(count) + 1) // 2
    if b.size < need:
        raise ValueError(f"INT4 data: {b.size} bytes cannot hold {count} values ({need} bytes needed)")
    nib = np.empty(2 * need, dtype=np.int16)
    nib[0::2] = b[:need] & 0xF
    nib[1::2] = b[:need] >> 4
    nib = np.where(nib >= 8, nib - 16, nib)
    return nib[:count].astype(np.int8)


def decode_lut(encoded: bytes, ancillary: bytes, shape: Sequence[int], dtype: np.dtype = np.dtype("i1")) -> np.ndarray:
    """Decode a ``tflite_micro.compression`` LUT tensor (what TFLM_DECODE does at run time).

    Raises:
        ValueError: the metadata is not a LUT version-1 header or the sizes do not add up.
    """
    anc = bytes(ancillary)
    if len(anc) < 16:
        raise ValueError(f"DECODE ancillary data: {len(anc)} bytes is shorter than the 16-byte header")
    if anc[0] != 0:
        raise ValueError(f"DECODE ancillary data: decode type {anc[0]} is not LUT (0)")
    if anc[4] != 1:
        raise ValueError(f"DECODE ancillary data: LUT version {anc[4]} is not 1")
    bitwidth, axis, stride = anc[5] & 0x07, anc[5] >> 4, anc[6]
    if not 1 <= bitwidth <= 7:
        raise ValueError(f"DECODE ancillary data: LUT bit width {bitwidth} not in 1..7")
    dtype = np.dtype(dtype)
    tables = np.frombuffer(anc[16:], dtype=dtype)
    shape = tuple(int(d) for d in shape)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    bits = np.unpackbits(np.frombuffer(bytes(encoded), dtype=np.uint8))
    if bits.size < count * bitwidth:
        raise ValueError(f"DECODE data: {len(encoded)} bytes cannot hold {count} {bitwidth}-bit indices")
    idx = bits[: count * bitwidth].reshape(count, bitwidth).astype(np.int64)
    idx = (idx << np.arange(bitwidth - 1, -1, -1, dtype=np.int64)).sum(axis=1)
    if axis == 15:
        channel = np.zeros(count, dtype=np.int64)
    else:
        if axis >= len(shape):
            raise ValueError(f"DECODE ancillary data: axis {axis} out of range for shape {list(shape)}")
        channel = np.indices(shape).reshape(len(shape), -1)[axis]
    pos = channel * stride + idx
    if pos.size and pos.max() >= tables.size:
        raise ValueError("DECODE data: an index points past the value tables")
    return tables[pos].reshape(shape).copy()


@dataclasses.dataclass(frozen=True)
class FullyConnectedLayer:
    """One FULLY_CONNECTED op, everything needed to re-implement it in integers.

    ``y_q = clamp(requant(sum_i (x_q[i] - input_zero_point) * weights[o, i] + bias[o]) + output_zero_point)``
    with the requantization multiplier ``input_scale * weight_scale / output_scale``.
    """

    op_index: int
    name: str  # the weight tensor's name
    weights: np.ndarray  # int8 [out, in], INT4 unpacked
    weight_dtype: str  # "INT4" | "INT8" (as stored; LUT-compressed tensors report their decoded type)
    weight_scale: np.ndarray  # float32, 1 entry (per-tensor) or out entries
    weight_zero_point: np.ndarray
    bias: Optional[np.ndarray]  # int32 [out] or None
    bias_scale: Optional[np.ndarray]
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    fused_activation: str  # "NONE" | "RELU" | "RELU6" | ...
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]
    compressed: bool = False


def fully_connected_layers(model_bytes: Union[bytes, TFLiteModel]) -> List[FullyConnectedLayer]:
    """Every FULLY_CONNECTED op of a model, in execution order, with unpacked int8 weights.

    Raises:
        ValueError: corrupt model, or an FC op whose weights or quantization are missing.
    """
    model = model_bytes if isinstance(model_bytes, TFLiteModel) else read_model(model_bytes)
    layers = []
    for op in model.operators:
        if op.name != "FULLY_CONNECTED":
            continue
        x, w = model.tensors[op.inputs[0]], model.tensors[op.inputs[1]]
        y = model.tensors[op.outputs[0]]
        for t, role in ((x, "input"), (w, "weights"), (y, "output")):
            if t.quantization is None:
                raise ValueError(f"FULLY_CONNECTED op {op.index}: {role} tensor {t.name!r} is not quantized")
        weights = model.constant_values(w.index).astype(np.int8)
        bias = bias_scale = None
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b = model.tensors[op.inputs[2]]
            bias = model.constant_values(b.index).astype(np.int32)
            bias_scale = None if b.quantization is None else b.quantization.scale
        layers.append(
            FullyConnectedLayer(
                op_index=op.index,
                name=w.name,
                weights=weights,
                weight_dtype=w.dtype,
                weight_scale=w.quantization.scale,
                weight_zero_point=w.quantization.zero_point,
                bias=bias,
                bias_scale=bias_scale,
                input_scale=float(x.quantization.scale[0]),
                input_zero_point=int(x.quantization.zero_point[0]),
                output_scale=float(y.quantization.scale[0]),
                output_zero_point=int(y.quantization.zero_point[0]),
                fused_activation=op.options.get("fused_activation", "NONE"),
                input_shape=x.shape,
                output_shape=y.shape,
                compressed=not w.is_constant,
            )
        )
    return layers


def weight_tensors(model: TFLiteModel) -> List[Tuple[Operator, Tensor]]:
    """(op, filter tensor) for every FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D op."""
    out = []
    for op in model.operators:
        if op.name in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"):
            out.append((op, model.tensors[op.inputs[1]]))
    return out


def set_tensor_scales(model_bytes: bytes, tensor_index: int, scales: Sequence[float]) -> bytes:
    """A copy of ``model_bytes`` whose tensor ``tensor_index`` (subgraph 0) has its quantization
    scales overwritten in place (same layout, same size, only those float32 bytes change).

    Used to make the stored weight scale exactly the grid step where the converter's own
    ``(max - min) / (2^bits - 2)`` rounded it 1 ulp away.

    Raises:
        ValueError: the tensor has no scale vector of ``len(scales)`` entries.
    """
    schema = load_schema()
    buf = bytearray(model_bytes)
    read_model(bytes(buf))  # validates
    t = schema.Model.GetRootAsModel(buf, 0).Subgraphs(0).Tensors(int(tensor_index))
    q = t.Quantization() if t is not None else None
    scales = np.asarray(scales, dtype=np.float32).ravel()
    if q is None or q.ScaleLength() != scales.size:
        have = 0 if q is None else q.ScaleLength()
        raise ValueError(f"tensor {tensor_index} has {have} scales, cannot set {scales.size}")
    o = q._tab.Offset(8)  # QuantizationParameters.scale (schema field 2)
    start = q._tab.Vector(o)
    for j, v in enumerate(scales):
        struct.pack_into("<f", buf, start + 4 * j, float(v))
    return bytes(buf)
