"""Data sets by name: ``load("mnist_bundled")``; on-disk formats take ``path=``."""
from __future__ import annotations

from .base import DATASETS, Dataset, register_dataset
from . import bundled  # noqa: F401  (registers mnist_bundled, digits)
from . import ondisk  # noqa: F401  (registers mnist, cifar10, speech_commands)

__all__ = ["DATASETS", "Dataset", "register_dataset", "load", "names"]


def load(name: str, **kwargs) -> Dataset:
    """Load a registered data set. Raises ValueError naming the accepted names."""
    return DATASETS.get(name)(**kwargs)


def names():
    return DATASETS.names()
