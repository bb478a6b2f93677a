"""The training options of issue 17 (ECQxCallback / quantize_and_train): Lambda warm-up, per-layer
sparsity targets, relevance from the batch just trained on. After every refresh the stored indices
must equal, exactly, the pure assignment functions applied with the formula's lambda."""
import math

import numpy as np
import pytest
import tensorflow as tf

import ecqx_tf
from ecqx_tf import assign
from ecqx_tf.keras.api import ecq_layers
from ecqx_tf.keras.finetune import TrainingOrder, quantize_and_train
from ecqx_tf.rate_control import lambda_for_sparsity, ramp


def mlp(seed=0):
    tf.keras.utils.set_random_seed(seed)
    i = tf.keras.Input((6, 6, 1))
    x = tf.keras.layers.Flatten(name="flat")(i)
    x = tf.keras.layers.Dense(24, activation="relu", name="d1")(x)
    x = tf.keras.layers.Dense(5, name="d2")(x)
    return tf.keras.Model(i, x)


def data(n=96, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, 6, 6, 1), dtype=np.float32), rng.integers(0, 5, n)


def compile_(q):
    q.compile(tf.keras.optimizers.Adam(1e-2), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return q


class Check(tf.keras.callbacks.Callback):
    """After the ECQxCallback of the same fit: the indices of every kernel against ``expect``."""

    def __init__(self, cb, expect):
        super().__init__()
        self.cb, self.expect, self.checked = cb, expect, 0

    def on_train_batch_end(self, batch, logs=None):
        slots = ecq_layers(self.model)
        n_largest = max(int(np.prod(s.kernel.shape)) for s in slots)
        for s in slots:
            want = self.expect(s, self.cb._steps, n_largest)
            np.testing.assert_array_equal(s.indices.numpy(), want, err_msg=f"{s.name} at step {self.cb._steps}")
            self.checked += 1


def test_lambda_warmup_follows_the_ramp():
    x, y = data()
    q = compile_(ecqx_tf.quantize(mlp(), bits=4, method="ecq", Lambda=0.3))
    cb = ecqx_tf.ECQxCallback(warmup_steps=5)

    def expect(s, t, n_largest):
        w, c = s.kernel.numpy(), s.centroids.numpy()
        lam = assign.layer_lambda(w, c, 0.3 * (1 - (1 - min(1.0, t / 5)) ** 3), w.size, n_largest)
        return assign.ecq_assign(w, c, lam)

    chk = Check(cb, expect)
    q.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[cb, chk])
    assert chk.checked == 2 * 9 and cb.refreshes == 9


def test_warmup_off_is_the_paper_lambda():
    x, y = data()
    q = compile_(ecqx_tf.quantize(mlp(), bits=3, method="ecq", Lambda=0.2))
    cb = ecqx_tf.ECQxCallback()
    assert cb.warmup_steps == 0 and cb.target_sparsity is None

    def expect(s, t, n_largest):
        w, c = s.kernel.numpy(), s.centroids.numpy()
        return assign.ecq_assign(w, c, assign.layer_lambda(w, c, 0.2, w.size, n_largest))

    q.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb, Check(cb, expect)])


@pytest.mark.parametrize("method", ["ecq", "ecqx"])
def test_target_sparsity_sets_each_layers_lambda(method):
    x, y = data()
    kw = dict(relevance_data=(x, y)) if method == "ecqx" else {}
    q = compile_(ecqx_tf.quantize(mlp(), bits=4, method=method, Lambda=0.05, p=0.1, **kw))
    targets = {"d1": 0.9, "d2": 0.6}
    cb = ecqx_tf.ECQxCallback(target_sparsity=targets, warmup_steps=4)

    def expect(s, t, n_largest):
        w, c = s.kernel.numpy(), s.centroids.numpy()
        lam = lambda_for_sparsity(w, c, targets[s.name] * ramp(t, 4))
        if method == "ecq":
            idx = assign.ecq_assign(w, c, lam)
            z = int(np.flatnonzero(c == 0)[0])
            need = math.ceil(targets[s.name] * ramp(t, 4) * w.size - 1e-9)
            assert np.sum(idx == z) >= need
            if lam > 0:
                assert np.sum(idx == z) <= need + 1
            return idx
        return assign.ecqx_assign(w, c, lam, s.relevance.numpy(), p=0.1)

    q.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[cb, Check(cb, expect)])
    final = {r["layer"]: r["sparsity"] for r in ecqx_tf.layer_stats(q)}
    if method == "ecq":
        assert final["d1"] == pytest.approx(0.9, abs=2 / 864) and final["d2"] == pytest.approx(0.6, abs=2 / 120)


@pytest.mark.parametrize("method", ["ecq", "ecqx"])
def test_model_target_sets_Lambda_with_the_papers_allocation(method):
    from ecqx_tf.rate_control import Lambda_for_model_sparsity

    x, y = data()
    kw = dict(relevance_data=(x, y)) if method == "ecqx" else {}
    q = compile_(ecqx_tf.quantize(mlp(), bits=3, method=method, Lambda=0.0, p=0.1, **kw))
    cb = ecqx_tf.ECQxCallback(target_sparsity=0.85, target_scope="model", warmup_steps=3)
    state = {}

    class Before(tf.keras.callbacks.Callback):  # the kernels the refresh sees (before ECQxCallback)
        def on_train_batch_end(self, batch, logs=None):
            slots = ecq_layers(self.model)
            n_largest = max(int(np.prod(s.kernel.shape)) for s in slots)
            state["Lam"] = Lambda_for_model_sparsity([(s.kernel.numpy(), s.centroids.numpy()) for s in slots],
                                                     0.85 * ramp(cb._steps + 1, 3), n_largest)

    def expect(s, t, n_largest):
        w, c = s.kernel.numpy(), s.centroids.numpy()
        lam = assign.layer_lambda(w, c, state["Lam"], w.size, n_largest)
        if method == "ecq":
            return assign.ecq_assign(w, c, lam)
        return assign.ecqx_assign(w, c, lam, s.relevance.numpy(), p=0.1)

    q.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[Before(), cb, Check(cb, expect)])
    if method == "ecq":
        total = [r for r in ecqx_tf.layer_stats(q) if r["layer"] == "<total>"][0]
        assert total["sparsity"] == pytest.approx(0.85, abs=2 / 984)
    with pytest.raises(ValueError, match="one share"):
        ecqx_tf.ECQxCallback(target_sparsity={"d1": 0.5}, target_scope="model")
    with pytest.raises(ValueError, match="target_scope"):
        ecqx_tf.ECQxCallback(target_sparsity=0.5, target_scope="net")


def test_target_for_some_layers_keeps_the_paper_lambda_elsewhere():
    x, y = data()
    q = compile_(ecqx_tf.quantize(mlp(), bits=4, method="ecq", Lambda=0.2))
    cb = ecqx_tf.ECQxCallback(target_sparsity={"d2": 0.5})

    def expect(s, t, n_largest):
        w, c = s.kernel.numpy(), s.centroids.numpy()
        lam = lambda_for_sparsity(w, c, 0.5) if s.name == "d2" else assign.layer_lambda(w, c, 0.2, w.size, n_largest)
        return assign.ecq_assign(w, c, lam)

    q.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb, Check(cb, expect)])


def test_option_errors_and_config():
    with pytest.raises(ValueError, match="target_sparsity"):
        ecqx_tf.ECQxCallback(target_sparsity=1.5)
    with pytest.raises(ValueError, match="ramp_steps"):
        ecqx_tf.ECQxCallback(warmup_steps=-1)
    with pytest.raises(TypeError, match="relevance_batches"):
        ecqx_tf.ECQxCallback(relevance_batches=3)
    q = compile_(ecqx_tf.quantize(mlp(), bits=4, method="ecq"))
    x, y = data()
    with pytest.raises(ValueError, match="does not quantize"):
        q.fit(x, y, epochs=1, verbose=0, callbacks=[ecqx_tf.ECQxCallback(target_sparsity={"nope": 0.5})])
    cb = ecqx_tf.ECQxCallback(target_sparsity={"d1": 0.8}, warmup_steps=7, warmup_power=2.0)
    assert ecqx_tf.ECQxCallback(**cb.get_config()).get_config() == cb.get_config()
    m = mlp()
    for kw, msg in ((dict(lambda_warmup=1.5), "lambda_warmup"), (dict(relevance_source="x"), "relevance_source")):
        with pytest.raises(ValueError, match=msg):
            quantize_and_train(m, x, y, x, y, method="ecq", epochs=1, **kw)


class _Recorder(tf.keras.Model):
    """Records, eagerly, every batch train_step receives."""

    def __init__(self):
        super().__init__()
        self.d = tf.keras.layers.Dense(5)
        self.seen = []

    def call(self, x):
        return self.d(tf.reshape(x, (-1, 36)))

    def train_step(self, data):
        self.seen.append((data[0].numpy().copy(), data[1].numpy().copy()))
        return super().train_step(data)


def test_training_order_is_what_fit_trains_on():
    x, y = data(n=70)
    order = TrainingOrder(x, y, batch_size=32, seed=5)
    assert order.steps_per_epoch == 3
    m = _Recorder()
    m.compile("sgd", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    m.fit(order.dataset(3), epochs=3, steps_per_epoch=order.steps_per_epoch, verbose=0)
    assert len(m.seen) == 9
    for k, (xb, yb) in enumerate(m.seen):
        ex, ey = order.batch(k // 3, k % 3)
        np.testing.assert_array_equal(xb, ex)
        np.testing.assert_array_equal(yb, ey)
    sizes = [len(b[0]) for b in m.seen]
    assert sizes == [32, 32, 6] * 3
    assert sorted(np.concatenate([order.indices(1, i) for i in range(3)]).tolist()) == list(range(70))
    assert not np.array_equal(order.permutation(0), order.permutation(1))


@pytest.mark.parametrize("fused", [True, False])
def test_relevance_from_the_training_batch(fused):
    """ECQxCallback asks for the (epoch, batch) just trained on, and its relevance is the LRP of it
    (on the fused native path and on the NumPy path)."""
    from ecqx_tf.relevance import weight_relevance

    x, y = data()
    order = TrainingOrder(x, y, batch_size=32, seed=2)
    calls, mirrors = [], []

    def batches(e, b):
        calls.append((e, b))
        mirrors.append(ecqx_tf.strip(cb.model).get_weights())  # the weights LRP runs on (kernels snapped)
        return order.batch(e, b)

    q = compile_(ecqx_tf.quantize(mlp(), bits=4, method="ecqx", Lambda=0.1, relevance_data=(x[:8], y[:8])))
    cb = ecqx_tf.ECQxCallback(relevance_batches=batches, alpha=0.0)  # alpha 0: the stored relevance is this batch's
    cb._fuse_relevance = fused
    q.fit(order.dataset(2), epochs=2, steps_per_epoch=order.steps_per_epoch, verbose=0, callbacks=[cb])
    assert calls == [(e, b) for e in range(2) for b in range(3)]
    mirror = ecqx_tf.strip(q)
    mirror.set_weights(mirrors[-1])
    xb, yb = order.batch(1, 2)
    want = weight_relevance(mirror, xb, yb, layers=["d1", "d2"], target="label")
    for s in ecq_layers(q):
        np.testing.assert_allclose(s.relevance.numpy(), want[s.name], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("method", ["ecq", "ecqx"])
def test_model_target_with_a_layer_cap(method):
    """target_scope='model' with max_layer_sparsity: after every refresh each kernel's indices are
    the reference assignment with min(the paper's lambda at the capped Lambda, the cap's lambda);
    the cap binds on the larger kernel, which then holds exactly floor(cap N) zeros (ECQ)."""
    from ecqx_tf.rate_control import Lambda_for_model_sparsity, lambda_for_layer_cap

    x, y = data()
    kw = dict(relevance_data=(x, y)) if method == "ecqx" else {}
    q = compile_(ecqx_tf.quantize(mlp(), bits=3, method=method, Lambda=0.0, p=0.1, **kw))
    cb = ecqx_tf.ECQxCallback(target_sparsity=0.9, target_scope="model", max_layer_sparsity=0.92)
    state = {"bound": 0}

    class Before(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            slots = ecq_layers(self.model)
            n_largest = max(int(np.prod(s.kernel.shape)) for s in slots)
            state["Lam"] = Lambda_for_model_sparsity([(s.kernel.numpy(), s.centroids.numpy()) for s in slots], 0.9,
                                                     n_largest, max_layer_sparsity=0.92)

    def expect(s, t, n_largest):
        w, c = s.kernel.numpy(), s.centroids.numpy()
        lam = assign.layer_lambda(w, c, state["Lam"], w.size, n_largest)
        cap = lambda_for_layer_cap(w, c, 0.92)
        if lam > cap:
            state["bound"] += 1
            lam = cap
        if method == "ecq":
            return assign.ecq_assign(w, c, lam)
        return assign.ecqx_assign(w, c, lam, s.relevance.numpy(), p=0.1)

    q.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[Before(), cb, Check(cb, expect)])
    assert state["bound"] > 0
    stats = {r["layer"]: r for r in ecqx_tf.layer_stats(q)}
    assert stats["d1"]["sparsity"] <= 0.92 + 1e-12
    if method == "ecq":
        assert stats["d1"]["sparsity"] == pytest.approx(math.floor(0.92 * 864) / 864, abs=1e-12)
        assert stats["<total>"]["sparsity"] == pytest.approx(0.9, abs=2 / 984)
    assert cb.get_config()["max_layer_sparsity"] == 0.92


def test_layer_cap_needs_a_model_target_and_an_empty_kernel_is_reported(caplog):
    for bad in (dict(max_layer_sparsity=0.9), dict(target_sparsity=0.5, max_layer_sparsity=0.9),
                dict(target_sparsity=0.5, target_scope="model", max_layer_sparsity=1.5)):
        with pytest.raises(ValueError, match="max_layer_sparsity"):
            ecqx_tf.ECQxCallback(**bad)
    x, y = data()
    q = compile_(ecqx_tf.quantize(mlp(), bits=3, method="ecq", Lambda=0.0))
    with caplog.at_level("WARNING", logger="ecqx_tf.keras.callback"):
        q.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[ecqx_tf.ECQxCallback(target_sparsity={"d1": 1.0})])
    msgs = [r.getMessage() for r in caplog.records if "every weight of" in r.getMessage()]
    assert len(msgs) == 1 and "every weight of d1 is zero after training" in msgs[0]
