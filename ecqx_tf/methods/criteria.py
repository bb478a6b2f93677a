r"""Importance criteria for the compression methods, by name (:data:`CRITERIA`): the relevance of
every output unit / filter of a kernel layer and of every kernel weight, from LRP or DeepLIFT, or
the weight magnitude as the non-explanation baseline. Kernels are named by their kernel key (the
layer name; ``"<layer>/<attr>"`` for the two kernels of a SeparableConv2D), as everywhere else.

Unit (neuron / filter) score of unit :math:`j` of a layer, over reference samples :math:`n`
(Yeom et al. 2021, "Pruning by explaining", eq. for :math:`R_c`; spatial positions summed for a
filter):

.. math::

    s_j = \sum_n \sum_{pos} R_j(x_n) \quad (\texttt{aggregate="sum"}, default), \qquad
    s_j = \sum_n \Big|\sum_{pos} R_j(x_n)\Big| \quad (\texttt{aggregate="abs"})

with :math:`R_j` the LRP relevance at the unit's output (:func:`ecqx_tf.relevance.layer_relevance`,
true-class logit) or the DeepLIFT contribution :math:`C_j = \Delta z_j m_{\Delta z_j \Delta t}`
(:func:`ecqx_tf.relevance.deeplift_layer_relevance`). ``"magnitude"`` is the L1 norm of the unit's
incoming kernel slice (Li et al. 2017).

Weight score: :math:`|R_{ij}|` with :math:`R_{ij}` the weight relevance summed over the samples
(:func:`ecqx_tf.relevance.weight_relevance` / :func:`~ecqx_tf.relevance.deeplift_weight_relevance`),
or :math:`|w_{ij}|` for ``"magnitude"``. :func:`relevance_gradient` returns the relevance per unit
weight :math:`g_{ij} = R_{ij} / w_{ij}` (0 where :math:`w_{ij} = 0`), the first-order change of a
connection's relevance per change of its weight.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from .. import layers as _layers
from .. import names
from ..registry import Registry

__all__ = [
    "CRITERIA",
    "Criterion",
    "AGGREGATES",
    "unit_scores",
    "weight_scores",
    "relevance_gradient",
    "kernel_layer_names",
    "kernel_keys",
    "kernel_of",
]

AGGREGATES = ("sum", "abs")


@dataclasses.dataclass(frozen=True)
class Criterion:
    """A named criterion: ``units(model, x, y, layers, **options)`` -> per-sample unit relevance
    ``{layer: (N, ..., units)}`` (None for data-free criteria) and ``weights(model, x, y, layers,
    **options)`` -> kernel-shaped signed weight relevance."""

    name: str
    needs_data: bool
    units: Callable[..., Dict[str, np.ndarray]]
    weights: Callable[..., Dict[str, np.ndarray]]


#: name -> Criterion
CRITERIA: Registry[Criterion] = Registry("importance criterion", known=names.CRITERIA, known_in="ecqx_tf/names.py")


def kernel_layer_names(model: tf.keras.Model) -> list:
    """Names of the kernel layers (layer registry: Dense, Conv1D, Conv2D, DepthwiseConv2D,
    SeparableConv2D) of ``model`` in layer order."""
    return [l.name for l in model.layers if _layers.kernel_keys(l)]


def kernel_keys(model: tf.keras.Model) -> list:
    """Kernel keys of ``model`` in layer order (one per quantizable kernel)."""
    return [k for k, _, _ in _layers.model_kernels(model)]


def kernel_of(model: tf.keras.Model, key: str) -> np.ndarray:
    """The float kernel named by a kernel key."""
    for k, layer, attr in _layers.model_kernels(model):
        if k == key:
            return getattr(layer, attr).numpy()
    raise ValueError(f"{key!r} is not a kernel of model {model.name!r}; kernels: {kernel_keys(model)}")


def _lrp_units(model, x, y, layers, composite="epsilon_plus_flat", batch_size=64, **_):
    from ..relevance import layer_relevance

    return layer_relevance(model, x, y, layers=layers, composite=composite, batch_size=batch_size).layers


def _lrp_weights(model, x, y, layers, composite="epsilon_plus_flat", batch_size=64, **_):
    from ..relevance import weight_relevance

    return weight_relevance(model, x, y, layers=layers, composite=composite, batch_size=batch_size)


def _dl_units(model, x, y, layers, reference="zeros", batch_size=64, deeplift_composite="deeplift_rescale",
              reference_data=None, **_):
    from ..relevance import deeplift_layer_relevance

    return deeplift_layer_relevance(model, x, y, reference=reference, layers=layers, composite=deeplift_composite,
                                    batch_size=batch_size, reference_data=reference_data).layers


def _dl_weights(model, x, y, layers, reference="zeros", batch_size=64, deeplift_composite="deeplift_rescale",
                reference_data=None, **_):
    from ..relevance import deeplift_weight_relevance

    return deeplift_weight_relevance(model, x, y, reference=reference, layers=layers, composite=deeplift_composite,
                                     batch_size=batch_size, reference_data=reference_data)


def _mag_units(model, x, y, layers, **_):
    out = {}
    for n in layers:
        k = np.abs(kernel_of(model, n))
        channels = k.shape[-2] * k.shape[-1] if _is_depthwise(model, n) else k.shape[-1]
        out[n] = k.reshape(-1, channels).sum(axis=0)[None]  # one pseudo-sample per output channel
    return out


def _is_depthwise(model, key: str) -> bool:
    return any(k == key and attr == "depthwise_kernel" for k, _, attr in _layers.model_kernels(model))


def _mag_weights(model, x, y, layers, **_):
    return {n: kernel_of(model, n).astype(np.float32) for n in layers}


CRITERIA.register("lrp")(Criterion("lrp", True, _lrp_units, _lrp_weights))
CRITERIA.register("deeplift")(Criterion("deeplift", True, _dl_units, _dl_weights))
CRITERIA.register("magnitude")(Criterion("magnitude", False, _mag_units, _mag_weights))


def _keys(model, layers: Optional[Sequence[str]]) -> list:
    """Kernel keys for ``layers`` (layer names select all their kernels; kernel keys themselves)."""
    keys = kernel_keys(model)
    if layers is None:
        return keys
    if isinstance(layers, str):
        raise TypeError(f"layers must be a sequence of layer names, got the str {layers!r}")
    out = []
    for n in layers:
        sel = [n] if n in keys else [k for k, l, _ in _layers.model_kernels(model) if l.name == n]
        if not sel:
            raise ValueError(f"layer {n!r} is not a kernel layer of model {model.name!r}; accepted: {keys}")
        out.extend(k for k in sel if k not in out)
    return out


def _unit_keys(model, layers: Optional[Sequence[str]]) -> list:
    """``(layer name, output kernel key)`` of the requested layers (default all kernel layers)."""
    names = kernel_layer_names(model) if layers is None else list(layers)
    if isinstance(layers, str):
        raise TypeError(f"layers must be a sequence of layer names, got the str {layers!r}")
    out = []
    for n in names:
        if n not in kernel_layer_names(model):
            raise ValueError(f"layer {n!r} is not a kernel layer of model {model.name!r}; "
                             f"accepted: {kernel_layer_names(model)}")
        out.append((n, _layers.output_kernel_key(model.get_layer(n))))
    return out


def unit_scores(
    model: tf.keras.Model,
    x: Optional[np.ndarray] = None,
    y: Optional[np.ndarray] = None,
    criterion: str = "lrp",
    layers: Optional[Sequence[str]] = None,
    aggregate: str = "sum",
    **options: Any,
) -> Dict[str, np.ndarray]:
    """Score of every output unit / filter of a kernel layer: layer name -> float64 ``(units,)``.

    Args:
        model: a plain chain model (see the relevance engine's limits).
        x, y: reference samples and their labels (not needed for ``"magnitude"``).
        criterion: a :data:`CRITERIA` name.
        layers: kernel layer names (default all).
        aggregate: ``"sum"`` (signed sum over samples, as Yeom et al.; default) or ``"abs"`` (sum
            of the absolute per-sample unit relevance).
        options: passed to the criterion (``composite`` for LRP; ``reference``,
            ``reference_data``, ``deeplift_composite`` for DeepLIFT; ``batch_size``).

    Raises:
        ValueError: unknown criterion / aggregate / layer, or missing data for a data criterion.
    """
    crit = CRITERIA.get(criterion)
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; accepted: {', '.join(AGGREGATES)}")
    pairs = _unit_keys(model, layers)
    if crit.needs_data and (x is None or y is None):
        raise ValueError(f"criterion {criterion!r} needs reference data x and labels y")
    per_sample = crit.units(model, x, y, [k for _, k in pairs], **options)
    out = {}
    for n, key in pairs:
        r = np.asarray(per_sample[key], np.float64)
        r = r.reshape(r.shape[0], -1, r.shape[-1]).sum(axis=1)  # sum over positions: (N, units)
        out[n] = (np.abs(r) if aggregate == "abs" else r).sum(axis=0)
    return out


def weight_scores(
    model: tf.keras.Model,
    x: Optional[np.ndarray] = None,
    y: Optional[np.ndarray] = None,
    criterion: str = "lrp",
    layers: Optional[Sequence[str]] = None,
    **options: Any,
) -> Dict[str, np.ndarray]:
    """Non-negative score of every kernel weight (kernel key -> kernel-shaped float64): the absolute
    weight relevance summed over the samples, or ``|w|`` for ``"magnitude"``.

    Raises:
        ValueError: unknown criterion / layer, or missing data for a data criterion.
    """
    crit = CRITERIA.get(criterion)
    names = _keys(model, layers)
    if crit.needs_data and (x is None or y is None):
        raise ValueError(f"criterion {criterion!r} needs reference data x and labels y")
    return {n: np.abs(np.asarray(v, np.float64)) for n, v in crit.weights(model, x, y, names, **options).items()}


def relevance_gradient(
    model: tf.keras.Model,
    x: Optional[np.ndarray] = None,
    y: Optional[np.ndarray] = None,
    criterion: str = "lrp",
    layers: Optional[Sequence[str]] = None,
    **options: Any,
) -> Dict[str, np.ndarray]:
    r""":math:`|g_{ij}| = |R_{ij} / w_{ij}|` (0 where :math:`w_{ij} = 0`), kernel-shaped float64;
    for ``"magnitude"`` all ones (every weight counts the same). Errors as :func:`weight_scores`."""
    crit = CRITERIA.get(criterion)
    names = _keys(model, layers)
    if not crit.needs_data:
        return {n: np.ones(kernel_of(model, n).shape, np.float64) for n in names}
    if x is None or y is None:
        raise ValueError(f"criterion {criterion!r} needs reference data x and labels y")
    r = crit.weights(model, x, y, names, **options)
    out = {}
    for n in names:
        w = kernel_of(model, n).astype(np.float64)
        rv = np.asarray(r[n], np.float64)
        out[n] = np.abs(np.divide(rv, w, out=np.zeros_like(rv), where=w != 0))
    return out
