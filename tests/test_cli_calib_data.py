"""Issue 13 item 3 (command-line side): ``ecqx-export --calib-data FILE`` calibrates on the user's
own inputs; without any data the export refuses unless ``--random-calibration``.

The issue's case: a model whose real inputs are N(0, 1). Calibrated on uniform [0, 1] noise, most
input values clip and the TFLM argmax tracks Keras on few inputs; calibrated on its own data it
tracks Keras closely.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def call(main, argv):
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return int(e.code or 0)


@pytest.fixture(scope="module")
def gaussian_model(tmp_path_factory):
    """A 16-32-4 MLP trained on N(0, 1) inputs (class = the largest of four fixed projections),
    with its own data as .npy / .npz files."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    proj = rng.normal(size=(16, 4)).astype(np.float32)
    x = rng.normal(size=(1500, 16)).astype(np.float32)
    y = np.argmax(x @ proj, axis=1).astype(np.int64)
    tf.keras.utils.set_random_seed(0)
    m = tf.keras.Sequential([tf.keras.Input((16,)), tf.keras.layers.Dense(32, activation="relu"),
                             tf.keras.layers.Dense(4)])
    m.compile(optimizer=tf.keras.optimizers.Adam(0.01),
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    m.fit(x[:1000], y[:1000], epochs=15, batch_size=64, verbose=0)
    base = tmp_path_factory.mktemp("gauss")
    model = base / "gauss.keras"
    m.save(model)
    np.save(base / "x.npy", x)
    np.savez(base / "xy.npz", x=x, y=y)
    return {"model": model, "npy": base / "x.npy", "npz": base / "xy.npz", "x": x, "y": y, "dir": base}


def _export(argv):
    from cli.export import main

    return call(main, argv)


@pytest.mark.slow
def test_own_data_tracks_keras_and_noise_does_not(gaussian_model, tmp_path, capsys):
    g = gaussian_model
    args = [g["model"], "--target", "tflm", "--calib", "500", "--max-eval", "1000"]
    assert _export(args + ["--calib-data", g["npz"], "--out", tmp_path / "own"]) == 0
    text = capsys.readouterr().out
    assert "calibrated on" in text and "rows 0..499 of xy.npz" in text and "rows 500..1499 of xy.npz" in text
    m = json.loads((tmp_path / "own" / "manifest.json").read_text())
    assert m["data"]["source"] == "file" and m["data"]["file"] == "xy.npz" and m["data"]["labels"] is True
    assert m["data"]["calibration_rows"] == [0, 500] and m["data"]["eval_rows"] == [500, 1500]
    hc = m["summary"]["host_check"]
    assert hc["samples"] == 1000 and hc["mismatches_simulator"] == 0
    assert hc["agreement_float_tflm"] >= 0.95, hc  # tracks Keras on held-out rows
    assert hc["acc_tflm"] is not None and hc["acc_tflm"] > 0.8

    # the same model calibrated on uniform noise (explicitly asked for): clipped inputs, poor tracking
    assert _export(args + ["--random-calibration", "--out", tmp_path / "noise"]) == 0
    text = capsys.readouterr().out
    assert "256 uniform random inputs in [0, 1]" in text
    noise = json.loads((tmp_path / "noise" / "manifest.json").read_text())
    assert noise["data"]["source"] == "random"
    from firmware_export.tflm import simulate as S
    from firmware_export.tflm.flatbuffer import read_model

    tfl = (tmp_path / "noise" / "gauss.tflite").read_bytes()
    inp = read_model(tfl).tensors[read_model(tfl).inputs[0]].quantization
    q = np.round(g["x"][500:] / inp.scale[0]) + inp.zero_point[0]
    clipped = float(np.mean((q < -128) | (q > 127)))
    assert clipped > 0.4, clipped  # most N(0, 1) inputs fall outside a [0, 1] calibration range
    x_int8 = np.clip(q, -128, 127).astype(np.int8)
    y_tflm = S.run_tflm(tfl, x_int8)
    import tensorflow as tf

    keras = tf.keras.models.load_model(g["model"]).predict(g["x"][500:], verbose=0)
    agree = float(np.mean(np.argmax(y_tflm, 1) == np.argmax(keras, 1)))
    assert agree < hc["agreement_float_tflm"] - 0.2, (agree, hc["agreement_float_tflm"])


@pytest.mark.slow
def test_npy_flat_rows_are_reshaped(gaussian_model, tmp_path, capsys):
    """A .npy without labels; a model taking (4, 4) inputs gets its rows of 16 values reshaped."""
    import tensorflow as tf

    g = gaussian_model
    tf.keras.utils.set_random_seed(1)
    m = tf.keras.Sequential([tf.keras.Input((4, 4)), tf.keras.layers.Flatten(), tf.keras.layers.Dense(4)])
    path = tmp_path / "square.keras"
    m.save(path)
    assert _export([path, "--target", "tflm", "--calib", "64", "--max-eval", "32", "--calib-data", g["npy"],
                    "--out", tmp_path / "o"]) == 0
    text = capsys.readouterr().out
    assert "no labels (y), so no accuracy" in text
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["data"]["labels"] is False and m["summary"]["host_check"]["samples"] == 32


def test_refusals(gaussian_model, tmp_path, capsys):
    g = gaussian_model
    base = [g["model"], "--target", "tflm", "--out", tmp_path / "o"]
    d = tmp_path

    def bad(path: Path, content) -> Path:
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif path.suffix == ".npz":
            np.savez(path, **content)
        else:
            np.save(path, content, allow_pickle=True)
        return path

    cases = [
        ([], "no calibration data: pass --data NAME"),
        (["--data", "digits", "--calib-data", g["npy"]], "--data and --calib-data exclude each other"),
        (["--calib-data", g["npy"], "--random-calibration"], "exclude each other"),
        (["--calib-data", d / "missing.npy"], "--calib-data file not found"),
        (["--calib-data", bad(d / "x.csv", b"1,2\n")], "suffix '.csv' not accepted"),
        (["--calib-data", bad(d / "t.npy", b"\x93NUMPY garbage")], "is not a readable .npy file"),
        (["--calib-data", bad(d / "obj.npy", np.array([{"a": 1}], dtype=object))], "allow_pickle=False"),
        (["--calib-data", bad(d / "s.npy", np.array(["a", "b"]))], "must be a numeric"),
        (["--calib-data", bad(d / "nan.npy", np.full((4, 16), np.nan, np.float32))], "NaN or infinite"),
        (["--calib-data", bad(d / "empty.npy", np.zeros((0, 16), np.float32))], "has no rows"),
        (["--calib-data", bad(d / "noX.npz", {"inputs": np.zeros((4, 16))})], "has no array 'x'"),
        (["--calib-data", bad(d / "ylen.npz", {"x": np.zeros((4, 16)), "y": np.zeros(3, int)})],
         "one class label per row"),
        (["--calib-data", bad(d / "yneg.npz", {"x": np.zeros((4, 16)), "y": -np.ones(4, int)})], "labels >= 0"),
        (["--calib-data", bad(d / "shape.npy", np.zeros((4, 15), np.float32))],
         "rows have shape [15] (15 values), the model takes [16]"),
    ]
    for extra, msg in cases:
        assert _export(base + extra) == 2, extra
        err = capsys.readouterr().err.strip()
        errors = [ln for ln in err.splitlines() if ln.startswith("ecqx-export: error: ")]
        assert len(errors) == 1 and msg in errors[0] and "Traceback" not in err, (extra, err)
        if "shape" not in msg:  # refused before the model is even loaded
            assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_calib_file_is_an_input_of_the_command(gaussian_model, tmp_path, capsys):
    g = gaussian_model
    # --out may not be the folder holding the calibration file
    assert _export([g["model"], "--target", "tflm", "--calib-data", g["npy"], "--out", g["dir"], "--force"]) == 2
    assert "contains the input" in capsys.readouterr().err
