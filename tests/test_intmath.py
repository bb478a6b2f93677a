"""firmware_export.intmath against slow big-int references written from the formulas
(exact rationals, C's truncating division), on edge cases and random values."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from firmware_export import intmath as im

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def round_half_away(q: Fraction) -> int:
    """std::round on an exact rational."""
    n = math.floor(abs(q) + Fraction(1, 2))
    return n if q >= 0 else -n


def c_div(a: int, b: int) -> int:
    """C++ integer division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def ref_quantize_multiplier(m: float):
    """M = q * 2^(shift - 31), q in [2^30, 2^31): shift from the exact binary exponent."""
    if m == 0.0:
        return 0, 0
    f = Fraction(m)
    shift = 0
    while f >= 1:
        f /= 2
        shift += 1
    while f < Fraction(1, 2):
        f *= 2
        shift -= 1
    q = round_half_away(f * 2**31)
    if q == 2**31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def ref_srdhm(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return c_div(ab + nudge, 1 << 31)


def ref_rdbp(x: int, e: int) -> int:
    return round_half_away(Fraction(x, 2**e))


def ref_mbqm(x: int, q: int, shift: int) -> int:
    left = max(shift, 0)
    right = max(-shift, 0)
    return ref_rdbp(ref_srdhm(x * (1 << left), q), right)


EDGE_INTS = [0, 1, -1, 2, -2, 3, -3, 127, -128, 2**15, -(2**15), 2**30, -(2**30), INT32_MAX, INT32_MIN,
             INT32_MAX - 1, INT32_MIN + 1, 123456789, -987654321]


def test_quantize_multiplier_matches_exact_reference():
    rng = np.random.default_rng(0)
    cases = [1.0, 0.5, 0.25, 0.75, 2.0, 1e-3, 1e-9, 3.999999999, 0.9999999999999999, 2**-31, 2**-32, 2**-40,
             float(np.float32(0.00392157) * np.float32(0.05) / np.float32(0.0156)), 1 - 2**-33, 7.0]
    cases += list(10 ** rng.uniform(-12, 3, 2000))
    for m in cases:
        assert im.quantize_multiplier(m) == ref_quantize_multiplier(m), m


def test_quantize_multiplier_round_up_to_next_power():
    # frac * 2^31 rounds to 2^31: the multiplier is halved and the shift incremented
    m = 1 - 2**-33
    q, s = im.quantize_multiplier(m)
    assert (q, s) == (2**30, 1)


def test_srdhm_matches_reference():
    rng = np.random.default_rng(1)
    pairs = [(a, b) for a in EDGE_INTS for b in EDGE_INTS]
    pairs += [(int(a), int(b)) for a, b in rng.integers(INT32_MIN, INT32_MAX, size=(3000, 2), endpoint=True)]
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    got = im.saturating_rounding_doubling_high_mul(a, b)
    assert [int(v) for v in got] == [ref_srdhm(x, y) for x, y in pairs]


@pytest.mark.parametrize("exponent", [0, 1, 2, 5, 12, 30, 31])
def test_rounding_divide_by_pot_matches_reference(exponent):
    rng = np.random.default_rng(exponent)
    xs = EDGE_INTS + [int(v) for v in rng.integers(INT32_MIN, INT32_MAX, size=2000, endpoint=True)]
    xs += [k * (1 << exponent) + (1 << exponent) // 2 * s for k in (-3, 0, 5) for s in (-1, 1)]  # exact halves
    got = im.rounding_divide_by_pot(np.array(xs), exponent)
    assert [int(v) for v in got] == [ref_rdbp(x, exponent) for x in xs]


def test_multiply_by_quantized_multiplier_matches_reference():
    rng = np.random.default_rng(2)
    for _ in range(300):
        m = float(10 ** rng.uniform(-6, 1.5))
        q, s = im.quantize_multiplier(m)
        lim = INT32_MAX >> max(s, 0)  # TFLite requires x * 2^left_shift to fit int32
        xs = [int(v) for v in rng.integers(-lim, lim, size=40)] + [0, 1, -1, lim, -lim]
        got = im.multiply_by_quantized_multiplier(np.array(xs), q, s)
        assert [int(v) for v in got] == [ref_mbqm(x, q, s) for x in xs], (m, q, s)


def test_multiply_by_quantized_multiplier_scalar_and_accuracy():
    q, s = im.quantize_multiplier(0.0123)
    assert int(im.multiply_by_quantized_multiplier(10000, q, s)) == 123
    assert int(im.multiply_by_quantized_multiplier(-10000, q, s)) == -123


def test_conv_multiplier_is_the_double_product_of_the_float32_scales():
    """M = double(s_in) * double(s_w) / double(s_out): the product of two float32 values is exact in
    double, the quotient correctly rounded (Fraction reference); the float32 product differs."""
    rng = np.random.default_rng(3)
    for _ in range(2000):
        s_in, s_w, s_out = (float(np.float32(10 ** rng.uniform(-5, 1))) for _ in range(3))
        exact = Fraction(np.float32(s_in).item()) * Fraction(np.float32(s_w).item()) / Fraction(np.float32(s_out).item())
        assert im.conv_multiplier(s_in, s_w, s_out) == float(exact)
    # the case: the float32 product gives another multiplier
    s_in, s_w, s_out = 0.003921568859368563, 0.05000000074505806, 0.015686275437474251
    prod32 = np.float32(s_in) * np.float32(s_w)
    old = float(np.float64(prod32) / np.float64(np.float32(s_out)))
    assert im.conv_multiplier(s_in, s_w, s_out) != old
