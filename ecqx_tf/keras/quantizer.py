r"""The tfmot weight quantizer of ECQ/ECQx: a kernel is replaced in the forward pass by its
assigned centroids, and the gradient flows straight through to the float shadow kernel.

The quantizer owns, as non-trainable layer weights of the ``QuantizeWrapper``:

* ``<kernel>_centroids`` (float32, ``[K]``): the grid :math:`w_c = k_c \cdot \Delta`;
* ``<kernel>_indices`` (int32, kernel shape): the centroid index of every weight;
* ``<kernel>_relevance`` (float32, kernel shape): the (EMA of the) LRP weight relevance;
* ``<kernel>_step`` (float32, scalar): :math:`\Delta`.

The layer's own kernel variable is the float shadow copy (it is what the optimizer updates).
Forward: :math:`\hat W = \mathrm{gather}(w, \mathrm{idx})`. Backward (``gradient="ste"``):
:math:`\partial L/\partial W := \partial L/\partial \hat W` (Bengio et al. 2013); with
``gradient="ec2t"``: :math:`\partial L/\partial W := |\hat W| \, \partial L/\partial \hat W`
(Marban et al. 2020). The assignment itself is refreshed outside the graph by
:class:`ecqx_tf.keras.callback.ECQxCallback`, which writes the index variable.
"""
from __future__ import annotations

from typing import Dict

import tensorflow as tf
import tensorflow_model_optimization as tfmot

from ..config import GRADIENTS, validate_bits, validate_choice
from ..grid import GRID_KINDS

__all__ = ["ECQWeightQuantizer"]


def _straight_through(w: tf.Tensor, snapped: tf.Tensor, ec2t: bool) -> tf.Tensor:
    """Forward: exactly ``snapped`` (not ``w + (snapped - w)``, which is off by an ulp in
    float32). Backward: the incoming gradient to ``w`` (times ``|snapped|`` for EC2T)."""

    @tf.custom_gradient
    def _op(w_, q_):
        def grad(dy):
            return (dy * tf.abs(q_) if ec2t else dy), None

        return tf.identity(q_), grad

    return _op(w, tf.stop_gradient(snapped))


class ECQWeightQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """Centroid-gather quantizer with a straight-through gradient.

    Args:
        bits: grid bit width, 2..8.
        grid: ``"symmetric"`` or ``"paper"`` (see :func:`ecqx_tf.make_grid`).
        gradient: ``"ste"`` (default) or ``"ec2t"``.

    Raises:
        ValueError / TypeError: for a bit width, grid or gradient rule that is not accepted.
    """

    def __init__(self, bits: int = 4, grid: str = "symmetric", gradient: str = "ste"):
        self.bits = validate_bits(bits)
        self.grid = validate_choice("grid", grid, GRID_KINDS)
        self.gradient = validate_choice("gradient", gradient, GRADIENTS)

    def build(self, tensor_shape, name: str, layer) -> Dict[str, tf.Variable]:
        k = 2**self.bits - (1 if self.grid == "symmetric" else 0)  # levels of the grid kind
        zeros = tf.keras.initializers.Zeros()
        return {
            "centroids": layer.add_weight(f"{name}_centroids", shape=(k,), initializer=zeros, trainable=False),
            "indices": layer.add_weight(
                f"{name}_indices", shape=tensor_shape, dtype=tf.int32, initializer=zeros, trainable=False
            ),
            "relevance": layer.add_weight(f"{name}_relevance", shape=tensor_shape, initializer=zeros, trainable=False),
            "step": layer.add_weight(f"{name}_step", shape=(), initializer=zeros, trainable=False),
        }

    def __call__(self, inputs, training, weights, **kwargs):
        snapped = tf.gather(weights["centroids"], weights["indices"])
        return _straight_through(inputs, snapped, self.gradient == "ec2t")

    def get_config(self) -> dict:
        return {"bits": self.bits, "grid": self.grid, "gradient": self.gradient}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, ECQWeightQuantizer) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self.__eq__(other)
