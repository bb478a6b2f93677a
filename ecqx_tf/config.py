"""Argument validation shared by the public API, the Keras classes and the CLI. Each check names
the argument, the value received and what is accepted."""
from __future__ import annotations

import numbers
from typing import Sequence

__all__ = [
    "BITS_RANGE",
    "GRADIENTS",
    "LAMBDA_REDUCE",
    "LR_SCHEDULES",
    "validate_bits",
    "validate_choice",
    "validate_nonnegative",
    "validate_unit_interval",
    "validate_positive_int",
]

BITS_RANGE = (2, 8)
GRADIENTS = ("ste", "ec2t")
LAMBDA_REDUCE = ("min", "max")
#: Learning-rate schedules of ``quantize_and_train`` / ``ecqx-quantize --lr-schedule``.
LR_SCHEDULES = ("constant", "cosine")


def validate_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise TypeError(f"bits must be an int in {BITS_RANGE[0]}..{BITS_RANGE[1]}, got {bits!r} ({type(bits).__name__})")
    if not BITS_RANGE[0] <= int(bits) <= BITS_RANGE[1]:
        raise ValueError(f"bits must be in {BITS_RANGE[0]}..{BITS_RANGE[1]}, got {bits}")
    return int(bits)


def validate_choice(arg: str, value, accepted: Sequence[str]) -> str:
    if value not in accepted:
        raise ValueError(f"unknown {arg} {value!r}; accepted: {', '.join(accepted)}")
    return value


def validate_nonnegative(arg: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{arg} must be a number >= 0, got {value!r}")
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{arg} must be >= 0, got {value}")
    return float(value)


def validate_unit_interval(arg: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{arg} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{arg} must be in [0, 1], got {value}")
    return float(value)


def validate_positive_int(arg: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{arg} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{arg} must be >= 1, got {value}")
    return int(value)
