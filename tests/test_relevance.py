"""Relevance engine: slow NumPy LRP references vs the native backend, native vs iNNvestigate
(worker process), conservation, eager-mode isolation, worker life cycle, errors, serialization.

The references below are written straight from the rule formulas over an explicit list of
connections (i -> j, kernel entry k); a convolution is just a connection list with shared weights.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from ecqx_tf.relevance import (
    BACKENDS,
    COMPOSITES,
    RULES,
    Composite,
    Epsilon,
    Flat,
    InnvestigateWorker,
    InnvestigateWorkerError,
    RelevanceAccumulator,
    UnsupportedLayerError,
    ZPlus,
    get_composite,
    layer_relevance,
    logits_model_json,
    rule_from_config,
    weight_relevance,
)

L = tf.keras.layers
EPS = 1e-6  # epsilon rule and weight-relevance stabilizer (docs/relevance.md)


# ---------------------------------------------------------------------------------------------
# slow references


def stab(z, eps=EPS):
    return z + eps * (np.sign(z) + (z == 0))


def dense_conns(n_in, n_out):
    """Connections of a Dense layer: (input i, output j, kernel index (i, j))."""
    return [(i, j, (i, j)) for i in range(n_in) for j in range(n_out)]


def conv_conns(h, w, kernel_shape, padding):
    """Connections of a stride-1 Conv2D on an (h, w, cin) input, NHWC flattening."""
    kh, kw, cin, cout = kernel_shape
    ph, pw = ((kh - 1) // 2, (kw - 1) // 2) if padding == "same" else (0, 0)
    oh, ow = (h, w) if padding == "same" else (h - kh + 1, w - kw + 1)
    conns = []
    for p in range(oh):
        for q in range(ow):
            for u in range(kh):
                for v in range(kw):
                    r, s = p + u - ph, q + v - pw
                    if 0 <= r < h and 0 <= s < w:
                        for c in range(cin):
                            for k in range(cout):
                                conns.append(((r * w + s) * cin + c, (p * ow + q) * cout + k, (u, v, c, k)))
    return conns, (oh, ow, cout)


class RefLinear:
    """z_j = sum_{(i,j,k)} a_i W[k] + b_j over a connection list, and the LRP rules on it."""

    def __init__(self, conns, kernel, bias, n_out):
        self.I = np.array([c[0] for c in conns])
        self.J = np.array([c[1] for c in conns])
        self.K = [c[2] for c in conns]
        self.kernel = kernel
        self.w = np.array([kernel[k] for k in self.K], dtype=np.float64)
        self.b = np.zeros(n_out) if bias is None else np.tile(bias, n_out // len(bias))
        self.n_out = n_out

    def z(self, a):  # a: (N, n_in) float64
        out = np.tile(self.b, (a.shape[0], 1))
        np.add.at(out.T, self.J, (a[:, self.I] * self.w).T)
        return out

    def _scatter_in(self, contrib, n_in):
        out = np.zeros((contrib.shape[0], n_in))
        np.add.at(out.T, self.I, contrib.T)
        return out

    def epsilon(self, a, r, eps=EPS):  # R_i = sum_j a_i w_ij R_j / stab(z_j)
        z = self.z(a)
        return self._scatter_in(a[:, self.I] * self.w * r[:, self.J] / stab(z[:, self.J], eps), a.shape[1])

    def zplus(self, a, r):  # R_i = sum_j (a+ w+ + a- w-)_ij R_j / sum_i (a+ w+ + a- w-)_ij
        ap, an = np.maximum(a, 0), np.minimum(a, 0)
        c = ap[:, self.I] * np.maximum(self.w, 0) + an[:, self.I] * np.minimum(self.w, 0)
        zp = np.zeros((a.shape[0], self.n_out))
        np.add.at(zp.T, self.J, c.T)
        den = zp[:, self.J]
        return self._scatter_in(np.where(den != 0, c * r[:, self.J] / np.where(den == 0, 1, den), 0), a.shape[1])

    def flat(self, a, r):  # R_i = sum_j R_j / #inputs(j)
        count = np.bincount(self.J, minlength=self.n_out).astype(np.float64)
        return self._scatter_in(r[:, self.J] / count[self.J], a.shape[1])

    def weight_relevance(self, a, r, eps=EPS):  # R_k = sum_n sum_(i,j) with kernel k: w a_i R_j / stab(z_j)
        z = self.z(a)
        per_conn = (self.w * a[:, self.I] * r[:, self.J] / stab(z[:, self.J], eps)).sum(axis=0)
        out = np.zeros(self.kernel.shape)
        for k, v in zip(self.K, per_conn):
            out[k] += v
        return out


def pool_windows(h, w, c, size=2):
    """(input index list, output index) of a 2x2/stride-2 valid pooling, NHWC flattening."""
    oh, ow = h // size, w // size
    out = []
    for p in range(oh):
        for q in range(ow):
            for ch in range(c):
                ins = [((p * size + u) * w + (q * size + v)) * c + ch for u in range(size) for v in range(size)]
                out.append((ins, (p * ow + q) * c + ch))
    return out, (oh, ow, c)


def ref_pool_forward(a, windows, kind):
    y = np.zeros((a.shape[0], len(windows)))
    for ins, j in windows:
        y[:, j] = a[:, ins].max(axis=1) if kind == "max" else a[:, ins].mean(axis=1)
    return y


def ref_pool_backward(a, r, windows, kind):
    out = np.zeros_like(a)
    for ins, j in windows:
        if kind == "max":  # winner takes all
            win = np.array(ins)[np.argmax(a[:, ins], axis=1)]
            out[np.arange(a.shape[0]), win] += r[:, j]
        else:  # z-rule: R_i = (a_i / 4) / z_j R_j
            z = a[:, ins].mean(axis=1)
            for i in ins:
                out[:, i] += np.where(z != 0, (a[:, i] / len(ins)) * r[:, j] / np.where(z == 0, 1, z), 0)
    return out


def head_relevance(logits, y):
    r = np.zeros_like(logits)
    r[np.arange(len(y)), y] = logits[np.arange(len(y)), y]
    return r / len(y)


def random_weights(model, seed, bias_scale=0.1):
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if isinstance(layer, (L.Dense, L.Conv2D)):
            k = layer.kernel.numpy()
            ws = [rng.randn(*k.shape).astype(np.float32) * np.sqrt(2.0 / np.prod(k.shape[:-1]))]
            if layer.use_bias:
                ws.append((rng.randn(k.shape[-1]) * bias_scale).astype(np.float32))
            layer.set_weights(ws)
        elif isinstance(layer, L.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([
                (rng.rand(c) + 0.5).astype(np.float32),
                (rng.randn(c) * 0.2).astype(np.float32),
                (rng.randn(c) * 0.2).astype(np.float32),
                (rng.rand(c) + 0.5).astype(np.float32),
            ])
    return model


# ---------------------------------------------------------------------------------------------
# models


def mlp(sizes=(5, 4, 3, 3), use_bias=True, softmax=False, seed=0):
    layers = [tf.keras.Input((sizes[0],))]
    for k, n in enumerate(sizes[1:]):
        last = k == len(sizes) - 2
        act = ("softmax" if softmax else None) if last else "relu"
        layers.append(L.Dense(n, activation=act, use_bias=use_bias))
    return random_weights(tf.keras.Sequential(layers), seed)


def ref_cnn(pool, seed=1):
    m = tf.keras.Sequential([
        tf.keras.Input((6, 6, 2)),
        L.Conv2D(2, 3, padding="same", activation="relu", name="c1"),
        L.Conv2D(3, 3, padding="valid", name="c2"),
        L.ReLU(name="relu"),
        (L.MaxPooling2D(name="pool") if pool == "max" else L.AveragePooling2D(name="pool")),
        L.Flatten(name="flat"),
        L.Dense(4, name="d"),
    ])
    return random_weights(m, seed)


# ---------------------------------------------------------------------------------------------
# (a) slow references vs native


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon"])
def test_mlp_matches_reference(composite):
    model = mlp()
    rng = np.random.RandomState(2)
    x, y = rng.randn(7, 5).astype(np.float32), rng.randint(0, 3, 7)
    d = [RefLinear(dense_conns(l.kernel.shape[0], l.kernel.shape[1]), l.kernel.numpy().astype(np.float64),
                   l.bias.numpy().astype(np.float64), l.kernel.shape[1]) for l in model.layers]
    acts = [x.astype(np.float64)]
    for k, lin in enumerate(d):
        z = lin.z(acts[-1])
        acts.append(np.maximum(z, 0) if k < len(d) - 1 else z)
    r = head_relevance(acts[-1], y)
    ref_layers, ref_w = {}, {}
    for k in range(len(d) - 1, -1, -1):
        name = model.layers[k].name
        ref_layers[name] = r
        ref_w[name] = d[k].weight_relevance(acts[k], r)
        first_flat = k == 0 and composite == "epsilon_plus_flat"
        r = d[k].flat(acts[k], r) if first_flat else d[k].epsilon(acts[k], r)

    got = layer_relevance(model, x, y, composite=composite)
    np.testing.assert_allclose(got.input, r, rtol=1e-5, atol=1e-8)
    for name, ref in ref_layers.items():
        np.testing.assert_allclose(got.layers[name], ref, rtol=1e-5, atol=1e-8)
    got_w = weight_relevance(model, x, y, composite=composite)
    for name, ref in ref_w.items():
        np.testing.assert_allclose(got_w[name], ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("seed", [1, 4])
def test_cnn_matches_reference(pool, seed):
    """Conv(same, relu; flat as first layer) -> Conv(valid; z+) -> ReLU layer (gradient) -> pool
    (max: winner-take-all, avg: z-rule) -> Flatten -> Dense (epsilon)."""
    model = ref_cnn(pool, seed)
    rng = np.random.RandomState(seed + 2)
    x, y = rng.randn(5, 6, 6, 2).astype(np.float32), rng.randint(0, 4, 5)
    c1, c2, d = (model.get_layer(n) for n in ("c1", "c2", "d"))
    conns1, s1 = conv_conns(6, 6, c1.kernel.shape, "same")
    conns2, s2 = conv_conns(s1[0], s1[1], c2.kernel.shape, "valid")
    lin1 = RefLinear(conns1, c1.kernel.numpy().astype(np.float64), c1.bias.numpy().astype(np.float64), int(np.prod(s1)))
    lin2 = RefLinear(conns2, c2.kernel.numpy().astype(np.float64), c2.bias.numpy().astype(np.float64), int(np.prod(s2)))
    windows, s3 = pool_windows(*s2)
    lind = RefLinear(dense_conns(int(np.prod(s3)), 4), d.kernel.numpy().astype(np.float64),
                     d.bias.numpy().astype(np.float64), 4)

    a0 = x.reshape(5, -1).astype(np.float64)
    a1 = np.maximum(lin1.z(a0), 0)
    z2 = lin2.z(a1)
    a3 = np.maximum(z2, 0)
    a4 = ref_pool_forward(a3, windows, pool)
    logits = lind.z(a4)

    r_d = head_relevance(logits, y)
    r4 = lind.epsilon(a4, r_d)
    r3 = ref_pool_backward(a3, r4, windows, pool)
    r_c2 = r3 * (z2 > 0)  # ReLU layer: gradient
    r1 = lin2.zplus(a1, r_c2)
    r0 = lin1.flat(a0, r1)

    def close(got_r, ref):  # float32 vs float64 reference
        np.testing.assert_allclose(got_r, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())

    got = layer_relevance(model, x, y)
    close(got.input.reshape(5, -1), r0)
    for name, ref in (("d", r_d), ("c2", r_c2), ("c1", r1)):
        close(got.layers[name].reshape(5, -1), ref)
    got_w = weight_relevance(model, x, y)
    for name, lin, a, r in (("d", lind, a4, r_d), ("c2", lin2, a1, r_c2), ("c1", lin1, a0, r1)):
        close(got_w[name], lin.weight_relevance(a, r))


def test_batchnorm_rule_matches_reference():
    """BatchNormalization as the affine layer y = x w + b (w = gamma / sqrt(var + eps),
    b = beta - mu w) with the z-rule R_x = x w R_y / y, stabilized as iNNvestigate does it:
    R_x = x w (x - mu) R_y / stab_1e-7((x - mu) y)  (the 1e-7 is added to the product).

    The engine evaluates it in iNNvestigate's algebraic form x (y - beta) R / stab((x - mu) y), to
    agree with iNNvestigate bit for bit; in float32 that form can lose digits where x ~ mu or
    y ~ beta, so on top of rtol 1e-4 each element may deviate by 8 eps_f32 kappa |R|, with the
    condition number kappa = (S + |mu|) / |x - mu| + (|y| + |beta|) / |y - beta| (S = sum_i |a_i w_i|
    + |b| bounds the float32 error of x itself). Over seeds 15..29 the largest relative error seen
    was 5e-5."""
    model = random_weights(tf.keras.Sequential([
        tf.keras.Input((6,)),
        L.Dense(8, name="d1"),
        L.BatchNormalization(name="bn"),
        L.ReLU(),
        L.Dense(3, name="d2"),
    ]), seed=15)
    rng = np.random.RandomState(15)
    x, y = rng.randn(20, 6).astype(np.float32), rng.randint(0, 3, 20)
    d1, bn, d2 = (model.get_layer(n) for n in ("d1", "bn", "d2"))
    gamma, beta, mu, var = (v.astype(np.float64) for v in bn.get_weights())
    w = gamma / np.sqrt(var + bn.epsilon)
    z1 = x.astype(np.float64) @ d1.kernel.numpy() + d1.bias.numpy()
    y_bn = z1 * w + (beta - mu * w)
    a = np.maximum(y_bn, 0)
    lin2 = RefLinear(dense_conns(8, 3), d2.kernel.numpy().astype(np.float64), d2.bias.numpy().astype(np.float64), 3)
    r_bn_out = lin2.epsilon(a, head_relevance(lin2.z(a), y)) * (y_bn > 0)
    ref = z1 * w * (z1 - mu) * r_bn_out / stab((z1 - mu) * y_bn, 1e-7)
    s_abs = np.abs(x.astype(np.float64)) @ np.abs(d1.kernel.numpy()) + np.abs(d1.bias.numpy())
    kappa = (s_abs + np.abs(mu)) / np.abs(z1 - mu) + (np.abs(y_bn) + np.abs(beta)) / np.abs(y_bn - beta)
    got = layer_relevance(model, x, y).layers["d1"]
    tol = 1e-4 * np.abs(ref) + 8 * np.finfo(np.float32).eps * kappa * np.abs(ref) + 1e-9
    assert np.all(np.abs(got - ref) <= tol), np.max(np.abs(got - ref) / tol)


def test_weight_relevance_equals_gradient_form():
    """R_ij = W * d<z, stop_grad(R/stab z)>/dW, here checked against the explicit sum for the last
    Dense layer, whose output relevance is known in closed form."""
    model = mlp((6, 5, 3))
    rng = np.random.RandomState(4)
    x, y = rng.randn(9, 6).astype(np.float32), rng.randint(0, 3, 9)
    last = model.layers[-1]
    a = np.maximum(x @ model.layers[0].kernel.numpy() + model.layers[0].bias.numpy(), 0).astype(np.float64)
    z = a @ last.kernel.numpy() + last.bias.numpy()
    r = head_relevance(z, y)
    ref = np.einsum("ij,ni,nj->ij", last.kernel.numpy(), a, r / stab(z))
    np.testing.assert_allclose(weight_relevance(model, x, y)[last.name], ref, rtol=1e-4, atol=1e-8)


def test_batch_size_does_not_change_result_and_softmax_is_skipped():
    model = mlp((8, 6, 4), softmax=True)
    rng = np.random.RandomState(5)
    x, y = rng.randn(10, 8).astype(np.float32), rng.randint(0, 4, 10)
    one = weight_relevance(model, x, y, batch_size=10)
    three = weight_relevance(model, x, y, batch_size=3)
    for n in one:
        np.testing.assert_allclose(one[n], three[n], rtol=1e-5, atol=1e-8)
    logits_model = mlp((8, 6, 4), softmax=False)
    logits_model.set_weights(model.get_weights())
    ref = weight_relevance(logits_model, x, y)
    for a, b in zip(one.values(), ref.values()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    # one-hot labels are accepted
    onehot = np.eye(4)[y]
    np.testing.assert_allclose(weight_relevance(model, x, onehot)[model.layers[0].name], one[model.layers[0].name])


def test_native_engine_sees_weight_updates():
    model = mlp((6, 5, 3), seed=0)
    rng = np.random.RandomState(6)
    x, y = rng.randn(4, 6).astype(np.float32), rng.randint(0, 3, 4)
    before = weight_relevance(model, x, y)
    random_weights(model, seed=11)
    after = weight_relevance(model, x, y)  # cached engine, same traced graph
    fresh = mlp((6, 5, 3), seed=11)
    ref = weight_relevance(fresh, x, y)
    for n, n_ref in zip(after, ref):
        np.testing.assert_allclose(after[n], ref[n_ref], rtol=1e-6, atol=1e-9)
        assert not np.allclose(after[n], before[n])


# ---------------------------------------------------------------------------------------------
# (c) conservation


def test_conservation_epsilon_zero_bias():
    """Epsilon rule, no bias: sum_i R_i = sum_j R_j z_j / stab(z_j) ~ sum_j R_j at every layer, and
    the weight relevance of every layer sums to the same total (the mean true-class logit)."""
    model = mlp((12, 10, 8, 5), use_bias=False)
    rng = np.random.RandomState(7)
    x, y = rng.randn(16, 12).astype(np.float32), rng.randint(0, 5, 16)
    total = model(x).numpy()[np.arange(16), y].mean()
    got = layer_relevance(model, x, y, composite="epsilon")
    np.testing.assert_allclose(got.input.sum(), total, rtol=1e-4)
    for r in got.layers.values():
        np.testing.assert_allclose(r.sum(), total, rtol=1e-4)
    for w in weight_relevance(model, x, y, composite="epsilon").values():
        np.testing.assert_allclose(w.sum(), total, rtol=1e-4)


def test_conservation_epsilon_plus_flat_cnn_zero_bias():
    """z+ (no bias), flat, max pooling and Flatten all conserve relevance in a bias-free ReLU CNN."""
    model = random_weights(tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)),
        L.Conv2D(3, 3, padding="same", activation="relu", use_bias=False),
        L.MaxPooling2D(),
        L.Conv2D(4, 3, activation="relu", use_bias=False),
        L.Flatten(),
        L.Dense(3, use_bias=False),
    ]), seed=8)
    rng = np.random.RandomState(8)
    x, y = rng.rand(6, 8, 8, 1).astype(np.float32), rng.randint(0, 3, 6)
    total = model(x).numpy()[np.arange(6), y].mean()
    got = layer_relevance(model, x, y)
    np.testing.assert_allclose(got.input.sum(), total, rtol=1e-4)
    for r in got.layers.values():
        np.testing.assert_allclose(r.sum(), total, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# (b, d) native vs iNNvestigate worker, eager isolation, worker life cycle

# Tolerance: both backends run the same float32 TensorFlow CPU kernels on the same numbers, so they
# differ at most by round-off (in practice they agree bit for bit); epsilon = 1e-6 can amplify a
# round-off of z_j near zero, hence rtol 1e-4 plus an absolute floor of 1e-6 * max|R|.
RTOL = 1e-4


def assert_close(a, b):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-6 * max(np.abs(b).max(), 1e-30))


def backend_cnn(seed=9):
    return random_weights(tf.keras.Sequential([
        tf.keras.Input((8, 8, 2)),
        L.Conv2D(4, 3, padding="same", name="conv_a"),
        L.BatchNormalization(name="bn"),
        L.ReLU(name="relu"),
        L.MaxPooling2D(name="pool"),
        L.Conv2D(6, 3, activation="relu", name="conv_b"),
        L.Flatten(name="flatten"),
        L.Dropout(0.5, name="dropout"),
        L.Dense(5, activation="softmax", name="logits"),
    ]), seed)


@pytest.fixture(scope="module")
def worker():
    with InnvestigateWorker(timeout=300) as w:
        yield w


@pytest.mark.slow
def test_native_matches_innvestigate_mlp(worker):
    model = mlp((20, 16, 8, 4), softmax=True, seed=12)
    rng = np.random.RandomState(12)
    x, y = rng.randn(24, 20).astype(np.float32), rng.randint(0, 4, 24)
    for composite in ("epsilon_plus_flat", "epsilon"):
        nat = layer_relevance(model, x, y, composite=composite)
        inn = layer_relevance(model, x, y, composite=composite, backend="innvestigate", worker=worker)
        assert_close(inn.input, nat.input)
        for n in nat.layers:
            assert_close(inn.layers[n], nat.layers[n])
    w_nat = weight_relevance(model, x, y)
    w_inn = weight_relevance(model, x, y, backend="innvestigate", worker=worker)
    assert set(w_inn) == {l.name for l in model.layers}
    for n in w_nat:
        assert w_nat[n].shape == model.get_layer(n).kernel.shape
        assert_close(w_inn[n], w_nat[n])
    assert tf.executing_eagerly()


@pytest.mark.slow
def test_native_matches_innvestigate_cnn_and_worker_is_reused(worker):
    model = backend_cnn()
    rng = np.random.RandomState(13)
    x, y = rng.rand(12, 8, 8, 2).astype(np.float32), rng.randint(0, 5, 12)
    pid = worker.pid
    inn = layer_relevance(model, x, y, backend="innvestigate", worker=worker, batch_size=8)
    nat = layer_relevance(model, x, y)
    assert_close(inn.input, nat.input)
    for n in ("conv_a", "conv_b", "logits"):
        assert_close(inn.layers[n], nat.layers[n])
    builds = worker.analyzer_builds
    # new weights, same architecture: the worker keeps its analyzer and only loads the weights
    random_weights(model, seed=14)
    w_inn = weight_relevance(model, x, y, backend="innvestigate", worker=worker)
    w_nat = weight_relevance(model, x, y)
    for n in w_nat:
        assert_close(w_inn[n], w_nat[n])
    assert worker.pid == pid and worker.analyzer_builds == builds
    assert tf.executing_eagerly()


@pytest.mark.slow
def test_worker_errors_are_reported_and_worker_survives(worker):
    pid = worker.pid
    with pytest.raises(InnvestigateWorkerError, match=r"raised \w+Error during 'relevance'") as info:
        worker.relevance("{not json", [], "epsilon", ["d"], np.zeros((1, 3), np.float32), np.zeros(1))
    assert "worker traceback" in str(info.value)
    assert worker.ping()["pid"] == pid and worker.ping()["eager"] is False


@pytest.mark.slow
def test_worker_shuts_down():
    w = InnvestigateWorker(timeout=300)
    with w:
        pid = w.pid
        assert w.alive and w.ping()["pid"] == pid
    assert not w.alive and w.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    w.close()  # idempotent


def test_import_keeps_eager_and_does_not_load_innvestigate():
    code = textwrap.dedent(
        """
        import sys, numpy as np, tensorflow as tf
        import ecqx_tf.relevance as rel
        from ecqx_tf.relevance import innvestigate_backend, native, weights, rules, composites
        m = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
        rel.weight_relevance(m, np.ones((2, 3), np.float32), [0, 1])
        print(tf.executing_eagerly(), "innvestigate" in sys.modules)
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["True", "False"]
    assert tf.executing_eagerly()


# ---------------------------------------------------------------------------------------------
# (e) errors


def test_unsupported_layers_are_all_named():
    model = tf.keras.Sequential([tf.keras.Input((6, 2)), L.LSTM(3, return_sequences=True, name="my_lstm"),
                                 L.Conv1D(3, 2, name="c", padding="causal"), L.Flatten(), L.Dense(2)])
    with pytest.raises(UnsupportedLayerError, match=r"'my_lstm' \(LSTM\): unsupported layer type.*'c' \(Conv1D\): "
                       r"padding='causal'.*Supported layer types: Activation, Add"):
        weight_relevance(model, np.zeros((1, 6, 2), np.float32), [0])


def test_shared_layer_and_two_outputs_are_rejected():
    inp = tf.keras.Input((4,))
    shared = L.Dense(4, name="shared")
    model = tf.keras.Model(inp, L.Dense(2)(shared(shared(inp))))
    with pytest.raises(UnsupportedLayerError, match="'shared' \\(Dense\\) is called 2 times"):
        weight_relevance(model, np.zeros((1, 4), np.float32), [0])
    two = tf.keras.Model(inp, [L.Dense(2, name="a")(inp), L.Dense(2, name="b")(inp)])
    with pytest.raises(UnsupportedLayerError, match="1 inputs and 2 outputs"):
        weight_relevance(two, np.zeros((1, 4), np.float32), [0])


def test_data_errors_name_shapes():
    model = mlp((5, 4, 3))
    with pytest.raises(ValueError, match=r"x has shape \(2, 6\).*expects input shape \(None, 5\)"):
        weight_relevance(model, np.zeros((2, 6), np.float32), [0, 1])
    with pytest.raises(ValueError, match=r"y has 3 labels.*x has 2 samples"):
        weight_relevance(model, np.zeros((2, 5), np.float32), [0, 1, 2])
    with pytest.raises(ValueError, match="empty"):
        weight_relevance(model, np.zeros((0, 5), np.float32), np.zeros(0, int))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        weight_relevance(model, np.zeros((2, 5), np.float32), [0, 3])
    with pytest.raises(TypeError, match="integer class labels"):
        weight_relevance(model, np.zeros((2, 5), np.float32), [0.5, 1])


def test_argument_errors():
    model = mlp((5, 4, 3))
    x, y = np.zeros((2, 5), np.float32), [0, 1]
    with pytest.raises(ValueError, match="unknown relevance backend 'torch'; accepted: innvestigate, native"):
        weight_relevance(model, x, y, backend="torch")
    with pytest.raises(ValueError, match="unknown LRP composite 'nope'; accepted: epsilon, epsilon_plus_flat"):
        weight_relevance(model, x, y, composite="nope")
    with pytest.raises(ValueError, match=r"layer 'nope' is not a kernel layer"):
        weight_relevance(model, x, y, layers=["nope"])
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        weight_relevance(model, x, y, batch_size=0)
    with pytest.raises(ValueError, match="rule 'zplus' is not available for BatchNormalization"):
        layer_rules = dict(get_composite("epsilon").layer_rules)
        layer_rules["BatchNormalization"] = ZPlus()
        Composite("bad", layer_rules)


# ---------------------------------------------------------------------------------------------
# registries, serialization, accumulator


@pytest.mark.parametrize("name", RULES.names())
def test_rule_round_trip(name):
    rule = RULES.get(name)()
    assert rule_from_config(rule.get_config()) == rule
    assert rule.get_config()["name"] == name


@pytest.mark.parametrize("name", COMPOSITES.names())
def test_composite_round_trip_and_layer_selection(name):
    comp = COMPOSITES.get(name)
    assert Composite.from_config(comp.get_config()) == comp
    assert comp.rule("Dense") == Epsilon(EPS)
    expected_first = Flat() if name == "epsilon_plus_flat" else Epsilon(EPS)
    assert comp.rule("Dense", first=True) == expected_first
    assert comp.rule("Conv2D") == (ZPlus() if name == "epsilon_plus_flat" else Epsilon(EPS))
    with pytest.raises(ValueError, match="not supported by LRP composite"):
        comp.rule("LSTM")
    assert set(BACKENDS.names()) == {"native", "innvestigate"}


def test_logits_model_json_strips_softmax_keeps_names():
    import json

    seq = mlp((4, 3), softmax=True)
    cfg = json.loads(logits_model_json(seq))["config"]["layers"]
    assert cfg[-1]["config"]["activation"] == "linear" and cfg[-1]["config"]["name"] == seq.layers[-1].name
    inp = tf.keras.Input((4,))
    func = tf.keras.Model(inp, L.Softmax(name="sm")(L.Dense(3, name="out")(inp)))
    fcfg = json.loads(logits_model_json(func))["config"]
    assert fcfg["output_layers"] == [["out", 0, 0]] and all(e["name"] != "sm" for e in fcfg["layers"])
    # the native engine drops the Softmax layer too: same result as the logits model
    x, y = np.random.RandomState(0).randn(3, 4).astype(np.float32), [0, 2, 1]
    logits = tf.keras.Model(inp, func.get_layer("out").output)
    np.testing.assert_allclose(weight_relevance(func, x, y)["out"], weight_relevance(logits, x, y)["out"], rtol=1e-6)


def test_layer_subset_matches_full():
    model = mlp((7, 6, 5, 3), seed=3)
    x, y = np.random.RandomState(1).randn(5, 7).astype(np.float32), [0, 1, 2, 0, 1]
    full = weight_relevance(model, x, y)
    names = [model.layers[1].name]
    sub = weight_relevance(model, x, y, layers=names)
    assert list(sub) == names
    np.testing.assert_allclose(sub[names[0]], full[names[0]], rtol=1e-6)


def test_accumulator_ema():
    acc = RelevanceAccumulator()
    r1, r2 = {"d": np.full((2, 2), 1.0)}, {"d": np.full((2, 2), 3.0)}
    np.testing.assert_allclose(acc.update(r1)["d"], 1.0)  # first batch: R = R_batch
    np.testing.assert_allclose(acc.update(r2)["d"], 0.9 * 3.0 + 0.1 * 1.0)
    assert acc.updates == 2
    with pytest.raises(ValueError, match="update has layers"):
        acc.update({"e": np.ones((2, 2))})
    acc.reset()
    assert acc.value == {} and acc.updates == 0
    np.testing.assert_allclose(acc.update(r2)["d"], 3.0)
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\)"):
        RelevanceAccumulator(alpha=1.0)
