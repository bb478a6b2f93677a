"""Data sets by name: ``load("mnist_bundled")``; on-disk formats take ``path=``."""
from __future__ import annotations

from . import (
    bundled,  # noqa: F401  (registers mnist_bundled, digits)
    ondisk,  # noqa: F401  (registers mnist, cifar10, speech_commands)
)
from .base import DATASETS, Dataset, register_dataset

__all__ = ["DATASETS", "Dataset", "register_dataset", "load", "names", "path_required", "check_data_args"]


def load(name: str, **kwargs) -> Dataset:
    """Load a registered data set. Raises ValueError naming the accepted names."""
    return DATASETS.get(name)(**kwargs)


def names():
    return DATASETS.names()


def path_required(name: str) -> bool:
    """True when data set ``name`` is read from disk (its loader needs ``path``), False when it is
    bundled (its loader takes no path).

    Raises:
        ValueError: unknown name (listing the accepted ones).
    """
    import inspect

    loader = DATASETS.get(name)
    try:
        param = inspect.signature(loader).parameters.get("path")
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False
    return param is not None


def check_data_args(name: str, path, flag: str = "--data-path") -> None:
    """The pair (data set name, location) a command line received, checked before any work:
    an on-disk set needs an existing ``path``, a bundled one takes none.

    Raises:
        ValueError: naming ``flag``, the value and what is accepted.
    """
    import os

    if path_required(name):
        if path is None or str(path) == "":
            raise ValueError(f"data set {name!r} is read from disk: pass its location with {flag} PATH")
        if not os.path.exists(path):
            raise ValueError(f"{flag} {str(path)!r} does not exist (data set {name!r} is read from there)")
    elif path is not None:
        raise ValueError(f"data set {name!r} is bundled and takes no {flag}; got {str(path)!r}")
