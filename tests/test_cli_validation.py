"""Issue 11 item 7: every argument of every command is checked before any work starts, with the
accepted range in a one-line message and exit code 2; a run whose quantized weights all come out
zero says so and exits with 1."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("ECQX_TEST_ROOT", Path(__file__).resolve().parents[1]))


def call(main, argv):
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return int(e.code or 0)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    m = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                             tf.keras.layers.Dense(12, activation="relu"), tf.keras.layers.Dense(10)])
    path = tmp_path_factory.mktemp("model") / "m.keras"
    m.save(path)
    return path


def _mains():
    from cli.compress import main as compress
    from cli.export import main as export
    from cli.quantize import main as quantize
    from cli.train import main as train
    from pipeline.demo import main as demo

    return {"quantize": quantize, "compress": compress, "export": export, "train": train, "demo": demo}


def _base(cmd, model, out):
    return {
        "quantize": [model, "--data", "digits", "--out", out],
        "compress": ["ecqx", model, "--data", "digits", "--out", out],
        "export": [model, "--target", "tflm", "--data", "digits", "--out", out],
        "train": ["--model", "mnist_mlp", "--data", "digits", "--out", out],
        "demo": ["--out", out],
    }[cmd]


BAD = [
    # the cases
    ("quantize", ["--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got '0'"),
    ("quantize", ["--epochs", "0"], "argument --epochs: must be an integer >= 1, got '0'"),
    ("quantize", ["--epochs", "-3"], "argument --epochs: must be an integer >= 1, got '-3'"),
    ("demo", ["--qat-epochs", "-1"], "argument --qat-epochs: must be an integer >= 1, got '-1'"),
    ("demo", ["--bits", "9"], "argument --bits: must be an integer in 2..8, got '9'"),
    ("demo", ["--Lambda", "nan"], "argument --Lambda: must be a finite number >= 0, got 'nan'"),
    # every other numeric flag
    ("quantize", ["--bits", "1"], "must be an integer in 2..8"),
    ("quantize", ["--Lambda", "inf"], "argument --Lambda: must be a finite number >= 0, got 'inf'"),
    ("quantize", ["--Lambda", "-1"], "argument --Lambda: must be a finite number >= 0"),
    ("quantize", ["--p", "1.5"], "argument --p: must be a number in [0, 1], got '1.5'"),
    ("quantize", ["--lr", "0"], "argument --lr: must be a finite number > 0, got '0'"),
    ("quantize", ["--lr", "x"], "argument --lr: must be a finite number > 0, got 'x'"),
    ("quantize", ["--refresh-every", "0"], "argument --refresh-every: must be an integer >= 1"),
    ("quantize", ["--seed", "-1"], "argument --seed: must be an integer in 0..4294967295"),
    ("demo", ["--float-epochs", "0"], "argument --float-epochs: must be an integer >= 1"),
    ("demo", ["--seed", "2.5"], "argument --seed: must be an integer in 0..4294967295, got '2.5'"),
    ("train", ["--epochs", "0"], "argument --epochs: must be an integer >= 1"),
    ("train", ["--batch-size", "-2"], "argument --batch-size: must be an integer >= 1"),
    ("train", ["--lr", "-1"], "argument --lr: must be a finite number > 0"),
    ("train", ["--patience", "-1"], "argument --patience: must be an integer >= 0"),
    ("train", ["--validation-split", "1"], "argument --validation-split: must be a number in [0, 1), got '1'"),
    ("export", ["--calib", "0"], "argument --calib: must be an integer >= 1, got '0'"),
    ("export", ["--max-eval", "-5"], "argument --max-eval: must be an integer >= 1"),
    ("export", ["--golden-header", "-1"], "argument --golden-header: must be an integer >= 0"),
    ("compress", ["--bits", "9"], "argument --bits: must be an integer in 2..8, got '9'"),
    ("compress", ["--Lambda", "inf"], "argument --Lambda: must be a finite number >= 0"),
    ("compress", ["--p", "2"], "argument --p: must be a number in [0, 1]"),
    ("compress", ["--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    ("compress", ["--calib", "0"], "argument --calib: must be an integer >= 1"),
]


@pytest.mark.parametrize("cmd,extra,msg", BAD, ids=[f"{c}{' '.join(a)}" for c, a, _ in BAD])
def test_bad_numbers_are_refused_up_front(cmd, extra, msg, model_path, tmp_path, capsys):
    out = tmp_path / "out"
    assert call(_mains()[cmd], _base(cmd, model_path, out) + extra) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ecqx-{cmd}"), err
    assert msg in lines[0], err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cmd", ["quantize", "compress", "export", "train"])
def test_on_disk_data_set_needs_its_path(cmd, model_path, tmp_path, capsys):
    argv = _base(cmd, model_path, tmp_path / "out")
    argv[argv.index("digits")] = "mnist"
    assert call(_mains()[cmd], argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("data set 'mnist' is read from disk: pass its location with --data-path PATH"), err
    assert len(err.splitlines()) == 1
    assert call(_mains()[cmd], argv + ["--data-path", tmp_path / "missing"]) == 2
    assert "--data-path" in capsys.readouterr().err


def test_bundled_data_set_takes_no_path(model_path, tmp_path, capsys):
    from cli.quantize import main

    assert call(main, _base("quantize", model_path, tmp_path / "o") + ["--data-path", tmp_path]) == 2
    assert "data set 'digits' is bundled and takes no --data-path" in capsys.readouterr().err


@pytest.mark.parametrize("cmd,argv", [
    ("cli.quantize", ["m.keras", "--data", "digits", "--out", "o", "--batch-size", "0"]),
    ("cli.quantize", ["missing.keras", "--data", "mnist", "--out", "o"]),
    ("pipeline.demo", ["--qat-epochs", "-1"]),
    ("cli.export", ["missing.keras", "--target", "tflm", "--out", "o"]),
])
def test_refused_before_tensorflow_is_imported(cmd, argv, tmp_path):
    code = (f"import sys\nfrom {cmd} import main\ntry:\n    rc = main({argv!r})\nexcept SystemExit as e:\n"
            "    rc = e.code\nprint('tensorflow' in sys.modules, rc)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.stdout.split() == ["False", "2"], (p.stdout, p.stderr)
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr


def test_demo_checks_settings_before_float_training(tmp_path):
    from pipeline import demo

    with pytest.raises(ValueError, match=r"bits must be in 2\.\.8, got 9"):
        demo.run(tmp_path / "d", bits=9)
    with pytest.raises(ValueError, match="qat_epochs must be an integer >= 1, got -1"):
        demo.run(tmp_path / "d", qat_epochs=-1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_all_zero_model_is_reported_loudly(model_path, tmp_path, capsys):
    """``--Lambda 1e30`` is accepted (finite) but gives an all-zero model: exit code 1 and a
    warning naming it."""
    from cli.quantize import main

    out = tmp_path / "q"
    assert call(main, _base("quantize", model_path, out) + ["--Lambda", "1e30", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "WARNING: all 888 quantized weights are zero" in err and "--Lambda 1e+30 is too large" in err, err
    assert (out / "qat_model.h5").is_file()
