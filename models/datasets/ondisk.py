"""On-disk loaders (full MNIST IDX, CIFAR-10 python batches, Google Speech Commands wav folders).

Each loader lives in its own module; importing them here registers ``mnist``, ``cifar10`` and
``speech_commands`` in :data:`models.datasets.DATASETS`. Every one takes ``path=``.
"""
from __future__ import annotations

from .cifar10 import load_cifar10
from .mnist_idx import load_mnist
from .speech_commands import kws_features, load_speech_commands

__all__ = ["load_mnist", "load_cifar10", "load_speech_commands", "kws_features"]
