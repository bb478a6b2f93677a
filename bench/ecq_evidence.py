"""Evidence for ECQ and ECQx on real data (a benchmark script, not a test).

Trains the zoo's MNIST MLP in float on the bundled split (seed 0), then quantizes it with ECQ and
ECQx at each bit width and Lambda, fine-tuning for the same number of epochs, and prints one
table: test accuracy, zeros, index entropy, used centroids and seconds per epoch (measured side
by side in this run). Also times ECQx with the assignment refreshed every step and every k
steps. Writes ``bench/results/ecq_evidence.json``.

    python bench/ecq_evidence.py                      # full sweep (about 30 min on 2 cores)
    python bench/ecq_evidence.py --bits 4 --lambdas 0.2 --epochs 2   # quick look
    python bench/ecq_evidence.py --bits 2 --methods ecqx --lambdas 0.3 --epochs 10 --seeds 0 1 2 \
        --lambda-reduce min max --out bench/results/ecq_2bit_seeds.json       # seed spread at one point

``--seeds`` are fine-tuning seeds (shuffling, relevance subset); the float model is always the one
trained with ``--seed``, so every row starts from the same float weights.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 5])
    ap.add_argument("--methods", nargs="+", default=["ecq", "ecqx"])
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 0.3, 0.6])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--refresh-every", type=int, nargs="+", default=[1], help="refresh intervals to run")
    ap.add_argument("--seed", type=int, default=0, help="seed of the float model (and of fine-tuning without --seeds)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="fine-tuning seeds (default: --seed)")
    ap.add_argument("--lr-schedule", nargs="+", default=["constant"], choices=["constant", "cosine"],
                    help="learning-rate schedules to run (default constant)")
    ap.add_argument("--p", type=float, default=0.1, help="ECQx sparsity band p (default 0.1)")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    ap.add_argument("--gradient", default="ste", choices=["ste", "ec2t"], help="shadow-weight gradient (default ste)")
    ap.add_argument("--lambda-reduce", nargs="+", default=["min"], choices=["min", "max"],
                    help="lambda_max reductions to run (default min, the thesis; max = the authors' code)")
    ap.add_argument("--out", default=str(ROOT / "results" / "ecq_evidence.json"))
    ap.add_argument("--timing", action="store_true",
                    help="only the side-by-side timing: ECQ (k=1) and ECQx (k=1, 2, 4) at --bits[0]/--lambdas[0], "
                         "--repeats rounds in alternating order, median seconds per epoch")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--markdown", metavar="JSON", help="print an existing results file as a Markdown table and exit")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0

    from ecqx_tf import quantization_info
    from ecqx_tf.io import atomic_write_json
    from ecqx_tf.keras.finetune import quantize_and_train
    from firmware_export.entropy_coding import model_coded_bytes
    from models import datasets
    from models.train import train_float
    from pipeline.demo import versions

    data = datasets.load("mnist_bundled")
    fl = train_float("mnist_mlp", data, seed=args.seed, verbose=0)
    if args.timing:
        return timing(args, fl, data)
    rows = [{"method": "float", "bits": 32, "Lambda": None, "refresh_every": None, "accuracy": fl.test_accuracy,
             "sparsity": 0.0, "entropy": None, "used": None, "epoch_s": None}]
    print(f"float32: test accuracy {fl.test_accuracy:.4f}", flush=True)
    header = (f"{'method':6} {'bits':>4} {'Lambda':>6} {'k':>2} {'acc':>6} {'zeros':>6} {'H':>5} {'used':>4} "
              f"{'s/epoch':>7} {'CABAC B':>7} {'lzma B':>7}  zeros per layer")
    print(header, flush=True)
    seeds = args.seeds if args.seeds else [args.seed]
    for bits, lam, method, k, reduce, sched, seed in itertools.product(
            args.bits, args.lambdas, args.methods, args.refresh_every, args.lambda_reduce, args.lr_schedule, seeds):
        ft = quantize_and_train(
            fl.model, data.x_train, data.y_train, data.x_test, data.y_test, bits=bits, method=method,
            Lambda=lam, epochs=args.epochs, refresh_every=k, seed=seed, lr_schedule=sched,
            lambda_reduce=reduce, p=args.p, lr=args.lr, gradient=args.gradient,
        )
        tot = ft.stats[-1]
        stored = model_coded_bytes(quantization_info(ft.qmodel))
        row = {"method": method, "bits": bits, "Lambda": lam, "refresh_every": k, "seed": seed,
               "lr_schedule": sched, "lambda_reduce": reduce,
               "accuracy": ft.test_accuracy, "sparsity": tot["sparsity"], "entropy": tot["entropy"],
               "used": tot["used_centroids"], "epoch_s": float(np.mean(ft.epoch_seconds)),
               "layer_sparsity": [r["sparsity"] for r in ft.stats[:-1]],
               "stored_bytes_cabac": stored["cabac"], "stored_bytes_lzma": stored["lzma"],
               "entropy_bound_bytes": stored["entropy_bound"]}
        rows.append(row)
        print(f"{method:6} {bits:>4} {lam:>6.3g} {k:>2} {reduce}/{sched}/seed {seed} {row['accuracy']:>6.4f} {100 * row['sparsity']:>5.1f}% "
              f"{row['entropy']:>5.2f} {row['used']:>4} {row['epoch_s']:>7.2f} {stored['cabac']:>7} {stored['lzma']:>7}  "
              + " ".join(f"{100 * s:.0f}%" for s in row["layer_sparsity"]), flush=True)
    res = {"args": vars(args), "versions": versions(), "float_accuracy": fl.test_accuracy, "epochs": args.epochs,
           "rows": rows}
    if len(seeds) > 1:
        res["seed_summary"] = seed_summary(rows)
        print(seed_markdown(res["seed_summary"]))
    atomic_write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


def timing(args, fl, data) -> int:
    """Seconds per epoch of ECQ and ECQx side by side (alternating order, median of rounds)."""
    from ecqx_tf.io import atomic_write_json
    from ecqx_tf.keras.finetune import quantize_and_train
    from pipeline.demo import versions

    configs = [("ecq", 1), ("ecqx", 1), ("ecqx", 2), ("ecqx", 4)]
    seconds = {c: [] for c in configs}
    results = {}
    for rnd in range(args.repeats):
        for c in (configs if rnd % 2 == 0 else configs[::-1]):
            ft = quantize_and_train(fl.model, data.x_train, data.y_train, data.x_test, data.y_test, bits=args.bits[0],
                                    method=c[0], Lambda=args.lambdas[0], epochs=args.epochs, refresh_every=c[1],
                                    seed=args.seed)
            seconds[c].extend(ft.epoch_seconds[1:])  # the first epoch includes tracing
            results[c] = (ft.test_accuracy, ft.stats[-1]["sparsity"])
    base = float(np.median(seconds[("ecq", 1)]))
    rows = []
    print(f"{'method':6} {'k':>2} {'s/epoch (median)':>16} {'x ECQ k=1':>9} {'acc':>6} {'zeros':>6}")
    for c in configs:
        med = float(np.median(seconds[c]))
        rows.append({"method": c[0], "refresh_every": c[1], "epoch_s_median": med, "ratio_to_ecq": med / base,
                     "epoch_s_all": seconds[c], "accuracy": results[c][0], "sparsity": results[c][1]})
        print(f"{c[0]:6} {c[1]:>2} {med:>16.2f} {med / base:>9.2f} {results[c][0]:>6.4f} {100 * results[c][1]:>5.1f}%")
    out = Path(args.out).with_name("ecq_timing.json")
    atomic_write_json(out, {"bits": args.bits[0], "Lambda": args.lambdas[0], "epochs": args.epochs,
                            "repeats": args.repeats, "versions": versions(), "rows": rows})
    print(f"wrote {out}")
    return 0


_CONFIG_KEYS = ("method", "bits", "Lambda", "refresh_every", "lambda_reduce", "lr_schedule")


def seed_summary(rows) -> list:
    """Per configuration (all keys but the seed): mean, min and max over seeds of accuracy, zeros
    and CABAC bytes."""
    groups = {}
    for r in rows:
        if r["method"] != "float":
            groups.setdefault(tuple(r.get(k) for k in _CONFIG_KEYS), []).append(r)
    out = []
    for key, rs in groups.items():
        s = dict(zip(_CONFIG_KEYS, key), seeds=[r["seed"] for r in rs])
        for m in ("accuracy", "sparsity", "stored_bytes_cabac"):
            v = np.array([r[m] for r in rs], dtype=float)
            s[m] = {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "all": v.tolist()}
        out.append(s)
    return out


def seed_markdown(summary) -> str:
    lines = ["| method | bits | Lambda | lambda_max | lr schedule | seeds | test acc mean (min-max) | zeros mean (min-max) "
             "| CABAC B mean (min-max) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        a, z, b = s["accuracy"], s["sparsity"], s["stored_bytes_cabac"]
        lines.append(f"| {s['method'].upper()} | {s['bits']} | {s['Lambda']:g} | {s['lambda_reduce']} | {s['lr_schedule']} | "
                     f"{' '.join(map(str, s['seeds']))} | {a['mean']:.4f} ({a['min']:.3f}-{a['max']:.3f}) | "
                     f"{100 * z['mean']:.1f}% ({100 * z['min']:.1f}-{100 * z['max']:.1f}) | "
                     f"{b['mean']:,.0f} ({b['min']:,.0f}-{b['max']:,.0f}) |")
    return "\n".join(lines)


def markdown(res: dict) -> str:
    """The results as a Markdown table (float row first); with several seeds, their summary too."""
    if res.get("seed_summary"):
        return seed_markdown(res["seed_summary"])
    lines = ["| method | bits | Lambda | refresh every | test acc | zeros | entropy (bits/weight) | used centroids | s/epoch "
             "| stored B (CABAC) | stored B (lzma) | zeros per layer |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if r["method"] == "float":
            lines.append(f"| float32 | 32 | - | - | {r['accuracy']:.4f} | 0% | - | - | - | - | - | - |")
            continue
        lines.append(
            f"| {r['method'].upper()} | {r['bits']} | {r['Lambda']:g} | {r['refresh_every']} | {r['accuracy']:.4f} | "
            f"{100 * r['sparsity']:.1f}% | {r['entropy']:.2f} | {r['used']} | {r['epoch_s']:.2f} | "
            f"{r.get('stored_bytes_cabac', '-'):,} | {r.get('stored_bytes_lzma', '-'):,} | "
            + " / ".join(f"{100 * v:.0f}%" for v in r["layer_sparsity"]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
