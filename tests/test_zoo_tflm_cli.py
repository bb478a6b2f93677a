"""Issue 13, end to end through the command line: every architecture of the model zoo (small
variants) is trained for a few ECQ or ECQx steps, saved as a QAT ``.h5`` and exported with
``ecqx-export QAT.h5 --target tflm --calib-data FILE --out DIR`` (the CLI's ``main``, in process).

Per architecture: exit code 0; ``summary.ok`` true and zero TFLM/simulator mismatches in
``DIR/manifest.json``; every stored weight integer of the ``.tflite`` equals the level the
quantizer assigned (``quantization_info`` of the reloaded ``.h5``, in TFLite layout); the TFLM
outputs of the golden vectors (held-out rows of the file, not used for calibration) track the
stripped Keras model: argmax agreement >= 0.9 for the classifiers, and for the autoencoder a
largest absolute error below 10% of the float output range (int8 activations: 256 steps over each
tensor's calibrated range).

Data: seeded N(0, 1) inputs; classifiers get the class of the largest of ``classes`` fixed random
projections (learnable, so the logits are not ties); the files are ``.npz`` with ``x`` and ``y``
or ``.npy`` with ``x`` alone, both forms covered. Methods: ECQx (relevance from ``(x, y)``, the
autoencoder from ``x`` alone) and ECQ, both covered.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

#: name -> (input shape, outputs, size options, method, calibration file suffix): the zoo's small
#: variants (as in tests/test_zoo_train.py)
ARCHS = {
    "ds_cnn": ((13, 6, 1), 4, {"filters": 6, "blocks": 1}, "ecqx", ".npz"),
    "mobilenet_v1_025": ((16, 16, 3), 2, {"alpha": 0.0625, "blocks": 2}, "ecq", ".npy"),
    "resnet8": ((12, 12, 3), 3, {"filters": 4}, "ecqx", ".npy"),
    "fc_autoencoder": ((24,), 24, {"width": 8, "bottleneck": 3, "depth": 2}, "ecqx", ".npy"),
    "sensor_cnn1d": ((16, 3), 3, {"filters": (4, 6)}, "ecq", ".npz"),
    "mnist_mlp": ((6, 6, 1), 3, {}, "ecqx", ".npz"),
    "lenet5": ((12, 12, 1), 3, {}, "ecq", ".npz"),
}
N_ROWS = 192
N_CALIB = 96  # rows 0..95 calibrate, rows 96..191 are the held-out golden vectors
STEPS = 3


def _data(name: str, shape, outputs: int):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_ROWS,) + tuple(shape)).astype(np.float32)
    if name == "fc_autoencoder":
        return x, None
    proj = rng.normal(size=(int(np.prod(shape)), outputs)).astype(np.float32)
    return x, np.argmax(x.reshape(N_ROWS, -1) @ proj, axis=1).astype(np.int64)


def _train_and_save(name: str, tmp: Path):
    import tensorflow as tf

    import ecqx_tf
    from models import zoo

    shape, outputs, size, method, suffix = ARCHS[name]
    tf.keras.utils.set_random_seed(0)
    model = zoo.build(name, shape, outputs, seed=0, **size)
    x, y = _data(name, shape, outputs)
    target = x if y is None else y
    kw = {"relevance_data": x[:32] if y is None else (x[:32], y[:32])} if method == "ecqx" else {}
    q = ecqx_tf.quantize(model, bits=4, method=method, **kw)
    loss = (tf.keras.losses.MeanSquaredError() if y is None
            else tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    q.compile(tf.keras.optimizers.Adam(1e-2), loss)
    q.fit(x[:N_CALIB], target[:N_CALIB], batch_size=32, epochs=1, steps_per_epoch=STEPS, verbose=0, shuffle=False,
          callbacks=[ecqx_tf.ECQxCallback()])
    h5 = Path(ecqx_tf.save_model(q, tmp / f"{name}.h5"))
    data = tmp / f"{name}_data{suffix}"
    if suffix == ".npz":
        np.savez(data, x=x, y=y)
    else:
        np.save(data, x)
    return h5, data, x, y


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ARCHS))
def test_zoo_architecture_exports_through_the_cli(name, tmp_path, capsys):
    import ecqx_tf
    from cli.export import main
    from firmware_export.tflm import convert as C
    from firmware_export.tflm import flatbuffer as fb

    h5, data, x, y = _train_and_save(name, tmp_path)
    out = tmp_path / "out"
    argv = [str(h5), "--target", "tflm", "--calib-data", str(data), "--calib", str(N_CALIB),
            "--max-eval", str(N_ROWS - N_CALIB), "--out", str(out), "-q"]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = int(e.code or 0)
    assert rc == 0, capsys.readouterr().err

    manifest = json.loads((out / "manifest.json").read_text())
    summary = manifest["summary"]
    hc = summary["host_check"]
    assert summary["ok"] is True
    assert hc["samples"] == N_ROWS - N_CALIB and hc["mismatches_simulator"] == 0
    _, _, _, method, suffix = ARCHS[name]
    assert manifest["model"]["kind"] == method
    assert manifest["data"]["source"] == "file" and manifest["data"]["file"] == data.name
    assert manifest["data"]["calibration_rows"] == [0, N_CALIB]
    assert manifest["data"]["eval_rows"] == [N_CALIB, N_ROWS]
    assert manifest["data"]["labels"] is (suffix == ".npz")

    # every stored integer is the level the quantizer assigned (read back from the saved .h5)
    qmodel = ecqx_tf.load_model(h5)
    info = ecqx_tf.quantization_info(qmodel)
    tfl = (out / summary["tflite"]).read_bytes()
    parsed = fb.read_model(tfl)
    rows = {r["op_index"]: r for r in summary["layers"]}
    seen = set()
    for op, t in fb.weight_tensors(parsed):
        key = rows[op.index]["layer"]
        assert key in info, (key, sorted(info))
        expected = C.tflite_layout(op.name, np.asarray(info[key].integers(), np.int64)).astype(np.int8)
        assert np.array_equal(parsed.constant_values(t.index), expected), key
        assert rows[op.index]["weight_type"] == "INT4"
        seen.add(key)
    assert seen == set(info) == set(manifest["model"]["quantized_layers"])

    # the TFLM outputs of the held-out golden rows track the Keras model
    golden = np.load(out / manifest["summary"]["golden"]["file"])
    assert np.array_equal(golden["x_float"], x[N_CALIB:])
    keras = ecqx_tf.strip(qmodel).predict(x[N_CALIB:], verbose=0).reshape(N_ROWS - N_CALIB, -1)
    o = summary["output"]
    tflm = ((golden["y_int8"].astype(np.float32) - o["zero_point"]) * o["scale"]).reshape(keras.shape)
    if y is None:
        err = float(np.max(np.abs(tflm - keras)))
        assert err < 0.1 * float(np.ptp(keras)), (err, float(np.ptp(keras)))
    else:
        agree = float(np.mean(np.argmax(tflm, 1) == np.argmax(keras, 1)))
        assert agree >= 0.9, agree
        if suffix == ".npz":  # with labels the export reports the agreement (and accuracies) itself
            assert hc["agreement_float_tflm"] is not None and hc["agreement_float_tflm"] >= 0.9, hc
