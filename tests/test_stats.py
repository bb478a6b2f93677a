"""ecqx_tf.stats: slow references (per index loops) vs the vectorized measurements."""
import math

import numpy as np
import pytest

from ecqx_tf.assign import ecq_assign, layer_lambda
from ecqx_tf.grid import GRID_KINDS, make_grid
from ecqx_tf.stats import index_entropy, kernel_stats, sparsity, used_centroids


def ref_entropy(indices, num_levels):
    counts = [0] * num_levels
    flat = [int(i) for i in np.ravel(indices)]
    for i in flat:
        counts[i] += 1
    h = 0.0
    for n in counts:
        if n:
            p = n / len(flat)
            h -= p * math.log2(p)
    return h


@pytest.mark.parametrize("shape", [(1,), (50,), (6, 7), (3, 3, 2, 5), (2, 2, 3, 3)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_measurements_match_reference(shape, seed):
    rng = np.random.default_rng(seed)
    k = 15
    idx = rng.integers(0, k, shape).astype(np.int32)
    idx[rng.random(shape) < 0.5] = 7
    flat = [int(i) for i in idx.ravel()]
    assert sparsity(idx, 7) == sum(1 for i in flat if i == 7) / len(flat)
    assert index_entropy(idx, k) == pytest.approx(ref_entropy(idx, k), rel=1e-12, abs=1e-15)
    assert used_centroids(idx) == len(set(flat))


def test_entropy_bounds_and_special_values():
    assert index_entropy(np.full((4, 4), 3), 8) == 0.0
    assert math.copysign(1.0, index_entropy(np.zeros(5, np.int64), 1)) == 1.0  # +0.0
    assert index_entropy(np.arange(16), 16) == pytest.approx(4.0)
    assert index_entropy(np.array([0, 1]), 3) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 9, 1000)
    assert 0.0 < index_entropy(idx, 9) <= math.log2(9)
    # num_levels only bounds the indices; unused levels do not change the entropy
    assert index_entropy(idx, 9) == index_entropy(idx, 200)


@pytest.mark.parametrize("kind", GRID_KINDS)
def test_kernel_stats(kind):
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((3, 3, 4, 8)) * 0.05).astype(np.float32)
    g = make_grid(w, 4, kind)
    idx = ecq_assign(w, g, layer_lambda(w, g, 0.2, w.size, w.size))
    st = kernel_stats(idx, g)
    assert set(st) == {"bits", "kind", "step", "num_levels", "n_weights", "sparsity", "entropy", "used_centroids"}
    assert st["bits"] == 4 and st["kind"] == kind and st["step"] == g.step
    assert st["num_levels"] == g.num_levels and st["n_weights"] == w.size
    assert st["sparsity"] == np.mean(g.integers(idx) == 0)
    assert st["entropy"] == pytest.approx(ref_entropy(idx, g.num_levels))
    assert st["used_centroids"] == len(np.unique(idx))
    assert 0 < st["sparsity"] < 1


def test_bad_arguments():
    g = make_grid(np.linspace(-1, 1, 20), 3)
    with pytest.raises(TypeError, match="indices"):
        sparsity(np.array([0.0, 1.0]), 0)
    with pytest.raises(TypeError, match="indices"):
        used_centroids(np.array([True]))
    with pytest.raises(ValueError, match="empty"):
        index_entropy(np.zeros(0, np.int32), 3)
    with pytest.raises(ValueError, match="num_levels"):
        index_entropy(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match=">= 0"):
        index_entropy(np.array([-1, 0]), 3)
    with pytest.raises(ValueError, match="num_levels"):
        index_entropy(np.array([0]), 0)
    with pytest.raises(TypeError, match="zero_index"):
        sparsity(np.array([0, 1]), 1.0)
    with pytest.raises(ValueError, match="zero_index"):
        sparsity(np.array([0, 1]), -1)
    with pytest.raises(TypeError, match="grid"):
        kernel_stats(np.array([0, 1]), np.asarray(g))
    with pytest.raises(ValueError, match="num_levels"):
        kernel_stats(np.array([0, 7]), g)
