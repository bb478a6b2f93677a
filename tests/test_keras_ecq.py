"""ECQ/ECQx inside tfmot quantization-aware training: the Keras side.

Integer paths are compared exactly: after quantize() and after every refresh, the index
variables equal what the pure assignment functions give on the same float kernels."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import ecqx_tf
from ecqx_tf import assign
from ecqx_tf.keras.api import ecq_layers


def mlp(seed=0):
    tf.keras.utils.set_random_seed(seed)
    i = tf.keras.Input((6, 6, 1))
    x = tf.keras.layers.Flatten(name="flat")(i)
    x = tf.keras.layers.Dense(24, activation="relu", name="d1")(x)
    x = tf.keras.layers.Dropout(0.1, name="drop")(x)
    x = tf.keras.layers.Dense(5, name="d2")(x)
    return tf.keras.Model(i, x)


def cnn(seed=0):
    tf.keras.utils.set_random_seed(seed)
    i = tf.keras.Input((10, 10, 1))
    x = tf.keras.layers.Conv2D(4, 3, use_bias=False, name="c1")(i)
    x = tf.keras.layers.BatchNormalization(name="bn1")(x)
    x = tf.keras.layers.ReLU(name="r1")(x)
    x = tf.keras.layers.MaxPooling2D(name="p1")(x)
    x = tf.keras.layers.Flatten(name="f")(x)
    x = tf.keras.layers.Dense(5, name="d")(x)
    return tf.keras.Model(i, x)


def data(model, n=96, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + tuple(model.input_shape[1:]), dtype=np.float32)
    y = rng.integers(0, model.output_shape[-1], n)
    return x, y


def expected_ecq(qmodel):
    """Indices the pure functions give for the model's current float kernels."""
    slots = ecq_layers(qmodel)
    n_largest = max(int(np.prod(s.kernel.shape)) for s in slots)
    out = {}
    for s in slots:
        w, c = s.kernel.numpy(), s.centroids.numpy()
        lam = assign.layer_lambda(w, c, s.config.Lambda, w.size, n_largest, reduce=s.config.lambda_reduce)
        out[s.name] = (w, c, lam)
    return out


def compile_(q):
    q.compile(tf.keras.optimizers.Adam(1e-2), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return q


@pytest.mark.parametrize("build", [mlp, cnn])
def test_quantize_initial_assignment_is_ecq_of_float_kernel(build):
    m = build()
    before = [w.copy() for w in m.get_weights()]
    q = ecqx_tf.quantize(m, bits=3, method="ecq", Lambda=0.1)
    assert all(np.array_equal(a, b) for a, b in zip(before, m.get_weights())), "user's model changed"
    assert not any("quant" in l.name for l in m.layers)
    folded = ecqx_tf.fold_batchnorm(m)  # cnn: bn1 folded into c1 (quantize's default)
    assert [l.name for l in folded.layers if "bn" in l.name] == []
    for s in ecq_layers(q):
        w_float = folded.get_layer(s.name).kernel.numpy()
        np.testing.assert_array_equal(s.kernel.numpy(), w_float)  # shadow copy starts at the float kernel
        g = ecqx_tf.make_grid(w_float, 3, "symmetric")
        np.testing.assert_array_equal(s.centroids.numpy(), g.centroids)
    for name, (w, c, lam) in expected_ecq(q).items():
        slot = [s for s in ecq_layers(q) if s.name == name][0]
        np.testing.assert_array_equal(slot.indices.numpy(), assign.ecq_assign(w, c, lam))


def test_lambda_zero_is_nearest_neighbour():
    m = mlp()
    q = ecqx_tf.quantize(m, bits=4, method="ecq", Lambda=0.0)
    for s in ecq_layers(q):
        np.testing.assert_array_equal(s.indices.numpy(), assign.nearest_assign(s.kernel.numpy(), s.centroids.numpy()))


@pytest.mark.parametrize("build,fold", [(mlp, True), (cnn, True), (cnn, False)])
def test_strip_kernels_are_exact_centroids_and_rest_is_trained(build, fold):
    m = build()
    x, y = data(m)
    q = compile_(ecqx_tf.quantize(m, bits=4, method="ecq", Lambda=0.05, fold_batchnorm=fold))
    q.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[ecqx_tf.ECQxCallback()])
    info = ecqx_tf.quantization_info(q)
    plain = ecqx_tf.strip(q)
    arch = ecqx_tf.fold_batchnorm(m) if fold else m
    assert [l.name for l in plain.layers][1:] == [l.name for l in arch.layers][1:]
    assert not any(isinstance(l, tf.keras.layers.Wrapper) for l in plain.layers)
    for name, qk in info.items():
        np.testing.assert_array_equal(plain.get_layer(name).kernel.numpy(), qk.values())
        slot = [s for s in ecq_layers(q) if s.name == name][0]
        np.testing.assert_array_equal(qk.values(), tf.gather(slot.centroids, slot.indices).numpy())
        np.testing.assert_array_equal(qk.integers(), np.rint(qk.values() / np.float32(qk.step)).astype(int))
    # The stripped model computes what the float architecture computes with snapped kernels.
    ref = tf.keras.models.clone_model(arch)
    ref.set_weights(plain.get_weights())
    np.testing.assert_array_equal(ref.predict(x, verbose=0), plain.predict(x, verbose=0))
    if build is cnn and not fold:  # BatchNorm statistics were trained, not reset
        np.testing.assert_array_equal(plain.get_layer("bn1").get_weights()[2], q.get_layer("bn1").get_weights()[2])


def test_layers_followed_by_relu_layers_stay_quantized(tmp_path):
    """tfmot's layer+ReLU transform must not drop ECQ (it swaps in a no-op config by default)."""
    tf.keras.utils.set_random_seed(0)
    i = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Conv2D(3, 3, name="c")(i)
    x = tf.keras.layers.ReLU(name="rc")(x)
    x = tf.keras.layers.Flatten(name="f")(x)
    x = tf.keras.layers.Dense(6, name="d")(x)
    x = tf.keras.layers.Activation("relu", name="rd")(x)
    m = tf.keras.Model(i, tf.keras.layers.Dense(3, name="o")(x))
    x_, y_ = data(m, n=32)
    q = compile_(ecqx_tf.quantize(m, method="ecqx", Lambda=0.1, relevance_data=(x_, y_)))
    slots = {s.name: s for s in ecq_layers(q)}
    assert set(slots) == {"c", "d", "o"}
    assert not slots["c"].config.quantize_output and not slots["d"].config.quantize_output
    assert slots["o"].config.quantize_output
    q.fit(x_, y_, epochs=1, batch_size=16, verbose=0, callbacks=[ecqx_tf.ECQxCallback()])
    for name, qk in ecqx_tf.quantization_info(q).items():
        np.testing.assert_array_equal(ecqx_tf.strip(q).get_layer(name).kernel.numpy(), qk.values())
    q2 = ecqx_tf.load_model(ecqx_tf.save_model(q, tmp_path / "q.h5"))
    np.testing.assert_array_equal(q.predict(x_, verbose=0), q2.predict(x_, verbose=0))


def test_strip_sequential_model():
    tf.keras.utils.set_random_seed(0)
    m = tf.keras.Sequential([tf.keras.layers.Flatten(input_shape=(4, 4, 1), name="f"),
                             tf.keras.layers.Dense(8, activation="relu", name="a"), tf.keras.layers.Dense(3, name="b")])
    q = ecqx_tf.quantize(m, method="ecq", Lambda=0.1)
    plain = ecqx_tf.strip(q)
    assert isinstance(plain, tf.keras.Sequential) and [l.name for l in plain.layers] == ["f", "a", "b"]
    for name, qk in ecqx_tf.quantization_info(q).items():
        np.testing.assert_array_equal(plain.get_layer(name).kernel.numpy(), qk.values())
    x = np.random.default_rng(0).random((4, 4, 4, 1), dtype=np.float32)
    ref = tf.keras.models.clone_model(m)
    ref.set_weights(plain.get_weights())
    np.testing.assert_array_equal(ref.predict(x, verbose=0), plain.predict(x, verbose=0))


def test_callback_refreshes_every_step_and_final_indices_are_ecq_of_final_weights():
    m = mlp()
    x, y = data(m)
    q = compile_(ecqx_tf.quantize(m, bits=4, method="ecq", Lambda=0.1))
    start = {s.name: s.indices.numpy().copy() for s in ecq_layers(q)}
    cb = ecqx_tf.ECQxCallback()
    q.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[cb])
    assert cb.refreshes == 2 * 3
    changed = False
    for name, (w, c, lam) in expected_ecq(q).items():
        slot = [s for s in ecq_layers(q) if s.name == name][0]
        np.testing.assert_array_equal(slot.indices.numpy(), assign.ecq_assign(w, c, lam))
        changed |= not np.array_equal(slot.indices.numpy(), start[name])
    assert changed


def test_refresh_every_k_and_final_refresh():
    m = mlp()
    x, y = data(m)
    q = compile_(ecqx_tf.quantize(m, bits=4, method="ecq", Lambda=0.1))
    cb = ecqx_tf.ECQxCallback(refresh_every=2)
    q.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb])  # 3 steps: refresh at 2, then at end
    assert cb.refreshes == 2
    for name, (w, c, lam) in expected_ecq(q).items():
        slot = [s for s in ecq_layers(q) if s.name == name][0]
        np.testing.assert_array_equal(slot.indices.numpy(), assign.ecq_assign(w, c, lam))


def test_ecqx_training_assignment_matches_pure_function_with_stored_relevance():
    m = mlp()
    x, y = data(m)
    q = compile_(ecqx_tf.quantize(m, bits=4, method="ecqx", Lambda=0.1, p=0.1, relevance_data=(x, y)))
    cb = ecqx_tf.ECQxCallback()
    q.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb])
    for name, (w, c, lam) in expected_ecq(q).items():
        slot = [s for s in ecq_layers(q) if s.name == name][0]
        r = slot.relevance.numpy()
        assert np.any(r != 0), "relevance was stored"
        np.testing.assert_array_equal(slot.indices.numpy(), assign.ecqx_assign(w, c, lam, r, p=0.1))


def test_ste_and_ec2t_gradients():
    layer = tf.keras.layers.Dense(3)
    layer.build((None, 4))
    for rule in ("ste", "ec2t"):
        qz = ecqx_tf.ECQWeightQuantizer(4, "symmetric", rule)
        v = qz.build(layer.kernel.shape, "k_" + rule, layer)
        v["centroids"].assign(np.arange(-7, 8, dtype=np.float32) * 0.1)
        idx = np.random.default_rng(0).integers(0, 15, (4, 3)).astype(np.int32)
        v["indices"].assign(idx)
        g = tf.constant(np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32))
        with tf.GradientTape() as tape:
            out = qz(layer.kernel, True, v)
            loss = tf.reduce_sum(out * g)
        np.testing.assert_array_equal(out.numpy(), (np.arange(-7, 8, dtype=np.float32) * 0.1)[idx])
        grad = tape.gradient(loss, layer.kernel).numpy()
        expect = g.numpy() if rule == "ste" else g.numpy() * np.abs(out.numpy())
        np.testing.assert_allclose(grad, expect, rtol=1e-6)


def test_layer_stats_match_stats_functions():
    from ecqx_tf import stats

    q = ecqx_tf.quantize(mlp(), bits=4, method="ecq", Lambda=0.2)
    rows = {r["layer"]: r for r in ecqx_tf.layer_stats(q)}
    info = ecqx_tf.quantization_info(q)
    for name, qk in info.items():
        r = rows[name]
        assert r["sparsity"] == pytest.approx(np.mean(qk.integers() == 0), abs=0)
        assert r["entropy"] == pytest.approx(stats.index_entropy(qk.indices, len(qk.levels)), abs=1e-12)
        assert r["used_centroids"] == len(np.unique(qk.indices))
        assert r["bits"] == 4 and r["n_weights"] == qk.indices.size
    total = rows["<total>"]
    allints = np.concatenate([qk.integers().ravel() for qk in info.values()])
    assert total["sparsity"] == pytest.approx(np.mean(allints == 0), abs=0)


def test_save_load_round_trip(tmp_path):
    m = cnn()
    x, y = data(m)
    q = compile_(ecqx_tf.quantize(m, bits=3, method="ecq", Lambda=0.1))
    q.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[ecqx_tf.ECQxCallback()])
    path = ecqx_tf.save_model(q, tmp_path / "q.h5")
    q2 = ecqx_tf.load_model(path)
    np.testing.assert_array_equal(q.predict(x, verbose=0), q2.predict(x, verbose=0))
    for a, b in zip(ecq_layers(q), ecq_layers(q2)):
        assert a.config == b.config
        np.testing.assert_array_equal(a.indices.numpy(), b.indices.numpy())
    assert ecqx_tf.quantization_info(q) == ecqx_tf.quantization_info(q2)
    with pytest.raises(ValueError, match=r"\.h5"):
        ecqx_tf.save_model(q, tmp_path / "q.keras")
    ecqx_tf.save_model(ecqx_tf.strip(q), tmp_path / "s.keras")
    s2 = ecqx_tf.load_model(tmp_path / "s.keras")
    np.testing.assert_array_equal(s2.predict(x, verbose=0), ecqx_tf.strip(q).predict(x, verbose=0))


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ecqx_tf.load_model(tmp_path / "missing.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not a loadable Keras model"):
        ecqx_tf.load_model(bad)


@pytest.mark.parametrize(
    "cls,kw",
    [
        (ecqx_tf.ECQWeightQuantizer, dict(bits=3, grid="paper", gradient="ec2t")),
        (ecqx_tf.ECQQuantizeConfig, dict(bits=5, grid="symmetric", method="ecq", Lambda=0.3, p=0.2, lambda_reduce="max")),
        (ecqx_tf.ECQQuantizeConfig, dict(bits=3, method="ecqx", quantize_output=False)),
    ],
)
def test_get_config_round_trip(cls, kw):
    obj = cls(**kw)
    again = cls.from_config(obj.get_config())
    assert again == obj and again.get_config() == obj.get_config()
    assert cls.from_config({**obj.get_config(), "bits": 2}) != obj


def test_callback_config():
    cb = ecqx_tf.ECQxCallback(refresh_every=3, alpha=0.2)
    assert ecqx_tf.ECQxCallback(**cb.get_config()).get_config() == cb.get_config()


@pytest.mark.parametrize(
    "kw,exc,msg",
    [
        (dict(method="foo"), ValueError, "unknown method 'foo'; accepted: ecq, ecqx"),
        (dict(grid="log"), ValueError, "unknown grid 'log'; accepted: symmetric, paper"),
        (dict(bits=1), ValueError, "bits must be in 2..8"),
        (dict(bits=9), ValueError, "bits must be in 2..8"),
        (dict(bits=4.0), TypeError, "bits must be an int"),
        (dict(Lambda=-0.1), ValueError, "Lambda must be >= 0"),
        (dict(p=1.5), ValueError, r"p must be in \[0, 1\]"),
        (dict(method="ecqx"), ValueError, "needs relevance_data"),
        (dict(exclude=["nope"]), ValueError, "exclude names layers the model does not have"),
    ],
)
def test_bad_arguments(kw, exc, msg):
    args = dict(bits=4, method="ecq")
    args.update(kw)
    with pytest.raises(exc, match=msg):
        ecqx_tf.quantize(mlp(), **args)


def test_bad_models_and_data():
    i = tf.keras.Input((4, 3))
    lstm = tf.keras.Model(i, tf.keras.layers.Dense(2, name="head")(tf.keras.layers.LSTM(3, name="rnn")(i)))
    with pytest.raises(ValueError, match=r"layer 'rnn' \(LSTM\): unsupported layer type\. Supported layer types: "):
        ecqx_tf.quantize(lstm, method="ecq")
    i = tf.keras.Input((4, 4, 1))
    nothing = tf.keras.Model(i, tf.keras.layers.Flatten()(i))
    with pytest.raises(ValueError, match="no quantizable layer"):
        ecqx_tf.quantize(nothing, method="ecq")
    with pytest.raises(ValueError, match="no quantizable layer"):
        ecqx_tf.quantize(mlp(), method="ecq", exclude=["d1", "d2"])
    m = mlp()
    with pytest.raises(ValueError, match=r"x has shape \(3, 5, 5, 1\) but model .* expects input shape \(None, 6, 6, 1\)"):
        ecqx_tf.quantize(m, method="ecqx", relevance_data=(np.zeros((3, 5, 5, 1)), np.zeros(3, int)))
    with pytest.raises(ValueError, match="y has 2 labels .* but x has 3 samples"):
        ecqx_tf.quantize(m, method="ecqx", relevance_data=(np.zeros((3, 6, 6, 1)), np.zeros(2, int)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        ecqx_tf.quantize(m, method="ecqx", relevance_data=(np.zeros((3, 6, 6, 1)), np.array([0, 1, 9])))
    with pytest.raises(TypeError, match="tf.keras.Model"):
        ecqx_tf.quantize("model.keras")


def test_exclude_keeps_layer_float():
    q = ecqx_tf.quantize(mlp(), method="ecq", exclude=["d2"])
    assert [s.name for s in ecq_layers(q)] == ["d1"]
    assert set(ecqx_tf.quantization_info(q)) == {"d1"}


def test_import_keeps_eager_mode():
    code = "import ecqx_tf, ecqx_tf.relevance, firmware_export, models.datasets; import tensorflow as tf; print(tf.executing_eagerly())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True"


MIRRORED = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import ecqx_tf
    from ecqx_tf import assign
    from ecqx_tf.keras.api import ecq_layers
    from ecqx_tf.keras.finetune import quantize_and_train
    tf.keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        i = tf.keras.Input((6, 6, 1)); h = tf.keras.layers.Flatten()(i)
        h = tf.keras.layers.Dense(16, activation="relu", name="d1")(h); o = tf.keras.layers.Dense(4, name="d2")(h)
        m = tf.keras.Model(i, o)
    rng = np.random.default_rng(0)
    x = rng.random((128, 6, 6, 1), dtype=np.float32); y = rng.integers(0, 4, 128)
    ft = quantize_and_train(m, x, y, x, y, bits=4, method="ecqx", Lambda=0.1, epochs=1, batch_size=32,
                            relevance_samples=64, strategy=strategy)
    slots = ecq_layers(ft.qmodel)
    n_largest = max(s.kernel.numpy().size for s in slots)
    for s in slots:
        per_replica = [v.numpy() for v in s.indices.values]
        rel = [v.numpy() for v in s.relevance.values]
        assert len(per_replica) == 2
        assert all(np.array_equal(per_replica[0], p) for p in per_replica), "indices differ between replicas"
        assert all(np.array_equal(rel[0], r) for r in rel), "relevances differ between replicas"
        kernels = [v.numpy() for v in s.kernel.values]
        assert all(np.array_equal(kernels[0], k) for k in kernels)
        w, c = kernels[0], s.centroids.numpy()
        lam = assign.layer_lambda(w, c, 0.1, w.size, n_largest)
        assert np.array_equal(per_replica[0], assign.ecqx_assign(w, c, lam, rel[0], p=0.1))
    print("MIRRORED_OK", ft.refreshes)
    """
)


def test_mirrored_strategy_two_cpu_replicas(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MIRRORED_OK 4" in out.stdout


def test_learning_rate_schedules_follow_their_formulas():
    import math

    from ecqx_tf.keras.finetune import learning_rate

    assert learning_rate(1e-3, "constant", 100) == pytest.approx(1e-3)
    sched = learning_rate(2e-3, "cosine", 40)
    for t in (0, 10, 20, 39, 40, 80):
        expected = 2e-3 * 0.5 * (1 + math.cos(math.pi * min(t, 40) / 40))
        assert float(sched(t)) == pytest.approx(expected, rel=1e-4, abs=1e-9)  # float32
    with pytest.raises(ValueError, match=r"unknown lr_schedule 'step'; accepted: constant, cosine"):
        learning_rate(1e-3, "step", 10)
    with pytest.raises(ValueError, match="lr must be > 0"):
        learning_rate(0.0, "cosine", 10)


def test_cosine_schedule_spans_exactly_the_run():
    """quantize_and_train(lr_schedule="cosine") decays over exactly the run's optimizer steps."""
    from ecqx_tf.keras.finetune import quantize_and_train

    tf.keras.utils.set_random_seed(0)
    i = tf.keras.Input((12,))
    m = tf.keras.Model(i, tf.keras.layers.Dense(3, name="d")(tf.keras.layers.Dense(8, activation="relu", name="h")(i)))
    rng = np.random.default_rng(0)
    x = rng.random((96, 12), dtype=np.float32)
    y = rng.integers(0, 3, 96)
    ft = quantize_and_train(m, x, y, x, y, bits=3, method="ecq", Lambda=0.1, epochs=2, batch_size=32,
                            lr_schedule="cosine")
    opt = ft.qmodel.optimizer
    steps = int(opt.iterations.numpy())
    assert steps == 2 * 3
    import math

    # the rate of the last step (t = T - 1) of a decay over exactly the run's T steps
    assert float(np.asarray(opt.learning_rate)) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 5 / 6)), rel=1e-4)
    sched = opt._learning_rate  # the schedule object Keras evaluates each step
    assert sched.decay_steps == steps and float(sched(0)) == pytest.approx(1e-3)
