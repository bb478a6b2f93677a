"""Issue 16: the export manifest names what was exported: "kind" is "ecqx" for an ECQx model,
"ecq" for an ECQ model and "float" for a plain Keras model."""
from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_kind_names_the_quantization_method(tmp_path):
    import tensorflow as tf

    import ecqx_tf
    from cli.export import main
    from ecqx_tf.keras.api import initialize_assignment
    from models import datasets

    d = datasets.load("digits")
    tf.keras.utils.set_random_seed(0)
    m = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                             tf.keras.layers.Dense(12, activation="relu"), tf.keras.layers.Dense(10)])
    m.save(tmp_path / "float.keras")
    paths = {"float": tmp_path / "float.keras"}
    for method in ("ecq", "ecqx"):
        q = ecqx_tf.quantize(m, bits=4, method=method, relevance_data=(d.x_train[:32], d.y_train[:32]))
        initialize_assignment(q)
        paths[method] = ecqx_tf.save_model(q, tmp_path / f"{method}.h5")
    for kind, path in paths.items():
        out = tmp_path / f"out_{kind}"
        rc = main([str(path), "--target", "tflm", "--data", "digits", "--calib", "16", "--max-eval", "8", "--out",
                   str(out), "-q"])
        assert rc == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["model"]["kind"] == kind, (kind, manifest["model"])
        assert (manifest["model"]["quantized_layers"] == []) == (kind == "float")
