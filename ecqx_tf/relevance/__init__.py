"""Relevance engine for ECQx: LRP rules and composites as data, a native eager backend, an
iNNvestigate backend in a worker process, and weight relevance with its running average.

Importing this package never changes TensorFlow's global execution mode (it stays eager); the
iNNvestigate backend runs in a separate process. See ``docs/relevance.md``.

    >>> R = weight_relevance(model, x, y)                       # native, epsilon_plus_flat
    >>> R = weight_relevance(model, x)                          # no labels: predicted class / whole output
    >>> R = weight_relevance(model, x, y, backend="innvestigate")
"""
from ecqx_tf.relevance.composites import (
    ALLOWED_RULES,
    COMPOSITES,
    INNVESTIGATE_LAYER_RULES,
    KERNEL_LAYER_TYPES,
    SUPPORTED_LAYER_TYPES,
    Composite,
    get_composite,
)
from ecqx_tf.relevance.deeplift import (  # registers the rules "rescale" and "rescale_max"
    DEEPLIFT_COMPOSITES,
    REFERENCES,
    DeepLIFT,
    DeepLiftComposite,
    Rescale,
    RescaleMax,
    deeplift_layer_relevance,
    deeplift_weight_relevance,
    get_deeplift_composite,
)
from ecqx_tf.relevance.graph import TARGETS, RelevanceGraph
from ecqx_tf.relevance.innvestigate_backend import (
    InnvestigateWorker,
    InnvestigateWorkerError,
    default_worker,
    innvestigate_layer_relevance,
    logits_model_json,
    shutdown_default_worker,
)
from ecqx_tf.relevance.native import (
    LayerRelevance,
    NativeLRP,
    UnsupportedLayerError,
    native_engine,
    native_layer_relevance,
    safe_divide,
    stabilize,
)
from ecqx_tf.relevance.rules import (
    DEFAULT_EPSILON,
    RULES,
    SAFE_DIVIDE_EPSILON,
    Epsilon,
    Flat,
    Gradient,
    Pass,
    Rule,
    Z,
    ZPlus,
    rule_from_config,
)
from ecqx_tf.relevance.weights import (
    BACKENDS,
    EMA_ALPHA,
    RelevanceAccumulator,
    layer_relevance,
    weight_relevance,
)

__all__ = [
    # main API
    "weight_relevance",
    "layer_relevance",
    "RelevanceAccumulator",
    "BACKENDS",
    "EMA_ALPHA",
    "LayerRelevance",
    "RelevanceGraph",
    "TARGETS",
    # rules and composites
    "Rule",
    "Epsilon",
    "ZPlus",
    "Flat",
    "Z",
    "Pass",
    "Gradient",
    "RULES",
    "rule_from_config",
    "DEFAULT_EPSILON",
    "SAFE_DIVIDE_EPSILON",
    "Composite",
    "COMPOSITES",
    "get_composite",
    "ALLOWED_RULES",
    "INNVESTIGATE_LAYER_RULES",
    "KERNEL_LAYER_TYPES",
    "SUPPORTED_LAYER_TYPES",
    # backends
    "NativeLRP",
    "native_engine",
    "native_layer_relevance",
    "stabilize",
    "safe_divide",
    "UnsupportedLayerError",
    "InnvestigateWorker",
    "InnvestigateWorkerError",
    "default_worker",
    "shutdown_default_worker",
    "innvestigate_layer_relevance",
    "logits_model_json",
    # DeepLIFT (Shrikumar et al. 2017), same rule framework
    "DeepLIFT",
    "DeepLiftComposite",
    "DEEPLIFT_COMPOSITES",
    "REFERENCES",
    "Rescale",
    "RescaleMax",
    "deeplift_layer_relevance",
    "deeplift_weight_relevance",
    "get_deeplift_composite",
]
