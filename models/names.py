"""Names of the zoo models (``models.zoo.ZOO``), readable without importing TensorFlow (the zoo
builds Keras models) so that ``ecqx-train --help`` and its argument checks stay instant.

``models.zoo.ZOO`` is created with these names and refuses to register any other; a test checks
that every name here is registered: add a new model here and in the zoo together.
"""
from __future__ import annotations

__all__ = ["ZOO_MODELS"]

ZOO_MODELS = ("ds_cnn", "fc_autoencoder", "kws_mlp", "lenet5", "mnist_mlp", "mobilenet_v1_025", "resnet20", "resnet8",
              "sensor_cnn1d", "vgg_small")
