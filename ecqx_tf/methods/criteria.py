r"""Importance criteria for the compression methods, by name (:data:`CRITERIA`): the relevance of
every Dense unit / Conv2D filter and of every kernel weight, from LRP or DeepLIFT, or the weight
magnitude as the non-explanation baseline.

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
    """Names of the exact Dense/Conv2D layers of ``model`` in layer order."""
    return [l.name for l in model.layers if type(l) in (tf.keras.layers.Dense, tf.keras.layers.Conv2D)]


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
        k = np.abs(model.get_layer(n).kernel.numpy())
        out[n] = k.reshape(-1, k.shape[-1]).sum(axis=0)[None]  # one pseudo-sample
    return out


def _mag_weights(model, x, y, layers, **_):
    return {n: model.get_layer(n).kernel.numpy().astype(np.float32) for n in layers}


CRITERIA.register("lrp")(Criterion("lrp", True, _lrp_units, _lrp_weights))
CRITERIA.register("deeplift")(Criterion("deeplift", True, _dl_units, _dl_weights))
CRITERIA.register("magnitude")(Criterion("magnitude", False, _mag_units, _mag_weights))


def _layers(model, layers: Optional[Sequence[str]]) -> list:
    names = kernel_layer_names(model)
    if layers is None:
        return names
    if isinstance(layers, str):
        raise TypeError(f"layers must be a sequence of layer names, got the str {layers!r}")
    for n in layers:
        if n not in names:
            raise ValueError(f"layer {n!r} is not a Dense/Conv2D layer of model {model.name!r}; accepted: {names}")
    return list(layers)


def unit_scores(
    model: tf.keras.Model,
    x: Optional[np.ndarray] = None,
    y: Optional[np.ndarray] = None,
    criterion: str = "lrp",
    layers: Optional[Sequence[str]] = None,
    aggregate: str = "sum",
    **options: Any,
) -> Dict[str, np.ndarray]:
    """Score of every unit (Dense) / filter (Conv2D): layer name -> float64 ``(units,)``.

    Args:
        model: a plain chain model (see the relevance engine's limits).
        x, y: reference samples and their labels (not needed for ``"magnitude"``).
        criterion: a :data:`CRITERIA` name.
        layers: Dense/Conv2D names (default all).
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
    names = _layers(model, layers)
    if crit.needs_data and (x is None or y is None):
        raise ValueError(f"criterion {criterion!r} needs reference data x and labels y")
    per_sample = crit.units(model, x, y, names, **options)
    out = {}
    for n in names:
        r = np.asarray(per_sample[n], np.float64)
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
    """Non-negative score of every kernel weight (kernel-shaped float64): the absolute weight
    relevance summed over the samples, or ``|w|`` for ``"magnitude"``.

    Raises:
        ValueError: unknown criterion / layer, or missing data for a data criterion.
    """
    crit = CRITERIA.get(criterion)
    names = _layers(model, layers)
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
    names = _layers(model, layers)
    if not crit.needs_data:
        return {n: np.ones(model.get_layer(n).kernel.shape, np.float64) for n in names}
    if x is None or y is None:
        raise ValueError(f"criterion {criterion!r} needs reference data x and labels y")
    r = crit.weights(model, x, y, names, **options)
    out = {}
    for n in names:
        w = model.get_layer(n).kernel.numpy().astype(np.float64)
        rv = np.asarray(r[n], np.float64)
        out[n] = np.abs(np.divide(rv, w, out=np.zeros_like(rv), where=w != 0))
    return out
