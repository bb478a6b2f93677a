"""TFLM LUT compression of weight tensors (``tflite_micro.compression``, pinned wheel
``tflite-micro==0.dev20261023182759``).

A compressed tensor is stored as ``bits``-bit indices (packed MSB first) plus value tables and is
decoded at run time by the custom op ``TFLM_DECODE`` (``MicroMutableOpResolver::AddDecode()``);
the decoded int8 weights land in the tensor arena. The compressor only takes int8 tensors with at
most ``2**bits`` distinct values per table and refuses INT4, which is why ``compress=True``
stores the <= 4-bit symmetric grids as INT8.

Tables follow the tensor's quantization: one table for a per-tensor quantized tensor
(FULLY_CONNECTED), one table per channel along the quantized dimension for a per-channel one
(CONV_2D axis 0, DEPTHWISE_CONV_2D axis 3). This is not a choice: the TFLM_DECODE kernel of the
pinned wheel takes the number of value tables from the tensor's quantization scales, not from the
DCM axis field (tflite-micro PR #3025, issue #3685). Measured here: a per-channel quantized
CONV_2D filter compressed with ONE table decodes to wrong weights in the TFLM interpreter (every
output differed) although the Python decoder reads the intended values; with per-channel tables
TFLM is bit-exact.

The API of this wheel (checked by introspection): ``compression.SpecBuilder().add_tensor(
subgraph, tensor).with_lut(index_bitwidth, mode)`` where ``mode`` is REQUIRED since 2026-10:
``spec.PerTensor()`` or ``spec.PerChannel(axis)`` (axis 0 or the last axis only);
``compression.compress(model, specs) -> bytearray``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Iterable, Tuple

import numpy as np

from . import flatbuffer as fb

__all__ = ["lut_compress", "MAX_INDEX_BITS"]

log = logging.getLogger(__name__)

MAX_INDEX_BITS = 7  # the DCM bit-width field holds 1..7


def _api():
    try:
        from tflite_micro import compression
        from tflite_micro.tensorflow.lite.micro.compression import spec
    except ImportError as e:  # pragma: no cover - pinned dependency
        raise RuntimeError(f"LUT compression needs the tflite-micro wheel ({e})") from None
    return compression, spec


def lut_compress(model_bytes: bytes, tensors: Iterable[Tuple[int, int]]) -> bytes:
    """Compress the given subgraph-0 tensors.

    Args:
        model_bytes: the uncompressed ``.tflite``.
        tensors: ``(tensor_index, bits)`` pairs; ``bits`` is the LUT index width (the grid bits).

    Raises:
        ValueError: a tensor is not an INT8 constant, ``bits`` is outside 1..7, or a value table
            would need more than ``2**bits`` entries.
    """
    compression, spec = _api()
    model = fb.read_model(model_bytes)
    builder = compression.SpecBuilder()
    count = 0
    for index, bits in tensors:
        t = model.tensors[index]
        if t.dtype != "INT8" or not t.is_constant:
            raise ValueError(f"tensor {index} ({t.name!r}) is {t.dtype}; LUT compression takes INT8 constants only")
        if not 1 <= bits <= MAX_INDEX_BITS:
            raise ValueError(f"tensor {index} ({t.name!r}): LUT index bits must be 1..{MAX_INDEX_BITS}, got {bits}")
        v = t.values()
        q = t.quantization
        if q is not None and q.scale.size > 1:
            axis = q.axis
            mode = spec.PerChannel(axis=axis)
            distinct = max(np.unique(s).size for s in np.moveaxis(v, axis, 0))
        else:
            mode = spec.PerTensor()
            distinct = np.unique(v).size
        if distinct > 2**bits:
            raise ValueError(
                f"tensor {index} ({t.name!r}): {distinct} distinct values in one value table, more than 2**{bits}"
            )
        builder.add_tensor(subgraph=0, tensor=index).with_lut(index_bitwidth=bits, mode=mode)
        count += 1
    if not count:
        return bytes(model_bytes)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = compression.compress(bytes(model_bytes), builder.build())
    for line in err.getvalue().splitlines():
        log.debug("tflite_micro.compression: %s", line)
    return bytes(out)
