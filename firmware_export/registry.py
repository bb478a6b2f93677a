"""Export targets by name. ``ecqx-export --target NAME`` takes its choices from ``TARGETS``.

A target is a class with ``name``, ``help``, ``options`` (a dataclass of its typed options, from
which ``add_arguments(parser)`` builds its CLI options),
``export(request, out_dir) -> dict`` (the summary: what goes into the manifest, plus optionally
``"table"``: ``[[label, value], ...]`` rows that ``ecqx-export`` prints) and optionally
``simulate(out_dir) -> dict`` (a host re-check of a finished export, used by ``ecqx-simulate``;
``{"ok": bool, ...}``; the default raises ``NotImplementedError``). ``out_dir`` is a fresh
temporary folder that the CLI renames into place only when the export succeeds
(``ecqx_tf.io.atomic_output_dir``).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np

from ecqx_tf.registry import Registry

__all__ = ["ExportRequest", "ExportTarget", "TARGETS", "register_target"]


@dataclasses.dataclass
class ExportRequest:
    """Everything a target needs.

    Attributes:
        model: the stripped plain Keras model (kernels equal the centroid values).
        quant: layer name -> ``ecqx_tf.QuantizedKernel`` (empty for a float model).
        name: base of C identifiers and file names (``g_<name>_model_data``).
        representative: float inputs for activation calibration (a few hundred samples).
        x_test, y_test: optional evaluation split (float inputs, int labels) for golden vectors
            and the accuracy report.
        options: target-specific options from the CLI (e.g. ``compress``).
        data_description: what the calibration and evaluation data are (e.g. ``{"calibration":
            "calib.npy, 256 samples", "source": "--calib-data"}``); targets copy it into their
            report as ``data`` so that an export says which data calibrated it. ``None``: not given.
    """

    model: Any
    quant: Mapping[str, Any]
    name: str
    representative: np.ndarray
    x_test: Optional[np.ndarray] = None
    y_test: Optional[np.ndarray] = None
    options: Dict[str, Any] = dataclasses.field(default_factory=dict)
    data_description: Optional[Dict[str, Any]] = None

    @classmethod
    def from_result(cls, result: Any, name: str, representative: np.ndarray, x_test: Optional[np.ndarray] = None,
                    y_test: Optional[np.ndarray] = None, **options: Any) -> "ExportRequest":
        """The request for a compressed model: ``result`` is an
        ``ecqx_tf.methods.CompressionResult`` (its ``model`` and ``quant``); ``options`` are the
        target's options."""
        return cls(model=result.model, quant=dict(result.quant), name=name, representative=representative,
                   x_test=x_test, y_test=y_test, options=dict(options))


class ExportTarget:
    """Base class of the export targets (see the module docstring). ``options`` is the target's
    options dataclass (fields declared with ``ecqx_tf.fields.param``): ``ecqx-export --target
    NAME`` offers them as options and :func:`firmware_export.export` checks them."""

    name: str = ""
    help: str = ""
    options: Optional[type] = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this target's options (the fields of :attr:`options`) to the ``ecqx-export`` parser."""
        if self.options is not None:
            from ecqx_tf.fields import add_field_arguments

            add_field_arguments(parser, self.options)

    def make_options(self, options: Mapping[str, Any]) -> Any:
        """The :attr:`options` instance of ``options`` (a mapping of field names), checked.

        Raises:
            ValueError: a name that is not an option of this target (lists the accepted ones), or a
                value outside the accepted ones; ``TypeError``: a value of the wrong type.
        """
        cls = self.options
        accepted = [f.name for f in dataclasses.fields(cls)] if cls is not None else []
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"export target {self.name!r}: unknown option(s) {', '.join(unknown)}; accepted: "
                             f"{', '.join(accepted) or 'none'}")
        return cls(**options) if cls is not None else None

    def export(self, request: ExportRequest, out_dir: Path) -> Dict[str, Any]:
        raise NotImplementedError

    def simulate(self, out_dir: Path) -> Dict[str, Any]:
        """Re-check a finished export folder on the host (``ecqx-simulate DIR`` dispatches here by
        the ``target`` of ``DIR/manifest.json``). Returns a dict with at least ``ok`` (bool).

        Raises:
            NotImplementedError: the target has no host simulation (the default).
        """
        raise NotImplementedError(f"export target {self.name!r} has no simulate()")


TARGETS: Registry[type] = Registry("export target")
register_target = TARGETS.register
