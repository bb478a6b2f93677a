"""Keras/tfmot side of ECQ and ECQx: quantizer, quantize config, callback, quantize()/strip()."""
from .api import (
    PASSTHROUGH_LAYERS,
    custom_objects,
    ecq_layers,
    layer_stats,
    load_model,
    quantization_info,
    quantize,
    quantize_scope,
    save_model,
    strip,
)
from .callback import ECQxCallback
from .fold import fold_batchnorm, foldable_batchnorms
from .quantize_config import METHODS, ECQQuantizeConfig
from .quantizer import ECQWeightQuantizer

__all__ = [
    "ECQQuantizeConfig",
    "ECQWeightQuantizer",
    "ECQxCallback",
    "METHODS",
    "PASSTHROUGH_LAYERS",
    "custom_objects",
    "ecq_layers",
    "fold_batchnorm",
    "foldable_batchnorms",
    "layer_stats",
    "load_model",
    "quantization_info",
    "quantize",
    "quantize_scope",
    "save_model",
    "strip",
]
