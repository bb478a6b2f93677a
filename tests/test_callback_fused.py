"""The training callback's fused relevance path (mirror sync, LRP, moving average in one
``tf.function``) gives exactly the values of the NumPy path it replaces, and so the same indices."""
import numpy as np
import pytest
import tensorflow as tf

import ecqx_tf
from ecqx_tf import assign
from ecqx_tf.keras.api import ecq_layers


def _model():
    tf.keras.utils.set_random_seed(3)
    i = tf.keras.Input((8, 8, 1))
    h = tf.keras.layers.Conv2D(4, 3, activation="relu", name="c1")(i)
    h = tf.keras.layers.Flatten(name="f")(h)
    h = tf.keras.layers.Dense(24, activation="relu", name="d1")(h)
    return tf.keras.Model(i, tf.keras.layers.Dense(5, name="d2")(h))


def _state(slots):
    return [(s.kernel.numpy().copy(), s.indices.numpy().copy(), s.relevance.numpy().copy()) for s in slots]


def _restore(slots, state):
    for s, (k, i, r) in zip(slots, state):
        s.kernel.assign(k)
        s.indices.assign(i)
        s.relevance.assign(r)


@pytest.mark.parametrize("batch", [40, 150])  # one LRP chunk; three chunks (64 + 64 + 22) summed
def test_fused_relevance_equals_numpy_path(batch):
    m = _model()
    rng = np.random.default_rng(0)
    x = rng.random((300, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 5, 300)
    q = ecqx_tf.quantize(m, bits=4, method="ecqx", Lambda=0.1, p=0.1, relevance_data=(x, y))
    slots = ecq_layers(q)
    fused = ecqx_tf.ECQxCallback(relevance_batch_size=batch, alpha=0.3, seed=5)
    plain = ecqx_tf.ECQxCallback(relevance_batch_size=batch, alpha=0.3, seed=5)
    plain._fuse_relevance = False
    for cb in (fused, plain):
        cb.set_model(q)
        cb.on_train_begin()
    n_largest = max(s.kernel.numpy().size for s in slots)
    for step in range(5):
        if step == 3:  # a new epoch restarts the moving average
            fused.on_epoch_begin(1)
            plain.on_epoch_begin(1)
        for s in slots:  # the optimizer moved the float kernels
            w = s.kernel.numpy()
            s.kernel.assign(w + rng.normal(0, 0.05 * np.std(w), w.shape).astype(np.float32))
        before = _state(slots)
        plain.refresh()
        want = _state(slots)
        _restore(slots, before)
        fused.refresh()
        got = _state(slots)
        for s, (_, wi, wr), (_, gi, gr) in zip(slots, want, got):
            np.testing.assert_array_equal(gr, wr, err_msg=f"relevance of {s.name}, refresh {step}")
            np.testing.assert_array_equal(gi, wi, err_msg=f"indices of {s.name}, refresh {step}")
            assert np.any(gr != 0)
            w, c = s.kernel.numpy(), s.centroids.numpy()
            lam = assign.layer_lambda(w, c, 0.1, w.size, n_largest)
            np.testing.assert_array_equal(gi, assign.ecqx_assign(w, c, lam, gr, p=0.1))
    # the mirror holds the QAT model's snapped kernels of the last sync
    assert fused.refreshes == plain.refreshes == 5
