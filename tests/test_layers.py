"""The layer registry (ecqx_tf/layers.py): every other table derives from it, the docs' table is
generated from it, and quantize() refuses unsupported models early and completely."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import tensorflow as tf

import ecqx_tf
from ecqx_tf import layers
from ecqx_tf.keras import api as keras_api
from ecqx_tf.keras.quantize_config import SUPPORTED_LAYERS
from ecqx_tf.relevance import ALLOWED_RULES, COMPOSITES, DEEPLIFT_COMPOSITES, RULES
from ecqx_tf.relevance.deeplift import DEEPLIFT_ALLOWED_RULES
from ecqx_tf.relevance.graph import stages_of

ROOT = pathlib.Path(__file__).resolve().parents[1]
L = tf.keras.layers


def test_committed_docs_equal_the_generated_table(capsys):
    assert (ROOT / "docs" / "layers.md").read_text() == layers.markdown()
    assert layers.main(["--markdown"]) == 0  # what `python -m ecqx_tf.layers --markdown` prints
    assert capsys.readouterr().out == layers.markdown()
    assert "docs/layers.md" in (ROOT / "README.md").read_text()


def test_every_table_derives_from_the_registry():
    names = set(layers.supported_names())
    kernels = set(layers.kernel_types())
    assert kernels == {"Dense", "Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D"}
    assert {c.__name__ for c in SUPPORTED_LAYERS} == kernels
    assert {c.__name__ for c in keras_api.PASSTHROUGH_LAYERS} == names - kernels
    assert set(ALLOWED_RULES) == names - {"InputLayer"} == set(DEEPLIFT_ALLOWED_RULES)
    for name in names - {"InputLayer"}:
        spec = layers.get(name)
        assert getattr(tf.keras.layers, name) is not None
        assert {r.name for r in ALLOWED_RULES[name]} == set(spec.lrp_allowed)
        for comp in layers.COMPOSITE_NAMES:
            assert COMPOSITES.get(comp).rule(name).name == spec.lrp_rule(comp)
        assert DEEPLIFT_COMPOSITES.get("deeplift_rescale").rule(name).name == spec.deeplift
        assert all(r in RULES for r in spec.lrp_allowed + spec.deeplift_allowed)
        if spec.is_kernel:
            assert tuple(s.attr for s in stages_of(name)) == spec.kernels
            assert spec.bn_fold in spec.kernels and spec.tflm_ops
            assert COMPOSITES.get("epsilon_plus_flat").rule(name, first=True).name == "flat"


def test_get_names_the_layer_and_lists_the_supported_set():
    assert layers.get(L.Conv1D(2, 3)).kernels == ("kernel",)
    assert layers.get("SeparableConv2D").kernels == ("depthwise_kernel", "pointwise_kernel")

    class MyDense(L.Dense):
        pass

    with pytest.raises(ValueError, match=r"layer 'mine' of type MyDense is not supported; supported: Activation, Add"):
        layers.get(MyDense(2, name="mine"))
    with pytest.raises(ValueError, match="layer type 'LSTM' is not supported; supported: "):
        layers.get("LSTM")
    assert layers.kernel_key("sep", "pointwise_kernel", 2) == "sep/pointwise_kernel"
    assert layers.kernel_key("d", "kernel", 1) == "d"


def _bad_model():
    i = tf.keras.Input((8, 4))
    x = L.LSTM(4, return_sequences=True, name="rnn")(i)
    x = L.Conv1D(4, 3, padding="causal", name="causal")(x)
    x = L.Reshape((8, 4, 1), name="rs")(x)
    x = L.Conv2D(2, 1, activation="relu6", name="c6")(x)
    x = L.BatchNormalization(axis=1, name="bn_axis1")(x)
    x = L.Flatten(name="f")(x)
    return tf.keras.Model(i, L.Dense(3, name="o")(x))


def test_quantize_refuses_every_unsupported_layer_before_any_work(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("work started before the model was checked")

    monkeypatch.setattr(keras_api, "_fold_batchnorm", boom)
    monkeypatch.setattr(keras_api, "_quantize_apply", boom)
    with pytest.raises(ValueError) as info:
        ecqx_tf.quantize(_bad_model(), method="ecq")
    msg = str(info.value)
    for part in ("layer 'rnn' (LSTM): unsupported layer type",
                 "layer 'causal' (Conv1D): padding='causal'",
                 "layer 'c6' (Conv2D): fused activation 'relu6'",
                 "layer 'bn_axis1' (BatchNormalization): normalization over axis",
                 "Supported layer types: Activation, Add, AveragePooling1D"):
        assert part in msg, msg
    # excluding a layer does not make an unsupported type acceptable
    with pytest.raises(ValueError, match="'rnn' \\(LSTM\\)"):
        ecqx_tf.quantize(_bad_model(), method="ecq", exclude=["rnn"])


def test_quantize_refuses_structures_before_fit():
    i = tf.keras.Input((4,))
    shared = L.Dense(4, name="shared")
    with pytest.raises(ValueError, match="'shared' \\(Dense\\) is called 2 times"):
        ecqx_tf.quantize(tf.keras.Model(i, L.Dense(2)(shared(shared(i)))), method="ecq")
    with pytest.raises(ValueError, match="1 inputs and 2 outputs"):
        ecqx_tf.quantize(tf.keras.Model(i, [L.Dense(2)(i), L.Dense(2)(i)]), method="ecq")
    inner = tf.keras.Sequential([tf.keras.Input((4,)), L.Dense(3)], name="inner")
    with pytest.raises(ValueError, match="layer 'inner' \\(Sequential\\) is a nested model"):
        ecqx_tf.quantize(tf.keras.Model(i, L.Dense(2)(inner(i))), method="ecq")
    soft = tf.keras.Model(i, L.Dense(2, name="o")(L.Dense(3, activation="softmax", name="mid")(i)))
    with pytest.raises(ValueError, match="'mid' \\(Dense\\): softmax is only supported in the last layer"):
        ecqx_tf.quantize(soft, method="ecq")


def test_ecqx_relevance_data_is_checked_in_quantize_not_in_fit():
    i = tf.keras.Input((6,))
    ae = tf.keras.Model(i, L.Dense(6, name="dec")(L.Dense(3, activation="relu", name="enc")(i)))
    x = np.random.default_rng(0).random((8, 6), dtype=np.float32)
    with pytest.raises(ValueError, match="regression target.*pass x alone \\(relevance_data=x\\)"):
        ecqx_tf.quantize(ae, method="ecqx", relevance_data=(x, x))
    with pytest.raises(ValueError, match="needs relevance_data: x alone, or a tuple \\(x, y\\)"):
        ecqx_tf.quantize(ae, method="ecqx")
    with pytest.raises(TypeError, match="a tuple of 3 items"):
        ecqx_tf.quantize(ae, method="ecqx", relevance_data=(x, x, x))
