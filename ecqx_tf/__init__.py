"""ecqx-tf: Entropy-Constrained Quantization (ECQ) and its explainability-driven form ECQx
(Becking et al., "ECQx: Explainability-Driven Quantization for Low-Bit and Sparse DNNs", 2021)
for tf.keras (Keras 2), trained with tfmot quantization-aware training.

Supported layers: one registry, ``ecqx_tf.layers`` (``docs/layers.md``).

Pipeline: ``make_grid`` / ``ecq_assign`` / ``ecqx_assign`` (pure NumPy) -> ``quantize(model)`` +
``model.fit(..., callbacks=[ECQxCallback()])`` -> ``strip`` / ``quantization_info`` -> the
exporters in ``firmware_export``.

Importing this package never changes TensorFlow's global execution mode, and does not import
TensorFlow: the Keras side (``quantize``, ``strip``, ...) is loaded on first use, so light modules
(``ecqx_tf.io``, ``ecqx_tf.config``, ``ecqx_tf.registry``) and the command lines' ``--help`` stay
fast.
"""
from importlib import import_module as _import_module
from typing import Any as _Any

__version__ = "0.1.0"

# public name -> submodule that defines it (imported on first access)
_LAZY = {
    "ecq_assign": ".assign",
    "ecqx_assign": ".assign",
    "layer_lambda": ".assign",
    "nearest_assign": ".assign",
    "GRID_KINDS": ".grid",
    "Grid": ".grid",
    "make_grid": ".grid",
    "QuantizedKernel": ".quantized",
    "ECQQuantizeConfig": ".keras",
    "ECQWeightQuantizer": ".keras",
    "ECQxCallback": ".keras",
    "METHODS": ".keras",
    "custom_objects": ".keras",
    "fold_batchnorm": ".keras",
    "layer_stats": ".keras",
    "load_model": ".keras",
    "quantization_info": ".keras",
    "quantize": ".keras",
    "quantize_scope": ".keras",
    "save_model": ".keras",
    "strip": ".keras",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ecqx_tf' has no attribute {name!r}")
    value = getattr(_import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
