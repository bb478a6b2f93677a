"""The full-size zoo architectures through the command line, as a user runs them:
``ecqx-export QAT.h5 --target tflm --calib-data X.npy --out DIR`` (the CLI's ``main``, in process).

Per model (``models.zoo``, full size): ``ecqx_tf.quantize(..., method="ecqx", bits=4)`` from the
seeded initial weights, ``--steps`` optimizer steps of batch 32 with ``ECQxCallback``,
``ecqx_tf.save_model`` (the QAT ``.h5``); the inputs saved as ``X.npy``; then the export. Data:
seeded N(0, 1) inputs, ``--rows`` rows; classifiers learn the largest of fixed random projections,
the autoencoder reconstructs its input (ECQx relevance from ``x`` alone). The export calibrates on
the first ``--calib`` rows and checks itself on the rest (the held-out golden vectors).

Per row: exit code, ``summary.ok`` and TFLM/simulator mismatching samples from ``DIR/manifest.json``;
weight tensors whose stored integers equal ``quantization_info`` of the reloaded ``.h5`` (TFLite
layout); how the TFLM outputs of the golden vectors track the stripped Keras model (argmax agreement
for classifiers; largest absolute error and output range for the autoencoder); flatbuffer bytes;
seconds.

    nice -n 10 python bench/architectures_cli.py [--models ds_cnn,...] [--steps 5] [--rows 384]
                                                 [--calib 256] [--out FILE]

Writes ``bench/results/architectures_cli.json`` (after every model) and prints a table.
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

OUT = ROOT / "bench" / "results" / "architectures_cli.json"
#: name -> (input shape, outputs): the full-size configurations
MODELS = {
    "ds_cnn": ((49, 10, 1), 12),
    "sensor_cnn1d": ((128, 9), 6),
    "mnist_mlp": ((28, 28, 1), 10),
    "fc_autoencoder": ((640,), 640),
    "resnet8": ((32, 32, 3), 10),
    "mobilenet_v1_025": ((96, 96, 3), 2),
    "resnet20": ((32, 32, 3), 10),
}


def run_model(name: str, args, work: Path) -> dict:
    import tensorflow as tf

    import ecqx_tf
    from cli.export import main as export_main
    from firmware_export.tflm import convert as C
    from firmware_export.tflm import flatbuffer as fb
    from models import zoo

    t0 = time.time()
    shape, outputs = MODELS[name]
    tf.keras.utils.set_random_seed(args.seed)
    model = zoo.build(name, shape, outputs, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    n = args.rows
    x = rng.normal(size=(n,) + shape).astype(np.float32)
    ae = name == "fc_autoencoder"
    y = None if ae else np.argmax(x.reshape(n, -1) @ rng.normal(size=(int(np.prod(shape)), outputs)), 1)
    q = ecqx_tf.quantize(model, bits=4, method="ecqx", Lambda=args.Lambda,
                         relevance_data=x[:32] if ae else (x[:32], y[:32]))
    q.compile(tf.keras.optimizers.Adam(1e-3), tf.keras.losses.MeanSquaredError() if ae
              else tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train = tf.data.Dataset.from_tensor_slices((x[: args.calib], x[: args.calib] if ae else y[: args.calib]))
    q.fit(train.repeat().batch(32), epochs=1, steps_per_epoch=args.steps, verbose=0,
          callbacks=[ecqx_tf.ECQxCallback()])
    h5 = ecqx_tf.save_model(q, work / f"{name}.h5")
    data = work / f"{name}_x.npy"
    np.save(data, x)
    out = work / f"{name}_out"
    rc = export_main([str(h5), "--target", "tflm", "--calib-data", str(data), "--calib", str(args.calib),
                      "--max-eval", str(n - args.calib), "--out", str(out), "-q"])
    row = {"model": name, "input_shape": list(shape), "parameters": int(model.count_params()), "exit_code": rc}
    if rc != 0:
        row["seconds"] = round(time.time() - t0, 1)
        return row
    manifest = json.loads((out / "manifest.json").read_text())
    s = manifest["summary"]
    qmodel = ecqx_tf.load_model(h5)
    info = ecqx_tf.quantization_info(qmodel)
    parsed = fb.read_model((out / s["tflite"]).read_bytes())
    rows = {r["op_index"]: r for r in s["layers"]}
    equal = 0
    for op, t in fb.weight_tensors(parsed):
        ref = C.tflite_layout(op.name, np.asarray(info[rows[op.index]["layer"]].integers(), np.int64))
        equal += int(np.array_equal(parsed.constant_values(t.index), ref.astype(np.int8)))
    golden = np.load(out / s["golden"]["file"])
    keras = ecqx_tf.strip(qmodel).predict(golden["x_float"], verbose=0).reshape(len(golden["x_float"]), -1)
    o = s["output"]
    tflm = ((golden["y_int8"].astype(np.float32) - o["zero_point"]) * o["scale"]).reshape(keras.shape)
    row.update({
        "method": manifest["model"]["kind"],
        "steps": args.steps,
        "summary_ok": bool(s["ok"]),
        "golden_samples": int(s["host_check"]["samples"]),
        "mismatches_simulator": int(s["host_check"]["mismatches_simulator"]),
        "weight_tensors": len(rows),
        "weight_tensors_equal_to_levels": equal,
        "quantized_kernels": len(info),
        "argmax_agreement_keras_tflm": None if ae else float(np.mean(np.argmax(tflm, 1) == np.argmax(keras, 1))),
        "max_abs_error_keras_tflm": float(np.max(np.abs(tflm - keras))),
        "keras_output_range": float(np.ptp(keras)),
        "flatbuffer_bytes": int(s["flatbuffer_bytes"]),
        "ops": s["ops"],
        "seconds": round(time.time() - t0, 1),
    })
    return row


def print_table(rows) -> None:
    print("| model | exit | summary.ok | TFLM != simulator (samples) | integers == levels | Keras/TFLM | "
          "flatbuffer B | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("exit_code") != 0:
            print(f"| `{r['model']}` | {r.get('exit_code')} | {r.get('error', '')} | | | | | |")
            continue
        track = (f"argmax {100 * r['argmax_agreement_keras_tflm']:.1f}%" if r["argmax_agreement_keras_tflm"] is not None
                 else f"max err {r['max_abs_error_keras_tflm']:.3g} (range {r['keras_output_range']:.3g})")
        print(f"| `{r['model']}` | {r['exit_code']} | {str(r['summary_ok']).lower()} | "
              f"{r['mismatches_simulator']} of {r['golden_samples']} | "
              f"{r['weight_tensors_equal_to_levels']}/{r['weight_tensors']} tensors | {track} | "
              f"{r['flatbuffer_bytes']:,} | {r['seconds']} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    ap.add_argument("--steps", type=int, default=5, help="ECQx optimizer steps of batch 32")
    ap.add_argument("--Lambda", type=float, default=0.1)
    ap.add_argument("--rows", type=int, default=384, help="rows of X.npy")
    ap.add_argument("--calib", type=int, default=256, help="calibration (and training) rows; the rest are held out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    bad = [n for n in names if n not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {bad}; accepted: {', '.join(MODELS)}")
    if args.steps < 1 or not 1 <= args.calib < args.rows:
        ap.error(f"--steps must be >= 1 and 1 <= --calib < --rows (got {args.steps}, {args.calib}, {args.rows})")
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"[{name}] ...", file=sys.stderr, flush=True)
            try:
                rows.append(run_model(name, args, Path(tmp)))
            except Exception as e:  # noqa: BLE001 - one model failing must not hide the others
                rows.append({"model": name, "exit_code": None, "error": f"{type(e).__name__}: {e}"[:300]})
            atomic_write_json(Path(args.out), {"architectures": rows, "settings": settings})
    print_table(rows)
    print(f"wrote {args.out}")
    return 0 if all(r.get("exit_code") == 0 and r.get("summary_ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
