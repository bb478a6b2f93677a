r"""How hard the entropy term pushes during training (pure NumPy): a warm-up ramp and a
per-layer sparsity target that sets each layer's :math:`\lambda_l` directly.

**Ramp.** Both options below grow from nothing to their full value over the first ``T`` optimizer
steps with the cubic schedule of gradual magnitude pruning (Zhu & Gupta 2017, tfmot's
``PolynomialDecay`` with ``power = 3``, ``initial = 0``):

.. math::  r(t) = 1 - \left(1 - \min(1, t / T)\right)^{k}, \qquad r(t) = 1 \text{ for } T = 0.

With the ``Lambda`` of the paper the layer lambda becomes :math:`\lambda_l(t) = r(t) \, \Lambda \,
\delta_l \, \lambda_{max,l}` (a Lambda warm-up); with a sparsity target the target becomes
:math:`r(t) \, S^*_l`.

**Sparsity target.** For fixed cluster probabilities (those of the nearest-neighbour assignment,
which do not depend on :math:`\lambda`) the ECQ cost of zero against a non-zero centroid
:math:`c` is, with :math:`I_c \ge I_0` (the zero bias makes :math:`P_0 \ge P_c`):

.. math::
    C_0(w) \le C_c(w) \iff g_c(w) \le \lambda (I_c - I_0), \qquad g_c(w) = w^2 - (w - w_c)^2
    = 2 w w_c - w_c^2 .

So a weight goes to zero exactly when :math:`\lambda > t(w)` (ties by index), its **zero threshold**

.. math::
    t(w) = \max_{c \ne 0,\, P_c > 0} \tau_c(w), \quad
    \tau_c(w) = \begin{cases} g_c(w) / (I_c - I_0) & I_c > I_0 \\
                              +\infty \text{ if } g_c(w) > 0, \text{ else } -\infty & I_c = I_0
    \end{cases}

(:math:`t(w) < 0`: zero already in the nearest-neighbour assignment; :math:`-\infty` when no
non-zero centroid is selectable; clusters with :math:`P_c = 0` are unselectable and never compete). The share of zeros of
:func:`ecqx_tf.ecq_assign` is therefore non-decreasing in :math:`\lambda`, and the smallest
:math:`\lambda` that gives at least :math:`\lceil S^* N \rceil` zeros is the
:math:`\lceil S^* N \rceil`-th smallest :math:`t(w)`: one ``np.partition``, linear in N
(:func:`lambda_for_sparsity`; a relative margin of :math:`10^{-9}` above it makes the float64
cost comparisons of the assignment and the ties at exactly :math:`t(w)` fall on zero's side). The
non-zero weights are then assigned by the usual ECQ cost with that :math:`\lambda`, and ECQx
changes which weights are zero inside its band :math:`[S_{ecq} - p, S_{ecq}]` as always.

This replaces the paper's :math:`\lambda_l = \Lambda \delta_l \lambda_{max,l}`, which sets the
layers' sparsities by their sizes (:math:`\delta_l`), with an explicit share of zeros per layer,
as magnitude pruning does (``docs/frontier.md`` measures both).

**A target for the whole model** keeps the paper's allocation between layers and only chooses
:math:`\Lambda`: with :math:`a_l = \delta_l \lambda_{max,l}` (the layer lambda at
:math:`\Lambda = 1`), weight :math:`i` of layer :math:`l` is zero iff :math:`\Lambda a_l > t_i`,
i.e. :math:`\Lambda > u_i = t_i / a_l`, so the :math:`\Lambda` that gives
:math:`\lceil S^* \sum_l N_l \rceil` zeros over all kernels is the k-th smallest of the pooled
:math:`u_i` (:func:`Lambda_for_model_sparsity`; a layer with :math:`a_l = 0` keeps its
nearest-neighbour zeros whatever :math:`\Lambda`).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Optional, Union

import numpy as np

from .assign import check_centroids, information, probabilities_from_counts, zero_index
from .grid import as_real_array

__all__ = ["LAMBDA_MARGIN", "TARGET_SCOPES", "ramp", "zero_thresholds", "lambda_for_sparsity", "Lambda_for_model_sparsity",
           "lambda_for_layer_cap",
           "sparsity_targets"]

#: What a sparsity target applies to: every kernel on its own (``"layer"``) or all of them
#: together with the paper's allocation between layers (``"model"``).
TARGET_SCOPES = ("layer", "model")

#: Relative margin of :func:`lambda_for_sparsity` above the threshold it returns.
LAMBDA_MARGIN: float = 1e-9


def ramp(step: int, ramp_steps: int, power: float = 3.0) -> float:
    r""":math:`r(t) = 1 - (1 - \min(1, t/T))^k` for ``step`` t >= 0, ``ramp_steps`` T >= 0 and
    ``power`` k > 0; 1.0 when T = 0 (no ramp).

    Raises:
        TypeError / ValueError: a negative or non-integer step or ramp length, a power <= 0.
    """
    for name, v in (("step", step), ("ramp_steps", ramp_steps)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    if isinstance(power, bool) or not isinstance(power, numbers.Real) or not power > 0:
        raise ValueError(f"power must be a number > 0, got {power!r}")
    if ramp_steps == 0:
        return 1.0
    f = min(1.0, step / ramp_steps)
    return float(1.0 - (1.0 - f) ** power)


def zero_thresholds(w: Any, centroids: Any) -> np.ndarray:
    r"""The zero threshold :math:`t(w)` of every weight (float64, shape of ``w``; see the module
    docstring): the ECQ assignment with :math:`\lambda \ge 0` puts a weight on zero iff
    :math:`\lambda > t(w)` (at :math:`\lambda = t(w)` the cost ties with a non-zero centroid,
    broken by index as in ``np.argmin``). :math:`+\infty` for a weight that no :math:`\lambda`
    moves to zero."""
    c = check_centroids(centroids)
    z = zero_index(c)
    a = as_real_array(w, "w")
    x, shape = a.ravel(), a.shape
    nn = np.argmin((x[None, :] - c[:, None]) ** 2, axis=0) if x.size * c.size <= 1 << 22 else _nearest(x, c)
    P = probabilities_from_counts(np.bincount(nn, minlength=c.size), z, True)
    I = information(P)
    t = np.full(x.size, -np.inf)
    for k in range(c.size):
        if k == z or P[k] <= 0:
            continue
        g = 2.0 * x * c[k] - c[k] * c[k]
        d = float(I[k] - I[z])
        if d > 0:
            np.maximum(t, g / d, out=t)
        else:  # P_k = P_0 = 0.5: the entropy term cannot separate k from zero
            t[g > 0] = np.inf  # else no constraint (-inf)
    return t.reshape(shape)


def _nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Nearest centroid (lowest index on ties) without a [K, N] matrix."""
    best = np.full(x.size, np.inf)
    idx = np.zeros(x.size, np.int64)
    for k in range(c.size):
        d = x - c[k]
        d *= d
        better = d < best
        best[better] = d[better]
        idx[better] = k
    return idx


def _check_target(target) -> float:
    if isinstance(target, bool) or not isinstance(target, numbers.Real) or not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be a sparsity in [0, 1], got {target!r}")
    return float(target)


def _kth_threshold(t: np.ndarray, target: float) -> float:
    """The smallest value v (plus the margin) with at least ceil(target * N) entries of t < v."""
    k = int(math.ceil(target * t.size - 1e-9))
    if k <= 0:
        return 0.0
    finite = np.isfinite(t)
    if k > int(finite.sum()):
        tk = float(t[finite].max()) if finite.any() else 0.0
    else:
        tk = float(np.partition(t, k - 1)[k - 1])
    if tk < 0.0:
        return 0.0  # the nearest-neighbour assignment already has k zeros
    if tk == 0.0:
        return float(np.finfo(np.float64).tiny)  # ties with a non-zero centroid: settle them on zero
    return tk * (1.0 + LAMBDA_MARGIN)


def Lambda_for_model_sparsity(kernels, target: float, n_largest: Optional[int] = None, s: float = 0.05,
                              reduce: str = "min", max_layer_sparsity: Optional[float] = None) -> float:
    r"""The smallest :math:`\Lambda` (plus the margin) at which the ECQ assignment of all
    ``kernels`` (pairs ``(w, centroids)``), each with the paper's layer lambda
    :math:`\lambda_l = \Lambda \delta_l \lambda_{max,l}` (:func:`ecqx_tf.layer_lambda` with
    ``n_largest``, ``s``, ``reduce``), has at least :math:`\lceil S^* \sum_l N_l \rceil` zeros.

    With ``max_layer_sparsity`` :math:`S_{max}` no layer may hold more than
    :math:`k_l = \lfloor S_{max} N_l \rfloor` zeros: its layer lambda becomes
    :math:`\min(\Lambda a_l, \lambda^{cap}_l)` (:func:`lambda_for_layer_cap`), so only its
    :math:`k_l` smallest :math:`u_i` take part in the pooled quantile; the zeros the cap refuses
    a layer go to the others, in the paper's proportions. (A layer whose nearest-neighbour
    assignment alone has more zeros than :math:`k_l` keeps them: no lambda removes them.) When the target needs more zeros than
    the caps allow, the :math:`\Lambda` that fills every layer to its cap.

    Raises:
        ValueError: no kernels, a target or cap outside [0, 1]; bad kernels as
            :func:`ecqx_tf.ecq_assign`.
    """
    from .assign_fast import layer_lambda_fast

    target = _check_target(target)
    cap = None if max_layer_sparsity is None else _check_target(max_layer_sparsity)
    kernels = list(kernels)
    if not kernels:
        raise ValueError("kernels must hold at least one (w, centroids) pair")
    sizes = [int(np.size(w)) for w, _ in kernels]
    n_largest = max(sizes) if n_largest is None else int(n_largest)
    us = []
    for (w, c), n in zip(kernels, sizes):
        t = zero_thresholds(w, c).reshape(-1)
        a = layer_lambda_fast(w, c, 1.0, n, n_largest, s=s, reduce=reduce)
        if a > 0:
            u = t / a
        else:  # lambda_l = 0 whatever Lambda: only the nearest-neighbour zeros
            u = np.where(t < 0, -np.inf, np.inf)
        if cap is not None:
            # beyond its k-th smallest threshold no Lambda zeroes more of this layer; the weights
            # that are zero at lambda = 0 (t < 0, the smallest u) are zero whatever the cap
            k = max(_cap_count(cap, n), int(np.sum(t < 0)))
            if k < n:
                u = u.copy()
                u[np.argpartition(u, k)[k:] if k > 0 else slice(None)] = np.inf
        us.append(u)
    return _kth_threshold(np.concatenate(us), target)


def _cap_count(cap: float, n: int) -> int:
    return int(math.floor(cap * n + 1e-9))


def lambda_for_layer_cap(w: Any, centroids: Any, max_layer_sparsity: float) -> float:
    r"""The layer lambda at which the ECQ assignment of ``w`` has :math:`\lfloor S_{max} N
    \rfloor` zeros (:func:`lambda_for_sparsity` of that count): the most a capped layer gets in
    :func:`Lambda_for_model_sparsity`. ``inf`` for a cap of 1 (no limit)."""
    cap = _check_target(max_layer_sparsity)
    n = int(np.size(w))
    k = _cap_count(cap, n)
    if k >= n:
        return math.inf
    return lambda_for_sparsity(w, centroids, k / n if n else 0.0)


def lambda_for_sparsity(w: Any, centroids: Any, target: float) -> float:
    r"""The smallest :math:`\lambda \ge 0` (plus a relative margin :data:`LAMBDA_MARGIN`) at which
    the ECQ assignment of ``w`` has at least :math:`\lceil S^* N \rceil` zeros, :math:`S^*` =
    ``target`` in [0, 1]. 0.0 when the nearest-neighbour assignment already has them. When the
    target cannot be reached (weights that no :math:`\lambda` moves to zero), the lambda that
    zeroes every weight that can be zeroed.

    Raises:
        TypeError / ValueError: bad ``w`` or ``centroids`` (see :func:`ecqx_tf.ecq_assign`), a
            target outside [0, 1].
    """
    target = _check_target(target)
    return _kth_threshold(zero_thresholds(w, centroids).reshape(-1), target)


def sparsity_targets(target: Optional[Union[float, Mapping[str, float]]], names) -> Optional[dict]:
    """``{kernel key: target}`` from one share of zeros for every kernel or a mapping per kernel
    key (every key must be one of ``names``; kernels it omits keep the paper's lambda, ``None``).
    ``None`` -> ``None`` (no targets).

    Raises:
        ValueError: a target outside [0, 1], a key that is not a quantized kernel.
    """
    if target is None:
        return None
    names = list(names)
    if isinstance(target, Mapping):
        unknown = sorted(set(target) - set(names))
        if unknown:
            raise ValueError(f"target_sparsity names kernels the model does not quantize: {unknown}; quantized: {names}")
        out = {n: target.get(n) for n in names}
    else:
        out = {n: target for n in names}
    for n, v in out.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 <= v <= 1.0):
            raise ValueError(f"target_sparsity for {n!r} must be a number in [0, 1], got {v!r}")
    return {n: (None if v is None else float(v)) for n, v in out.items()}
