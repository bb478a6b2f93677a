"""Compression methods: pruning surgery (smaller model == masked original), unstructured masks,
criteria, weight sharing (k-means against a slow reference, int8 codebooks, exact TFLM/LUT and
FantastIC4 export), mixed precision (exact allocation against brute force, per-layer bits export),
the METHODS registry, errors, and ``ecqx-compress`` end to end."""
from __future__ import annotations

import itertools
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from ecqx_tf.keras.api import quantization_info, strip  # noqa: E402
from ecqx_tf.keras.quantize_config import ECQQuantizeConfig  # noqa: E402
from ecqx_tf.methods import (  # noqa: E402
    METHODS,
    allocate_bits,
    cluster_layers,
    get_method,
    int8_codebook,
    kernel_sparsity,
    kernel_weight_count,
    mask_units,
    method_from_config,
    prunable_layers,
    prune_structured,
    prune_units,
    prune_unstructured,
    quantize_mixed,
    quantize_shared,
    select_units,
    sharing_info,
    unit_scores,
    weight_scores,
    weighted_kmeans,
)
from ecqx_tf.methods._qat import finetune_qat, quantize_per_layer  # noqa: E402
from ecqx_tf.methods.mixed_precision import layer_cost  # noqa: E402
from ecqx_tf.relevance import layer_relevance, weight_relevance  # noqa: E402
from firmware_export.registry import ExportRequest  # noqa: E402
from firmware_export.tflm import flatbuffer as fb  # noqa: E402
from firmware_export.tflm.convert import convert, tflite_layout  # noqa: E402
from firmware_export.tflm.shared import lut_compress_shared  # noqa: E402

L = tf.keras.layers


def toy(shape, n=64, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + tuple(shape), dtype=np.float32) * 0.5
    y = rng.integers(0, classes, n)
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    for i in range(n):
        flat[i, y[i] * d // classes:(y[i] + 1) * d // classes] += 0.5
    return flat.reshape(x.shape), y.astype(np.int64)


def cnn(seed=0):
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((8, 8, 1), name="image")
    h = L.Conv2D(4, 3, padding="same", name="c1")(inp)
    h = L.BatchNormalization(name="bn")(h)
    h = L.ReLU(name="r1")(h)
    h = L.MaxPooling2D(2, name="p1")(h)
    h = L.Conv2D(5, 3, activation="relu", name="c2")(h)
    h = L.Flatten(name="flat")(h)
    h = L.Dense(6, activation="relu", name="d1")(h)
    h = L.Dropout(0.2)(h)
    h = L.Dense(4, name="out")(h)
    m = tf.keras.Model(inp, h, name="cnn")
    rng = np.random.default_rng(seed)
    m.get_layer("bn").set_weights([rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.1, 4), rng.normal(0, 0.1, 4),
                                   rng.uniform(0.5, 1.5, 4)])
    return m


def mlp(seed=0):
    tf.keras.utils.set_random_seed(seed)
    m = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), L.Flatten(), L.Dense(12, activation="relu", name="h1"),
                             L.Dense(10, activation="relu", name="h2"), L.Dense(4, name="out")], name="mlp")
    x, y = toy((8, 8, 1), 128)
    m.compile(tf.keras.optimizers.Adam(0.01), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return m


@pytest.fixture(scope="module")
def trained_mlp():
    return mlp()


# ---------------------------------------------------------------------------------------------
# pruning surgery


def test_pruned_cnn_is_smaller_and_equals_masked_original():
    m = cnn()
    x, _ = toy((8, 8, 1), 16)
    keep = {"c1": [0, 2, 3], "c2": [1, 4], "d1": [0, 1, 3, 5]}
    p = prune_units(m, keep)
    assert [l.name for l in p.layers] == [l.name for l in m.layers] and p.name == m.name
    assert p.get_layer("c1").kernel.shape == (3, 3, 1, 3) and p.get_layer("bn").gamma.shape == (3,)
    assert p.get_layer("c2").kernel.shape == (3, 3, 3, 2)
    assert p.get_layer("d1").kernel.shape == (2 * 2 * 2, 4) and p.get_layer("out").kernel.shape == (4, 4)
    assert p.count_params() < m.count_params() and kernel_weight_count(p) == 27 + 54 + 32 + 16
    masked = mask_units(m, keep)
    np.testing.assert_allclose(p(x).numpy(), masked(x).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(m(x).numpy(), masked(x).numpy())  # the pruning did change the function
    np.testing.assert_array_equal(m.get_layer("c1").kernel.numpy(), cnn().get_layer("c1").kernel.numpy())  # untouched
    assert kernel_sparsity(masked) == pytest.approx(1 - kernel_weight_count(p) / kernel_weight_count(m))


def test_structured_pruning_without_finetuning_equals_masked_original(trained_mlp):
    x, y = toy((8, 8, 1), 64, seed=3)
    w0 = kernel_weight_count(trained_mlp)
    res = prune_structured(trained_mlp, None, None, 0.5, criterion="lrp", x_ref=x, y_ref=y, rounds=1,
                           epochs_per_round=0)
    scores = unit_scores(trained_mlp, x, y, criterion="lrp", layers=prunable_layers(trained_mlp))
    keep = select_units(trained_mlp, scores, int(w0 * 0.5))
    assert kernel_weight_count(res.model) <= w0 * 0.5 and res.sparsity >= 0.5
    assert {n: int(res.model.get_layer(n).units) for n in keep} == {n: len(k) for n, k in keep.items()}
    np.testing.assert_allclose(res.model(x).numpy(), mask_units(trained_mlp, keep)(x).numpy(), rtol=1e-5, atol=1e-6)
    # the lowest-scored units went first
    for n, k in keep.items():
        removed = np.setdiff1d(np.arange(len(scores[n])), k)
        if removed.size:
            assert scores[n][removed].max() <= scores[n][k].min()


def test_select_units_scopes_and_unreachable_target():
    m = cnn()
    scores = {"c1": np.array([3.0, 1, 2, 4]), "c2": np.arange(5.0), "d1": np.arange(6.0)[::-1]}
    w0 = kernel_weight_count(m)
    g = select_units(m, scores, int(0.6 * w0), scope="global")
    # by hand: remove c2#0 (300 weights left), d1#5 (280), c1#1 (235), c2#1 (188 <= 216)
    assert {k: v.tolist() for k, v in g.items()} == {"c1": [0, 2, 3], "c2": [2, 3, 4], "d1": [0, 1, 2, 3, 4]}
    assert kernel_weight_count(prune_units(m, g)) == 188
    lay = select_units(m, scores, int(0.6 * w0), scope="layer")
    assert all(len(v) < len(scores[k]) for k, v in lay.items())
    with pytest.raises(ValueError, match="cannot reach 10 kernel weights: keeping 1 unit"):
        select_units(m, scores, 10)
    with pytest.raises(ValueError, match="unknown scope 'all'; accepted: global, layer"):
        select_units(m, scores, 100, scope="all")


def test_unstructured_masks_kept_through_finetuning(trained_mlp):
    x, y = toy((8, 8, 1), 64, seed=4)
    res = prune_unstructured(trained_mlp, x, y, 0.6, criterion="deeplift", rounds=2, epochs_per_round=1)
    for n, mask in res.masks.items():
        k = res.model.get_layer(n).kernel.numpy()
        assert np.all(k[mask == 0] == 0)
        assert np.mean(mask == 0) == pytest.approx(0.6, abs=1.0 / mask.size)
    assert res.sparsity >= 0.6 - 1e-3
    assert kernel_weight_count(res.model) == kernel_weight_count(trained_mlp)


def test_criteria_are_the_relevance_engines(trained_mlp):
    x, y = toy((8, 8, 1), 32, seed=5)
    s = unit_scores(trained_mlp, x, y, criterion="lrp", layers=["h1"])
    np.testing.assert_allclose(s["h1"], layer_relevance(trained_mlp, x, y, layers=["h1"]).layers["h1"].sum(0),
                               rtol=1e-5, atol=1e-9)
    w = weight_scores(trained_mlp, x, y, criterion="lrp")
    np.testing.assert_allclose(w["h2"], np.abs(weight_relevance(trained_mlp, x, y)["h2"]), rtol=1e-6)
    mag = unit_scores(trained_mlp, criterion="magnitude")
    np.testing.assert_allclose(mag["h1"], np.abs(trained_mlp.get_layer("h1").kernel.numpy()).sum(0))


def test_pruning_errors():
    m = cnn()
    with pytest.raises(ValueError, match="cannot prune the output layer 'out'"):
        prune_units(m, {"out": [0, 1]})
    with pytest.raises(ValueError, match="pruning would leave layer 'c2' with no units"):
        prune_units(m, {"c2": []})
    with pytest.raises(ValueError, match="layer 'bn' is not a prunable Dense/Conv1D/Conv2D layer.*prunable layers"):
        prune_units(m, {"bn": [0]})
    with pytest.raises(ValueError, match=r"unit indices outside \[0, 5\]: \[6\]"):
        prune_units(m, {"d1": [0, 6]})
    with pytest.raises(ValueError, match="unknown importance criterion 'taylor'; accepted: deeplift, lrp, magnitude"):
        prune_structured(m, None, None, 0.5, criterion="taylor")
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        prune_structured(m, None, None, 1.0)
    inp = tf.keras.Input((4, 4, 2))
    h = L.Conv2D(3, 1, name="c")(inp)
    h = L.Reshape((48 // 3 * 3,))(h)
    bad = tf.keras.Model(inp, L.Dense(2, name="o")(h))
    with pytest.raises(ValueError, match="structured pruning does not support layers 'reshape.*' \\(Reshape\\)"):
        prune_units(bad, {"c": [0, 1]})
    a = tf.keras.Input((4,))
    branchy = tf.keras.Model(a, L.Add(name="merge")([L.Dense(3, name="u")(a), L.Dense(3, name="v")(a)]))
    with pytest.raises(ValueError, match="only in single-chain models; model .* has merge layers 'merge' \\(Add\\).*"
                                         "Use unstructured relevance pruning"):
        prune_units(branchy, {"u": [0]})


# ---------------------------------------------------------------------------------------------
# graph models and the new kernel types


def ds_chain(seed=0):
    """A DS-CNN-like chain: Conv2D + BN + ReLU, DepthwiseConv2D x2 + BN + ReLU, 1x1 Conv2D,
    global pooling, Dense; and a Conv1D chain."""
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((8, 8, 1))
    h = L.Conv2D(4, 3, padding="same", name="c1")(inp)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.ReLU(name="r1")(h)
    h = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(h)
    h = L.BatchNormalization(name="bn2")(h)
    h = L.ReLU(name="r2")(h)
    h = L.Conv2D(5, 1, activation="relu", name="pw")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    m = tf.keras.Model(inp, L.Dense(4, name="out")(h), name="ds_chain")
    rng = np.random.default_rng(seed)
    for bn, c in (("bn1", 4), ("bn2", 8)):
        m.get_layer(bn).set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
                                     rng.uniform(0.5, 1.5, c)])
    return m


def test_structured_pruning_follows_depthwise_and_conv1d_channels():
    m = ds_chain()
    x, _ = toy((8, 8, 1), 8)
    assert prunable_layers(m) == ["c1", "pw"]
    keep = {"c1": [0, 3], "pw": [1, 2, 4]}
    p = prune_units(m, keep)
    assert p.get_layer("dw").depthwise_kernel.shape == (3, 3, 2, 2) and p.get_layer("bn2").gamma.shape == (4,)
    assert p.get_layer("pw").kernel.shape == (1, 1, 4, 3) and p.get_layer("out").kernel.shape == (3, 4)
    assert kernel_weight_count(p) == 9 * 2 + 9 * 2 * 2 + 4 * 3 + 3 * 4
    np.testing.assert_allclose(p(x).numpy(), mask_units(m, keep)(x).numpy(), rtol=1e-5, atol=1e-6)
    res = prune_structured(m, None, None, 0.4, x_ref=x, y_ref=np.arange(8) % 4, rounds=1, epochs_per_round=0)
    assert res.sparsity >= 0.4 and kernel_weight_count(res.model) < kernel_weight_count(m)
    inp = tf.keras.Input((12, 2))
    h = L.Conv1D(6, 3, padding="same", activation="relu", name="k1")(inp)
    h = L.MaxPooling1D(2, name="mp")(h)
    h = L.Conv1D(4, 3, activation="relu", name="k2")(h)
    c1d = tf.keras.Model(inp, L.Dense(3, name="o")(L.Flatten(name="f")(h)))
    x1 = np.random.default_rng(1).random((4, 12, 2), dtype=np.float32)
    keep = {"k1": [1, 2, 5], "k2": [0, 3]}
    np.testing.assert_allclose(prune_units(c1d, keep)(x1).numpy(), mask_units(c1d, keep)(x1).numpy(), rtol=1e-5,
                               atol=1e-6)


def residual(seed=0):
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((8, 8, 2))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    b = L.DepthwiseConv2D(3, padding="same", name="dw")(a)
    b = L.BatchNormalization(name="bn")(b)
    b = L.ReLU(name="r")(b)
    b = L.Conv2D(4, 1, name="pw")(b)
    h = L.ReLU(name="r2")(L.Add(name="add")([a, b]))
    h = L.SeparableConv2D(4, 3, padding="same", activation="relu", name="sep")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    return tf.keras.Model(inp, L.Dense(4, name="out")(h), name="residual")


@pytest.mark.slow
def test_methods_on_a_residual_graph():
    """Unstructured relevance pruning, weight sharing and mixed precision run on a graph with Add,
    DepthwiseConv2D and SeparableConv2D; structured pruning refuses it with a clear message."""
    m = residual()
    x, y = toy((8, 8, 2), 32)
    keys = ["c1", "dw", "pw", "sep/depthwise_kernel", "sep/pointwise_kernel", "out"]
    pr = prune_unstructured(m, x, y, 0.5, rounds=1, epochs_per_round=1, batch_size=16)
    assert sorted(pr.masks) == sorted(keys)
    for k, mask in pr.masks.items():
        assert mask.mean() == pytest.approx(0.5, abs=0.05), k
    assert pr.sparsity >= 0.45
    with pytest.raises(ValueError, match="only in single-chain models; model 'residual' has merge layers 'add' \\(Add\\)"):
        prune_structured(m, x, y, 0.5)
    books = cluster_layers(m, 7, "relevance", x, y)
    assert sorted(books) == sorted(keys)
    q = quantize_shared(m, books)
    ft = finetune_qat(q, x, y, x, y, epochs=1, batch_size=16)
    info = sharing_info(q)
    assert info["sep/pointwise_kernel"].kernel == "pointwise_kernel" and info["sep/pointwise_kernel"].layer == "sep"
    for k, qk in info.items():
        np.testing.assert_array_equal(getattr(ft.stripped.get_layer(qk.layer), qk.kernel).numpy(), qk.values())
    res = get_method("mixed_precision", avg_bits=3.0, epochs=1, batch_size=16, relevance_samples=32,
                     min_bits=2, max_bits=4).apply(m, x, y, x, y)
    bits = res.report["bits"]
    assert sorted(bits) == ["c1", "dw", "out", "pw", "sep"]
    for k, qk in res.quant.items():
        assert qk.bits == bits[qk.layer]
    assert res.report["allocation"]["bytes"] <= res.report["allocation"]["budget_bytes"]


# ---------------------------------------------------------------------------------------------
# export of pruned models


def _check_stored_integers(model_bytes, quant, model):
    parsed = fb.read_model(model_bytes)
    names = [l.name for l in model.layers if type(l).__name__ in ("Dense", "Conv2D")]
    for (op, t), n in zip(fb.weight_tensors(parsed), names):
        np.testing.assert_array_equal(parsed.constant_values(t.index), tflite_layout(op.name, quant[n].integers()))


def test_pruned_mlp_exports_exactly_to_tflm_and_fantastic4(trained_mlp, tmp_path):
    from firmware_export.fantastic4.target import FantastIC4Target

    pruned = prune_units(trained_mlp, {"h1": [0, 2, 3, 5, 7, 11], "h2": [1, 2, 8]})
    cfg = {n: ECQQuantizeConfig(bits=4, method="ecq", Lambda=0.0) for n in ("h1", "h2", "out")}
    qmodel = quantize_per_layer(pruned, cfg)
    plain, quant = strip(qmodel), quantization_info(qmodel)
    assert quant["h1"].indices.shape == (64, 6) and quant["out"].indices.shape == (3, 4)
    x, y = toy((8, 8, 1), 80, seed=9)
    req = ExportRequest(plain, quant, "pruned", x[:48], x[48:], y[48:])
    res = convert(req)
    _check_stored_integers(res.model_bytes, quant, plain)
    assert all(r["weight_type"] == "INT4" for r in res.layers)
    manifest = FantastIC4Target().export(ExportRequest(plain, quant, "pruned", x[:48], x[48:], y[48:],
                                                       options={"tflite_bytes": res.model_bytes}), tmp_path)
    assert manifest["ok"] and manifest["python_equals_tflm"]
    assert [r["shape"] for r in manifest["layers"]] == [[6, 64], [3, 6], [4, 3]]


# ---------------------------------------------------------------------------------------------
# weight sharing


def slow_kmeans(w, k, rho, iters=50):
    """Lloyd's algorithm written per weight and per cluster (zero fixed)."""
    w = [float(v) for v in np.ravel(w)]
    nz = sorted(v for v in w if v != 0)
    cw = np.cumsum([rho[i] for i in np.argsort(np.ravel(w), kind="stable") if w[i] != 0])
    free = sorted({nz[min(int(np.searchsorted(cw, (j + 0.5) / (k - 1) * cw[-1])), len(nz) - 1)] for j in range(k - 1)})
    prev = None
    for _ in range(iters):
        c = sorted([0.0] + free)
        assign = []
        for v in w:
            d = [(v - cc) ** 2 for cc in c]
            assign.append(d.index(min(d)))
        if assign == prev:
            break
        prev = assign
        new = []
        for j, cc in enumerate(c):
            if cc == 0.0:
                continue
            num = sum(rho[i] * w[i] for i in range(len(w)) if assign[i] == j)
            den = sum(rho[i] for i in range(len(w)) if assign[i] == j)
            new.append(num / den if den > 0 else cc)
        free = new
    return np.array(sorted([0.0] + free))


@pytest.mark.parametrize("weighted", [False, True])
def test_weighted_kmeans_matches_slow_lloyd(weighted):
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1, 300)
    rho = rng.uniform(0, 3, 300) if weighted else np.ones(300)
    c = weighted_kmeans(w, 8, rho if weighted else None)
    np.testing.assert_allclose(c, slow_kmeans(w, 8, rho), rtol=1e-9, atol=1e-12)
    assert np.sum(c == 0) == 1 and np.all(np.diff(c) > 0)
    # weighting pulls a centroid towards the heavy weights
    heavy = np.where(np.abs(w - 1.5) < 0.3, 100.0, 1.0)
    c_h = weighted_kmeans(w, 8, heavy)
    assert np.min(np.abs(c_h - 1.5)) < np.min(np.abs(c - 1.5)) + 1e-12


def test_int8_codebook_rounding_and_collisions():
    levels, scale, moved = int8_codebook(np.array([-1.0, -0.5, 0.0, 0.001, 0.002, 2.0]))
    assert scale == np.float32(2.0 / 127) and moved == 2
    assert levels.tolist() == [-64, -32, 0, 1, 2, 127]  # 0.001 and 0.002 both round to 0 -> moved out
    with pytest.raises(ValueError, match="must contain 0 exactly once"):
        int8_codebook(np.array([-1.0, 1.0]))


def test_shared_model_trains_and_exports_exactly_with_lut_and_fantastic4(trained_mlp, tmp_path):
    from firmware_export.fantastic4.target import FantastIC4Target
    from firmware_export.tflm.convert import quantize_input
    from firmware_export.tflm.simulate import run_tflm

    x, y = toy((8, 8, 1), 96, seed=7)
    books = cluster_layers(trained_mlp, 16, "relevance", x[:32], y[:32], criterion="deeplift", reference="mean")
    qmodel = quantize_shared(trained_mlp, books)
    finetune_qat(qmodel, x, y, x, y, epochs=1, batch_size=32)
    info = sharing_info(qmodel)
    plain = strip(qmodel)
    for n, q in info.items():
        assert q.bits == 8 and q.grid == "paper" and len(q.levels) == 16 and 0 in q.levels
        np.testing.assert_array_equal(plain.get_layer(n).kernel.numpy(), q.values())
    req = ExportRequest(plain, info, "shared", x[:48], x[48:], y[48:])
    res = convert(req)
    _check_stored_integers(res.model_bytes, info, plain)
    lut = lut_compress_shared(req)
    from firmware_export.tflm.convert import stored_bytes

    def weight_bytes(b):
        m = fb.read_model(b)
        return [stored_bytes(m, t) for _, t in fb.weight_tensors(m)]

    plain_bytes, lut_bytes = weight_bytes(res.model_bytes), weight_bytes(lut)
    assert plain_bytes[0] == 64 * 12 and lut_bytes[0] < 64 * 12 // 2 + 64  # 4-bit indices + one 16-entry table
    xi = quantize_input(res.model_bytes, x[48:56])
    np.testing.assert_array_equal(run_tflm(lut, xi), run_tflm(res.model_bytes, xi))
    manifest = FantastIC4Target().export(ExportRequest(plain, info, "shared", x[:48], x[48:], y[48:],
                                                       options={"tflite_bytes": res.model_bytes}), tmp_path)
    assert manifest["ok"] and all(r["n_values"] <= 16 for r in manifest["layers"])


# ---------------------------------------------------------------------------------------------
# mixed precision


def test_allocation_is_exact_against_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(20):
        sizes = {f"l{i}": int(rng.integers(5, 200)) for i in range(3)}
        dist = {n: dict(zip(range(2, 9), np.sort(rng.random(7))[::-1] * rng.uniform(0.1, 10))) for n in sizes}
        lo = sum(layer_cost(s, 2) for s in sizes.values())
        budget = int(rng.integers(lo, lo * 4))
        got = allocate_bits(dist, sizes, budget)
        best = min(
            (sum(dist[n][b] for n, b in zip(sizes, combo)), combo)
            for combo in itertools.product(range(2, 9), repeat=3)
            if sum(layer_cost(sizes[n], b) for n, b in zip(sizes, combo)) <= budget
        )
        assert sum(dist[n][got[n]] for n in sizes) == pytest.approx(best[0], rel=1e-12)
        assert sum(layer_cost(sizes[n], got[n]) for n in sizes) <= budget
    with pytest.raises(ValueError, match="budget of 10 weight bytes cannot be met: even .* needs 100 bytes"):
        allocate_bits({"a": {2: 1.0, 4: 0.5}}, {"a": 400}, 10)


def test_mixed_bits_train_and_export_exactly(trained_mlp):
    bits = {"h1": 3, "h2": 6, "out": 8}
    x, y = toy((8, 8, 1), 64, seed=8)
    qmodel = quantize_mixed(trained_mlp, bits, method="ecqx", relevance_data=(x[:32], y[:32]))
    finetune_qat(qmodel, x, y, x, y, epochs=1, batch_size=32)
    info = quantization_info(qmodel)
    assert {n: q.bits for n, q in info.items()} == bits
    plain = strip(qmodel)
    res = convert(ExportRequest(plain, info, "mixed", x[:32], x[32:], y[32:]))
    _check_stored_integers(res.model_bytes, info, plain)
    assert [r["weight_type"] for r in res.layers] == ["INT4", "INT8", "INT8"]


# ---------------------------------------------------------------------------------------------
# registry, parameters, CLI


def test_registry_names():
    assert set(METHODS.names()) == {"ecq", "ecqx", "relevance_pruning", "magnitude_pruning", "weight_sharing",
                                    "mixed_precision"}


@pytest.mark.parametrize("name", METHODS.names())
def test_method_config_round_trip(name):
    m = get_method(name)
    cfg = m.get_config()
    assert cfg["name"] == name and method_from_config(json.loads(json.dumps(cfg))) == m
    assert method_from_config(cfg) is not m and hash(method_from_config(cfg)) == hash(m)


def test_method_parameter_errors():
    with pytest.raises(ValueError, match="unknown compression method 'prune'; accepted: ecq, ecqx"):
        get_method("prune")
    with pytest.raises(ValueError, match=r"relevance_pruning: parameter sparsity must lie in \[0, 1\), got 1.0"):
        get_method("relevance_pruning", sparsity=1.0)
    with pytest.raises(ValueError, match="parameter criterion: unknown value 'taylor'; accepted: deeplift, lrp, magnitude"):
        get_method("relevance_pruning", criterion="taylor")
    with pytest.raises(ValueError, match="parameter n_clusters: unknown value 10; accepted: 3, 4, 7, 8, 15, 16"):
        get_method("weight_sharing", n_clusters=10)
    with pytest.raises(ValueError, match="min_bits \\(6\\) must be <= max_bits \\(4\\)"):
        get_method("mixed_precision", min_bits=6, max_bits=4)
    with pytest.raises(TypeError, match="parameter epochs must be an int, got 1.5"):
        get_method("ecq", epochs=1.5)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['bitz'\]"):
        method_from_config({"name": "ecq", "bitz": 3})


def test_cli_help_lists_registry(capsys):
    from cli.compress import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    assert all(n in out for n in METHODS.names())
    args = parser.parse_args(["weight_sharing", "m.keras", "--data", "digits", "--out", "o", "--no-recluster",
                              "--n-clusters", "8"])
    assert args.recluster is False and args.n_clusters == 8


def test_cli_end_to_end(tmp_path, capsys):
    from cli.compress import main

    tf.keras.utils.set_random_seed(0)
    m = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), L.Flatten(), L.Dense(16, activation="relu", name="h"),
                             L.Dense(10, name="out")])
    m.save(tmp_path / "float.keras")
    out = tmp_path / "out"
    code = main(["relevance_pruning", str(tmp_path / "float.keras"), "--data", "digits", "--out", str(out),
                 "--sparsity", "0.5", "--epochs-per-round", "0", "--rounds", "1", "--bits", "4", "--quant-epochs", "0",
                 "--criterion", "deeplift", "--relevance-samples", "64", "--export", "fantastic4", "--max-eval", "32",
                 "--calib", "64"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["method"]["criterion"] == "deeplift" and report["sparsity"] >= 0.5
    assert report["export"]["ok"] and (out / "fantastic4" / "fantastic4.json").is_file()
    assert (out / "qat_model.h5").is_file() and json.loads((out / "quant.json").read_text())["h"]["shape"][1] < 16
    assert "accuracy" in capsys.readouterr().out
    code = main(["mixed_precision", str(tmp_path / "float.keras"), "--data", "digits", "--out", str(out / "x"),
                 "--budget-bytes", "5"])
    assert code == 2 and "budget of 5 weight bytes cannot be met" in capsys.readouterr().err
