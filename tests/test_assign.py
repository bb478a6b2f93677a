"""ecqx_tf.assign: slow references written from the formulas of docs/algorithm.md (sections 2
and 3), one weight and one centroid at a time, vs the vectorized code. Indices must agree exactly."""
import math

import numpy as np
import pytest

from ecqx_tf.assign import (
    EcqxInfo,
    cluster_probabilities,
    ecq_assign,
    ecq_costs,
    ecqx_assign,
    information,
    layer_lambda,
    nearest_assign,
)
from ecqx_tf.grid import GRID_KINDS, make_grid

SHAPES = [(240,), (16, 15), (3, 3, 4, 7), (2, 3, 3, 12)]


def _tensor(kind, shape, seed):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)
    if kind == "t2":  # heavy-tailed
        return (rng.standard_t(2, shape) * 0.02).astype(np.float32)
    if kind == "skewed":
        return (rng.laplace(0.02, 0.03, shape)).astype(np.float32)
    raise AssertionError(kind)


CASES = [(d, s, seed) for seed, s in enumerate(SHAPES) for d in ("normal", "t2", "skewed")]
CASE_IDS = [f"{d}-{'x'.join(map(str, s))}-{seed}" for d, s, seed in CASES]


def _relevance(w, seed):
    rng = np.random.default_rng(1000 + seed)
    return (np.abs(w) * rng.gamma(1.0, 1.0, w.shape) + 1e-4 * rng.random(w.shape)).astype(np.float32)


# ----------------------------------------------------------------------------- slow references
def ref_nearest(ws, cs):
    out = []
    for w in ws:
        best, best_k = None, None
        for k, c in enumerate(cs):
            d = w - c
            if best is None or d * d < best:
                best, best_k = d * d, k
        out.append(best_k)
    return out


def ref_probabilities(ws, cs, zero_bias=True):
    """P_c = n_c / N; if P_0 < 0.5: P_0 = 0.5 and the non-zero P rescaled to sum 0.5."""
    z = cs.index(0.0)
    counts = [0] * len(cs)
    for k in ref_nearest(ws, cs):
        counts[k] += 1
    P = [n / len(ws) for n in counts]
    if zero_bias and P[z] < 0.5:
        rest = sum(P[k] for k in range(len(cs)) if k != z)
        P = [0.5 if k == z else P[k] * 0.5 / rest for k in range(len(cs))]
    return P


def ref_information(P):
    return [math.inf if p == 0 else -math.log2(p) for p in P]


def ref_costs(ws, cs, lam, P):
    I = ref_information(P)
    rows = []
    for w in ws:
        row = []
        for k, c in enumerate(cs):
            d = w - c
            ent = 0.0 if lam == 0 else lam * I[k]
            row.append(d * d + ent)
        rows.append(row)
    return rows


def ref_argmin(row):
    best = 0
    for k in range(1, len(row)):
        if row[k] < row[best]:
            best = k
    return best


def ref_ecq(ws, cs, lam):
    P = ref_probabilities(ws, cs)
    return [ref_argmin(r) for r in ref_costs(ws, cs, lam, P)]


def ref_layer_lambda(ws, cs, Lambda, n_weights, n_largest, s=0.05, reduce="min"):
    z = cs.index(0.0)
    I = ref_information(ref_probabilities(ws, cs))
    used = set(ref_nearest(ws, cs))
    w_min, w_max = min(ws), max(ws)
    terms = []
    neg = [k for k in used if cs[k] < 0]
    if neg:
        n = min(neg, key=lambda k: cs[k])
        terms.append(max(0.0, (w_min**2 - (w_min - cs[n]) ** 2) / (I[n] - I[z])) if I[n] > I[z] else 0.0)
    pos = [k for k in used if cs[k] > 0]
    if pos:
        p = max(pos, key=lambda k: cs[k])
        terms.append(max(0.0, (w_max**2 - (w_max - cs[p]) ** 2) / (I[p] - I[z])) if I[p] > I[z] else 0.0)
    lam_max = (min(terms) if reduce == "min" else max(terms)) if terms else 0.0
    delta = (n_weights / n_largest + s) / (1 + s)
    return Lambda * delta * lam_max


def ref_ecqx(ws, cs, lam, rs, p=0.1, max_iter=50):
    """Spec section 3 step by step, with a full argmin over the adjusted costs each round."""
    z = cs.index(0.0)
    P = ref_probabilities(ws, cs)
    costs = ref_costs(ws, cs, lam, P)
    ecq = [ref_argmin(r) for r in costs]
    s_ecq = sum(1 for k in ecq if k == z) / len(ws)
    rmax = max(abs(r) for r in rs)
    rn = [abs(r) / (rmax + 1e-12) for r in rs]
    mean_rn = sum(rn) / len(rn)
    beta = math.log(0.5) / math.log(mean_rn) if 0 < mean_rn < 1 else 0.0
    beta0 = beta
    converged = False
    for t in range(1, max_iter + 1):
        idx = []
        for row, r in zip(costs, rn):
            adj = list(row)
            adj[z] = 0.0 if row[z] == 0 else row[z] * 2 * (r + 1e-12) ** beta
            idx.append(ref_argmin(adj))
        s_x = sum(1 for k in idx if k == z) / len(ws)
        if s_ecq - p <= s_x <= s_ecq:
            converged = True
            break
        if t == max_iter:
            break
        step = 0.1 if t <= 20 else (0.5 if t <= 40 else 0.75)
        sign = 1.0 if s_ecq - s_x > 0 else -1.0
        beta = min(1.0, beta * (1 + step * sign))
    return idx, dict(beta=beta, beta_initial=beta0, iterations=t, converged=converged,
                     sparsity_ecq=s_ecq, sparsity_ecqx=s_x)


def _py(w, grid):
    return [float(v) for v in np.asarray(w, np.float64).ravel()], [float(c) for c in np.asarray(grid, np.float64)]


def _lam(w, g, Lambda=0.05):
    return layer_lambda(w, g, Lambda, w.size, 2 * w.size)


# ----------------------------------------------------------------------------- nearest / P / I
@pytest.mark.parametrize("dist,shape,seed", CASES, ids=CASE_IDS)
def test_nearest_matches_reference(dist, shape, seed):
    w = _tensor(dist, shape, seed)
    for kind in GRID_KINDS:
        g = make_grid(w, 3 + seed % 3, kind)
        ws, cs = _py(w, g)
        idx = nearest_assign(w, g)
        assert idx.dtype == np.int32 and idx.shape == w.shape
        assert idx.ravel().tolist() == ref_nearest(ws, cs)


def test_nearest_ties_go_to_lowest_index():
    c = np.array([-1.0, 0.0, 1.0])
    w = np.array([-0.5, 0.5, 0.25, -0.75])
    assert nearest_assign(w, c).tolist() == [0, 1, 1, 0]
    assert nearest_assign(w, c).tolist() == np.argmin((w[:, None] - c[None, :]) ** 2, axis=1).tolist()


@pytest.mark.parametrize("dist,shape,seed", CASES[:6], ids=CASE_IDS[:6])
def test_probabilities_and_information_match_reference(dist, shape, seed):
    w = _tensor(dist, shape, seed)
    g = make_grid(w, 4)
    ws, cs = _py(w, g)
    for bias in (True, False):
        P = cluster_probabilities(w, g, zero_bias=bias)
        assert P.dtype == np.float64 and P.shape == (g.num_levels,)
        np.testing.assert_allclose(P, ref_probabilities(ws, cs, bias), rtol=1e-14, atol=0)
        I = information(P)
        ref = ref_information(ref_probabilities(ws, cs, bias))
        assert [math.isinf(v) for v in I] == [math.isinf(v) for v in ref]
        np.testing.assert_allclose(I[np.isfinite(I)], np.array(ref)[np.isfinite(ref)], rtol=1e-14)


def test_zero_bias():
    c = np.array([-1.0, 0.0, 1.0, 2.0])
    # nearest: 3 at -1, 1 at 0, 4 at 1, 2 at 2 -> P0 = 0.1 < 0.5
    w = np.array([-1, -1, -1, 0, 1, 1, 1, 1, 2, 2], dtype=np.float64)
    raw = cluster_probabilities(w, c, zero_bias=False)
    np.testing.assert_allclose(raw, [0.3, 0.1, 0.4, 0.2])
    P = cluster_probabilities(w, c)
    assert P[1] == 0.5
    assert P[[0, 2, 3]].sum() == pytest.approx(0.5, abs=1e-15)
    np.testing.assert_allclose(P[[0, 2, 3]] / P[[0, 2, 3]].sum(), [1 / 3, 4 / 9, 2 / 9])
    # P0 >= 0.5: unchanged
    w2 = np.array([0, 0, 0, 1, -1, 0.1])
    np.testing.assert_array_equal(cluster_probabilities(w2, c), cluster_probabilities(w2, c, zero_bias=False))
    # every weight at zero: P0 = 1, the non-zero P stay 0, no NaN
    P = cluster_probabilities(np.zeros(5), c)
    np.testing.assert_array_equal(P, [0, 1, 0, 0])
    assert information(P).tolist() == [math.inf, 0.0, math.inf, math.inf]
    assert math.copysign(1, information(P)[1]) == 1.0  # +0.0, not -0.0
    # no weight at zero at all: P0 = 0 -> 0.5
    P = cluster_probabilities(np.array([-1.0, 1.0, 1.0, 2.0]), c)
    np.testing.assert_allclose(P, [0.125, 0.5, 0.25, 0.125])


def test_information_values_and_errors():
    np.testing.assert_array_equal(information([1.0, 0.5, 0.25, 0.0]), [0.0, 1.0, 2.0, np.inf])
    with pytest.raises(ValueError, match="P"):
        information([0.5, 1.5])
    with pytest.raises(ValueError, match="P"):
        information([-0.1])
    with pytest.raises(ValueError, match="P"):
        information([np.nan])


# ----------------------------------------------------------------------------- layer lambda
@pytest.mark.parametrize("dist,shape,seed", CASES, ids=CASE_IDS)
def test_layer_lambda_matches_reference(dist, shape, seed):
    w = _tensor(dist, shape, seed)
    for kind in GRID_KINDS:
        g = make_grid(w, 2 + seed % 4, kind)
        ws, cs = _py(w, g)
        for reduce in ("min", "max"):
            for Lambda in (0.0, 0.05, 1.0):
                got = layer_lambda(w, g, Lambda, w.size, 3 * w.size, reduce=reduce)
                ref = ref_layer_lambda(ws, cs, Lambda, w.size, 3 * w.size, reduce=reduce)
                assert isinstance(got, float) and got >= 0
                assert got == pytest.approx(ref, rel=1e-12, abs=0)
        lo = layer_lambda(w, g, 0.05, w.size, w.size, reduce="min")
        hi = layer_lambda(w, g, 0.05, w.size, w.size, reduce="max")
        assert 0 <= lo <= hi


def test_layer_lambda_delta_and_scaling():
    w = _tensor("normal", (200,), 0)
    g = make_grid(w, 4)
    full = layer_lambda(w, g, 1.0, 100, 100)
    assert layer_lambda(w, g, 1.0, 50, 100) == pytest.approx(full * (0.5 + 0.05) / 1.05)
    assert layer_lambda(w, g, 1.0, 100, 100, s=0.0) == pytest.approx(full)
    assert layer_lambda(w, g, 2.0, 100, 100) == pytest.approx(2 * full)
    assert layer_lambda(w, g, 0.0, 100, 100) == 0.0
    assert full > 0


def test_layer_lambda_edge_cases():
    c = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    # only positive centroids used: the n term is absent, the p term alone decides
    w = np.array([0.0, 0.0, 0.0, 0.9, 1.1, 2.2])
    ws, cs = _py(w, c)
    I = ref_information(ref_probabilities(ws, cs))
    expect = (2.2**2 - (2.2 - 2.0) ** 2) / (I[4] - I[2])
    for reduce in ("min", "max"):
        assert layer_lambda(w, c, 1.0, 6, 6, s=0.0, reduce=reduce) == pytest.approx(expect)
    assert layer_lambda(-w, c, 1.0, 6, 6, s=0.0) == pytest.approx(expect)
    # no non-zero centroid used -> 0
    assert layer_lambda(np.array([0.1, -0.2, 0.0]), c, 1.0, 3, 3) == 0.0
    assert layer_lambda(np.zeros((2, 2)), c, 1.0, 4, 4) == 0.0
    # I_n == I_0 (P_n = P_0 = 0.5): the entropy term cannot separate them -> 0, no NaN
    assert layer_lambda(np.array([0.0, -1.0]), c, 1.0, 2, 2) == 0.0
    assert layer_lambda(np.array([0.0, -1.0]), c, 1.0, 2, 2, reduce="max") == 0.0
    # single-value tensors
    for v in (0.7, -0.7, 0.0):
        lam = layer_lambda(np.full(9, v), c, 1.0, 9, 9)
        assert math.isfinite(lam) and lam >= 0


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        (dict(Lambda=-0.1), ValueError, "Lambda"),
        (dict(Lambda=float("nan")), ValueError, "Lambda"),
        (dict(Lambda="0.1"), TypeError, "Lambda"),
        (dict(Lambda=True), TypeError, "Lambda"),
        (dict(n_weights=0), ValueError, "n_weights"),
        (dict(n_weights=2.0), TypeError, "n_weights"),
        (dict(n_largest=5), ValueError, "n_largest"),
        (dict(s=-1.0), ValueError, "s must"),
        (dict(reduce="mean"), ValueError, "reduce"),
    ],
)
def test_layer_lambda_bad_arguments(kwargs, exc, msg):
    w = _tensor("normal", (10,), 0)
    args = dict(Lambda=0.05, n_weights=10, n_largest=10)
    args.update(kwargs)
    with pytest.raises(exc, match=msg):
        layer_lambda(w, make_grid(w, 3), **args)


# ----------------------------------------------------------------------------- ECQ
@pytest.mark.parametrize("dist,shape,seed", CASES, ids=CASE_IDS)
def test_ecq_matches_reference(dist, shape, seed):
    w = _tensor(dist, shape, seed)
    for kind in GRID_KINDS:
        g = make_grid(w, 2 + seed % 4, kind)
        ws, cs = _py(w, g)
        for Lambda in (0.02, 0.2, 1.0):
            lam = _lam(w, g, Lambda)
            idx = ecq_assign(w, g, lam)
            assert idx.dtype == np.int32 and idx.shape == w.shape
            assert idx.ravel().tolist() == ref_ecq(ws, cs, lam)


@pytest.mark.parametrize("dist,shape,seed", CASES[:6], ids=CASE_IDS[:6])
def test_ecq_costs_match_reference(dist, shape, seed):
    w = _tensor(dist, shape, seed)
    g = make_grid(w, 4)
    ws, cs = _py(w, g)
    lam = _lam(w, g, 0.5)
    C = ecq_costs(w, g, lam)
    assert C.shape == (w.size, g.num_levels) and C.dtype == np.float64
    ref = np.array(ref_costs(ws, cs, lam, ref_probabilities(ws, cs)))
    assert np.array_equal(np.isinf(C), np.isinf(ref))
    np.testing.assert_allclose(C[np.isfinite(C)], ref[np.isfinite(ref)], rtol=1e-13)
    np.testing.assert_array_equal(np.argmin(C, axis=1).astype(np.int32), ecq_assign(w, g, lam).ravel())
    # explicit P
    P = np.full(g.num_levels, 1.0 / g.num_levels)
    d2 = (w.astype(np.float64).reshape(-1, 1) - np.asarray(g, np.float64)) ** 2
    np.testing.assert_allclose(ecq_costs(w, g, lam, P=P), d2 + lam * math.log2(g.num_levels), rtol=1e-14)


@pytest.mark.parametrize("dist,shape,seed", CASES, ids=CASE_IDS)
def test_lambda_zero_is_nearest_exactly(dist, shape, seed):
    w = _tensor(dist, shape, seed)
    for kind in GRID_KINDS:
        for bits in (2, 4, 8):
            g = make_grid(w, bits, kind)
            np.testing.assert_array_equal(ecq_assign(w, g, 0.0), nearest_assign(w, g))
            np.testing.assert_array_equal(ecq_costs(w, g, 0.0), ((w.astype(np.float64).reshape(-1, 1) - np.asarray(g, np.float64)) ** 2))


def test_lambda_zero_ties_and_empty_clusters():
    c = np.array([-1.0, 0.0, 1.0, 2.0, 3.0])  # 2.0 and 3.0 are empty
    w = np.array([-0.5, 0.5, 0.5, 0.0, -1.0, 1.5])  # midpoints: ties
    assert ecq_assign(w, c, 0.0).tolist() == nearest_assign(w, c).tolist() == [0, 1, 1, 1, 0, 2]
    C = ecq_costs(w, c, 0.0)
    assert np.all(np.isfinite(C))
    C = ecq_costs(w, c, 0.3)
    assert np.all(np.isinf(C[:, 4])) and np.all(np.isfinite(C[:, :3]))
    for lam in (1e-6, 0.01, 0.3, 10.0, 1e6):
        idx = ecq_assign(w, c, lam)
        assert not np.isin(idx, [4]).any()  # P = 0: never chosen
        assert ecqx_assign(w, c, lam, np.abs(w) + 0.1).max() < 4


def test_empty_clusters_never_chosen_random():
    rng = np.random.default_rng(7)
    w = rng.standard_normal(300) * 0.01
    c = np.linspace(-1.0, 1.0, 21)  # far outer centroids unused
    P = cluster_probabilities(w, c)
    empty = np.flatnonzero(P == 0)
    assert empty.size > 0
    for lam in (1e-8, 1e-5, 1e-3):
        assert not np.isin(ecq_assign(w, c, lam), empty).any()
        assert not np.isin(ecqx_assign(w, c, lam, rng.random(300)), empty).any()


def test_larger_Lambda_never_less_sparse():
    for dist in ("normal", "t2", "skewed"):
        w = _tensor(dist, (30, 20), 3)
        for kind in GRID_KINDS:
            g = make_grid(w, 4, kind)
            sp = [np.mean(ecq_assign(w, g, _lam(w, g, L)) == g.zero_index) for L in (0, 0.01, 0.05, 0.2, 1, 5)]
            assert all(a <= b for a, b in zip(sp, sp[1:])), sp
            assert sp[-1] > sp[0]


# ----------------------------------------------------------------------------- ECQx
@pytest.mark.parametrize("dist,shape,seed", CASES, ids=CASE_IDS)
def test_ecqx_matches_reference(dist, shape, seed):
    w = _tensor(dist, shape, seed)
    r = _relevance(w, seed)
    for kind in GRID_KINDS:
        g = make_grid(w, 3 + seed % 3, kind)
        ws, cs = _py(w, g)
        rs = [float(v) for v in r.astype(np.float64).ravel()]
        for Lambda, p in ((0.05, 0.1), (0.5, 0.05), (2.0, 0.02)):
            lam = _lam(w, g, Lambda)
            idx, info = ecqx_assign(w, g, lam, r, p=p, return_info=True)
            ref_idx, ref_info = ref_ecqx(ws, cs, lam, rs, p=p)
            assert idx.dtype == np.int32 and idx.shape == w.shape
            assert idx.ravel().tolist() == ref_idx
            assert isinstance(info, EcqxInfo)
            assert info.iterations == ref_info["iterations"]
            assert info.converged == ref_info["converged"]
            assert info.sparsity_ecq == ref_info["sparsity_ecq"]
            assert info.sparsity_ecqx == ref_info["sparsity_ecqx"]
            assert info.beta == pytest.approx(ref_info["beta"], rel=1e-12)
            assert info.beta_initial == pytest.approx(ref_info["beta_initial"], rel=1e-12)
            np.testing.assert_array_equal(ecqx_assign(w, g, lam, r, p=p), idx)


@pytest.mark.parametrize(
    "dist,seed,Lambda,max_iter,expect_iter,expect_conv",
    [
        ("skewed", 0, 0.05, 50, 50, False),  # all three step sizes, never in the band
        ("skewed", 0, 0.05, 7, 7, False),  # max_iter respected
        ("t2", 12, 0.3, 50, 21, True),  # converges right after the first step change
        ("normal", 35, 1.0, 50, 49, True),  # converges with the 0.75 step
    ],
)
def test_ecqx_reference_long_search(dist, seed, Lambda, max_iter, expect_iter, expect_conv):
    """Searches through all three step sizes (p = 0: the ECQ sparsity must be hit exactly)."""
    w = _tensor(dist, (200,), seed)
    r = _relevance(w, seed)
    g = make_grid(w, 4)
    lam = _lam(w, g, Lambda)
    ws, cs = _py(w, g)
    rs = [float(v) for v in r.astype(np.float64).ravel()]
    idx, info = ecqx_assign(w, g, lam, r, p=0.0, max_iter=max_iter, return_info=True)
    ref_idx, ref_info = ref_ecqx(ws, cs, lam, rs, p=0.0, max_iter=max_iter)
    assert idx.tolist() == ref_idx
    assert (info.iterations, info.converged) == (ref_info["iterations"], ref_info["converged"])
    assert (info.iterations, info.converged) == (expect_iter, expect_conv)
    assert info.beta == pytest.approx(ref_info["beta"], rel=1e-12)
    assert info.sparsity_ecqx == ref_info["sparsity_ecqx"] == np.mean(idx == g.zero_index)


def _ecq_nonzero_best(w, g, lam):
    C = ecq_costs(w, g, lam).copy()
    C[:, g.zero_index] = np.inf
    return np.argmin(C, axis=1).reshape(w.shape)


@pytest.mark.parametrize("dist,shape,seed", CASES, ids=CASE_IDS)
def test_ecqx_invariants(dist, shape, seed):
    w = _tensor(dist, shape, seed)
    rng = np.random.default_rng(seed)
    for kind in GRID_KINDS:
        g = make_grid(w, 4, kind)
        z = g.zero_index
        for Lambda in (0.02, 0.2, 1.0):
            lam = _lam(w, g, Lambda)
            ecq = ecq_assign(w, g, lam)
            best_nz = _ecq_nonzero_best(w, g, lam)
            for r in (_relevance(w, seed), rng.random(w.shape), rng.standard_normal(w.shape)):
                for p in (0.0, 0.05, 0.1, 0.5):
                    x, info = ecqx_assign(w, g, lam, r, p=p, return_info=True)
                    both_nz = (ecq != z) & (x != z)
                    np.testing.assert_array_equal(x[both_nz], ecq[both_nz])  # same non-zero centroid
                    regrown = (ecq == z) & (x != z)
                    np.testing.assert_array_equal(x[regrown], best_nz[regrown])  # cheapest non-zero
                    pruned = (ecq != z) & (x == z)
                    assert np.all(x[~both_nz & ~regrown & ~pruned] == z)
                    s_x = np.mean(x == z)
                    assert s_x == info.sparsity_ecqx
                    assert info.sparsity_ecq == np.mean(ecq == z)
                    if info.converged:
                        assert info.sparsity_ecq - p <= s_x <= info.sparsity_ecq  # never sparser
                    assert 1 <= info.iterations <= 50
                    assert math.isfinite(info.beta)


def test_ecqx_prefers_relevant_weights():
    """Among weights ECQ prunes or keeps, high relevance keeps and low relevance prunes."""
    w = _tensor("normal", (400,), 5)
    g = make_grid(w, 3)
    lam = _lam(w, g, 0.3)
    rng = np.random.default_rng(0)
    r = rng.random(w.shape)
    x, info = ecqx_assign(w, g, lam, r, return_info=True)
    ecq = ecq_assign(w, g, lam)
    z = g.zero_index
    assert info.converged
    regrown, pruned = (ecq == z) & (x != z), (ecq != z) & (x == z)
    assert regrown.any() or pruned.any()
    if regrown.any() and pruned.any():
        assert r[regrown].mean() > r[pruned].mean()


def test_ecqx_degenerate_relevance():
    w = _tensor("normal", (300,), 2)
    g = make_grid(w, 4)
    lam = _lam(w, g, 0.2)
    ecq = ecq_assign(w, g, lam)
    z = g.zero_index
    for r in (np.zeros(w.shape), np.full(w.shape, 0.3), np.full(w.shape, -5.0), np.full(w.shape, 1e20)):
        x1, info = ecqx_assign(w, g, lam, r, return_info=True)
        x2, info2 = ecqx_assign(w, g, lam, r, return_info=True)
        np.testing.assert_array_equal(x1, x2)
        assert info == info2
        assert all(math.isfinite(v) for v in (info.beta, info.beta_initial, info.sparsity_ecqx))
        assert np.mean(x1 == z) <= np.mean(ecq == z)  # a doubled zero cost only regrows
        ws, cs = _py(w, g)
        ref_idx, ref_info = ref_ecqx(ws, cs, lam, [float(v) for v in r.ravel()])
        assert x1.tolist() == ref_idx and info.iterations == ref_info["iterations"]
    # all-zero and float-saturated constant relevance: beta_0 = 0, factor exactly 2
    for r in (np.zeros(w.shape), np.full(w.shape, 1e20)):
        _, info = ecqx_assign(w, g, lam, r, return_info=True)
        assert info.beta_initial == 0.0 and info.beta == 0.0
        C = ecq_costs(w, g, lam).copy()
        C[:, z] *= 2
        np.testing.assert_array_equal(ecqx_assign(w, g, lam, r), np.argmin(C, axis=1))


@pytest.mark.parametrize("kind", GRID_KINDS)
def test_degenerate_tensors_no_nan(kind):
    rng = np.random.default_rng(0)
    tensors = {
        "zeros": np.zeros((5, 4), np.float32),
        "positive": np.abs(rng.standard_normal((5, 4))).astype(np.float32),
        "negative": -np.abs(rng.standard_normal((3, 3, 2, 2))).astype(np.float32),
        "single": np.full((7,), 0.25, np.float32),
        "single_neg": np.full((2, 5), -0.4, np.float32),
        "one": np.array([0.3], np.float32),
    }
    for name, w in tensors.items():
        g = make_grid(w, 4, kind)
        assert np.all(np.isfinite(g.centroids)) and g.step > 0, name
        for Lambda in (0.0, 0.05, 5.0):
            lam = layer_lambda(w, g, Lambda, w.size, w.size)
            assert math.isfinite(lam) and lam >= 0, name
            e = ecq_assign(w, g, lam)
            x, info = ecqx_assign(w, g, lam, np.abs(w), return_info=True)
            for idx in (e, x, nearest_assign(w, g)):
                assert idx.shape == w.shape and idx.min() >= 0 and idx.max() < g.num_levels
            assert math.isfinite(info.beta)
            assert np.all(np.isfinite(cluster_probabilities(w, g)))
            C = ecq_costs(w, g, lam)
            assert not np.isnan(C).any()
            if name == "zeros":
                assert np.all(e == g.zero_index) and np.all(x == g.zero_index)
        if name == "positive" and kind == "paper":
            assert g.levels.min() == 0
            assert np.all(g.levels[nearest_assign(w, g)] >= 0)


def test_only_zero_centroid():
    w = np.array([0.5, -0.5])
    assert ecq_assign(w, [0.0], 1.0).tolist() == [0, 0]
    assert ecqx_assign(w, [0.0], 1.0, [1.0, 0.1]).tolist() == [0, 0]


def test_any_shape_and_grid_or_array():
    rng = np.random.default_rng(4)
    for shape in [(), (5,), (4, 3), (2, 3, 4), (3, 3, 2, 4), (2, 2, 2, 2, 2)]:
        w = rng.standard_normal(shape) * 0.1
        g = make_grid(w, 3)
        c = np.asarray(g)
        lam = layer_lambda(w, g, 0.1, max(w.size, 1), max(w.size, 1))
        r = rng.random(shape)
        for fn, args in ((nearest_assign, ()), (ecq_assign, (lam,)), (ecqx_assign, (lam, r))):
            a = fn(w, g, *args)
            b = fn(w.ravel(), c, *[np.ravel(x) if isinstance(x, np.ndarray) else x for x in args])
            assert a.shape == np.shape(w) and a.dtype == np.int32
            np.testing.assert_array_equal(a.ravel(), b)


# ----------------------------------------------------------------------------- errors
def test_bad_arguments():
    w = _tensor("normal", (6, 5), 0)
    g = make_grid(w, 4)
    r = np.abs(w)
    with pytest.raises(ValueError, match="lam"):
        ecq_assign(w, g, -0.1)
    with pytest.raises(ValueError, match="lam"):
        ecqx_assign(w, g, float("inf"), r)
    with pytest.raises(TypeError, match="lam"):
        ecq_costs(w, g, "1")
    for p in (-0.01, 1.01, float("nan")):
        with pytest.raises(ValueError, match="p must"):
            ecqx_assign(w, g, 0.1, r, p=p)
    with pytest.raises(TypeError, match="p must"):
        ecqx_assign(w, g, 0.1, r, p="0.1")
    with pytest.raises(ValueError, match="relevance must have the shape"):
        ecqx_assign(w, g, 0.1, r.T)
    with pytest.raises(ValueError, match="relevance must have the shape"):
        ecqx_assign(w, g, 0.1, r.ravel())
    with pytest.raises(ValueError, match="relevance must be finite"):
        ecqx_assign(w, g, 0.1, np.where(r > 0.05, np.nan, r))
    with pytest.raises(ValueError, match="max_iter"):
        ecqx_assign(w, g, 0.1, r, max_iter=0)
    with pytest.raises(TypeError, match="max_iter"):
        ecqx_assign(w, g, 0.1, r, max_iter=2.5)
    for fn, extra in ((nearest_assign, ()), (ecq_assign, (0.1,)), (ecqx_assign, (0.1, np.ones(0))),
                      (cluster_probabilities, ()), (ecq_costs, (0.1,))):
        with pytest.raises(ValueError, match="w must not be empty"):
            fn(np.zeros((0, 3)), g, *extra)
    bad = w.copy()
    bad[1, 1] = np.nan
    for fn, extra in ((nearest_assign, ()), (ecq_assign, (0.1,)), (ecqx_assign, (0.1, r)),
                      (cluster_probabilities, ()), (ecq_costs, (0.1,))):
        with pytest.raises(ValueError, match="w must be finite"):
            fn(bad, g, *extra)
    with pytest.raises(ValueError, match="w must be finite"):
        layer_lambda(bad, g, 0.1, 30, 30)
    with pytest.raises(TypeError, match="w must be a real"):
        ecq_assign(np.array(["a"]), g, 0.1)
    with pytest.raises(ValueError, match="contain the value 0"):
        ecq_assign(w, [-1.0, 1.0], 0.1)
    with pytest.raises(ValueError, match="distinct"):
        nearest_assign(w, [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        nearest_assign(w, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="centroids must not be empty"):
        nearest_assign(w, [])
    with pytest.raises(ValueError, match="P must have shape"):
        ecq_costs(w, g, 0.1, P=np.ones(3) / 3)


# ----------------------------------------------------------------------------- full search
def test_ecqx_full_search_all_rounds_fast_equals_reference():
    """235,146 weights, 15 centroids, all 50 beta rounds (p = 0): the linear-time path of
    ecqx_tf.assign_fast gives the same indices and EcqxInfo. (Speed is measured by
    bench/scale.py, not here.)"""
    from ecqx_tf.assign_fast import ecqx_assign_fast

    rng = np.random.default_rng(0)
    w = (rng.standard_normal(235146) * 0.05).astype(np.float32)
    r = np.abs(w) * rng.random(w.shape)
    g = make_grid(w, 4)
    lam = _lam(w, g, 0.05)
    idx, info = ecqx_assign(w, g, lam, r, p=0.0, return_info=True)
    assert info.iterations == 50 and not info.converged
    fidx, finfo = ecqx_assign_fast(w, g, lam, r, p=0.0, return_info=True)
    np.testing.assert_array_equal(idx, fidx)
    assert info == finfo
