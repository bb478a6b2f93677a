"""Tensor arena size: the smallest arena the real TFLM interpreter accepts, found by bisection,
plus a stated margin.

``tflite_micro.runtime.Interpreter.from_bytes(model, arena_size=N)`` allocates every tensor at
construction and raises ``RuntimeError`` when ``N`` is too small, so "N fits" is monotone in N and
the minimum is found exactly (to the byte) in about 20 constructions.

The probes run in a child Python process: with the pinned wheel, a LUT-compressed model
(TFLM_DECODE) can crash the interpreter with a segmentation fault instead of raising when the
arena is too small (measured: a 2,976-byte model crashed at 0, 100 and 2,048 bytes and raised
at 512 and 1,024). A crashed probe counts as "does not fit" and the search resumes in a new
child, so the caller's process is never at risk.

The recommended size is ``round_up(minimum + ARENA_MARGIN, ARENA_ALIGN)``, ``ARENA_MARGIN`` = 1 KiB:

* the host measures the reference kernels; optimized kernels (CMSIS-NN, Xtensa) request their
  own scratch buffers in Prepare (e.g. convolution im2col buffers), usually a few hundred bytes
  for models of this size;
* a target whose ``uint8_t tensor_arena[]`` is not 16-byte aligned loses up to 15 bytes when
  TFLM aligns the arena start;
* the host build is 64-bit: pointer-holding persistent structures are larger there than on a
  32-bit MCU, so the host minimum already over-estimates that part (the margin is not for it).

Check on the device with ``interpreter.arena_used_bytes()`` after ``AllocateTensors()``; a
model much larger than these tests may need a larger margin with optimized kernels.
"""
from __future__ import annotations

import subprocess
import sys
from typing import Optional, Tuple

__all__ = ["ARENA_MARGIN", "ARENA_ALIGN", "fits", "minimum_arena", "recommended_arena", "arena_sizes"]

ARENA_MARGIN = 1024
ARENA_ALIGN = 16
_MAX_ARENA = 256 * 1024 * 1024
_START = 4096

# The child: reads the model on stdin, prints "probe N" before and "ok N"/"fail N" after each
# construction, bisects on (fail_lo, ok_hi] and prints "min N" (or "toolarge").
_WORKER = r"""
import sys
from tflite_micro import runtime
data = sys.stdin.buffer.read()
lo, hi, cap, one = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
def fits(n):
    print("probe", n, flush=True)
    try:
        runtime.Interpreter.from_bytes(data, arena_size=n)
        ok = True
    except RuntimeError:
        ok = False
    print("ok" if ok else "fail", n, flush=True)
    return ok
if one:
    fits(hi)
    sys.exit(0)
while not fits(hi):
    lo, hi = hi, hi * 2
    if hi > cap:
        print("toolarge", flush=True)
        sys.exit(0)
while hi - lo > 1:
    mid = (lo + hi) // 2
    if fits(mid):
        hi = mid
    else:
        lo = mid
print("min", hi, flush=True)
"""


def _run_worker(model_bytes: bytes, lo: int, hi: int, one: bool):
    """Returns (events, finished_line): events = [(n, ok)], a crashed probe reported as (n, False)."""
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, str(lo), str(hi), str(_MAX_ARENA), "1" if one else "0"],
        input=bytes(model_bytes), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    events, pending, final = [], None, None
    for line in proc.stdout.decode("ascii", "replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "probe":
            pending = int(parts[1])
        elif parts[0] in ("ok", "fail"):
            events.append((int(parts[1]), parts[0] == "ok"))
            pending = None
        elif parts[0] in ("min", "toolarge"):
            final = line
    if pending is not None:  # the interpreter crashed while constructing: treat as "does not fit"
        events.append((pending, False))
    elif final is None and proc.returncode != 0 and not events:
        raise RuntimeError(f"the arena probe process failed to start (exit code {proc.returncode}); "
                           "is tflite-micro installed?")
    return events, final


def fits(model_bytes: bytes, arena_size: int) -> bool:
    """True when the TFLM interpreter can allocate ``model_bytes`` in ``arena_size`` bytes
    (probed in a child process; a crash counts as False)."""
    events, _ = _run_worker(model_bytes, 0, int(arena_size), one=True)
    return bool(events) and events[-1][1]


def minimum_arena(model_bytes: bytes) -> int:
    """The smallest arena (bytes) in which the model allocates.

    Raises:
        ValueError: the model does not allocate even in 256 MiB (unsupported op or corrupt).
    """
    lo, hi = 0, _START  # lo: largest size known not to fit (0 never fits); hi: candidate
    known_ok: Optional[int] = None
    for _ in range(64):  # each round ends with the answer or one crashed probe
        events, final = _run_worker(model_bytes, lo, known_ok if known_ok is not None else hi, one=False)
        for n, ok in events:
            if ok:
                known_ok = n if known_ok is None else min(known_ok, n)
            else:
                lo = max(lo, n)
        if final is not None and final.startswith("min"):
            return int(final.split()[1])
        if final == "toolarge":
            break
        if known_ok is not None and known_ok - lo <= 1:
            return known_ok
        if known_ok is None:
            hi = max(hi, lo * 2)
            if hi > _MAX_ARENA:
                break
    raise ValueError(
        "the TFLM interpreter cannot allocate this model in 256 MiB: an operator is not supported by "
        "the tflite_micro runtime or the model is corrupt"
    )


def recommended_arena(minimum: int, margin: int = ARENA_MARGIN, align: int = ARENA_ALIGN) -> int:
    """``round_up(minimum + margin, align)``."""
    if minimum < 0 or margin < 0 or align <= 0:
        raise ValueError(f"minimum, margin must be >= 0 and align > 0, got {minimum}, {margin}, {align}")
    return (minimum + margin + align - 1) // align * align


def arena_sizes(model_bytes: bytes) -> Tuple[int, int]:
    """(minimum, recommended) arena bytes."""
    m = minimum_arena(model_bytes)
    return m, recommended_arena(m)
