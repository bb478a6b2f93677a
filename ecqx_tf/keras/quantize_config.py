"""The tfmot ``QuantizeConfig`` of ECQ/ECQx for Dense and Conv2D layers.

The kernel goes through :class:`ECQWeightQuantizer`; the layer's activation keeps tfmot's
default 8-bit scheme (``MovingAverageQuantizer``: 8 bits, per-tensor, asymmetric), so the trained
model converts to a full-integer TFLite model. Biases stay float (int32 at export), BatchNorm
stays float during training. The config also carries the method's hyper-parameters, so a saved
model in training knows how it is being trained.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tensorflow_model_optimization as tfmot

from ..config import LAMBDA_REDUCE, validate_choice, validate_nonnegative, validate_unit_interval
from .quantizer import ECQWeightQuantizer

__all__ = ["ECQQuantizeConfig", "METHODS", "SUPPORTED_LAYERS"]

METHODS = ("ecq", "ecqx")
SUPPORTED_LAYERS = (tf.keras.layers.Dense, tf.keras.layers.Conv2D)

_MovingAverageQuantizer = tfmot.quantization.keras.quantizers.MovingAverageQuantizer


class ECQQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Quantize ``kernel`` with ECQ/ECQx and ``activation`` with 8-bit fake quantization.

    Args:
        bits, grid, gradient: see :class:`ECQWeightQuantizer`.
        method: ``"ecq"`` or ``"ecqx"``.
        Lambda: the ECQ rate hyper-parameter :math:`\\Lambda \\ge 0` (larger = sparser).
        p: ECQx's largest allowed sparsity drop relative to ECQ, in [0, 1].
        lambda_reduce: ``"min"`` (thesis, default) or ``"max"`` (published ECQx code).
    """

    def __init__(
        self,
        bits: int = 4,
        grid: str = "symmetric",
        method: str = "ecqx",
        Lambda: float = 0.05,
        p: float = 0.1,
        gradient: str = "ste",
        lambda_reduce: str = "min",
        weight_quantizer: Optional[ECQWeightQuantizer] = None,
    ):
        self.method = validate_choice("method", method, METHODS)
        self.Lambda = validate_nonnegative("Lambda", Lambda)
        self.p = validate_unit_interval("p", p)
        self.lambda_reduce = validate_choice("lambda_reduce", lambda_reduce, LAMBDA_REDUCE)
        self.weight_quantizer = weight_quantizer or ECQWeightQuantizer(bits, grid, gradient)

    @property
    def bits(self) -> int:
        return self.weight_quantizer.bits

    @property
    def grid(self) -> str:
        return self.weight_quantizer.grid

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, self.weight_quantizer)]

    def get_activations_and_quantizers(self, layer):
        return [(layer.activation, _MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False))]

    def set_quantize_weights(self, layer, quantize_weights):
        if len(quantize_weights) != 1:
            raise ValueError(f"layer {layer.name!r}: expected 1 quantized weight (kernel), got {len(quantize_weights)}")
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer):
        return []

    def get_config(self) -> dict:
        return {
            "bits": self.bits,
            "grid": self.grid,
            "gradient": self.weight_quantizer.gradient,
            "method": self.method,
            "Lambda": self.Lambda,
            "p": self.p,
            "lambda_reduce": self.lambda_reduce,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, ECQQuantizeConfig) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self.__eq__(other)
