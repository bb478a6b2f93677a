r"""Linear-time ECQ / ECQx assignment, exactly equal to the reference functions of
:mod:`ecqx_tf.assign` (same int32 indices, same :class:`~ecqx_tf.assign.EcqxInfo`).

The reference builds a ``[K, N]`` float64 cost matrix (twice per refresh: once for
:func:`~ecqx_tf.assign.layer_lambda`, once for the assignment). This module needs neither:

**Lower envelope.** On any set of centroids :math:`w_c` with per-cluster constants
:math:`e_c` (:math:`e_c = \lambda I_c` for ECQ, 0 for nearest neighbour), the cost
:math:`C_c(w) = (w - w_c)^2 + e_c` is a parabola with the same curvature for every cluster, so
:math:`C_a - C_b` is linear in :math:`w` and every cluster wins on at most one interval. The
winners in ascending :math:`w_c` order and the boundaries between consecutive winners,

.. math::  b_{ab} = \frac{w_a + w_b}{2} + \frac{e_b - e_a}{2 (w_b - w_a)},

are the lower envelope (convex-hull trick, :math:`O(K)` after sorting). The assignment of a
weight is the winner of the interval that contains it: :math:`O(1)` per weight with a lookup
table of uniform bins over ``[min w, max w]`` (bins that contain a boundary fall back to a binary
search over the at most :math:`K-1` boundaries).

**Exactness.** The reference compares float64 costs ``d * d + e`` (``d = w - w_c``), which carry a
rounding error of a few ulps. Every non-winning cluster's cost exceeds the winner's by at least
:math:`2 s \delta`, where :math:`s` is the smallest spacing of the selectable centroids and
:math:`\delta` the distance of the weight to the nearest boundary (the excess of a cluster over the
envelope is convex and piecewise linear with slopes :math:`2 (w_c - w_{c'})`). So outside a window
:math:`|w - b| \le \tau` with :math:`\tau = 2^{-40} (U / s + |w_a| + |w_b| + |e_b - e_a| / (w_b - w_a) + |b|)`
(:math:`U` bounds the envelope cost over the weights' range; the factor :math:`2^{-40}` leaves
several thousand times the float64 rounding error) the reference's argmin is the envelope's winner,
and the few weights inside a window are re-evaluated with the reference formula itself (lowest
index on ties). Windows are rounded outward to the weights' dtype, so all decisions are exact
comparisons.

**ECQx.** Only the zero cluster's cost changes, so per weight the reference needs the best
non-zero cluster :math:`j` (envelope of the non-zero clusters), its cost :math:`m`, and the zero
cost :math:`C_0`. Zero is chosen at :math:`\beta` iff :math:`2 C_0 b^\beta < m` (ties: lowest
index), :math:`b = R_n + 10^{-12}`; for :math:`b < 1` this is :math:`\beta > t = \ln(m / 2C_0) /
\ln b`. Each weight's switching point :math:`t` is computed once in float32, within a proven error
bound of the reference's (:func:`_ecqx_thresholds`), and a histogram of :math:`t` (the top 16 bits
of its float pattern) bounds the zero count at any :math:`\beta` in :math:`O(1)`. A round of the
beta search is decided from these bounds unless they straddle an edge of the band
:math:`[S_{ecq} - p, S_{ecq}]`; then, and for the final beta, the count is exact: one comparison
per weight, and the reference formula (``np.power``) for the weights whose :math:`t` lies within
the error bound of :math:`\beta`. Weights where the logarithmic form is not reliable (relevance
within 2 % of the maximum, :math:`m` below the normal float range) are evaluated with the
reference formula in every round.

Memory is :math:`O(N)`: the work runs over chunks of :data:`CHUNK` weights in the kernel's own
dtype (float32 for Keras kernels), plus a few length-N arrays (indices, and for ECQx the
thresholds and the float64 relevance).
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from . import assign as ref
from .assign import (
    RELEVANCE_EPS,
    EcqxInfo,
)
from .assign import beta_step as _beta_step
from .assign import check_centroids as _centroids
from .assign import check_lambda_args as _lambda_args
from .assign import entropy_term as _entropy_term
from .assign import initial_beta as _initial_beta
from .assign import lambda_from_counts as _lambda_from_counts
from .assign import probabilities_from_counts as _probabilities_from_counts
from .assign import zero_index as _zero_index
from .config import validate_float_range, validate_int_range
from .grid import as_real_array as _as_real_array
from .registry import Registry

__all__ = [
    "ASSIGNMENTS",
    "CHUNK",
    "LayerAssignment",
    "assign_layer",
    "assign_layer_reference",
    "ecq_assign_fast",
    "ecqx_assign_fast",
    "layer_lambda_fast",
    "nearest_assign_fast",
    "nearest_counts",
    "pass_times",
]

#: Weights processed per chunk (the working set of one chunk stays in the L2 cache).
CHUNK: int = 65536
#: Uniform bins of the lookup table over ``[min w, max w]``.
LUT_BINS: int = 32768
#: Relative size of the exact re-evaluation window around an envelope boundary (times the
#: scale of the boundary's float64 error, see the module docstring).
WINDOW_REL: float = 2.0**-40
#: :math:`-\ln(R_n + 10^{-12})` below this (relevance above 98 % of the maximum): the ECQx
#: decision of the weight is evaluated with the reference formula in every round.
LOG_BASE_MIN: float = 0.02


# ----------------------------------------------------------------------------------- inputs
def _work_array(w: Any) -> Tuple[np.ndarray, Tuple[int, ...], float, float]:
    """Flat C-order weights in float32 (if given as float32) or float64, validated like the
    reference (real dtype, non-empty, finite), with their minimum and maximum."""
    a = np.asarray(w)
    if a.dtype == np.float32 or a.dtype == np.float64:
        if a.size == 0:
            raise ValueError(f"w must not be empty, got shape {a.shape}")
        x = np.ascontiguousarray(a).reshape(-1)
    else:
        x = _as_real_array(a, "w").reshape(-1)  # other dtypes: float64 exactly as the reference
    lo, hi = np.min(x), np.max(x)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        _as_real_array(a, "w")  # raises the reference's message
    return x, a.shape, float(lo), float(hi)


def _for_dtype(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The weights in the dtype the fast path works in: float32 only if the centroids are
    float32 values too (the float32 error bounds assume exact centroids)."""
    if x.dtype == np.float32 and not np.array_equal(c.astype(np.float32).astype(np.float64), c):
        return x.astype(np.float64)
    return x


def _round_down(v: np.ndarray, dtype) -> np.ndarray:
    with np.errstate(over="ignore"):
        r = v.astype(dtype)
    bad = r.astype(np.float64) > v
    if bad.any():
        r[bad] = np.nextafter(r[bad], np.dtype(dtype).type(-np.inf))
    return r


def _round_up(v: np.ndarray, dtype) -> np.ndarray:
    with np.errstate(over="ignore"):
        r = v.astype(dtype)
    bad = r.astype(np.float64) < v
    if bad.any():
        r[bad] = np.nextafter(r[bad], np.dtype(dtype).type(np.inf))
    return r


# ----------------------------------------------------------------------------------- envelope
@dataclasses.dataclass
class _Envelope:
    members: np.ndarray  # cluster indices (original order), ascending centroid value
    bounds: np.ndarray  # float64 [len(members) - 1]
    taus: np.ndarray  # float64 window half-widths


def _envelope(c: np.ndarray, e: np.ndarray, allowed: np.ndarray, xmin: float, xmax: float) -> _Envelope:
    """Lower envelope of :math:`(x - c_k)^2 + e_k` over the ``allowed`` clusters (finite ``e``)."""
    ks = np.flatnonzero(allowed)
    ks = ks[np.argsort(c[ks], kind="stable")]
    hull: List[int] = []
    bnds: List[float] = []

    def cross(a: int, b: int) -> float:
        return float((c[a] + c[b]) / 2.0 + (e[b] - e[a]) / (2.0 * (c[b] - c[a])))

    for k in ks:
        k = int(k)
        while len(hull) >= 2 and cross(hull[-1], k) <= bnds[-1]:
            hull.pop()
            bnds.pop()
        if hull:
            bnds.append(cross(hull[-1], k))
        hull.append(k)
    members = np.asarray(hull, dtype=np.int64)
    bounds = np.asarray(bnds, dtype=np.float64)
    if bounds.size == 0:
        return _Envelope(members, bounds, bounds.copy())
    cs = c[ks]
    s_min = float(np.min(np.diff(cs)))
    # U >= the envelope's cost anywhere in [xmin, xmax]
    with np.errstate(over="ignore"):  # an infinite U only widens the windows (exact everywhere)
        U = float(np.min(np.maximum((xmin - cs) ** 2, (xmax - cs) ** 2) + e[ks]))
    a, b = c[members[:-1]], c[members[1:]]
    ea, eb = e[members[:-1]], e[members[1:]]
    scale = U / s_min + np.abs(a) + np.abs(b) + np.abs(eb - ea) / (b - a) + np.abs(bounds)
    return _Envelope(members, bounds, WINDOW_REL * scale)


class _Lookup:
    """Piecewise-constant map weight -> envelope winner, with exact-evaluation windows.

    ``edges`` (work dtype) alternate window start (inclusive) and end (exclusive):
    ``[lo_0, hi_0, lo_1, hi_1, ...]``; ``region[g]`` is the winner between window ``g-1`` and ``g``.
    A table of :data:`LUT_BINS` uniform bins over ``[xmin, xmax]`` holds the winner of every bin
    whose neighbourhood (two bins either side) contains no edge, -1 otherwise.
    """

    def __init__(self, env: _Envelope, xmin: float, xmax: float, dtype):
        self.dtype = np.dtype(dtype)
        members = env.members
        lo = _round_down(env.bounds - env.taus, self.dtype)
        hi = _round_up(env.bounds + env.taus, self.dtype)
        hi = np.nextafter(hi, self.dtype.type(np.inf))  # exclusive end
        groups: List[List[Any]] = []  # [lo, hi, first k, last k]
        for k in range(env.bounds.size):
            g = [lo[k], hi[k], k, k]
            while groups and g[0] <= groups[-1][1]:  # overlap: merge (groups are contiguous in k)
                prev = groups.pop()
                g = [min(prev[0], g[0]), max(prev[1], g[1]), prev[2], g[3]]
            groups.append(g)
        if groups:
            self.edges = np.array([v for g in groups for v in (g[0], g[1])], dtype=self.dtype)
            self.region = np.array([members[g[2]] for g in groups] + [members[groups[-1][3] + 1]], dtype=np.int32)
        else:
            self.edges = np.zeros(0, dtype=self.dtype)
            self.region = np.array([members[0]], dtype=np.int32)
        self.constant = self.edges.size == 0
        self.xmin = self.dtype.type(xmin)
        width = float(xmax) - float(xmin)
        nb = LUT_BINS
        # bin width; at least 1e-30 (1e-290 in float64) so that 1 / hb stays finite: tensors
        # spanning a subnormal range land in a few (mixed) bins and take the binary search
        hb = max(width / nb, 1e-30 if self.dtype == np.float32 else 1e-290)
        self.scale = self.dtype.type(1.0 / hb)
        if self.constant:
            return
        e64 = self.edges.astype(np.float64)
        centers = float(xmin) + (np.arange(nb + 2) + 0.5) * hb
        pos = np.searchsorted(e64, centers, side="right")
        table = self.region[pos >> 1].astype(np.int32)
        table[(pos & 1) == 1] = -1
        near = e64[(e64 >= float(xmin) - 4 * hb) & (e64 <= float(xmax) + 4 * hb)]
        qe = np.floor((near - float(xmin)) / hb).astype(np.int64)
        for dq in range(-2, 3):
            q = qe + dq
            table[q[(q >= 0) & (q <= nb + 1)]] = -1
        self.table = table
        self.has_mixed = bool((table < 0).any())

    def __call__(self, xc: np.ndarray, out: np.ndarray, fbuf: np.ndarray, qbuf: np.ndarray) -> np.ndarray:
        """Write the winner of every weight of ``xc`` to ``out`` (int32); return the positions
        (within the chunk) that lie in a window and need the exact evaluation."""
        if self.constant:
            out.fill(self.region[0])
            return _EMPTY
        n = xc.size
        f, q = fbuf[:n], qbuf[:n]
        np.subtract(xc, self.xmin, out=f)
        np.multiply(f, self.scale, out=f)
        np.copyto(q, f, casting="unsafe")
        np.take(self.table, q, out=out, mode="clip")
        if not self.has_mixed:
            return _EMPTY
        mixed = np.flatnonzero(out < 0)
        if mixed.size == 0:
            return _EMPTY
        pos = np.searchsorted(self.edges, xc[mixed], side="right")
        out[mixed] = self.region[pos >> 1]
        return mixed[(pos & 1) == 1]


_EMPTY = np.zeros(0, dtype=np.intp)


def _exact_argmin(xs: np.ndarray, c: np.ndarray, e: Optional[np.ndarray], skip: Optional[int] = None) -> np.ndarray:
    """The reference's argmin for a few weights: float64 ``d * d (+ e)``, lowest index on ties;
    ``skip``: the zero cluster excluded as in ``_ecq_parts`` (all excluded -> first other)."""
    x = xs.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # the reference's arithmetic, overflow included
        d = x[:, None] - c[None, :]
        cost = d * d
        if e is not None:
            cost += e[None, :]
    if skip is None:
        return np.argmin(cost, axis=1)
    cost[:, skip] = np.inf
    j = np.argmin(cost, axis=1)
    j[j == skip] = 1 if skip == 0 else 0
    return j


class _Buffers:
    def __init__(self, dtype, n: int):
        n = min(n, CHUNK)
        self.f = np.empty(n, dtype=dtype)
        self.q = np.empty(n, dtype=np.intp)
        self.i = np.empty(n, dtype=np.int32)


def _chunks(n: int, size: Optional[int] = None):
    size = size or CHUNK
    for a in range(0, n, size):
        yield a, min(n, a + size)


# ----------------------------------------------------------------------------------- passes
def _nearest_pass(x: np.ndarray, c: np.ndarray, xmin: float, xmax: float, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Nearest-neighbour counts (and indices into ``out`` if given), one pass."""
    k = c.size
    env = _envelope(c, np.zeros(k), np.ones(k, dtype=bool), xmin, xmax)
    look = _Lookup(env, xmin, xmax, x.dtype)
    buf = _Buffers(x.dtype, x.size)
    counts = np.zeros(k, dtype=np.int64)
    for a, b in _chunks(x.size):
        dst = out[a:b] if out is not None else buf.i[: b - a]
        fl = look(x[a:b], dst, buf.f, buf.q)
        if fl.size:
            dst[fl] = _exact_argmin(x[a:b][fl], c, None)
        counts += np.bincount(dst, minlength=k)
    return counts


def _ecq_pass(x: np.ndarray, c: np.ndarray, e: np.ndarray, lam: float, xmin: float, xmax: float, out: np.ndarray) -> None:
    """ECQ indices into ``out``: argmin of ``d * d + e`` over the clusters with finite ``e``."""
    env = _envelope(c, e, np.isfinite(e), xmin, xmax)
    look = _Lookup(env, xmin, xmax, x.dtype)
    buf = _Buffers(x.dtype, x.size)
    e_exact = e if lam > 0 else None
    for a, b in _chunks(x.size):
        dst = out[a:b]
        fl = look(x[a:b], dst, buf.f, buf.q)
        if fl.size:
            dst[fl] = _exact_argmin(x[a:b][fl], c, e_exact)


def _nonzero_pass(x: np.ndarray, c: np.ndarray, e: np.ndarray, lam: float, z: int, xmin: float, xmax: float, out: np.ndarray) -> None:
    """Best non-zero cluster ``j`` of every weight (the reference's ``_ecq_parts``) into ``out``."""
    allowed = np.isfinite(e)
    allowed[z] = False
    if not allowed.any():  # only the zero cluster is selectable
        out.fill(z if c.size == 1 else (1 if z == 0 else 0))
        return
    env = _envelope(c, e, allowed, xmin, xmax)
    look = _Lookup(env, xmin, xmax, x.dtype)
    buf = _Buffers(x.dtype, x.size)
    e_exact = e if lam > 0 else np.zeros_like(e)
    for a, b in _chunks(x.size):
        dst = out[a:b]
        fl = look(x[a:b], dst, buf.f, buf.q)
        if fl.size:
            dst[fl] = _exact_argmin(x[a:b][fl], c, e_exact, skip=z)


# ----------------------------------------------------------------------------------- ECQx
class _EcqxParts:
    """Per-weight pieces of the ECQx decision; the reference's float64 values on demand."""

    def __init__(self, x, c, e, lam, z, j, rn, xmin, xmax):
        self.x, self.c, self.e, self.lam, self.z, self.j, self.rn = x, c, e, lam, z, j, rn
        self.xmin, self.xmax = xmin, xmax
        self.single = c.size == 1

    def costs(self, idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The reference's float64 ``C_0`` and ``m`` of the weights ``idx``."""
        x = self.x[idx].astype(np.float64)
        c0 = x * x
        if self.single:
            m = np.full(x.shape, np.inf)
        else:
            jj = self.j[idx]
            d = x - self.c[jj]
            m = d * d
        if self.lam > 0:
            c0 += self.e[self.z]
            if not self.single:
                m += self.e[self.j[idx]]
        return c0, m

    def zero_ecq(self, idx: np.ndarray) -> np.ndarray:
        c0, m = self.costs(idx)
        return (c0 < m) | ((c0 == m) & (self.z < self.j[idx]))

    def zero_ecqx(self, idx: np.ndarray, beta: float) -> np.ndarray:
        """The reference's ``_pick_zero(adj, m, z < j)`` at ``beta`` for the weights ``idx``."""
        c0, m = self.costs(idx)
        base = self.rn[idx] + RELEVANCE_EPS
        adj = (c0 * 2.0) * np.power(base, beta)
        adj[c0 == 0.0] = 0.0
        return (adj < m) | ((adj == m) & (self.z < self.j[idx]))


# Error model of the switching beta t computed in float32 (see _ecqx_thresholds):
# |t - t_ref| <= _T_REL * |t| + _T_ABS for every weight with -ln(b) >= LOG_BASE_MIN.
_T_REL: float = 5e-6 + 2e-6 / LOG_BASE_MIN
_T_ABS: float = 6e-6 / LOG_BASE_MIN


def _ecqx_thresholds(parts: _EcqxParts):
    """The switching beta ``t`` of every weight (float32, or float64 for float64 weights), the
    ECQ zero count, and the weights to evaluate exactly in every round.

    With :math:`q = m / C_0`, :math:`L = \\ln(q / 2)` and :math:`\\ell = -\\ln b > 0` zero is chosen
    iff :math:`\\beta \\ell > -L`, i.e. :math:`\\beta > t = -L / \\ell`. The float32 values of
    :math:`L` and :math:`\\ell` are within :math:`\\varepsilon_L = 4 \\cdot 10^{-6} + 2 \\cdot 10^{-6} |L|`
    and :math:`\\varepsilon_\\ell = 10^{-6} (1 + \\ell)` of the float64 reference's (several times
    the float32 error bounds), so :math:`|t - t_{ref}| \\le (\\varepsilon_L + |t| \\varepsilon_\\ell) /
    (\\ell - \\varepsilon_\\ell) \\le 5 \\cdot 10^{-6} |t| + (6 \\cdot 10^{-6} + 2 \\cdot 10^{-6} |t|) / \\ell`,
    bounded for all weights by :data:`_T_REL` and :data:`_T_ABS` since :math:`\\ell \\ge`
    :data:`LOG_BASE_MIN`. Exact in every round: :math:`\\ell <` :data:`LOG_BASE_MIN` (relevance
    close to the maximum) and :math:`m` below the float's normal range (incl. :math:`m = 0`).
    :math:`q = +\\infty` (:math:`C_0 = 0` or underflowing, :math:`m = +\\infty`) gives
    :math:`t = -\\infty`: zero at every beta, the reference's decision there.
    """
    x, c, e, lam, z, j, rn = parts.x, parts.c, parts.e, parts.lam, parts.z, parts.j, parts.rn
    ew = e if lam > 0 else np.zeros_like(e)
    finite_e = ew[np.isfinite(ew)]
    if x.dtype == np.float32 and (
        max(abs(parts.xmin), abs(parts.xmax), float(np.max(np.abs(c)))) > 1e15
        or (finite_e.size and float(finite_e.max()) > 1e30)
    ):
        x = x.astype(np.float64)  # float32 squares could overflow: work in float64
    f64 = x.dtype == np.float64
    dt = x.dtype.type
    n = x.size
    m_tiny = dt(1e-300 if f64 else 1e-36)
    cw = c.astype(x.dtype)
    eww = ew.astype(x.dtype)
    has_e = lam > 0
    ez = eww[z]
    t_all = np.empty(n, dtype=x.dtype)
    hist = np.zeros(_NKEYS, dtype=np.int64)
    zero_ecq = 0
    exact: List[np.ndarray] = []
    q_hi, q_lo = dt(1 + 8e-6), dt(1 - 8e-6)
    ln2 = dt(np.log(2.0))
    lb_max = dt(-LOG_BASE_MIN)
    eps = dt(RELEVANCE_EPS)
    nb = min(n, CHUNK)
    m = np.empty(nb, dtype=x.dtype)
    c0 = np.empty(nb, dtype=x.dtype)
    lb = np.empty(nb, dtype=x.dtype)
    bad = np.empty(nb, dtype=bool)
    bad2 = np.empty(nb, dtype=bool)
    jq = np.empty(nb, dtype=np.intp)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for a, b in _chunks(n):
            k = b - a
            xc, mc, c0c, lbc, bc, bc2 = x[a:b], m[:k], c0[:k], lb[:k], bad[:k], bad2[:k]
            if parts.single:
                mc.fill(np.inf)
            else:
                jc = jq[:k]
                np.copyto(jc, j[a:b])
                np.take(cw, jc, out=mc, mode="clip")
                np.subtract(xc, mc, out=mc)
                np.multiply(mc, mc, out=mc)
                if has_e:
                    np.take(eww, jc, out=c0c, mode="clip")
                    mc += c0c
            np.multiply(xc, xc, out=c0c)
            if has_e:
                c0c += ez
            # ln b, b = Rn + 1e-12
            np.copyto(lbc, rn[a:b], casting="same_kind")
            lbc += eps
            np.log(lbc, out=lbc)
            bad_idx = _EMPTY
            if mc.min() < m_tiny or lbc.max() > lb_max:  # rare: test per weight only then
                np.less(mc, m_tiny, out=bc)
                np.greater(lbc, lb_max, out=bc2)
                bc |= bc2
                bad_idx = np.flatnonzero(bc)
            q = np.divide(mc, c0c, out=mc)  # m / C_0
            if bad_idx.size:
                q[bad_idx] = np.nan  # decided exactly, not counted here
                zero_ecq += int(np.count_nonzero(parts.zero_ecq(bad_idx + a)))
                exact.append(bad_idx + a)
            # ECQ: zero iff C_0 < m (ties: z < j), i.e. q > 1
            sure = int(np.count_nonzero(q > q_hi))
            zero_ecq += sure
            if int(np.count_nonzero(q >= q_lo)) > sure:
                uns = np.flatnonzero((q >= q_lo) & (q <= q_hi))
                zero_ecq += int(np.count_nonzero(parts.zero_ecq(uns + a)))
            # t = -L / ell = (ln q - ln 2) / ln b; q = inf (C_0 = 0 or m = inf) gives t = -inf:
            # zero at every beta, the reference's decision there
            L = np.log(q, out=q)
            L -= ln2
            np.divide(L, lbc, out=t_all[a:b])
            if bad_idx.size:
                t_all[a:b][bad_idx] = np.inf
    for a, b in _chunks(n, _HIST_BLOCK):  # one bincount per large block: its 2^16 counters are
        hist += np.bincount(_keys(t_all[a:b]), minlength=_NKEYS)  # costly per small chunk
    ex = np.concatenate(exact) if exact else _EMPTY
    return t_all, zero_ecq, ex, hist


#: Bits of the float pattern of t used as histogram key (sign, exponent, leading mantissa bits).
_KEY_BITS = 16
_NKEYS = 1 << _KEY_BITS
_NEG_KEY = 1 << (_KEY_BITS - 1)
_HIST_BLOCK = 1 << 20


def _keys(t: np.ndarray) -> np.ndarray:
    """The top :data:`_KEY_BITS` bits of the float bit pattern of every ``t``: for ``t >= 0`` a
    key increasing with ``t`` (2^(_KEY_BITS - 9) keys per octave in float32); negative ``t`` get
    keys ``>= 2^(_KEY_BITS - 1)``."""
    if _KEY_BITS == 16 and t.dtype == np.float32 and sys.byteorder == "little":
        return t.view(np.uint16)[1::2]
    bits = t.view(np.uint32 if t.dtype == np.float32 else np.uint64)
    return (bits >> bits.dtype.type(8 * t.dtype.itemsize - _KEY_BITS)).astype(np.uint16)


def _key_of(v: Any, dtype) -> int:
    return int(_keys(np.array([v], dtype=dtype))[0])


class _Histogram:
    """Counts of the switching betas ``t`` by key: bounds of the zero count at any beta > 0."""

    def __init__(self, hist: np.ndarray, dtype):
        self.dtype = dtype
        self.cum = np.concatenate([[0], np.cumsum(hist[:_NEG_KEY])])
        self.neg = int(hist[_NEG_KEY:].sum())

    def bounds(self, beta: float) -> Optional[Tuple[int, int]]:
        """``(lo, hi)`` with lo <= #{weights outside the exact set that are zero at beta} <= hi,
        or None where the keys cannot tell (beta so small that the band reaches 0)."""
        t_dn, t_up = _beta_band(beta, self.dtype)
        if not (t_dn > 0 and np.isfinite(t_up)):
            return None
        k_dn, k_up = _key_of(t_dn, self.dtype), _key_of(t_up, self.dtype)
        sure = self.neg + int(self.cum[k_dn])  # every key below t_dn's: t < t_dn
        unsure = int(self.cum[k_up + 1] - self.cum[k_dn])
        return sure, sure + unsure


def _beta_band(beta: float, dtype) -> Tuple[Any, Any]:
    """``(t_dn, t_up)`` in ``dtype``: a weight with computed ``t < t_dn`` is zero at ``beta`` in the
    reference, one with ``t > t_up`` is not; between them it is evaluated exactly. From
    :math:`t_{ref} \\in [t - h, t + h]`, :math:`h = r |t| + a` (:data:`_T_REL`, :data:`_T_ABS`)."""
    A, B = _T_REL, _T_ABS
    dn = beta - B
    dn = dn / (1.0 + A) if dn >= 0 else dn / (1.0 - A)
    up = beta + B
    up = up / (1.0 - A) if up >= 0 else up / (1.0 + A)
    return _round_scalar(dn, dtype, up=False), _round_scalar(up, dtype, up=True)


def _round_scalar(v: float, dtype, up: bool) -> Any:
    """``_round_down`` / ``_round_up`` of one finite float: the same value without the cost of an
    ``np.errstate`` context and a one-element array, which a beta search pays in every round."""
    dt = np.dtype(dtype).type
    if dt is np.float32 and abs(v) > 3.0e38:  # near the float32 range: the array form (overflow)
        return (_round_up if up else _round_down)(np.array([v]), dtype)[0]
    r = dt(v)
    if up and float(r) < v:
        r = np.nextafter(r, dt(np.inf))
    elif not up and float(r) > v:
        r = np.nextafter(r, dt(-np.inf))
    return r


class _Evaluation:
    """Zero decisions of one beta: the sure mask and the exactly evaluated weights."""

    def __init__(self, n: int):
        self.mask = np.empty(n, dtype=bool)
        self.idx: List[np.ndarray] = []
        self.zero: List[np.ndarray] = []


def _evaluate(parts: _EcqxParts, t_all, exact, beta: float, ev: _Evaluation) -> int:
    """Number of weights the reference puts in the zero cluster at ``beta`` (decisions kept in
    ``ev`` for the final assignment)."""
    t_dn, t_up = _beta_band(beta, t_all.dtype)
    ev.idx, ev.zero = [], []
    n = 0
    for a, b in _chunks(t_all.size, 4 * CHUNK):
        t, mk = t_all[a:b], ev.mask[a:b]
        np.less(t, t_dn, out=mk)
        sure = int(np.count_nonzero(mk))
        n += sure
        if int(np.count_nonzero(t <= t_up)) > sure:
            idx = np.flatnonzero((t >= t_dn) & (t <= t_up)) + a
            zx = parts.zero_ecqx(idx, beta)
            n += int(np.count_nonzero(zx))
            ev.idx.append(idx)
            ev.zero.append(zx)
    if exact.size:
        zx = parts.zero_ecqx(exact, beta)
        n += int(np.count_nonzero(zx))
        ev.idx.append(exact)
        ev.zero.append(zx)
    return n


def _final_indices(parts: _EcqxParts, ev: _Evaluation, out: np.ndarray) -> None:
    """The reference's ``where(is_zero, z, j)`` of the last evaluated beta into ``out``."""
    z = np.int32(parts.z)
    for a, b in _chunks(out.size):
        jc, o = parts.j[a:b], out[a:b]
        np.subtract(z, jc, out=o)
        o *= ev.mask[a:b]
        o += jc  # j + (z - j) * mask
    for idx, zx in zip(ev.idx, ev.zero):
        out[idx] = np.where(zx, parts.z, parts.j[idx])


def _ecqx_search(x, c, e, lam, z, j, r, p: float, max_iter: int, xmin: float, xmax: float, out: np.ndarray) -> EcqxInfo:
    """The reference's beta search (same betas, same stopping rule, same result).

    Each round needs only whether the zero share lies below, inside or above the band
    ``[S_ecq - p, S_ecq]``. A histogram of the switching betas bounds the zero count at any beta
    in :math:`O(1)`; only when the bounds straddle a band edge is the exact count taken (one pass
    over the thresholds, the reference formula for the weights near beta). The last evaluated
    beta is always counted exactly (it gives the indices and the reported sparsity).
    """
    n = x.size
    rn = r.astype(np.float64)  # the reference's float64 |R| / (max|R| + 1e-12), in place
    np.abs(rn, out=rn)
    np.divide(rn, rn.max() + RELEVANCE_EPS, out=rn)
    parts = _EcqxParts(x, c, e, lam, z, j, rn, xmin, xmax)
    t_all, zero_ecq, exact, hist = _ecqx_thresholds(parts)
    histogram = _Histogram(hist, t_all.dtype)
    s_ecq = zero_ecq / n
    lo_band = s_ecq - p
    beta0 = _initial_beta(float(np.mean(rn)))

    ev = _Evaluation(n)
    ev_beta: Optional[float] = None  # the beta whose exact decisions ``ev`` holds
    beta = beta0
    evaluated_beta = None
    s_lo = s_hi = s_ecq  # bounds of the zero share at evaluated_beta (equal when exact)
    converged = False
    iterations = 0
    for t in range(1, max_iter + 1):
        iterations = t
        if beta != evaluated_beta:
            evaluated_beta = beta
            b = histogram.bounds(beta)
            if b is not None:
                ex = int(np.count_nonzero(parts.zero_ecqx(exact, beta))) if exact.size else 0
                s_lo, s_hi = (b[0] + ex) / n, (b[1] + ex) / n
            if b is None or not (s_hi < lo_band or s_lo > s_ecq or (lo_band <= s_lo and s_hi <= s_ecq)):
                s_lo = s_hi = _evaluate(parts, t_all, exact, beta, ev) / n
                ev_beta = beta
        if lo_band <= s_lo and s_hi <= s_ecq:
            converged = True
            break
        if t < max_iter:
            sign = 1.0 if s_ecq - s_hi > 0 else -1.0  # s_hi < lo_band <= s_ecq, or s_lo > s_ecq
            beta = min(1.0, beta * (1.0 + _beta_step(t) * sign))
    if ev_beta != evaluated_beta:
        s_lo = s_hi = _evaluate(parts, t_all, exact, evaluated_beta, ev) / n
    _final_indices(parts, ev, out)
    return EcqxInfo(
        beta=float(evaluated_beta),
        beta_initial=float(beta0),
        iterations=iterations,
        converged=converged,
        sparsity_ecq=float(s_ecq),
        sparsity_ecqx=float(s_lo),
    )


# ----------------------------------------------------------------------------------- public
@dataclasses.dataclass(frozen=True)
class LayerAssignment:
    """Result of :func:`assign_layer`.

    Attributes:
        indices: int32 centroid index per weight (shape of the kernel).
        lam: the layer's :math:`\\lambda_l` used.
        counts: int64 ``[K]`` nearest-neighbour cluster counts (the basis of :math:`P_c`); None
            from :func:`assign_layer_reference`, which does not return them.
        info: :class:`~ecqx_tf.assign.EcqxInfo` for ECQx, else None.
    """

    indices: np.ndarray
    lam: float
    counts: Optional[np.ndarray]
    info: Optional[EcqxInfo] = None


#: Weights, centroids or entropy terms beyond this magnitude (float64 squares near overflow):
#: the reference functions are used instead.
_EXTREME: float = 1e150


def _setup(w: Any, centroids: Any):
    c = _centroids(centroids)
    x, shape, lo, hi = _work_array(w)
    return _for_dtype(x, c), shape, c, lo, hi


def _assign(x, c, xmin, xmax, z, lam, counts, method, r, p, max_iter) -> Tuple[np.ndarray, Optional[EcqxInfo]]:
    """Flat int32 ECQ / ECQx indices of the work array ``x`` given the nearest counts."""
    e = _entropy(lam, counts, z)
    finite_e = e[np.isfinite(e)]
    big = max(abs(xmin), abs(xmax), float(np.max(np.abs(c))), float(finite_e.max()) if finite_e.size else 0.0)
    if big > _EXTREME:  # float64 costs may overflow: the reference's own arithmetic decides
        if method == "ecq":
            return ref.ecq_assign(x, c, lam).astype(np.int32).reshape(-1), None
        idx, info = ref.ecqx_assign(x, c, lam, r, p=p, max_iter=max_iter, return_info=True)
        return idx.astype(np.int32).reshape(-1), info
    out = np.empty(x.size, dtype=np.int32)
    if method == "ecq":
        _ecq_pass(x, c, e, lam, xmin, xmax, out)
        return out, None
    j = np.empty(x.size, dtype=np.int32)
    _nonzero_pass(x, c, e, lam, z, xmin, xmax, j)
    return out, _ecqx_search(x, c, e, lam, z, j, r, p, max_iter, xmin, xmax, out)


def nearest_counts(w: Any, centroids: Any) -> np.ndarray:
    """int64 ``[K]``: how many weights :func:`~ecqx_tf.assign.nearest_assign` puts in each
    cluster, in one linear pass without storing the indices."""
    x, _, c, xmin, xmax = _setup(w, centroids)
    return _nearest_pass(x, c, xmin, xmax)


def nearest_assign_fast(w: Any, centroids: Any) -> np.ndarray:
    """Equal to :func:`ecqx_tf.assign.nearest_assign` (int32, shape of ``w``), :math:`O(N)`."""
    x, shape, c, xmin, xmax = _setup(w, centroids)
    out = np.empty(x.size, dtype=np.int32)
    _nearest_pass(x, c, xmin, xmax, out)
    return out.reshape(shape)


def layer_lambda_fast(
    w: Any, centroids: Any, Lambda: float, n_weights: int, n_largest: int, s: float = 0.05, reduce: str = "min"
) -> float:
    """Equal to :func:`ecqx_tf.assign.layer_lambda` (same float), one linear pass."""
    Lam, n_weights, n_largest, s, reduce = _lambda_args(Lambda, n_weights, n_largest, s, reduce)
    x, _, c, xmin, xmax = _setup(w, centroids)
    z = _zero_index(c)
    counts = _nearest_pass(x, c, xmin, xmax)
    return _lambda_from_counts(counts, c, z, xmin, xmax, Lam, n_weights, n_largest, s, reduce)


def _entropy(lam: float, counts: np.ndarray, z: int) -> np.ndarray:
    return _entropy_term(lam, _probabilities_from_counts(counts, z, True))


def pass_times(w: Any, centroids: Any, relevance: Any, Lambda: float, n_largest: int, p: float = 0.1,
               s: float = 0.05, reduce: str = "min", max_iter: int = 50) -> dict:
    """Seconds spent in each pass of one ECQx assignment of ``w`` (profiling; the assignment is
    the one :func:`assign_layer` makes): ``"nearest pass"`` (the nearest-centroid counts, the layer
    lambda and the entropy terms), ``"ECQ pass"``, ``"non-zero pass"`` (the best non-zero centroid
    of every weight), ``"switching betas"`` and ``"beta search + indices"`` (the search recomputes
    the switching betas; their time is subtracted). ``bench/ecqx_overhead.py`` uses it."""
    import time

    t0 = time.perf_counter()
    x, _, c, xmin, xmax = _setup(w, centroids)
    z = _zero_index(c)
    counts = _nearest_pass(x, c, xmin, xmax)
    lam = _lambda_from_counts(counts, c, z, xmin, xmax, *_lambda_args(Lambda, x.size, n_largest, s, reduce))
    e = _entropy(lam, counts, z)
    t1 = time.perf_counter()
    out = np.empty(x.size, np.int32)
    _ecq_pass(x, c, e, lam, xmin, xmax, out)
    t2 = time.perf_counter()
    j = np.empty(x.size, np.int32)
    _nonzero_pass(x, c, e, lam, z, xmin, xmax, j)
    t3 = time.perf_counter()
    r = np.asarray(relevance).reshape(-1)
    rn = np.abs(r.astype(np.float64))
    np.divide(rn, rn.max() + ref.RELEVANCE_EPS, out=rn)
    _ecqx_thresholds(_EcqxParts(x, c, e, lam, z, j, rn, xmin, xmax))
    t4 = time.perf_counter()
    _ecqx_search(x, c, e, lam, z, j, r, p, max_iter, xmin, xmax, out)
    t5 = time.perf_counter()
    return {"nearest pass": t1 - t0, "ECQ pass": t2 - t1, "non-zero pass": t3 - t2, "switching betas": t4 - t3,
            "beta search + indices": max(0.0, (t5 - t4) - (t4 - t3))}


def ecq_assign_fast(w: Any, centroids: Any, lam: float) -> np.ndarray:
    """Equal to :func:`ecqx_tf.assign.ecq_assign` (int32, shape of ``w``), :math:`O(N)`."""
    lam = validate_float_range("lam", lam, low=0)
    x, shape, c, xmin, xmax = _setup(w, centroids)
    z = _zero_index(c)
    counts = _nearest_pass(x, c, xmin, xmax)
    out, _ = _assign(x, c, xmin, xmax, z, lam, counts, "ecq", None, 0.0, 1)
    return out.reshape(shape)


def _ecqx_args(p: Any, max_iter: Any) -> Tuple[float, int]:
    p = validate_float_range("p", p, 0, 1)
    return p, validate_int_range("max_iter", max_iter, low=1)


def _relevance_array(relevance: Any, shape: Tuple[int, ...]) -> np.ndarray:
    r = np.asarray(relevance)
    if r.dtype not in (np.float32, np.float64) or r.size == 0:
        r = _as_real_array(r, "relevance")
    if r.shape != shape:
        raise ValueError(f"relevance must have the shape of w {shape}, got {r.shape}")
    r = np.ascontiguousarray(r).reshape(-1)
    if r.size and not (np.isfinite(np.min(r)) and np.isfinite(np.max(r))):
        _as_real_array(r, "relevance")  # raises the reference's message
    return r


def ecqx_assign_fast(
    w: Any,
    centroids: Any,
    lam: float,
    relevance: Any,
    p: float = 0.1,
    max_iter: int = 50,
    return_info: bool = False,
) -> Union[np.ndarray, Tuple[np.ndarray, EcqxInfo]]:
    """Equal to :func:`ecqx_tf.assign.ecqx_assign` (indices and :class:`EcqxInfo`), linear in N
    plus :math:`O(N)` comparisons per beta round."""
    lam = validate_float_range("lam", lam, low=0)
    p, max_iter = _ecqx_args(p, max_iter)
    x, shape, c, xmin, xmax = _setup(w, centroids)
    r = _relevance_array(relevance, shape)
    z = _zero_index(c)
    counts = _nearest_pass(x, c, xmin, xmax)
    out, info = _assign(x, c, xmin, xmax, z, lam, counts, "ecqx", r, p, max_iter)
    idx = out.reshape(shape)
    return (idx, info) if return_info else idx


def assign_layer(
    w: Any,
    centroids: Any,
    Lambda: float,
    n_largest: int,
    *,
    method: str = "ecq",
    relevance: Any = None,
    p: float = 0.1,
    s: float = 0.05,
    reduce: str = "min",
    max_iter: int = 50,
) -> LayerAssignment:
    """One refresh of one kernel: :math:`\\lambda_l` and the ECQ or ECQx assignment from a single
    nearest-neighbour pass. Equal to ``layer_lambda(w, c, Lambda, w.size, n_largest, s, reduce)``
    followed by ``ecq_assign(w, c, lam)`` or ``ecqx_assign(w, c, lam, relevance, p, max_iter)``.

    Args:
        w: float kernel, any shape (float32 stays float32). centroids: 1-D with a 0 (or a Grid).
        Lambda: :math:`\\Lambda \\ge 0`. n_largest: the largest kernel size of the model.
        method: ``"ecq"`` or ``"ecqx"`` (needs ``relevance`` of ``w``'s shape).
        p, max_iter: ECQx beta search. s, reduce: see :func:`ecqx_tf.assign.layer_lambda`.

    Raises:
        TypeError / ValueError: as the reference functions, naming the argument.
    """
    if method not in ("ecq", "ecqx"):
        raise ValueError(f"unknown method {method!r}; accepted: ecq, ecqx")
    x, shape, c, xmin, xmax = _setup(w, centroids)
    Lam, n_weights, n_largest, s, reduce = _lambda_args(Lambda, x.size, n_largest, s, reduce)
    z = _zero_index(c)
    if method == "ecqx":
        if relevance is None:
            raise ValueError("method 'ecqx' needs relevance (an array of w's shape)")
        p, max_iter = _ecqx_args(p, max_iter)
        r = _relevance_array(relevance, shape)
    else:
        r = None
    counts = _nearest_pass(x, c, xmin, xmax)
    lam = _lambda_from_counts(counts, c, z, xmin, xmax, Lam, n_weights, n_largest, s, reduce)
    out, info = _assign(x, c, xmin, xmax, z, lam, counts, method, r, p, max_iter)
    return LayerAssignment(indices=out.reshape(shape), lam=float(lam), counts=counts, info=info)


def assign_layer_reference(
    w: Any,
    centroids: Any,
    Lambda: float,
    n_largest: int,
    *,
    method: str = "ecq",
    relevance: Any = None,
    p: float = 0.1,
    s: float = 0.05,
    reduce: str = "min",
    max_iter: int = 50,
) -> LayerAssignment:
    """:func:`assign_layer` computed with the reference functions of :mod:`ecqx_tf.assign`
    (``layer_lambda`` then ``ecq_assign`` / ``ecqx_assign``: two ``[K, N]`` float64 cost matrices).
    Same result; kept to verify the fast path and to measure it against the old code."""
    if method not in ("ecq", "ecqx"):
        raise ValueError(f"unknown method {method!r}; accepted: ecq, ecqx")
    c = _centroids(centroids)
    n = int(np.size(w))
    lam = ref.layer_lambda(w, c, Lambda, n, n_largest, s=s, reduce=reduce)
    info = None
    if method == "ecq":
        idx = ref.ecq_assign(w, c, lam)
    else:
        if relevance is None:
            raise ValueError("method 'ecqx' needs relevance (an array of w's shape)")
        idx, info = ref.ecqx_assign(w, c, lam, relevance, p=p, max_iter=max_iter, return_info=True)
    return LayerAssignment(indices=idx, lam=float(lam), counts=None, info=info)


#: How a refresh assigns one kernel: ``"fast"`` (:func:`assign_layer`, default) or
#: ``"reference"`` (:func:`assign_layer_reference`); both give identical results.
ASSIGNMENTS: Registry = Registry("assignment implementation")
ASSIGNMENTS.register("fast")(assign_layer)
ASSIGNMENTS.register("reference")(assign_layer_reference)
