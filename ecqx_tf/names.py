"""Names of the registries that live in modules importing TensorFlow, so that the command lines
can offer them as choices (and show them in ``--help``) without importing TensorFlow.

Each registry is created with these names (``Registry(kind, known=...)``) and refuses to register
any other, and a test checks that every name here is registered: add a new entry here and at its
registration together.
"""
from __future__ import annotations

__all__ = ["CRITERIA", "LRP_COMPOSITES", "DEEPLIFT_REFERENCES", "WEIGHT_COSTS", "SHARING_CLUSTERS"]

#: ``ecqx_tf.methods.criteria.CRITERIA``: unit/weight importance criteria.
CRITERIA = ("deeplift", "lrp", "magnitude")
#: ``ecqx_tf.relevance.COMPOSITES``: LRP composites (rule per layer type).
LRP_COMPOSITES = ("epsilon", "epsilon_plus_flat")
#: ``ecqx_tf.relevance.REFERENCES``: DeepLIFT reference inputs.
DEEPLIFT_REFERENCES = ("mean", "zeros")
#: ``ecqx_tf.methods.mixed_precision.COSTS``: weight-byte cost models.
WEIGHT_COSTS = ("packed", "tflm")
#: ``ecqx_tf.methods.sharing.ALLOWED_CLUSTERS``: codebook sizes of weight sharing (2^k - 1 and 2^k,
#: the integer grid of ``k`` bits with or without the zero-only code).
SHARING_CLUSTERS = (3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128)
