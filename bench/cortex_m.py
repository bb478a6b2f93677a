#!/usr/bin/env python
"""The FantastIC4 runtime on Cortex-M: instructions per inference (instructions, not cycles),
flash, RAM and stack of every weight layout and of the three layout objectives, on Cortex-M4 and
Cortex-M33, built with -O2 and -Os; and (``--fit``) the layout cost model of
``firmware_export/fantastic4/cost.py``.

    python bench/cortex_m.py out/demo/fantastic4 [--samples 100]
    python bench/cortex_m.py out/demo/fantastic4 --fit          # measure single layers, fit, print

Method: the export folder's bare-metal harness is cross-built once per (CPU, -O) with
arm-none-eabi-gcc 12.2 (``make cortex-m``); every blob (the export's network in each layout
configuration) is loaded into the emulated RAM of a unicorn Cortex-M4 / Cortex-M33 and run through
``f4_prepare`` once and ``f4_invoke`` per golden vector (the first ``--samples``). Instructions are
counted inside ``f4_invoke`` with a block hook (each executed translation block adds its Thumb
instruction count; exact, also for condition-failed IT instructions) and averaged. Before any
figure is kept the Arm outputs are checked equal to the Python simulator's. Flash = the runtime's
code and constants from the link map (``f4_runtime.o`` plus the C library functions it pulls in)
+ the blob; RAM = ``sizeof(f4_model)`` + scratch (``f4_required_scratch``) + the stack peak of
``f4_invoke`` (painted stack). "per addition" = instructions / the simulator's additions per
inference. Results: bench/results/cortex_m.json (and cortex_m_cost_fit.json with ``--fit``).

The TFLM rows of BENCHMARKS.md (TFLM + CMSIS-NN) were measured on the same model with the same
counting method and are restated there, not re-measured here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ecqx_tf.io import atomic_write_json  # noqa: E402
from firmware_export.fantastic4 import cortex_m as CM  # noqa: E402
from firmware_export.fantastic4 import cost as COST  # noqa: E402
from firmware_export.fantastic4 import format as F  # noqa: E402
from firmware_export.fantastic4 import simulate as S  # noqa: E402
from firmware_export.fantastic4.network import IntegerDense, IntegerMLP  # noqa: E402

OPTS = ("-O2", "-Os")


def configurations(net: IntegerMLP, x: np.ndarray):
    """(label, per-layer layout names): every layout for all layers, then the three objectives."""
    n = len(net.layers)
    out = [(name, [name] * n) for name in F.LAYOUT_IDS]
    for objective in COST.OBJECTIVES:
        names, _ = COST.choose_layouts(net, x, objective)
        out.append((f"{objective}: {'/'.join(names)}", names))
    return out


def measure(export: Path, samples: int, cpus, opts):
    manifest = json.loads((export / "fantastic4.json").read_text())
    g = manifest["golden"]
    x = np.fromfile(export / g["inputs"], np.int8).reshape(-1, g["input_features"])[:samples]
    net = IntegerMLP.from_tflite((export / manifest["tflite"]).read_bytes())
    rows = []
    configs = configurations(net, x)
    for cpu in cpus:
        for opt in opts:
            with tempfile.TemporaryDirectory(prefix="bench_cm_") as tmp:
                elf, map_path = CM.build_harness(export, cpu, Path(tmp), opt)
                runtime_flash, _, _ = CM.runtime_flash(CM.map_sizes(map_path))
                emu = CM.ArmEmulator(elf, cpu)
                model_bytes = emu.size("g_f4_harness_model")
                for label, names in configs:
                    blob = F.write_blob(net, names)
                    scratch = S.required_scratch(blob)
                    t0 = time.time()
                    y, counts, st = emu.run_blob(blob, x, scratch)
                    py, ops, _ = S.run_with_counts(blob, x)
                    if st != 0 or not np.array_equal(y, py):
                        raise SystemExit(f"{cpu} {opt} {label}: Arm outputs differ from the simulator")
                    adds = sum(o.accumulate_adds + o.product_adds for o in ops)
                    rows.append({
                        "cpu": cpu, "opt": opt, "config": label, "layouts": names,
                        "instructions": float(counts.mean()), "instructions_min": int(counts.min()),
                        "instructions_max": int(counts.max()),
                        "additions": float(adds), "instructions_per_addition": float(counts.mean() / adds),
                        "flash": {"runtime_code": int(runtime_flash), "blob": len(blob),
                                  "total": int(runtime_flash + len(blob))},
                        "ram": {"f4_model": int(model_bytes), "scratch": int(scratch), "stack": int(emu.last_stack),
                                "total": int(model_bytes + scratch + emu.last_stack)},
                        "seconds": round(time.time() - t0, 1),
                    })
                    r = rows[-1]
                    print(f"{cpu:>3} {opt} {label:<40} {r['instructions']:>10,.0f} {r['instructions_per_addition']:6.2f} "
                          f"{r['flash']['total']:>8,} {r['ram']['total']:>6,} {r['ram']['stack']:>5}", flush=True)
    return rows, net, x


def table(rows, samples: int) -> str:
    head = (f"| CPU | -O | layouts | instructions / inference (mean of {samples}) | per addition | flash: runtime + blob "
            "| RAM: f4_model + scratch + stack | stack |")
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['cpu']} | {r['opt']} | {r['config']} | {r['instructions']:,.0f} | "
                     f"{r['instructions_per_addition']:.2f} | {r['flash']['runtime_code']:,} + {r['flash']['blob']:,} = "
                     f"{r['flash']['total']:,} B | {r['ram']['total']:,} B | {r['ram']['stack']:,} B |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the cost model fit


def random_layer(rng: np.random.Generator, i: int) -> IntegerDense:
    """Random shapes, densities and codebooks; every 10th layer has 256 outputs and 97% density, so
    that its CSCI columns exceed 255 bytes (the csci_c8 code path)."""
    n_in = int(rng.choice([16, 48, 100, 200, 400, 784]))
    n_out = int(rng.choice([8, 10, 32, 64, 128, 200, 256, 300, 512]))
    density = float(rng.choice([0.05, 0.1, 0.2, 0.4, 0.6, 0.9]))
    if i % 10 == 9:
        n_in, n_out, density = int(rng.choice([16, 48, 100])), 256, 0.97
    k = int(rng.integers(2, 8))
    values = np.array([v for v in range(-k, k + 1) if v != 0], np.int8)
    w = np.where(rng.random((n_out, n_in)) < density, rng.choice(values, size=(n_out, n_in)), 0).astype(np.int8)
    return IntegerDense(f"fit{i}", w, rng.integers(-2000, 2000, n_out), -128, int(rng.integers(-128, 0)),
                        int(rng.integers(1 << 30, 1 << 31)), -int(rng.integers(6, 12)), -128, 127)


def fit(export: Path, n_layers: int, seed: int = 0):
    """Measure single-layer blobs (random shapes, densities, codebooks, input activity) in every
    layout on Cortex-M4 -O2, fit cost.COEFFICIENTS by least squares; also report the model's error
    on the export's own layers."""
    rng = np.random.default_rng(seed)
    samples = []
    with tempfile.TemporaryDirectory(prefix="bench_fit_") as tmp:
        elf, _ = CM.build_harness(export, "m4", Path(tmp), "-O2")
        emu = CM.ArmEmulator(elf, "m4")
        for i in range(n_layers):
            layer = random_layer(rng, i)
            x = rng.integers(-127, 128, size=(4, layer.in_features)).astype(np.int8)
            x[rng.random(x.shape) < float(rng.choice([0.0, 0.3, 0.6, 0.9]))] = layer.input_zero_point
            feats = COST.layer_features(layer, x)
            net = IntegerMLP([layer])
            for name in F.LAYOUT_IDS:
                if not F.bias_fits(layer, name):
                    continue
                blob = F.write_blob(net, name)
                _, counts, st = emu.run_blob(blob, x, S.required_scratch(blob))
                assert st == 0
                samples.append((COST.model_name(layer, name), feats, float(counts.mean())))
            print(f"fit layer {i + 1}/{n_layers}: {layer.out_features}x{layer.in_features}", flush=True)
        coef = COST.fit_coefficients(samples)
        # check on the export's layers (single-layer blobs with their real inputs)
        manifest = json.loads((export / "fantastic4.json").read_text())
        g = manifest["golden"]
        x = np.fromfile(export / g["inputs"], np.int8).reshape(-1, g["input_features"])[:50]
        full = IntegerMLP.from_tflite((export / manifest["tflite"]).read_bytes())
        checks = []
        h = x
        from firmware_export.fantastic4.network import reference_dense

        for layer in full.layers:
            feats = COST.layer_features(layer, h)
            for name in F.LAYOUT_IDS:
                blob = F.write_blob(IntegerMLP([layer]), name)
                _, counts, _ = emu.run_blob(blob, h, S.required_scratch(blob))
                checks.append({"layer": layer.name, "layout": name, "measured": float(counts.mean()),
                               "predicted": COST.predict(feats, COST.model_name(layer, name), coef)})
            h = reference_dense(layer, h)
    errors = {name: [abs(s[2] - COST.predict(s[1], name, coef)) / s[2] for s in samples if s[0] == name]
              for name in COST.FEATURES}
    return coef, samples, checks, errors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export", type=Path, help="a fantastic4 export folder (e.g. out/demo/fantastic4)")
    ap.add_argument("--samples", type=int, default=100, help="golden vectors per configuration (default 100)")
    ap.add_argument("--cpus", nargs="+", default=list(CM.CPUS), choices=list(CM.CPUS))
    ap.add_argument("--opts", nargs="+", default=list(OPTS), choices=list(OPTS))
    ap.add_argument("--fit", action="store_true", help="measure single layers and fit the layout cost model")
    ap.add_argument("--fit-layers", type=int, default=60, help="random layers for --fit (default 60)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    missing = CM.missing_tools()
    if missing:
        print(f"bench/cortex_m.py: {missing}", file=sys.stderr)
        return 2
    if args.samples < 1 or args.fit_layers < 6:
        print("bench/cortex_m.py: --samples must be >= 1 and --fit-layers >= 6", file=sys.stderr)
        return 2
    if args.fit:
        coef, samples, checks, errors = fit(args.export, args.fit_layers)
        print("\ncoefficients (instructions per unit of feature, Cortex-M4 -O2):")
        for name, c in coef.items():
            print(f"  {name:<7} " + ", ".join(f"{k} {v:g}" for k, v in c.items()))
        print("\nrelative error on the fitted layers: " + ", ".join(
            f"{k} median {np.median(v):.3f} max {np.max(v):.3f}" for k, v in errors.items()))
        print("\nthe export's layers (single-layer blobs, 50 golden vectors):")
        print("| layer | layout | measured | predicted |\n|---|---|---:|---:|")
        for c in checks:
            print(f"| {c['layer'][:24]} | {c['layout']} | {c['measured']:,.0f} | {c['predicted']:,.0f} |")
        atomic_write_json(args.out / "cortex_m_cost_fit.json", {
            "target": COST.COST_TARGET, "coefficients": coef, "features": COST.FEATURES,
            "fit_layers": args.fit_layers, "samples": [{"layout": l, "features": f, "instructions": y} for l, f, y in samples],
            "relative_error": {k: {"median": float(np.median(v)), "max": float(np.max(v))} for k, v in errors.items()},
            "export_layers": checks,
        })
        return 0
    print(f"{'cpu':>3} -O  {'layouts':<40} {'instr/inf':>10} {'/add':>6} {'flash':>8} {'RAM':>6} {'stack':>5}")
    rows, net, x = measure(args.export, args.samples, args.cpus, args.opts)
    print("\n" + table(rows, args.samples))
    atomic_write_json(args.out / "cortex_m.json", {
        "model": str(args.export), "samples": args.samples, "layers": [[l.out_features, l.in_features] for l in net.layers],
        "counting": "unicorn block hook, Thumb instructions inside f4_invoke (instructions, not cycles)",
        "compiler": "arm-none-eabi-gcc 12.2 -mthumb -mfloat-abi=soft", "rows": rows,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
