"""Per-kernel measurements of a quantized assignment (see docs/algorithm.md), pure NumPy.

All functions take int centroid indices (any shape) as produced by ``ecqx_tf.assign``.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .config import validate_int_range
from .grid import Grid

__all__ = ["entropy_of_counts", "value_entropy", "index_entropy", "kernel_stats", "sparsity", "used_centroids"]


def _indices(indices: Any, num_levels: Optional[int] = None) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.dtype == np.bool_ or not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"indices must be an integer array, got dtype {idx.dtype}")
    if idx.size == 0:
        raise ValueError(f"indices must not be empty, got shape {idx.shape}")
    if idx.min() < 0:
        raise ValueError(f"indices must be >= 0, got minimum {int(idx.min())}")
    if num_levels is not None and idx.max() >= num_levels:
        raise ValueError(f"indices must be < num_levels ({num_levels}), got maximum {int(idx.max())}")
    return idx


def sparsity(indices: Any, zero_index: int) -> float:
    """Share of weights in the zero cluster: :math:`S = \\#\\{i : A_i = c_0\\} / N`.

    Raises:
        TypeError / ValueError: non-integer or empty ``indices``, negative ``zero_index``.
    """
    zero_index = validate_int_range("zero_index", zero_index, low=0)
    idx = _indices(indices)
    return np.count_nonzero(idx == zero_index) / idx.size


def entropy_of_counts(counts: Any) -> float:
    """Shannon entropy in bits per symbol of a histogram:

    .. math::  H = -\\sum_{c : n_c > 0} \\frac{n_c}{N} \\log_2 \\frac{n_c}{N}, \\quad N = \\sum_c n_c

    (0 for a single symbol). The one place the formula is written; every entropy the project
    reports (per layer, per model, of stored integers or of blob codes) comes from here.
    """
    c = np.asarray(counts)
    c = c[c > 0]
    pr = c / c.sum()
    return float(0.0 - np.sum(pr * np.log2(pr)))


def value_entropy(values: Any) -> float:
    """Empirical entropy (bits per value, :func:`entropy_of_counts`) of any array of integers,
    e.g. the stored weight integers of several layers together."""
    _, counts = np.unique(np.asarray(values).ravel(), return_counts=True)
    return entropy_of_counts(counts)


def index_entropy(indices: Any, num_levels: int) -> float:
    """Empirical Shannon entropy of the centroid indices, in bits per weight.

    .. math::  H = -\\sum_{c : n_c > 0} \\frac{n_c}{N} \\log_2 \\frac{n_c}{N}

    (the unbiased :math:`P_c` of Becking et al. 2021; a kernel using one centroid has H = 0).

    Raises:
        TypeError / ValueError: non-integer or empty ``indices``, indices outside
            ``[0, num_levels)``, ``num_levels`` < 1.
    """
    num_levels = validate_int_range("num_levels", num_levels, low=0)
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    idx = _indices(indices, num_levels)
    return entropy_of_counts(np.bincount(idx.ravel(), minlength=num_levels))


def used_centroids(indices: Any) -> int:
    """Number of distinct centroid indices used.

    Raises:
        TypeError / ValueError: non-integer, empty or negative ``indices``.
    """
    idx = _indices(indices)
    top = int(idx.max())
    if top < (1 << 20):  # centroid indices: a linear count instead of a sort
        return int(np.count_nonzero(np.bincount(idx.ravel(), minlength=top + 1)))
    return int(np.unique(idx).size)


def kernel_stats(indices: Any, grid: Grid) -> dict:
    """Summary of one kernel's assignment on ``grid``.

    Returns:
        ``{"bits", "kind", "step", "num_levels", "n_weights", "sparsity", "entropy",
        "used_centroids"}`` with sparsity and entropy as defined by :func:`sparsity` and
        :func:`index_entropy` (bits/weight).

    Raises:
        TypeError: ``grid`` is not a :class:`ecqx_tf.grid.Grid`.
        ValueError: indices outside ``[0, grid.num_levels)``.
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be an ecqx_tf.grid.Grid, got {type(grid).__name__}")
    idx = _indices(indices, grid.num_levels)
    return {
        "bits": grid.bits,
        "kind": grid.kind,
        "step": grid.step,
        "num_levels": grid.num_levels,
        "n_weights": int(idx.size),
        "sparsity": sparsity(idx, grid.zero_index),
        "entropy": index_entropy(idx, grid.num_levels),
        "used_centroids": used_centroids(idx),
    }
