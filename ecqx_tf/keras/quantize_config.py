"""The tfmot ``QuantizeConfig`` of ECQ/ECQx for the kernel layers of the layer registry
(:mod:`ecqx_tf.layers`): Dense, Conv1D, Conv2D, DepthwiseConv2D and SeparableConv2D.

Every quantized kernel attribute of the layer (``kernel``; ``depthwise_kernel``; both
``depthwise_kernel`` and ``pointwise_kernel`` of a SeparableConv2D) goes through
:class:`ECQWeightQuantizer`; the layer's activation keeps tfmot's
default 8-bit scheme (``MovingAverageQuantizer``: 8 bits, per-tensor, asymmetric), so the trained
model converts to a full-integer TFLite model. Biases stay float (int32 at export), BatchNorm
stays float during training. The config also carries the method's hyper-parameters, so a saved
model in training knows how it is being trained.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tensorflow_model_optimization as tfmot

from .. import layers as _layers
from ..config import ECQ_DEFAULTS, LAMBDA_REDUCE, validate_choice, validate_nonnegative, validate_unit_interval
from .quantizer import ECQWeightQuantizer

__all__ = ["ECQQuantizeConfig", "ECQQuantizeScheme", "METHODS", "SUPPORTED_LAYERS"]

METHODS = ("ecq", "ecqx")
#: The kernel layer classes (from the layer registry).
SUPPORTED_LAYERS = tuple(getattr(tf.keras.layers, n) for n in _layers.kernel_types())

_MovingAverageQuantizer = tfmot.quantization.keras.quantizers.MovingAverageQuantizer
_Default8BitScheme = tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme


class ECQQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Quantize the layer's kernel(s) (registry ``LayerSpec.kernels``) with ECQ/ECQx and its
    ``activation`` with 8-bit fake quantization.

    Args:
        bits, grid, gradient: see :class:`ECQWeightQuantizer`.
        method: ``"ecq"`` or ``"ecqx"``.
        Lambda: the ECQ rate hyper-parameter :math:`\\Lambda \\ge 0` (larger = sparser).
        p: ECQx's largest allowed sparsity drop relative to ECQ, in [0, 1].
        lambda_reduce: ``"min"`` (thesis, default) or ``"max"`` (published ECQx code).
        quantize_output: fake-quantize the layer's activation output (8 bits). False where the
            layer feeds a ReLU layer that quantizes instead (tfmot's layer+ReLU fusion, see
            :class:`ECQQuantizeScheme`), so no fake quantization sits between them.
    """

    def __init__(
        self,
        bits: int = ECQ_DEFAULTS["bits"],
        grid: str = ECQ_DEFAULTS["grid"],
        method: str = ECQ_DEFAULTS["method"],
        Lambda: float = ECQ_DEFAULTS["Lambda"],
        p: float = ECQ_DEFAULTS["p"],
        gradient: str = ECQ_DEFAULTS["gradient"],
        lambda_reduce: str = ECQ_DEFAULTS["lambda_reduce"],
        quantize_output: bool = True,
        weight_quantizer: Optional[ECQWeightQuantizer] = None,
    ):
        if not isinstance(quantize_output, bool):
            raise TypeError(f"quantize_output must be a bool, got {quantize_output!r}")
        self.quantize_output = quantize_output
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

    @staticmethod
    def kernel_attrs(layer) -> tuple:
        """The quantized kernel attributes of ``layer`` (from the layer registry)."""
        return _layers.get(layer).kernels

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, a), self.weight_quantizer) for a in self.kernel_attrs(layer)]

    def get_activations_and_quantizers(self, layer):
        if not self.quantize_output:
            return []
        return [(layer.activation, _MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False))]

    def set_quantize_weights(self, layer, quantize_weights):
        attrs = self.kernel_attrs(layer)
        if len(quantize_weights) != len(attrs):
            raise ValueError(
                f"layer {layer.name!r}: expected {len(attrs)} quantized weights ({', '.join(attrs)}), "
                f"got {len(quantize_weights)}"
            )
        for a, w in zip(attrs, quantize_weights):
            setattr(layer, a, w)

    def set_quantize_activations(self, layer, quantize_activations):
        if quantize_activations:
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
            "quantize_output": self.quantize_output,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, ECQQuantizeConfig) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self.__eq__(other)


class ECQQuantizeScheme(_Default8BitScheme):
    """tfmot's default 8-bit scheme, except that its layout transforms never drop ECQ.

    tfmot's ``LayerReLUQuantize`` transform (a Dense/Conv2D/DepthwiseConv2D followed by a ReLU
    layer) replaces the
    first layer's QuantizeConfig with a no-op config so that no fake quantization sits between
    the two; for an ECQ layer that would silently leave the kernel unquantized. Here the ECQ config
    is kept and only its output fake quantization is switched off, which is what the transform
    intends.
    """

    def get_layout_transformer(self):
        return _ECQLayoutTransform(super().get_layout_transformer())


class _ECQLayoutTransform:
    def __init__(self, inner):
        self._inner = inner

    def apply(self, model, layer_quantize_map):
        before = {name: meta.get("quantize_config") for name, meta in layer_quantize_map.items()}
        model, new_map = self._inner.apply(model, layer_quantize_map)
        for name, cfg in before.items():
            if isinstance(cfg, ECQQuantizeConfig) and name in new_map:
                now = new_map[name].get("quantize_config")
                if not isinstance(now, ECQQuantizeConfig):
                    new_map[name]["quantize_config"] = ECQQuantizeConfig.from_config(
                        {**cfg.get_config(), "quantize_output": False}
                    )
        return model, new_map
