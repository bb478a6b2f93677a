r"""Pruning driven by explanations (Yeom et al. 2021, "Pruning by explaining: A novel criterion for
deep neural network pruning", Pattern Recognition 115; Sabih et al. 2020, "Utilizing Explainable
AI for Quantization and Pruning of Deep Neural Networks", arXiv:2008.09072), and the magnitude
baselines.

**Structured** (:func:`prune_structured`): the Dense units and Conv1D/Conv2D filters with the lowest
relevance aggregated over reference data (:func:`ecqx_tf.methods.criteria.unit_scores`) are
removed, in ``rounds`` steps of a cubic schedule :math:`s_r = s\,(1 - (1 - r/R)^3)` (Zhu & Gupta
2017; the schedule tfmot's ``PolynomialDecay`` uses) with fine-tuning after each step, until the
kernels hold at most :math:`(1 - s)` of the original number of kernel weights. Removal is real
surgery (:func:`prune_units`): the layer gets fewer units/filters, the next kernel layer loses the
matching input rows (through ``Flatten``: every spatial position of a removed channel), a
``BatchNormalization`` in between is sliced, a ``DepthwiseConv2D`` in between keeps only the
channels of the kept filters (its kernel and bias are sliced); the result is a plain, smaller Keras
model. Structured pruning works on single-chain models only: in a graph with ``Add`` or
``Concatenate`` the channel counts of the merged branches would have to stay consistent, which it
does not attempt; such a model (and a ``SeparableConv2D``) is refused with a clear message.
:func:`mask_units` gives the same function on the original architecture (weights zeroed), which the
tests compare with.

**Unstructured** (:func:`prune_unstructured`, any model of the layer registry, graphs included):
per kernel, the weights with the lowest
:math:`|R_{ij}|` (weight relevance summed over reference data) are set to zero, same cubic schedule,
masks kept through fine-tuning by :class:`~ecqx_tf.methods._qat.MaskCallback`.

**Magnitude baselines**: :func:`prune_tfmot_magnitude` (``tfmot.sparsity.keras.prune_low_magnitude``
with ``PolynomialDecay``, same epochs) and the ``"magnitude"`` criterion in both functions above
(L1 filter norm, Li et al. 2017; :math:`|w|`).

Scope of the structured ranking: ``"global"`` (one ranking over all prunable layers; with LRP the
relevance of every layer sums to the same total (conservation), which makes the raw scores
comparable across layers; our choice, not prescribed by Yeom et al.) or ``"layer"`` (every
prunable layer loses the same fraction of its units). The output layer is never pruned.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from .. import layers as _layers
from ..topology import TopologyError, topology
from .criteria import CRITERIA, kernel_of, unit_scores, weight_scores

__all__ = [
    "SCOPES",
    "PASS_THROUGH",
    "prunable_layers",
    "prune_units",
    "mask_units",
    "kernel_weight_count",
    "count_after",
    "select_units",
    "cubic_schedule",
    "PruneRound",
    "PruneResult",
    "prune_structured",
    "prune_unstructured",
    "prune_tfmot_magnitude",
    "kernel_sparsity",
]

log = logging.getLogger(__name__)

SCOPES = ("global", "layer")
_STRUCTURED = [n for n in _layers.kernel_types() if "structured_pruning" in _layers.get(n).methods]
#: Kernel layers whose channels follow their kept inputs (a depthwise kernel: not pruned itself).
_FOLLOWS = tuple(n for n in _STRUCTURED if _layers.get(n).kernels == ("depthwise_kernel",))
#: Kernel layers whose output units/filters structured pruning removes.
_KERNEL = tuple(n for n in _STRUCTURED if n not in _FOLLOWS)
#: Layers that act per channel and need no change when channels are removed (from the registry).
PASS_THROUGH = tuple(
    n for n in _layers.LAYERS.in_order()
    if "structured_pruning" in _layers.get(n).methods and not _layers.get(n).is_kernel
    and n not in ("InputLayer", "BatchNormalization", "Flatten")
)


def _type(layer) -> str:
    return type(layer).__name__


def _chain(model: tf.keras.Model) -> List[tf.keras.layers.Layer]:
    """The layers of a single-chain model that structured pruning can handle, else a clear error."""
    if not isinstance(model, tf.keras.Model):
        raise TypeError(f"model must be a tf.keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built; call it on data or give it an Input")
    try:
        topo = topology(model)
    except TopologyError as e:
        raise ValueError(f"structured pruning: {e}") from None
    merges = [f"{n.name!r} ({_type(n.layer)})" for n in topo.nodes if len(n.inputs) > 1]
    if merges or not topo.is_chain:
        where = f"merge layers {', '.join(merges)}" if merges else "branches"
        raise ValueError(
            f"structured pruning removes units/filters only in single-chain models; model {model.name!r} has "
            f"{where}, across which the channel counts of the merged branches would have to stay equal, which "
            "structured pruning does not handle. Use unstructured relevance pruning (structured=False), weight "
            "sharing or mixed precision for this model"
        )
    bad = [f"{n.name!r} ({_type(n.layer)})" for n in topo.nodes
           if _layers.spec_of(n.layer) is None or "structured_pruning" not in _layers.get(n.layer).methods]
    if bad:
        ok = [n for n in _layers.supported_names() if "structured_pruning" in _layers.get(n).methods]
        raise ValueError(f"structured pruning does not support layers {', '.join(bad)}; it supports: {', '.join(ok)}")
    return [n.layer for n in topo.nodes]


def _kernels(layers) -> List[tf.keras.layers.Layer]:
    return [l for l in layers if _type(l) in _KERNEL + _FOLLOWS]


def _units(layer) -> int:
    """Output channels of a kernel layer."""
    if _type(layer) == "DepthwiseConv2D":
        k = layer.depthwise_kernel.shape
        return int(k[2] * k[3])
    return int(getattr(layer, _layers.get(layer).kernels[-1]).shape[-1])


def prunable_layers(model: tf.keras.Model) -> List[str]:
    """Dense/Conv1D/Conv2D layers whose units may be removed: all but the last kernel layer (the
    output); a DepthwiseConv2D is never pruned itself (its channels follow its inputs)."""
    return [l.name for l in _kernels(_chain(model))[:-1] if _type(l) in _KERNEL]


@dataclasses.dataclass
class _Plan:
    layer: tf.keras.layers.Layer
    inp: Optional[np.ndarray] = None  # kept indices along the input's last axis (None = all)
    out: Optional[np.ndarray] = None  # kept units (kernel layers)


def _check_keep(model, layers, keep: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    kernels = _kernels(layers)
    if not kernels:
        raise ValueError(f"model {model.name!r} has no Dense/Conv1D/Conv2D layer")
    prunable = [l.name for l in kernels[:-1] if _type(l) in _KERNEL]
    out_name = kernels[-1].name
    if not isinstance(keep, Mapping):
        raise TypeError(f"keep must map layer names to kept unit indices, got {type(keep).__name__}")
    result = {}
    for name, idx in keep.items():
        if name == out_name:
            raise ValueError(
                f"cannot prune the output layer {name!r}: its units are the model's outputs; prunable layers: {prunable}"
            )
        if name not in prunable:
            raise ValueError(f"layer {name!r} is not a prunable Dense/Conv1D/Conv2D layer of model {model.name!r}; "
                             f"prunable layers: {prunable}")
        layer = model.get_layer(name)
        n = int(layer.kernel.shape[-1])
        a = np.asarray(idx)
        if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"keep[{name!r}] must be a 1-D sequence of int unit indices, got {a.dtype} shape {a.shape}")
        a = np.unique(a.astype(np.int64))
        if a.size != np.asarray(idx).size:
            raise ValueError(f"keep[{name!r}] lists a unit twice")
        if a.size == 0:
            raise ValueError(f"pruning would leave layer {name!r} with no units (keep at least 1 of its {n})")
        if a[0] < 0 or a[-1] >= n:
            raise ValueError(f"keep[{name!r}] has unit indices outside [0, {n - 1}]: {a[(a < 0) | (a >= n)].tolist()}")
        result[name] = a
    return result


def _plan(model: tf.keras.Model, keep: Mapping[str, Any]) -> List[_Plan]:
    layers = _chain(model)
    keep = _check_keep(model, layers, keep)
    plans = []
    cur: Optional[np.ndarray] = None
    for layer in layers:
        t = _type(layer)
        p = _Plan(layer)
        if t in _FOLLOWS:
            p.inp = cur
            if cur is not None:
                m = int(layer.depth_multiplier)
                cur = (cur[:, None] * m + np.arange(m, dtype=np.int64)[None, :]).ravel()
            p.out = cur
        elif t in _KERNEL:
            if t in ("Conv1D", "Conv2D") and getattr(layer, "groups", 1) != 1:
                raise ValueError(f"layer {layer.name!r}: grouped convolutions (groups={layer.groups}) cannot be pruned")
            if t == "Dense" and len(layer.input_shape) != 2:
                raise ValueError(f"layer {layer.name!r}: Dense on a rank-{len(layer.input_shape)} input is not "
                                 "supported by pruning; put a Flatten before it")
            p.inp = cur
            p.out = keep.get(layer.name)
            cur = p.out
        elif t == "BatchNormalization":
            axis = layer.axis if isinstance(layer.axis, int) else (list(layer.axis)[0] if len(layer.axis) == 1 else None)
            if axis not in (-1, len(layer.input_shape) - 1):
                raise ValueError(f"layer {layer.name!r}: BatchNormalization over axis {layer.axis} cannot be sliced "
                                 "(last axis only)")
            p.inp = cur
        elif t == "Flatten":
            shape = tuple(layer.input_shape[1:])
            if cur is not None and len(shape) > 1:
                c = int(shape[-1])
                pos = int(np.prod(shape[:-1]))
                cur = (np.arange(pos, dtype=np.int64)[:, None] * c + cur[None, :]).ravel()
        elif t in PASS_THROUGH:
            pass
        elif cur is not None:
            raise ValueError(
                f"cannot prune through layer {layer.name!r} ({t}): channels can be removed only across "
                f"{', '.join(PASS_THROUGH + ('BatchNormalization', 'Flatten') + _FOLLOWS)}"
            )
        plans.append(p)
    return plans


def _new_weights(p: _Plan) -> List[np.ndarray]:
    layer = p.layer
    t = _type(layer)
    if t in _FOLLOWS:
        w = layer.depthwise_kernel.numpy()
        if p.inp is not None:
            w = np.take(w, p.inp, axis=2)
        out = [w]
        if layer.use_bias:
            b = layer.bias.numpy()
            out.append(b if p.out is None else b[p.out])
        return out
    if t in _KERNEL:
        w = layer.kernel.numpy()
        if p.inp is not None:
            w = np.take(w, p.inp, axis=-2)
        if p.out is not None:
            w = np.take(w, p.out, axis=-1)
        out = [w]
        if layer.use_bias:
            b = layer.bias.numpy()
            out.append(b if p.out is None else b[p.out])
        return out
    if t == "BatchNormalization" and p.inp is not None:
        return [v[p.inp] for v in layer.get_weights()]
    return layer.get_weights()


def prune_units(model: tf.keras.Model, keep: Mapping[str, Sequence[int]]) -> tf.keras.Model:
    """A new, smaller model in which layer ``name`` keeps only the units (Dense) or filters (Conv1D/Conv2D)
    ``keep[name]`` (in ascending order); the following kernel layer's input weights and any
    BatchNormalization in between are sliced to match. Layers not in ``keep`` keep all units.
    ``model`` is not modified.

    Raises:
        ValueError: ``keep`` names the output layer, a layer that is not a prunable Dense/Conv1D/Conv2D
            layer, would leave a layer empty, has out-of-range or repeated indices; the model is
            not a chain or has a layer that channels cannot be removed across (named).
        TypeError: ``keep`` is not a mapping of integer index sequences.
    """
    plans = _plan(model, keep)
    src = model.inputs[0]
    inp = tf.keras.Input(shape=tuple(model.input_shape[1:]), dtype=src.dtype, name=model.input_names[0])
    x = inp
    built = []
    for p in plans:
        cfg = p.layer.get_config()
        if p.out is not None and _type(p.layer) in _KERNEL:
            cfg["units" if _type(p.layer) == "Dense" else "filters"] = int(p.out.size)
        new = type(p.layer).from_config(cfg)
        x = new(x)
        built.append((new, p))
    pruned = tf.keras.Model(inp, x, name=model.name)
    for new, p in built:
        new.set_weights(_new_weights(p))
    return pruned


def mask_units(model: tf.keras.Model, keep: Mapping[str, Sequence[int]]) -> tf.keras.Model:
    """A copy of ``model`` (same architecture) in which the removed units' incoming weights and
    biases AND their outgoing weights (the next kernel layer's input rows) are zero: it computes
    what :func:`prune_units` computes. Errors as :func:`prune_units`."""
    plans = _plan(model, keep)
    copy = tf.keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for p in plans:
        if _type(p.layer) in _FOLLOWS and p.inp is not None:
            layer = copy.get_layer(p.layer.name)
            w = layer.depthwise_kernel.numpy()
            m = np.zeros(w.shape[2], bool)
            m[p.inp] = True
            w[:, :, ~m, :] = 0.0
            layer.depthwise_kernel.assign(w)
            continue
        if _type(p.layer) not in _KERNEL:
            continue
        layer = copy.get_layer(p.layer.name)
        w = layer.kernel.numpy()
        if p.inp is not None:
            m = np.zeros(w.shape[-2], bool)
            m[p.inp] = True
            w[..., ~m, :] = 0.0
        if p.out is not None:
            m = np.zeros(w.shape[-1], bool)
            m[p.out] = True
            w[..., ~m] = 0.0
            if layer.use_bias:
                b = layer.bias.numpy()
                b[~m] = 0.0
                layer.bias.assign(b)
        layer.kernel.assign(w)
    return copy


def kernel_weight_count(model: tf.keras.Model) -> int:
    """Number of quantizable kernel weights (layer registry; biases not counted)."""
    return int(sum(np.prod(getattr(l, a).shape) for _, l, a in _layers.model_kernels(model)))


def kernel_sparsity(model: tf.keras.Model, reference_count: Optional[int] = None) -> float:
    """Share of kernel weights that are zero or removed: ``1 - nonzero / reference_count``
    (``reference_count`` default: this model's own kernel count)."""
    nz = sum(int(np.count_nonzero(getattr(l, a).numpy())) for _, l, a in _layers.model_kernels(model))
    total = kernel_weight_count(model) if reference_count is None else int(reference_count)
    return 1.0 - nz / total


class _Counter:
    """Kernel weight count as a function of the number of kept units per prunable layer."""

    def __init__(self, model: tf.keras.Model):
        kernels = _kernels(_chain(model))
        _plan(model, {})  # validates the structure once
        self.names = [l.name for l in kernels]
        self.depthwise = [_type(l) in _FOLLOWS for l in kernels]
        shapes = [(l.depthwise_kernel if d else l.kernel).shape for l, d in zip(kernels, self.depthwise)]
        self.spatial = [int(np.prod(k[:-2])) for k in shapes]
        self.dm = [int(k[-1]) if d else 1 for k, d in zip(shapes, self.depthwise)]
        self.units = [_units(l) for l in kernels]
        ins = [int(k[-2]) for k in shapes]
        self.first_in = ins[0]
        self.mult = [0] + [ins[i] // self.units[i - 1] for i in range(1, len(kernels))]

    def count(self, kept: Sequence[int]) -> int:
        """Kernel weights when kernel layer i keeps ``kept[i]`` units (ignored for a depthwise
        layer, whose channels follow its input)."""
        total, prev = 0, None
        for i, n in enumerate(kept):
            cin = self.first_in if i == 0 else self.mult[i] * prev
            if self.depthwise[i]:
                total += self.spatial[i] * cin * self.dm[i]
                prev = cin * self.dm[i]
            else:
                total += self.spatial[i] * cin * n
                prev = n
        return total


def count_after(model: tf.keras.Model, keep: Mapping[str, Sequence[int]]) -> int:
    """Kernel weights of ``prune_units(model, keep)`` without building it."""
    c = _Counter(model)
    k = _check_keep(model, _chain(model), keep)
    return c.count([len(k[n]) if n in k else u for n, u in zip(c.names, c.units)])


def select_units(
    model: tf.keras.Model,
    scores: Mapping[str, np.ndarray],
    target_weights: int,
    scope: str = "global",
    min_units: int = 1,
) -> Dict[str, np.ndarray]:
    """Kept unit indices per prunable layer such that the pruned model has at most
    ``target_weights`` kernel weights, removing the lowest-scored units first.

    ``scope="global"``: one ranking over all prunable layers, removed one by one (lowest score
    first; ties by layer order then index) until the count is met. ``"layer"``: every prunable
    layer loses the same fraction of its units (the smallest fraction that meets the count).

    Raises:
        ValueError: unknown scope, scores of the wrong length, or a target that cannot be reached
            while every layer keeps ``min_units`` (names the reachable minimum).
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; accepted: {', '.join(SCOPES)}")
    c = _Counter(model)
    prunable = [n for n, d in zip(c.names[:-1], c.depthwise[:-1]) if not d]
    for n in prunable:
        if n not in scores:
            raise ValueError(f"no scores for prunable layer {n!r}")
        if np.asarray(scores[n]).shape != (c.units[c.names.index(n)],):
            raise ValueError(f"scores[{n!r}] has shape {np.asarray(scores[n]).shape}, expected ({c.units[c.names.index(n)]},)")
    order = {n: np.lexsort((np.arange(len(scores[n])), np.asarray(scores[n], np.float64))) for n in prunable}
    kept = list(c.units)
    floor = [min(min_units, u) for u in c.units]
    minimum = c.count([floor[i] if n in prunable else c.units[i] for i, n in enumerate(c.names)])
    if minimum > target_weights:
        raise ValueError(
            f"cannot reach {target_weights} kernel weights: keeping {min_units} unit(s) in every prunable layer "
            f"still leaves {minimum} (of {c.count(c.units)}); lower the sparsity"
        )
    removed = {n: 0 for n in prunable}
    if scope == "global":
        cand = sorted(((float(scores[n][j]), li, int(j)) for li, n in enumerate(prunable) for j in range(len(scores[n]))))
        for _, li, _j in cand:
            if c.count(kept) <= target_weights:
                break
            i = c.names.index(prunable[li])
            if kept[i] <= floor[i]:
                continue
            kept[i] -= 1
            removed[prunable[li]] += 1
    else:
        def counts(f: float) -> List[int]:
            return [max(floor[i], u - int(math.floor(f * u))) if n in prunable else u
                    for i, (n, u) in enumerate(zip(c.names, c.units))]

        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if c.count(counts(mid)) <= target_weights:
                hi = mid
            else:
                lo = mid
        kept = counts(hi)
        for i, n in enumerate(c.names):
            if n in prunable:
                removed[n] = c.units[i] - kept[i]
    # the removed units are the lowest-ranked of each layer
    return {n: np.sort(order[n][removed[n]:]) for n in prunable}


def cubic_schedule(sparsity: float, rounds: int) -> List[float]:
    r"""Sparsity after each of ``rounds`` steps: :math:`s\,(1 - (1 - r/R)^3)`, r = 1..R."""
    return [float(sparsity * (1.0 - (1.0 - r / rounds) ** 3)) for r in range(1, rounds + 1)]


@dataclasses.dataclass
class PruneRound:
    round: int
    target_sparsity: float
    kernel_weights: int
    units: Dict[str, int]
    sparsity: float
    seconds: float


@dataclasses.dataclass(eq=False)
class PruneResult:
    """Attributes:
        model: the pruned plain Keras model (smaller for structured pruning; zeros for unstructured).
        masks: layer -> 0/1 kernel mask (unstructured), else empty.
        rounds: one :class:`PruneRound` per step.
        original_weights: kernel weights of the input model.
    """

    model: tf.keras.Model
    masks: Dict[str, np.ndarray]
    rounds: List[PruneRound]
    original_weights: int

    @property
    def sparsity(self) -> float:
        return kernel_sparsity(self.model, self.original_weights)


def _compile(model, lr):
    model.compile(optimizer=tf.keras.optimizers.Adam(lr),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])


def _copy(model):
    m = tf.keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    return m


def _check_common(sparsity, rounds, epochs_per_round, criterion):
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    if isinstance(epochs_per_round, bool) or not isinstance(epochs_per_round, (int, np.integer)) or epochs_per_round < 0:
        raise ValueError(f"epochs_per_round must be an int >= 0, got {epochs_per_round!r}")
    CRITERIA.get(criterion)  # ValueError naming the accepted criteria


def prune_structured(
    model: tf.keras.Model,
    x_train: Optional[np.ndarray],
    y_train: Optional[np.ndarray],
    sparsity: float,
    criterion: str = "lrp",
    x_ref: Optional[np.ndarray] = None,
    y_ref: Optional[np.ndarray] = None,
    scope: str = "global",
    rounds: int = 3,
    epochs_per_round: int = 1,
    batch_size: int = 64,
    lr: float = 1e-3,
    aggregate: str = "sum",
    min_units: int = 1,
    seed: int = 0,
    criterion_options: Optional[Dict[str, Any]] = None,
) -> PruneResult:
    """Remove units/filters by ``criterion`` until ``sparsity`` of the kernel weights are gone
    (see the module docstring). ``model`` is not modified.

    Args:
        x_train, y_train: fine-tuning data (unused when ``epochs_per_round == 0``).
        sparsity: target share of kernel weights removed, in [0, 1).
        criterion: :data:`~ecqx_tf.methods.criteria.CRITERIA` name (``lrp``, ``deeplift``,
            ``magnitude``).
        x_ref, y_ref: reference samples for the relevance (default: ``x_train``/``y_train``).
        scope, min_units: see :func:`select_units`; aggregate: see ``unit_scores``.
        rounds, epochs_per_round: pruning steps and fine-tuning epochs after each.
        criterion_options: e.g. ``{"composite": "epsilon"}`` or ``{"reference": "mean"}``.

    Raises:
        ValueError: unknown criterion/scope, sparsity outside [0, 1), unreachable target, and the
            errors of :func:`prune_units`.
    """
    import time

    _check_common(sparsity, rounds, epochs_per_round, criterion)
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; accepted: {', '.join(SCOPES)}")
    x_ref = x_train if x_ref is None else x_ref
    y_ref = y_train if y_ref is None else y_ref
    opts = dict(criterion_options or {})
    tf.keras.utils.set_random_seed(seed)
    w0 = kernel_weight_count(model)
    current = _copy(model)
    history = []
    for r, s in enumerate(cubic_schedule(float(sparsity), int(rounds)), start=1):
        t0 = time.perf_counter()
        target = int(math.floor(w0 * (1.0 - s) + 1e-9))
        if kernel_weight_count(current) > target:
            scores = unit_scores(current, x_ref, y_ref, criterion=criterion, layers=prunable_layers(current),
                                 aggregate=aggregate, **opts)
            keep = select_units(current, scores, target, scope=scope, min_units=min_units)
            current = prune_units(current, keep)
        if epochs_per_round > 0:
            _compile(current, lr)
            current.fit(x_train, y_train, epochs=int(epochs_per_round), batch_size=batch_size, shuffle=True, verbose=0)
        units = {l.name: _units(l) for l in current.layers if _type(l) in _KERNEL + _FOLLOWS}
        history.append(PruneRound(r, s, kernel_weight_count(current), units, 1 - kernel_weight_count(current) / w0,
                                  time.perf_counter() - t0))
        log.info("structured pruning round %d: %s", r, history[-1])
    return PruneResult(current, {}, history, w0)


def prune_unstructured(
    model: tf.keras.Model,
    x_train: Optional[np.ndarray],
    y_train: Optional[np.ndarray],
    sparsity: float,
    criterion: str = "lrp",
    x_ref: Optional[np.ndarray] = None,
    y_ref: Optional[np.ndarray] = None,
    rounds: int = 3,
    epochs_per_round: int = 1,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    criterion_options: Optional[Dict[str, Any]] = None,
) -> PruneResult:
    """Zero the weights with the lowest score (``|R_ij|``, or ``|w|`` for ``"magnitude"``) in every
    quantizable kernel (the same share per kernel, as ``prune_low_magnitude`` does), cubic
    schedule, masks kept during fine-tuning. Masks only grow: a pruned weight scores ``-inf``.
    ``model`` is not modified. Errors as :func:`prune_structured`."""
    import time

    from ._qat import MaskCallback

    _check_common(sparsity, rounds, epochs_per_round, criterion)
    x_ref = x_train if x_ref is None else x_ref
    y_ref = y_train if y_ref is None else y_ref
    opts = dict(criterion_options or {})
    tf.keras.utils.set_random_seed(seed)
    current = _copy(model)
    kernels = {k: (layer, attr) for k, layer, attr in _layers.model_kernels(current)}
    names = list(kernels)
    masks = {n: np.ones(kernel_of(current, n).shape, np.float32) for n in names}
    w0 = kernel_weight_count(current)
    history = []
    for r, s in enumerate(cubic_schedule(float(sparsity), int(rounds)), start=1):
        t0 = time.perf_counter()
        scores = weight_scores(current, x_ref, y_ref, criterion=criterion, layers=names, **opts)
        for n in names:
            sc = np.where(masks[n] > 0, scores[n], -np.inf).ravel()
            k = int(round(s * sc.size))
            m = np.ones(sc.size, np.float32)
            m[np.lexsort((np.arange(sc.size), sc))[:k]] = 0.0
            masks[n] = m.reshape(masks[n].shape)
        cb = MaskCallback([(getattr(*kernels[n]), masks[n]) for n in names])
        cb.apply()
        if epochs_per_round > 0:
            _compile(current, lr)
            current.fit(x_train, y_train, epochs=int(epochs_per_round), batch_size=batch_size, shuffle=True,
                        verbose=0, callbacks=[cb])
        units = {n: int(kernel_of(current, n).shape[-1]) for n in names}
        history.append(PruneRound(r, s, w0, units, kernel_sparsity(current), time.perf_counter() - t0))
    return PruneResult(current, masks, history, w0)


def prune_tfmot_magnitude(
    model: tf.keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    sparsity: float,
    rounds: int = 3,
    epochs_per_round: int = 1,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> PruneResult:
    """Baseline: ``tfmot.sparsity.keras.prune_low_magnitude`` on every kernel layer with
    ``PolynomialDecay(0 -> sparsity, power 3)`` ending after ``rounds - 1`` of the ``rounds *
    epochs_per_round`` epochs (the last ``epochs_per_round`` fine-tune at the final sparsity, as in
    the relevance methods), mask updates ``rounds`` times per ramp; then ``strip_pruning``.
    ``model`` is not modified.

    Raises:
        ValueError: sparsity outside [0, 1), ``rounds``/``epochs_per_round`` out of range, or no
            training epoch at all (tfmot prunes only while training).
    """
    import time

    import tensorflow_model_optimization as tfmot

    _check_common(sparsity, rounds, epochs_per_round, "magnitude")
    epochs = int(rounds) * int(epochs_per_round)
    if epochs < 1:
        raise ValueError("prune_tfmot_magnitude needs at least one training epoch (rounds * epochs_per_round >= 1)")
    tf.keras.utils.set_random_seed(seed)
    t0 = time.perf_counter()
    steps_per_epoch = int(math.ceil(len(x_train) / batch_size))
    total = steps_per_epoch * epochs
    end = max(1, steps_per_epoch * int(epochs_per_round) * (int(rounds) - 1)) if rounds > 1 else 1
    freq = max(1, end // max(1, int(rounds))) if rounds > 1 else 1
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=float(sparsity), begin_step=0, end_step=end, frequency=freq)
    base = _copy(model)

    def wrap(layer):
        clone = layer.__class__.from_config(layer.get_config())
        if _layers.kernel_keys(layer):
            return tfmot.sparsity.keras.prune_low_magnitude(clone, pruning_schedule=schedule)
        return clone

    pruned = tf.keras.models.clone_model(base, clone_function=wrap)
    _copy_into_wrappers(base, pruned)
    _compile(pruned, lr)
    pruned.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    plain = tfmot.sparsity.keras.strip_pruning(pruned)
    w0 = kernel_weight_count(plain)
    masks = {k: (getattr(l, a).numpy() != 0).astype(np.float32) for k, l, a in _layers.model_kernels(plain)}
    units = {n: int(m.shape[-1]) for n, m in masks.items()}
    log.info("tfmot magnitude pruning: %d steps, end_step %d, frequency %d", total, end, freq)
    return PruneResult(plain, masks, [PruneRound(1, float(sparsity), w0, units, kernel_sparsity(plain),
                                                 time.perf_counter() - t0)], w0)


def _copy_into_wrappers(src: tf.keras.Model, dst: tf.keras.Model) -> None:
    """Copy every layer's weights of ``src`` into ``dst``, whose Dense/Conv2D layers are wrapped
    by tfmot's pruning wrapper (the wrapper's own mask/threshold/step variables stay as built)."""
    for layer in dst.layers:
        inner = getattr(layer, "layer", layer)
        if _type(inner) == "InputLayer":
            continue
        inner.set_weights(src.get_layer(inner.name).get_weights())
