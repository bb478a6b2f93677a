"""The export API in two calls: :func:`export` and :func:`simulate`.

    from firmware_export import ExportRequest, export, simulate
    request = ExportRequest(model=ecqx_tf.strip(qmodel), quant=ecqx_tf.quantization_info(qmodel),
                            name="mnist", representative=x_train[:256], x_test=x_test, y_test=y_test)
    summary = export(request, "tflm", "out/tflm", compress=True)
    assert simulate("tflm", "out/tflm")["ok"]

The targets and their typed options are in :data:`firmware_export.TARGETS`
(``TARGETS.get("tflm").options`` is the dataclass ``TFLMOptions``). ``ecqx-export`` does the same
with a data set, an atomic output folder and a manifest around it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Union

from firmware_export.registry import ExportRequest, ExportTarget

__all__ = ["export", "simulate", "get_target"]

PathLike = Union[str, Path]


def get_target(name: str) -> ExportTarget:
    """A new instance of the export target ``name``.

    Raises:
        ValueError: no such target (the message lists the registered ones).
    """
    from firmware_export.targets import TARGETS

    return TARGETS.get(name)()


def export(request: ExportRequest, target: str, out_dir: PathLike, **options: Any) -> Dict[str, Any]:
    """Export ``request`` with the target named ``target`` into the folder ``out_dir`` and return
    the target's summary (what ``ecqx-export`` writes into the manifest; ``"ok"`` is the host
    check's verdict where the target has one).

    ``options`` (keyword arguments, or ``request.options``; the keywords win) are the target's
    typed options, checked before any work: ``TFLMOptions`` for ``"tflm"`` (``compress``,
    ``int8_weights``, ``drop_softmax``, ``golden_header``, ``max_eval``), ``FantastIC4Options``
    for ``"fantastic4"`` (``f4_layout``, ``f4_objective``, ``tflite_bytes``).

    Raises:
        ValueError: unknown target or option, an option value outside the accepted ones, or what
            the target refuses (e.g. an unsupported layer).
        TypeError: an option of the wrong type, or ``request`` is not an ``ExportRequest``.
    """
    if not isinstance(request, ExportRequest):
        raise TypeError(f"request must be a firmware_export.ExportRequest, got {type(request).__name__}")
    t = get_target(target)
    opts = t.make_options({**dict(request.options or {}), **options})
    values = {} if opts is None else {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)}
    request = dataclasses.replace(request, options=values)
    return t.export(request, Path(out_dir))


def simulate(target: str, out_dir: PathLike) -> Dict[str, Any]:
    """Re-check the finished export in ``out_dir`` on the host with the target named ``target``
    (``{"ok": bool, ...}``; what ``ecqx-simulate`` runs after checking the manifest).

    Raises:
        ValueError: unknown target; NotImplementedError: the target has no host check.
    """
    return get_target(target).simulate(Path(out_dir))
