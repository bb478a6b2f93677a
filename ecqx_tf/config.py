"""Argument validation shared by the public API, the Keras classes and the command lines. Each
check names the argument, the value received and what is accepted.

The command lines check every numeric flag while parsing (before TensorFlow is imported), with
``argparse`` types built on the same validators: :func:`arg_int` and :func:`arg_float`, e.g.
``ap.add_argument("--batch-size", type=arg_int(low=1))`` gives
``ecqx-quantize: error: argument --batch-size: must be an integer >= 1, got '0'``.
"""
from __future__ import annotations

import argparse
import math
import numbers
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence

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
    "validate_int_range",
    "validate_float_range",
    "range_text",
    "arg_int",
    "arg_float",
    "QUANT_METHODS",
    "SEED_MAX",
    "ECQ_DEFAULTS",
]

BITS_RANGE = (2, 8)
GRADIENTS = ("ste", "ec2t")
LAMBDA_REDUCE = ("min", "max")
#: Learning-rate schedules of ``quantize_and_train`` / ``ecqx-quantize --lr-schedule``.
LR_SCHEDULES = ("constant", "cosine")
#: Quantization methods of ``ecqx_tf.quantize`` (``ecqx_tf.keras.quantize_config.METHODS`` is this).
QUANT_METHODS = ("ecq", "ecqx")
#: Seeds are passed to NumPy and TensorFlow, which take 0 .. 2^32 - 1.
SEED_MAX = 2**32 - 1

#: The defaults of ECQ/ECQx training, defined once. ``ecqx_tf.quantize``, ``ECQQuantizeConfig``,
#: ``ecqx_tf.keras.finetune.quantize_and_train``, the ``ecq``/``ecqx`` compression methods,
#: ``ecqx-quantize`` and ``ecqx-compress ecq|ecqx`` all read them. Where the authors (Becking et
#: al., ECQx, and their published code) state a value it is theirs: ``Lambda`` 0.05, ``p`` 0.1,
#: Adam with a constant learning rate of 1e-3, the assignment refreshed after every optimizer step.
#: ``lambda_reduce="min"`` is the formula of the thesis (their code takes the max), ``gradient="ste"``
#: the plain straight-through estimator (EC2T's ``|w_c| * g`` is the option), ``grid="symmetric"``
#: the grid that exports exactly (``"paper"``: their 2^b levels). ``ecqx-demo`` deliberately uses
#: its own, stronger setting (Lambda 0.3, 10 epochs; ``pipeline.demo.DEFAULTS``).
ECQ_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "bits": 4,
    "method": "ecqx",
    "grid": "symmetric",
    "Lambda": 0.05,
    "p": 0.1,
    "gradient": "ste",
    "lambda_reduce": "min",
    "epochs": 3,
    "batch_size": 64,
    "lr": 1e-3,
    "lr_schedule": "constant",
    "refresh_every": 1,
    "relevance_samples": 1024,
    "seed": 0,
})


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


def range_text(kind: str, low=None, high=None, low_open: bool = False, high_open: bool = False) -> str:
    """``"an integer >= 1"``, ``"a number in [0, 1)"``, ... (``kind``: ``"integer"`` or ``"number"``)."""
    art = "an" if kind[0] in "aeiou" else "a"
    if low is not None and high is not None:
        if kind == "integer" and not low_open and not high_open:
            return f"{art} {kind} in {low}..{high}"
        return f"{art} {kind} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{art} {kind} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{art} {kind} {'<' if high_open else '<='} {high}"
    return f"{art} {kind}"


def validate_int_range(arg: str, value, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """An int in ``low..high`` (either bound may be None)."""
    what = range_text("integer", low, high)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{arg} must be {what}, got {value!r} ({type(value).__name__})")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{arg} must be {what}, got {value}")
    return int(value)


def validate_float_range(arg: str, value, low: Optional[float] = None, high: Optional[float] = None,
                         low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number in the given range (NaN and +-inf are always refused)."""
    what = range_text("finite number" if low is None or high is None else "number", low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{arg} must be {what}, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{arg} must be {what}, got {value}")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{arg} must be {what}, got {value}")
    if high is not None and (v >= high if high_open else v > high):
        raise ValueError(f"{arg} must be {what}, got {value}")
    return v


def _arg_type(parse: Callable[[str], object], check: Callable[[object], object], what: str,
              name: str) -> Callable[[str], object]:
    def convert(text: str):
        try:
            return check(parse(text))
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None

    convert.__name__ = name  # argparse names the type in some messages
    return convert


def arg_int(low: Optional[int] = None, high: Optional[int] = None) -> Callable[[str], int]:
    """An ``argparse`` type: an integer in ``low..high``."""
    return _arg_type(lambda t: int(t, 10), lambda v: validate_int_range("value", v, low, high),
                     range_text("integer", low, high), "integer")


def arg_float(low: Optional[float] = None, high: Optional[float] = None, low_open: bool = False,
              high_open: bool = False) -> Callable[[str], float]:
    """An ``argparse`` type: a finite number in the range (NaN and +-inf refused)."""
    what = range_text("finite number" if low is None or high is None else "number", low, high, low_open, high_open)
    return _arg_type(float, lambda v: validate_float_range("value", v, low, high, low_open, high_open), what,
                     "number")
