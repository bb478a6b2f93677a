"""ECQ/ECQx on graph models and on every kernel layer type: BatchNorm folding against its formula,
quantize / fit / strip / save / load on a model that holds every layer type of the registry, the
tfmot transforms never leaving a kernel float, relevance without labels, and the QuantizedKernel
hand-off (kernel attribute, keys)."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import ecqx_tf
from ecqx_tf import assign, layers
from ecqx_tf.keras.api import ecq_layers
from ecqx_tf.quantized import QuantizedKernel

L = tf.keras.layers


def _bn_params(bn, seed):
    rng = np.random.RandomState(seed)
    c = bn.moving_mean.shape[0]
    values = []
    for v in bn.weights:
        n = v.name.split("/")[-1].split(":")[0]
        values.append({"gamma": rng.rand(c) + 0.5, "beta": rng.randn(c) * 0.3, "moving_mean": rng.randn(c) * 0.3,
                       "moving_variance": rng.rand(c) + 0.3}[n].astype(np.float32))
    bn.set_weights(values)


KERNELS = {
    "Dense": (lambda: L.Dense(5, use_bias=False, name="k"), (7,)),
    "Conv1D": (lambda: L.Conv1D(5, 3, padding="same", name="k"), (9, 3)),
    "Conv2D": (lambda: L.Conv2D(5, 3, name="k"), (6, 6, 2)),
    "DepthwiseConv2D": (lambda: L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="k"), (5, 5, 3)),
    "SeparableConv2D": (lambda: L.SeparableConv2D(4, 3, depth_multiplier=2, name="k"), (6, 6, 2)),
}


def kernel_bn_model(kind, center=True, scale=True, seed=0):
    make, shape = KERNELS[kind]
    i = tf.keras.Input(shape)
    x = make()(i)
    x = L.BatchNormalization(center=center, scale=scale, name="bn")(x)
    x = L.ReLU(name="r")(x)
    x = L.Flatten(name="f")(x)
    m = tf.keras.Model(i, L.Dense(3, name="o")(x))
    tf.keras.utils.set_random_seed(seed)
    for layer in m.layers:
        if layer.weights and layer.name != "bn":
            layer.set_weights([np.random.RandomState(seed).randn(*w.shape).astype(np.float32) * 0.3
                               for w in layer.get_weights()])
    _bn_params(m.get_layer("bn"), seed)
    return m


@pytest.mark.parametrize("kind", sorted(KERNELS))
@pytest.mark.parametrize("center,scale", [(True, True), (False, False)])
def test_fold_batchnorm_follows_its_formula_and_keeps_the_function(kind, center, scale):
    m = kernel_bn_model(kind, center, scale, seed=1)
    before = [w.copy() for w in m.get_weights()]
    f = ecqx_tf.fold_batchnorm(m)
    assert all(np.array_equal(a, b) for a, b in zip(before, m.get_weights())), "user's model changed"
    assert [l.name for l in f.layers] == [l.name for l in m.layers if l.name != "bn"]
    k, bn, fk = m.get_layer("k"), m.get_layer("bn"), f.get_layer("k")
    mean, var = bn.moving_mean.numpy().astype(np.float64), bn.moving_variance.numpy().astype(np.float64)
    gamma = bn.gamma.numpy().astype(np.float64) if scale else 1.0
    beta = bn.beta.numpy().astype(np.float64) if center else 0.0
    s = gamma / np.sqrt(var + bn.epsilon)
    attr = layers.get(kind).bn_fold
    w = getattr(k, attr).numpy().astype(np.float64)
    # the output channel of depthwise kernel slice [:, :, c, m] is c * M + m
    expect = w * (s.reshape(w.shape[2], w.shape[3]) if kind == "DepthwiseConv2D" else s)
    np.testing.assert_array_equal(getattr(fk, attr).numpy(), expect.astype(np.float32))
    b = k.bias.numpy().astype(np.float64) if k.use_bias else 0.0
    np.testing.assert_array_equal(fk.bias.numpy(), (s * (b - mean) + beta).astype(np.float32))
    x = np.random.RandomState(2).randn(4, *KERNELS[kind][1]).astype(np.float32)
    np.testing.assert_allclose(f(x).numpy(), m(x).numpy(), rtol=1e-5, atol=1e-5)


def test_fold_only_where_it_is_exact():
    i = tf.keras.Input((6,))
    a = L.Dense(4, activation="relu", name="a")(i)
    bn_after_relu = L.BatchNormalization(name="bn1")(a)  # activation in between: not folded
    b = L.Dense(4, name="b")(bn_after_relu)
    bn_fanout = L.BatchNormalization(name="bn2")(b)
    other = L.Dense(4, name="other")(b)  # b also feeds 'other': not folded
    out = L.Dense(2, name="o")(L.Add(name="add")([bn_fanout, other]))
    m = tf.keras.Model(i, out)
    assert ecqx_tf.keras.foldable_batchnorms(m) == []
    f = ecqx_tf.fold_batchnorm(m)
    assert [l.name for l in f.layers] == [l.name for l in m.layers]
    seq = tf.keras.Sequential([tf.keras.Input((5,)), L.Dense(3, name="d"), L.BatchNormalization(name="bn"),
                               L.Dense(2, name="o")])
    fs = ecqx_tf.fold_batchnorm(seq)
    assert isinstance(fs, tf.keras.Sequential) and [l.name for l in fs.layers] == ["d", "o"]


@pytest.mark.parametrize("kind", sorted(KERNELS))
def test_every_kernel_type_quantizes_with_and_without_batchnorm(kind):
    m = kernel_bn_model(kind, seed=3)
    for fold in (True, False):
        q = ecqx_tf.quantize(m, bits=3, method="ecq", Lambda=0.1, fold_batchnorm=fold)
        info = ecqx_tf.quantization_info(q)
        spec = layers.get(kind)
        want = [layers.kernel_key("k", a, len(spec.kernels)) for a in spec.kernels] + ["o"]
        assert sorted(info) == sorted(want)  # no kernel silently left float by a tfmot transform
        plain = ecqx_tf.strip(q)
        assert ("bn" in [l.name for l in plain.layers]) is (not fold)
        src = ecqx_tf.fold_batchnorm(m) if fold else m
        for key, qk in info.items():
            assert qk.layer in ("k", "o") and qk.kernel in spec.kernels + ("kernel",)
            kernel = getattr(plain.get_layer(qk.layer), qk.kernel).numpy()
            assert qk.indices.shape == kernel.shape == getattr(src.get_layer(qk.layer), qk.kernel).shape
            np.testing.assert_array_equal(kernel, qk.values())
            assert np.all(np.abs(qk.integers()) <= 3)


def test_quantized_kernel_kernel_field_round_trips_and_defaults():
    qk = QuantizedKernel("sep", 4, "symmetric", 0.5, np.arange(-7, 8, dtype=np.int32),
                         np.zeros((1, 1, 4, 2), np.int32), kernel="pointwise_kernel")
    d = qk.to_dict()
    assert d["kernel"] == "pointwise_kernel" and QuantizedKernel.from_dict(d) == qk
    del d["kernel"]
    assert QuantizedKernel.from_dict(d).kernel == "kernel"


def every_layer_model(seed=0):
    """One model with every layer type of the registry (and a standalone BN)."""
    tf.keras.utils.set_random_seed(seed)
    i = tf.keras.Input((12, 12, 2), name="input")
    c1 = L.Conv2D(6, 3, padding="same", use_bias=False, name="c1")(i)
    c1 = L.BatchNormalization(name="bn_c1")(c1)  # folded
    c1 = L.ReLU(name="r1")(c1)
    dw = L.DepthwiseConv2D(3, padding="same", name="dw")(c1)
    dw = L.BatchNormalization(name="bn_dw")(dw)  # folded
    dw = L.Activation("relu6", name="r6")(dw)
    pw = L.Conv2D(6, 1, name="pw")(dw)
    add = L.Add(name="add")([c1, pw])
    add = L.ReLU(6.0, name="relu6_layer")(add)
    pad = L.ZeroPadding2D(1, name="pad")(add)
    sep = L.SeparableConv2D(6, 3, activation="relu", name="sep")(pad)
    cat = L.Concatenate(name="cat")([sep, add])
    bn = L.BatchNormalization(name="bn_standalone")(cat)  # after a merge: stays float
    mp = L.MaxPooling2D(2, name="mp")(bn)
    ap = L.AveragePooling2D(2, name="ap")(mp)
    g1 = L.GlobalAveragePooling2D(name="gap")(ap)
    g2 = L.GlobalMaxPooling2D(name="gmp")(ap)
    rs = L.Reshape((12, 2), name="rs")(L.Concatenate(name="cat2")([g1, g2]))
    c1d = L.Conv1D(4, 3, padding="same", activation="relu", name="c1d")(rs)
    z1 = L.ZeroPadding1D(1, name="pad1")(c1d)
    m1 = L.MaxPooling1D(2, name="mp1")(z1)
    a1 = L.AveragePooling1D(1, name="ap1")(m1)
    h = L.Add(name="add1")([L.GlobalAveragePooling1D(name="gap1")(a1), L.GlobalMaxPooling1D(name="gmp1")(a1)])
    h = L.Dense(8, activation="sigmoid", name="d1")(L.Dropout(0.1, name="drop")(h))
    h = L.Activation("tanh", name="tanh")(h)
    out = L.Dense(4, name="logits")(L.Flatten(name="flat")(h))
    return tf.keras.Model(i, L.Softmax(name="softmax")(out), name="every_layer")


def _data(model, n=48, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n,) + tuple(model.input_shape[1:]), dtype=np.float32), rng.integers(0, 4, n)


@pytest.mark.slow
def test_every_layer_type_trains_with_ecqx_strips_saves_and_loads(tmp_path):
    m = every_layer_model()
    present = {type(l).__name__ for l in m.layers}
    assert present == set(layers.supported_names()), set(layers.supported_names()) - present
    x, y = _data(m)
    q = ecqx_tf.quantize(m, bits=4, method="ecqx", Lambda=0.1, p=0.1, relevance_data=(x, y))
    q.compile(tf.keras.optimizers.Adam(1e-3), tf.keras.losses.SparseCategoricalCrossentropy())
    cb = ecqx_tf.ECQxCallback(relevance_batch_size=16)
    q.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    assert cb.refreshes == 3
    slots = ecq_layers(q)
    assert [s.name for s in slots] == ["c1", "dw", "pw", "sep/depthwise_kernel", "sep/pointwise_kernel", "c1d", "d1",
                                       "logits"]
    n_largest = max(s.kernel.numpy().size for s in slots)
    for s in slots:  # the final indices are the pure assignment of the final kernels and relevances
        w, c = s.kernel.numpy(), s.centroids.numpy()
        lam = assign.layer_lambda(w, c, 0.1, w.size, n_largest)
        r = s.relevance.numpy()
        assert np.any(r != 0), s.name
        np.testing.assert_array_equal(s.indices.numpy(), assign.ecqx_assign(w, c, lam, r, p=0.1))
    plain = ecqx_tf.strip(q)
    assert "bn_c1" not in [l.name for l in plain.layers] and "bn_standalone" in [l.name for l in plain.layers]
    info = ecqx_tf.quantization_info(q)
    for key, qk in info.items():
        np.testing.assert_array_equal(getattr(plain.get_layer(qk.layer), qk.kernel).numpy(), qk.values())
    path = ecqx_tf.save_model(q, tmp_path / "q.h5")
    q2 = ecqx_tf.load_model(path)
    np.testing.assert_array_equal(q.predict(x, verbose=0), q2.predict(x, verbose=0))
    assert ecqx_tf.quantization_info(q2) == info
    ecqx_tf.save_model(plain, tmp_path / "plain.keras")
    np.testing.assert_array_equal(ecqx_tf.load_model(tmp_path / "plain.keras").predict(x, verbose=0),
                                  plain.predict(x, verbose=0))


def test_excluded_separable_stays_whole_with_tfmot_8bit():
    i = tf.keras.Input((6, 6, 2))
    h = L.SeparableConv2D(3, 3, name="sep")(i)
    m = tf.keras.Model(i, L.Dense(2, name="o")(L.Flatten(name="f")(h)))
    q = ecqx_tf.quantize(m, method="ecq", exclude=["sep"])
    assert [s.name for s in ecq_layers(q)] == ["o"]
    assert [l.name for l in ecqx_tf.strip(q).layers] == [l.name for l in m.layers]


def test_ecqx_without_labels_classifier_and_autoencoder():
    """x alone: a classifier starts its relevance from the predicted class, the autoencoder (output
    shape = input shape) from its whole output; both train and re-assign by the pure function."""
    i = tf.keras.Input((10,))
    h = L.Dense(6, name="enc")(i)
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU(name="r")(h)
    ae = tf.keras.Model(i, L.Dense(10, name="dec")(h))
    x = np.random.default_rng(2).standard_normal((32, 10)).astype(np.float32)
    q = ecqx_tf.quantize(ae, bits=4, method="ecqx", Lambda=0.1, relevance_data=x)
    assert ecqx_tf.keras.api.relevance_data_of(q).mode == "output"
    q.compile("adam", "mse")
    q.fit(x, x, epochs=1, batch_size=16, verbose=0, callbacks=[ecqx_tf.ECQxCallback(relevance_batch_size=16)])
    slots = ecq_layers(q)
    n_largest = max(s.kernel.numpy().size for s in slots)
    for s in slots:
        w, c = s.kernel.numpy(), s.centroids.numpy()
        lam = assign.layer_lambda(w, c, 0.1, w.size, n_largest)
        np.testing.assert_array_equal(s.indices.numpy(), assign.ecqx_assign(w, c, lam, s.relevance.numpy(), p=0.1))
    clf = tf.keras.Model(i, L.Dense(3, name="o")(L.Dense(6, activation="relu", name="h")(i)))
    qc = ecqx_tf.quantize(clf, method="ecqx", relevance_data=x)
    assert ecqx_tf.keras.api.relevance_data_of(qc).mode == "predicted"
    qc2 = ecqx_tf.quantize(clf, method="ecqx", relevance_data=x, relevance_target="output")
    assert ecqx_tf.keras.api.relevance_data_of(qc2).mode == "output"
