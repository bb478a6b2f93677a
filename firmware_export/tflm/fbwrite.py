"""Write ``.tflite`` flatbuffers from NumPy arrays: the inverse of :mod:`.flatbuffer` for the ops
this project exports, through the TFLite schema's generated object API (``ModelT.Pack``).

Two users:

* the differential harness (:mod:`.differential`) builds small random models directly, with
  scales, zero points and weights chosen freely (the TFLite converter never produces most of these
  combinations, which is the point: the simulator must agree with TFLM on all of them);
* :func:`replace_constant` rewrites one constant tensor of a converted model (data, type,
  quantization) and re-packs the model; the exporter uses it for the one case the converter cannot
  express (per-channel INT8 FULLY_CONNECTED weights, see ``convert.py``).

Byte-level conventions are those of :mod:`.flatbuffer`: INT4 packed two per byte, low nibble
first; file identifier ``TFL3``; schema version 3; one subgraph.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import flatbuffer as fb

__all__ = ["OP_OPTIONS", "ModelWriter", "replace_constant"]

#: op name -> (BuiltinOptions member, options class, {our option key: (schema field, enum map)}).
#: The one table for writing options; the reader (``flatbuffer._OPTION_FIELDS``) uses the same keys.
_ACT = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}
_PAD = {"SAME": 0, "VALID": 1}
OP_OPTIONS: Dict[str, Tuple[Optional[str], Optional[str], Dict[str, Tuple[str, Optional[Dict[str, int]]]]]] = {
    "FULLY_CONNECTED": ("FullyConnectedOptions", "FullyConnectedOptionsT",
                        {"fused_activation": ("fusedActivationFunction", _ACT), "keep_num_dims": ("keepNumDims", None)}),
    "CONV_2D": ("Conv2DOptions", "Conv2DOptionsT",
                {"padding": ("padding", _PAD), "stride_h": ("strideH", None), "stride_w": ("strideW", None),
                 "dilation_h": ("dilationHFactor", None), "dilation_w": ("dilationWFactor", None),
                 "fused_activation": ("fusedActivationFunction", _ACT)}),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", "DepthwiseConv2DOptionsT",
                          {"padding": ("padding", _PAD), "stride_h": ("strideH", None), "stride_w": ("strideW", None),
                           "dilation_h": ("dilationHFactor", None), "dilation_w": ("dilationWFactor", None),
                           "depth_multiplier": ("depthMultiplier", None),
                           "fused_activation": ("fusedActivationFunction", _ACT)}),
    "MAX_POOL_2D": ("Pool2DOptions", "Pool2DOptionsT",
                    {"padding": ("padding", _PAD), "stride_h": ("strideH", None), "stride_w": ("strideW", None),
                     "filter_height": ("filterHeight", None), "filter_width": ("filterWidth", None),
                     "fused_activation": ("fusedActivationFunction", _ACT)}),
    "AVERAGE_POOL_2D": ("Pool2DOptions", "Pool2DOptionsT",
                        {"padding": ("padding", _PAD), "stride_h": ("strideH", None), "stride_w": ("strideW", None),
                         "filter_height": ("filterHeight", None), "filter_width": ("filterWidth", None),
                         "fused_activation": ("fusedActivationFunction", _ACT)}),
    "ADD": ("AddOptions", "AddOptionsT", {"fused_activation": ("fusedActivationFunction", _ACT)}),
    "CONCATENATION": ("ConcatenationOptions", "ConcatenationOptionsT",
                      {"axis": ("axis", None), "fused_activation": ("fusedActivationFunction", _ACT)}),
    "RESHAPE": ("ReshapeOptions", "ReshapeOptionsT", {"new_shape": ("newShape", None)}),
    "SOFTMAX": ("SoftmaxOptions", "SoftmaxOptionsT", {"beta": ("beta", None)}),
    "MEAN": ("ReducerOptions", "ReducerOptionsT", {"keep_dims": ("keepDims", None)}),
    "REDUCE_MAX": ("ReducerOptions", "ReducerOptionsT", {"keep_dims": ("keepDims", None)}),
    "PAD": ("PadOptions", "PadOptionsT", {}),
    "LOGISTIC": (None, None, {}),
    "TANH": (None, None, {}),
    "RELU": (None, None, {}),
    "RELU6": (None, None, {}),
}

_TYPE_CODES = {name: code for code, (name, _, _) in fb.TENSOR_TYPES.items()}


def _schema():
    return fb.load_schema()


def _encode(values: np.ndarray, dtype: str) -> bytes:
    v = np.asarray(values)
    if dtype == "INT4":
        return fb.pack_int4(v.ravel())
    np_dtype = fb.dtype_of(dtype)
    return np.ascontiguousarray(v.astype(np_dtype)).tobytes()


def _quantization(schema, scale, zero_point, axis: int):
    if scale is None:
        return None
    q = schema.QuantizationParametersT()
    scale = np.atleast_1d(np.asarray(scale, np.float32))
    zp = np.zeros(scale.size, np.int64) if zero_point is None else np.atleast_1d(np.asarray(zero_point, np.int64))
    if zp.size == 1 and scale.size > 1:
        zp = np.full(scale.size, int(zp[0]), np.int64)
    q.scale = [float(v) for v in scale]
    q.zeroPoint = [int(v) for v in zp]
    q.quantizedDimension = int(axis)
    return q


class ModelWriter:
    """Accumulates tensors and operators of one subgraph, then packs them.

    ``add_tensor`` returns the tensor index; ``add_op`` appends an operator (execution order is
    the order of the calls); ``to_bytes(inputs, outputs)`` finishes the model.
    """

    def __init__(self, description: str = "ecqx-tf fbwrite") -> None:
        schema = _schema()
        self._schema = schema
        self.description = description
        self.buffers: List[Any] = [schema.BufferT()]
        self.tensors: List[Any] = []
        self.operators: List[Any] = []
        self.opcodes: List[Any] = []
        self._opcode_index: Dict[str, int] = {}

    def add_tensor(self, shape: Sequence[int], dtype: str, *, scale=None, zero_point=None, axis: int = 0,
                   data: Optional[np.ndarray] = None, name: str = "") -> int:
        """A tensor of ``dtype`` (a ``flatbuffer.TENSOR_TYPES`` name); ``data`` makes it a constant.

        Raises:
            ValueError: unknown dtype, or ``data`` does not hold ``prod(shape)`` values.
        """
        s = self._schema
        if dtype not in _TYPE_CODES:
            raise ValueError(f"dtype {dtype!r} is not a TFLite tensor type; accepted: {', '.join(_TYPE_CODES)}")
        t = s.TensorT()
        t.shape = [int(d) for d in shape]
        t.type = _TYPE_CODES[dtype]
        t.name = name or f"t{len(self.tensors)}"
        t.quantization = _quantization(s, scale, zero_point, axis)
        if data is not None:
            arr = np.asarray(data)
            if arr.size != int(np.prod(t.shape, dtype=np.int64)):
                raise ValueError(f"tensor {t.name!r}: {arr.size} values for shape {t.shape}")
            b = s.BufferT()
            b.data = np.frombuffer(_encode(arr, dtype), np.uint8).copy()
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        self.tensors.append(t)
        return len(self.tensors) - 1

    def add_op(self, op: str, inputs: Sequence[int], outputs: Sequence[int], **options: Any) -> None:
        """Append operator ``op`` with ``options`` (keys of ``OP_OPTIONS[op]``; enums by name).

        Raises:
            ValueError: unknown op or option.
        """
        s = self._schema
        if op not in OP_OPTIONS:
            raise ValueError(f"op {op!r} cannot be written; known: {', '.join(OP_OPTIONS)}")
        member, cls, fields = OP_OPTIONS[op]
        if op not in self._opcode_index:
            oc = s.OperatorCodeT()
            code = getattr(s.BuiltinOperator, op)
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = 1
            self.opcodes.append(oc)
            self._opcode_index[op] = len(self.opcodes) - 1
        o = s.OperatorT()
        o.opcodeIndex = self._opcode_index[op]
        o.inputs = [int(i) for i in inputs]
        o.outputs = [int(i) for i in outputs]
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ValueError(f"{op}: unknown option(s) {unknown}; known: {sorted(fields)}")
        if cls is not None:
            obj = getattr(s, cls)()
            for key, value in options.items():
                field, enum = fields[key]
                if enum is not None:
                    value = enum[value]
                elif isinstance(value, (list, tuple, np.ndarray)):
                    value = [int(v) for v in value]
                setattr(obj, field, value)
            o.builtinOptionsType = getattr(s.BuiltinOptions, member)
            o.builtinOptions = obj
        self.operators.append(o)

    def to_bytes(self, inputs: Sequence[int], outputs: Sequence[int]) -> bytes:
        import flatbuffers

        s = self._schema
        sg = s.SubGraphT()
        sg.tensors = self.tensors
        sg.operators = self.operators
        sg.inputs = [int(i) for i in inputs]
        sg.outputs = [int(i) for i in outputs]
        sg.name = "main"
        m = s.ModelT()
        m.version = 3
        m.description = self.description
        m.operatorCodes = self.opcodes
        m.subgraphs = [sg]
        m.buffers = self.buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(m.Pack(builder), file_identifier=fb.FILE_IDENTIFIER)
        return bytes(builder.Output())


def replace_constant(model_bytes: bytes, tensor_index: int, values: np.ndarray, dtype: str, *,
                     scale=None, zero_point=None, axis: int = 0) -> bytes:
    """A copy of ``model_bytes`` whose constant tensor ``tensor_index`` (subgraph 0) holds
    ``values`` as ``dtype`` with the given quantization (``scale=None`` keeps the old one). The
    model is unpacked and re-packed with the schema's object API (every other field is kept).

    Raises:
        ValueError: the tensor is not a constant, or the value count does not match its shape.
    """
    import flatbuffers

    s = _schema()
    parsed = fb.read_model(model_bytes)
    t_old = parsed.tensors[int(tensor_index)]
    if not t_old.is_constant:
        raise ValueError(f"tensor {tensor_index} ({t_old.name!r}) is not a constant")
    vals = np.asarray(values)
    if vals.size != t_old.size:
        raise ValueError(f"tensor {tensor_index} ({t_old.name!r}): {vals.size} values for shape {list(t_old.shape)}")
    m = s.ModelT.InitFromObj(s.Model.GetRootAsModel(bytearray(model_bytes), 0))
    t = m.subgraphs[0].tensors[int(tensor_index)]
    data = np.frombuffer(_encode(vals, dtype), np.uint8).copy()
    shared = sum(1 for other in m.subgraphs[0].tensors if other.buffer == t.buffer) > 1
    if shared:  # another tensor reads the same bytes: give this one its own buffer
        b = s.BufferT()
        b.data = data
        m.buffers.append(b)
        t.buffer = len(m.buffers) - 1
    else:
        m.buffers[t.buffer].data = data
    t.type = _TYPE_CODES[dtype]
    if scale is not None:
        t.quantization = _quantization(s, scale, zero_point, axis)
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=fb.FILE_IDENTIFIER)
    return bytes(builder.Output())
