r"""Weight sharing: a non-uniform codebook per layer from k-means weighted by relevance, trained with
the ECQ quantization-aware machinery and exported exactly.

1. **Clustering** (:func:`weighted_kmeans`): 1-D Lloyd iterations on a layer's kernel with one
   centroid fixed at exactly 0 and ``n_clusters - 1`` free centroids,

   .. math::

       c_k \leftarrow \frac{\sum_{i \in S_k} \rho_i w_i}{\sum_{i \in S_k} \rho_i}, \qquad
       S_k = \{ i : k = \arg\min_{k'} (w_i - c_{k'})^2 \}

   with :math:`\rho_i = |R_i| / \overline{|R|} + 10^{-3}` (``weighting="relevance"``: relevance
   from LRP or DeepLIFT, :func:`ecqx_tf.methods.criteria.weight_scores`) or :math:`\rho_i = 1`
   (``"uniform"``: plain k-means, as tfmot's weight clustering; Han et al. 2016). Weighting by
   relevance pulls the centroids towards the weights that carry the decision (the relevance-weighted
   objective :math:`\sum_i \rho_i (w_i - c_{k(i)})^2`; in the spirit of Sabih et al. 2020, who use
   DeepLIFT to steer quantization). Initialization: the free centroids at the
   :math:`\rho`-weighted quantiles of the non-zero weights.
2. **Integer codebook** (:func:`int8_codebook`): TFLite stores a tensor as int8 integers times
   ONE per-tensor scale (per channel for convolutions), so an arbitrary real codebook is not
   exactly representable. The codebook is therefore quantized first: scale
   :math:`s = \max_k |c_k| / 127`, levels :math:`q_k = \mathrm{round}(c_k / s)` (a level that
   collides with a neighbour moves to the next free integer), centroids :math:`q_k s` in float32.
   The maximum change of a centroid is :math:`s/2` (plus the collision moves, reported).
3. **Training**: every kernel layer (layer registry) becomes an ECQ layer (``ECQQuantizeConfig``, ``Lambda=0``
   so the assignment is the nearest codebook entry) whose centroid variable holds the codebook
   instead of a uniform grid; ``ECQxCallback`` re-assigns after every step, and
   :class:`ReclusterCallback` re-runs the clustering from the current float weights before every
   epoch but the first (so the codebook follows the weights, as tfmot's trainable centroids do).
4. **Export**: :func:`sharing_info` gives one ``QuantizedKernel`` per layer with ``bits=8``,
   ``grid="paper"``, ``levels`` = the int8 codebook and ``step`` = the scale: the TFLM exporter stores
   exactly these integers (INT8; ``firmware_export.tflm.shared.lut_compress_shared`` then LUT-compresses them with
   ``ceil(log2 K)``-bit indices and per-tensor/per-channel value tables), and the FantastIC4 target
   accepts it for MLPs when ``n_clusters <= 16`` (its codebook is up to 16 int8 values with 0).
   ``ecqx_tf.quantization_info`` on such a model reports the config's ``bits`` (the index width),
   not a valid grid: use :func:`sharing_info`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from ..assign import nearest_assign
from ..quantized import QuantizedKernel
from .criteria import kernel_keys, kernel_of, weight_scores

__all__ = [
    "ALLOWED_CLUSTERS",
    "WEIGHTINGS",
    "weighted_kmeans",
    "int8_codebook",
    "Codebook",
    "cluster_layers",
    "quantize_shared",
    "ReclusterCallback",
    "sharing_info",
    "index_bits",
]

log = logging.getLogger(__name__)

WEIGHTINGS = ("relevance", "uniform")
#: Codebook sizes: the ECQ quantizer's centroid variable has 2^b (grid "paper") or 2^b - 1 (grid
#: "symmetric") entries; up to 128 so that the LUT index fits TFLM's 7-bit limit.
ALLOWED_CLUSTERS = tuple(sorted({2**b for b in range(2, 8)} | {2**b - 1 for b in range(2, 8)}))
_FLOOR = 1e-3


def _config_for(n_clusters: int) -> Tuple[int, str]:
    for b in range(2, 8):
        if n_clusters == 2**b:
            return b, "paper"
        if n_clusters == 2**b - 1:
            return b, "symmetric"
    raise ValueError(f"n_clusters must be one of {list(ALLOWED_CLUSTERS)}, got {n_clusters!r}")


def index_bits(n_clusters: int) -> int:
    """Bits of a codebook index: ``ceil(log2(n_clusters))``."""
    return int(math.ceil(math.log2(n_clusters)))


def weighted_kmeans(
    w: np.ndarray,
    n_clusters: int,
    sample_weight: Optional[np.ndarray] = None,
    iters: int = 50,
    init: Optional[np.ndarray] = None,
) -> np.ndarray:
    r"""1-D k-means with one centroid fixed at 0: returns ``n_clusters`` sorted, distinct float64
    centroids (exactly one of them 0).

    Args:
        w: the weights (any shape).
        n_clusters: number of centroids including 0, >= 2.
        sample_weight: :math:`\rho_i >= 0` per weight (default 1).
        iters: maximum Lloyd iterations (stops early when the assignment no longer changes).
        init: optional starting centroids (``n_clusters`` values containing 0), e.g. the previous
            codebook.

    Raises:
        ValueError: fewer than 2 clusters, more clusters than distinct weights + 1, non-finite or
            negative sample weights, shapes that differ, a bad ``init``.
    """
    x = np.asarray(w, np.float64).ravel()
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 2:
        raise ValueError(f"n_clusters must be an int >= 2, got {n_clusters!r}")
    if not np.all(np.isfinite(x)) or x.size == 0:
        raise ValueError("weights must be a non-empty finite array")
    rho = np.ones_like(x) if sample_weight is None else np.asarray(sample_weight, np.float64).ravel()
    if rho.shape != x.shape:
        raise ValueError(f"sample_weight has {rho.size} entries, the weights {x.size}")
    if not np.all(np.isfinite(rho)) or np.any(rho < 0):
        raise ValueError("sample_weight must be finite and >= 0")
    nz = x[x != 0]
    k_free = int(n_clusters) - 1
    if np.unique(nz).size < k_free:
        raise ValueError(f"n_clusters={n_clusters} needs at least {k_free} distinct non-zero weights, got {np.unique(nz).size}")
    if init is not None:
        c = np.sort(np.asarray(init, np.float64).ravel())
        if c.size != n_clusters or np.sum(c == 0) != 1 or np.unique(c).size != c.size:
            raise ValueError(f"init must hold {n_clusters} distinct values including exactly one 0, got {c.tolist()}")
        free = c[c != 0]
    else:
        rn = rho[x != 0]
        order = np.argsort(nz, kind="stable")
        cw = np.cumsum(rn[order])
        qs = (np.arange(k_free) + 0.5) / k_free * cw[-1]
        free = nz[order][np.minimum(np.searchsorted(cw, qs), nz.size - 1)]
        free = np.unique(free)
        if free.size < k_free:  # ties in the quantiles: fill with unweighted quantiles
            extra = np.quantile(nz, (np.arange(k_free) + 0.5) / k_free)
            free = np.unique(np.concatenate([free, extra]))[:k_free]
            if free.size < k_free:
                free = np.unique(nz)[np.linspace(0, np.unique(nz).size - 1, k_free).astype(int)]
    assign = None
    for _ in range(int(iters)):
        c = np.sort(np.concatenate([[0.0], free]))
        mids = (c[1:] + c[:-1]) / 2
        new = np.searchsorted(mids, x, side="left")  # ties at a midpoint go to the lower centroid
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        z = int(np.flatnonzero(c == 0)[0])
        sums = np.bincount(assign, weights=rho * x, minlength=c.size)
        mass = np.bincount(assign, weights=rho, minlength=c.size)
        upd = np.where(mass > 0, sums / np.where(mass > 0, mass, 1), c)
        upd[z] = 0.0
        upd = np.where(upd == 0, c, upd)  # a free centroid may not land exactly on 0
        free = np.delete(upd, z)
        if np.unique(free).size < free.size:  # two centroids merged: keep the previous ones
            free = np.delete(c, z)
            break
    return np.sort(np.concatenate([[0.0], free]))


def int8_codebook(centroids: np.ndarray) -> Tuple[np.ndarray, np.float32, int]:
    """Quantize a codebook (sorted, one exact 0) to int8 multiples of one scale.

    Returns ``(levels int32 sorted with one 0, scale float32, moved)``: ``scale = max|c| / 127``,
    ``levels = round(c / scale)``; a level that collides with its neighbour towards zero moves one
    step further from zero (``moved`` counts these). Centroid ``k`` becomes
    ``float32(levels[k]) * scale``.

    Raises:
        ValueError: not exactly one zero, more than 128 values on one side of zero, all zero.
    """
    c = np.sort(np.asarray(centroids, np.float64).ravel())
    if np.sum(c == 0) != 1:
        raise ValueError(f"the codebook must contain 0 exactly once, got {c.tolist()}")
    amax = float(np.max(np.abs(c)))
    if amax == 0:
        raise ValueError("the codebook has no non-zero value")
    scale = np.float32(amax / 127.0)
    q = np.rint(c / np.float64(scale)).astype(np.int64)
    moved = 0
    z = int(np.flatnonzero(c == 0)[0])
    for i in range(z + 1, c.size):  # positives: strictly increasing from 0
        if q[i] <= q[i - 1]:
            q[i] = q[i - 1] + 1
            moved += 1
    for i in range(z - 1, -1, -1):  # negatives: strictly decreasing from 0
        if q[i] >= q[i + 1]:
            q[i] = q[i + 1] - 1
            moved += 1
    if q.min() < -128 or q.max() > 127:
        raise ValueError(f"the codebook needs levels {q.min()}..{q.max()}, outside int8")
    return q.astype(np.int32), scale, moved


@dataclasses.dataclass(frozen=True, eq=False)
class Codebook:
    """One layer's integer codebook: ``values = float32(levels) * scale`` (sorted, one 0)."""

    layer: str
    levels: np.ndarray
    scale: np.float32
    moved: int
    real: np.ndarray  # the k-means centroids before integer rounding (float64)

    @property
    def values(self) -> np.ndarray:
        return self.levels.astype(np.float32) * np.float32(self.scale)

    def max_rounding_error(self) -> float:
        return float(np.max(np.abs(self.values.astype(np.float64) - self.real)))


def _relevance_weights(scores: np.ndarray) -> np.ndarray:
    s = np.abs(np.asarray(scores, np.float64))
    mean = s.mean()
    return (s / mean if mean > 0 else np.ones_like(s)) + _FLOOR


def cluster_layers(
    model: tf.keras.Model,
    n_clusters: int = 16,
    weighting: str = "relevance",
    x: Optional[np.ndarray] = None,
    y: Optional[np.ndarray] = None,
    criterion: str = "lrp",
    layers: Optional[Sequence[str]] = None,
    iters: int = 50,
    init: Optional[Mapping[str, np.ndarray]] = None,
    kernels: Optional[Mapping[str, np.ndarray]] = None,
    **criterion_options: Any,
) -> Dict[str, Codebook]:
    """Integer codebooks (:class:`Codebook`) of the quantizable kernels of a plain model, by kernel
    key (the layer name; ``"<layer>/<attr>"`` for the two kernels of a SeparableConv2D).

    ``kernels`` overrides the kernels to cluster (e.g. the float shadow weights of a model in
    training, while ``model`` is its stripped twin used for the relevance).

    Raises:
        ValueError: unknown weighting, ``n_clusters`` not in :data:`ALLOWED_CLUSTERS`, relevance
            weighting without data, and the errors of :func:`weighted_kmeans`.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; accepted: {', '.join(WEIGHTINGS)}")
    _config_for(n_clusters)
    names = kernel_keys(model) if layers is None else list(layers)
    rel = None
    if weighting == "relevance":
        if x is None or y is None:
            raise ValueError("weighting='relevance' needs reference data x and labels y")
        rel = weight_scores(model, x, y, criterion=criterion, layers=names, **criterion_options)
    out = {}
    for n in names:
        w = kernel_of(model, n) if kernels is None else np.asarray(kernels[n])
        rho = None if rel is None else _relevance_weights(rel[n])
        c = weighted_kmeans(w, n_clusters, rho, iters=iters, init=None if init is None else init.get(n))
        levels, scale, moved = int8_codebook(c)
        out[n] = Codebook(n, levels, scale, moved, c)
    return out


def _write(slot, book: Codebook, w: Optional[np.ndarray] = None) -> None:
    values = book.values
    if values.size != int(slot.centroids.shape[0]):
        raise ValueError(f"layer {slot.name!r}: codebook has {values.size} values, the quantizer {slot.centroids.shape[0]}")
    slot.centroids.assign(values)
    slot.step.assign(np.float32(book.scale))
    kernel = slot.kernel.numpy() if w is None else w
    slot.indices.assign(nearest_assign(kernel, values).astype(np.int32))


def quantize_shared(
    model: tf.keras.Model,
    codebooks: Mapping[str, Codebook],
    relevance_data: Optional[Tuple[np.ndarray, np.ndarray]] = None,
) -> tf.keras.Model:
    """A model in ECQ training (nearest assignment, ``Lambda=0``) whose kernel ``key`` uses
    ``codebooks[key]`` as its centroids (every kernel of a layer needs a codebook of the same
    size). ``model`` is not modified.

    Raises:
        ValueError: codebooks of different sizes than the quantizer's, or the errors of
            :func:`ecqx_tf.keras.api.quantize_per_layer`.
    """
    from .. import layers as _layers
    from ..keras.api import ecq_layers
    from ..keras.quantize_config import ECQQuantizeConfig
    from ._qat import quantize_per_layer

    configs = {}
    layer_of = {k: l.name for k, l, _ in _layers.model_kernels(model)}
    for n, book in codebooks.items():
        if n not in layer_of:
            raise ValueError(f"codebook {n!r} names no kernel of model {model.name!r}; kernels: {sorted(layer_of)}")
        bits, grid = _config_for(int(book.levels.size))
        cfg = ECQQuantizeConfig(bits=bits, grid=grid, method="ecq", Lambda=0.0)
        prev = configs.setdefault(layer_of[n], cfg)
        if prev != cfg:
            raise ValueError(f"the kernels of layer {layer_of[n]!r} need codebooks of the same size")
    qmodel = quantize_per_layer(model, configs, relevance_data=relevance_data, initialize=False)
    for s in ecq_layers(qmodel):
        _write(s, codebooks[s.name])
    return qmodel


class ReclusterCallback(tf.keras.callbacks.Callback):
    """Before every epoch but the first, re-run the (weighted) clustering on the current float
    shadow kernels, starting from the current codebook, and re-assign.

    Args:
        weighting, criterion, criterion_options: as :func:`cluster_layers` (the relevance is
            computed on the stripped model, i.e. with the current shared weights).
        relevance_data: ``(x, y)`` for relevance weighting.
        iters: Lloyd iterations per re-clustering.
    """

    def __init__(self, weighting: str = "relevance", relevance_data=None, criterion: str = "lrp",
                 iters: int = 20, **criterion_options: Any):
        super().__init__()
        self.weighting = weighting
        self.relevance_data = relevance_data
        self.criterion = criterion
        self.iters = iters
        self.criterion_options = criterion_options
        self.history: List[Dict[str, float]] = []

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 0:
            return
        from ..keras.api import ecq_layers, strip

        slots = ecq_layers(self.model)
        mirror = strip(self.model)
        x, y = (None, None) if self.relevance_data is None else self.relevance_data
        books = cluster_layers(
            mirror, len(slots[0].centroids.numpy()) if slots else 16, self.weighting, x, y, self.criterion,
            layers=[s.name for s in slots], iters=self.iters,
            init={s.name: _real_init(s) for s in slots},
            kernels={s.name: s.kernel.numpy() for s in slots}, **self.criterion_options,
        )
        for s in slots:
            _write(s, books[s.name])
        self.history.append({s.name: books[s.name].max_rounding_error() for s in slots})


def _real_init(slot) -> np.ndarray:
    return slot.centroids.numpy().astype(np.float64)


def sharing_info(qmodel: tf.keras.Model) -> Dict[str, QuantizedKernel]:
    """Layer name -> ``QuantizedKernel(bits=8, grid="paper", levels=int8 codebook, step=scale)`` of
    a model made by :func:`quantize_shared`: the integers the exporters must store.

    Raises:
        ValueError: the model has no ECQ layer, or a layer whose centroids are not integer
            multiples of its step within int8 (not a shared model).
    """
    from ..keras.api import ecq_layers

    out = {}
    for s in ecq_layers(qmodel):
        step = np.float32(s.step.numpy())
        c = s.centroids.numpy()
        levels = np.rint(c.astype(np.float64) / np.float64(step)).astype(np.int32) if step > 0 else None
        if levels is None or not np.array_equal(levels.astype(np.float32) * step, c) or levels.min() < -128 or levels.max() > 127:
            raise ValueError(f"layer {s.name!r}: centroids are not int8 multiples of the step; not a shared model")
        out[s.name] = QuantizedKernel(layer=s.layer_name, bits=8, grid="paper", step=float(step), levels=levels,
                                      indices=s.indices.numpy().astype(np.int32), kernel=s.attr)
    if not out:
        raise ValueError("the model has no ECQ-quantized layer (was it made by quantize_shared?)")
    return out
