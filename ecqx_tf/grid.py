"""Uniform quantization grids (centroids) for ECQ / ECQx (docs/algorithm.md, section 1).

A grid is one step :math:`\\Delta` (a float32 value) and ascending integer levels :math:`k_c`
containing 0; centroid :math:`c` is :math:`w_c = k_c \\Delta`, computed in float32 exactly like
:meth:`ecqx_tf.quantized.QuantizedKernel.values`.

The step is taken once from the pretrained float kernel:

.. math::  \\Delta = \\frac{\\mathrm{P}_{99.9}(|W|)}{2^{b-1} - 1}

(Becking et al. 2021, arXiv 2109.04236, Sec. 3; the authors' ``ecqxtools.initialize_centroids``).
Two grid kinds exist (a DECISION of this project, docs/algorithm.md):

* ``"symmetric"`` (default): :math:`k \\in [-(2^{b-1}-1), 2^{b-1}-1]`, :math:`2^b - 1` levels,
  stored exactly by TFLite as INT4 (b <= 4) or INT8.
* ``"paper"``: the authors' :math:`2^b`-level grid. Mixed-sign tensors get
  :math:`k \\in [-2^{b-1}, 2^{b-1}-1]` or :math:`[-2^{b-1}+1, 2^{b-1}]`, the extra level on the side
  that wins the 5-way dominance vote of :func:`paper_vote`. All-nonnegative tensors get
  :math:`k \\in [0, 2^b-1]`, all-nonpositive tensors the mirror :math:`[-(2^b-1), 0]`; for these
  one-sided grids the step denominator is :math:`2^b - 1` (as in the authors' code), so the
  levels span the same 99.9th percentile.

Edge cases (see docs/algorithm.md): if the 99.9th percentile of :math:`|W|` is 0 the step uses
:math:`\\max|W|`; if that is 0 too (an all-zero kernel), or the step underflows float32, the step is
:data:`DEFAULT_STEP` (1.0) so no NaN or zero division can appear downstream.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np

from .config import validate_bits

__all__ = [
    "BITS_RANGE",
    "DEFAULT_STEP",
    "GRID_KINDS",
    "PERCENTILE",
    "Grid",
    "as_real_array",
    "grid_levels",
    "make_grid",
    "paper_vote",
]

#: Grid kinds: ``"symmetric"`` (default) and ``"paper"`` (the authors' asymmetric grid).
GRID_KINDS: Tuple[str, ...] = ("symmetric", "paper")
#: Accepted bit widths (inclusive).
BITS_RANGE: Tuple[int, int] = (2, 8)
#: Percentile of |W| that defines the step (the authors' ``PERCENTILE``).
PERCENTILE: float = 99.9
#: Step used when the kernel is all zero (or its step underflows float32).
DEFAULT_STEP: float = 1.0


# ----------------------------------------------------------------------------------- validation
def _check_kind(kind: Any) -> str:
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, one of {', '.join(GRID_KINDS)}; got {kind!r} ({type(kind).__name__})")
    if kind not in GRID_KINDS:
        raise ValueError(f"unknown grid kind {kind!r}; accepted: {', '.join(GRID_KINDS)}")
    return kind


def as_real_array(x: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """``x`` as a float64 array (any shape), rejecting non-real dtypes, empty and non-finite input."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic array-likes
        raise TypeError(f"{name} must be a real-valued array, got {type(x).__name__}") from exc
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must be a real-valued (integer or floating) array, got dtype {arr.dtype}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        n_bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name} must be finite, got {n_bad} NaN/inf value(s) in an array of shape {arr.shape}")
    return arr


# ----------------------------------------------------------------------------------- levels
def grid_levels(bits: int, kind: str = "symmetric", side: str = "negative") -> np.ndarray:
    """The int32 ascending levels :math:`k` of a grid.

    Args:
        bits: bit width b in 2..8.
        kind: ``"symmetric"`` -> :math:`[-(2^{b-1}-1), 2^{b-1}-1]` (``side`` ignored);
            ``"paper"`` -> depends on ``side``.
        side: for ``"paper"`` only: ``"negative"`` :math:`[-2^{b-1}, 2^{b-1}-1]` (extra level
            negative), ``"positive"`` :math:`[-2^{b-1}+1, 2^{b-1}]`, ``"nonnegative"``
            :math:`[0, 2^b-1]`, ``"nonpositive"`` :math:`[-(2^b-1), 0]`.

    Raises:
        TypeError / ValueError: bad ``bits``, ``kind`` or ``side``.
    """
    bits = validate_bits(bits)
    kind = _check_kind(kind)
    half = 2 ** (bits - 1)
    if kind == "symmetric":
        lo, hi = -(half - 1), half - 1
    else:
        ranges = {
            "negative": (-half, half - 1),
            "positive": (-half + 1, half),
            "nonnegative": (0, 2**bits - 1),
            "nonpositive": (-(2**bits - 1), 0),
        }
        if side not in ranges:
            raise ValueError(f"unknown paper grid side {side!r}; accepted: {', '.join(ranges)}")
        lo, hi = ranges[side]
    return np.arange(lo, hi + 1, dtype=np.int32)


def _allowed_level_sets(bits: int, kind: str) -> Sequence[np.ndarray]:
    if kind == "symmetric":
        return [grid_levels(bits, "symmetric")]
    return [grid_levels(bits, "paper", s) for s in ("negative", "positive", "nonnegative", "nonpositive")]


# ----------------------------------------------------------------------------------- Grid
@dataclasses.dataclass(frozen=True, eq=False)
class Grid:
    """A uniform grid containing zero: centroid :math:`w_c = k_c \\Delta` (float32).

    Attributes:
        bits: bit width b (2..8).
        kind: ``"symmetric"`` or ``"paper"`` (see :data:`GRID_KINDS`).
        step: :math:`\\Delta`, a positive finite float32 value (stored as a Python float).
        levels: int32, strictly ascending, contains 0; must be one of the level sets of
            :func:`grid_levels` for ``bits`` and ``kind``.

    A ``Grid`` converts to its centroids with ``np.asarray(grid)``, so it can be passed wherever
    centroids are expected (``ecqx_tf.assign``). Equality and hashing derive from :meth:`to_dict`.

    Raises:
        TypeError / ValueError: at construction, naming the bad field.
    """

    bits: int
    kind: str
    step: float
    levels: np.ndarray

    def __post_init__(self) -> None:
        bits = validate_bits(self.bits)
        kind = _check_kind(self.kind)
        if isinstance(self.step, (bool, np.bool_)) or not isinstance(self.step, numbers.Real):
            raise TypeError(f"step must be a positive finite float, got {self.step!r} ({type(self.step).__name__})")
        step32 = np.float32(self.step)
        if not (math.isfinite(float(step32)) and step32 > 0):
            raise ValueError(f"step must be a positive finite float32 value, got {self.step!r}")
        lv = np.asarray(self.levels)
        if lv.ndim != 1 or lv.dtype == np.bool_ or not np.issubdtype(lv.dtype, np.integer):
            raise TypeError(f"levels must be a 1-D integer array, got dtype {lv.dtype} and shape {lv.shape}")
        lv = lv.astype(np.int32)
        if not any(lv.shape == a.shape and np.array_equal(lv, a) for a in _allowed_level_sets(bits, kind)):
            allowed = "; ".join(f"[{a[0]}..{a[-1]}]" for a in _allowed_level_sets(bits, kind))
            got = f"[{lv[0]}..{lv[-1]}] ({lv.size} levels)" if lv.size else "[]"
            raise ValueError(
                f"levels for a {bits}-bit {kind!r} grid must be consecutive integers {allowed}, got {got}"
            )
        lv.setflags(write=False)
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "step", float(step32))
        object.__setattr__(self, "levels", lv)

    # -- derived -----------------------------------------------------------------------------
    @property
    def centroids(self) -> np.ndarray:
        """float32 centroids :math:`k_c \\Delta`, computed in float32 (a fresh array)."""
        return self.levels.astype(np.float32) * np.float32(self.step)

    @property
    def zero_index(self) -> int:
        """Index c of the zero centroid (:math:`k_c = 0`)."""
        return int(np.flatnonzero(self.levels == 0)[0])

    @property
    def num_levels(self) -> int:
        """Number of centroids K."""
        return int(self.levels.size)

    def integers(self, indices: Any) -> np.ndarray:
        """int32 level :math:`k` of each centroid index (same shape as ``indices``)."""
        return self.levels[_check_indices(indices, self.num_levels)]

    def values(self, indices: Any) -> np.ndarray:
        """float32 centroid value :math:`k \\Delta` of each centroid index (same shape)."""
        return self.centroids[_check_indices(indices, self.num_levels)]

    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> np.ndarray:
        c = self.centroids
        return c if dtype is None else c.astype(dtype)

    # -- serialization -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready config: ``{"bits", "kind", "step", "levels"}``; round-trips exactly."""
        return {
            "bits": int(self.bits),
            "kind": self.kind,
            "step": float(self.step),
            "levels": [int(v) for v in self.levels],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "Grid":
        """Inverse of :meth:`to_dict`."""
        missing = [k for k in ("bits", "kind", "step", "levels") if k not in d]
        if missing:
            raise ValueError(f"grid dict is missing key(s) {missing}; got keys {sorted(d)}")
        return cls(bits=d["bits"], kind=d["kind"], step=d["step"], levels=np.asarray(d["levels"], dtype=np.int64))

    @classmethod
    def from_step(cls, bits: int, kind: str, step: float, levels: Any = None) -> "Grid":
        """A grid from its step. ``levels`` may be omitted only for ``"symmetric"`` grids; a
        ``"paper"`` grid's levels depend on the kernel (dominance vote), so they must be given
        (or use :meth:`from_centroids`).

        Raises:
            ValueError: ``kind == "paper"`` without ``levels``.
        """
        if levels is None:
            if _check_kind(kind) == "paper":
                raise ValueError(
                    "levels is required for a 'paper' grid (its extra level depends on the kernel); "
                    "pass levels=..., or use Grid.from_centroids(bits, kind, centroids, step)"
                )
            levels = grid_levels(bits, "symmetric")
        return cls(bits=bits, kind=kind, step=step, levels=np.asarray(levels))

    @classmethod
    def from_centroids(cls, bits: int, kind: str, centroids: Any, step: float) -> "Grid":
        """Recover a grid from its float32 centroids and step: :math:`k_c = \\mathrm{rint}(w_c/\\Delta)`.

        Raises:
            ValueError: the centroids are not exactly ``levels * step`` of a valid grid.
        """
        c = as_real_array(centroids, "centroids")
        if c.ndim != 1:
            raise ValueError(f"centroids must be 1-D, got shape {c.shape}")
        step32 = np.float32(step)
        if not (math.isfinite(float(step32)) and step32 > 0):
            raise ValueError(f"step must be a positive finite float32 value, got {step!r}")
        levels = np.rint(c / np.float64(step32)).astype(np.int64)
        g = cls(bits=bits, kind=kind, step=float(step32), levels=levels)
        if not np.array_equal(g.centroids, c.astype(np.float32)):
            raise ValueError("centroids are not exactly levels * step (float32) for the given step")
        return g

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Grid):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.bits, self.kind, self.step, tuple(int(v) for v in self.levels)))


def _check_indices(indices: Any, num_levels: int) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.dtype == np.bool_ or not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"indices must be an integer array, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= num_levels):
        raise ValueError(
            f"indices must lie in [0, {num_levels}), got range [{int(idx.min())}, {int(idx.max())}]"
        )
    return idx


# ----------------------------------------------------------------------------------- make_grid
def paper_vote(w: Any) -> Tuple[int, int]:
    """The authors' 5-way dominance vote for the extra level of the ``"paper"`` grid.

    One vote each, positive side iff strictly greater (otherwise the vote goes negative, as in the
    authors' ``if ...: pos_ctr += 1 else: neg_ctr += 1``):

    1. :math:`|\\max W| > |\\min W|`
    2. :math:`\\mathrm{mean}(W_{>0}) > |\\mathrm{mean}(W_{<0})|`
    3. :math:`\\#W_{>0} > \\#W_{<0}`
    4. :math:`\\sum |W_{>0}| > \\sum |W_{<0}|`
    5. :math:`\\mathrm{std}(W_{>0}) > \\mathrm{std}(W_{<0})` (unbiased, ddof = 1 like ``torch.std``;
       if a side has fewer than 2 values its std is undefined and the vote goes negative, which is
       what the authors' NaN comparison does).

    Statistics are computed in float64. Empty sides give mean/sum 0 (only relevant for one-sided
    tensors, for which :func:`make_grid` does not vote).

    Returns:
        ``(positive_votes, negative_votes)``, summing to 5.
    """
    a = as_real_array(w, "w").ravel()
    pos, neg = a[a > 0], a[a < 0]
    votes = [
        abs(a.max()) > abs(a.min()),
        (pos.mean() if pos.size else 0.0) > (abs(neg.mean()) if neg.size else 0.0),
        pos.size > neg.size,
        np.abs(pos).sum() > np.abs(neg).sum(),
        pos.size >= 2 and neg.size >= 2 and pos.std(ddof=1) > neg.std(ddof=1),
    ]
    n_pos = int(sum(bool(v) for v in votes))
    return n_pos, 5 - n_pos


def make_grid(w: Any, bits: int, kind: str = "symmetric") -> Grid:
    """The grid of a pretrained float kernel (docs/algorithm.md, section 1).

    .. math::  \\Delta = \\mathrm{P}_{99.9}(|W|) / d, \\qquad
               d = 2^{b-1} - 1 \\;\\text{(symmetric, paper mixed-sign)}, \\quad
               d = 2^b - 1 \\;\\text{(paper one-sided, as the authors' code)}

    with the fallback :math:`\\max|W|` when the percentile is 0 and :data:`DEFAULT_STEP` when that
    is 0 too (or the float32 step underflows to 0). The percentile uses NumPy's default linear
    interpolation in float64; the step is then rounded to float32.

    Levels: ``"symmetric"`` :math:`[-(2^{b-1}-1), 2^{b-1}-1]`; ``"paper"``: all
    :math:`W \\ge 0` -> :math:`[0, 2^b-1]`; else all :math:`W \\le 0` -> :math:`[-(2^b-1), 0]` (mirror);
    else :func:`paper_vote` decides :math:`[-2^{b-1}+1, 2^{b-1}]` (positive majority) or
    :math:`[-2^{b-1}, 2^{b-1}-1]`. An all-zero kernel counts as all-nonnegative.

    Cites Becking et al. 2021 (arXiv 2109.04236) and the authors' ``initialize_centroids``.

    Args:
        w: float kernel, any shape, non-empty, finite.
        bits: int in 2..8.
        kind: one of :data:`GRID_KINDS`.

    Raises:
        TypeError: ``bits`` not an int (bool, float and str are rejected), ``kind`` not a str, ``w``
            not real-valued.
        ValueError: ``bits`` outside 2..8, unknown ``kind``, empty or non-finite ``w``, a step that
            overflows float32.
    """
    bits = validate_bits(bits)
    kind = _check_kind(kind)
    a = as_real_array(w, "w")
    absw = np.abs(a).ravel()
    scale = float(np.percentile(absw, PERCENTILE))
    if scale == 0.0:
        scale = float(absw.max())

    if kind == "symmetric":
        side = "negative"  # ignored
        denom = 2 ** (bits - 1) - 1
    elif not np.any(a < 0):
        side, denom = "nonnegative", 2**bits - 1
    elif not np.any(a > 0):
        side, denom = "nonpositive", 2**bits - 1
    else:
        n_pos, n_neg = paper_vote(a)
        side = "positive" if n_pos > n_neg else "negative"
        denom = 2 ** (bits - 1) - 1

    step64 = scale / denom
    if step64 > float(np.finfo(np.float32).max):
        raise ValueError(f"w is too large: the grid step {step64!r} overflows float32")
    step32 = np.float32(step64)
    if step32 == 0:
        step32 = np.float32(DEFAULT_STEP)
    return Grid(bits=bits, kind=kind, step=float(step32), levels=grid_levels(bits, kind, side))
