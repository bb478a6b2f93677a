"""Relevance through graph models: every rule of the layer registry against a float64 NumPy
reference written from its formula (connection lists for the kernel layers, windows for pooling,
slices for merges), fan-out summation, relevance conservation, targets without labels, DeepLIFT
through the same walker, and iNNvestigate on the graph layers it supports (slow)."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ecqx_tf.relevance import (
    Composite,
    InnvestigateWorker,
    UnsupportedLayerError,
    Z,
    deeplift_layer_relevance,
    deeplift_weight_relevance,
    get_composite,
    layer_relevance,
    weight_relevance,
)

L = tf.keras.layers
EPS = 1e-6


# ---------------------------------------------------------------------------------------------
# float64 references (one sample = one flat NHWC vector; a 1-D input (L, C) is the 2-D (L, 1, C))


def stab(z, eps=EPS):
    return z + eps * (np.sign(z) + (z == 0))


def safe(z):
    return z + 1e-7 * (z == 0)


def same_pad(n, k, s):
    out = -(-n // s)
    return out, max((out - 1) * s + k - n, 0) // 2


def conv_conns(in_hwc, kshape, strides, padding, depthwise=False):
    """Connections (i, j, kernel index) of a Conv2D (kernel [kh, kw, C, F]) or DepthwiseConv2D
    (kernel [kh, kw, C, M], output channel c*M + m) on an (H, W, C) input."""
    H, W, C = in_hwc
    kh, kw, _, F = kshape
    sh, sw = strides
    if padding == "same":
        OH, pt = same_pad(H, kh, sh)
        OW, pl = same_pad(W, kw, sw)
    else:
        OH, OW, pt, pl = (H - kh) // sh + 1, (W - kw) // sw + 1, 0, 0
    out_c = C * F if depthwise else F
    conns = []
    for p in range(OH):
        for q in range(OW):
            for u in range(kh):
                for v in range(kw):
                    r, s_ = p * sh + u - pt, q * sw + v - pl
                    if not (0 <= r < H and 0 <= s_ < W):
                        continue
                    for c in range(C):
                        i = (r * W + s_) * C + c
                        for f in range(F):
                            j = (p * OW + q) * out_c + (c * F + f if depthwise else f)
                            conns.append((i, j, (u, v, c, f)))
    return conns, (OH, OW, out_c)


class Lin:
    """z_j = sum_(i,j,k) a_i W[k] + b_j and the LRP rules on it (float64)."""

    def __init__(self, conns, kernel, bias, n_out):
        self.I = np.array([c[0] for c in conns])
        self.J = np.array([c[1] for c in conns])
        self.K = [c[2] for c in conns]
        self.kernel = np.asarray(kernel, np.float64)
        self.w = np.array([self.kernel[k] for k in self.K])
        self.n_out = n_out
        self.b = np.zeros(n_out) if bias is None else np.tile(np.asarray(bias, np.float64), n_out // len(bias))

    def z(self, a):
        out = np.tile(self.b, (a.shape[0], 1))
        np.add.at(out.T, self.J, (a[:, self.I] * self.w).T)
        return out

    def _in(self, contrib, n_in):
        out = np.zeros((contrib.shape[0], n_in))
        np.add.at(out.T, self.I, contrib.T)
        return out

    def rule(self, name, a, r):
        if name == "epsilon":
            z = self.z(a)
            return self._in(a[:, self.I] * self.w * r[:, self.J] / stab(z[:, self.J]), a.shape[1])
        if name == "zplus":
            ap, an = np.maximum(a, 0), np.minimum(a, 0)
            c = ap[:, self.I] * np.maximum(self.w, 0) + an[:, self.I] * np.minimum(self.w, 0)
            zp = np.zeros((a.shape[0], self.n_out))
            np.add.at(zp.T, self.J, c.T)
            return self._in(c * r[:, self.J] / safe(zp[:, self.J]), a.shape[1])
        if name == "flat":
            count = np.bincount(self.J, minlength=self.n_out).astype(np.float64)
            return self._in(np.tile(r[:, self.J] / count[self.J], 1), a.shape[1])
        raise ValueError(name)

    def weight_relevance(self, a, r):
        z = self.z(a)
        per = (self.w * a[:, self.I] * r[:, self.J] / stab(z[:, self.J])).sum(axis=0)
        out = np.zeros(self.kernel.shape)
        for k, v in zip(self.K, per):
            out[k] += v
        return out


def windows(in_hwc, pool, strides):
    H, W, C = in_hwc
    ph, pw = pool
    sh, sw = strides
    OH, OW = (H - ph) // sh + 1, (W - pw) // sw + 1
    out = []
    for p in range(OH):
        for q in range(OW):
            for c in range(C):
                out.append(([((p * sh + u) * W + q * sw + v) * C + c for u in range(ph) for v in range(pw)],
                            (p * OW + q) * C + c))
    return out, (OH, OW, C)


def pool_fwd(a, wins, kind):
    y = np.zeros((a.shape[0], len(wins)))
    for ins, j in wins:
        y[:, j] = a[:, ins].max(1) if kind == "max" else a[:, ins].mean(1)
    return y


def pool_bwd(a, r, wins, kind):
    out = np.zeros_like(a)
    for ins, j in wins:
        if kind == "max":  # winner takes all (first maximum)
            win = np.array(ins)[np.argmax(a[:, ins], axis=1)]
            out[np.arange(a.shape[0]), win] += r[:, j]
        else:  # z-rule R_i = (a_i / n) R_j / z_j
            z = a[:, ins].mean(1)
            for i in ins:
                out[:, i] += (a[:, i] / len(ins)) * r[:, j] / safe(z)
    return out


def pad_index(hwc, pad):
    """Flat indices of the un-padded positions inside the padded map."""
    H, W, C = hwc
    (pt, pb), (pl, pr) = pad
    W2 = W + pl + pr
    return np.array([((r + pt) * W2 + s + pl) * C + c for r in range(H) for s in range(W) for c in range(C)])


def concat(parts_hwc):
    """Index maps of a last-axis concatenation: list of flat indices into the output per part."""
    H, W = parts_hwc[0][:2]
    total = sum(p[2] for p in parts_hwc)
    maps, off = [], 0
    for (_, _, C) in parts_hwc:
        maps.append(np.array([(r * W + s) * total + off + c for r in range(H) for s in range(W) for c in range(C)]))
        off += C
    return maps, (H, W, total)


def head(logits, y):
    r = np.zeros_like(logits)
    r[np.arange(len(y)), y] = logits[np.arange(len(y)), y]
    return r / len(y)


def randomize(model, seed, bias=0.1):
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        new = []
        for v, w in zip(layer.weights, ws):
            name = v.name.split("/")[-1].split(":")[0]
            if name == "bias":
                new.append((rng.randn(*w.shape) * bias).astype(np.float32))
            elif name in ("moving_variance", "gamma"):
                new.append((rng.rand(*w.shape) + 0.5).astype(np.float32))
            elif name in ("moving_mean", "beta"):
                new.append((rng.randn(*w.shape) * 0.2).astype(np.float32))
            else:
                fan_in = int(np.prod(w.shape[:-1])) if "depthwise" not in name else int(np.prod(w.shape[:2]))
                new.append((rng.randn(*w.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32))
        layer.set_weights(new)
    return model


# ---------------------------------------------------------------------------------------------
# graph A (2-D): first-layer flat, depthwise x2, fan-out into Add, padding, separable, concat, pools


def graph_a(seed=0, use_bias=True):
    i = tf.keras.Input((5, 5, 2))
    c1 = L.Conv2D(3, 3, padding="same", activation="relu", use_bias=use_bias, name="c1")(i)
    d1 = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=use_bias, name="d1")(c1)
    r1 = L.ReLU(name="r1")(d1)
    p1 = L.Conv2D(3, 1, use_bias=use_bias, name="p1")(r1)
    a1 = L.Add(name="a1")([c1, p1])
    z1 = L.ZeroPadding2D(1, name="z1")(a1)
    s1 = L.SeparableConv2D(4, 3, activation="relu", use_bias=use_bias, name="s1")(z1)
    cat = L.Concatenate(name="cat")([s1, a1])
    m1 = L.MaxPooling2D(2, name="m1")(cat)
    g = L.GlobalAveragePooling2D(name="g")(m1)
    out = L.Dense(3, use_bias=use_bias, name="out")(g)
    return randomize(tf.keras.Model(i, out, name="graph_a"), seed)


def reference_a(model, x, y, composite):
    """Forward and LRP of graph_a in float64, from the formulas."""
    ker = lambda n: model.get_layer(n)  # noqa: E731
    bias = lambda l: l.bias.numpy() if l.use_bias else None  # noqa: E731
    conv_rule = "zplus" if composite == "epsilon_plus_flat" else "epsilon"
    N = x.shape[0]
    a0 = x.reshape(N, -1).astype(np.float64)
    c1 = ker("c1")
    k, s = conv_conns((5, 5, 2), c1.kernel.shape, (1, 1), "same")
    L1 = Lin(k, c1.kernel.numpy(), bias(c1), int(np.prod(s)))
    h1 = np.maximum(L1.z(a0), 0)
    d1 = ker("d1")
    k, s = conv_conns((5, 5, 3), d1.depthwise_kernel.shape, (1, 1), "same", depthwise=True)
    L2 = Lin(k, d1.depthwise_kernel.numpy(), bias(d1), int(np.prod(s)))
    z2 = L2.z(h1)
    h2 = np.maximum(z2, 0)
    p1 = ker("p1")
    k, s = conv_conns((5, 5, 6), p1.kernel.shape, (1, 1), "same")
    L3 = Lin(k, p1.kernel.numpy(), bias(p1), int(np.prod(s)))
    h3 = L3.z(h2)
    add = h1 + h3
    idx_pad = pad_index((5, 5, 3), ((1, 1), (1, 1)))
    padded = np.zeros((N, 7 * 7 * 3))
    padded[:, idx_pad] = add
    s1 = ker("s1")
    k, s = conv_conns((7, 7, 3), s1.depthwise_kernel.shape, (1, 1), "valid", depthwise=True)
    L4 = Lin(k, s1.depthwise_kernel.numpy(), None, int(np.prod(s)))
    u = L4.z(padded)
    k, s = conv_conns(s, s1.pointwise_kernel.shape, (1, 1), "valid")
    L5 = Lin(k, s1.pointwise_kernel.numpy(), bias(s1), int(np.prod(s)))
    h5 = np.maximum(L5.z(u), 0)
    maps, cshape = concat([(5, 5, 4), (5, 5, 3)])
    cat = np.zeros((N, int(np.prod(cshape))))
    cat[:, maps[0]] = h5
    cat[:, maps[1]] = add
    wins, mshape = windows(cshape, (2, 2), (2, 2))
    m1 = pool_fwd(cat, wins, "max")
    gwins = [([(q * mshape[2]) + c for q in range(mshape[0] * mshape[1])], c) for c in range(mshape[2])]
    g = pool_fwd(m1, gwins, "avg")
    out = ker("out")
    L6 = Lin([(i_, j, (i_, j)) for i_ in range(7) for j in range(3)], out.kernel.numpy(), bias(out), 3)
    logits = L6.z(g)

    R = {}
    r = head(logits, y)
    R["out"] = (r, L6.weight_relevance(g, r))
    r = L6.rule("epsilon", g, r)
    r = pool_bwd(m1, r, gwins, "avg")
    r = pool_bwd(cat, r, wins, "max")
    r_s1, r_add = r[:, maps[0]], r[:, maps[1]]
    R["s1/pointwise_kernel"] = (r_s1, L5.weight_relevance(u, r_s1))
    r_u = L5.rule(conv_rule, u, r_s1)
    R["s1/depthwise_kernel"] = (r_u, L4.weight_relevance(padded, r_u))
    r_pad = L4.rule(conv_rule, padded, r_u)
    r_add = r_add + r_pad[:, idx_pad]  # fan-out of a1: concat and padding
    r_c1 = r_add * h1 / stab(add)  # Add: epsilon split
    r_p1 = r_add * h3 / stab(add)
    R["p1"] = (r_p1, L3.weight_relevance(h2, r_p1))
    r_r1 = L3.rule(conv_rule, h2, r_p1)
    r_d1 = r_r1 * (z2 > 0)  # ReLU layer: gradient
    R["d1"] = (r_d1, L2.weight_relevance(h1, r_d1))
    r_c1 = r_c1 + L2.rule(conv_rule, h1, r_d1)  # fan-out of c1: add and depthwise
    R["c1"] = (r_c1, L1.weight_relevance(a0, r_c1))
    first = "flat" if composite == "epsilon_plus_flat" else "epsilon"
    r_in = L1.rule(first, a0, r_c1)
    return r_in, R, logits


def close(got, ref, rtol=2e-4):
    got = np.asarray(got, np.float64).reshape(ref.shape)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-6 * max(np.abs(ref).max(), 1e-12))


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon"])
def test_graph_a_matches_float64_reference(composite):
    model = graph_a(seed=3)
    rng = np.random.RandomState(3)
    x, y = rng.rand(4, 5, 5, 2).astype(np.float32), rng.randint(0, 3, 4)
    r_in, R, logits = reference_a(model, x, y, composite)
    np.testing.assert_allclose(model(x).numpy(), logits, rtol=1e-5, atol=1e-6)
    got = layer_relevance(model, x, y, composite=composite)
    close(got.input.reshape(4, -1), r_in)
    w = weight_relevance(model, x, y, composite=composite)
    assert set(w) == set(R) == set(got.layers)
    for key, (r_out, r_w) in R.items():
        close(got.layers[key].reshape(4, -1), r_out)
        close(w[key], r_w)


# ---------------------------------------------------------------------------------------------
# graph B (1-D): Conv1D flat/zplus, MaxPooling1D, AveragePooling1D, ZeroPadding1D, fan-out into
# global max and global average pooling, Add, Reshape, Activation(relu6)


def graph_b(seed=0):
    i = tf.keras.Input((12, 2))
    c = L.Conv1D(4, 3, padding="same", activation="relu", name="c")(i)
    mp = L.MaxPooling1D(2, name="mp")(c)
    c2 = L.Conv1D(4, 3, name="c2")(mp)
    act = L.Activation("relu6", name="act")(c2)
    ap = L.AveragePooling1D(2, name="ap")(act)
    zp = L.ZeroPadding1D(1, name="zp")(ap)
    gm = L.GlobalMaxPooling1D(name="gm")(zp)
    ga = L.GlobalAveragePooling1D(name="ga")(zp)
    add = L.Add(name="add")([gm, ga])
    rs = L.Reshape((2, 2), name="rs")(add)
    fl = L.Flatten(name="fl")(rs)
    out = L.Dense(3, name="out")(fl)
    return randomize(tf.keras.Model(i, out, name="graph_b"), seed)


def reference_b(model, x, y):
    N = x.shape[0]
    a0 = x.reshape(N, -1).astype(np.float64)
    c = model.get_layer("c")
    k, s = conv_conns((12, 1, 2), c.kernel.numpy()[:, None].shape, (1, 1), "same")
    L1 = Lin(k, c.kernel.numpy()[:, None], c.bias.numpy(), int(np.prod(s)))
    h1 = np.maximum(L1.z(a0), 0)
    w1, s1 = windows((12, 1, 4), (2, 1), (2, 1))
    mp = pool_fwd(h1, w1, "max")
    c2 = model.get_layer("c2")
    k, s = conv_conns((6, 1, 4), c2.kernel.numpy()[:, None].shape, (1, 1), "valid")
    L2 = Lin(k, c2.kernel.numpy()[:, None], c2.bias.numpy(), int(np.prod(s)))
    z2 = L2.z(mp)
    act = np.clip(z2, 0, 6)
    w2, s2 = windows((4, 1, 4), (2, 1), (2, 1))
    ap = pool_fwd(act, w2, "avg")
    idx = pad_index((2, 1, 4), ((1, 1), (0, 0)))
    zp = np.zeros((N, 16))
    zp[:, idx] = ap
    gw = [([q * 4 + ch for q in range(4)], ch) for ch in range(4)]
    gm, ga = pool_fwd(zp, gw, "max"), pool_fwd(zp, gw, "avg")
    add = gm + ga
    out = model.get_layer("out")
    L3 = Lin([(i_, j, (i_, j)) for i_ in range(4) for j in range(3)], out.kernel.numpy(), out.bias.numpy(), 3)
    logits = L3.z(add)
    R = {}
    r = head(logits, y)
    R["out"] = (r, L3.weight_relevance(add, r))
    r = L3.rule("epsilon", add, r)  # Flatten, Reshape: identity re-indexing
    r_gm, r_ga = r * gm / stab(add), r * ga / stab(add)
    r_zp = pool_bwd(zp, r_gm, gw, "max") + pool_bwd(zp, r_ga, gw, "avg")  # fan-out of zp
    r_ap = r_zp[:, idx]
    r_act = pool_bwd(act, r_ap, w2, "avg")  # Activation: pass
    R["c2"] = (r_act, L2.weight_relevance(mp, r_act))
    r_mp = L2.rule("zplus", mp, r_act)
    r_c = pool_bwd(h1, r_mp, w1, "max")
    R["c"] = (r_c, L1.weight_relevance(a0, r_c))
    r_in = L1.rule("flat", a0, r_c)
    R["c"] = (R["c"][0], R["c"][1][:, 0])
    R["c2"] = (R["c2"][0], R["c2"][1][:, 0])
    return r_in, R, logits


def test_graph_b_matches_float64_reference():
    model = graph_b(seed=5)
    rng = np.random.RandomState(5)
    x, y = rng.randn(5, 12, 2).astype(np.float32), rng.randint(0, 3, 5)
    r_in, R, logits = reference_b(model, x, y)
    np.testing.assert_allclose(model(x).numpy(), logits, rtol=1e-5, atol=1e-6)
    got = layer_relevance(model, x, y)
    close(got.input.reshape(5, -1), r_in)
    w = weight_relevance(model, x, y)
    for key, (r_out, r_w) in R.items():
        close(got.layers[key].reshape(5, -1), r_out)
        close(w[key], r_w)


def test_add_z_rule_is_available_and_differs_only_by_the_stabilizer():
    """A composite may take iNNvestigate's z-rule for Add (safe_divide instead of epsilon)."""
    model = graph_a(seed=4)
    rng = np.random.RandomState(4)
    x, y = rng.rand(3, 5, 5, 2).astype(np.float32), rng.randint(0, 3, 3)
    rules = dict(get_composite("epsilon_plus_flat").layer_rules)
    rules["Add"] = Z()
    comp = Composite("add_z", rules, get_composite("epsilon_plus_flat").first_layer)
    a = weight_relevance(model, x, y, composite=comp)
    b = weight_relevance(model, x, y)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# conservation


def test_conservation_on_a_residual_graph_without_bias():
    """Epsilon rules, zero biases: the input relevance and the relevance at every cut of the graph
    sum to the mean target logit; the two branches of the Add together carry it too."""
    model = graph_a(seed=6, use_bias=False)
    rng = np.random.RandomState(6)
    x, y = rng.rand(6, 5, 5, 2).astype(np.float32), rng.randint(0, 3, 6)
    total = model(x).numpy()[np.arange(6), y].mean()
    got = layer_relevance(model, x, y, composite="epsilon")
    np.testing.assert_allclose(got.input.sum(), total, rtol=1e-3)
    np.testing.assert_allclose(got.layers["out"].sum(), total, rtol=1e-4)
    np.testing.assert_allclose(got.layers["c1"].sum(), total, rtol=1e-3)  # every path passes c1
    w = weight_relevance(model, x, y, composite="epsilon")
    np.testing.assert_allclose(w["out"].sum(), total, rtol=1e-4)
    np.testing.assert_allclose(w["c1"].sum(), total, rtol=1e-3)
    # the pointwise and depthwise halves of the separable carry the same relevance
    np.testing.assert_allclose(w["s1/depthwise_kernel"].sum(), w["s1/pointwise_kernel"].sum(), rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# targets


def test_targets_without_labels():
    model = graph_a(seed=7)
    rng = np.random.RandomState(7)
    x = rng.rand(4, 5, 5, 2).astype(np.float32)
    pred = np.argmax(model(x).numpy(), axis=1)
    a = weight_relevance(model, x)  # classifier: the predicted class
    b = weight_relevance(model, x, pred)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # "output": relevance starts from every output unit with its own value = sum over the classes
    out = weight_relevance(model, x, target="output")
    per_class = [weight_relevance(model, x, np.full(4, c)) for c in range(3)]
    for k in out:
        np.testing.assert_allclose(out[k], sum(p[k] for p in per_class), rtol=1e-4, atol=1e-7)


def autoencoder(seed=0):
    i = tf.keras.Input((6,))
    h = L.Dense(4, activation="relu", name="enc")(i)
    return randomize(tf.keras.Model(i, L.Dense(6, name="dec")(h), name="ae"), seed)


def test_autoencoder_relevance_starts_from_the_whole_output_and_x_x_is_refused():
    model = autoencoder(1)
    x = np.random.RandomState(1).randn(5, 6).astype(np.float32)
    got = layer_relevance(model, x)  # auto: not a classifier (output shape = input shape)
    np.testing.assert_allclose(got.layers["dec"], model(x).numpy() / 5, rtol=1e-6)
    with pytest.raises(ValueError, match=r"regression target \(e\.g\. \(x, x\) for an autoencoder\).*pass x alone"):
        weight_relevance(model, x, x)
    with pytest.raises(ValueError, match="unknown target 'all'; accepted: auto, label, predicted, output"):
        weight_relevance(model, x, target="all")
    with pytest.raises(ValueError, match="target 'predicted' takes no labels"):
        weight_relevance(graph_a(), np.zeros((1, 5, 5, 2), np.float32), [0], target="predicted")


# ---------------------------------------------------------------------------------------------
# DeepLIFT through the same walker


@pytest.mark.parametrize("build,shape", [(graph_a, (5, 5, 2)), (graph_b, (12, 2))])
def test_deeplift_summation_to_delta_on_graphs(build, shape):
    """Multipliers summed at every fan-out: the input contributions sum to the mean delta of the
    target logit, and every kernel on a cut of the graph carries it too."""
    model = build(seed=8)
    rng = np.random.RandomState(8)
    x, y = rng.rand(5, *shape).astype(np.float32), rng.randint(0, 3, 5)
    ref = np.zeros((1, *shape), np.float32)
    delta = (model(x).numpy()[np.arange(5), y] - model(ref).numpy()[0, y]).mean()
    got = deeplift_layer_relevance(model, x, y)
    np.testing.assert_allclose(got.input.sum(), delta, rtol=2e-4, atol=1e-6)
    w = deeplift_weight_relevance(model, x, y)
    np.testing.assert_allclose(w["out"].sum(), delta, rtol=2e-4, atol=1e-6)
    first = "c1" if build is graph_a else "c"
    np.testing.assert_allclose(got.layers[first].sum(), delta, rtol=2e-4, atol=1e-6)


def _max_route(a, a_ref, y_, y_ref, m_y, wins, thr=1e-7):
    """DeepLIFT RescaleMax from its definition: the window's m * dy goes to the x-winner / dx_w, or
    (|dx_w| < thr) to the reference winner / dx_r, or (both tiny) unscaled to the x-winner."""
    res = np.zeros_like(a)
    rows = np.arange(a.shape[0])
    for ins, j in wins:
        ins = np.array(ins)
        w = ins[np.argmax(a[:, ins], axis=1)]
        r = ins[np.argmax(a_ref[0, ins])]
        dy = y_[:, j] - y_ref[0, j]
        dx_w = a[rows, w] - a_ref[0, w]
        dx_r = a[:, r] - a_ref[0, r]
        use_w, use_r = np.abs(dx_w) >= thr, np.abs(dx_r) >= thr
        res[rows, w] += np.where(use_w, m_y[:, j] * dy / np.where(use_w, dx_w, 1), np.where(use_r, 0, m_y[:, j]))
        res[:, r] += np.where(~use_w & use_r, m_y[:, j] * dy / np.where(use_r, dx_r, 1), 0)
    return res


def _rescale(z, z0, h, h0, grad, thr=1e-7):
    dz = z - z0
    return np.where(np.abs(dz) < thr, grad, (h - h0) / np.where(np.abs(dz) < thr, 1, dz))


def test_deeplift_graph_b_matches_a_float64_multiplier_reference():
    """Linear rule through Conv1D / padding / average pooling / Add / Reshape, Rescale at the fused
    relu and at relu6, RescaleMax at both max poolings; written out for graph_b, zero reference."""
    model = graph_b(seed=9)
    rng = np.random.RandomState(9)
    N = 3
    x, y = rng.randn(N, 12, 2).astype(np.float32), rng.randint(0, 3, N)
    got = deeplift_weight_relevance(model, x, y, reference="zeros")
    c, c2, out = model.get_layer("c"), model.get_layer("c2"), model.get_layer("out")
    k, _ = conv_conns((12, 1, 2), c.kernel.numpy()[:, None].shape, (1, 1), "same")
    L1 = Lin(k, c.kernel.numpy()[:, None], c.bias.numpy(), 48)
    k, _ = conv_conns((6, 1, 4), c2.kernel.numpy()[:, None].shape, (1, 1), "valid")
    L2 = Lin(k, c2.kernel.numpy()[:, None], c2.bias.numpy(), 16)
    L3 = Lin([(i_, j, (i_, j)) for i_ in range(4) for j in range(3)], out.kernel.numpy(), out.bias.numpy(), 3)
    w1, _ = windows((12, 1, 4), (2, 1), (2, 1))
    w2, _ = windows((4, 1, 4), (2, 1), (2, 1))
    gw = [([q * 4 + ch for q in range(4)], ch) for ch in range(4)]
    idx = pad_index((2, 1, 4), ((1, 1), (0, 0)))

    def forward(a):
        f = {"a": a, "z1": L1.z(a)}
        f["h1"] = np.maximum(f["z1"], 0)
        f["mp"] = pool_fwd(f["h1"], w1, "max")
        f["z2"] = L2.z(f["mp"])
        f["act"] = np.clip(f["z2"], 0, 6)
        f["ap"] = pool_fwd(f["act"], w2, "avg")
        f["zp"] = np.zeros((a.shape[0], 16))
        f["zp"][:, idx] = f["ap"]
        f["gm"], f["ga"] = pool_fwd(f["zp"], gw, "max"), pool_fwd(f["zp"], gw, "avg")
        f["add"] = f["gm"] + f["ga"]
        return f

    f, f0 = forward(x.reshape(N, -1).astype(np.float64)), forward(np.zeros((1, 24)))
    contrib = lambda lin, da, m: sum_contrib(lin, da, m)  # noqa: E731

    def sum_contrib(lin, da, m):
        per = (lin.w * da[:, lin.I] * m[:, lin.J]).sum(axis=0)
        res = np.zeros(lin.kernel.shape)
        for kk, v in zip(lin.K, per):
            res[kk] += v
        return res

    m = np.zeros((N, 3))
    m[np.arange(N), y] = 1.0 / N
    ref = {"out": contrib(L3, f["add"] - f0["add"], m)}
    m_add = m @ out.kernel.numpy().T.astype(np.float64)  # Reshape / Flatten: identity
    m_zp = _max_route(f["zp"], f0["zp"], f["gm"], f0["gm"], m_add, gw)  # gm branch
    for ins, j in gw:  # ga branch, linear; the two branches' multipliers add up
        for i_ in ins:
            m_zp[:, i_] += m_add[:, j] / len(ins)
    m_ap = m_zp[:, idx]
    m_act = np.zeros_like(f["act"])
    for ins, j in w2:
        for i_ in ins:
            m_act[:, i_] += m_ap[:, j] / len(ins)
    m_z2 = m_act * _rescale(f["z2"], f0["z2"], f["act"], f0["act"], ((f["z2"] > 0) & (f["z2"] < 6)).astype(float))
    ref["c2"] = contrib(L2, f["mp"] - f0["mp"], m_z2)[:, 0]
    m_mp = np.zeros_like(f["mp"])
    np.add.at(m_mp.T, L2.I, (L2.w * m_z2[:, L2.J]).T)
    m_h1 = _max_route(f["h1"], f0["h1"], f["mp"], f0["mp"], m_mp, w1)
    m_z1 = m_h1 * _rescale(f["z1"], f0["z1"], f["h1"], f0["h1"], (f["z1"] > 0).astype(float))
    ref["c"] = contrib(L1, f["a"] - f0["a"], m_z1)[:, 0]
    for key in ("out", "c2", "c"):
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-4, atol=1e-6 * np.abs(ref[key]).max())


# ---------------------------------------------------------------------------------------------
# errors


def test_mid_graph_softmax_and_shared_input_twice_are_refused():
    i = tf.keras.Input((4,))
    h = L.Dense(3, activation="softmax", name="soft")(i)
    m = tf.keras.Model(i, L.Dense(2, name="o")(h))
    with pytest.raises(UnsupportedLayerError, match="'soft' \\(Dense\\): softmax is only supported in the last layer"):
        weight_relevance(m, np.zeros((1, 4), np.float32), [0])
    d = L.Dense(3, name="d")(i)
    twice = tf.keras.Model(i, L.Dense(2, name="o")(L.Add(name="add")([d, d])))
    with pytest.raises(UnsupportedLayerError, match="'add' \\(Add\\) reads the same tensor twice"):
        weight_relevance(twice, np.zeros((1, 4), np.float32), [0])


def test_layers_argument_selects_separable_kernels():
    model = graph_a(seed=2)
    x, y = np.random.RandomState(2).rand(2, 5, 5, 2).astype(np.float32), [0, 1]
    assert list(weight_relevance(model, x, y, layers=["s1"])) == ["s1/depthwise_kernel", "s1/pointwise_kernel"]
    assert list(weight_relevance(model, x, y, layers=["s1/pointwise_kernel", "d1"])) == ["s1/pointwise_kernel", "d1"]
    with pytest.raises(ValueError, match="layer 'a1' is not a kernel layer"):
        weight_relevance(model, x, y, layers=["a1"])


# ---------------------------------------------------------------------------------------------
# iNNvestigate on the graph layers it supports (SeparableConv2D excluded: it treats the pair as one)


def innv_graph(seed=0):
    i = tf.keras.Input((6, 6, 2))
    c1 = L.Conv2D(3, 3, padding="same", activation="relu", name="c1")(i)
    d1 = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="d1")(c1)
    r1 = L.ReLU(name="r1")(d1)
    p1 = L.Conv2D(3, 1, name="p1")(r1)
    a1 = L.Add(name="a1")([c1, p1])
    z1 = L.ZeroPadding2D(1, name="z1")(a1)
    bn = L.BatchNormalization(name="bn")(z1)
    ap = L.AveragePooling2D(2, name="ap")(bn)
    cat = L.Concatenate(name="cat")([ap, L.MaxPooling2D(2, name="mp")(z1)])
    g = L.GlobalAveragePooling2D(name="g")(cat)
    return randomize(tf.keras.Model(i, L.Dense(3, name="out")(g), name="innv_graph"), seed)


def innv_graph_1d(seed=0):
    i = tf.keras.Input((10, 2))
    c = L.Conv1D(4, 3, padding="same", activation="relu", name="c")(i)
    mp = L.MaxPooling1D(2, name="mp")(c)
    ap = L.AveragePooling1D(1, name="ap")(mp)
    zp = L.ZeroPadding1D(1, name="zp")(ap)
    add = L.Add(name="add")([L.GlobalMaxPooling1D(name="gm")(zp), L.GlobalAveragePooling1D(name="ga")(zp)])
    return randomize(tf.keras.Model(i, L.Dense(3, name="out")(add), name="innv_1d"), seed)


@pytest.fixture(scope="module")
def worker():
    with InnvestigateWorker(timeout=300) as w:
        yield w


@pytest.mark.slow
@pytest.mark.parametrize("build,shape", [(innv_graph, (6, 6, 2)), (innv_graph_1d, (10, 2))])
def test_native_matches_innvestigate_on_graphs(worker, build, shape):
    model = build(seed=10)
    rng = np.random.RandomState(10)
    x, y = rng.rand(6, *shape).astype(np.float32), rng.randint(0, 3, 6)
    for composite, yy, target in (("epsilon_plus_flat", y, "auto"), ("epsilon", None, "auto"),
                                  ("epsilon_plus_flat", None, "output")):
        if True:
            nat = layer_relevance(model, x, yy, composite=composite, target=target)
            inn = layer_relevance(model, x, yy, composite=composite, target=target, backend="innvestigate",
                                  worker=worker)
            close(inn.input, nat.input, rtol=1e-4)
            for n in nat.layers:
                close(inn.layers[n], nat.layers[n], rtol=1e-4)
    w_nat = weight_relevance(model, x, y)
    w_inn = weight_relevance(model, x, y, backend="innvestigate", worker=worker)
    for n in w_nat:
        close(w_inn[n], w_nat[n], rtol=1e-4)


def test_innvestigate_backend_refuses_separable_by_name():
    with pytest.raises(UnsupportedLayerError, match=r"iNNvestigate backend does not support layers 's1' \(SeparableConv2D\)"):
        weight_relevance(graph_a(), np.zeros((1, 5, 5, 2), np.float32), [0], backend="innvestigate")
