"""ecqx_tf.rate_control: the warm-up ramp and the sparsity target, against their formulas and the
reference ECQ assignment (ecqx_tf.assign.ecq_assign) one weight at a time."""
import math

import numpy as np
import pytest

from ecqx_tf.assign import cluster_probabilities, ecq_assign, information, layer_lambda
from ecqx_tf.grid import make_grid
from ecqx_tf.rate_control import Lambda_for_model_sparsity, lambda_for_sparsity, ramp, sparsity_targets, zero_thresholds


def _w(seed, n=3000, kind="normal"):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return (rng.standard_normal(n) * 0.05).astype(np.float32)
    return (rng.laplace(0.01, 0.03, n)).astype(np.float32)


@pytest.mark.parametrize("T,k", [(10, 3.0), (7, 1.0), (100, 2.5)])
def test_ramp_formula(T, k):
    for t in range(0, T + 5):
        f = min(1.0, t / T)
        assert ramp(t, T, k) == pytest.approx(1.0 - (1.0 - f) ** k, abs=1e-15)
    assert ramp(0, T, k) == 0.0 and ramp(T, T, k) == 1.0 and ramp(10 * T, T, k) == 1.0


def test_ramp_off_and_bad_input():
    assert ramp(0, 0) == 1.0 and ramp(5, 0) == 1.0
    for bad in (dict(step=-1, ramp_steps=3), dict(step=1, ramp_steps=-2), dict(step=1.5, ramp_steps=3),
                dict(step=1, ramp_steps=3, power=0.0)):
        with pytest.raises(ValueError):
            ramp(**bad)


@pytest.mark.parametrize("bits,kind,seed", [(2, "normal", 0), (3, "laplace", 1), (4, "normal", 2), (4, "laplace", 3)])
def test_zero_thresholds_against_the_definition(bits, kind, seed):
    w = _w(seed, 400, kind)
    g = make_grid(w, bits, "symmetric")
    c = np.asarray(g.centroids, np.float64)
    P = cluster_probabilities(w, c)
    I = information(P)
    z = int(np.flatnonzero(c == 0)[0])
    t = zero_thresholds(w, c)
    for i, x in enumerate(w.astype(np.float64)):
        taus = []
        for k in range(c.size):
            if k == z or P[k] == 0:
                continue
            gk = x * x - (x - c[k]) * (x - c[k])
            d = I[k] - I[z]
            taus.append(gk / d if d > 0 else (math.inf if gk > 0 else -math.inf))
        want = max(taus) if taus else -math.inf
        assert t[i] == pytest.approx(want, rel=1e-12, abs=1e-18)
    # the threshold is where the reference ECQ assignment switches this weight to zero
    finite = np.flatnonzero(np.isfinite(t) & (t > 1e-12))
    for i in finite[:: max(1, finite.size // 40)]:
        above = ecq_assign(w, c, t[i] * (1 + 1e-6))
        below = ecq_assign(w, c, t[i] * (1 - 1e-6))
        assert above.reshape(-1)[i] == z
        assert below.reshape(-1)[i] != z


@pytest.mark.parametrize("bits,kind,seed", [(2, "normal", 4), (3, "laplace", 5), (4, "normal", 6), (5, "laplace", 7)])
@pytest.mark.parametrize("target", [0.0, 0.3, 0.8, 0.9, 0.95, 0.999])
def test_lambda_for_sparsity_is_the_smallest_lambda_reaching_the_target(bits, kind, seed, target):
    w = _w(seed, 3000, kind)
    c = make_grid(w, bits, "symmetric").centroids
    lam = lambda_for_sparsity(w, c, target)
    z = int(np.flatnonzero(np.asarray(c) == 0)[0])
    need = math.ceil(target * w.size - 1e-9)
    zeros = int(np.sum(ecq_assign(w, c, lam) == z))
    assert zeros >= need
    if lam > 0:  # a slightly smaller lambda misses the target: it is the smallest one
        assert int(np.sum(ecq_assign(w, c, lam * (1 - 1e-6)) == z)) < need
        # and it is exact up to ties: the k-th smallest threshold is hit, not overshot
        assert zeros <= need + 2
    else:  # the nearest-neighbour assignment already reaches the target
        assert int(np.sum(ecq_assign(w, c, 0.0) == z)) >= need


def test_lambda_for_sparsity_unreachable_and_bad_target():
    w = _w(8, 500)
    c = make_grid(w, 4, "symmetric").centroids
    lam = lambda_for_sparsity(w, c, 1.0)
    assert np.all(ecq_assign(w, c, lam) == int(np.flatnonzero(np.asarray(c) == 0)[0]))
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="target"):
            lambda_for_sparsity(w, c, bad)


def test_sparsity_targets_mapping():
    assert sparsity_targets(None, ["a", "b"]) is None
    assert sparsity_targets(0.9, ["a", "b"]) == {"a": 0.9, "b": 0.9}
    assert sparsity_targets({"b": 0.5}, ["a", "b"]) == {"a": None, "b": 0.5}
    with pytest.raises(ValueError, match="does not quantize"):
        sparsity_targets({"c": 0.5}, ["a", "b"])
    with pytest.raises(ValueError, match="'a'"):
        sparsity_targets({"a": 2.0}, ["a", "b"])


@pytest.mark.parametrize("bits,target", [(2, 0.9), (4, 0.8), (4, 0.95), (3, 0.5)])
def test_Lambda_for_model_sparsity_keeps_the_papers_allocation(bits, target):
    ws = [_w(10, 4000), _w(11, 900, "laplace"), _w(12, 60)]
    ks = [(w, make_grid(w, bits, "symmetric").centroids) for w in ws]
    n_largest = 4000
    Lam = Lambda_for_model_sparsity(ks, target, n_largest)

    def zeros(L):
        out = 0
        for w, c in ks:
            lam = layer_lambda(w, c, L, w.size, n_largest)  # the paper's layer lambda
            out += int(np.sum(ecq_assign(w, c, lam) == int(np.flatnonzero(np.asarray(c) == 0)[0])))
        return out

    need = math.ceil(target * sum(w.size for w in ws) - 1e-9)
    got = zeros(Lam)
    assert got >= need
    if Lam > 0:
        assert zeros(Lam * (1 - 1e-6)) < need
        assert got <= need + 2


def test_Lambda_for_model_sparsity_errors():
    with pytest.raises(ValueError, match="at least one"):
        Lambda_for_model_sparsity([], 0.5)
    w = _w(1, 50)
    with pytest.raises(ValueError, match="target"):
        Lambda_for_model_sparsity([(w, make_grid(w, 4, "symmetric").centroids)], 1.2)


@pytest.mark.parametrize("bits,target,cap", [(3, 0.9, 0.93), (4, 0.95, 0.97), (2, 0.8, 0.85)])
def test_Lambda_for_model_sparsity_with_a_layer_cap(bits, target, cap):
    """With max_layer_sparsity each layer's lambda is min(paper's lambda at Lambda, the lambda of
    floor(cap N_l) zeros): no layer exceeds the cap, the model still gets its ceil(S N) zeros, and
    Lambda is the smallest that does."""
    from ecqx_tf.rate_control import lambda_for_layer_cap

    ws = [_w(10, 4000), _w(11, 900, "laplace"), _w(12, 60)]
    ks = [(w, make_grid(w, bits, "symmetric").centroids) for w in ws]
    n_largest = 4000

    def layer_zeros(L, with_cap):
        out = []
        for w, c in ks:
            lam = layer_lambda(w, c, L, w.size, n_largest)
            if with_cap:
                lam = min(lam, lambda_for_layer_cap(w, c, cap))
            out.append(int(np.sum(ecq_assign(w, c, lam) == int(np.flatnonzero(np.asarray(c) == 0)[0]))))
        return out

    need = math.ceil(target * sum(w.size for w in ws) - 1e-9)
    nn = layer_zeros(0.0, False)  # zero at lambda = 0: no cap removes them
    limit = [max(math.floor(cap * w.size), z) for w, z in zip(ws, nn)]
    free = layer_zeros(Lambda_for_model_sparsity(ks, target, n_largest), False)
    assert free[0] > math.floor(cap * 4000)  # the paper's allocation alone overfills the largest layer
    Lam = Lambda_for_model_sparsity(ks, target, n_largest, max_layer_sparsity=cap)
    got = layer_zeros(Lam, True)
    assert all(z <= m for z, m in zip(got, limit)), (got, limit)
    assert got[0] == limit[0]
    assert sum(got) >= need
    if Lam > 0:  # (0: the nearest-neighbour zeros already meet the target)
        assert sum(layer_zeros(Lam * (1 - 1e-6), True)) < need
    # a target above what the caps allow: every layer filled to its cap
    full = layer_zeros(Lambda_for_model_sparsity(ks, 1.0, n_largest, max_layer_sparsity=cap), True)
    assert full == limit
    assert lambda_for_layer_cap(ws[0], ks[0][1], 1.0) == math.inf
    with pytest.raises(ValueError, match="target"):
        Lambda_for_model_sparsity(ks, 0.5, n_largest, max_layer_sparsity=1.5)
