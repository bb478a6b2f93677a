"""Per architecture: the TFLM export of an ECQ/ECQx 4-bit model against the int8 post-training
export of the same float model.

Architectures (full size, ``models.zoo``): the four MLPerf Tiny reference networks (DS-CNN keyword
spotting on 49x10 MFCCs, MobileNetV1 0.25 visual wake words on 96x96x3, ResNet-8 image
classification on 32x32x3, FC autoencoder anomaly detection on 640 features), a Conv1D sensor model
(128x9), the MNIST MLP (784-256-128-10) and the zoo's ``resnet20``. A model missing from the zoo
falls back to the small stand-in of ``tests/tflm_helpers.py`` (the ``source`` column says which).

Quantization: ``ecqx_tf.quantize(..., bits=4, method="ecqx")`` (BatchNorm folded first) +
``ECQxCallback`` for ``--steps`` optimizer steps of batch 32 from the model's seeded initial
weights (``ecq`` when ECQx cannot run on the model), then ``strip`` + ``quantization_info``. No
data set of these tasks is reachable offline: inputs are synthetic (uniform [0, 1] images and
sequences, N(0, 1) flat features), the classifiers' labels are the largest of ``classes`` fixed
random projections of the input (learnable, so the logits are not ties) and the autoencoder
reconstructs its input; the zeros show what the rate term does in a short run, not an accuracy
trade-off. Training uses the first rows, the last ``--samples`` rows are held out for the host
check, the first ``--calib`` rows calibrate every export. When ``ecqx_tf.quantize`` does not
support the model the ECQx columns say ``n/a`` and the INT4 form is measured on a stand-in: every
kernel rounded to the 4-bit symmetric grid of its own range (no training, no zeros forced).

Per row: parameters; ECQx zeros; flatbuffer bytes of the INT4 form (``--target tflm``), of the
INT8 form (same integers, ``--int8-weights``) and of the int8 post-training export of the float
model; the minimal TFLM arena (reference kernels) of each; host check on the held-out rows (TFLM ==
simulator on every sample and every intermediate tensor, and float/TFLM argmax agreement for the
classifiers, largest absolute error for the autoencoder); instructions per inference of
``MicroInterpreter::Invoke()`` under valgrind callgrind (``bench/instructions.py``, TFLM reference
kernels on x86-64) for the three exports.

    python bench/architectures.py [--models ds_cnn,resnet8] [--steps 20] [--samples 64]
                                  [--callgrind-samples 2] [--no-callgrind] [--out FILE]
    python bench/architectures.py --merge A.json B.json [--out FILE] [--markdown]

Writes ``bench/results/architectures.json`` (after every architecture, so that an interrupted run
keeps what it measured) and prints a table (``--markdown``: the table of BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

from ecqx_tf.io import atomic_write_json  # noqa: E402

OUT = ROOT / "bench" / "results" / "architectures.json"

# name -> (zoo name, input shape, classes (the autoencoder: its output size), stand-in builder name)
ARCHITECTURES = {
    "ds_cnn": ("ds_cnn", (49, 10, 1), 12, "ds_cnn_like"),
    "sensor_cnn1d": ("sensor_cnn1d", (128, 9), 6, "conv1d_like"),
    "mnist_mlp": ("mnist_mlp", (28, 28, 1), 10, None),
    "fc_autoencoder": ("fc_autoencoder", (640,), 640, "fc_autoencoder_like"),
    "resnet8": ("resnet8", (32, 32, 3), 10, "resnet_like"),
    "mobilenet_v1_025": ("mobilenet_v1_025", (96, 96, 3), 2, "mobilenet_like"),
    "resnet20": ("resnet20", (32, 32, 3), 10, "resnet_like"),
}


def build(name: str):
    """(float model, source description)."""
    from models import zoo

    zoo_name, shape, classes, stand_in = ARCHITECTURES[name]
    if zoo_name in zoo.names() or stand_in is None:
        return zoo.build(zoo_name, shape, classes, seed=0), f"zoo:{zoo_name}"
    import tflm_helpers

    return tflm_helpers.GRAPH_MODELS[stand_in](), f"stand-in:{stand_in} (zoo has no {zoo_name!r})"


def synthetic(model, n: int, seed: int):
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in model.input_shape[1:])
    if len(shape) == 1:
        x = rng.normal(size=(n,) + shape).astype(np.float32)
    else:
        x = rng.random((n,) + shape, dtype=np.float32)
    out = int(model.output_shape[-1])
    classifier = not (len(shape) == 1 and out == shape[0])
    if not classifier:
        return x, x, classifier
    proj = rng.normal(size=(int(np.prod(shape)), out)).astype(np.float32)
    flat = x.reshape(n, -1)
    y = np.argmax((flat - flat.mean(0)) @ proj, axis=1).astype(np.int64)
    return x, y, classifier


def quantize(model, x, y, classifier: bool, steps: int, bits: int, Lambda: float):
    """(stripped model, quantization info, description) from ecqx_tf, or raise."""
    import tensorflow as tf

    import ecqx_tf

    methods = ("ecqx", "ecq")
    last = None
    for method in methods:
        try:
            # ECQx's relevance: from the labels, or (the autoencoder) from its whole output
            rel = (x[:64], y[:64]) if classifier else x[:64]
            kw = {"relevance_data": rel} if method == "ecqx" else {}
            q = ecqx_tf.quantize(model, bits=bits, method=method, Lambda=Lambda, **kw)
            loss = (tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True) if classifier
                    else tf.keras.losses.MeanSquaredError())
            q.compile(tf.keras.optimizers.Adam(1e-3), loss)
            data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(32)
            q.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[ecqx_tf.ECQxCallback()])
            info = ecqx_tf.quantization_info(q)
            return (ecqx_tf.strip(q), dict(info),
                    f"{method} {bits}-bit, Lambda {Lambda}, {steps} steps of batch 32 (synthetic data)")
        except Exception as e:  # unsupported layers on this version of ecqx_tf, or no labels for ECQx
            last = e
    raise last


def stand_in_quantization(model, bits: int):
    import tflm_helpers

    m, info = tflm_helpers.snap_model_for_tests(model, bits, kinds="all", sparsity=0.0)
    return m, info


def export(model, quant, x_cal, name: str, **options):
    from firmware_export.registry import ExportRequest
    from firmware_export.tflm.convert import convert

    req = ExportRequest(model=model, quant=quant, name=name, representative=x_cal, options=dict(options))
    return convert(req)


def host_check(res, x, classifier: bool):
    from firmware_export.tflm import convert as C
    from firmware_export.tflm import flatbuffer as fb
    from firmware_export.tflm import simulate as S

    parsed = fb.read_model(res.model_bytes)
    xi = C.quantize_input(parsed, x)
    mine = S.simulate_tensors(parsed, xi)
    theirs = S.run_tflm_tensors(res.model_bytes, xi, tensors=[i for i in mine if i != parsed.inputs[0]])
    diff = sum(int(np.sum(mine[i].reshape(v.shape) != v)) for i, v in theirs.items())
    values = sum(int(v.size) for v in theirs.values())
    y = theirs[parsed.outputs[0]]
    ref = res.reference_outputs(x).reshape(len(x), -1)
    deq = C.dequantize_output(parsed, y).reshape(len(x), -1)
    agree = float(np.mean(np.argmax(ref, 1) == np.argmax(deq, 1))) if classifier else None
    return {"samples": int(len(x)), "tensor_values": values, "tensor_differences": diff,
            "output_mismatching_samples": int(np.sum(np.any((mine[parsed.outputs[0]] != y).reshape(len(x), -1), 1))),
            "argmax_agreement_float_tflm": agree,
            "max_abs_error": float(np.max(np.abs(deq - ref))), "float_output_range": float(np.ptp(ref))}


def instructions(model_bytes: bytes, x, arena: int):
    from bench.instructions import tflm_instructions
    from firmware_export.tflm.convert import quantize_input

    xi = quantize_input(model_bytes, x)
    with tempfile.TemporaryDirectory() as tmp:
        return tflm_instructions(model_bytes, xi, arena, Path(tmp))


def measure(name: str, args) -> dict:
    from firmware_export.tflm.arena import minimum_arena

    t0 = time.time()
    model, source = build(name)
    x, y, classifier = synthetic(model, max(512, args.samples + args.calib + 64), args.seed)
    row = {"model": name, "source": source, "parameters": int(model.count_params()),
           "input_shape": list(model.input_shape[1:]), "ops": None}
    try:
        n_train = len(x) - args.samples
        qmodel, quant, qdesc = quantize(model, x[:n_train], y[:n_train], classifier, args.steps, args.bits, args.Lambda)
        zeros = [float(np.mean(q.integers() == 0)) for q in quant.values()]
        sizes = [int(np.size(q.indices)) for q in quant.values()]
        row["quantization"] = qdesc
        row["ecqx_zeros"] = float(np.average(zeros, weights=sizes)) if sizes else None
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        row["quantization"] = f"n/a: ecqx_tf.quantize refused the model ({type(e).__name__}: {msg[:160]}); INT4 " \
                              "form from the round-to-grid stand-in"
        row["ecqx_zeros"] = None
        qmodel, quant = stand_in_quantization(model, args.bits)
    x_cal, x_eval = x[: args.calib], x[-args.samples:]
    forms = {
        "int4": export(qmodel, quant, x_cal, "arch"),
        "int8_same_integers": export(qmodel, quant, x_cal, "arch", int8_weights=True),
        "int8_ptq": export(model, {}, x_cal, "arch"),
    }
    row["ops"] = forms["int4"].ops
    row["weight_types"] = sorted({r["weight_type"] for r in forms["int4"].layers})
    for key, res in forms.items():
        d = {"flatbuffer_bytes": len(res.model_bytes), "weight_bytes": int(sum(r["weight_bytes"] for r in res.layers))}
        d["arena_minimum"] = minimum_arena(res.model_bytes)
        if key != "int8_same_integers":
            d["host_check"] = host_check(res, x_eval, classifier)
        row[key] = d
    # callgrind last, so that a failure there keeps every other figure of the row
    for key, res in forms.items():
        if args.no_callgrind:
            break
        try:
            row[key]["instructions_per_inference"] = instructions(
                res.model_bytes, x_eval[: args.callgrind_samples], row[key]["arena_minimum"] + 1024)
        except Exception as e:  # noqa: BLE001 - reported in the row
            row[key]["instructions_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    ir4, irp = (row[k].get("instructions_per_inference") for k in ("int4", "int8_ptq"))
    if ir4 is not None and irp is not None:
        row["instructions_ratio_int4_vs_int8_ptq"] = ir4 / irp
    row["seconds"] = round(time.time() - t0, 1)
    return row


def _fmt(v, spec=",") -> str:
    return "n/a" if v is None else format(v, spec)


def print_table(rows) -> None:
    hdr = (f"{'model':<17} {'params':>8} {'zeros':>6} {'INT4 B':>8} {'INT8 B':>8} {'PTQ B':>8} {'arena INT4':>10} "
           f"{'arena PTQ':>9} {'host check (diff/values)':>24} {'Ir INT4':>12} {'Ir INT8':>12} {'Ir PTQ':>12} {'INT4/PTQ':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<17} error: {r['error']}")
            continue
        hc = r["int4"]["host_check"]
        hp = r["int8_ptq"]["host_check"]
        check = f"{hc['tensor_differences'] + hp['tensor_differences']}/{hc['tensor_values'] + hp['tensor_values']:,}"
        zeros = "n/a" if r["ecqx_zeros"] is None else f"{100 * r['ecqx_zeros']:.1f}%"
        ir = lambda k: _fmt(r[k].get("instructions_per_inference"), ",.0f")  # noqa: E731
        ratio = r.get("instructions_ratio_int4_vs_int8_ptq")
        print(f"{r['model']:<17} {r['parameters']:>8,} {zeros:>6} {r['int4']['flatbuffer_bytes']:>8,} "
              f"{r['int8_same_integers']['flatbuffer_bytes']:>8,} {r['int8_ptq']['flatbuffer_bytes']:>8,} "
              f"{r['int4']['arena_minimum']:>10,} {r['int8_ptq']['arena_minimum']:>9,} {check:>24} {ir('int4'):>12} "
              f"{ir('int8_same_integers'):>12} {ir('int8_ptq'):>12} {_fmt(ratio, '.2f'):>8}")
    print("sources / quantization:")
    for r in rows:
        if "error" not in r:
            print(f"  {r['model']}: {r['source']}; {r['quantization']}; ops {', '.join(r['ops'])}")


def _agreement(hc) -> str:
    if hc.get("argmax_agreement_float_tflm") is not None:
        return f"{100 * hc['argmax_agreement_float_tflm']:.1f}%"
    return f"max err {hc['max_abs_error']:.3g} (range {hc['float_output_range']:.3g})"


def print_markdown(rows) -> None:
    """The table of BENCHMARKS.md ("Real TinyML architectures")."""
    print("| model | params | ECQx zeros | INT4 B | INT8 B | int8 PTQ B | arena INT4 | arena INT8 | arena PTQ "
          "| TFLM == simulator (values) | float/TFLM INT4 | float/TFLM PTQ | Ir INT4 | Ir INT8 | Ir PTQ | INT4/PTQ |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| `{r['model']}` | error: {r['error']} |" + " |" * 14)
            continue
        f4, f8, fp = r["int4"], r["int8_same_integers"], r["int8_ptq"]
        diff = f4["host_check"]["tensor_differences"] + fp["host_check"]["tensor_differences"]
        vals = f4["host_check"]["tensor_values"] + fp["host_check"]["tensor_values"]
        zeros = "n/a" if r["ecqx_zeros"] is None else f"{100 * r['ecqx_zeros']:.1f}%"
        ir = lambda d: _fmt(d.get("instructions_per_inference"), ",.0f")  # noqa: E731
        ratio = r.get("instructions_ratio_int4_vs_int8_ptq")
        print(f"| `{r['model']}` | {r['parameters']:,} | {zeros} | {f4['flatbuffer_bytes']:,} | "
              f"{f8['flatbuffer_bytes']:,} | {fp['flatbuffer_bytes']:,} | {f4['arena_minimum']:,} | "
              f"{f8.get('arena_minimum', 0):,} | {fp['arena_minimum']:,} | "
              f"{'0 differences' if diff == 0 else f'{diff:,} DIFFERENCES'} ({vals:,}) | "
              f"{_agreement(f4['host_check'])} | {_agreement(fp['host_check'])} | {ir(f4)} | {ir(f8)} | {ir(fp)} | "
              f"{_fmt(ratio, '.2f')} |")


def _write(path: Path, rows, settings) -> None:
    atomic_write_json(path, {"architectures": rows, "settings": settings})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(ARCHITECTURES), help=f"comma-separated subset of {list(ARCHITECTURES)}")
    ap.add_argument("--steps", type=int, default=20, help="ECQ/ECQx optimizer steps of batch 32 (synthetic data)")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--Lambda", type=float, default=0.1)
    ap.add_argument("--samples", type=int, default=64, help="held-out host-check samples")
    ap.add_argument("--calib", type=int, default=128, help="calibration samples")
    ap.add_argument("--callgrind-samples", dest="callgrind_samples", type=int, default=2)
    ap.add_argument("--no-callgrind", dest="no_callgrind", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="only combine the rows of earlier runs' files "
                    "(in the order of --models) and print the table")
    ap.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    bad = [n for n in names if n not in ARCHITECTURES]
    if bad:
        ap.error(f"unknown model(s) {bad}; accepted: {', '.join(ARCHITECTURES)}")
    if args.merge:
        import json

        found, settings = {}, []
        for f in args.merge:
            d = json.loads(Path(f).read_text())
            settings.append({"file": Path(f).name, **d["settings"]})
            for r in d["architectures"]:
                found[r["model"]] = r
        rows = [found[n] for n in names if n in found]
        _write(Path(args.out), rows, {"merged": settings})
    else:
        if args.steps < 1 or args.samples < 1 or args.calib < 1 or args.callgrind_samples < 1 or not 2 <= args.bits <= 8:
            ap.error("--steps, --samples, --calib, --callgrind-samples must be >= 1 and --bits in 2..8")
        if not args.no_callgrind:
            from bench.instructions import available

            why = available()
            if why:
                ap.error(f"callgrind cannot run here ({why}); use --no-callgrind")
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "merge", "markdown")}
        rows = []
        for name in names:
            print(f"[{name}] ...", file=sys.stderr, flush=True)
            try:
                rows.append(measure(name, args))
            except Exception as e:  # one architecture failing must not hide the others
                traceback.print_exc()
                rows.append({"model": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            _write(Path(args.out), rows, settings)  # after every architecture: an interrupted run keeps its rows
    print_table(rows)
    if args.markdown:
        print_markdown(rows)
    print(f"wrote {args.out}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
