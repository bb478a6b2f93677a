"""Issue 16, command line: no TensorFlow log line on any command (``--help``, error paths and
normal runs), and ``--help`` is instant (the parsers never import TensorFlow)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("ECQX_TEST_ROOT", Path(__file__).resolve().parents[1]))

COMMANDS = {
    "ecqx-train": "cli.train:main",
    "ecqx-quantize": "cli.quantize:main",
    "ecqx-compress": "cli.compress:main",
    "ecqx-export": "cli.export:main",
    "ecqx-simulate": "cli.export:simulate_main",
    "ecqx-demo": "pipeline.demo:main",
}

#: what TensorFlow (C++ logging, raw prints, Python warnings, absl) writes on its own
TF_NOISE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |tensorflow/|To enable the following instructions|"
    r"fully_quantize:|WARNING:absl|WARNING:tensorflow|Warning: |UserWarning|DeprecationWarning|oneDNN|cuda|TensorRT")


def run_command(name: str, argv, cwd, timeout=600, env_extra=None):
    module, func = COMMANDS[name].split(":")
    code = (f"import sys\nfrom {module} import {func}\ntry:\n    rc = {func}({[str(a) for a in argv]!r})\n"
            f"except SystemExit as e:\n    rc = e.code if isinstance(e.code, int) else 0\n"
            f"sys.stdout.flush()\nprint('@@tf' if 'tensorflow' in sys.modules else '@@notf', rc, file=sys.stderr)")
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # what a user's shell has
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    *err, status = p.stderr.rstrip("\n").split("\n")
    tf_flag, rc = status.split()
    return int(rc), p.stdout, "\n".join(err), tf_flag == "@@tf", seconds


def noise(text: str):
    return [ln for ln in text.splitlines() if TF_NOISE.search(ln)]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_is_quiet_and_does_not_import_tensorflow(name, tmp_path):
    rc, out, err, tf_imported, seconds = run_command(name, ["--help"], tmp_path)
    assert rc == 0 and "usage:" in out
    assert err == "" and not tf_imported, (err, tf_imported)
    # the budget of the issue is 1.5 s on this machine; a loaded CI runner gets some slack
    assert seconds < 5, seconds


@pytest.mark.parametrize("name,argv", [
    ("ecqx-train", ["--model", "mnist_mlp", "--data", "mnist", "--out", "o"]),
    ("ecqx-quantize", ["missing.keras", "--data", "digits", "--out", "o"]),
    ("ecqx-compress", ["ecq", "missing.keras", "--data", "digits", "--out", "o"]),
    ("ecqx-export", ["missing.keras", "--target", "tflm", "--data", "digits", "--out", "o"]),
    ("ecqx-simulate", ["no_such_folder"]),
    ("ecqx-demo", ["--bits", "1"]),
])
def test_error_paths_are_one_line_without_tensorflow(name, argv, tmp_path):
    rc, out, err, tf_imported, _ = run_command(name, argv, tmp_path)
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith(f"{name}: error: "), err
    assert not tf_imported and not noise(err)


@pytest.mark.slow
def test_normal_runs_print_no_tensorflow_lines(tmp_path):
    """A real training, quantization and export, each in a fresh process: no TensorFlow line on
    stderr or stdout (the converter's raw ``fully_quantize`` print included)."""
    rc, out, err, _, _ = run_command("ecqx-train", ["--model", "mnist_mlp", "--data", "digits", "--epochs", "1",
                                                    "--out", "f"], tmp_path)
    assert rc == 0 and not noise(err) and not noise(out), err + out
    rc, out, err, _, _ = run_command("ecqx-quantize", ["f/model.keras", "--data", "digits", "--epochs", "1",
                                                       "--out", "q"], tmp_path)
    assert rc == 0 and not noise(err) and not noise(out), err + out
    rc, out, err, _, _ = run_command("ecqx-export", ["q/qat_model.h5", "--target", "tflm", "--data", "digits",
                                                     "--calib", "32", "--max-eval", "16", "--out", "e"], tmp_path)
    assert rc == 0 and not noise(err) and not noise(out), err + out
    assert "calibrated on" in out
    rc, out, err, _, _ = run_command("ecqx-simulate", ["e"], tmp_path)
    assert rc == 0 and err == "" and not noise(out), err + out
