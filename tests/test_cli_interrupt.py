"""Issue 11 item 2: an interrupted command cleans up after itself.

Real signals on a real ``ecqx-export`` subprocess during its export stage: SIGTERM and SIGINT
remove the partial output folder and the command's private temporary folder (where TensorFlow's
temporaries go) and end with one line and exit code 143 / 130; after SIGKILL, the next run into
the same parent removes the stale partial folder and temporary folder (recognised by their
marker files), and nothing else.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    m = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                             tf.keras.layers.Dense(12, activation="relu"), tf.keras.layers.Dense(10)])
    path = tmp_path_factory.mktemp("model") / "m.keras"
    m.save(path)
    return path


def _env(tmpdir: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.environ.get("ECQX_TEST_ROOT", str(ROOT)) + os.pathsep + env.get("PYTHONPATH", "")
    env["TMPDIR"] = str(tmpdir)
    return env


#: The export, run with ``python -c``. With ``pause``, the arena search of stage 3 first writes
#: ``PAUSED`` to stderr and sleeps, so that a signal sent after that line always lands inside the
#: export (a small model's export otherwise may finish before the signal: a race under load).
_RUN = "import sys; from cli.export import main; sys.exit(main())"
_PAUSE = ("import sys, time; from firmware_export.tflm import arena; real = arena.arena_sizes\n"
          "def paused(*a, **k):\n"
          "    print('PAUSED', file=sys.stderr, flush=True); time.sleep(120); return real(*a, **k)\n"
          "arena.arena_sizes = paused\n")


def _export(model: Path, parent: Path, tmpdir: Path, pause: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", (_PAUSE if pause else "") + _RUN, str(model), "--target", "tflm", "--data", "digits",
         "--calib", "64", "--max-eval", "64", "--out", str(parent / "out")],
        env=_env(tmpdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _partials(parent: Path):
    return [p for p in parent.iterdir() if p.name.endswith(".partial")]


def _interrupt_during_export(model: Path, parent: Path, tmpdir: Path, sig: int):
    """Start an export, wait until its stage 3 built the partial folder and reached the (paused)
    arena search, send ``sig``."""
    proc = _export(model, parent, tmpdir, pause=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.strip() == "PAUSED":
            break
    assert seen and seen[-1].strip() == "PAUSED", "".join(seen)
    assert _partials(parent), "".join(seen)
    during = sorted(p.name for p in tmpdir.iterdir())
    assert len(during) == 1 and during[0].startswith("ecqx-tmp.ecqx-export."), during  # one private folder
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, "".join(seen) + err


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,line", [(signal.SIGTERM, 143, "ecqx-export: terminated"),
                                           (signal.SIGINT, 130, "ecqx-export: interrupted")])
def test_signal_during_export_cleans_up(model_path, tmp_path, sig, code, line):
    parent, tmpdir = tmp_path / "parent", tmp_path / "tmp"
    parent.mkdir()
    tmpdir.mkdir()
    rc, err = _interrupt_during_export(model_path, parent, tmpdir, sig)
    assert rc == code, err
    assert err.rstrip().splitlines()[-1] == line, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert list(parent.iterdir()) == []  # no partial folder, no output
    assert list(tmpdir.iterdir()) == []  # the private temporary folder (TF's temporaries) is gone


@pytest.mark.slow
def test_sigkill_leftovers_are_removed_by_the_next_run(model_path, tmp_path):
    parent, tmpdir = tmp_path / "parent", tmp_path / "tmp"
    parent.mkdir()
    tmpdir.mkdir()
    rc, err = _interrupt_during_export(model_path, parent, tmpdir, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    stale = _partials(parent)
    assert len(stale) == 1 and (stale[0] / ".ecqx-partial.json").is_file()
    stale_tmp = list(tmpdir.iterdir())
    assert len(stale_tmp) == 1
    # things the next run must NOT remove: a partial-looking folder without a marker, one whose
    # process is alive (this test), a foreign temporary folder
    unmarked = parent / ".out.unmarked.partial"
    unmarked.mkdir()
    alive = parent / ".other.alive.partial"
    alive.mkdir()
    (alive / ".ecqx-partial.json").write_text(json.dumps(
        {"tool": "ecqx-export", "pid": os.getpid(), "start": None, "host": os.uname().nodename}))
    foreign_tmp = tmpdir / "ecqx-tmp.someone-else"
    foreign_tmp.mkdir()
    proc = _export(model_path, parent, tmpdir)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert sorted(p.name for p in parent.iterdir()) == sorted(["out", unmarked.name, alive.name])
    assert json.loads((parent / "out" / "manifest.json").read_text())["tool"] == "ecqx-export"
    assert sorted(p.name for p in tmpdir.iterdir()) == [foreign_tmp.name]
