"""TFLM export of graph models (issue 13): every architecture family of the model zoo as a small
model built here, as float (int8 post-training quantization) and with ECQ-style quantized kernels;
stored integers == assigned levels, the float graph the exporter reproduces == Keras, and TFLM ==
simulator on every sample and every intermediate tensor. The end-to-end tests are parametrized over
``tflm_helpers.GRAPH_MODELS``: the zoo's trained ECQ/ECQx models join that list when they land."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import tensorflow as tf  # noqa: E402
from tflm_helpers import GRAPH_MODELS, fc_autoencoder_like, request_for, snap_model_for_tests  # noqa: E402

from firmware_export.tflm import c_arrays as CA  # noqa: E402
from firmware_export.tflm import convert as C  # noqa: E402
from firmware_export.tflm import flatbuffer as fb  # noqa: E402
from firmware_export.tflm import simulate as S  # noqa: E402

L = tf.keras.layers
_CACHE = {}


def exported(name: str, quantized: bool):
    key = (name, quantized)
    if key not in _CACHE:
        model = GRAPH_MODELS[name]()
        quant = {}
        if quantized:
            model, quant = snap_model_for_tests(model, 4, kinds="all", seed=3)
        req = request_for(model, quant, n_rep=64, n_test=24)
        _CACHE[key] = (model, quant, req, C.convert(req))
    return _CACHE[key]


def _bn_after(model, layer_name: str):
    """The BatchNormalization that directly reads ``layer_name``'s output, if any."""
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            src = layer.input._keras_history[0]
            if src.name == layer_name:
                return layer
    return None


def _expected_integers(model, key: str, qk, op: str) -> np.ndarray:
    """QuantizedKernel.integers() in TFLite layout, times sign(gamma / sqrt(var + eps)) per output
    channel when a BatchNorm follows the layer (computed from the Keras layer, not the plan)."""
    layer_name = key.split("/")[0]
    k = np.asarray(qk.integers(), np.int64)
    bn = _bn_after(model, layer_name) if "/depthwise_kernel" not in key else None
    if bn is not None:
        gamma, _, _, var = bn.get_weights()
        f = gamma / np.sqrt(var + bn.epsilon)
        sign = np.sign(f).astype(np.int64)
        if op == "DEPTHWISE_CONV_2D":
            h, w, c, m = k.shape
            k = k * sign.reshape(c, m)
        else:
            k = k * sign
    return C.tflite_layout(op, k).astype(np.int8)


@pytest.mark.slow
@pytest.mark.parametrize("quantized", [False, True], ids=["float", "ecq4"])
@pytest.mark.parametrize("name", sorted(GRAPH_MODELS))
def test_graph_model_exports_exactly(name, quantized):
    model, quant, req, res = exported(name, quantized)
    parsed = fb.read_model(res.model_bytes)
    assert set(parsed.op_set()) <= set(C.ALLOWED_OPS)
    assert res.operators == parsed.op_names()
    # the float graph the exporter converts computes what the Keras model computes
    keras = model.predict(req.x_test, verbose=0)
    ref = res.reference_outputs(req.x_test)
    assert np.allclose(ref, keras, atol=1e-5 * max(1.0, float(np.abs(keras).max())), rtol=1e-4)
    # stored integers == assigned levels; INT4 where TFLM's kernel takes it
    checked = set()
    for s, op, t in C._match_weights(parsed, res.plan):
        if s.quant is None:
            assert t.dtype == "INT8"
            continue
        exp = _expected_integers(model, s.layer, quant[s.layer], op.name)
        assert np.array_equal(parsed.constant_values(t.index), exp), s.layer
        int4_allowed = op.name in ("CONV_2D", "DEPTHWISE_CONV_2D") or t.quantization.scale.size == 1
        assert t.dtype == ("INT4" if int4_allowed else "INT8"), (s.layer, t.dtype)
        checked.add(s.layer)
    assert checked == set(quant)
    for row in res.layers:
        assert {"op", "weight_type", "scales", "zero_points", "zeros"} <= set(row)
        assert row["zero_points"] == [0]
    # TFLM == simulator on every sample and every intermediate tensor
    x = C.quantize_input(res.model_bytes, req.x_test)
    mine = S.simulate_tensors(parsed, x)
    theirs = S.run_tflm_tensors(res.model_bytes, x, tensors=[i for i in mine if i != parsed.inputs[0]])
    assert len(theirs) == len(parsed.operators) - parsed.op_names().count(fb.DECODE_OP)
    for i, v in theirs.items():
        assert np.array_equal(mine[i].reshape(v.shape), v), (parsed.producer(i).name, i)
    # the int8 model tracks the float one
    deq = C.dequantize_output(res.model_bytes, theirs[parsed.outputs[0]]).reshape(len(x), -1)
    out_scale = parsed.tensors[parsed.outputs[0]].quantization.scale[0]
    err = np.abs(deq - ref.reshape(len(x), -1)).max()
    assert err < 0.15 * np.ptp(ref) + 6 * out_scale, (name, err)


def test_expected_ops_per_family():
    ops = {name: exported(name, True)[3].ops for name in ("resnet_like", "concat_like", "conv1d_like", "mobilenet_like")}
    assert "ADD" in ops["resnet_like"]
    assert {"CONCATENATION", "DEPTHWISE_CONV_2D", "MAX_POOL_2D"} <= set(ops["concat_like"])
    assert {"RESHAPE", "CONV_2D", "MAX_POOL_2D", "MEAN", "PAD"} <= set(ops["conv1d_like"])
    assert {"PAD", "DEPTHWISE_CONV_2D", "MEAN"} <= set(ops["mobilenet_like"])
    assert exported("sigmoid_like", False)[3].operators[-1] == "LOGISTIC"
    assert exported("softmax_like", False)[3].operators[-1] == "SOFTMAX"


def test_separable_conv_keys_and_integers():
    model, quant, req, res = exported("concat_like", True)
    sep = [l.name for l in model.layers if isinstance(l, L.SeparableConv2D)][0]
    assert {f"{sep}/depthwise_kernel", f"{sep}/pointwise_kernel"} <= set(quant)
    assert quant[f"{sep}/depthwise_kernel"].kernel == "depthwise_kernel"
    rows = {r["layer"]: r for r in res.layers}
    assert rows[f"{sep}/depthwise_kernel"]["op"] == "DEPTHWISE_CONV_2D"
    assert rows[f"{sep}/pointwise_kernel"]["op"] == "CONV_2D"
    assert rows[f"{sep}/pointwise_kernel"]["activation"] == "RELU"


def test_quantization_key_must_name_the_kernel():
    model, quant, req, _ = exported("concat_like", True)
    sep = [l.name for l in model.layers if isinstance(l, L.SeparableConv2D)][0]
    bad = dict(quant)
    bad[sep] = bad.pop(f"{sep}/depthwise_kernel")
    with pytest.raises(ValueError, match=r"names kernel\(s\) \['" + sep):
        C.convert(request_for(model, bad))


def test_standalone_batchnorm_and_shared_relu_input():
    """A BatchNorm in front of a float Dense is folded into it; a ReLU whose input is also read by
    an Add becomes a second FULLY_CONNECTED with the ReLU fused (what the TFLite converter makes of
    it); a ReLU after an Add is fused into the ADD."""
    tf.keras.utils.set_random_seed(4)
    inp = tf.keras.Input((10,))
    x = L.BatchNormalization()(inp)
    d = L.Dense(6)(x)
    r = L.ReLU()(d)
    y = L.Dense(6)(r)
    out = L.Activation("relu")(L.Add()([d, y]))
    model = tf.keras.Model(inp, L.Dense(3)(out))
    from tflm_helpers import randomize_batchnorm

    randomize_batchnorm(model)
    req = request_for(model, {})
    res = C.convert(req)
    assert sorted(res.operators) == ["ADD"] + ["FULLY_CONNECTED"] * 4
    parsed = fb.read_model(res.model_bytes)
    acts = sorted(op.options["fused_activation"] for op in parsed.operators if op.name == "FULLY_CONNECTED")
    assert acts == ["NONE", "NONE", "NONE", "RELU"]
    assert any("fused into a second FULLY_CONNECTED" in n for n in res.notes)
    add = [op for op in parsed.operators if op.name == "ADD"][0]
    assert add.options["fused_activation"] == "RELU"
    assert any("folded into the input side" in n for n in res.notes)
    keras = model.predict(req.x_test, verbose=0)
    assert np.allclose(res.reference_outputs(req.x_test), keras, atol=1e-4)
    x = C.quantize_input(res.model_bytes, req.x_test)
    assert np.array_equal(S.simulate(parsed, x), S.run_tflm(res.model_bytes, x))


@pytest.mark.slow
def test_graph_export_files_list_every_op(tmp_path):
    """The tflm target on a residual model: golden vectors, golden header, resolver snippet with
    every op, per-layer report (op, weight type, scales, zeros); ecqx-simulate re-check passes."""
    from firmware_export.tflm.target import REPORT, TFLMTarget

    model, quant, req, res = exported("resnet_like", True)
    target = TFLMTarget()
    out = tmp_path / "tflm"
    out.mkdir()
    summary = target.export(req, out)
    assert summary["ok"] and summary["host_check"]["mismatches_simulator"] == 0
    report = json.loads((out / REPORT).read_text())
    assert report["operators"] == res.operators
    for row in report["layers"]:
        assert row["op"] in ("CONV_2D", "FULLY_CONNECTED") and row["weight_type"] == "INT4"
        assert len(row["scales"]) == row["scale_count"] and row["zero_points"] == [0]
    h = (out / f"{req.name}_model_data.h").read_text()
    for op in res.ops:
        assert f"TF_LITE_ENSURE_STATUS(resolver.{CA.RESOLVER_CALLS[op]}());" in h
    assert f"k{CA.camel_case(req.name)}OpCount = {len(res.ops)};" in h
    g = S.read_golden(out / f"{req.name}_golden.npz")
    assert g["x_int8"].shape == (len(req.x_test), 8, 8, 3) and g["y_int8"].shape == (len(req.x_test), 4)
    assert (out / f"{req.name}_golden.h").is_file()
    assert target.simulate(out)["ok"]


@pytest.mark.slow
def test_autoencoder_golden_vectors_without_labels(tmp_path):
    """A non-classifier (output = reconstruction of a 640-wide input): no labels, no argmax
    agreement, golden labels -1."""
    from firmware_export.registry import ExportRequest
    from firmware_export.tflm.target import TFLMTarget

    model = fc_autoencoder_like(width=16, bottleneck=4, n_in=640)
    model, quant = snap_model_for_tests(model, 4, kinds="all")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 640)).astype(np.float32)
    req = ExportRequest(model=model, quant=quant, name="ae", representative=x[:48], x_test=x[48:], y_test=x[48:],
                        data_description={"calibration": "48 N(0, 1) samples (test)"})
    out = tmp_path / "ae"
    out.mkdir()
    summary = TFLMTarget().export(req, out)
    assert summary["ok"]
    hc = summary["host_check"]
    assert hc["acc_tflm"] is None and hc["agreement_float_tflm"] is None and hc["max_abs_error"] is not None
    assert summary["data"] == {"calibration": "48 N(0, 1) samples (test)"}
    g = S.read_golden(out / "ae_golden.npz")
    assert np.all(g["labels"] == -1) and g["y_int8"].shape == (32, 640)
    assert "g_ae_golden_labels" in (out / "ae_golden.h").read_text()


@pytest.mark.slow
def test_fc_autoencoder_exports_to_fantastic4(tmp_path):
    """Issue 13 item 4: the FC autoencoder (640 in and out, Dense+BN+ReLU blocks) after BatchNorm
    folding is a plain Dense chain: --target fantastic4 exports it, a linear 640-wide last layer
    and a non-classifier output included, with C == simulator == TFLM on every golden vector."""
    import shutil

    from tflm_helpers import fold_dense_batchnorm

    from firmware_export.fantastic4.target import FantastIC4Target
    from firmware_export.registry import ExportRequest

    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    model = fold_dense_batchnorm(fc_autoencoder_like(width=32, bottleneck=8, n_in=640))
    assert not any(isinstance(l, L.BatchNormalization) for l in model.layers)
    model, quant = snap_model_for_tests(model, 4)
    assert model.layers[-1].units == 640 and model.layers[-1].get_config()["activation"] == "linear"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(72, 640)).astype(np.float32)
    req = ExportRequest(model=model, quant=quant, name="ae", representative=x[:48], x_test=x[48:], y_test=x[48:])
    target = FantastIC4Target()
    out = tmp_path / "f4"
    out.mkdir()
    summary = target.export(req, out)
    assert summary.get("python_equals_tflm", True) is True
    result = target.simulate(out)
    assert result["ok"], result


@pytest.mark.slow
def test_activations_after_other_ops():
    """ReLU after a concatenation (RELU op), after a pool (the converter fuses it into the pool,
    which keeps its input scale), ReLU6 after a global average pool, sigmoid inside a Conv1D model
    with 1-D average and global max pooling and a softmax output: TFLM == simulator on every
    tensor, close to Keras."""
    tf.keras.utils.set_random_seed(0)
    models = []
    inp = tf.keras.Input((8, 8, 2))
    x = L.ReLU()(L.Concatenate()([L.Conv2D(3, 1)(inp), L.Conv2D(3, 1)(inp)]))
    models.append(tf.keras.Model(inp, L.Dense(2)(L.Flatten()(x))))
    inp = tf.keras.Input((8, 8, 2))
    x = L.ReLU()(L.MaxPooling2D(2)(L.Conv2D(3, 3)(inp)))
    models.append(tf.keras.Model(inp, L.Dense(2)(L.Flatten()(x))))
    inp = tf.keras.Input((8, 8, 2))
    x = L.Activation("relu6")(L.GlobalAveragePooling2D()(L.Conv2D(3, 3)(inp)))
    models.append(tf.keras.Model(inp, L.Dense(2)(x)))
    inp = tf.keras.Input((12, 3))
    x = L.AveragePooling1D(3)(L.Conv1D(4, 3, padding="same", activation="sigmoid")(inp))
    models.append(tf.keras.Model(inp, L.Dense(2, activation="softmax")(L.GlobalMaxPooling1D()(x))))
    expected_ops = [{"CONCATENATION", "RELU"}, {"MAX_POOL_2D"}, {"MEAN", "RELU6"}, {"LOGISTIC", "AVERAGE_POOL_2D", "SOFTMAX"}]
    for model, ops in zip(models, expected_ops):
        req = request_for(model, {})
        res = C.convert(req)
        assert ops <= set(res.ops), res.ops
        parsed = fb.read_model(res.model_bytes)
        x8 = C.quantize_input(parsed, req.x_test)
        mine = S.simulate_tensors(parsed, x8)
        theirs = S.run_tflm_tensors(res.model_bytes, x8, tensors=[i for i in mine if i != parsed.inputs[0]])
        for i, v in theirs.items():
            assert np.array_equal(mine[i].reshape(v.shape), v), (parsed.producer(i).name, i)
        keras = model.predict(req.x_test, verbose=0)
        deq = C.dequantize_output(parsed, theirs[parsed.outputs[0]])
        out_scale = parsed.tensors[parsed.outputs[0]].quantization.scale[0]
        assert np.abs(deq - keras).max() < 0.1 * np.ptp(keras) + 6 * out_scale
