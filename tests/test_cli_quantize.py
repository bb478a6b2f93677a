"""ecqx-quantize end to end on the bundled 8x8 digits."""
import json

import numpy as np
import pytest

import ecqx_tf
from cli.quantize import main
from models import zoo


@pytest.fixture(scope="module")
def float_model_path(tmp_path_factory):
    m = zoo.build("mnist_mlp", (8, 8, 1), 10, seed=0)
    path = tmp_path_factory.mktemp("float") / "model.keras"
    m.save(path)
    return path


def test_cli_quantizes_and_writes_outputs(float_model_path, tmp_path, capsys):
    out = tmp_path / "q"
    rc = main([str(float_model_path), "--data", "digits", "--out", str(out), "--bits", "3", "--method", "ecqx",
               "--Lambda", "0.2", "--epochs", "1", "--refresh-every", "4"])
    assert rc == 0
    for f in ("qat_model.h5", "stripped.keras", "layer_stats.json", "metrics.json"):
        assert (out / f).is_file(), f
    q = ecqx_tf.load_model(out / "qat_model.h5")
    stats = json.loads((out / "layer_stats.json").read_text())
    assert stats == json.loads(json.dumps(ecqx_tf.layer_stats(q)))
    info = ecqx_tf.quantization_info(q)
    s = ecqx_tf.load_model(out / "stripped.keras")
    for name, qk in info.items():
        assert qk.bits == 3
        np.testing.assert_array_equal(s.get_layer(name).kernel.numpy(), qk.values())
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--bits", "9"], r"argument --bits: must be an integer in 2\.\.8, got '9'"),
        (["--Lambda", "-1"], r"argument --Lambda: must be a finite number >= 0, got '-1'"),
        (["--p", "2"], r"argument --p: must be a number in \[0, 1\], got '2'"),
    ],
)
def test_cli_bad_values(float_model_path, tmp_path, capsys, argv, msg):
    with pytest.raises(SystemExit) as e:
        main([str(float_model_path), "--data", "digits", "--out", str(tmp_path / "o"), "--epochs", "1"] + argv)
    assert e.value.code == 2
    import re

    assert re.search(msg, capsys.readouterr().err)


def test_cli_unknown_names_and_missing_model(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "m.keras"), "--data", "nope", "--out", str(tmp_path)])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "m.keras"), "--data", "digits", "--out", str(tmp_path), "--lr-schedule", "step"])
    assert "invalid choice: 'step' (choose from 'constant', 'cosine')" in capsys.readouterr().err
    rc = main([str(tmp_path / "missing.keras"), "--data", "digits", "--out", str(tmp_path / "o")])
    assert rc == 2 and "model file not found" in capsys.readouterr().err


def test_exclude_does_not_swallow_the_model():
    from cli.quantize import build_parser

    p = build_parser()
    args = p.parse_args(["--exclude", "a", "model.keras", "--data", "digits", "--out", "o"])
    assert args.model == "model.keras" and args.exclude == ["a"]
    args = p.parse_args(["--exclude", "a,b", "--exclude", "c", "m.keras", "--data", "digits", "--out", "o"])
    assert args.exclude == ["a", "b", "c"]
    assert p.parse_args(["m.keras", "--data", "digits", "--out", "o"]).exclude == []


def test_every_flag_has_help_and_a_shown_default():
    import argparse

    from cli.quantize import build_parser

    p = build_parser()
    for action in p._actions:
        if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        text = p._get_formatter()._expand_help(action) if action.help else ""
        assert text, action.option_strings
        if action.default not in (None, False) and not action.required:
            assert "default" in text, (action.option_strings, text)
    for flag in ("--method", "--grid", "--gradient", "--lambda-reduce", "--epochs", "--batch-size", "--lr", "--seed"):
        assert flag in p.format_help()
