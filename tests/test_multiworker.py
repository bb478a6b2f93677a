"""ECQx quantization-aware training under MultiWorkerMirroredStrategy: two worker processes on
127.0.0.1 (free ports, TF_CONFIG per worker), bounded in time; the processes are killed on
failure or timeout. Worker script: tests/multiworker_worker.py."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ecqx_tf.keras.multiworker import WorkersDisagreeError, WorkerSync, fingerprint

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "multiworker_worker.py"
TIMEOUT = 240  # seconds for both workers (about 20 s each on 2 idle cores)


def _free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run(tmp_path, scenario):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, logs = [], []
    env0 = dict(os.environ)
    env0["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env0.get("PYTHONPATH", "").split(os.pathsep) if p])
    try:
        for i in range(2):
            env = dict(env0, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
            out = open(tmp_path / f"worker{i}.log", "w")
            logs.append(out)
            procs.append(
                subprocess.Popen([sys.executable, str(WORKER), str(tmp_path / f"w{i}.npz"), scenario],
                                 env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(tmp_path))
            )
        deadline = time.monotonic() + TIMEOUT
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
    texts = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    return [p.returncode for p in procs], texts


@pytest.mark.slow
def test_two_workers_end_identical_and_equal_to_the_pure_assignment(tmp_path):
    codes, logs = _run(tmp_path, "agree")
    assert codes == [0, 0], "\n\n".join(t[-3000:] for t in logs)
    a, b = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    assert int(a["refreshes"]) == int(b["refreshes"]) == 8  # 2 epochs x 4 steps, refresh every step
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:  # indices, relevances and float kernels, bit for bit
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
        if k.endswith("/relevance"):
            assert np.any(a[k] != 0)
    # the workers were given different callback seeds; the chief's was used by both


@pytest.mark.slow
def test_diverging_workers_stop_with_a_clear_error(tmp_path):
    codes, logs = _run(tmp_path, "diverge")
    assert codes == [3, 3], "\n\n".join(t[-3000:] for t in logs)
    for t in logs:
        line = next(l for l in t.splitlines() if l.startswith("DISAGREE"))
        assert line.startswith("DISAGREE ECQxCallback: after refresh 1, the workers disagree on "), line
        assert "the relevance of 'd1'" in line, line
    assert not (tmp_path / "w0.npz").exists() and not (tmp_path / "w1.npz").exists()


# ----------------------------------------------------------------------------- without a cluster
class _FakeSync(WorkerSync):
    """WorkerSync whose all-gather returns this worker's row and a given other worker's row."""

    def __init__(self, other):
        super().__init__(strategy=None, task="worker:0", is_chief=True, n_workers=2)
        self.other = other

    def gather(self, values):
        mine = np.asarray(values, dtype=np.int64)
        return np.stack([mine, self.other(mine)])


def test_check_names_what_differs():
    same = _FakeSync(lambda v: v.copy())
    same.check({"a": np.array([1, 2]), "b": np.array([3])}, "now")
    flip_b = _FakeSync(lambda v: v + np.array([0, 0, 1]))
    with pytest.raises(WorkersDisagreeError, match=r"^ECQxCallback: now, the workers disagree on b \(fingerprints"):
        flip_b.check({"a": np.array([1, 2]), "b": np.array([3])}, "now")
    assert _FakeSync(lambda v: np.array([0, 99])).chief_seed(5) == 5  # this worker is the chief


def test_start_check_covers_configuration_grids_settings_and_data():
    import tensorflow as tf

    import ecqx_tf
    from ecqx_tf.keras.api import ecq_layers

    tf.keras.utils.set_random_seed(0)
    i = tf.keras.Input((6,))
    m = tf.keras.Model(i, tf.keras.layers.Dense(3, name="d")(tf.keras.layers.Dense(5, name="h")(i)))
    slots = ecq_layers(ecqx_tf.quantize(m, bits=4, method="ecq", Lambda=0.1))
    other = ecq_layers(ecqx_tf.quantize(m, bits=4, method="ecq", Lambda=0.2))
    cfg = ecqx_tf.ECQxCallback().get_config()
    data = (np.ones((4, 6), np.float32), np.zeros(4, np.int64))
    rows = {}

    class Recorder(_FakeSync):
        def gather(self, values):
            rows.setdefault("v", []).append(np.asarray(values))
            return super().gather(values)

    Recorder(lambda v: v).check_start(slots, cfg, data)
    mine = rows["v"][-1]
    # every other configuration gives another fingerprint vector
    for s2, cfg2, data2 in ((other, cfg, data), (slots, {**cfg, "alpha": 0.2}, data), (slots, cfg, (data[0] * 2, data[1]))):
        rows.clear()
        Recorder(lambda v: v).check_start(s2, cfg2, data2)
        assert not np.array_equal(rows["v"][-1], mine)
    rows.clear()
    Recorder(lambda v: v).check_start(slots, {**cfg, "seed": 99}, data)  # the seed is agreed on, not compared
    assert np.array_equal(rows["v"][-1], mine)


def test_fingerprint_sees_any_change():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 15, 10007).astype(np.int32)
    f = fingerprint(a)
    assert f.dtype == np.int64 and f.shape == (2,)
    assert np.array_equal(f, fingerprint(a.copy()))
    b = a.copy()
    b[123], b[124] = a[124] + 1, a[123]  # swap-like change
    assert not np.array_equal(fingerprint(b), f)
    c = a.copy()
    c[[5, 4100]] = c[[4100, 5]]  # a swap of two values
    if c[5] != a[5]:
        assert not np.array_equal(fingerprint(c), f)
    assert not np.array_equal(fingerprint(a.astype(np.int64)), f)  # dtype folded in
    assert not np.array_equal(fingerprint(a.reshape(-1, 1)), f)  # shape folded in
    x = rng.random((3, 5)).astype(np.float32)
    y = x.copy()
    y[1, 2] = np.nextafter(y[1, 2], np.float32(2))
    assert not np.array_equal(fingerprint(x), fingerprint(y))
