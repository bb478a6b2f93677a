"""Explainability-driven compression methods beyond ECQx, by name (:data:`METHODS`):

=====================  ====================================================================
``ecq``, ``ecqx``      ECQ / ECQx quantization-aware training (``ecqx_tf.quantize``)
``relevance_pruning``  structured (units/filters removed) or unstructured pruning by LRP or
                       DeepLIFT relevance (Yeom et al. 2021; Sabih et al. 2020)
``magnitude_pruning``  baseline: tfmot ``prune_low_magnitude``
``weight_sharing``     relevance-weighted k-means codebooks, int8, QAT, exact export
``mixed_precision``    bits per layer from relevance under a weight-byte budget, then ECQ/ECQx
=====================  ====================================================================

    from ecqx_tf.methods import get_method
    result = get_method("relevance_pruning", sparsity=0.7).apply(model, x_tr, y_tr, x_te, y_te)

Building blocks: ``criteria`` (unit / weight relevance from ``lrp``, ``deeplift``, ``magnitude``),
``pruning`` (surgery, selection, schedules), ``sharing`` (k-means, int8 codebooks, export),
``mixed_precision`` (distortion, exact allocation). CLI: ``ecqx-compress`` (``cli.py``). Formulas and
sources: ``docs/xai_methods.md``.
"""
# The names below are loaded on first use: ``ecqx_tf.methods.api`` (the method classes, read by
# ``ecqx-compress`` to build its parser) does not import TensorFlow; the other modules do.
from importlib import import_module as _import_module
from typing import Any as _Any

_LAZY = {
    "ECQ": ".api",
    "METHODS": ".api",
    "CompressionMethod": ".api",
    "CompressionResult": ".api",
    "ECQx": ".api",
    "MagnitudePruning": ".api",
    "MixedPrecision": ".api",
    "RelevancePruning": ".api",
    "WeightSharing": ".api",
    "get_method": ".api",
    "method_from_config": ".api",
    "summarize": ".api",
    "CRITERIA": ".criteria",
    "relevance_gradient": ".criteria",
    "unit_scores": ".criteria",
    "weight_scores": ".criteria",
    "COSTS": ".mixed_precision",
    "allocate_bits": ".mixed_precision",
    "choose_bits": ".mixed_precision",
    "quantize_mixed": ".mixed_precision",
    "kernel_sparsity": ".pruning",
    "kernel_weight_count": ".pruning",
    "mask_units": ".pruning",
    "prunable_layers": ".pruning",
    "prune_structured": ".pruning",
    "prune_tfmot_magnitude": ".pruning",
    "prune_units": ".pruning",
    "prune_unstructured": ".pruning",
    "select_units": ".pruning",
    "cluster_layers": ".sharing",
    "int8_codebook": ".sharing",
    "quantize_shared": ".sharing",
    "sharing_info": ".sharing",
    "weighted_kmeans": ".sharing",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ecqx_tf.methods' has no attribute {name!r}")
    value = getattr(_import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
