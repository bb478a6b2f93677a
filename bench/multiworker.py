"""Would sharing the refresh between workers pay? Two workers of a MultiWorkerMirroredStrategy
on 127.0.0.1 measure, side by side in the same processes:

  assign N      ECQ assignment (ecqx_tf.assign_fast.assign_layer) of an N-weight float32 kernel
  assign N/2    the same for half the weights (what each worker would do if they shared)
  gather        all_gather of each worker's half of the indices (N/2 int8 codes per worker,
                packed 4 per int32), i.e. what sharing would add
  sync          all_gather of 8 int64 (one collective round trip: the latency of any
                agreement step, e.g. the per-refresh fingerprint check)

Shared refresh = assign N/2 + gather (+ a few sync round trips for the global counts);
unshared = assign N. Median of --repeats interleaved runs. Writes
bench/results/multiworker.json and prints a table.

Usage: python bench/multiworker.py [--sizes 1000000 4000000 16000000] [--repeats 7]
(launches the two workers itself; run it niced on a shared machine).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "multiworker.json"


def _worker(sizes, repeats, out):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    from ecqx_tf.assign_fast import assign_layer
    from ecqx_tf.grid import make_grid

    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    @tf.function(autograph=False)
    def gather(v):
        return tf.distribute.get_replica_context().all_gather(tf.identity(v), axis=0)

    def run_gather(a):
        r = strategy.run(gather, args=(tf.constant(a),))
        return strategy.experimental_local_results(r)[0].numpy()

    rows = []
    rng = np.random.default_rng(0)
    run_gather(np.zeros((1, 8), np.int64))  # warm-up
    for n in sizes:
        w = (rng.standard_normal(n) * 0.03).astype(np.float32)
        c = make_grid(w, 4).centroids
        half = w[: n // 2]
        codes = assign_layer(half, c, 0.05, n).indices.astype(np.int8)
        packed = np.frombuffer(codes.tobytes() + b"\0" * ((-codes.size) % 4), dtype=np.int32).reshape(1, -1)
        run_gather(packed)  # warm-up of this shape
        t = {"assign N": [], "assign N/2": [], "gather": [], "sync": []}
        for _ in range(repeats):
            for key, work in (("assign N", lambda: assign_layer(w, c, 0.05, n)),
                              ("assign N/2", lambda: assign_layer(half, c, 0.05, n)),
                              ("gather", lambda: run_gather(packed)),
                              ("sync", lambda: run_gather(np.zeros((1, 8), np.int64)))):
                s = time.perf_counter()
                work()
                t[key].append(time.perf_counter() - s)
        rows.append({"weights": n, **{k: statistics.median(v) for k, v in t.items()}})
    Path(out).write_text(json.dumps(rows))


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000, 16_000_000])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--worker", nargs=1, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        _worker(a.sizes, a.repeats, a.worker[0])
        return None
    from ecqx_tf.io import atomic_write_json

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    work = Path(tempfile.mkdtemp(prefix="ecqx_multiworker_"))  # our own folder: the workers' rows
    tmp = [work / f"worker{i}.json" for i in range(2)]
    procs = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    try:
        for i in range(2):
            e = dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
            cmd = [sys.executable, __file__, "--sizes", *map(str, a.sizes), "--repeats", str(a.repeats), "--worker", str(tmp[i])]
            procs.append(subprocess.Popen(cmd, env=e))
        for p in procs:
            if p.wait(timeout=3600) != 0:
                raise SystemExit(f"worker failed with exit code {p.returncode}")
        rows = json.loads(tmp[0].read_text())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        r["shared"] = r["assign N/2"] + r["gather"]
        r["shared / unshared"] = r["shared"] / r["assign N"]
    print(f"{'weights':>10}  {'assign N':>9}  {'assign N/2':>10}  {'gather N/2 int8':>15}  {'sync':>7}  {'shared/unshared':>15}")
    for r in rows:
        print(f"{r['weights']:>10,}  {r['assign N']:>8.3f}s  {r['assign N/2']:>9.3f}s  {r['gather']:>14.3f}s  "
              f"{r['sync']*1e3:>5.1f}ms  {r['shared / unshared']:>15.2f}")
    result = {
        "what": "ECQ assignment of N weights vs half of them plus the all-gather of the other worker's half "
                "(int8 codes), 2 workers of MultiWorkerMirroredStrategy on 127.0.0.1, medians",
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    atomic_write_json(a.out, result)
    return result


if __name__ == "__main__":
    main()
