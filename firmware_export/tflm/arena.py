"""Tensor arena size: the smallest arena the real TFLM interpreter accepts, found by bisection,
plus a stated margin.

``tflite_micro.runtime.Interpreter.from_bytes(model, arena_size=N)`` allocates every tensor at
construction and raises ``RuntimeError`` when ``N`` is too small, so "N fits" is monotone in N and
the minimum is found exactly (to the byte) in about 20 constructions.

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

import contextlib
import os
import sys
from typing import Iterator, Tuple

__all__ = ["ARENA_MARGIN", "ARENA_ALIGN", "fits", "minimum_arena", "recommended_arena", "arena_sizes"]

ARENA_MARGIN = 1024
ARENA_ALIGN = 16
_MAX_ARENA = 256 * 1024 * 1024


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Silence TFLM's MicroPrintf ("Failed to allocate ...") on file descriptor 2."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # pragma: no cover - no real fd 2
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def fits(model_bytes: bytes, arena_size: int) -> bool:
    """True when the TFLM interpreter can allocate ``model_bytes`` in ``arena_size`` bytes."""
    from tflite_micro import runtime

    with _quiet_fd2():
        try:
            interp = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=int(arena_size))
        except RuntimeError:
            return False
    del interp
    return True


def minimum_arena(model_bytes: bytes) -> int:
    """The smallest arena (bytes) in which the model allocates.

    Raises:
        ValueError: the model does not allocate even in 256 MiB (unsupported op or corrupt).
    """
    hi = 4096
    while not fits(model_bytes, hi):
        hi *= 2
        if hi > _MAX_ARENA:
            raise ValueError(
                "the TFLM interpreter cannot allocate this model in 256 MiB: an operator is not supported by "
                "the tflite_micro runtime or the model is corrupt"
            )
    lo = 0 if hi == 4096 else hi // 2  # lo never fits (0 cannot)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(model_bytes, mid):
            hi = mid
        else:
            lo = mid
    return hi


def recommended_arena(minimum: int, margin: int = ARENA_MARGIN, align: int = ARENA_ALIGN) -> int:
    """``round_up(minimum + margin, align)``."""
    if minimum < 0 or margin < 0 or align <= 0:
        raise ValueError(f"minimum, margin must be >= 0 and align > 0, got {minimum}, {margin}, {align}")
    return (minimum + margin + align - 1) // align * align


def arena_sizes(model_bytes: bytes) -> Tuple[int, int]:
    """(minimum, recommended) arena bytes."""
    m = minimum_arena(model_bytes)
    return m, recommended_arena(m)
