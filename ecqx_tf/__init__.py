"""ecqx-tf: Entropy-Constrained Quantization (ECQ) and its explainability-driven form ECQx
(Becking et al., "ECQx: Explainability-Driven Quantization for Low-Bit and Sparse DNNs", 2021)
for tf.keras (Keras 2), trained with tfmot quantization-aware training.

Supported layers: one registry, ``ecqx_tf.layers`` (``docs/layers.md``).

Pipeline: ``make_grid`` / ``ecq_assign`` / ``ecqx_assign`` (pure NumPy) -> ``quantize(model)`` +
``model.fit(..., callbacks=[ECQxCallback()])`` -> ``strip`` / ``quantization_info`` -> the
exporters in ``firmware_export``.

Importing this package never changes TensorFlow's global execution mode.
"""
from .assign import ecq_assign, ecqx_assign, layer_lambda, nearest_assign
from .grid import GRID_KINDS, Grid, make_grid
from .keras import (
    ECQQuantizeConfig,
    ECQWeightQuantizer,
    ECQxCallback,
    METHODS,
    custom_objects,
    fold_batchnorm,
    layer_stats,
    load_model,
    quantization_info,
    quantize,
    quantize_scope,
    save_model,
    strip,
)
from .quantized import QuantizedKernel

__version__ = "0.1.0"

__all__ = [
    "ECQQuantizeConfig",
    "ECQWeightQuantizer",
    "ECQxCallback",
    "GRID_KINDS",
    "Grid",
    "METHODS",
    "QuantizedKernel",
    "custom_objects",
    "ecq_assign",
    "ecqx_assign",
    "fold_batchnorm",
    "layer_lambda",
    "layer_stats",
    "load_model",
    "make_grid",
    "nearest_assign",
    "quantization_info",
    "quantize",
    "quantize_scope",
    "save_model",
    "strip",
]
