"""Differential benchmark: the project's integer simulator against the real TFLM interpreter on
random small models, every intermediate tensor compared (``firmware_export.tflm.differential``).

Random models per op (every op the TFLM exporter emits, plus chains of them): scales drawn over
several decades, random zero points, INT8 and INT4 weights, per-tensor and per-channel, with and
without bias, every fused activation; FULLY_CONNECTED layers whose accumulators sit where the
two candidate requantization multipliers (double vs float32 product of the scales) disagree.
Runs until at least ``--min-values`` tensor values were compared (default five million), prints a
table per op and writes ``bench/results/tflm_differential.json``.

    python bench/tflm_differential.py [--seed 0] [--min-values 5000000] [--samples 32]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ecqx_tf.io import atomic_write_json  # noqa: E402

OUT = ROOT / "bench" / "results" / "tflm_differential.json"


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # pragma: no cover
        return "unknown"


def targeted_check(seed: int, cases: int) -> dict:
    """FULLY_CONNECTED layers built where the two candidate multipliers give different outputs:
    how many outputs of the TFLM interpreter match each candidate."""
    from firmware_export.tflm import differential as D
    from firmware_export.tflm import simulate as S

    rng = np.random.default_rng(seed)
    out = {}
    for with_bias in (True, False):
        n = match_double = match_float = match_sim = 0
        for _ in range(cases):
            model_bytes, x, y_double, y_float = D.targeted_fully_connected(rng, with_bias)
            y = S.run_tflm(model_bytes, x, arena_size=64 * 1024)
            n += y.size
            match_double += int(np.sum(y == y_double))
            match_float += int(np.sum(y == y_float))
            match_sim += int(np.sum(y == S.simulate(model_bytes, x)))
        out["with_bias" if with_bias else "without_bias"] = {
            "outputs": n, "tflm_equals_double_product": match_double, "tflm_equals_float32_product": match_float,
            "tflm_equals_simulator": match_sim}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-values", type=int, default=5_000_000, help="compare at least this many values (default 5 million)")
    ap.add_argument("--samples", type=int, default=32, help="random inputs per model")
    ap.add_argument("--targeted", type=int, default=40, help="targeted FULLY_CONNECTED layers per bias setting")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    if args.min_values < 1 or args.samples < 1 or args.targeted < 0:
        ap.error("--min-values and --samples must be >= 1, --targeted >= 0")

    from firmware_export.tflm import differential as D

    t0 = time.time()
    res = D.run(args.seed, n_models=1, samples=args.samples, min_values=args.min_values)
    elapsed = time.time() - t0
    targeted = targeted_check(args.seed + 1, args.targeted)
    result = {
        "seed": args.seed,
        "samples_per_model": args.samples,
        "generators": list(D.GENERATORS),
        **res.to_dict(),
        "seconds": round(elapsed, 1),
        "targeted_fully_connected": targeted,
        "tflite_micro_version": _version("tflite-micro"),
        "tensorflow_version": _version("tensorflow"),
    }
    atomic_write_json(Path(args.out), result)
    print(f"{'op (producer of the tensor)':<28} {'values':>11} {'differences':>12}")
    for op, d in result["per_op"].items():
        print(f"{op:<28} {d['values']:>11,} {d['differences']:>12,}")
    print(f"{'total':<28} {result['values']:>11,} {result['differences']:>12,}   "
          f"({result['models']:,} models, {result['samples']:,} samples, {elapsed:.0f} s)")
    for k, d in targeted.items():
        print(f"targeted FULLY_CONNECTED {k.replace('_', ' ')}: TFLM == double-product multiplier on "
              f"{d['tflm_equals_double_product']}/{d['outputs']}, == float32 product on "
              f"{d['tflm_equals_float32_product']}/{d['outputs']}, == simulator on {d['tflm_equals_simulator']}/{d['outputs']}")
    print(f"wrote {args.out}")
    return 0 if result["differences"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
