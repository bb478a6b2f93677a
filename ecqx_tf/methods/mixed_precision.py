r"""Mixed precision: one bit width per layer (2..8) chosen from relevance under a budget of weight
bytes, then ECQ/ECQx training at those widths.

**Cost.** Layer :math:`l` with :math:`n_l` kernel weights at :math:`b` bits costs
:math:`\lceil n_l b / 8 \rceil` bytes (``cost="packed"``: bit-packed indices, which is what TFLM's
LUT compression stores for :math:`b \le 7`, value tables not counted), or ``cost="tflm"``: what
the plain TFLM export stores, INT4 (:math:`\lceil n_l/2 \rceil` bytes) for :math:`b \le 4` and INT8
(:math:`n_l` bytes) above.

**Distortion** (our relevance-driven criterion). With the weight relevance :math:`R_{ij}`
(LRP or DeepLIFT, summed over reference data) write :math:`R_{ij} = w_{ij} g_{ij}`; to first order,
moving :math:`w_{ij}` to its quantized value :math:`q_b(w_{ij})` (nearest point of the ``b``-bit
symmetric grid of ``ecqx_tf.make_grid``) changes the connection's relevance by
:math:`g_{ij} (q_b(w_{ij}) - w_{ij})`. The layer's distortion is

.. math::

    D_l(b) = \sum_{ij} |g_{ij}|\, |q_b(w_{ij}) - w_{ij}|

(``criterion="magnitude"``: :math:`g = 1`, i.e. the L1 quantization error, the non-explanation
baseline). Sabih et al. 2020 choose per-layer bit widths from DeepLIFT relevance; the exact form
above is ours.

**Allocation** (:func:`allocate_bits`): minimize :math:`\sum_l D_l(b_l)` subject to
:math:`\sum_l \mathrm{cost}_l(b_l) \le B` by exact dynamic programming over the byte budget (a
multiple-choice knapsack), ties to fewer bytes. A budget below every layer at the smallest width
raises ``ValueError`` naming the minimum.

**Training** (:func:`quantize_mixed`): ``ECQQuantizeConfig(bits=b_l)`` per layer, built with
:func:`ecqx_tf.keras.api.quantize_per_layer`; the result is an ordinary model in ECQ training
(``quantization_info`` carries each layer's bits, so ``ecqx-export`` handles it unchanged).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from .. import layers as _layers
from .. import names
from ..assign import nearest_assign
from ..config import BITS_RANGE
from ..grid import make_grid
from ..registry import Registry
from .criteria import relevance_gradient

__all__ = [
    "COSTS",
    "layer_cost",
    "budget_for",
    "distortions",
    "allocate_bits",
    "choose_bits",
    "quantize_mixed",
]

#: name -> ``fn(n_weights, bits) -> bytes``
COSTS: Registry = Registry("weight cost model", known=names.WEIGHT_COSTS, known_in="ecqx_tf/names.py")
COSTS.register("packed")(lambda n, b: int(math.ceil(n * b / 8)))
COSTS.register("tflm")(lambda n, b: int(math.ceil(n / 2)) if b <= 4 else int(n))


def layer_cost(n_weights: int, bits: int, cost: str = "packed") -> int:
    """Bytes of ``n_weights`` weights at ``bits`` bits under cost model ``cost`` (:data:`COSTS`)."""
    return COSTS.get(cost)(int(n_weights), int(bits))


def budget_for(sizes: Mapping[str, int], bits: float, cost: str = "packed") -> int:
    """The byte budget of every layer at ``bits`` bits (e.g. the uniform 4-bit model's bytes)."""
    if float(bits).is_integer():
        return int(sum(layer_cost(n, int(bits), cost) for n in sizes.values()))
    return int(math.floor(sum(n * float(bits) / 8 for n in sizes.values())))


def _check_choices(choices: Sequence[int]) -> Tuple[int, ...]:
    out = tuple(sorted(set(int(b) for b in choices)))
    if not out or out[0] < BITS_RANGE[0] or out[-1] > BITS_RANGE[1]:
        raise ValueError(f"bit choices must lie in {BITS_RANGE[0]}..{BITS_RANGE[1]}, got {list(choices)}")
    return out


def distortions(
    kernels: Mapping[str, np.ndarray],
    gradients: Mapping[str, np.ndarray],
    choices: Sequence[int] = tuple(range(2, 9)),
    grid: str = "symmetric",
) -> Dict[str, Dict[int, float]]:
    r""":math:`D_l(b) = \sum |g| |q_b(w) - w|` for every layer and bit width (float64)."""
    bits = _check_choices(choices)
    out: Dict[str, Dict[int, float]] = {}
    for n, w in kernels.items():
        w64 = np.asarray(w, np.float64)
        g = np.abs(np.asarray(gradients[n], np.float64))
        if g.shape != w64.shape:
            raise ValueError(f"layer {n!r}: relevance gradient shape {g.shape} != kernel shape {w64.shape}")
        out[n] = {}
        for b in bits:
            grid_b = make_grid(np.asarray(w, np.float32), b, grid)
            c = grid_b.centroids.astype(np.float64)
            q = c[nearest_assign(np.asarray(w, np.float32), grid_b.centroids)]
            out[n][b] = float(np.sum(g * np.abs(q - w64)))
    return out


def allocate_bits(
    distortion: Mapping[str, Mapping[int, float]],
    sizes: Mapping[str, int],
    budget_bytes: int,
    cost: str = "packed",
) -> Dict[str, int]:
    """Bits per layer minimizing the total distortion with total bytes <= ``budget_bytes``
    (exact dynamic programming; among equal distortions the fewest bytes).

    Raises:
        ValueError: a budget below the cheapest allocation (names it), unknown cost model, layers
            of ``distortion`` and ``sizes`` that differ.
    """
    COSTS.get(cost)
    names = list(distortion)
    if set(names) != set(sizes):
        raise ValueError(f"distortion has layers {sorted(names)}, sizes {sorted(sizes)}")
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, (int, np.integer)):
        raise TypeError(f"budget_bytes must be an int, got {budget_bytes!r}")
    options = {n: sorted((layer_cost(sizes[n], b, cost), float(d), b) for b, d in distortion[n].items()) for n in names}
    minimum = sum(o[0][0] for o in options.values())
    if budget_bytes < minimum:
        cheapest = {n: min(distortion[n]) for n in names}
        raise ValueError(
            f"budget of {budget_bytes} weight bytes cannot be met: even {cheapest} needs {minimum} bytes "
            f"({cost} cost); raise the budget to at least {minimum}"
        )
    B = int(budget_bytes) - minimum  # work with the excess over the cheapest choice
    inf = np.inf
    best = np.zeros(B + 1)  # best[c] = minimal distortion with excess cost <= c
    choice = []
    for n in names:
        base = options[n][0][0]
        new = np.full(B + 1, inf)
        arg = np.zeros(B + 1, np.int64)
        for k, (c, d, b) in enumerate(options[n]):
            extra = c - base
            if extra > B:
                continue
            cand = np.full(B + 1, inf)
            cand[extra:] = best[: B + 1 - extra] + d
            better = cand < new
            new = np.where(better, cand, new)
            arg = np.where(better, k, arg)
        best = new
        choice.append(arg)
    # backtrack from the smallest excess that reaches the optimum
    c = int(np.flatnonzero(best <= best[B] * (1 + 1e-12) + 1e-300)[0]) if np.isfinite(best[B]) else B
    out: Dict[str, int] = {}
    for n, arg in zip(reversed(names), reversed(choice)):
        k = int(arg[c])
        cost_k, _, b = options[n][k]
        out[n] = int(b)
        c -= cost_k - options[n][0][0]
    return {n: out[n] for n in names}


def choose_bits(
    model: tf.keras.Model,
    budget_bytes: Optional[int] = None,
    x: Optional[np.ndarray] = None,
    y: Optional[np.ndarray] = None,
    criterion: str = "lrp",
    avg_bits: float = 4.0,
    choices: Sequence[int] = tuple(range(2, 9)),
    cost: str = "packed",
    grid: str = "symmetric",
    **criterion_options: Any,
) -> Tuple[Dict[str, int], Dict[str, Any]]:
    """Bits per kernel layer of ``model`` under ``budget_bytes`` (default: the bytes of every layer
    at ``avg_bits``). Returns ``(bits, details)`` with the distortions, sizes, budget and the chosen
    bytes. A layer with several quantized kernels (SeparableConv2D) gets one width: its size and
    distortion are the sums over its kernels.

    Raises:
        ValueError: unreachable budget, unknown criterion/cost, missing data for a data criterion.
    """
    entries = _layers.model_kernels(model)
    layer_of = {k: l.name for k, l, _ in entries}
    names = list(dict.fromkeys(layer_of.values()))
    kernels = {k: getattr(l, a).numpy() for k, l, a in entries}
    sizes = {n: int(sum(kernels[k].size for k in kernels if layer_of[k] == n)) for n in names}
    budget = budget_for(sizes, avg_bits, cost) if budget_bytes is None else budget_bytes
    grads = relevance_gradient(model, x, y, criterion=criterion, layers=list(kernels), **criterion_options)
    per_kernel = distortions(kernels, grads, choices, grid)
    dist = {n: {b: float(sum(per_kernel[k][b] for k in kernels if layer_of[k] == n)) for b in per_kernel[next(iter(kernels))]}
            for n in names}
    bits = allocate_bits(dist, sizes, int(budget), cost)
    details = {
        "budget_bytes": int(budget),
        "bytes": int(sum(layer_cost(sizes[n], bits[n], cost) for n in names)),
        "cost": cost,
        "sizes": sizes,
        "distortion": {n: {str(b): v for b, v in d.items()} for n, d in dist.items()},
        "criterion": criterion,
    }
    return bits, details


def quantize_mixed(
    model: tf.keras.Model,
    bits: Mapping[str, int],
    method: str = "ecqx",
    Lambda: float = 0.05,
    p: float = 0.1,
    grid: str = "symmetric",
    relevance_data: Optional[Tuple[np.ndarray, np.ndarray]] = None,
    **config: Any,
) -> tf.keras.Model:
    """A model in ECQ/ECQx training with ``bits[name]`` bits for layer ``name`` (layers not in
    ``bits`` keep tfmot's 8-bit default). ``model`` is not modified.

    Raises:
        ValueError / TypeError: as :func:`ecqx_tf.quantize` for each layer's settings.
    """
    from ..keras.quantize_config import ECQQuantizeConfig
    from ._qat import quantize_per_layer

    configs = {n: ECQQuantizeConfig(bits=int(b), grid=grid, method=method, Lambda=Lambda, p=p, **config)
               for n, b in bits.items()}
    return quantize_per_layer(model, configs, relevance_data=relevance_data)
