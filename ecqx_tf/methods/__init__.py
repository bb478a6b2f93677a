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
from .api import (
    ECQ,
    METHODS,
    CompressionMethod,
    CompressionResult,
    ECQx,
    MagnitudePruning,
    MixedPrecision,
    RelevancePruning,
    WeightSharing,
    get_method,
    method_from_config,
    summarize,
)
from .criteria import CRITERIA, relevance_gradient, unit_scores, weight_scores
from .mixed_precision import COSTS, allocate_bits, choose_bits, quantize_mixed
from .pruning import (
    kernel_sparsity,
    kernel_weight_count,
    mask_units,
    prunable_layers,
    prune_structured,
    prune_tfmot_magnitude,
    prune_units,
    prune_unstructured,
    select_units,
)
from .sharing import cluster_layers, int8_codebook, lut_compress_shared, quantize_shared, sharing_info, weighted_kmeans

__all__ = [
    "METHODS",
    "CompressionMethod",
    "CompressionResult",
    "get_method",
    "method_from_config",
    "summarize",
    "ECQ",
    "ECQx",
    "RelevancePruning",
    "MagnitudePruning",
    "WeightSharing",
    "MixedPrecision",
    "CRITERIA",
    "unit_scores",
    "weight_scores",
    "relevance_gradient",
    "prunable_layers",
    "prune_units",
    "mask_units",
    "select_units",
    "kernel_weight_count",
    "kernel_sparsity",
    "prune_structured",
    "prune_unstructured",
    "prune_tfmot_magnitude",
    "weighted_kmeans",
    "int8_codebook",
    "cluster_layers",
    "quantize_shared",
    "sharing_info",
    "lut_compress_shared",
    "COSTS",
    "allocate_bits",
    "choose_bits",
    "quantize_mixed",
]
