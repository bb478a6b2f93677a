"""Instructions per inference under valgrind callgrind: TFLite Micro's interpreter (the reference
kernels of the ``tflite_micro`` wheel) and the FantastIC4 C99 runtime. Shared by
``bench/f4_callgrind.py`` (one model, every layout, several methods) and ``bench/compare.py`` (one
count per row of the comparison).

Method (both runtimes): callgrind counts the instructions (``Ir``) executed inside one function
only (``--toggle-collect``): ``tflite::micro::MicroInterpreter::Invoke()`` for TFLM, run from a
small Python driver, and ``f4_invoke`` for the C runtime, run from its host harness built with
``gcc -std=c99 -O2``. The count over N samples is divided by N. Set-up (interpreter creation,
``f4_prepare``) and the harness around the call are excluded. Counts are deterministic for a
given binary, model and input.

This is a benchmark helper, not part of the installed package (``bench/`` is a folder of
scripts).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RUNTIME = REPO / "firmware_export" / "fantastic4" / "runtime"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-g"]
TFLM_INVOKE = "tflite::micro::MicroInterpreter::Invoke()"
F4_INVOKE = "f4_invoke"

#: Runs a .tflite on the samples of a raw file with the TFLM interpreter.
#: argv: model, inputs (raw, the model's input dtype), arena bytes, [outputs file].
TFLM_DRIVER = r"""
import sys
import numpy as np
from tflite_micro import runtime
model, inputs, arena = open(sys.argv[1], "rb").read(), sys.argv[2], int(sys.argv[3])
it = runtime.Interpreter.from_bytes(model, arena_size=arena)
d = it.get_input_details(0)
shape = tuple(int(v) for v in d["shape"])
x = np.fromfile(inputs, np.dtype(d["dtype"])).reshape((-1,) + shape[1:])
out = []
for row in x:
    it.set_input(row.reshape(shape), 0)
    it.invoke()
    out.append(np.array(it.get_output(0)).reshape(-1))
if len(sys.argv) > 4:
    np.stack(out).tofile(sys.argv[4])
"""


def available() -> Optional[str]:
    """None when callgrind can run here, else the reason it cannot."""
    for tool in ("valgrind", "gcc"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH"
    return None


def callgrind(cmd: Sequence, out_file: Path, toggle: Optional[str] = None, cwd=None) -> int:
    """Instructions (Ir) counted by callgrind for ``cmd`` (only inside ``toggle`` if given)."""
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
    if toggle:
        vg.append(f"--toggle-collect={toggle}")
    r = subprocess.run(vg + [str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError(f"callgrind failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stderr[-3000:]}")
    text = Path(out_file).read_text()
    m = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
    if m is None:
        raise RuntimeError(f"no instruction total in {out_file}")
    return int(m.group(1))


def build_f4_host(out: Path) -> Path:
    """Compile the FantastIC4 host harness (runtime/f4_host.c) to ``out``."""
    subprocess.run(["gcc", *CFLAGS, f"-I{RUNTIME}", str(RUNTIME / "f4_runtime.c"), str(RUNTIME / "f4_host.c"),
                    "-o", str(out)], check=True, capture_output=True, text=True)
    return out


def _tflm_files(model_bytes: bytes, x: np.ndarray, tmp: Path):
    tmp = Path(tmp)
    (tmp / "model.tflite").write_bytes(bytes(model_bytes))
    np.ascontiguousarray(x).tofile(tmp / "inputs.bin")
    (tmp / "driver.py").write_text(TFLM_DRIVER)
    return tmp / "model.tflite", tmp / "inputs.bin", tmp / "driver.py"


def tflm_instructions(model_bytes: bytes, x: np.ndarray, arena: int, tmp: Path) -> float:
    """Instructions per ``MicroInterpreter::Invoke()`` over the samples ``x`` (already in the
    model's input dtype and shape without the batch axis, one sample per row); files go to the
    folder ``tmp``."""
    model, inputs, driver = _tflm_files(model_bytes, x, tmp)
    ir = callgrind([sys.executable, driver, model, inputs, arena], Path(tmp) / "cg_tflm.out", toggle=TFLM_INVOKE)
    return ir / len(x)


def _f4_files(blob: bytes, x: np.ndarray, tmp: Path):
    tmp = Path(tmp)
    (tmp / "blob.bin").write_bytes(bytes(blob))
    np.ascontiguousarray(x, np.int8).tofile(tmp / "in.bin")
    return tmp / "blob.bin", tmp / "in.bin"


def f4_instructions(blob: bytes, x: np.ndarray, host: Path, tmp: Path) -> float:
    """Instructions per ``f4_invoke`` over the int8 samples ``x`` (n x input_features)."""
    blob_file, inputs = _f4_files(blob, x, tmp)
    ir = callgrind([host, "-b", blob_file, inputs, "-"], Path(tmp) / "cg_f4.out", toggle=F4_INVOKE)
    return ir / len(x)


def f4_outputs(blob: bytes, x: np.ndarray, host: Path, tmp: Path) -> np.ndarray:
    """Outputs of the C runtime (outside valgrind) on the int8 samples ``x``."""
    blob_file, inputs = _f4_files(blob, x, tmp)
    subprocess.run([host, "-b", blob_file, inputs, "-", Path(tmp) / "out.bin"], check=True, capture_output=True,
                   text=True)
    return np.fromfile(Path(tmp) / "out.bin", np.int8).reshape(len(x), -1)
