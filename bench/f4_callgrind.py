#!/usr/bin/env python
"""Instructions per inference (valgrind callgrind), weight bytes and RAM: the FantastIC4 C runtime
(each weight layout) against TFLite Micro's reference interpreter on the same int8 .tflite.

    python bench/f4_callgrind.py MODEL.tflite [--samples 11]
    python bench/f4_callgrind.py --make-model out/mnist_mlp_snapped.tflite     # stand-in model

Method:
* C runtime: the host harness (runtime/f4_host.c) built with ``gcc -std=c99 -O2``, the blob read
  from a file, ``f4_prepare`` once, ``f4_invoke`` per sample. Two numbers: callgrind with
  ``--toggle-collect=f4_invoke`` (only the inference) divided by N, and the difference of whole
  runs with N and 1 samples divided by N-1 (adds the harness's per-sample compare loop).
* TFLM: a Python driver (``tflite_micro.runtime``) under callgrind: ``--toggle-collect`` on
  ``tflite::micro::MicroInterpreter::Invoke()`` divided by N, and whole runs N vs 1 (adds the
  pybind11 set_input/get_output per sample; Python start-up cancels out).
* Outputs of C, the Python simulator and TFLM are checked equal before anything is measured.
* RAM: FantastIC4 = scratch (2 x widest hidden layer, plus 4 x widest CSC layer for the int32
  accumulators of the csc layout) + ``sizeof(f4_model)`` (stack) + input + output + 64 B of
  partial sums on the stack (row layouts only); TFLM = the smallest arena ``Interpreter.from_bytes`` accepts
  (bisection; it holds the activations, the INT4->int8 unpacked filter scratch, and TFLM's own
  bookkeeping), not counting the interpreter object outside the arena.

``--make-model`` trains ``models.zoo`` ``mnist_mlp`` (784-256-128-10) for a few epochs on the
5,000 bundled MNIST digits, snaps every kernel to the 4-bit symmetric grid (k * step, k in -7..7)
with the smallest ``--sparsity`` fraction of weights set to 0 (a magnitude-pruning stand-in for an
ECQ-trained model, NOT ECQ), and converts it with ``firmware_export.tflm.convert.to_tflite``.
Results go to bench/results/f4_callgrind.json.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.instructions import CFLAGS, TFLM_DRIVER, TFLM_INVOKE, available, build_f4_host, callgrind  # noqa: E402
from ecqx_tf.io import atomic_write_bytes, atomic_write_json  # noqa: E402
from firmware_export.fantastic4 import format as F  # noqa: E402
from firmware_export.fantastic4 import simulate as S  # noqa: E402
from firmware_export.fantastic4.network import IntegerMLP  # noqa: E402


def make_model(path: Path, sparsity: float, epochs: int, seed: int = 0) -> bytes:
    import tensorflow as tf

    from ecqx_tf.quantized import QuantizedKernel
    from firmware_export.registry import ExportRequest
    from firmware_export.tflm.convert import to_tflite
    from models import zoo
    from models.datasets.bundled import load_mnist_bundled

    ds = load_mnist_bundled()
    tf.keras.utils.set_random_seed(seed)
    model = zoo.build("mnist_mlp", (28, 28, 1), 10, seed=seed)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(ds.x_train, ds.y_train, epochs=epochs, batch_size=64, verbose=0)
    levels = np.arange(-7, 8, dtype=np.int32)
    dense = [l for l in model.layers if isinstance(l, tf.keras.layers.Dense)]
    steps, masks = {}, {}
    for layer in dense:
        w = np.abs(layer.kernel.numpy())
        steps[layer.name] = float(np.float32(np.percentile(w, 99.9) / 7))
        masks[layer.name] = w > np.quantile(w, sparsity)

    def snap() -> dict:
        quant = {}
        for layer in dense:
            k = np.clip(np.round(layer.kernel.numpy() / steps[layer.name]), -7, 7).astype(np.int32)
            k[~masks[layer.name]] = 0
            qk = QuantizedKernel(layer.name, 4, "symmetric", steps[layer.name], levels, k + 7)
            layer.kernel.assign(qk.values())
            quant[layer.name] = qk
        return quant

    class KeepMask(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for layer in dense:
                layer.kernel.assign(layer.kernel * masks[layer.name].astype(np.float32))

    # fine-tune with the pruned weights held at 0, then snap the survivors to the grid
    model.fit(ds.x_train, ds.y_train, epochs=6, batch_size=64, verbose=0, callbacks=[KeepMask()])
    quant = snap()
    acc = float(np.mean(np.argmax(model.predict(ds.x_test, verbose=0), 1) == ds.y_test))
    request = ExportRequest(model=model, quant=quant, name="mnist_mlp", representative=ds.x_train[:500],
                            x_test=ds.x_test, y_test=ds.y_test)
    model_bytes = to_tflite(request)
    atomic_write_bytes(path, model_bytes)
    print(f"wrote {path} ({len(model_bytes)} bytes); float accuracy of the snapped model (Keras, float) on the 1,000 test digits: {acc:.4f}")
    return model_bytes


def bench_inputs(model_bytes: bytes, net: IntegerMLP, n: int) -> np.ndarray:
    """The first n bundled MNIST test digits when the model takes 784 inputs, else random int8."""
    if net.input_features == 784:
        from firmware_export.tflm.convert import quantize_input
        from models.datasets.bundled import load_mnist_bundled

        return quantize_input(model_bytes, load_mnist_bundled().x_test[:n]).reshape(n, -1)
    return np.random.default_rng(0).integers(-128, 128, size=(n, net.input_features)).astype(np.int8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tflite", nargs="?", help="int8 .tflite (FULLY_CONNECTED chain), e.g. the MNIST MLP 784-256-128-10")
    ap.add_argument("--make-model", metavar="PATH", help="build the stand-in MNIST MLP .tflite at PATH and benchmark it")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--samples", type=int, default=11, help="N for the N vs 1 difference (default 11)")
    ap.add_argument("--layouts", nargs="+", default=list(F.LAYOUT_IDS), choices=list(F.LAYOUT_IDS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "f4_callgrind.json"))
    args = ap.parse_args(argv)
    missing = available()
    if missing:
        ap.error(missing)
    if args.make_model:
        model_path = Path(args.make_model)
        model_bytes = make_model(model_path, args.sparsity, args.epochs)
    elif args.tflite:
        model_path = Path(args.tflite)
        model_bytes = model_path.read_bytes()
    else:
        ap.error("give a .tflite or --make-model PATH")
    net = IntegerMLP.from_tflite(model_bytes)
    n = args.samples
    x = bench_inputs(model_bytes, net, n)
    shape = [net.input_features] + [l.out_features for l in net.layers]
    print(f"model {model_path} ({len(model_bytes)} bytes): {'-'.join(map(str, shape))}, {n} samples")

    from firmware_export.fantastic4.target import tflm_reference
    from firmware_export.tflm.arena import minimum_arena
    from firmware_export.tflm.flatbuffer import fully_connected_layers

    tflm_out = tflm_reference(model_bytes, x)
    method = __doc__.split("Method:")[1].split("``--make-model``")[0].strip()
    results = {"model": str(model_path), "shape": shape, "samples": n, "layouts": {}, "method": method}
    with tempfile.TemporaryDirectory(prefix="f4_bench_") as tmpd:
        tmp = Path(tmpd)
        host = build_f4_host(tmp / "f4_host")
        x.tofile(tmp / "in_n.bin")
        x[:1].tofile(tmp / "in_1.bin")
        for layout in args.layouts:
            blob = F.write_blob(net, layout)
            (tmp / "blob.bin").write_bytes(blob)
            r = subprocess.run([host, "-b", tmp / "blob.bin", tmp / "in_n.bin", "-", tmp / "out.bin"], capture_output=True, text=True, check=True)
            c_out = np.fromfile(tmp / "out.bin", np.int8).reshape(n, -1)
            if not (np.array_equal(c_out, S.run(blob, x)) and np.array_equal(c_out, tflm_out)):
                raise RuntimeError(f"{layout}: C / simulator / TFLM outputs differ; not benchmarking")
            model_struct = int(re.search(r"f4_model (\d+) bytes", r.stdout).group(1))
            t0 = time.time()
            invoke = callgrind([host, "-b", tmp / "blob.bin", tmp / "in_n.bin", "-"], tmp / "cg_inv.out", toggle="f4_invoke")
            whole_n = callgrind([host, "-b", tmp / "blob.bin", tmp / "in_n.bin", "-"], tmp / "cg_n.out")
            whole_1 = callgrind([host, "-b", tmp / "blob.bin", tmp / "in_1.bin", "-"], tmp / "cg_1.out")
            prepare = callgrind([host, "-b", tmp / "blob.bin", tmp / "in_1.bin", "-"], tmp / "cg_prep.out", toggle="f4_prepare")
            parsed = F.read_blob(blob)
            _, counts, _ = S.run_with_counts(parsed, x)
            total = sum(counts, S.OpCounts())
            scratch = parsed.required_scratch()
            partial_sums = 64 if any(F.LAYOUTS[l.layout].folded_bias for l in parsed.layers) else 0
            results["layouts"][layout] = {
                "instructions_per_inference_invoke": invoke / n,
                "instructions_per_inference_n_minus_1": (whole_n - whole_1) / (n - 1),
                "instructions_prepare_once": prepare,
                "blob_bytes": len(blob),
                "weights_section_bytes": sum(l.weights_size for l in parsed.layers),
                "bias_bytes": sum(l.bias_size for l in parsed.layers),
                "ram_bytes": scratch + model_struct + net.input_features + net.output_features + partial_sums,
                "ram_detail": {"scratch": scratch, "f4_model_struct": model_struct, "input": net.input_features,
                               "output": net.output_features, "partial_sums": partial_sums},
                "ops_per_inference": total.as_dict(),
            }
            print(f"  f4 {layout}: callgrind done in {time.time() - t0:.1f} s")
        # TFLM
        model_file = tmp / "model.tflite"
        model_file.write_bytes(model_bytes)
        driver = tmp / "driver.py"
        driver.write_text(TFLM_DRIVER)
        arena = minimum_arena(model_bytes)
        py = sys.executable
        t0 = time.time()
        invoke = callgrind([py, driver, model_file, tmp / "in_n.bin", arena], tmp / "cgt_inv.out", toggle=TFLM_INVOKE)
        whole_n = callgrind([py, driver, model_file, tmp / "in_n.bin", arena], tmp / "cgt_n.out")
        whole_1 = callgrind([py, driver, model_file, tmp / "in_1.bin", arena], tmp / "cgt_1.out")
        print(f"  tflm: callgrind done in {time.time() - t0:.1f} s")
        fcs = fully_connected_layers(model_bytes)
        results["tflm"] = {
            "instructions_per_inference_invoke": invoke / n,
            "instructions_per_inference_n_minus_1": (whole_n - whole_1) / (n - 1),
            "tflite_bytes": len(model_bytes),
            "weight_dtypes": [l.weight_dtype for l in fcs],
            "weights_bytes": int(sum(l.weights.size * (0.5 if l.weight_dtype == "INT4" else 1) for l in fcs)),
            "bias_bytes": int(sum(4 * l.weights.shape[0] for l in fcs)),
            "arena_bytes_min": arena,
            "ops_per_inference": {**S.dense_int8_counts(net).as_dict(), "energy_pj": S.dense_int8_energy_pj(net)},
            "tflite_micro_version": _version("tflite-micro"),
        }
    if net.input_features == 784:
        from firmware_export.tflm.convert import quantize_input
        from models.datasets.bundled import load_mnist_bundled

        ds = load_mnist_bundled()
        y_int8 = S.run(F.write_blob(net, "cer"), quantize_input(model_bytes, ds.x_test).reshape(len(ds.x_test), -1))
        results["int8_accuracy_mnist_bundled_test"] = float(np.mean(np.argmax(y_int8, 1) == ds.y_test))
    for d in results["layouts"].values():
        d["instructions_ratio_vs_tflm_invoke"] = d["instructions_per_inference_invoke"] / results["tflm"]["instructions_per_inference_invoke"]
    results["weights"] = int(sum(l.weights.size for l in net.layers))
    results["nonzeros"] = int(sum(np.count_nonzero(l.weights) for l in net.layers))
    results["compiler"] = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0] + " " + " ".join(CFLAGS)
    atomic_write_json(args.out, results)
    _print_table(results)
    print(f"wrote {args.out}")
    return 0


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # pragma: no cover
        return "unknown"


def _print_table(r) -> None:
    w = r["weights"]
    acc = r.get("int8_accuracy_mnist_bundled_test")
    print(f"\n{w} weights, {r['nonzeros']} non-zero ({1 - r['nonzeros'] / w:.1%} zeros)"
          + (f"; int8 accuracy on the 1,000 bundled MNIST test digits {acc:.4f}" if acc is not None else ""))
    tflm_ir = r["tflm"]["instructions_per_inference_invoke"]
    head = (f"{'runtime':<16}{'Ir/inference':>14}{'(N vs 1)':>12}{'x TFLM':>8}{'weight B':>10}{'B/weight':>10}"
            f"{'flash B':>10}{'RAM B':>9}{'MACs|adds':>11}{'mults':>9}{'E est. nJ':>10}")
    print(head)
    print("-" * len(head))
    for name, d in r["layouts"].items():
        ops = d["ops_per_inference"]
        print(f"{'f4 ' + name:<16}{d['instructions_per_inference_invoke']:>14,.0f}{d['instructions_per_inference_n_minus_1']:>12,.0f}"
              f"{d['instructions_per_inference_invoke'] / tflm_ir:>8.3f}{d['weights_section_bytes']:>10}"
              f"{d['weights_section_bytes'] / w:>10.3f}{d['blob_bytes']:>10}{d['ram_bytes']:>9}"
              f"{ops['accumulate_adds']:>11,.0f}{ops['multiplies']:>9,.0f}{ops['energy_pj']['total'] / 1000:>10.1f}")
    t = r["tflm"]
    ops = t["ops_per_inference"]
    print(f"{'tflm reference':<16}{t['instructions_per_inference_invoke']:>14,.0f}{t['instructions_per_inference_n_minus_1']:>12,.0f}"
          f"{1:>8.3f}{t['weights_bytes']:>10}{t['weights_bytes'] / w:>10.3f}{t['tflite_bytes']:>10}{t['arena_bytes_min']:>9}"
          f"{ops['accumulate_adds']:>11,.0f}{ops['multiplies']:>9,.0f}{ops['energy_pj']['total'] / 1000:>10.1f}")


if __name__ == "__main__":
    sys.exit(main())
