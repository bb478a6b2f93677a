r"""Fixed-point requantization exactly as TFLite Micro's reference kernels do it.

Shared by the TFLM reference-kernel simulator and the FantastIC4 simulator; mirrored name for
name by ``fantastic4/runtime/f4_intmath.h``. Source of the arithmetic: TFLite's
``quantization_util.cc`` (``QuantizeMultiplier``) and ``common.h``
(``MultiplyByQuantizedMultiplier`` built on gemmlowp's ``SaturatingRoundingDoublingHighMul`` and
``RoundingDivideByPOT``), double-rounding variant (TFLM does not define TFLITE_SINGLE_ROUNDING).

A real multiplier :math:`M > 0` is written :math:`M = q \cdot 2^{s-31}` with
:math:`q \in [2^{30}, 2^{31})`; then :math:`\mathrm{requant}(x) \approx x M`.
All functions accept NumPy arrays (vectorized, int64 internally) or Python ints.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "quantize_multiplier",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier",
    "conv_multiplier",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def quantize_multiplier(real_multiplier: float) -> Tuple[int, int]:
    """``QuantizeMultiplier``: (quantized_multiplier int32, shift int) for a double multiplier.

    ``q = round_half_away(frac * 2^31)`` where ``real = frac * 2^shift``, ``frac in [0.5, 1)``.
    """
    m = float(real_multiplier)
    if m == 0.0:
        return 0, 0
    frac, shift = math.frexp(m)
    q = frac * (1 << 31)
    q_fixed = int(math.floor(abs(q) + 0.5)) * (1 if q >= 0 else -1)  # std::round
    assert q_fixed <= (1 << 31)
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return int(q_fixed), int(shift)


def conv_multiplier(input_scale: float, filter_scale: float, output_scale: float) -> float:
    r"""The real requantization multiplier of FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D:
    :math:`M = (s_{in} \cdot s_w) / s_{out}` with the three float32 scales widened to double and
    the product and quotient taken in double (the product of two float32 values is exact in double).

    This is what the pinned TFLM interpreter computes for every one of these ops, per tensor and
    per channel, with or without a bias tensor: the per-channel path
    (``PopulateConvolutionQuantizationParams`` in tensorflow/lite/kernels/kernel_util.cc, used by
    CONV_2D, DEPTHWISE_CONV_2D and per-channel FULLY_CONNECTED) writes it that way in its source;
    for per-tensor FULLY_CONNECTED (``GetQuantizedConvolutionMultipler``) the interpreter was
    measured against both candidates on accumulators chosen where they differ (the float32 product
    ``float(s_in * s_w)`` keeps 24 bits where the multiplier has 31, so it gives a different
    multiplier for 99 % of random scale triples): the double product matched every output, the
    float32 product none (``tests/test_tflm_differential.py``).
    """
    s_in = np.float64(np.float32(input_scale))
    s_w = np.float64(np.float32(filter_scale))
    s_out = np.float64(np.float32(output_scale))
    return float(s_in * s_w / s_out)


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` for int32 inputs."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    s = ab + nudge
    # C++ integer division truncates toward zero.
    q = np.where(s >= 0, s >> 31, -((-s) >> 31))
    return np.where(overflow, np.int64(INT32_MAX), q).astype(np.int64)


def rounding_divide_by_pot(x, exponent: int):
    """gemmlowp ``RoundingDivideByPOT``: x / 2^exponent, rounding half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    if exponent == 0:
        return x
    mask = np.int64((1 << exponent) - 1)
    remainder = x & mask
    threshold = (mask >> 1) + np.where(x < 0, 1, 0)
    return (x >> exponent) + np.where(remainder > threshold, 1, 0)


def multiply_by_quantized_multiplier(x, quantized_multiplier: int, shift: int):
    """``MultiplyByQuantizedMultiplier(int32 x, int32 q, int shift)`` (TFLite reference)."""
    left = shift if shift > 0 else 0
    right = 0 if shift > 0 else -shift
    x = np.asarray(x, dtype=np.int64) * np.int64(1 << left)
    # The C++ code multiplies in int32 (x * (1 << left_shift)); TFLite requires no overflow here.
    x = ((x + 2**31) % 2**32) - 2**31
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, quantized_multiplier), right)
