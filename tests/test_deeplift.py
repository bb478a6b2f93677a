"""DeepLIFT (Rescale) against a slow float64 reference written from the paper's rules
(Shrikumar et al. 2017: linear rule, Rescale rule, chain rule for multipliers), summation-to-delta,
the composite/rule registries and the errors."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from ecqx_tf.relevance import (  # noqa: E402
    DEEPLIFT_COMPOSITES,
    REFERENCES,
    RULES,
    DeepLiftComposite,
    Gradient,
    Rescale,
    RescaleMax,
    UnsupportedLayerError,
    ZPlus,
    deeplift_layer_relevance,
    deeplift_weight_relevance,
    get_deeplift_composite,
    rule_from_config,
)

L = tf.keras.layers
THR = 1e-7


# ---------------------------------------------------------------------------------------------
# slow reference: every layer as explicit connections on flat float64 vectors (one sample)


def _same_pad(n, k, s):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2


def _conv_connections(layer, in_shape):
    """(M [in, out], bias [out], conn [(i, j, kernel flat index)]) of a Conv2D on one sample."""
    H, W, C = in_shape
    k = layer.kernel.numpy().astype(np.float64)
    kh, kw, _, F = k.shape
    sh, sw = layer.strides
    if layer.padding == "same":
        OH, pt = _same_pad(H, kh, sh)
        OW, pl = _same_pad(W, kw, sw)
    else:
        OH, OW, pt, pl = (H - kh) // sh + 1, (W - kw) // sw + 1, 0, 0
    M = np.zeros((H * W * C, OH * OW * F))
    conn = []
    for oh in range(OH):
        for ow in range(OW):
            for f in range(F):
                j = (oh * OW + ow) * F + f
                for a in range(kh):
                    for b in range(kw):
                        ih, iw = oh * sh + a - pt, ow * sw + b - pl
                        if not (0 <= ih < H and 0 <= iw < W):
                            continue
                        for c in range(C):
                            i = (ih * W + iw) * C + c
                            M[i, j] += k[a, b, c, f]
                            conn.append((i, j, np.ravel_multi_index((a, b, c, f), k.shape)))
    bias = np.tile(layer.bias.numpy().astype(np.float64), OH * OW) if layer.use_bias else np.zeros(OH * OW * F)
    return M, bias, conn, (OH, OW, F)


def _pool_windows(layer, in_shape, global_=False):
    H, W, C = in_shape
    if global_:
        return [[(ih * W + iw) * C + c for ih in range(H) for iw in range(W)] for c in range(C)], (C,)
    (ph, pw), (sh, sw) = layer.pool_size, layer.strides
    OH, OW = (H - ph) // sh + 1, (W - pw) // sw + 1
    wins = []
    for oh in range(OH):
        for ow in range(OW):
            for c in range(C):
                wins.append([((oh * sh + a) * W + (ow * sw + b)) * C + c for a in range(ph) for b in range(pw)])
    return wins, (OH, OW, C)


def _ops(model):
    """The model as a list of reference ops."""
    ops = []
    shape = tuple(model.input_shape[1:])
    for layer in model.layers:
        t = type(layer).__name__
        if t == "InputLayer":
            continue
        if t == "Dense":
            k = layer.kernel.numpy().astype(np.float64)
            conn = [(i, j, i * k.shape[1] + j) for i in range(k.shape[0]) for j in range(k.shape[1])]
            ops.append(("linear", layer.name, k, layer.bias.numpy().astype(np.float64), conn, k))
            shape = (k.shape[1],)
        elif t == "Conv2D":
            M, b, conn, shape = _conv_connections(layer, shape)
            ops.append(("linear", layer.name, M, b, conn, layer.kernel.numpy().astype(np.float64)))
        elif t == "BatchNormalization":
            f = layer.gamma.numpy() / np.sqrt(layer.moving_variance.numpy() + layer.epsilon)
            n = int(np.prod(shape))
            fr = np.tile(f.astype(np.float64), n // f.size)
            off = np.tile((layer.beta.numpy() - layer.moving_mean.numpy() * f).astype(np.float64), n // f.size)
            ops.append(("linear", None, np.diag(fr), off, None, None))
        elif t in ("MaxPooling2D", "GlobalMaxPooling2D"):
            wins, shape = _pool_windows(layer, shape, global_=t.startswith("Global"))
            ops.append(("maxpool", wins))
        elif t in ("Flatten", "Dropout"):
            shape = (int(np.prod(shape)),) if t == "Flatten" else shape
            continue
        elif t == "ReLU":
            ops.append(("act", "relu"))
            continue
        elif t == "Activation":
            ops.append(("act", layer.get_config()["activation"]))
            continue
        else:
            raise AssertionError(t)
        act = getattr(layer, "activation", None)
        name = getattr(act, "__name__", "linear")
        if t in ("Dense", "Conv2D") and name not in ("linear", "softmax"):  # explain the logits
            ops.append(("act", name))
    return ops


_F = {"relu": (lambda v: np.maximum(v, 0), lambda v: (v > 0).astype(float)),
      "tanh": (np.tanh, lambda v: 1 - np.tanh(v) ** 2)}


def _forward(ops, v):
    acts = []
    for op in ops:
        acts.append(v)
        if op[0] == "linear":
            v = v @ op[2] + op[3]
        elif op[0] == "act":
            v = _F[op[1]][0](v)
        else:
            v = np.array([max(v[i] for i in w) for w in op[1]])
    return acts, v


def reference_deeplift(model, x, ref, target):
    """Input contributions, per-layer output contributions and weight contributions (float64) of
    one sample for logit ``target``, from the paper's rules."""
    ops = _ops(model)
    acts, out = _forward(ops, x.ravel().astype(np.float64))
    acts0, out0 = _forward(ops, ref.ravel().astype(np.float64))
    m = np.zeros(out.size)
    m[target] = 1.0
    layer_c, weight_c = {}, {}
    for k in range(len(ops) - 1, -1, -1):
        op, a, a0 = ops[k], acts[k], acts0[k]
        if op[0] == "linear":
            _, name, M, b, conn, kernel = op
            dz = (a - a0) @ M
            if name is not None:
                layer_c[name] = dz * m
                kf = kernel.ravel()
                wc = np.zeros(kf.size)
                for i, j, q in conn:  # C_ij = w_ij * da_i * m_j, summed over shared kernel entries
                    wc[q] += kf[q] * (a[i] - a0[i]) * m[j]
                weight_c[name] = wc.reshape(kernel.shape)
            m = M @ m  # linear rule: multipliers are the weights
        elif op[0] == "act":
            f, fp = _F[op[1]]
            dx = a - a0
            resc = np.where(np.abs(dx) < THR, fp(a), (f(a) - f(a0)) / np.where(np.abs(dx) < THR, 1, dx))
            m = m * resc  # Rescale rule
        else:  # max pooling, RescaleMax: x-winner w, else reference winner r
            new = np.zeros(a.size)
            for o, win in enumerate(op[1]):
                w = win[int(np.argmax([a[i] for i in win]))]
                r = win[int(np.argmax([a0[i] for i in win]))]
                dy = a[w] - a0[r]
                if abs(a[w] - a0[w]) >= THR:
                    new[w] += m[o] * dy / (a[w] - a0[w])
                elif abs(a[r] - a0[r]) >= THR:
                    new[r] += m[o] * dy / (a[r] - a0[r])
                else:
                    new[w] += m[o]
            m = new
    return (x.ravel() - ref.ravel()) * m, layer_c, weight_c, out[target] - out0[target]


# ---------------------------------------------------------------------------------------------
# models


def tiny_mlp(seed=0):
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((6,))
    h = L.Dense(5, bias_initializer=tf.keras.initializers.RandomNormal(stddev=0.5, seed=seed), name="d1")(inp)
    h = L.Activation("tanh", name="tanh")(h)
    h = L.Dense(4, activation="relu", bias_initializer=tf.keras.initializers.RandomNormal(stddev=0.5, seed=seed + 1),
                name="d2")(h)
    h = L.Dropout(0.3)(h)
    h = L.Dense(3, name="d3")(h)
    return tf.keras.Model(inp, h, name="tiny_mlp")


def tiny_cnn(seed=0, bn=False):
    tf.keras.utils.set_random_seed(seed)
    rn = tf.keras.initializers.RandomNormal(stddev=0.3, seed=seed)
    inp = tf.keras.Input((6, 6, 2))
    h = L.Conv2D(3, 3, padding="same", activation=None if bn else "relu", bias_initializer=rn, name="c1")(inp)
    if bn:
        h = L.BatchNormalization(name="bn")(h)
        h = L.ReLU()(h)
    h = L.MaxPooling2D(2, name="p1")(h)
    h = L.Conv2D(4, 2, padding="valid", bias_initializer=rn, name="c2")(h)
    h = L.ReLU(name="r2")(h)
    h = L.Flatten()(h)
    h = L.Dense(3, name="out")(h)
    m = tf.keras.Model(inp, h, name="tiny_cnn")
    if bn:
        bnl = m.get_layer("bn")
        rng = np.random.default_rng(seed)
        bnl.set_weights([rng.uniform(0.5, 1.5, 3), rng.normal(0, 0.2, 3), rng.normal(0, 0.2, 3), rng.uniform(0.5, 2, 3)])
    return m


def tiny_gmp(seed=0):
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((5, 5, 2))
    h = L.Conv2D(3, 2, activation="relu", name="c1")(inp)
    h = L.GlobalMaxPooling2D()(h)
    h = L.Dense(2, activation="softmax", name="out")(h)
    return tf.keras.Model(inp, h, name="tiny_gmp")


def _data(model, n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + tuple(model.input_shape[1:])).astype(np.float32)
    y = rng.integers(0, model.output_shape[-1], n)
    return x, y


MODELS = {"mlp": tiny_mlp, "cnn": tiny_cnn, "cnn_bn": lambda s: tiny_cnn(s, bn=True), "gmp": tiny_gmp}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("reference", ["zeros", "mean"])
def test_matches_slow_reference(name, reference):
    model = MODELS[name](1)
    x, y = _data(model, 5, seed=2)
    ref = np.zeros((1,) + x.shape[1:], np.float32) if reference == "zeros" else x.mean(0, keepdims=True)
    lr = deeplift_layer_relevance(model, x, y, reference=reference, batch_size=2)
    wr = deeplift_weight_relevance(model, x, y, reference=reference, batch_size=3)
    n = len(x)
    ref_in, ref_layers, ref_w = [], {}, {}
    for s in range(n):
        a, lc, wc, _ = reference_deeplift(model, x[s], ref[0], int(y[s]))
        ref_in.append(a / n)
        for k, v in lc.items():
            ref_layers.setdefault(k, []).append(v / n)
        for k, v in wc.items():
            ref_w[k] = ref_w.get(k, 0) + v / n
    ref_in = np.stack(ref_in)
    tol = dict(rtol=1e-4, atol=1e-6 * max(1.0, np.abs(ref_in).max()))
    np.testing.assert_allclose(lr.input.reshape(n, -1), ref_in, **tol)
    for k, v in ref_layers.items():
        np.testing.assert_allclose(lr.layers[k].reshape(n, -1), np.stack(v), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(wr[k], ref_w[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("reference", ["zeros", "mean"])
def test_summation_to_delta(name, reference):
    """sum_i C_i = t(x) - t(ref) per sample at the input; per layer for units and weights (means)."""
    model = MODELS[name](3)
    x, y = _data(model, 7, seed=4)
    ref = np.zeros((1,) + x.shape[1:], np.float32) if reference == "zeros" else x.mean(0, keepdims=True)
    logits_model = model
    if name == "gmp":  # compare logits: rebuild without the softmax
        logits_model = tf.keras.Model(model.input, model.get_layer("out").output)
        logits_model.get_layer("out").activation = tf.keras.activations.linear
    delta = logits_model(x).numpy()[np.arange(len(x)), y] - logits_model(ref).numpy()[0, y]
    if name == "gmp":
        model.get_layer("out").activation = tf.keras.activations.softmax
    lr = deeplift_layer_relevance(model, x, y, reference=reference)
    wr = deeplift_weight_relevance(model, x, y, reference=reference)
    n = len(x)
    np.testing.assert_allclose(lr.input.reshape(n, -1).sum(1) * n, delta, rtol=1e-4, atol=1e-5)
    for k in lr.layers:
        np.testing.assert_allclose(lr.layers[k].reshape(n, -1).sum(1) * n, delta, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(wr[k].sum(), delta.mean(), rtol=1e-4, atol=1e-5)


def test_batch_size_and_reference_data_and_array_reference():
    model = tiny_cnn(0)
    x, y = _data(model, 9, seed=1)
    a = deeplift_weight_relevance(model, x, y, reference="mean", batch_size=2)
    b = deeplift_weight_relevance(model, x, y, reference="mean", batch_size=64)
    c = deeplift_weight_relevance(model, x, y, reference=x.mean(0))
    d = deeplift_weight_relevance(model, x[:3], y[:3], reference="mean", reference_data=x)
    e = deeplift_weight_relevance(model, x[:3], y[:3], reference=x.mean(0, keepdims=True))
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(a[k], c[k], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(d[k], e[k], rtol=1e-5, atol=1e-7)


def test_gradient_maxpool_mode_is_exact_only_for_window_constant_reference():
    """The reference implementation's gradient mode keeps summation-to-delta for the zero
    reference (the reference is constant inside every pooling window here) but not in general."""
    model = tiny_cnn(5)
    x, y = _data(model, 8, seed=5)
    x[:, :2] = 0.0
    out = {}
    for ref in ("zeros", "mean"):
        r = np.zeros((1,) + x.shape[1:], np.float32) if ref == "zeros" else x.mean(0, keepdims=True)
        delta = model(x).numpy()[np.arange(8), y] - model(r).numpy()[0, y]
        lr = deeplift_layer_relevance(model, x, y, reference=ref, composite="deeplift_rescale_gradmax")
        out[ref] = np.abs(lr.input.reshape(8, -1).sum(1) * 8 - delta).max()
    assert out["zeros"] < 1e-5
    assert out["mean"] > 1e-3


# ---------------------------------------------------------------------------------------------
# registries, serialization, errors


@pytest.mark.parametrize("name", DEEPLIFT_COMPOSITES.names())
def test_composite_round_trip(name):
    comp = DEEPLIFT_COMPOSITES.get(name)
    assert DeepLiftComposite.from_config(comp.get_config()) == comp
    assert get_deeplift_composite(name) is comp
    assert comp.rule("Dense") == Gradient() and comp.rule("ReLU") == Rescale()
    with pytest.raises(ValueError, match="not supported by DeepLIFT composite"):
        comp.rule("LSTM")


def test_rules_registered_and_round_trip():
    for name, cls in (("rescale", Rescale), ("rescale_max", RescaleMax)):
        assert RULES.get(name) is cls
        r = cls(threshold=1e-6)
        assert rule_from_config(r.get_config()) == r and r.get_config()["name"] == name
    with pytest.raises(ValueError, match="threshold must be a finite number > 0"):
        Rescale(threshold=0.0)
    with pytest.raises(TypeError, match="threshold must be a finite number > 0"):
        RescaleMax(threshold="x")
    assert set(REFERENCES.names()) == {"zeros", "mean"}


def test_errors():
    model = tiny_mlp()
    x, y = _data(model, 4)
    with pytest.raises(ValueError, match="unknown DeepLIFT reference 'median'; accepted: mean, zeros"):
        deeplift_layer_relevance(model, x, y, reference="median")
    with pytest.raises(ValueError, match=r"reference array has shape \(5,\)"):
        deeplift_layer_relevance(model, x, y, reference=np.zeros(5))
    with pytest.raises(ValueError, match="unknown DeepLIFT composite 'epsilon'"):
        deeplift_weight_relevance(model, x, y, composite="epsilon")
    with pytest.raises(ValueError, match="layer 'tanh' is not a kernel layer"):
        deeplift_weight_relevance(model, x, y, layers=["tanh"])
    with pytest.raises(ValueError, match="rule 'zplus' is not available for Dense; accepted: gradient"):
        rules = dict(DEEPLIFT_COMPOSITES.get("deeplift_rescale").layer_rules)
        rules["Dense"] = ZPlus()
        DeepLiftComposite("bad", rules)
    inp = tf.keras.Input((5, 3))
    bad = tf.keras.Model(inp, L.Dense(2)(L.Flatten()(L.LocallyConnected1D(2, 2, name="lc")(inp))))
    with pytest.raises(UnsupportedLayerError, match=r"DeepLIFT cannot handle model.*'lc' \(LocallyConnected1D\)"):
        deeplift_layer_relevance(bad, np.zeros((2, 5, 3)), [0, 1])
