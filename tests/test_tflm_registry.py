"""The TFLM exporter derives from the layer registry (``ecqx_tf.layers``): it accepts exactly the
registry's exportable layer types, and a tiny model holding one layer type converts to exactly the
operators the registry names for its layers (``layers.tflm_ops_of``), with TFLM == simulator on
every intermediate tensor and the exported float graph == Keras."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import tensorflow as tf  # noqa: E402
from tflm_helpers import request_for  # noqa: E402

from ecqx_tf import layers as R  # noqa: E402
from firmware_export.tflm import c_arrays as CA  # noqa: E402
from firmware_export.tflm import convert as C  # noqa: E402
from firmware_export.tflm import flatbuffer as fb  # noqa: E402
from firmware_export.tflm import simulate as S  # noqa: E402

L = tf.keras.layers


def _image(shape=(6, 6, 2)):
    return tf.keras.Input(shape)


def _head(x):
    """Flatten (when needed) + Dense(2): every context ends in FULLY_CONNECTED."""
    if len(x.shape) > 2:
        x = L.Flatten()(x)
    return L.Dense(2)(x)


def _two_branches(inp):
    """Two 1x1 convolutions of the input: inputs for Add / Concatenate, and a producer (the merge)
    into which no relu can be fused."""
    return L.Conv2D(2, 1)(inp), L.Conv2D(2, 1)(inp)


def _after_merge(make):
    """``make`` applied to the concatenation of two branches (so that a relu stays an op)."""
    inp = _image()
    a, b = _two_branches(inp)
    return tf.keras.Model(inp, _head(make(L.Concatenate()([a, b]))))


def _seq(inp_shape, *layers):
    inp = tf.keras.Input(inp_shape)
    x = inp
    for layer in layers:
        x = layer(x)
    return tf.keras.Model(inp, _head(x))


def _merge(kind):
    inp = _image()
    a, b = _two_branches(inp)
    return tf.keras.Model(inp, _head(kind()([a, b])))


#: registry layer type -> {case id: model builder}; every builder's model holds the type
CASES = {
    "InputLayer": {"input": lambda: _seq((5,))},
    "Dense": {"dense": lambda: _seq((5,), L.Dense(3)),
              "dense_tanh": lambda: _seq((5,), L.Dense(3, activation="tanh")),
              "dense_sigmoid": lambda: _seq((5,), L.Dense(3, activation="sigmoid"))},
    "Conv1D": {"conv1d": lambda: _seq((10, 3), L.Conv1D(4, 3, padding="same"))},
    "Conv2D": {"conv2d": lambda: _seq((6, 6, 2), L.Conv2D(3, 3, strides=2))},
    "DepthwiseConv2D": {"depthwise": lambda: _seq((6, 6, 2), L.DepthwiseConv2D(3, depth_multiplier=2))},
    "SeparableConv2D": {"separable": lambda: _seq((6, 6, 2), L.SeparableConv2D(3, 3, padding="same"))},
    "Add": {"add": lambda: _merge(L.Add)},
    "Concatenate": {"concatenate": lambda: _merge(L.Concatenate)},
    "ZeroPadding1D": {"pad1d": lambda: _seq((10, 3), L.ZeroPadding1D((1, 2)), L.Conv1D(2, 3))},
    "ZeroPadding2D": {"pad2d": lambda: _seq((6, 6, 2), L.ZeroPadding2D(((1, 0), (0, 1))), L.Conv2D(2, 3))},
    "Reshape": {"reshape": lambda: _seq((6, 6, 2), L.Conv2D(2, 3), L.Reshape((32,)))},
    "Flatten": {"flatten": lambda: _seq((6, 6, 2), L.Conv2D(2, 3), L.Flatten())},
    "Dropout": {"dropout": lambda: _seq((5,), L.Dense(4), L.Dropout(0.5))},
    "Activation": {f"activation_{fn}": (lambda fn=fn: _after_merge(L.Activation(fn))) for fn in R.ACTIVATIONS},
    "ReLU": {"relu": lambda: _after_merge(L.ReLU()), "relu6": lambda: _after_merge(L.ReLU(6.0))},
    "Softmax": {"softmax": lambda: tf.keras.Model(*(lambda i: (i, L.Softmax()(L.Dense(4)(i))))(tf.keras.Input((5,))))},
    "MaxPooling1D": {"maxpool1d": lambda: _seq((10, 3), L.Conv1D(2, 3), L.MaxPooling1D(2))},
    "MaxPooling2D": {"maxpool2d": lambda: _seq((6, 6, 2), L.Conv2D(2, 1), L.MaxPooling2D(2))},
    "AveragePooling1D": {"avgpool1d": lambda: _seq((10, 3), L.Conv1D(2, 3), L.AveragePooling1D(2))},
    "AveragePooling2D": {"avgpool2d": lambda: _seq((6, 6, 2), L.Conv2D(2, 1), L.AveragePooling2D(2))},
    "GlobalMaxPooling1D": {"gmaxpool1d": lambda: _seq((10, 3), L.Conv1D(2, 3), L.GlobalMaxPooling1D())},
    "GlobalMaxPooling2D": {"gmaxpool2d": lambda: _seq((6, 6, 2), L.Conv2D(2, 1), L.GlobalMaxPooling2D())},
    "GlobalAveragePooling1D": {"gavgpool1d": lambda: _seq((10, 3), L.Conv1D(2, 3), L.GlobalAveragePooling1D())},
    "GlobalAveragePooling2D": {"gavgpool2d": lambda: _seq((6, 6, 2), L.Conv2D(2, 1), L.GlobalAveragePooling2D())},
    "BatchNormalization": {"bn_after_conv": lambda: _seq((6, 6, 2), L.Conv2D(2, 3), L.BatchNormalization()),
                           "bn_before_float_dense": lambda: _seq((5,), L.BatchNormalization())},
}
def _relu_after_add():
    inp = _image()
    return tf.keras.Model(inp, _head(L.ReLU()(L.Add()(list(_two_branches(inp))))))


# relu fused into the op before it (registry.TFLM_FUSE_INTO): no RELU/RELU6 op of its own
FUSED = {
    "relu_after_conv": lambda: _seq((6, 6, 2), L.Conv2D(2, 3), L.Activation("relu")),
    "relu6_after_depthwise": lambda: _seq((6, 6, 2), L.DepthwiseConv2D(3), L.ReLU(6.0)),
    "relu_after_add": lambda: _relu_after_add(),
    "fused_relu_dense": lambda: _seq((5,), L.Dense(3, activation="relu")),
}
ALL = [(t, cid) for t, cases in CASES.items() for cid in cases]


def _expected_ops(model, fused=()) -> set:
    ops = set()
    for layer in model.layers:
        if layer.name in fused:
            continue
        ops.update(R.tflm_ops_of(layer))
    return ops


def _check_export(model, expected: set):
    tf.keras.utils.set_random_seed(0)
    req = request_for(model, {}, n_rep=48, n_test=16)
    res = C.convert(req)
    parsed = fb.read_model(res.model_bytes)
    assert set(parsed.op_set()) == expected, (sorted(parsed.op_set()), sorted(expected))
    # every op is simulated bit for bit, and the exported float graph is the Keras model
    x = C.quantize_input(parsed, req.x_test)
    mine = S.simulate_tensors(parsed, x)
    theirs = S.run_tflm_tensors(res.model_bytes, x, tensors=[i for i in mine if i != parsed.inputs[0]])
    for i, v in theirs.items():
        assert np.array_equal(mine[i].reshape(v.shape), v), (parsed.producer(i).name, i)
    keras = model.predict(req.x_test, verbose=0)
    assert np.allclose(res.reference_outputs(req.x_test), keras, atol=1e-5, rtol=1e-4)
    return res


def test_the_exporter_accepts_exactly_the_registry_types():
    exportable = set(R.tflm_layers())
    assert set(C.SUPPORTED_LAYERS) == exportable
    assert set(C.PLAN_HANDLERS) == set(R.TFLM_PLANS)
    assert set(CASES) == exportable  # every exportable type has a tiny model below
    # every op the registry names is allowed in an export, simulated, and in the resolver snippet
    assert set(C.ALLOWED_OPS) == set(R.tflm_op_names()) | {fb.DECODE_OP}
    for op in R.tflm_op_names():
        assert op in S.KERNELS and op in CA.RESOLVER_CALLS, op
    for name, spec in R.tflm_layers().items():
        if spec.is_kernel:
            assert set(spec.tflm_ops) & set(R.TFLM_WEIGHT_OPS), name


def test_a_type_outside_the_registry_is_refused_by_name():
    inp = tf.keras.Input((6, 6, 2))
    x = L.SpatialDropout2D(0.2, name="sd")(L.Conv2D(2, 3)(inp))
    model = tf.keras.Model(inp, _head(x))
    with pytest.raises(ValueError, match=r"'sd' \(SpatialDropout2D\).*supported: Activation, Add"):
        C.plan_model(model)


@pytest.mark.slow
@pytest.mark.parametrize("layer_type,case", ALL, ids=[c for _, c in ALL])
def test_tiny_model_converts_to_the_registry_ops(layer_type, case):
    tf.keras.utils.set_random_seed(0)
    model = CASES[layer_type][case]()
    assert any(type(layer).__name__ == layer_type for layer in model.layers)
    _check_export(model, _expected_ops(model))


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(FUSED))
def test_relu_is_fused_into_the_op_before_it(case):
    tf.keras.utils.set_random_seed(0)
    model = FUSED[case]()
    relus = [layer.name for layer in model.layers if type(layer).__name__ in ("ReLU", "Activation")]
    expected = _expected_ops(model, fused=relus)
    assert not expected & {"RELU", "RELU6"}
    res = _check_export(model, expected)
    acts = {op.options.get("fused_activation") for op in fb.read_model(res.model_bytes).operators
            if op.name in R.TFLM_FUSE_INTO}
    assert acts & {"RELU", "RELU6"}


def test_tflm_ops_of_reads_the_function_of_activation_layers():
    assert R.tflm_ops_of(L.Activation("tanh")) == ("TANH",)
    assert R.tflm_ops_of(L.Activation("linear")) == ()
    assert R.tflm_ops_of(L.ReLU(6.0)) == ("RELU6",)
    assert R.tflm_ops_of(L.Dense(2, activation="sigmoid")) == ("FULLY_CONNECTED", "LOGISTIC")
    assert R.tflm_ops_of(L.Dense(2, activation="relu")) == ("FULLY_CONNECTED",)
    assert R.tflm_ops_of(L.Conv1D(2, 3)) == ("RESHAPE", "CONV_2D")
    assert R.tflm_ops_of(L.GlobalMaxPooling2D()) == ("MAX_POOL_2D", "RESHAPE")
    assert R.tflm_ops_of(L.BatchNormalization()) == ()
