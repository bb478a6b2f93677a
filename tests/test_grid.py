"""ecqx_tf.grid: slow references from the grid formulas (docs/algorithm.md section 1) vs make_grid / Grid."""
import dataclasses
import json
import math

import numpy as np
import pytest

from ecqx_tf.grid import (
    DEFAULT_STEP,
    GRID_KINDS,
    Grid,
    grid_levels,
    make_grid,
    paper_vote,
)
from ecqx_tf.quantized import QuantizedKernel

BITS = list(range(2, 9))


def _tensors():
    """(name, tensor) pairs: several shapes, normal and heavy-tailed, several seeds."""
    out = []
    for seed, shape in enumerate([(300,), (20, 15), (3, 3, 4, 8), (2, 3, 3, 16)]):
        rng = np.random.default_rng(seed)
        out.append((f"normal{shape}", (rng.standard_normal(shape) * 0.05).astype(np.float32)))
        out.append((f"t2{shape}", (rng.standard_t(2, shape) * 0.02).astype(np.float32)))
        out.append((f"laplace{shape}", (rng.laplace(0.01, 0.03, shape)).astype(np.float32)))
    return out


TENSORS = _tensors()


# ----------------------------------------------------------------------------- references
def ref_percentile(values, q):
    """numpy 'linear' percentile, written out."""
    v = sorted(values)
    pos = (len(v) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def ref_vote(values):
    pos = [v for v in values if v > 0]
    neg = [v for v in values if v < 0]

    def mean(a):
        return sum(a) / len(a) if a else 0.0

    def std(a):
        if len(a) < 2:
            return None
        m = mean(a)
        return math.sqrt(sum((x - m) ** 2 for x in a) / (len(a) - 1))

    sp, sn = std(pos), std(neg)
    votes = [
        abs(max(values)) > abs(min(values)),
        mean(pos) > abs(mean(neg)),
        len(pos) > len(neg),
        sum(abs(x) for x in pos) > sum(abs(x) for x in neg),
        sp is not None and sn is not None and sp > sn,
    ]
    return sum(votes), 5 - sum(votes)


def ref_grid(w, bits, kind):
    vals = [float(v) for v in np.asarray(w, dtype=np.float64).ravel()]
    absv = [abs(v) for v in vals]
    scale = ref_percentile(absv, 99.9)
    if scale == 0:
        scale = max(absv)
    half = 2 ** (bits - 1)
    if kind == "symmetric":
        lo, hi, denom = -(half - 1), half - 1, half - 1
    elif all(v >= 0 for v in vals):
        lo, hi, denom = 0, 2**bits - 1, 2**bits - 1
    elif all(v <= 0 for v in vals):
        lo, hi, denom = -(2**bits - 1), 0, 2**bits - 1
    else:
        p, n = ref_vote(vals)
        lo, hi, denom = (-half + 1, half, half - 1) if p > n else (-half, half - 1, half - 1)
    step = np.float32(scale / denom) if scale > 0 else np.float32(1.0)
    return list(range(lo, hi + 1)), float(step)


# ----------------------------------------------------------------------------- make_grid
@pytest.mark.parametrize("kind", GRID_KINDS)
@pytest.mark.parametrize("name,w", TENSORS, ids=[n for n, _ in TENSORS])
def test_make_grid_matches_reference(name, w, kind):
    for bits in (2, 4, 8):
        g = make_grid(w, bits, kind)
        levels, step = ref_grid(w, bits, kind)
        assert g.levels.tolist() == levels
        assert g.levels.dtype == np.int32
        assert g.step == pytest.approx(step, rel=1e-6)
        assert np.float32(g.step) == g.step  # a float32 value
        assert g.bits == bits and g.kind == kind


@pytest.mark.parametrize("bits", BITS)
def test_symmetric_levels_all_bits(bits):
    w = np.random.default_rng(bits).standard_normal(500).astype(np.float32)
    g = make_grid(w, bits)
    half = 2 ** (bits - 1)
    assert g.levels.tolist() == list(range(-(half - 1), half))
    assert g.num_levels == 2**bits - 1
    assert g.levels[g.zero_index] == 0
    assert g.centroids.dtype == np.float32
    np.testing.assert_array_equal(g.centroids, g.levels.astype(np.float32) * np.float32(g.step))
    assert g.step == float(np.float32(np.percentile(np.abs(w.astype(np.float64)), 99.9) / (half - 1)))


@pytest.mark.parametrize("bits", BITS)
def test_paper_levels_all_bits(bits):
    half = 2 ** (bits - 1)
    rng = np.random.default_rng(bits)
    neg_dom = -np.abs(rng.standard_normal(400)) * 2.0
    pos = np.abs(rng.standard_normal(100))
    w = np.concatenate([neg_dom, pos])
    g = make_grid(w, bits, "paper")
    assert g.num_levels == 2**bits
    assert g.levels.tolist() == list(range(-half, half))
    g = make_grid(-w, bits, "paper")
    assert g.levels.tolist() == list(range(-half + 1, half + 1))
    assert g.levels[g.zero_index] == 0


def test_paper_vote_on_constructed_tensors():
    # every statistic favours positive
    w = np.array([-0.1, -0.1, 0.05, 0.5, 1.0, 2.0])
    assert paper_vote(w) == (5, 0)
    assert make_grid(w, 3, "paper").levels.tolist() == list(range(-3, 5))
    # mirror: every statistic favours negative
    assert paper_vote(-w) == (0, 5)
    assert make_grid(-w, 3, "paper").levels.tolist() == list(range(-4, 4))
    # exact symmetry: every comparison ties, ties vote negative
    s = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])
    assert paper_vote(s) == (0, 5)
    assert make_grid(s, 4, "paper").levels.tolist() == list(range(-8, 8))
    # 3-2 split for positive: |max| > |min|, mean pos > mean neg, sum pos > sum neg; neg has more
    # members and a larger spread
    w = np.array([3.0, 3.0, -0.1, -1.0, -2.0])
    assert ref_vote(list(w)) == (3, 2)
    assert paper_vote(w) == (3, 2)
    assert make_grid(w, 2, "paper").levels.tolist() == [-1, 0, 1, 2]
    # a single positive value: its std is undefined, the std vote goes negative
    w = np.array([5.0, -1.0, -1.5])
    assert paper_vote(w) == ref_vote(list(w)) == (3, 2)


@pytest.mark.parametrize("name,w", TENSORS, ids=[n for n, _ in TENSORS])
def test_paper_vote_matches_reference(name, w):
    assert paper_vote(w) == ref_vote([float(v) for v in w.ravel()])


@pytest.mark.parametrize("bits", BITS)
def test_paper_one_sided_tensors(bits):
    rng = np.random.default_rng(0)
    w = np.abs(rng.standard_normal((8, 8))).astype(np.float32)
    w[0, 0] = 0.0
    g = make_grid(w, bits, "paper")
    assert g.levels.tolist() == list(range(0, 2**bits))
    assert g.zero_index == 0
    expect = np.float32(np.percentile(np.abs(w.astype(np.float64)), 99.9) / (2**bits - 1))
    assert g.step == float(expect)
    g2 = make_grid(-w, bits, "paper")
    assert g2.levels.tolist() == list(range(-(2**bits - 1), 1))
    assert g2.zero_index == g2.num_levels - 1
    assert g2.step == g.step
    # symmetric kind ignores the sign pattern
    assert make_grid(w, bits).levels.tolist() == grid_levels(bits).tolist()


@pytest.mark.parametrize("kind", GRID_KINDS)
def test_degenerate_tensors_give_sensible_grids(kind):
    zeros = np.zeros((4, 4), np.float32)
    g = make_grid(zeros, 4, kind)
    assert g.step == DEFAULT_STEP
    assert np.all(np.isfinite(g.centroids))
    assert g.levels[g.zero_index] == 0
    if kind == "paper":
        assert g.levels.tolist() == list(range(16))  # all-zero counts as nonnegative
    single = np.full((3, 5), 0.3, np.float32)
    g = make_grid(single, 4, kind)
    denom = 7 if kind == "symmetric" else 15
    assert g.step == float(np.float32(np.float64(np.float32(0.3)) / denom))
    neg_single = -single
    g = make_grid(neg_single, 4, kind)
    assert np.all(np.isfinite(g.centroids)) and g.step > 0
    # the 99.9th percentile is 0 but the max is not: fall back to max|W|
    sparse = np.zeros(10000, np.float32)
    sparse[3] = -0.7
    g = make_grid(sparse, 3, kind)
    denom = 3 if kind == "symmetric" else 7
    assert g.step == float(np.float32(np.float64(np.float32(0.7)) / denom))
    # tiny weights whose step underflows float32 -> default step, no zero step
    tiny = np.full(10, 1e-300)
    assert make_grid(tiny, 8, kind).step == DEFAULT_STEP


def test_make_grid_any_shape_and_dtype():
    rng = np.random.default_rng(1)
    for shape in [(7,), (3, 4), (2, 3, 4), (3, 3, 2, 5)]:
        w = rng.standard_normal(shape)
        assert make_grid(w, 4) == make_grid(w.astype(np.float64).ravel(), 4)
    assert make_grid(np.arange(-3, 4), 3).step == float(np.float32(3 / 3))


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bits,exc", [(1, ValueError), (9, ValueError), (0, ValueError), (-4, ValueError),
                                      ("4", TypeError), (4.0, TypeError), (True, TypeError), (None, TypeError)])
def test_bad_bits(bits, exc):
    with pytest.raises(exc, match="bits"):
        make_grid(np.ones(4), bits)


def test_numpy_int_bits_accepted():
    assert make_grid(np.ones(4), np.int64(4)).bits == 4


@pytest.mark.parametrize("kind,exc", [("asym", ValueError), ("Symmetric", ValueError), (3, TypeError), (None, TypeError)])
def test_bad_kind(kind, exc):
    with pytest.raises(exc, match="kind"):
        make_grid(np.ones(4), 4, kind)


@pytest.mark.parametrize(
    "w,exc,msg",
    [
        (np.zeros((0,)), ValueError, "empty"),
        (np.zeros((3, 0)), ValueError, "empty"),
        (np.array([0.1, np.nan]), ValueError, "finite"),
        (np.array([0.1, np.inf]), ValueError, "finite"),
        (np.array(["a", "b"]), TypeError, "real"),
        (np.array([True, False]), TypeError, "real"),
        (np.array([1 + 2j]), TypeError, "real"),
    ],
)
def test_bad_weights(w, exc, msg):
    with pytest.raises(exc, match=msg):
        make_grid(w, 4)


def test_step_overflow_is_an_error():
    with pytest.raises(ValueError, match="overflows float32"):
        make_grid(np.array([1e300, -1e300]), 4)


# ----------------------------------------------------------------------------- Grid class
@pytest.mark.parametrize("kind", GRID_KINDS)
def test_grid_round_trip_and_equality(kind):
    g = make_grid(np.random.default_rng(3).standard_normal(100), 5, kind)
    d = g.to_dict()
    assert set(d) == {"bits", "kind", "step", "levels"}
    g2 = Grid.from_dict(json.loads(json.dumps(d)))
    assert g2 == g and hash(g2) == hash(g)
    assert g2.to_dict() == d
    np.testing.assert_array_equal(g2.centroids, g.centroids)
    assert g != Grid(g.bits, g.kind, g.step * 2, g.levels)
    assert g != g.to_dict()
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.bits = 3
    with pytest.raises(ValueError):
        g.levels[0] = 5  # read-only


def test_grid_array_protocol():
    g = make_grid(np.linspace(-1, 1, 50), 3)
    np.testing.assert_array_equal(np.asarray(g), g.centroids)
    assert np.asarray(g, dtype=np.float64).dtype == np.float64
    assert np.asarray(g).dtype == np.float32
    idx = np.array([[0, 3], [6, 2]])
    np.testing.assert_array_equal(g.values(idx), g.centroids[idx])
    np.testing.assert_array_equal(g.integers(idx), g.levels[idx])
    with pytest.raises(ValueError, match="indices"):
        g.values(np.array([7]))


def test_grid_matches_quantized_kernel_convention():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    for kind in GRID_KINDS:
        g = make_grid(w, 4, kind)
        idx = rng.integers(0, g.num_levels, w.shape).astype(np.int32)
        q = QuantizedKernel(layer="d", bits=g.bits, grid=g.kind, step=g.step, levels=g.levels, indices=idx)
        np.testing.assert_array_equal(q.values(), g.values(idx))
        np.testing.assert_array_equal(q.integers(), g.integers(idx))
        assert q.zero_index == g.zero_index
        assert QuantizedKernel.from_dict(q.to_dict()) == q


def test_grid_validation():
    lv = grid_levels(4)
    with pytest.raises(ValueError, match="step"):
        Grid(4, "symmetric", 0.0, lv)
    with pytest.raises(ValueError, match="step"):
        Grid(4, "symmetric", float("nan"), lv)
    with pytest.raises(ValueError, match="step"):
        Grid(4, "symmetric", -0.1, lv)
    with pytest.raises(TypeError, match="step"):
        Grid(4, "symmetric", "0.1", lv)
    with pytest.raises(ValueError, match="levels"):
        Grid(4, "symmetric", 0.1, grid_levels(3))
    with pytest.raises(ValueError, match="levels"):
        Grid(4, "symmetric", 0.1, grid_levels(4, "paper", "negative"))
    with pytest.raises(TypeError, match="levels"):
        Grid(4, "symmetric", 0.1, lv.astype(np.float32))
    with pytest.raises(TypeError, match="bits"):
        Grid(True, "symmetric", 0.1, lv)
    with pytest.raises(ValueError, match="kind"):
        Grid(4, "other", 0.1, lv)
    with pytest.raises(ValueError, match="missing"):
        Grid.from_dict({"bits": 4})
    for side in ("negative", "positive", "nonnegative", "nonpositive"):
        g = Grid(4, "paper", 0.1, grid_levels(4, "paper", side))
        assert g.num_levels == 16 and g.levels[g.zero_index] == 0
    with pytest.raises(ValueError, match="side"):
        grid_levels(4, "paper", "up")


def test_from_step_and_from_centroids():
    g = Grid.from_step(4, "symmetric", 0.1)
    assert g.levels.tolist() == list(range(-7, 8)) and g.step == float(np.float32(0.1))
    with pytest.raises(ValueError, match="levels is required"):
        Grid.from_step(4, "paper", 0.1)
    p = make_grid(np.array([-1.0, 0.2, 0.3, 2.0, 0.5]), 4, "paper")
    assert Grid.from_step(4, "paper", p.step, p.levels) == p
    assert Grid.from_centroids(4, "paper", p.centroids, p.step) == p
    with pytest.raises(ValueError):
        Grid.from_centroids(4, "paper", p.centroids * 1.01, p.step)
