r"""Weight relevance for ECQx (Becking et al. 2021) and its running average.

For a kernel layer (Dense, Conv1D, Conv2D, DepthwiseConv2D, each half of a SeparableConv2D)
:math:`z_j = \sum_i a_i w_{ij} + b_j` with relevance :math:`R_j` at its
output (from LRP with a composite, see :mod:`ecqx_tf.relevance.composites`):

.. math::

    R_{ij} = \sum_n \sum_{pos} w_{ij}\, a_i\, R_j / \mathrm{stab}(z_j), \qquad
    \mathrm{stab}(z) = z + 10^{-6}(\mathrm{sign}(z) + [z = 0])

i.e. the epsilon-LRP share of connection :math:`i \to j`, summed over the samples and (for a
convolution) over the positions; computed as ``W * d<z, stop_grad(R / stab(z))>/dW``. The output
relevance is the target logit (true class, or predicted class when no labels are given; the
whole output for a model that is not a classifier) divided by the number of samples ``N`` passed in one call, so the
result does not depend on ``batch_size``.

:func:`weight_relevance` is the main entry point; ``backend`` picks who propagates :math:`R_j`
(:data:`BACKENDS`): ``"native"`` (default; eager TF in this process, fast) or ``"innvestigate"``
(iNNvestigate 2.1.2 in a worker process; the reference). Both feed the same formula.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from ecqx_tf.registry import Registry
from ecqx_tf.relevance.composites import Composite
from ecqx_tf.relevance.graph import check_batch_size
from ecqx_tf.relevance.innvestigate_backend import (
    InnvestigateWorker,
    check_innvestigate_support,
    default_worker,
    innvestigate_layer_relevance,
    logits_model_json,
)
from ecqx_tf.relevance.native import (
    LayerRelevance,
    NativeLRP,
    native_engine,
    native_layer_relevance,
)
from ecqx_tf.relevance.rules import DEFAULT_EPSILON

__all__ = [
    "weight_relevance",
    "layer_relevance",
    "RelevanceAccumulator",
    "BACKENDS",
    "EMA_ALPHA",
]

#: Weight of the previous average in the EMA ``R <- (1 - alpha) R_batch + alpha R``.
EMA_ALPHA = 0.1

BatchFn = Callable[[np.ndarray, np.ndarray, float, str], Dict[str, np.ndarray]]

#: backend name -> factory ``(model, engine, worker) -> per-batch weight-relevance function``
BACKENDS: Registry[Callable[[Any, NativeLRP, Optional[InnvestigateWorker]], BatchFn]] = Registry(
    "relevance backend"
)


@BACKENDS.register("native")
def _native_backend(model: Any, engine: NativeLRP, worker: Optional[InnvestigateWorker]) -> BatchFn:
    return engine.weight_relevance_batch


@BACKENDS.register("innvestigate")
def _innvestigate_backend(model: Any, engine: NativeLRP, worker: Optional[InnvestigateWorker]) -> BatchFn:
    w = default_worker() if worker is None else worker
    check_innvestigate_support(engine)
    model_json, weights = logits_model_json(model), model.get_weights()

    def run(xb: np.ndarray, yb: np.ndarray, scale: float, mode: str) -> Dict[str, np.ndarray]:
        _, rs = w.relevance(model_json, weights, engine.composite, engine.layer_names, xb, yb, mode)
        return engine.weight_relevance_from(xb, {n: r * np.float32(scale) for n, r in rs.items()})

    return run


def weight_relevance(
    model: Any,
    x: Any,
    y: Any = None,
    layers: Optional[Sequence[str]] = None,
    backend: str = "native",
    composite: Union[str, Composite] = "epsilon_plus_flat",
    batch_size: int = 64,
    epsilon: float = DEFAULT_EPSILON,
    worker: Optional[InnvestigateWorker] = None,
    target: str = "auto",
) -> Dict[str, np.ndarray]:
    """Relevance of every quantized kernel weight: kernel key (the layer name;
    ``"<layer>/<kernel>"`` for the two kernels of a SeparableConv2D) -> float32 array of the
    kernel's shape.

    Args:
        model: built single-input, single-output Sequential or functional ``tf.keras`` model of
            the layer registry (``docs/layers.md``); evaluated in inference mode, never modified.
        x: inputs, ``(N, *model.input_shape[1:])``.
        y: true labels ``(N,)`` or one-hot ``(N, classes)``; None: relevance starts from the
            predicted class (classifiers) or from the whole output (other models), see ``target``.
        layers: kernel layer names (or kernel keys); None = all of them.
        backend: ``"native"`` or ``"innvestigate"`` (:data:`BACKENDS`).
        composite: registered composite name or a :class:`Composite`.
        batch_size: samples per forward/backward pass (does not change the result).
        epsilon: stabilizer of the weight-relevance formula.
        worker: iNNvestigate worker to use (default: the shared one).
        target: ``"auto"``, ``"label"``, ``"predicted"`` or ``"output"``
            (:data:`ecqx_tf.relevance.graph.TARGETS`).

    Raises:
        ValueError: unknown backend/composite/layer, empty data, shapes not matching the model.
        UnsupportedLayerError: a layer type the engine does not support (names it and lists the
            supported types).
        InnvestigateWorkerError: the iNNvestigate worker failed.
    """
    make = BACKENDS.get(backend)
    engine = native_engine(model, composite, layers, epsilon)
    xa, ya, mode = engine.check_data(x, y, target)
    bs = check_batch_size(batch_size)
    run = make(model, engine, worker)
    scale = 1.0 / xa.shape[0]
    total: Dict[str, np.ndarray] = {}
    for i in range(0, xa.shape[0], bs):
        part = run(xa[i : i + bs], ya[i : i + bs], scale, mode)
        for n, v in part.items():
            total[n] = v.astype(np.float64) if n not in total else total[n] + v
    return {n: total[n].astype(np.float32) for n in engine.layer_names}


def layer_relevance(
    model: Any,
    x: Any,
    y: Any = None,
    layers: Optional[Sequence[str]] = None,
    backend: str = "native",
    composite: Union[str, Composite] = "epsilon_plus_flat",
    batch_size: int = 64,
    worker: Optional[InnvestigateWorker] = None,
    target: str = "auto",
) -> LayerRelevance:
    """Relevance at the model input and at each quantized kernel's output, per sample (output
    relevance = target logit(s) / N). Arguments and errors as :func:`weight_relevance`."""
    BACKENDS.get(backend)  # validates the name
    if backend == "native":
        return native_layer_relevance(model, x, y, composite, layers, batch_size, target)
    return innvestigate_layer_relevance(model, x, y, composite, layers, batch_size, worker, target)


class RelevanceAccumulator:
    """Exponential moving average of weight relevance over batches (as the authors' ``train.py``):
    ``R <- (1 - alpha) * R_batch + alpha * R``; the first update after construction or
    :meth:`reset` sets ``R = R_batch`` (as the authors' ``train.py`` does).

    Args:
        alpha: weight of the previous average, in [0, 1) (default 0.1).

    Raises:
        ValueError: ``alpha`` outside [0, 1); an update whose layer names or shapes differ from
            the running average's.
    """

    def __init__(self, alpha: float = EMA_ALPHA):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"alpha must be a float, got {alpha!r}")
        if not (math.isfinite(alpha) and 0.0 <= alpha < 1.0):
            raise ValueError(f"alpha must lie in [0, 1), got {alpha!r}")
        self.alpha = float(alpha)
        self._value: Optional[Dict[str, np.ndarray]] = None
        self.updates = 0

    def update(self, batch_relevance: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Fold one batch in; returns the new average (copies)."""
        batch = {n: np.asarray(v, dtype=np.float32) for n, v in batch_relevance.items()}
        if self._value is None:
            self._value = {n: v.copy() for n, v in batch.items()}
        else:
            if set(batch) != set(self._value):
                raise ValueError(
                    f"relevance update has layers {sorted(batch)}, the running average has {sorted(self._value)}"
                )
            for n, v in batch.items():
                if v.shape != self._value[n].shape:
                    raise ValueError(f"layer {n!r}: update has shape {v.shape}, average has {self._value[n].shape}")
                self._value[n] = ((1.0 - self.alpha) * v + self.alpha * self._value[n]).astype(np.float32)
        self.updates += 1
        return self.value

    @property
    def value(self) -> Dict[str, np.ndarray]:
        """The current average (copies); empty before the first update."""
        return {} if self._value is None else {n: v.copy() for n, v in self._value.items()}

    def reset(self) -> None:
        """Forget the average (call at the start of each epoch)."""
        self._value = None
        self.updates = 0
