"""Typed parameters as dataclass fields: one declaration gives the default, the help text, the
accepted values and range, the check of a value, and the command-line option.

    @dataclasses.dataclass(frozen=True)
    class Options:
        bits: int = param(4, "bit width", low=2, high=8)
        layout: str = param("auto", "weight layout", choices=("auto", "dense"))

        def __post_init__(self):
            validate_fields(self, "my options")

    add_field_arguments(parser, Options)   # --bits N (2..8), --layout {auto,dense}

The compression methods (``ecqx_tf.methods.api``, ``ecqx-compress METHOD --help``) and the export
targets' options (``firmware_export``, ``ecqx-export --target NAME --help``) are declared this
way, so that a parameter's type, range and help exist once for the Python API and the command
line. Imports nothing heavy (the command lines build their parsers from it before TensorFlow).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import typing
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from .config import arg_float, arg_int

__all__ = ["Choices", "param", "field_choices", "field_type", "validate_field", "validate_fields",
           "add_field_arguments"]

#: Accepted values of a field: ``None`` (any value of its type), a tuple, or a callable returning
#: them (read when needed, e.g. from a registry's light name table).
Choices = Union[None, Tuple[Any, ...], Callable[[], Sequence[Any]]]


def param(default: Any, help: str, choices: Choices = None, low: Optional[float] = None,
          high: Optional[float] = None, high_open: bool = False, cli: bool = True) -> Any:
    """A typed parameter: default, help text, accepted values (a tuple or a callable reading a
    registry), an inclusive range (``high_open``: the upper bound is excluded) and whether
    :func:`add_field_arguments` offers it as an option (``cli=False``: Python API only, e.g.
    bytes, or an option the command line defines itself)."""
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "low": low, "high": high, "high_open": high_open, "cli": cli})


def field_choices(spec: Choices) -> Optional[List[Any]]:
    """The accepted values of a field (``param(choices=...)``: a tuple, or a callable returning
    them, read when needed); ``None``: any value of the field's type."""
    if spec is None:
        return None
    return list(spec() if callable(spec) else spec)


def field_type(hint: Any) -> Tuple[Any, bool]:
    """``(type, optional)`` of a field's type hint (``Optional[int]`` -> ``(int, True)``)."""
    optional = typing.get_origin(hint) is Union and type(None) in typing.get_args(hint)
    base = [a for a in typing.get_args(hint) if a is not type(None)][0] if optional else hint
    return base, optional


def validate_field(f: dataclasses.Field, hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against the field's type (bool, int, float: finite, str), its choices
    and its range; returns it converted (``np.int64`` -> ``int``, ``int`` -> ``float``, ...).

    Raises:
        TypeError: wrong type, naming ``where`` and the value.
        ValueError: not among the choices, or outside the range.
    """
    base, optional = field_type(hint)
    if value is None:
        if optional:
            return None
        raise TypeError(f"{where} must not be None")
    if base is bool:
        if not isinstance(value, bool) and type(value).__name__ != "bool_":
            raise TypeError(f"{where} must be a bool, got {value!r}")
        value = bool(value)
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{where} must be an int, got {value!r} ({type(value).__name__})")
        value = int(value)
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{where} must be a number, got {value!r} ({type(value).__name__})")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{where} must be finite, got {value!r}")
    elif base is str:
        if not isinstance(value, str):
            raise TypeError(f"{where} must be a str, got {value!r}")
    elif base is bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{where} must be bytes, got {type(value).__name__}")
        value = bytes(value)
    md = f.metadata
    accepted = field_choices(md.get("choices"))
    if accepted is not None and value not in accepted:
        raise ValueError(f"{where}: unknown value {value!r}; accepted: {', '.join(map(str, accepted))}")
    lo, hi = md.get("low"), md.get("high")
    if lo is not None and value < lo or hi is not None and (value >= hi if md.get("high_open") else value > hi):
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{')' if md.get('high_open') else ']'}"
        raise ValueError(f"{where} must lie in {rng}, got {value!r}")
    return value


def validate_fields(obj: Any, what: str) -> None:
    """Check and convert every field of the (frozen) dataclass instance ``obj`` in place
    (``__post_init__``); errors read ``"<what>: parameter <name> ..."``."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = validate_field(f, hints[f.name], getattr(obj, f.name), f"{what}: parameter {f.name}")
        object.__setattr__(obj, f.name, value)


def _arg_type(t: Any, metadata: typing.Mapping[str, Any]) -> Any:
    """The field's type for argparse, with its range checked while parsing; floats finite."""
    lo, hi, hi_open = metadata.get("low"), metadata.get("high"), bool(metadata.get("high_open"))
    if t is int:
        return arg_int(None if lo is None else int(lo), None if hi is None else (int(hi) - 1 if hi_open else int(hi)))
    if t is float:
        return arg_float(lo, hi, high_open=hi_open)
    return t


def add_field_arguments(parser: Any, cls: type) -> None:
    """One ``--name`` option per field of the dataclass ``cls`` (``_`` -> ``-``) with the field's
    default, help, choices and range (checked while parsing); bools become ``--x/--no-x``.
    ``parser`` is an ``ArgumentParser`` or an argument group."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        t, _ = field_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        helptext = f"{f.metadata.get('help', '')} (default {f.default})"
        if t is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=helptext)
            continue
        choices = field_choices(f.metadata.get("choices"))
        parser.add_argument(flag, dest=f.name, type=_arg_type(t, f.metadata), default=f.default, choices=choices,
                            help=helptext, metavar=None if choices else t.__name__.upper())
