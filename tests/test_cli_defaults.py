"""Issue 16: one set of ECQ/ECQx defaults (``ecqx_tf.config.ECQ_DEFAULTS``) used by the Python API,
``ecqx-quantize`` and ``ecqx-compress ecq|ecqx``; the two command lines write the same files."""
from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from ecqx_tf.config import ECQ_DEFAULTS


def test_the_authors_defaults():
    assert ECQ_DEFAULTS["Lambda"] == 0.05 and ECQ_DEFAULTS["p"] == 0.1 and ECQ_DEFAULTS["lr"] == 1e-3
    assert ECQ_DEFAULTS["lr_schedule"] == "constant" and ECQ_DEFAULTS["refresh_every"] == 1


def test_every_entry_point_reads_them():
    from cli.compress import build_parser as compress_parser
    from cli.quantize import build_parser
    from ecqx_tf.keras.api import quantize
    from ecqx_tf.keras.finetune import quantize_and_train
    from ecqx_tf.keras.quantize_config import ECQQuantizeConfig
    from ecqx_tf.methods.api import ECQ, ECQx

    def signature_defaults(fn):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty}

    for fn in (quantize, quantize_and_train, ECQQuantizeConfig.__init__):
        d = signature_defaults(fn)
        shared = set(d) & set(ECQ_DEFAULTS)
        assert len(shared) >= 6 and {k: d[k] for k in shared} == {k: ECQ_DEFAULTS[k] for k in shared}, fn
    cli = vars(build_parser().parse_args(["m.keras", "--data", "digits", "--out", "o"]))
    assert {k: cli[k] for k in ECQ_DEFAULTS} == dict(ECQ_DEFAULTS)
    assert ECQx().quantize_kwargs() == dict(ECQ_DEFAULTS)
    assert ECQ().quantize_kwargs() == {**ECQ_DEFAULTS, "method": "ecq"}
    sub = compress_parser()._subparsers._group_actions[0].choices["ecqx"]
    args = vars(sub.parse_args(["m.keras", "--data", "digits", "--out", "o"]))
    assert {k: args[k] for k in ECQ_DEFAULTS if k != "method"} == {k: v for k, v in ECQ_DEFAULTS.items() if k != "method"}
    for flag in ("--gradient", "--lambda-reduce", "--lr-schedule", "--refresh-every", "--p", "--relevance-samples"):
        assert flag in sub.format_help()


@pytest.mark.slow
def test_quantize_and_compress_ecqx_write_the_same_files(tmp_path):
    import tensorflow as tf

    from cli.compress import main as compress
    from cli.quantize import main as quantize

    tf.keras.utils.set_random_seed(0)
    m = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                             tf.keras.layers.Dense(12, activation="relu"), tf.keras.layers.Dense(10)])
    m.save(tmp_path / "m.keras")
    common = ["--data", "digits", "--epochs", "1", "--relevance-samples", "64", "-q"]
    assert quantize([str(tmp_path / "m.keras"), "--out", str(tmp_path / "q")] + common) == 0
    assert compress(["ecqx", str(tmp_path / "m.keras"), "--out", str(tmp_path / "c")] + common) == 0
    q, c = tmp_path / "q", tmp_path / "c"
    assert sorted(p.name for p in q.iterdir()) == sorted(p.name for p in c.iterdir()) == [
        "layer_stats.json", "manifest.json", "metrics.json", "qat_model.h5", "stripped.keras"]
    mq, mc = (json.loads((d / "metrics.json").read_text()) for d in (q, c))
    assert mq["args"] == mc["args"] and mq.keys() == mc.keys()
    assert json.loads((q / "layer_stats.json").read_text()) == json.loads((c / "layer_stats.json").read_text())
    sq, sc = (tf.keras.models.load_model(d / "stripped.keras") for d in (q, c))
    for a, b in zip(sq.weights, sc.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert json.loads((q / "manifest.json").read_text())["tool"] == "ecqx-quantize"
    assert json.loads((c / "manifest.json").read_text())["tool"] == "ecqx-compress"
