"""ecqx_tf.assign_fast against the reference functions of ecqx_tf.assign: identical int32 indices,
lambdas and EcqxInfo, on seeded randomized cases (many shapes, bit widths, both grid kinds,
lambdas from 0 to huge, relevances from degenerate to heavy-tailed) with adversarial weights
placed exactly on, and one or a few ulps next to, the decision boundaries."""
import math

import numpy as np
import pytest

from ecqx_tf import assign as ref
from ecqx_tf import assign_fast as fast
from ecqx_tf.assign import _entropy_term, _probabilities_from_counts
from ecqx_tf.grid import GRID_KINDS, make_grid

SEEDS = range(48)


# ----------------------------------------------------------------------------- generators
def _weights(rng, n):
    kind = rng.choice(["normal", "t2", "skewed", "positive", "negative", "sparse", "tiny", "lumpy"])
    if kind == "normal":
        w = rng.standard_normal(n) * 0.05
    elif kind == "t2":
        w = rng.standard_t(2, n) * 0.02
    elif kind == "skewed":
        w = rng.laplace(0.02, 0.03, n)
    elif kind == "positive":
        w = np.abs(rng.standard_normal(n)) * 0.05
    elif kind == "negative":
        w = -np.abs(rng.standard_normal(n)) * 0.05
    elif kind == "sparse":
        w = rng.standard_normal(n) * 0.05 * (rng.random(n) < 0.3)
    elif kind == "tiny":
        w = rng.standard_normal(n) * 1e-20
    else:  # few distinct values
        w = rng.choice(rng.standard_normal(5) * 0.05, n)
    return w.astype(np.float32)


def _ulp_neighbours(v, rng, k):
    """float32 values at and a few ulps around the float64 points ``v``."""
    base = v.astype(np.float32)
    out = [base]
    for d in range(1, 4):
        out.append(np.nextafter(base, np.float32(np.inf)) if d == 1 else out[-1])
        up, dn = base.copy(), base.copy()
        for _ in range(d):
            up = np.nextafter(up, np.float32(np.inf))
            dn = np.nextafter(dn, np.float32(-np.inf))
        out += [up, dn]
    allv = np.concatenate(out)
    return allv[rng.integers(0, allv.size, k)]


def _boundaries(w, c, lam):
    """Exact float64 nearest and ECQ boundaries between every pair of centroids."""
    cs = np.sort(c.astype(np.float64))
    mids = (cs[1:] + cs[:-1]) / 2
    counts = np.bincount(ref.nearest_assign(w, c).ravel(), minlength=c.size)
    z = int(np.flatnonzero(c == 0)[0])
    e = _entropy_term(lam, _probabilities_from_counts(counts, z, True))
    c64 = c.astype(np.float64)
    fin = np.flatnonzero(np.isfinite(e))
    pts = [mids]
    for a in fin:
        for b in fin:
            if c64[a] < c64[b]:
                pts.append(np.array([(c64[a] + c64[b]) / 2 + (e[b] - e[a]) / (2 * (c64[b] - c64[a]))]))
    return np.concatenate(pts)


def _adversarial(w, c, lam, rng):
    """Replace a share of the weights by values on / next to boundaries, centroids and zero
    (float32 weights: the nearest float32 values and a few float32 ulps around; float64 weights:
    the float64 boundary itself and a few float64 ulps around)."""
    w = w.copy()
    n = w.size
    k = max(1, n // 4)
    pts = _boundaries(w, c, lam)
    pts = pts[np.abs(pts) < 1e30]
    if w.dtype == np.float64:
        near = [pts]
        for _ in range(3):
            near += [np.nextafter(near[-2 if len(near) > 1 else -1], np.inf), np.nextafter(near[-1], -np.inf)]
        cand = [np.concatenate(near)] if pts.size else []
    else:
        cand = [_ulp_neighbours(pts, rng, k)] if pts.size else []
    cand.append(c[rng.integers(0, c.size, k)].astype(w.dtype))  # exactly on centroids
    cand.append(np.zeros(k, w.dtype))
    cand = np.concatenate(cand)
    pos = rng.choice(n, min(n, k), replace=False)
    w[pos] = cand[rng.integers(0, cand.size, pos.size)]
    return w


def _relevance(rng, w):
    kind = rng.choice(["gamma", "uniform", "zeros", "constant", "one_big", "near_uniform", "signed"])
    n = w.shape
    if kind == "gamma":
        r = np.abs(w) * rng.gamma(1.0, 1.0, n) + 1e-4 * rng.random(n)
    elif kind == "uniform":
        r = rng.random(n)
    elif kind == "zeros":
        r = np.zeros(n)
    elif kind == "constant":
        r = np.full(n, 0.3)
    elif kind == "one_big":
        r = rng.random(n) * 1e-3
        r.flat[rng.integers(0, r.size)] = 5.0
    elif kind == "near_uniform":  # mean Rn close to 1: large beta_0, pow near underflow
        r = 1.0 - 0.02 * rng.random(n)
        r.flat[rng.integers(0, r.size)] = 0.0
    else:
        r = rng.standard_normal(n)
    return r.astype(np.float32)


def _case(seed):
    rng = np.random.default_rng(seed)
    shape = [(1,), (7,), (240,), (16, 15), (3, 3, 4, 7), (1500,), (40, 70)][seed % 7]
    n = int(np.prod(shape))
    w = _weights(rng, n)
    bits = int(rng.integers(2, 9))
    kind = GRID_KINDS[seed % 2]
    g = make_grid(w, bits, kind)
    c = g.centroids
    Lambda = float(rng.choice([0.0, 0.01, 0.05, 0.3, 2.0, 50.0]))
    lam0 = ref.layer_lambda(w, c, Lambda, n, 2 * n)
    if seed % 4 == 3:
        w = w.astype(np.float64)
    if seed % 3 != 2:
        w = _adversarial(w, c, lam0, rng)
    return rng, w.reshape(shape), c, Lambda


# ----------------------------------------------------------------------------- equality
@pytest.mark.parametrize("seed", SEEDS)
def test_nearest_and_lambda_equal_reference(seed):
    rng, w, c, Lambda = _case(seed)
    a = ref.nearest_assign(w, c)
    b = fast.nearest_assign_fast(w, c)
    assert b.dtype == np.int32 and b.shape == w.shape
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fast.nearest_counts(w, c), np.bincount(a.ravel(), minlength=c.size))
    for reduce in ("min", "max"):
        for n_largest in (w.size, 3 * w.size):
            lr = ref.layer_lambda(w, c, Lambda, w.size, n_largest, reduce=reduce)
            lf = fast.layer_lambda_fast(w, c, Lambda, w.size, n_largest, reduce=reduce)
            assert lr == lf  # the same float, bit for bit


@pytest.mark.parametrize("seed", SEEDS)
def test_ecq_equals_reference(seed):
    rng, w, c, Lambda = _case(seed)
    lam = ref.layer_lambda(w, c, Lambda, w.size, w.size)
    for lam_ in (lam, 0.0, lam * 1e-6, lam * 7.0):
        a = ref.ecq_assign(w, c, lam_)
        b = fast.ecq_assign_fast(w, c, lam_)
        assert b.dtype == np.int32 and b.shape == w.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", SEEDS)
def test_ecqx_equals_reference(seed):
    rng, w, c, Lambda = _case(seed)
    lam = ref.layer_lambda(w, c, Lambda, w.size, w.size)
    for _ in range(2):
        r = _relevance(rng, w)
        p = float(rng.choice([0.0, 0.02, 0.1, 0.5]))
        max_iter = int(rng.choice([1, 7, 50]))
        a, ia = ref.ecqx_assign(w, c, lam, r, p=p, max_iter=max_iter, return_info=True)
        b, ib = fast.ecqx_assign_fast(w, c, lam, r, p=p, max_iter=max_iter, return_info=True)
        assert b.dtype == np.int32 and b.shape == w.shape
        np.testing.assert_array_equal(a, b)
        assert ia == ib  # same betas, iterations, convergence and sparsities, exactly


@pytest.mark.parametrize("seed", SEEDS[:24])
def test_assign_layer_is_lambda_then_assignment(seed):
    rng, w, c, Lambda = _case(seed)
    n_largest = 2 * w.size
    r = _relevance(rng, w)
    for reduce in ("min", "max"):
        lam = ref.layer_lambda(w, c, Lambda, w.size, n_largest, reduce=reduce)
        got = fast.assign_layer(w, c, Lambda, n_largest, reduce=reduce)
        assert got.lam == lam and got.info is None
        np.testing.assert_array_equal(got.indices, ref.ecq_assign(w, c, lam))
        got = fast.assign_layer(w, c, Lambda, n_largest, method="ecqx", relevance=r, p=0.05, reduce=reduce)
        idx, info = ref.ecqx_assign(w, c, lam, r, p=0.05, return_info=True)
        assert got.lam == lam and got.info == info
        np.testing.assert_array_equal(got.indices, idx)
        np.testing.assert_array_equal(got.counts, np.bincount(ref.nearest_assign(w, c).ravel(), minlength=c.size))


# ----------------------------------------------------------------------------- the envelope itself
def _brute(x, c, e):
    d = x.astype(np.float64)[:, None] - c[None, :]
    return np.argmin(d * d + e[None, :], axis=1)


@pytest.mark.parametrize("seed", range(40))
def test_envelope_with_arbitrary_constants(seed):
    """Any per-cluster constants (incl. +inf and near three-way ties), weights on the exact
    boundaries and next to them: the envelope lookup equals the brute-force argmin."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 20))
    c = np.sort(rng.choice(np.arange(-40, 41), k, replace=False)).astype(np.float32) * np.float32(0.013)
    e = rng.random(k) * float(rng.choice([1e-6, 1e-3, 0.1, 10.0]))
    e[rng.random(k) < 0.2] = np.inf
    if not np.isfinite(e).any():
        e[0] = 0.0
    c64 = c.astype(np.float64)
    fin = np.flatnonzero(np.isfinite(e))
    if fin.size >= 3 and seed % 2 == 0:  # make a middle cluster (almost) tie two outer ones
        a, m, b = np.sort(rng.choice(fin, 3, replace=False))
        x0 = (c64[a] + c64[b]) / 2 + (e[b] - e[a]) / (2 * (c64[b] - c64[a]))
        e[m] = (x0 - c64[a]) ** 2 + e[a] - (x0 - c64[m]) ** 2 + float(rng.choice([0.0, 1e-17, -1e-17, 1e-12]))
        if e[m] < 0:
            e += -e[m]
    w = (rng.standard_normal(3000) * 0.2).astype(np.float32)
    pts = []
    for a in fin:
        for b in fin:
            if c64[a] < c64[b]:
                pts.append((c64[a] + c64[b]) / 2 + (e[b] - e[a]) / (2 * (c64[b] - c64[a])))
    if pts:
        pts = np.array(pts)
        pts = pts[np.abs(pts) < 10]
        w[: 3 * pts.size] = _ulp_neighbours(np.repeat(pts, 3), rng, 3 * pts.size)[: 3 * pts.size] if pts.size else w[:0]
    w[-k:] = c
    x64 = w.astype(np.float64)
    if len(pts):  # float64 weights on the boundaries and 1..3 float64 ulps next to them
        near = np.concatenate([pts, np.nextafter(pts, np.inf), np.nextafter(pts, -np.inf),
                               np.nextafter(np.nextafter(pts, np.inf), np.inf), pts * (1 + 3e-16), pts * (1 - 3e-16)])
        x64[: near.size] = near[: x64.size]
    for x in (w, x64):
        out = np.empty(x.size, np.int32)
        fast._ecq_pass(x, c64, e, 1.0, float(x.min()), float(x.max()), out)
        np.testing.assert_array_equal(out, _brute(x, c64, e))


@pytest.mark.parametrize("seed", range(12))
def test_ecqx_weights_switching_exactly_at_beta(seed):
    """Relevances chosen so that many weights switch between zero and non-zero exactly at the
    beta the search evaluates (2 C_0 b^beta = m up to float64 rounding): the decisions of the
    float32 thresholds would be wrong there without the exact re-evaluation."""
    rng = np.random.default_rng(100 + seed)
    w = (rng.standard_normal(2000) * 0.05).astype(np.float32)
    g = make_grid(w, int(rng.integers(2, 6)), GRID_KINDS[seed % 2])
    c = g.centroids
    lam = ref.layer_lambda(w, c, float(rng.choice([0.0, 0.05, 0.5])), w.size, w.size)
    z, c0, m, j = ref._ecq_parts(w.astype(np.float64), c.astype(np.float64), lam)
    ratio = m / (2 * c0)
    cand = np.flatnonzero((ratio > 1e-6) & (ratio < 0.999) & (c0 > 0))
    r = rng.gamma(0.5, 1.0, w.size)
    r /= r.max()
    S = cand[: cand.size // 2]
    keep_max = np.argmax(r)
    S = S[S != keep_max]
    for _ in range(6):  # fixed point: beta_0 depends on the crafted relevances through mean(Rn)
        rn = np.abs(r) / (np.abs(r).max() + ref.RELEVANCE_EPS)
        beta0 = ref._initial_beta(float(np.mean(rn)))
        r[S] = (ratio[S] ** (1.0 / beta0) - ref.RELEVANCE_EPS) * (np.abs(r).max() + ref.RELEVANCE_EPS)
    assert S.size > 10
    for p in (1.0, 0.0):  # p = 1: stops at beta_0 itself; p = 0: a long search
        a, ia = ref.ecqx_assign(w, c, lam, r, p=p, return_info=True)
        b, ib = fast.ecqx_assign_fast(w, c, lam, r, p=p, return_info=True)
        np.testing.assert_array_equal(a, b)
        assert ia == ib


@pytest.mark.parametrize("seed", range(6))
def test_ecqx_sparsity_of_ecq_at_the_zero_boundaries(seed):
    """Many float32 weights at and next to the two boundaries of the zero cluster (C_0 = m up to
    rounding): the ECQ sparsity the beta search aims at must be counted exactly."""
    rng = np.random.default_rng(200 + seed)
    w = (rng.standard_normal(3000) * 0.05).astype(np.float32)
    g = make_grid(w, 4, GRID_KINDS[seed % 2])
    c = g.centroids.astype(np.float64)
    z = g.zero_index
    lam = ref.layer_lambda(w, g, 0.1 * (seed + 1), w.size, w.size)
    for _ in range(6):  # inserted weights move P and so the boundaries: iterate to a fixed point
        counts = np.bincount(ref.nearest_assign(w, g).ravel(), minlength=c.size)
        e = _entropy_term(lam, _probabilities_from_counts(counts, z, True))
        cross = np.array([(c[z] + c[k]) / 2 + (e[k] - e[z]) / (2 * (c[k] - c[z])) if k != z else np.nan for k in range(c.size)])
        fin = np.isfinite(e) & (np.arange(c.size) != z)
        pts = np.array([np.max(cross[fin & (c < 0)]), np.min(cross[fin & (c > 0)])])  # ends of zero's interval
        w[:600] = _ulp_neighbours(np.repeat(pts, 5), np.random.default_rng(seed), 600)
    z_, c0, m, j = ref._ecq_parts(w.astype(np.float64), c, lam)
    assert np.count_nonzero(np.abs(m[:600] / c0[:600] - 1) < 1e-6) > 300  # the weights do sit on the boundaries
    r = rng.random(w.shape)
    a, ia = ref.ecqx_assign(w, g, lam, r, p=0.05, return_info=True)
    b, ib = fast.ecqx_assign_fast(w, g, lam, r, p=0.05, return_info=True)
    np.testing.assert_array_equal(a, b)
    assert ia == ib


# ----------------------------------------------------------------------------- dtypes, shapes, special grids
def test_float64_int_and_unsorted_centroids():
    rng = np.random.default_rng(3)
    w64 = rng.standard_normal((30, 11)) * 0.05  # not float32 values
    g = make_grid(w64, 4)
    perm = rng.permutation(g.num_levels)
    for c in (g.centroids, g.centroids[perm], g.centroids.astype(np.float64) * 1.0000001):
        for w in (w64, w64.astype(np.float32), (w64 * 100).astype(np.int64), w64.astype(np.float16)):
            lam = ref.layer_lambda(w, c, 0.2, w.size, w.size)
            assert fast.layer_lambda_fast(w, c, 0.2, w.size, w.size) == lam
            np.testing.assert_array_equal(fast.nearest_assign_fast(w, c), ref.nearest_assign(w, c))
            np.testing.assert_array_equal(fast.ecq_assign_fast(w, c, lam), ref.ecq_assign(w, c, lam))
            r = rng.random(w.shape)
            a, ia = ref.ecqx_assign(w, c, lam, r, return_info=True)
            b, ib = fast.ecqx_assign_fast(w, c, lam, r, return_info=True)
            np.testing.assert_array_equal(a, b)
            assert ia == ib


@pytest.mark.parametrize("kind", GRID_KINDS)
def test_degenerate_tensors(kind):
    rng = np.random.default_rng(0)
    tensors = [
        np.zeros((5, 4), np.float32),
        np.full((7,), 0.25, np.float32),
        np.full((2, 5), -0.4, np.float32),
        np.array([0.3], np.float32),
        np.array(0.3, np.float32),  # 0-d
        np.abs(rng.standard_normal((5, 4))).astype(np.float32),
        (rng.standard_normal(50) * 1e-42).astype(np.float32),  # subnormal float32
        (rng.standard_normal(50) * 1e18).astype(np.float32),  # float32 squares overflow
    ]
    for w in tensors:
        g = make_grid(w, 4, kind)
        c = g.centroids
        for Lambda in (0.0, 0.05, 5.0):
            lam = ref.layer_lambda(w, c, Lambda, w.size, w.size)
            assert fast.layer_lambda_fast(w, c, Lambda, w.size, w.size) == lam
            np.testing.assert_array_equal(fast.ecq_assign_fast(w, c, lam), ref.ecq_assign(w, c, lam))
            for r in (np.abs(w), np.zeros(w.shape), rng.random(w.shape)):
                a, ia = ref.ecqx_assign(w, c, lam, r, return_info=True)
                b, ib = fast.ecqx_assign_fast(w, c, lam, r, return_info=True)
                np.testing.assert_array_equal(a, b)
                assert ia == ib


def test_float64_overflowing_magnitudes_follow_the_reference():
    rng = np.random.default_rng(1)
    w = rng.standard_normal(60) * 1e200  # squares overflow float64: the reference's own arithmetic
    c = np.arange(-7, 8) * 3e199
    for lam in (0.0, 1e280, 1e300):
        np.testing.assert_array_equal(fast.ecq_assign_fast(w, c, lam), ref.ecq_assign(w, c, lam))
        r = rng.random(w.shape)
        a, ia = ref.ecqx_assign(w, c, lam, r, return_info=True)
        b, ib = fast.ecqx_assign_fast(w, c, lam, r, return_info=True)
        np.testing.assert_array_equal(a, b)
        assert ia == ib
    np.testing.assert_array_equal(fast.nearest_assign_fast(w, c), ref.nearest_assign(w, c))


def test_only_zero_centroid_and_unselectable_clusters():
    w = np.array([0.5, -0.5, 0.0], np.float32)
    assert fast.ecq_assign_fast(w, [0.0], 1.0).tolist() == [0, 0, 0]
    assert fast.ecqx_assign_fast(w, [0.0], 1.0, [1.0, 0.1, 0.2]).tolist() == [0, 0, 0]
    c = np.array([-1.0, 0.0, 1.0, 2.0, 3.0], np.float32)  # 2.0 and 3.0 unused: P = 0
    w = np.array([-0.5, 0.5, 0.5, 0.0, -1.0, 1.5, 1.25], np.float32)
    for lam in (0.0, 1e-6, 0.3, 1e6):
        np.testing.assert_array_equal(fast.ecq_assign_fast(w, c, lam), ref.ecq_assign(w, c, lam))
        r = np.abs(w) + 0.1
        np.testing.assert_array_equal(fast.ecqx_assign_fast(w, c, lam, r), ref.ecqx_assign(w, c, lam, r))
    # only the zero cluster is selectable (every other P = 0): everything goes to zero
    w = np.array([0.1, -0.2, 0.0, 0.3], np.float32)
    for lam in (0.5, 1e6):
        np.testing.assert_array_equal(fast.ecq_assign_fast(w, c, lam), ref.ecq_assign(w, c, lam))
        np.testing.assert_array_equal(fast.ecqx_assign_fast(w, c, lam, np.abs(w)), ref.ecqx_assign(w, c, lam, np.abs(w)))


def test_chunk_and_table_boundaries(monkeypatch):
    """Tensors larger than a chunk and lookup tables with few bins (many mixed bins)."""
    monkeypatch.setattr(fast, "CHUNK", 1000)
    monkeypatch.setattr(fast, "LUT_BINS", 7)
    rng = np.random.default_rng(5)
    w = (rng.standard_t(3, 4321) * 0.03).astype(np.float32)
    g = make_grid(w, 5, "paper")
    c = g.centroids
    lam = ref.layer_lambda(w, c, 0.1, w.size, w.size)
    w = _adversarial(w, c, lam, rng)
    lam = ref.layer_lambda(w, c, 0.1, w.size, w.size)
    np.testing.assert_array_equal(fast.nearest_assign_fast(w, c), ref.nearest_assign(w, c))
    np.testing.assert_array_equal(fast.ecq_assign_fast(w, c, lam), ref.ecq_assign(w, c, lam))
    r = np.abs(w) * rng.random(w.shape)
    a, ia = ref.ecqx_assign(w, c, lam, r, p=0.0, return_info=True)
    b, ib = fast.ecqx_assign_fast(w, c, lam, r, p=0.0, return_info=True)
    np.testing.assert_array_equal(a, b)
    assert ia == ib and ia.iterations > 1


# ----------------------------------------------------------------------------- errors
def test_errors_match_reference():
    w = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32) * 0.05
    g = make_grid(w, 4)
    r = np.abs(w)
    bad_w = w.copy()
    bad_w[1, 1] = np.nan
    cases = [
        (lambda m: m.ecq_assign(w, g, -0.1), ValueError, "lam"),
        (lambda m: m.ecq_assign(bad_w, g, 0.1), ValueError, "w must be finite"),
        (lambda m: m.ecq_assign(np.zeros((0, 3), np.float32), g, 0.1), ValueError, "w must not be empty"),
        (lambda m: m.ecq_assign(np.array(["a"]), g, 0.1), TypeError, "w must be a real"),
        (lambda m: m.ecq_assign(w, [-1.0, 1.0], 0.1), ValueError, "contain the value 0"),
        (lambda m: m.nearest_assign(w, [0.0, 1.0, 1.0]), ValueError, "distinct"),
        (lambda m: m.ecqx_assign(w, g, 0.1, r.T), ValueError, "relevance must have the shape"),
        (lambda m: m.ecqx_assign(w, g, 0.1, np.where(r > 0.05, np.inf, r)), ValueError, "relevance must be finite"),
        (lambda m: m.ecqx_assign(w, g, 0.1, r, p=1.5), ValueError, "p must"),
        (lambda m: m.ecqx_assign(w, g, 0.1, r, max_iter=0), ValueError, "max_iter"),
        (lambda m: m.layer_lambda(w, g, -1.0, 30, 30), ValueError, "Lambda"),
        (lambda m: m.layer_lambda(w, g, 0.1, 30, 10), ValueError, "n_largest"),
        (lambda m: m.layer_lambda(w, g, 0.1, 30, 30, reduce="mean"), ValueError, "reduce"),
    ]

    class Fast:
        nearest_assign = staticmethod(fast.nearest_assign_fast)
        ecq_assign = staticmethod(fast.ecq_assign_fast)
        ecqx_assign = staticmethod(fast.ecqx_assign_fast)
        layer_lambda = staticmethod(fast.layer_lambda_fast)

    for call, exc, msg in cases:
        for mod in (ref, Fast):
            with pytest.raises(exc, match=msg):
                call(mod)
    with pytest.raises(ValueError, match="method"):
        fast.assign_layer(w, g, 0.1, 30, method="kmeans")
    with pytest.raises(ValueError, match="relevance"):
        fast.assign_layer(w, g, 0.1, 30, method="ecqx")


def test_scalar_rounding_of_the_beta_band_equals_the_array_form():
    """The beta search rounds its band edges with ``_round_scalar``; it must give the values of
    ``_round_down`` / ``_round_up`` (same type, sign of zero, overflow to inf near the float32 range)."""
    rng = np.random.default_rng(0)
    vals = list(rng.uniform(-2, 2, 2000)) + list(np.exp(rng.uniform(-700, 700, 2000)))
    vals += [-v for v in vals[:500]] + [0.0, -0.0, 1e-45, 1e-46, 5e-324, 3.4028234663852886e38, 3.4028235e38,
                                         3.5e38, -3.5e38, 1e300, float(np.finfo(np.float32).tiny)]
    vals += [float(np.nextafter(np.float32(x), np.float32(2))) for x in rng.uniform(0, 1, 200)]
    for dt in (np.float32, np.float64):
        for v in vals:
            for up in (False, True):
                with np.errstate(over="ignore"):
                    want = (fast._round_up if up else fast._round_down)(np.array([v]), dt)[0]
                got = fast._round_scalar(v, dt, up)
                assert type(got) is type(want) and got == want and np.signbit(got) == np.signbit(want), (v, dt, up, got, want)
