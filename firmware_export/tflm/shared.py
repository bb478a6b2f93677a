"""LUT compression of a weight-shared model's TFLM flatbuffer.

``ecqx_tf.methods.sharing`` clusters each kernel into a small integer codebook (``sharing_info``
gives the exact integers); here the exported flatbuffer stores those int8 integers as
``ceil(log2 K)``-bit indices into a look-up table (TFLM's ``TFLM_DECODE`` op restores the int8
values at run time).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ecqx_tf.methods.sharing import index_bits
from firmware_export.tflm import flatbuffer as fb
from firmware_export.tflm.compress import lut_compress
from firmware_export.tflm.convert import WeightStep, convert

__all__ = ["lut_compress_shared"]


def lut_compress_shared(request: Any) -> bytes:
    """The TFLM flatbuffer of ``request`` (``ExportRequest`` with ``quant=sharing_info(...)``) with
    every shared weight tensor LUT-compressed to ``ceil(log2 K)``-bit indices (``K`` = codebook
    size; TFLM's ``TFLM_DECODE`` op restores the int8 values at run time). Checks that the decoded
    integers equal ``QuantizedKernel.integers()``.

    Raises:
        RuntimeError: decoded integers differ (an exporter bug).
        ValueError: as ``firmware_export.tflm.convert.convert``.
    """
    res = convert(request, compress=False)
    parsed = fb.read_model(res.model_bytes)
    steps = [s for s in res.plan.steps if isinstance(s, WeightStep)]
    targets = []
    for s, (op, t) in zip(steps, fb.weight_tensors(parsed)):
        if s.quant is not None:
            k = len(np.unique(np.asarray(s.quant.levels)))
            targets.append((t.index, max(1, index_bits(k))))
    out = lut_compress(res.model_bytes, targets)
    decoded = fb.read_model(out)
    for s, (op, t) in zip(steps, fb.weight_tensors(decoded)):
        if s.expected is not None and not np.array_equal(decoded.constant_values(t.index), s.expected):
            raise RuntimeError(f"layer {s.layer!r}: LUT-decoded integers differ from the codebook integers")
    return out
