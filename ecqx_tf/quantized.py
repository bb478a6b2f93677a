"""The hand-off from quantization to export: what a quantized kernel IS, as integers.

``ecqx_tf.quantization_info(qmodel)`` returns one :class:`QuantizedKernel` per quantized kernel,
keyed by the layer's name in the stripped model, or ``"<layer>/<kernel attr>"`` for a layer with
several quantized kernels (SeparableConv2D: ``"sep/depthwise_kernel"``, ``"sep/pointwise_kernel"``);
``ecqx_tf.strip(qmodel)`` returns a plain Keras model whose kernels equal
``QuantizedKernel.values()`` exactly. The exporters read both, and every
integer they store for a weight must equal ``QuantizedKernel.integers()`` (the grid level ``k`` of
the weight's assigned centroid).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Dict, Mapping

import numpy as np

__all__ = ["QuantizedKernel", "info_to_json", "info_from_json"]


@dataclasses.dataclass(frozen=True, eq=False)
class QuantizedKernel:
    """One layer's quantized kernel.

    Attributes:
        layer: the Keras layer name in the stripped model.
        bits: bit width b of the grid (2..8).
        grid: grid kind, ``"symmetric"`` or ``"paper"`` (see ``ecqx_tf.grid``).
        step: the grid step (float32 value), centroid c is ``levels[c] * step``.
        levels: int32, ascending grid levels k (contains 0).
        indices: int32 centroid index per weight, same shape as the Keras kernel (Conv1D
            ``[k, in, out]``, DepthwiseConv2D ``[h, w, c, m]``, SeparableConv2D depthwise
            ``[h, w, c, m]`` and pointwise ``[1, 1, c*m, out]``).
        kernel: the Keras attribute of the quantized kernel: ``"kernel"``, ``"depthwise_kernel"``
            or ``"pointwise_kernel"``.
    """

    layer: str
    bits: int
    grid: str
    step: float
    levels: np.ndarray
    indices: np.ndarray
    kernel: str = "kernel"

    def integers(self) -> np.ndarray:
        """int32 grid level k of every weight (kernel shape)."""
        return np.asarray(self.levels, dtype=np.int32)[np.asarray(self.indices)]

    def values(self) -> np.ndarray:
        """float32 centroid value of every weight: ``k * step`` computed in float32."""
        return self.integers().astype(np.float32) * np.float32(self.step)

    @property
    def zero_index(self) -> int:
        return int(np.flatnonzero(np.asarray(self.levels) == 0)[0])

    def sparsity(self) -> float:
        return float(np.mean(self.integers() == 0))

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "bits": int(self.bits),
            "grid": self.grid,
            "step": float(np.float32(self.step)),
            "levels": [int(v) for v in self.levels],
            "shape": [int(d) for d in np.shape(self.indices)],
            "indices": np.asarray(self.indices, dtype=np.int32).ravel().tolist(),
            "kernel": self.kernel,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "QuantizedKernel":
        return cls(
            layer=str(d["layer"]),
            bits=int(d["bits"]),
            grid=str(d["grid"]),
            step=float(np.float32(d["step"])),
            levels=np.asarray(d["levels"], dtype=np.int32),
            indices=np.asarray(d["indices"], dtype=np.int32).reshape(d["shape"]),
            kernel=str(d.get("kernel", "kernel")),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantizedKernel):
            return NotImplemented
        return self.to_dict() == other.to_dict()


def info_to_json(info: Mapping[str, QuantizedKernel]) -> str:
    return json.dumps({k: v.to_dict() for k, v in sorted(info.items())}, sort_keys=True)


def info_from_json(text: str) -> Dict[str, QuantizedKernel]:
    return {k: QuantizedKernel.from_dict(v) for k, v in json.loads(text).items()}
