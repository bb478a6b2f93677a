"""The data set type and its registry."""
from __future__ import annotations

import dataclasses
from typing import Callable, Tuple

import numpy as np

from ecqx_tf.registry import Registry

__all__ = ["Dataset", "DATASETS", "register_dataset"]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/test split held in memory.

    Attributes:
        x_train, x_test: float32 features, shape ``(n, *input_shape)``.
        y_train, y_test: int64 class labels in ``[0, num_classes)``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: Tuple[str, ...] = ()

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def __post_init__(self):
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if len(x) == 0:
                raise ValueError(f"data set {self.name!r}: the {part} split is empty")
            if len(x) != len(y):
                raise ValueError(
                    f"data set {self.name!r}: {part} split has {len(x)} inputs but {len(y)} labels"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"data set {self.name!r}: train inputs {self.x_train.shape[1:]} and test inputs "
                f"{self.x_test.shape[1:]} differ in shape"
            )

    def summary(self) -> dict:
        return {
            "name": self.name,
            "train": int(len(self.x_train)),
            "test": int(len(self.x_test)),
            "input_shape": list(self.input_shape),
            "num_classes": int(self.num_classes),
        }


DATASETS: Registry[Callable[..., Dataset]] = Registry("data set")
register_dataset = DATASETS.register
