"""ECQ and ECQx assignment of weights to centroids (pure NumPy), docs/algorithm.md sections 2 and 3.

Sources: Becking et al., "ECQx: Explainability-Driven Quantization for Low-Bit and Sparse DNNs"
(arXiv 2109.04236, 2021); D. Becking, MSc thesis (2020), eqs. 4.4-4.18; Marban et al. (2020, EC2T).
docs/algorithm.md states every formula, DECISION and edge case implemented here.

Conventions:

* ``w`` is a float kernel of any shape (non-empty, finite); it is flattened in C order and the
  returned int32 indices have ``w``'s shape.
* ``centroids`` is a 1-D array of distinct finite values (or a :class:`ecqx_tf.grid.Grid`); the
  zero centroid (value exactly 0) is required where the zero cluster matters.
* All costs are float64: ``w`` and the centroids are converted exactly to float64 and
  :math:`(w - w_c)^2` is computed as ``d * d`` with ``d = w - w_c``.
* Ties go to the lowest centroid index, like ``np.argmin``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Tuple, Union

import numpy as np

from .config import validate_choice, validate_float_range, validate_int_range
from .grid import as_real_array

__all__ = [
    "LAMBDA_REDUCE",
    "RELEVANCE_EPS",
    "EcqxInfo",
    "cluster_probabilities",
    "ecq_assign",
    "ecq_costs",
    "ecqx_assign",
    "information",
    "layer_lambda",
    "nearest_assign",
    "beta_step",
    "check_centroids",
    "check_lambda_args",
    "entropy_term",
    "initial_beta",
    "lambda_from_counts",
    "probabilities_from_counts",
    "zero_index",
]

#: Reductions of the two one-sided lambda_max values (``"min"``: thesis, default).
LAMBDA_REDUCE: Tuple[str, ...] = ("min", "max")
#: The 1e-12 of :math:`R_n = |R| / (\max|R| + 10^{-12})` and :math:`(R_n + 10^{-12})^\beta`.
RELEVANCE_EPS: float = 1e-12


# ----------------------------------------------------------------------------------- validation
def check_centroids(centroids: Any) -> np.ndarray:
    """``centroids`` as a 1-D float64 array of distinct finite values (``ValueError``/``TypeError`` otherwise)."""
    c = as_real_array(centroids, "centroids")
    if c.ndim != 1:
        raise ValueError(f"centroids must be a 1-D array, got shape {c.shape}")
    if np.unique(c).size != c.size:
        raise ValueError(f"centroids must be distinct, got {c.tolist()}")
    return c


def zero_index(c: np.ndarray) -> int:
    """Index of the centroid 0 (exactly one is required)."""
    z = np.flatnonzero(c == 0.0)
    if z.size != 1:
        raise ValueError(f"centroids must contain the value 0 exactly once, got {c.tolist()}")
    return int(z[0])


def _weights(w: Any) -> Tuple[np.ndarray, Tuple[int, ...]]:
    a = as_real_array(w, "w")
    return a.ravel(), a.shape


def _sq_dist(w: np.ndarray, c: np.ndarray) -> np.ndarray:
    """[K, N] float64 :math:`(w_i - w_c)^2` as ``d * d`` with ``d = w_i - w_c`` (centroid-major:
    ``argmin`` over axis 0 of this layout is several times faster than over a short last axis)."""
    d = np.empty((c.size, w.size), dtype=np.float64)
    np.subtract(w[None, :], c[:, None], out=d)
    np.multiply(d, d, out=d)
    return d


# ----------------------------------------------------------------------------------- pieces
def nearest_assign(w: Any, centroids: Any) -> np.ndarray:
    """Nearest-neighbour assignment :math:`A(w) = \\arg\\min_c (w - w_c)^2` (ties: lowest index).

    Args:
        w: kernel, any shape. centroids: 1-D distinct values (or a Grid).

    Returns:
        int32 indices, shape of ``w``.

    Raises:
        TypeError / ValueError: non-real, empty or non-finite ``w`` / ``centroids``; duplicate
            or non-1-D ``centroids``.
    """
    c = check_centroids(centroids)
    x, shape = _weights(w)
    return np.argmin(_sq_dist(x, c), axis=0).astype(np.int32).reshape(shape)


def probabilities_from_counts(counts: np.ndarray, z: int, zero_bias: bool) -> np.ndarray:
    """Cluster probabilities :math:`P_c = n_c / N` from the nearest-neighbour counts (``zero_bias``:
    as :func:`cluster_probabilities`)."""
    n = int(counts.sum())
    P = counts / n
    n0 = int(counts[z])
    if zero_bias and 2 * n0 < n:  # P_0 < 0.5  (then N - n_0 > N/2 > 0)
        P = counts / (2.0 * (n - n0))
        P[z] = 0.5
    return P


def cluster_probabilities(w: Any, centroids: Any, zero_bias: bool = True) -> np.ndarray:
    """Cluster probabilities from the nearest-neighbour assignment (docs/algorithm.md section 2).

    .. math::  P_c = n_c / N, \\qquad n_c = \\#\\{i : \\mathrm{nearest}(w_i) = c\\}

    Zero bias (the clean form, a DECISION of docs/algorithm.md): if :math:`P_0 < 0.5` then :math:`P_0 = 0.5` and
    only the non-zero clusters are rescaled to sum to 0.5,
    :math:`P_c = n_c / (2 (N - n_0))` for :math:`c \\ne 0`. If :math:`P_0 \\ge 0.5` nothing changes
    (this includes the case where every non-zero P is 0, i.e. :math:`P_0 = 1`), so no division by
    zero can occur. Empty clusters keep :math:`P_c = 0`.

    Args:
        w: kernel, any shape. centroids: 1-D distinct values containing 0 (or a Grid).
        zero_bias: apply the zero bias (default True, as the authors' ``get_pmf``).

    Returns:
        float64 array of shape [K].
    """
    c = check_centroids(centroids)
    z = zero_index(c)
    x, _ = _weights(w)
    nn = np.argmin(_sq_dist(x, c), axis=0)
    return probabilities_from_counts(np.bincount(nn, minlength=c.size), z, bool(zero_bias))


def information(P: Any) -> np.ndarray:
    """Information content :math:`I_c = -\\log_2 P_c` (float64), :math:`+\\infty` where :math:`P_c = 0`.

    Raises:
        ValueError: P outside [0, 1] or not finite.
    """
    p = as_real_array(P, "P")
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"P must lie in [0, 1], got range [{p.min()}, {p.max()}]")
    with np.errstate(divide="ignore"):
        out = -np.log2(p)
    return out + 0.0  # -0.0 -> 0.0


def _check_P(P: Any, k: int) -> np.ndarray:
    p = as_real_array(P, "P")
    if p.shape != (k,):
        raise ValueError(f"P must have shape ({k},) (one per centroid), got {p.shape}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"P must lie in [0, 1], got range [{p.min()}, {p.max()}]")
    return p


def layer_lambda(
    w: Any,
    centroids: Any,
    Lambda: float,
    n_weights: int,
    n_largest: int,
    s: float = 0.05,
    reduce: str = "min",
) -> float:
    """The layer's entropy weight :math:`\\lambda_l = \\Lambda \\, \\delta_l \\, \\lambda_{max,l}` (docs/algorithm.md section 2).

    .. math::
        \\delta_l = \\frac{N_l / \\max_{l'} N_{l'} + s}{1 + s}

        \\lambda_{max,n} = \\frac{w_{min}^2 - (w_{min} - w_n)^2}{I_n - I_0}, \\qquad
        \\lambda_{max,p} = \\frac{w_{max}^2 - (w_{max} - w_p)^2}{I_p - I_0}

        \\lambda_{max} = \\min(\\lambda_{max,n}, \\lambda_{max,p}) \\;(\\text{or } \\max)

    :math:`w_{min}, w_{max}`: smallest / largest weight; :math:`w_n, w_p`: most negative / most
    positive centroid used by the nearest-neighbour assignment; :math:`I` from the zero-biased
    :func:`cluster_probabilities`. :math:`\\lambda_{max,n}` is the lambda at which the most negative
    weight becomes as cheap at 0 as at :math:`w_n` (Becking MSc thesis 2020; DECISION: ``min`` as in
    the thesis, ``max`` optional; the ECQx code takes the max with a misplaced parenthesis).

    Edge cases (no NaN, result always finite and >= 0):

    * no negative (positive) centroid used -> the n (p) term is absent and the other term alone
      decides; no non-zero centroid used at all -> :math:`\\lambda_{max} = 0`;
    * :math:`I_n \\le I_0` (only possible as :math:`P_n = P_0 = 0.5`, where the entropy term cannot
      separate the two clusters) -> that term is 0, hence :math:`\\lambda_{max} = 0`;
    * a negative numerator (only by float rounding, since the extreme weight is nearest to its
      extreme centroid) is clipped to 0: a negative lambda would reward information content.

    Args:
        w: the layer's float kernel (any shape). centroids: 1-D, containing 0 (or a Grid).
        Lambda: :math:`\\Lambda \\ge 0`, the user's hyper-parameter (authors' default 0.05).
        n_weights: :math:`N_l` (usually ``w.size``). n_largest: :math:`\\max_{l'} N_{l'}` (>= n_weights).
        s: :math:`s \\ge 0` (default 0.05). reduce: ``"min"`` (default) or ``"max"``.

    Returns:
        :math:`\\lambda_l` as a float.

    Raises:
        TypeError / ValueError: bad types or values, naming the argument.
    """
    Lam, n_weights, n_largest, s, reduce = check_lambda_args(Lambda, n_weights, n_largest, s, reduce)
    c = check_centroids(centroids)
    z = zero_index(c)
    x, _ = _weights(w)
    nn = np.argmin(_sq_dist(x, c), axis=0)
    counts = np.bincount(nn, minlength=c.size)
    return lambda_from_counts(counts, c, z, float(x.min()), float(x.max()), Lam, n_weights, n_largest, s, reduce)


def check_lambda_args(Lambda: Any, n_weights: Any, n_largest: Any, s: Any, reduce: Any) -> Tuple[float, int, int, float, str]:
    """Validated ``(Lambda, n_weights, n_largest, s, reduce)`` of :func:`layer_lambda`."""
    Lam = validate_float_range("Lambda", Lambda, low=0)
    s = validate_float_range("s", s, low=0)
    n_weights = validate_int_range("n_weights", n_weights, low=1)
    n_largest = validate_int_range("n_largest", n_largest, low=1)
    if n_largest < n_weights:
        raise ValueError(f"n_largest must be >= n_weights ({n_weights}), got {n_largest}")
    validate_choice("reduce", reduce, LAMBDA_REDUCE)
    return Lam, n_weights, n_largest, s, reduce


def lambda_from_counts(
    counts: np.ndarray,
    c: np.ndarray,
    z: int,
    w_min: float,
    w_max: float,
    Lam: float,
    n_weights: int,
    n_largest: int,
    s: float,
    reduce: str,
) -> float:
    """:func:`layer_lambda` from the nearest-neighbour counts and the extreme weights (validated
    arguments). Shared by the reference and the fast path (``ecqx_tf.assign_fast``), so both
    evaluate the same float64 expression."""
    I = information(probabilities_from_counts(counts, z, True))
    used = counts > 0

    terms = []
    for side_mask, w_ext, pick in ((used & (c < 0), w_min, np.argmin), (used & (c > 0), w_max, np.argmax)):
        if not side_mask.any():
            continue  # term absent
        cand = np.flatnonzero(side_mask)
        k = int(cand[pick(c[cand])])
        denom = float(I[k] - I[z])
        num = w_ext * w_ext - (w_ext - float(c[k])) * (w_ext - float(c[k]))
        terms.append(max(0.0, num / denom) if denom > 0 else 0.0)
    lam_max = 0.0 if not terms else (min(terms) if reduce == "min" else max(terms))
    delta = (n_weights / n_largest + s) / (1.0 + s)
    return float(Lam * delta * lam_max)


def entropy_term(lam: float, P: np.ndarray) -> np.ndarray:
    """[K] :math:`\\lambda I_c`, :math:`+\\infty` for empty clusters; all 0 when lam == 0."""
    if lam == 0:
        return np.zeros(P.shape)
    return np.where(P > 0, lam * information(np.where(P > 0, P, 1.0)), np.inf)


def _costs(x: np.ndarray, c: np.ndarray, lam: float, P: np.ndarray) -> np.ndarray:
    """[K, N] ECQ costs."""
    cost = _sq_dist(x, c)
    if lam > 0:
        cost += entropy_term(lam, P)[:, None]
    return cost


def ecq_costs(w: Any, centroids: Any, lam: float, P: Any = None) -> np.ndarray:
    """ECQ cost matrix :math:`C_c(w_i) = (w_i - w_c)^2 + \\lambda I_c` (docs/algorithm.md section 2).

    :math:`I_c = -\\log_2 P_c`; clusters with :math:`P_c = 0` get :math:`+\\infty` cost when
    :math:`\\lambda > 0` (never chosen). With :math:`\\lambda = 0` the cost is exactly the squared
    distance (no :math:`0 \\cdot \\infty`), so ECQ reduces to nearest-neighbour.

    Args:
        w: kernel, any shape (flattened in C order). centroids: 1-D (or a Grid).
        lam: the layer's :math:`\\lambda \\ge 0` (see :func:`layer_lambda`).
        P: cluster probabilities [K]; default: the zero-biased :func:`cluster_probabilities`
            (needs a zero centroid).

    Returns:
        float64 [N, K] with N = ``w.size``.
    """
    lam = validate_float_range("lam", lam, low=0)
    c = check_centroids(centroids)
    x, _ = _weights(w)
    if P is None:
        z = zero_index(c)
        nn = np.argmin(_sq_dist(x, c), axis=0)
        P = probabilities_from_counts(np.bincount(nn, minlength=c.size), z, True)
    else:
        P = _check_P(P, c.size)
    return _costs(x, c, lam, P).T


def _ecq_parts(x: np.ndarray, c: np.ndarray, lam: float):
    """Zero-column cost C_0, best non-zero cost m and its centroid index j (lowest on ties)."""
    z = zero_index(c)
    cost = _sq_dist(x, c)
    P = probabilities_from_counts(np.bincount(np.argmin(cost, axis=0), minlength=c.size), z, True)
    if lam > 0:
        cost += entropy_term(lam, P)[:, None]
    c0 = cost[z].copy()
    if c.size == 1:  # only the zero centroid: everything is zero
        return z, c0, np.full(x.shape, np.inf), np.full(x.shape, z)
    cost[z] = np.inf
    j = np.argmin(cost, axis=0)
    m = np.take_along_axis(cost, j[None, :], axis=0)[0]
    # a row whose non-zero costs are all +inf ties with the masked zero column; argmin over the
    # non-zero columns alone returns the first non-zero index there
    first_other = 1 if z == 0 else 0
    np.copyto(j, first_other, where=j == z)
    return z, c0, m, j


def _pick_zero(c0: np.ndarray, m: np.ndarray, z_before_j: np.ndarray) -> np.ndarray:
    """Where ``argmin`` over [C_0 at column z, the other columns] returns z."""
    return (c0 < m) | ((c0 == m) & z_before_j)


def ecq_assign(w: Any, centroids: Any, lam: float) -> np.ndarray:
    """ECQ assignment :math:`A(w) = \\arg\\min_c \\,(w - w_c)^2 + \\lambda I_c` (docs/algorithm.md section 2).

    P from the zero-biased nearest-neighbour assignment of ``w``. ``lam == 0`` gives exactly
    :func:`nearest_assign` (ties included).

    Returns:
        int32 indices, shape of ``w``.

    Raises:
        TypeError / ValueError: bad ``w``, ``centroids`` (must contain 0) or ``lam`` (finite >= 0).
    """
    lam = validate_float_range("lam", lam, low=0)
    c = check_centroids(centroids)
    x, shape = _weights(w)
    z, c0, m, j = _ecq_parts(x, c, lam)
    idx = np.where(_pick_zero(c0, m, z < j), z, j)
    return idx.astype(np.int32).reshape(shape)


# ----------------------------------------------------------------------------------- ECQx
@dataclasses.dataclass(frozen=True)
class EcqxInfo:
    """Diagnostics of one :func:`ecqx_assign` call.

    Attributes:
        beta: the :math:`\\beta` of the returned assignment.
        beta_initial: :math:`\\beta_0 = \\ln 0.5 / \\ln \\mathrm{mean}(R_n)` (0.0 for degenerate relevance).
        iterations: number of evaluated betas (1..max_iter).
        converged: whether :math:`S_x \\in [S_{ecq} - p, S_{ecq}]` was reached.
        sparsity_ecq: :math:`S_{ecq}`, share of zeros of the plain ECQ assignment.
        sparsity_ecqx: :math:`S_x` of the returned assignment.
    """

    beta: float
    beta_initial: float
    iterations: int
    converged: bool
    sparsity_ecq: float
    sparsity_ecqx: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def initial_beta(mean_rn: float) -> float:
    """ECQx's first :math:`\\beta = \\log 0.5 / \\log \\overline{R_n}` (0 when the
    mean is 0 or >= 1: the relevances then carry no ranking)."""
    if 0.0 < mean_rn < 1.0:
        return math.log(0.5) / math.log(mean_rn)
    # mean Rn == 0: all relevance zero (ln 0 = -inf, the IEEE limit is beta = -0.0);
    # mean Rn >= 1: every |R| equal and rounded to 1 (ln 1 = 0, beta would be -inf).
    # Both carry no ranking: beta = 0, i.e. the zero cost is doubled uniformly (the authors'
    # form under constant relevance, docs/algorithm.md section 3).
    return 0.0


def beta_step(iteration: int) -> float:
    """Multiplicative step of the 1-based iteration that just failed the band test."""
    return 0.1 if iteration <= 20 else (0.5 if iteration <= 40 else 0.75)


def ecqx_assign(
    w: Any,
    centroids: Any,
    lam: float,
    relevance: Any,
    p: float = 0.1,
    max_iter: int = 50,
    return_info: bool = False,
) -> Union[np.ndarray, Tuple[np.ndarray, EcqxInfo]]:
    """ECQx assignment: ECQ with a relevance-adjusted zero cost (docs/algorithm.md section 3).

    .. math::
        C'_0(w) = C_0(w) \\cdot 2 \\cdot (R_n(w) + 10^{-12})^{\\beta}, \\quad C'_c = C_c \\;(c \\ne 0),
        \\quad R_n = \\frac{|R|}{\\max|R| + 10^{-12}}, \\quad A(w) = \\arg\\min_c C'_c(w)

    Beta search (Becking et al. 2021, Sec. 3; authors' ``apply_entropy_constraint``):
    :math:`\\beta_0 = \\ln 0.5 / \\ln \\mathrm{mean}(R_n)`; for iteration t = 1..``max_iter``:
    assign with :math:`\\beta_t`, :math:`S_x` = share of zeros; stop if
    :math:`S_{ecq} - p \\le S_x \\le S_{ecq}`; else
    :math:`\\beta \\leftarrow \\min(1, \\beta (1 + \\sigma_t\\,\\mathrm{sign}(S_{ecq} - S_x)))` with
    :math:`\\sigma_t = 0.1` (t <= 20), 0.5 (t <= 40), 0.75 (t > 40). :math:`\\beta_0` itself is not
    clipped (as in the authors' code). If the band is never reached, the assignment of the last
    evaluated beta is returned with ``converged=False``.

    Degenerate cases: all-zero relevance (mean :math:`R_n = 0`) and float-saturated uniform
    relevance (mean :math:`R_n = 1`) give :math:`\\beta_0 = 0` (factor exactly 2, which the update
    cannot move); a weight with :math:`C_0 = 0` keeps :math:`C'_0 = 0` (no :math:`0 \\cdot \\infty`).
    NaN/inf relevance is rejected.

    The result equals ``np.argmin`` over the adjusted [N, K] cost matrix exactly (lowest index on
    ties); it is computed from the beta-independent best non-zero cost per weight, so each beta
    costs one power and one comparison.

    Args:
        w: kernel, any shape. centroids: 1-D containing 0 (or a Grid). lam: :math:`\\lambda \\ge 0`.
        relevance: weight relevance R, same shape as ``w`` (sign ignored).
        p: largest allowed sparsity drop, in [0, 1] (default 0.1).
        max_iter: at most this many betas are evaluated (int >= 1, default 50).
        return_info: also return an :class:`EcqxInfo`.

    Returns:
        int32 indices of ``w``'s shape, or ``(indices, EcqxInfo)``.

    Raises:
        TypeError / ValueError: bad ``w``/``centroids``/``lam``; ``relevance`` not finite or of
            another shape; ``p`` outside [0, 1]; ``max_iter`` < 1.
    """
    lam = validate_float_range("lam", lam, low=0)
    p = validate_float_range("p", p, 0, 1)
    max_iter = validate_int_range("max_iter", max_iter, low=1)
    c = check_centroids(centroids)
    x, shape = _weights(w)
    r = as_real_array(relevance, "relevance")
    if r.shape != shape:
        raise ValueError(f"relevance must have the shape of w {shape}, got {r.shape}")

    z, c0, m, j = _ecq_parts(x, c, lam)
    n = x.size
    z_before_j = z < j
    is_zero_ecq = _pick_zero(c0, m, z_before_j)
    s_ecq = np.count_nonzero(is_zero_ecq) / n
    lo = s_ecq - p

    absr = np.abs(r.ravel())
    rn = absr / (absr.max() + RELEVANCE_EPS)
    base = rn + RELEVANCE_EPS
    beta0 = initial_beta(float(np.mean(rn)))

    c0x2 = c0 * 2.0
    c0_is_zero = c0 == 0.0
    any_c0_zero = bool(c0_is_zero.any())

    beta = beta0
    evaluated_beta = None
    is_zero = is_zero_ecq
    s_x = s_ecq
    converged = False
    iterations = 0
    for t in range(1, max_iter + 1):
        iterations = t
        if beta != evaluated_beta:  # identical beta -> identical assignment
            adj = c0x2 * np.power(base, beta)
            if any_c0_zero:
                adj[c0_is_zero] = 0.0
            is_zero = _pick_zero(adj, m, z_before_j)
            s_x = np.count_nonzero(is_zero) / n
            evaluated_beta = beta
        if lo <= s_x <= s_ecq:
            converged = True
            break
        if t < max_iter:
            sign = 1.0 if s_ecq - s_x > 0 else -1.0
            beta = min(1.0, beta * (1.0 + beta_step(t) * sign))

    idx = np.where(is_zero, z, j).astype(np.int32).reshape(shape)
    if not return_info:
        return idx
    info = EcqxInfo(
        beta=float(evaluated_beta),
        beta_initial=float(beta0),
        iterations=iterations,
        converged=converged,
        sparsity_ecq=float(s_ecq),
        sparsity_ecqx=float(s_x),
    )
    return idx, info
