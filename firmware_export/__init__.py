"""Deployment: everything after ``ecqx_tf.strip()``: the TFLite Micro and FantastIC4 exporters,
their simulators and host checks.

The public API (importing the package stays light: the targets load on first use)::

    from firmware_export import ExportRequest, TARGETS, export, simulate

* :class:`ExportRequest` - the stripped model, its ``QuantizedKernel`` per layer, the name, the
  calibration inputs and the evaluation split;
* :data:`TARGETS` - the export targets by name (``"tflm"``, ``"fantastic4"``), each with its typed
  options (``TARGETS.get(name).options``: ``TFLMOptions``, ``FantastIC4Options``);
* :func:`export` / :func:`simulate` - export a request with a target into a folder, and re-run the
  host check of a finished export.
"""
from __future__ import annotations

from importlib import import_module as _import_module
from typing import Any as _Any

from firmware_export.registry import ExportRequest, ExportTarget, register_target

_LAZY = {
    "TARGETS": "firmware_export.targets",
    "export": "firmware_export.api",
    "simulate": "firmware_export.api",
    "get_target": "firmware_export.api",
    "TFLMOptions": "firmware_export.tflm.target",
    "FantastIC4Options": "firmware_export.fantastic4.target",
}

__all__ = ["ExportRequest", "ExportTarget", "register_target", *sorted(_LAZY)]


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'firmware_export' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
