"""The ``fantastic4`` export target: the TFLM exporter's int8 ``.tflite`` re-encoded as a
FantastIC4 blob for the portable C99 runtime, with a host harness and golden vectors.

``export(request, out_dir)`` writes (``<name>`` = ``request.name``):

=========================  ================================================================
``<name>_f4.bin``          the blob (FORMAT.md)
``<name>_f4.h/.c``         the blob as ``const unsigned char g_<name>_f4_model_data[]``,
                           16-byte aligned (``F4_ALIGN16``: ``__attribute__((aligned(16)))``
                           for GCC/Clang, ``_Alignas(16)`` for C11, nothing otherwise; the
                           runtime reads bytes one by one, so alignment is a convention only)
                           and ``g_<name>_f4_model_data_size``
``f4_model_data.h``        maps ``F4_MODEL_DATA`` to that array for the harness
``f4_runtime.c/.h``,       the runtime, copied verbatim
``f4_format.h``,
``f4_intmath.h``,
``FORMAT.md``
``main.c``, ``Makefile``   host harness: ``make check`` builds with ``gcc -std=c99 -Wall
                           -Wextra -Werror -O2`` and compares with the golden vectors
``cortex_m_main.c``,       bare-metal harness: ``make cortex-m CPU=m4|m33`` cross-builds it with
``cortex_m_startup.c``,    arm-none-eabi-gcc (``-Wall -Wextra -Werror``) for QEMU's mps2-an386
``cortex_m_semihost.h``,   (Cortex-M4) / mps2-an505 (Cortex-M33) memory map, the golden vectors
``cortex_m_golden.S``,     embedded with ``.incbin``; ``make run-cortex-m`` runs it in
``mps2_an386.ld``,         qemu-system-arm; ``ecqx-simulate DIR --cortex-m m4`` counts its
``mps2_an505.ld``          instructions (``cortex_m.py``)
``golden_inputs.bin``      int8 ``[n, in]`` (the quantized ``x_test``, else ``representative``)
``golden_outputs.bin``     int8 ``[n, out]`` from the Python simulator
``<name>.tflite``          the int8 model the blob was made from
``fantastic4.json``        manifest and report (sizes per layout, entropy bound, op counts,
                           energy estimate, accuracy)
=========================  ================================================================

``export`` already checks the Python simulator against the TFLM interpreter on the golden vectors
(``ok``); ``simulate(out_dir)`` builds the harness and checks C == Python simulator == TFLM
interpreter bit for bit on every golden vector.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ecqx_tf.fields import param, validate_fields
from ecqx_tf.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ecqx_tf.stats import value_entropy
from firmware_export.fantastic4 import format as f4format
from firmware_export.fantastic4 import simulate as f4sim
from firmware_export.fantastic4.network import IntegerMLP
from firmware_export.registry import ExportRequest, ExportTarget, register_target

__all__ = ["FantastIC4Target", "FantastIC4Options", "RUNTIME_DIR", "RUNTIME_FILES", "CFLAGS", "layer_report", "c_array_files", "tflm_arena",
           "tflm_reference"]

log = logging.getLogger(__name__)

RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
RUNTIME_FILES = ("f4_runtime.c", "f4_runtime.h", "f4_format.h", "f4_intmath.h")
#: the bare-metal Cortex-M harness (runtime/cortex_m/), copied next to the runtime
CORTEX_M_DIR = RUNTIME_DIR / "cortex_m"
CORTEX_M_FILES = ("cortex_m_main.c", "cortex_m_startup.c", "cortex_m_semihost.h", "cortex_m_golden.S",
                  "mps2_an386.ld", "mps2_an505.ld")
CFLAGS = "-std=c99 -Wall -Wextra -Werror -O2"
LAYOUT_CHOICES = ("auto", "smallest", *f4format.LAYOUT_IDS)
MANIFEST = "fantastic4.json"

_MAKEFILE = """\
# Host harness for the FantastIC4 runtime ({name}). `make check` builds and compares the C
# runtime's outputs with the golden vectors (exit code 0 = all equal). O= puts the binaries elsewhere.
#
# `make cortex-m CPU=m4|m33` cross-builds the bare-metal harness (cortex_m_main.c: every golden
# vector, outputs and SysTick ticks over semihosting) with arm-none-eabi-gcc for QEMU's
# mps2-an386 (Cortex-M4) or mps2-an505 (Cortex-M33) memory map: $(O)/f4_cortex_m_$(CPU).elf and
# its link map. `make run-cortex-m CPU=...` runs it in qemu-system-arm. ARM_OPT=-Os for size.
CC ?= gcc
CFLAGS ?= {cflags}
O ?= .

SRCS = main.c f4_runtime.c {name}_f4.c
HDRS = f4_runtime.h f4_format.h f4_intmath.h {name}_f4.h f4_model_data.h

$(O)/f4_host: $(SRCS) $(HDRS)
\t$(CC) $(CFLAGS) -DF4_EMBEDDED_MODEL -I. $(SRCS) -o $@

check: $(O)/f4_host
\t$(O)/f4_host golden_inputs.bin golden_outputs.bin

CPU ?= m4
ARM_CC ?= arm-none-eabi-gcc
ARM_OPT ?= -O2
MCPU_m4 = cortex-m4
MCPU_m33 = cortex-m33
BOARD_m4 = mps2-an386
BOARD_m33 = mps2-an505
ifeq ($(MCPU_$(CPU)),)
$(error CPU must be m4 or m33, got '$(CPU)')
endif
ARM_CFLAGS = -mcpu=$(MCPU_$(CPU)) -mthumb -mfloat-abi=soft -std=c99 -Wall -Wextra -Werror $(ARM_OPT) \\
             -ffunction-sections -fdata-sections
ARM_LDFLAGS = -T mps2_$(subst mps2-,,$(BOARD_$(CPU))).ld -nostartfiles --specs=nano.specs --specs=nosys.specs \\
              -Wl,--gc-sections -Wl,-Map=$(O)/f4_cortex_m_$(CPU).map
ARM_DIR = $(O)/cortex_m_$(CPU)
ARM_OBJS = $(ARM_DIR)/f4_runtime.o $(ARM_DIR)/{name}_f4.o $(ARM_DIR)/cortex_m_main.o $(ARM_DIR)/cortex_m_startup.o \\
           $(ARM_DIR)/cortex_m_golden.o

$(ARM_DIR)/%.o: %.c $(HDRS) cortex_m_semihost.h
\t@mkdir -p $(ARM_DIR)
\t$(ARM_CC) $(ARM_CFLAGS) -I. -c $< -o $@

$(ARM_DIR)/cortex_m_golden.o: cortex_m_golden.S golden_inputs.bin golden_outputs.bin
\t@mkdir -p $(ARM_DIR)
\t$(ARM_CC) $(ARM_CFLAGS) -I. -c $< -o $@

$(O)/f4_cortex_m_$(CPU).elf: $(ARM_OBJS) mps2_an386.ld mps2_an505.ld
\t$(ARM_CC) $(ARM_CFLAGS) $(ARM_OBJS) $(ARM_LDFLAGS) -o $@

cortex-m: $(O)/f4_cortex_m_$(CPU).elf

run-cortex-m: $(O)/f4_cortex_m_$(CPU).elf
\tqemu-system-arm -M $(BOARD_$(CPU)) -nographic -semihosting-config enable=on,target=native -kernel $<

clean:
\trm -f $(O)/f4_host $(O)/f4_cortex_m_m4.elf $(O)/f4_cortex_m_m33.elf $(O)/f4_cortex_m_m4.map $(O)/f4_cortex_m_m33.map
\trm -rf $(O)/cortex_m_m4 $(O)/cortex_m_m33

.PHONY: check cortex-m run-cortex-m clean
"""


def c_array_files(name: str, blob: bytes) -> Dict[str, str]:
    """``<name>_f4.h`` / ``<name>_f4.c`` holding the blob as a 16-byte aligned C99 array, and
    ``f4_model_data.h`` mapping the harnesses' ``F4_MODEL_DATA`` to it, with the blob's scratch
    bytes and input/output features (``F4_MODEL_SCRATCH_BYTES``, ``F4_MODEL_INPUT_FEATURES``,
    ``F4_MODEL_OUTPUT_FEATURES``) for static buffers."""
    parsed = f4format.read_blob(blob)
    sym = f"g_{name}_f4_model_data"
    guard = f"{name.upper()}_F4_H_"
    header = (
        f"/* FantastIC4 blob for {name} (generated; FORMAT.md). */\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        "#if defined(__GNUC__) || defined(__clang__)\n"
        "#define F4_ALIGN16 __attribute__((aligned(16)))\n"
        "#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L\n"
        "#define F4_ALIGN16 _Alignas(16)\n"
        "#else\n#define F4_ALIGN16\n#endif\n\n"
        f"extern const unsigned char {sym}[];\n"
        f"extern const unsigned int {sym}_size;\n\n#endif /* {guard} */\n"
    )
    lines = []
    for i in range(0, len(blob), 12):
        lines.append("    " + ", ".join(f"0x{b:02x}" for b in blob[i : i + 12]) + ",")
    source = (
        f'/* FantastIC4 blob for {name} (generated; FORMAT.md), {len(blob)} bytes. */\n'
        f'#include "{name}_f4.h"\n\n'
        f"F4_ALIGN16 const unsigned char {sym}[] = {{\n" + "\n".join(lines) + "\n};\n"
        f"const unsigned int {sym}_size = {len(blob)}u;\n"
    )
    shim = (
        "/* Maps the harness's F4_MODEL_DATA to this export's array (generated). */\n"
        f'#include "{name}_f4.h"\n#define F4_MODEL_DATA {sym}\n#define F4_MODEL_DATA_SIZE {sym}_size\n'
        f"#define F4_MODEL_SCRATCH_BYTES {parsed.required_scratch()}u\n"
        f"#define F4_MODEL_INPUT_FEATURES {parsed.layers[0].in_features}u\n"
        f"#define F4_MODEL_OUTPUT_FEATURES {parsed.layers[-1].out_features}u\n"
    )
    return {f"{name}_f4.h": header, f"{name}_f4.c": source, "f4_model_data.h": shim}


def layer_report(net: IntegerMLP, parsed: f4format.F4Blob,
                 layout_sizes: Optional[List[Dict[str, int]]] = None) -> List[Dict[str, Any]]:
    """Per layer: shape, sparsity, codebook size, bytes of every layout (``layout_sizes``, per
    layer, when already computed; else ``format.layout_sizes``), bytes per weight against the
    zeroth-order entropy bound of the codes, dense INT4 and int8."""
    rows = []
    for i, (layer, entry) in enumerate(zip(net.layers, parsed.layers)):
        codes = layer.codes()
        n = codes.size
        sizes = layout_sizes[i] if layout_sizes is not None else f4format.layout_sizes(codes)
        h = value_entropy(codes)
        rows.append({
            "layer": layer.name,
            "op": "FULLY_CONNECTED",
            "weight_type": f"F4 {entry.layout_name}",
            "weight_bytes": int(entry.weights_size),
            "distinct_values": int(len(np.unique(layer.weights))),
            "shape": [layer.out_features, layer.in_features],
            "weights": int(n),
            "nonzeros": int(np.count_nonzero(codes)),
            "zeros": float(np.mean(codes == 0)),
            "n_values": int(entry.n_values),
            "layout": entry.layout_name,
            "bytes": dict(sizes),
            "bytes_per_weight": {**{k: v / n for k, v in sizes.items()},
                                 "entropy_bound": h / 8, "int4_dense": 0.5, "int8": 1.0},
            "entropy_bits_per_weight": h,
        })
    return rows


def _golden_inputs(request: ExportRequest, model_bytes: bytes) -> np.ndarray:
    from firmware_export.tflm.convert import quantize_input

    x = request.x_test if request.x_test is not None and len(request.x_test) else request.representative
    q = quantize_input(model_bytes, np.asarray(x, np.float32))
    return q.reshape(len(q), -1)


def tflm_arena(model_bytes: bytes) -> Dict[str, int]:
    """The TFLM reference check's arena: ``firmware_export.tflm.arena``'s measured minimum (the
    smallest arena the interpreter accepts, found by bisection) and the recommended size used
    (minimum + margin, 16-aligned). A fixed size would fail on large models: the reference
    FULLY_CONNECTED unpacks an INT4 filter into the arena (one byte per weight)."""
    from firmware_export.tflm.arena import arena_sizes

    minimum, recommended = arena_sizes(bytes(model_bytes))
    return {"minimum": int(minimum), "used": int(recommended)}


def tflm_reference(model_bytes: bytes, x: np.ndarray, arena_size: Optional[int] = None) -> np.ndarray:
    """TFLM's reference kernels (the ``tflite_micro`` interpreter), one sample at a time, in
    ``arena_size`` bytes (default: the measured arena, :func:`tflm_arena`)."""
    from tflite_micro import runtime

    if arena_size is None:
        arena_size = tflm_arena(model_bytes)["used"]
    it = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=int(arena_size))
    shape = tuple(int(d) for d in it.get_input_details(0)["shape"])
    out = []
    for row in x:
        it.set_input(np.asarray(row, np.int8).reshape(shape), 0)
        it.invoke()
        out.append(np.asarray(it.get_output(0)).reshape(-1))
    return np.stack(out).astype(np.int8)


def _objectives() -> List[str]:
    from firmware_export.fantastic4.cost import OBJECTIVES

    return list(OBJECTIVES)


@dataclasses.dataclass(frozen=True)
class FantastIC4Options:
    """Options of the ``fantastic4`` target (``ecqx-export --target fantastic4 --help``;
    ``firmware_export.export``)."""

    f4_layout: str = param("auto", "FantastIC4 weight layout of every layer (auto: chosen per layer by "
                                   "--f4-objective; smallest = --f4-objective size; FORMAT.md section 4)",
                           choices=LAYOUT_CHOICES)
    f4_objective: str = param("balanced", "with --f4-layout auto: per layer the fewest bytes (size), the fewest "
                                          "Cortex-M instructions (speed, a cost model fitted to instructions counted "
                                          "on Cortex-M4), or the least instructions/I + bytes/B with I, B the "
                                          "network's figures at full speed (balanced)", choices=_objectives)
    tflite_bytes: Optional[bytes] = param(None, "the .tflite of the same request (e.g. the tflm target's) instead "
                                                "of converting again", cli=False)

    def __post_init__(self) -> None:
        validate_fields(self, "fantastic4 options")


@register_target("fantastic4")
class FantastIC4Target(ExportTarget):
    name = "fantastic4"
    help = "FantastIC4-style 4-bit sparse MLP: blob + portable C99 runtime + host harness (same integers as tflm)"

    options = FantastIC4Options

    def export(self, request: ExportRequest, out_dir: Path) -> Dict[str, Any]:
        """Write the files listed in the module docstring; return the manifest.

        Raises:
            ValueError: an unknown ``f4_layout``; a model the FantastIC4 runtime cannot run (not
                a chain of FULLY_CONNECTED, more than 16 distinct weight values in a layer, ...).
        """
        from firmware_export.fantastic4.cost import OBJECTIVES, choose_layouts

        out = Path(out_dir)
        opts = dict(request.options or {})
        layout = opts.get("f4_layout") or "auto"
        objective = opts.get("f4_objective") or "balanced"
        if layout not in LAYOUT_CHOICES:
            raise ValueError(f"f4_layout {layout!r} is not one of {', '.join(LAYOUT_CHOICES)}")
        if objective not in OBJECTIVES:
            raise ValueError(f"f4_objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
        from firmware_export.tflm.c_arrays import check_identifier

        name = check_identifier(request.name)
        model_bytes = opts.get("tflite_bytes")
        if model_bytes is None:
            from firmware_export.tflm.convert import to_tflite

            model_bytes = to_tflite(request, drop_softmax=True)  # the FantastIC4 runtime outputs logits
        model_bytes = bytes(model_bytes)
        net = IntegerMLP.from_tflite(model_bytes)
        x = _golden_inputs(request, model_bytes)
        if x.shape[1] != net.input_features:
            raise ValueError(f"golden inputs have {x.shape[1]} features, the network takes {net.input_features}")
        if layout in ("auto", "smallest"):
            if layout == "smallest":
                objective = "size"
            layouts, layout_costs = choose_layouts(net, x, objective)
        else:
            layouts, layout_costs = [layout] * len(net.layers), choose_layouts(net, x, "size")[1]
            for row in layout_costs:
                row["chosen"] = layout
        blob = f4format.write_blob(net, layouts)
        parsed = f4format.read_blob(blob)
        y, counts, _ = f4sim.run_with_counts(parsed, x)
        total = sum(counts, f4sim.OpCounts())
        arena = tflm_arena(model_bytes)
        tflm = tflm_reference(model_bytes, x, arena["used"])
        mismatching = int(np.any(y != tflm, axis=1).sum())

        atomic_write_bytes(out / f"{name}_f4.bin", blob)
        for fname, text in c_array_files(name, blob).items():
            atomic_write_text(out / fname, text)
        for fname in RUNTIME_FILES:
            atomic_write_bytes(out / fname, (RUNTIME_DIR / fname).read_bytes())
        atomic_write_bytes(out / "FORMAT.md", (RUNTIME_DIR.parent / "FORMAT.md").read_bytes())
        atomic_write_bytes(out / "main.c", (RUNTIME_DIR / "f4_host.c").read_bytes())
        for fname in CORTEX_M_FILES:
            atomic_write_bytes(out / fname, (CORTEX_M_DIR / fname).read_bytes())
        atomic_write_text(out / "Makefile", _MAKEFILE.format(name=name, cflags=CFLAGS))
        atomic_write_bytes(out / "golden_inputs.bin", x.astype(np.int8).tobytes())
        atomic_write_bytes(out / "golden_outputs.bin", y.astype(np.int8).tobytes())
        atomic_write_bytes(out / f"{name}.tflite", model_bytes)

        sizes = [{k: b - 4 * l.out_features for k, b in row["bytes"].items()} for row, l in zip(layout_costs, net.layers)]
        rows = layer_report(net, parsed, sizes)
        n_weights = sum(r["weights"] for r in rows)
        totals = {
            "weights": n_weights,
            "blob_bytes": len(blob),
            "bytes_per_weight": {
                k: sum(r["bytes"][k] for r in rows) / n_weights for k in f4format.LAYOUT_IDS
            },
        }
        totals["bytes_per_weight"]["chosen"] = sum(l.weights_size for l in parsed.layers) / n_weights
        totals["bytes_per_weight"]["entropy_bound"] = sum(r["entropy_bits_per_weight"] * r["weights"] for r in rows) / 8 / n_weights
        totals["bytes_per_weight"]["int4_dense"] = 0.5
        totals["bytes_per_weight"]["int8"] = 1.0
        manifest: Dict[str, Any] = {
            "target": self.name,
            "name": name,
            "format_version": f4format.VERSION,
            "layout": layout,
            "objective": objective if layout in ("auto", "smallest") else None,
            "layouts": layouts,
            "layout_costs": layout_costs,
            "layout_cost_model": "firmware_export.fantastic4.cost (instructions estimated for Cortex-M4 -O2; "
                                 "instructions, not cycles)",
            "blob": f"{name}_f4.bin",
            "tflite": f"{name}.tflite",
            "golden": {"inputs": "golden_inputs.bin", "outputs": "golden_outputs.bin", "samples": int(len(x)),
                       "input_features": net.input_features, "output_features": net.output_features},
            "scratch_bytes": parsed.required_scratch(),
            "tflm_arena": arena,
            "layers": rows,
            "totals": totals,
            "python_equals_tflm": mismatching == 0,
            "mismatching_samples_python_vs_tflm": mismatching,
            "ok": mismatching == 0,
            "ops_per_inference": {"fantastic4": total.as_dict(),
                                  "dense_int8_reference": {**f4sim.dense_int8_counts(net).as_dict(),
                                                           "energy_pj": f4sim.dense_int8_energy_pj(net)}},
            "energy_figures_pj": dict(f4sim.ENERGY_PJ),
            "energy_source": "M. Horowitz, Computing's energy problem, ISSCC 2014 (45 nm)",
        }
        labels = None if request.y_test is None else np.asarray(request.y_test)
        if (labels is not None and request.x_test is not None and len(labels) == len(x) and labels.ndim == 1
                and np.issubdtype(labels.dtype, np.integer)):  # class labels (not an autoencoder's targets)
            manifest["accuracy"] = float(np.mean(np.argmax(y, axis=1) == np.asarray(request.y_test).reshape(-1)))
        manifest["files"] = sorted(p.name for p in out.iterdir() if p.is_file()) + [MANIFEST]
        atomic_write_json(out / MANIFEST, manifest)
        bpw = totals["bytes_per_weight"]
        ops = total.as_dict()
        table = [
            ["blob", f"{name}_f4.bin, {len(blob)} bytes, layouts {'/'.join(layouts)}"
                     + (f" (objective {objective})" if layout in ("auto", "smallest") else "")],
            ["bytes/weight", f"chosen {bpw['chosen']:.3f}; "
                             + ", ".join(f"{k} {bpw[k]:.3f}" for k in f4format.LAYOUT_IDS)
                             + f"; entropy bound {bpw['entropy_bound']:.3f}; int8 1.0"],
            ["RAM", f"scratch {manifest['scratch_bytes']} bytes (+ f4_model on the stack)"],
            ["per inference", f"{ops['accumulate_adds']:.0f} adds, {ops['multiplies']:.1f} multiplies, "
                              f"~{ops['energy_pj']['total'] / 1000:.1f} nJ (45 nm estimate)"],
            ["python == tflm", f"{mismatching == 0} on {len(x)} golden vectors"],
        ]
        if "accuracy" in manifest:
            table.append(["accuracy (int8)", f"{manifest['accuracy']:.4f}"])
        table.append(["host check", "ecqx-simulate OUT_DIR  (C == simulator == TFLM; or: make -C OUT_DIR check)"])
        table.append(["cortex-m", "ecqx-simulate OUT_DIR --cortex-m m4  (instructions, flash, RAM on the Arm ISA; "
                                  "or: make -C OUT_DIR cortex-m CPU=m4)"])
        return {**manifest, "table": table}

    def simulate(self, out_dir: Path, cc: Optional[str] = None) -> Dict[str, Any]:
        """Build the host harness, run it on every golden vector and check C == Python simulator
        == TFLM interpreter bit for bit.

        Raises:
            FileNotFoundError: ``out_dir`` is not a fantastic4 export, or no C compiler / make.
            RuntimeError: the harness does not build.

        Returns ``ok`` False (and the mismatch counts) when any output differs.
        """
        import json

        out = Path(out_dir)
        mpath = out / MANIFEST
        if not mpath.is_file():
            raise FileNotFoundError(f"{str(out)!r} is not a fantastic4 export ({MANIFEST} missing)")
        manifest = json.loads(mpath.read_text())
        g = manifest["golden"]
        x = np.fromfile(out / g["inputs"], np.int8).reshape(-1, g["input_features"])
        golden = np.fromfile(out / g["outputs"], np.int8).reshape(-1, g["output_features"])
        blob = (out / manifest["blob"]).read_bytes()
        model_bytes = (out / manifest["tflite"]).read_bytes()

        py = f4sim.run(blob, x)
        tflm = tflm_reference(model_bytes, x)  # arena measured again: the manifest is not trusted for it
        cc = cc or shutil.which("gcc") or shutil.which("cc")
        if cc is None or shutil.which("make") is None:
            raise FileNotFoundError("simulate needs gcc (or cc) and make on PATH")
        with tempfile.TemporaryDirectory(prefix="f4_sim_") as tmp:
            build = subprocess.run(["make", "-s", "-C", str(out), f"O={tmp}", f"CC={cc}", f"CFLAGS={CFLAGS}",
                                    f"{tmp}/f4_host"], capture_output=True, text=True)
            if build.returncode != 0:
                raise RuntimeError(f"harness build failed:\n{build.stdout}{build.stderr}")
            c_out = Path(tmp) / "c_outputs.bin"
            run = subprocess.run([f"{tmp}/f4_host", g["inputs"], g["outputs"], str(c_out)], cwd=out,
                                 capture_output=True, text=True)
            c = np.fromfile(c_out, np.int8).reshape(-1, g["output_features"]) if c_out.exists() else None
        result = {
            "samples": int(len(x)),
            "compiler": f"{cc} {CFLAGS}",
            "harness_exit_code": run.returncode,
            "harness_output": run.stdout.strip().splitlines()[-1:] if run.stdout else [],
            "python_equals_golden": bool(np.array_equal(py, golden)),
            "python_equals_tflm": bool(np.array_equal(py, tflm)),
            "c_equals_python": bool(c is not None and np.array_equal(c, py)),
            "mismatching_samples": {
                "python_vs_tflm": int(np.any(py != tflm, axis=1).sum()),
                "c_vs_python": int(len(x) if c is None else np.any(c != py, axis=1).sum()),
            },
        }
        result["ok"] = (result["python_equals_golden"] and result["python_equals_tflm"] and result["c_equals_python"]
                        and run.returncode == 0)
        if not result["ok"]:
            log.error("fantastic4 host simulation differs: %s\n%s%s", result, run.stdout[-2000:], run.stderr[-2000:])
        return result
