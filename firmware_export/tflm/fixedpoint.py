r"""gemmlowp's fixed-point math (``fixedpoint/fixedpoint.h``) as TFLM's int8 LOGISTIC, TANH and
SOFTMAX reference kernels use it, vectorized over NumPy int64 arrays holding int32 values.

A value of ``FixedPoint<int32, m>`` is the raw int32 ``r`` meaning :math:`r / 2^{31-m}`
(:math:`m` integer bits, :math:`31-m` fractional bits). Every function takes and returns raw
values and names the integer bits of its input and result like the C++ templates do:

* :func:`exp_on_negative_values` (``exp_on_negative_values``): :math:`e^x` for :math:`x \le 0`,
  input :math:`m` bits, result 0 bits: the argument is split into a multiple of 1/4 and a
  remainder, :math:`e^{x}` on :math:`[-1/4, 0)` by a 4th-order Taylor expansion around -1/8, then
  a barrel shifter multiplies by :math:`e^{-2^k}` for each set bit :math:`k = -2 \dots 4`;
* :func:`one_over_one_plus_x_for_x_in_0_1`: :math:`1/(1+x)` by three Newton-Raphson steps
  from :math:`48/17 - 32/17 \cdot d`;
* :func:`logistic`: :math:`1/(1+e^{-|x|})`, mirrored for negative :math:`x`, 1/2 at 0;
* :func:`one_minus_x_over_one_plus_x_for_x_in_0_1`: :math:`(1-x)/(1+x)`, the same Newton-Raphson
  steps, then :math:`x - 1` rescaled;
* :func:`tanh`: :math:`(1 - e^{-2|x|}) / (1 + e^{-2|x|})` (the doubling is ``ExactMulByPot<1>``: the
  raw value read with one more integer bit), sign restored, 0 at 0.

Integer semantics follow the C++: ``SaturatingRoundingDoublingHighMul`` and
``RoundingDivideByPOT`` from :mod:`firmware_export.intmath`; plain ``+``/``-`` wrap around int32 (the
kernels never reach it); saturating left shifts where the templates saturate.
"""
from __future__ import annotations

import numpy as np

from .. import intmath

__all__ = [
    "wrap32",
    "srdhm",
    "rdbp",
    "saturating_shift_left",
    "rescale",
    "one",
    "rounding_half_sum",
    "exp_on_interval_between_negative_one_quarter_and_0_excl",
    "exp_on_negative_values",
    "one_over_one_plus_x_for_x_in_0_1",
    "logistic",
    "one_minus_x_over_one_plus_x_for_x_in_0_1",
    "tanh",
    "count_leading_zeros32",
]

INT32_MIN, INT32_MAX = intmath.INT32_MIN, intmath.INT32_MAX


def wrap32(x) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32 (C++ int32 arithmetic as compiled)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + 2**31) % 2**32) - 2**31


def srdhm(a, b) -> np.ndarray:
    """FixedPoint ``operator*``: ``SaturatingRoundingDoublingHighMul`` (integer bits add up)."""
    return intmath.saturating_rounding_doubling_high_mul(a, b)


def rdbp(x, exponent: int) -> np.ndarray:
    """``RoundingDivideByPOT``."""
    return intmath.rounding_divide_by_pot(x, exponent)


def saturating_shift_left(x, exponent: int) -> np.ndarray:
    """``SaturatingRoundingMultiplyByPOT<exponent>`` for ``exponent > 0``: ``x * 2^exponent``,
    saturated to int32 when ``|x|`` exceeds ``2^(31 - exponent) - 1``."""
    x = np.asarray(x, dtype=np.int64)
    threshold = (1 << (31 - exponent)) - 1
    out = wrap32(x * (1 << exponent))
    out = np.where(x > threshold, INT32_MAX, out)
    return np.where(x < -threshold, INT32_MIN, out).astype(np.int64)


def rescale(x, src_bits: int, dst_bits: int) -> np.ndarray:
    """``Rescale<dst_bits>(FixedPoint<int32, src_bits>)``: ``SaturatingRoundingMultiplyByPOT``
    by ``2^(src_bits - dst_bits)``."""
    e = src_bits - dst_bits
    if e == 0:
        return np.asarray(x, dtype=np.int64)
    if e > 0:
        return saturating_shift_left(x, e)
    return rdbp(x, -e)


def one(integer_bits: int) -> int:
    """``FixedPoint::One()``: 2^31 - 1 with 0 integer bits, else ``1 << (31 - integer_bits)``."""
    return INT32_MAX if integer_bits == 0 else 1 << (31 - integer_bits)


def rounding_half_sum(a, b) -> np.ndarray:
    """``RoundingHalfSum`` (int32): ``(a + b + sign) / 2`` with C's truncating division."""
    s = np.asarray(a, dtype=np.int64) + np.asarray(b, dtype=np.int64)
    t = s + np.where(s >= 0, 1, -1)
    return np.where(t >= 0, t // 2, -((-t) // 2)).astype(np.int64)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a) -> np.ndarray:
    """:math:`e^a` for ``a`` in [-1/4, 0), 0 integer bits in and out."""
    a = np.asarray(a, dtype=np.int64)
    constant_term = 1895147668  # exp(-1/8)
    constant_1_over_3 = 715827883
    x = wrap32(a + (1 << 28))  # a + 1/8
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbp(x4, 2)
    poly = rdbp(wrap32(srdhm(wrap32(x4_over_4 + x3), constant_1_over_3) + x2), 1)
    return wrap32(constant_term + srdhm(constant_term, wrap32(x + poly)))


# (exponent k, raw 0-integer-bit multiplier exp(-2^k)) of the barrel shifter
_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401),
           (4, 242))


def exp_on_negative_values(a, integer_bits: int) -> np.ndarray:
    """:math:`e^a` for ``a <= 0`` given with ``integer_bits`` integer bits; result 0 bits."""
    a = np.asarray(a, dtype=np.int64)
    frac = 31 - integer_bits
    one_quarter = 1 << (frac - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = wrap32((a & mask) - one_quarter)
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = wrap32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _BARREL:
        if integer_bits > exponent:
            shift = frac + exponent
            result = np.where((remainder & (1 << shift)) != 0, srdhm(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))  # -32.0
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, one(0), result).astype(np.int64)


def one_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """:math:`1/(1+a)` for ``a`` in [0, 1), 0 integer bits in and out."""
    half_denominator = rounding_half_sum(np.asarray(a, dtype=np.int64), one(0))
    x = _newton_reciprocal_half(half_denominator)
    return rescale(x, 1, 0)  # ExactMulByPot<-1> turns 2 integer bits into 1, then Rescale<0>


def logistic(a, integer_bits: int) -> np.ndarray:
    """:math:`1/(1+e^{-a})`, input ``integer_bits`` integer bits, result 0 bits."""
    a = np.asarray(a, dtype=np.int64)
    positive = a > 0
    abs_input = np.where(positive, a, wrap32(-a))
    result_if_positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(wrap32(-abs_input), integer_bits))
    result_if_negative = wrap32(one(0) - result_if_positive)
    out = np.where(positive, result_if_positive, result_if_negative)
    return np.where(a == 0, 1 << 30, out).astype(np.int64)


def _newton_reciprocal_half(half_denominator) -> np.ndarray:
    """The three Newton-Raphson steps of gemmlowp's divisions: ``x ~ 1 / half_denominator`` with 2
    integer bits, from ``48/17 - 32/17 * d``."""
    constant_48_over_17 = 1515870810  # 2 integer bits
    constant_neg_32_over_17 = -1010580540
    x = wrap32(constant_48_over_17 + srdhm(half_denominator, constant_neg_32_over_17))
    for _ in range(3):
        half_denominator_times_x = srdhm(half_denominator, x)
        one_minus = wrap32(one(2) - half_denominator_times_x)
        x = wrap32(x + rescale(srdhm(x, one_minus), 4, 2))
    return x


def one_minus_x_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """:math:`(1-a)/(1+a)` for ``a`` in [0, 1), 0 integer bits in and out: the reciprocal of
    ``(1 + a) / 2`` (2 integer bits) minus one, rescaled to 0 integer bits (saturating)."""
    half_denominator = rounding_half_sum(np.asarray(a, dtype=np.int64), one(0))
    x = _newton_reciprocal_half(half_denominator)
    return rescale(wrap32(x - one(2)), 2, 0)


def tanh(a, integer_bits: int) -> np.ndarray:
    """:math:`\\tanh(a)`, input ``integer_bits`` integer bits, result 0 bits:
    ``t = (1 - e^{2n}) / (1 + e^{2n})`` for ``n = -|a|`` (``e^{2n}`` is ``exp_on_negative_values`` of
    the raw ``n`` read with ``integer_bits + 1`` integer bits), ``-t`` for negative ``a``, 0 at 0."""
    a = np.asarray(a, dtype=np.int64)
    negative = a < 0
    n = np.where(negative, a, wrap32(-a))
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1))
    out = np.where(negative, wrap32(-t), t)
    return np.where(a == 0, 0, out).astype(np.int64)


def count_leading_zeros32(x) -> np.ndarray:
    """``CountLeadingZeros(uint32)`` (32 for 0), by a branch-free binary search."""
    u = np.asarray(x, dtype=np.int64) & 0xFFFFFFFF
    v = u.copy()
    n = np.zeros(v.shape, dtype=np.int64)
    for s in (16, 8, 4, 2, 1):
        small = v < (1 << (32 - s))
        n = np.where(small, n + s, n)
        v = np.where(small, v << s, v)
    return np.where(u == 0, 32, n).astype(np.int64)
