"""Model architectures by name: ``build("mnist_mlp", (28, 28, 1), 10, seed=0)``; size options
per model as keywords, e.g. ``build("ds_cnn", (49, 10, 1), 12, seed=0, filters=8)`` for a small
variant (``options(name)`` lists them).

Every builder returns a new functional ``tf.keras.Model`` whose output is the **logits** of the
last ``Dense`` layer (no softmax), so LRP and integer export work on the pre-softmax scores. Layer
names are fixed (``input``, ``flatten``, ``dense_1`` ... ``dense_n``, ``conv_1``, ``bn_1``,
``relu_1``, ``pool_1`` ...; the last ``dense_*`` layer is always the logits layer), so two builds of
the same model have the same names and other tools can refer to layers by name.

Initialization is deterministic from ``seed``: every layer gets its own seeded initializer whose
seed is drawn from ``numpy.random.SeedSequence(seed)``, so the same seed gives bit-identical initial
weights in any process, independently of the global TensorFlow seed. ``seed=None`` gives unseeded
(random) initializers.

Architectures, parameter counts and sources: ``docs/zoo.md``.
"""
from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from ecqx_tf.config import validate_int_range
from ecqx_tf.registry import Registry
from models.names import ZOO_MODELS

__all__ = [
    "ZOO",
    "register_model",
    "build",
    "names",
    "KWS_MLP_HIDDEN",
    "MNIST_MLP_HIDDEN",
    "VGG_SMALL_STAGES",
    "VGG_SMALL_DENSE",
    "options",
]

Builder = Callable[..., tf.keras.Model]

ZOO: Registry[Builder] = Registry("zoo model", known=ZOO_MODELS, known_in="models/names.py")
register_model = ZOO.register

#: Hidden widths of ``kws_mlp`` (see docs/zoo.md for the choice).
KWS_MLP_HIDDEN: Tuple[int, ...] = (256, 256, 256)
#: Hidden widths of ``mnist_mlp`` (784-256-128-10, 235,146 parameters on 28x28x1 input).
MNIST_MLP_HIDDEN: Tuple[int, ...] = (256, 128)
#: ``vgg_small``: filters per stage; each stage is 2 x (conv 3x3 + BN + ReLU) then max-pool 2x2.
VGG_SMALL_STAGES: Tuple[int, ...] = (32, 64, 128)
#: ``vgg_small``: width of the hidden dense layer of the head.
VGG_SMALL_DENSE: int = 128


def names() -> list:
    """Registered model names (sorted); the ``--model`` choices of ``ecqx-train``."""
    return ZOO.names()


def options(name: str) -> Dict[str, Any]:
    """The size options of a zoo model and their defaults (e.g. ``{"filters": 64, "blocks": 4}``)."""
    sig = inspect.signature(ZOO.get(name))
    return {k: p.default for k, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    seed: Optional[int] = None,
    **size: Any,
) -> tf.keras.Model:
    """Build a new, uncompiled zoo model that outputs logits (the autoencoder: its reconstruction).

    Args:
        name: a registered model name (``names()``).
        input_shape: shape of one input, without the batch axis, e.g. ``(28, 28, 1)``.
        num_classes: number of output logits (>= 2); for ``fc_autoencoder`` the output size, which
            must equal the input size.
        seed: non-negative int for deterministic initial weights, or None for random ones.
        size: the model's size options (``options(name)``), positive ints (``alpha``: a float).

    Raises:
        ValueError: unknown ``name`` or size option (listing the accepted ones); a non-positive
            dimension, size or ``num_classes < 2``; an input too small or of the wrong rank for the
            architecture.
        TypeError: ``input_shape``, ``num_classes``, ``seed`` or a size option of the wrong type.
    """
    builder = ZOO.get(name)
    shape = _check_input_shape(input_shape)
    classes = validate_int_range("num_classes", num_classes, low=2)
    if seed is not None:
        validate_int_range("seed", seed, low=0)
    accepted = options(name)
    unknown = sorted(set(size) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r} has no size option(s) {unknown}; accepted: {sorted(accepted) or 'none'}")
    for k, v in size.items():
        _check_size(name, k, v, accepted[k])
    return builder(shape, classes, seed, **size)


def _check_size(model: str, key: str, value: Any, default: Any) -> None:
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) <= 4:
            raise ValueError(f"model {model!r}: option {key} must be a number in (0, 4], got {value!r}")
        return
    if isinstance(default, tuple):
        if not isinstance(value, (tuple, list)) or not value or not all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value):
            raise ValueError(f"model {model!r}: option {key} must be a non-empty tuple of ints >= 1, got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"model {model!r}: option {key} must be an int, got {type(value).__name__} {value!r}")
    if int(value) < 1:
        raise ValueError(f"model {model!r}: option {key} must be >= 1, got {value}")


# ---------------------------------------------------------------------------------------------
# validation


def _check_input_shape(input_shape: Sequence[int]) -> Tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (tuple, list)):
        raise TypeError(
            f"input_shape must be a tuple or list of ints, got {type(input_shape).__name__} "
            f"{input_shape!r}"
        )
    if len(input_shape) == 0:
        raise ValueError("input_shape must have at least one dimension, got ()")
    dims = []
    for d in input_shape:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"input_shape must contain ints, got {input_shape!r}")
        if int(d) < 1:
            raise ValueError(f"input_shape dimensions must be >= 1, got {tuple(input_shape)!r}")
        dims.append(int(d))
    return tuple(dims)


def _require_image(model: str, shape: Tuple[int, ...], min_side: int) -> None:
    """CNNs take (height, width, channels) with height and width >= ``min_side``."""
    if len(shape) != 3:
        raise ValueError(
            f"model {model!r} takes images of shape (height, width, channels); got input_shape "
            f"{shape!r} (rank {len(shape)})"
        )
    if shape[0] < min_side or shape[1] < min_side:
        raise ValueError(
            f"model {model!r} needs inputs of at least {min_side}x{min_side} pixels; got "
            f"input_shape {shape!r}"
        )


# ---------------------------------------------------------------------------------------------
# seeded initializers


class _Seeds:
    """One independent 31-bit seed per initializer, drawn in a fixed order from ``seed``."""

    def __init__(self, seed: Optional[int]):
        self._it: Optional[Iterator[int]] = None
        if seed is not None:
            # 4096 seeds is far more than any zoo model needs (resnet20 uses 22).
            state = np.random.SeedSequence(int(seed)).generate_state(4096, dtype=np.uint32)
            self._it = iter(int(s) & 0x7FFFFFFF for s in state)

    def _next(self) -> Optional[int]:
        return None if self._it is None else next(self._it)

    def he_normal(self) -> tf.keras.initializers.Initializer:
        return tf.keras.initializers.HeNormal(seed=self._next())

    def glorot_uniform(self) -> tf.keras.initializers.Initializer:
        return tf.keras.initializers.GlorotUniform(seed=self._next())


def _dense(seeds: _Seeds, units: int, name: str, relu: bool) -> tf.keras.layers.Dense:
    return tf.keras.layers.Dense(
        units,
        activation="relu" if relu else None,
        kernel_initializer=seeds.he_normal() if relu else seeds.glorot_uniform(),
        bias_initializer="zeros",
        name=name,
    )


def _mlp(model_name: str, shape, num_classes, seed, hidden: Sequence[int]) -> tf.keras.Model:
    seeds = _Seeds(seed)
    inputs = tf.keras.Input(shape=shape, name="input")
    x = tf.keras.layers.Flatten(name="flatten")(inputs)
    for i, width in enumerate(hidden, start=1):
        x = _dense(seeds, width, f"dense_{i}", relu=True)(x)
    logits = _dense(seeds, num_classes, f"dense_{len(hidden) + 1}", relu=False)(x)
    return tf.keras.Model(inputs, logits, name=model_name)


# ---------------------------------------------------------------------------------------------
# the models


@register_model("kws_mlp")
def kws_mlp(input_shape: Tuple[int, ...], num_classes: int, seed: Optional[int] = None) -> tf.keras.Model:
    """Keyword-spotting MLP: Flatten -> 3 x (Dense 256 + ReLU) -> Dense(num_classes) logits.

    Meant for Google Speech Commands features, e.g. 49 frames x 10 MFCCs = 490 inputs and 12
    classes (260,364 parameters). FantastIC4 (Wiedemann et al., arXiv 2012.11331) evaluates
    fully connected networks on GSC; the widths here are not taken from that paper but follow the
    "DNN-M" KWS baseline of Zhang et al., "Hello Edge" (arXiv 1711.07128): 3 hidden layers of 256.
    Any input rank is accepted (it is flattened).
    """
    return _mlp("kws_mlp", input_shape, num_classes, seed, KWS_MLP_HIDDEN)


@register_model("mnist_mlp")
def mnist_mlp(input_shape: Tuple[int, ...], num_classes: int, seed: Optional[int] = None) -> tf.keras.Model:
    """Flatten -> Dense 256 + ReLU -> Dense 128 + ReLU -> Dense(num_classes) logits.

    On (28, 28, 1) with 10 classes: 784-256-128-10, exactly 235,146 parameters (the benchmark
    MLP of the ECQ/ECQx reference results). Any input rank is accepted.
    """
    return _mlp("mnist_mlp", input_shape, num_classes, seed, MNIST_MLP_HIDDEN)


@register_model("lenet5")
def lenet5(input_shape: Tuple[int, ...], num_classes: int, seed: Optional[int] = None) -> tf.keras.Model:
    """LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling, as commonly used on MNIST.

    conv_1 6@5x5 'same' + ReLU -> pool_1 2x2 -> conv_2 16@5x5 'valid' + ReLU -> pool_2 2x2 ->
    flatten -> dense_1 120 + ReLU -> dense_2 84 + ReLU -> dense_3 logits. 61,706 parameters on
    (28, 28, 1) with 10 classes. Needs inputs of at least 12x12 (8x8 digits are too small).
    """
    _require_image("lenet5", input_shape, 12)
    seeds = _Seeds(seed)
    L = tf.keras.layers
    inputs = tf.keras.Input(shape=input_shape, name="input")
    x = L.Conv2D(6, 5, padding="same", activation="relu", kernel_initializer=seeds.he_normal(),
                 name="conv_1")(inputs)
    x = L.MaxPooling2D(2, name="pool_1")(x)
    x = L.Conv2D(16, 5, padding="valid", activation="relu", kernel_initializer=seeds.he_normal(),
                 name="conv_2")(x)
    x = L.MaxPooling2D(2, name="pool_2")(x)
    x = L.Flatten(name="flatten")(x)
    x = _dense(seeds, 120, "dense_1", relu=True)(x)
    x = _dense(seeds, 84, "dense_2", relu=True)(x)
    logits = _dense(seeds, num_classes, "dense_3", relu=False)(x)
    return tf.keras.Model(inputs, logits, name="lenet5")


def _conv_bn_relu(x, seeds: _Seeds, filters: int, idx: int, strides: int = 1):
    L = tf.keras.layers
    x = L.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                 kernel_initializer=seeds.he_normal(), name=f"conv_{idx}")(x)
    x = L.BatchNormalization(name=f"bn_{idx}")(x)
    return L.ReLU(name=f"relu_{idx}")(x)


@register_model("vgg_small")
def vgg_small(input_shape: Tuple[int, ...], num_classes: int, seed: Optional[int] = None, *,
              stages: Tuple[int, ...] = VGG_SMALL_STAGES, dense: int = VGG_SMALL_DENSE) -> tf.keras.Model:
    """A small VGG-style CNN (in the spirit of Simonyan & Zisserman 2015; not a published net).

    3 stages of 32/64/128 filters; each stage is 2 x (conv 3x3 'same', no bias -> BN -> ReLU) then
    max-pool 2x2; then flatten -> dense_1 128 + ReLU -> dense_2 logits. 551,018 trainable
    parameters (551,914 with the BN moving statistics) on (32, 32, 3) with 10 classes. Needs
    inputs of at least 8x8. Size options: ``stages`` (filters per stage) and ``dense``.
    """
    _require_image("vgg_small", input_shape, 8)
    seeds = _Seeds(seed)
    L = tf.keras.layers
    inputs = tf.keras.Input(shape=input_shape, name="input")
    x, idx = inputs, 0
    for stage, filters in enumerate(stages, start=1):
        for _ in range(2):
            idx += 1
            x = _conv_bn_relu(x, seeds, filters, idx)
        x = L.MaxPooling2D(2, name=f"pool_{stage}")(x)
    x = L.Flatten(name="flatten")(x)
    x = _dense(seeds, dense, "dense_1", relu=True)(x)
    logits = _dense(seeds, num_classes, "dense_2", relu=False)(x)
    return tf.keras.Model(inputs, logits, name="vgg_small")


def _basic_block(x, seeds: _Seeds, filters: int, stride: int, prefix: str):
    """He et al. basic block; projection (option B: 1x1 conv + BN) when the shape changes."""
    L = tf.keras.layers
    shortcut = x
    y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                 kernel_initializer=seeds.he_normal(), name=f"{prefix}_conv_1")(x)
    y = L.BatchNormalization(name=f"{prefix}_bn_1")(y)
    y = L.ReLU(name=f"{prefix}_relu_1")(y)
    y = L.Conv2D(filters, 3, strides=1, padding="same", use_bias=False,
                 kernel_initializer=seeds.he_normal(), name=f"{prefix}_conv_2")(y)
    y = L.BatchNormalization(name=f"{prefix}_bn_2")(y)
    if stride != 1 or int(x.shape[-1]) != filters:
        shortcut = L.Conv2D(filters, 1, strides=stride, padding="same", use_bias=False,
                            kernel_initializer=seeds.he_normal(), name=f"{prefix}_shortcut_conv")(x)
        shortcut = L.BatchNormalization(name=f"{prefix}_shortcut_bn")(shortcut)
    y = L.Add(name=f"{prefix}_add")([y, shortcut])
    return L.ReLU(name=f"{prefix}_relu_2")(y)


@register_model("resnet20")
def resnet20(input_shape: Tuple[int, ...], num_classes: int, seed: Optional[int] = None, *,
             filters: int = 16, blocks: int = 3) -> tf.keras.Model:
    """CIFAR ResNet-20 (He et al., CVPR 2016, section 4.2): 6n+2 layers with n = 3.

    conv_1 3x3x16 -> bn_1 -> relu_1 -> 3 stages (16, 32, 64 filters; stride 2 at the start of
    stages 2 and 3) x 3 basic blocks -> global average pooling -> dense_1 logits. Shortcuts are
    identities, except the two downsampling blocks, which use a 1x1-conv + BN projection (the
    paper's option B; the paper's CIFAR nets used option A, zero-padding). 272,474 trainable
    parameters (paper, option A: 0.27M = 269,722), 274,042 with the BN moving statistics, on
    (32, 32, 3) with 10 classes. Block layers are named ``stage{s}_block{b}_{conv_1, bn_1,
    relu_1, conv_2, bn_2, shortcut_conv, shortcut_bn, add, relu_2}``. Needs inputs >= 4x4.
    Size options (small variants for tests): ``filters`` (16: the first stage's width; stages use
    1x, 2x, 4x) and ``blocks`` (3 basic blocks per stage: n of 6n+2).
    """
    _require_image("resnet20", input_shape, 4)
    seeds = _Seeds(seed)
    L = tf.keras.layers
    inputs = tf.keras.Input(shape=input_shape, name="input")
    x = L.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=seeds.he_normal(),
                 name="conv_1")(inputs)
    x = L.BatchNormalization(name="bn_1")(x)
    x = L.ReLU(name="relu_1")(x)
    for stage, width in enumerate((filters, 2 * filters, 4 * filters), start=1):
        for block in range(1, blocks + 1):
            stride = 2 if (stage > 1 and block == 1) else 1
            x = _basic_block(x, seeds, width, stride, f"stage{stage}_block{block}")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    logits = _dense(seeds, num_classes, "dense_1", relu=False)(x)
    return tf.keras.Model(inputs, logits, name="resnet20")


# ---------------------------------------------------------------------------------------------
# MLPerf Tiny reference networks (Banbury et al., "MLPerf Tiny Benchmark", NeurIPS 2021 Datasets
# and Benchmarks) and a 1-D sensor CNN. Written from the paper's descriptions; the exact layer lists
# follow the benchmark's public reference models (checked by the parameter counts in the tests).

def _conv(seeds: _Seeds, filters: int, kernel, name: str, strides=1, use_bias: bool = True):
    return tf.keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=use_bias,
                                  kernel_initializer=seeds.he_normal(), name=name)


def _bn_relu(x, name: str, idx):
    x = tf.keras.layers.BatchNormalization(name=f"bn_{name}{idx}")(x)
    return tf.keras.layers.ReLU(name=f"relu_{name}{idx}")(x)


def _ds_block(x, seeds: _Seeds, filters: int, stride: int, prefix: str):
    """Depthwise-separable block: DepthwiseConv2D 3x3 + BN + ReLU, then Conv2D 1x1 + BN + ReLU."""
    L = tf.keras.layers
    x = L.DepthwiseConv2D(3, strides=stride, padding="same", depthwise_initializer=seeds.he_normal(),
                          name=f"{prefix}_dw")(x)
    x = L.BatchNormalization(name=f"{prefix}_dw_bn")(x)
    x = L.ReLU(name=f"{prefix}_dw_relu")(x)
    x = L.Conv2D(filters, 1, padding="same", kernel_initializer=seeds.he_normal(), name=f"{prefix}_pw")(x)
    x = L.BatchNormalization(name=f"{prefix}_pw_bn")(x)
    return L.ReLU(name=f"{prefix}_pw_relu")(x)


@register_model("ds_cnn")
def ds_cnn(input_shape: Tuple[int, ...], num_classes: int, seed: Optional[int] = None, *,
           filters: int = 64, blocks: int = 4) -> tf.keras.Model:
    """MLPerf Tiny keyword spotting DS-CNN (after Zhang et al., "Hello Edge", arXiv 1711.07128).

    conv_1 ``filters``@10x4 stride 2 'same' + bn_1 + relu_1 -> drop_1 (0.2) -> ``blocks`` x
    depthwise-separable block ``block{b}_{dw, dw_bn, dw_relu, pw, pw_bn, pw_relu}`` (DepthwiseConv2D
    3x3 + BN + ReLU, Conv2D ``filters``@1x1 + BN + ReLU) -> drop_2 (0.4) -> pool (average over the
    whole feature map) -> flatten -> dense_1 logits. Every convolution has a bias (the reference
    model's). On (49, 10, 1) MFCCs with 12 classes: 24,908 parameters (BN statistics included).
    """
    _require_image("ds_cnn", input_shape, 1)
    seeds = _Seeds(seed)
    L = tf.keras.layers
    inputs = tf.keras.Input(shape=input_shape, name="input")
    x = L.Conv2D(filters, (10, 4), strides=2, padding="same", kernel_initializer=seeds.he_normal(), name="conv_1")(inputs)
    x = L.BatchNormalization(name="bn_1")(x)
    x = L.ReLU(name="relu_1")(x)
    x = L.Dropout(0.2, name="drop_1")(x)
    for b in range(1, blocks + 1):
        x = _ds_block(x, seeds, filters, 1, f"block{b}")
    x = L.Dropout(0.4, name="drop_2")(x)
    x = L.AveragePooling2D(pool_size=tuple(int(d) for d in x.shape[1:3]), name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    logits = _dense(seeds, num_classes, "dense_1", relu=False)(x)
    return tf.keras.Model(inputs, logits, name="ds_cnn")


@register_model("mobilenet_v1_025")
def mobilenet_v1_025(input_shape: Tuple[int, ...], num_classes: int, seed: Optional[int] = None, *,
                     alpha: float = 0.25, blocks: int = 13) -> tf.keras.Model:
    """MLPerf Tiny visual wake words MobileNetV1 (Howard et al., arXiv 1704.04861) at width ``alpha``.

    conv_1 (32 alpha)@3x3 stride 2 + bn_1 + relu_1, then 13 depthwise-separable blocks
    ``block{b}_{dw, dw_bn, dw_relu, pw, pw_bn, pw_relu}`` with pointwise filters 64, 128, 128, 256,
    256, 512 x 6, 1024, 1024 (times ``alpha``) and stride 2 in blocks 2, 4, 6 and 12, then pool
    (average over the whole map) -> flatten -> dense_1 logits; every convolution has a bias (the
    reference model's). On (96, 96, 3) with 2 classes and alpha 0.25: 221,794 parameters.
    Size options: ``alpha`` and ``blocks`` (13; a smaller value keeps the first blocks only).
    """
    _require_image("mobilenet_v1_025", input_shape, 1)
    seeds = _Seeds(seed)
    L = tf.keras.layers
    f = lambda n: max(1, int(n * alpha))  # noqa: E731
    inputs = tf.keras.Input(shape=input_shape, name="input")
    x = L.Conv2D(f(32), 3, strides=2, padding="same", kernel_initializer=seeds.he_normal(), name="conv_1")(inputs)
    x = L.BatchNormalization(name="bn_1")(x)
    x = L.ReLU(name="relu_1")(x)
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for b, (filters, stride) in enumerate(plan[:blocks], start=1):
        x = _ds_block(x, seeds, f(filters), stride, f"block{b}")
    x = L.AveragePooling2D(pool_size=tuple(int(d) for d in x.shape[1:3]), name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    logits = _dense(seeds, num_classes, "dense_1", relu=False)(x)
    return tf.keras.Model(inputs, logits, name="mobilenet_v1_025")


@register_model("resnet8")
def resnet8(input_shape: Tuple[int, ...], num_classes: int, seed: Optional[int] = None, *,
            filters: int = 16) -> tf.keras.Model:
    """MLPerf Tiny image classification ResNet-8 (after He et al., CVPR 2016): conv_1
    ``filters``@3x3 + bn_1 + relu_1, then 3 residual stacks ``stack{s}_{conv_1, bn_1, relu_1,
    conv_2, bn_2, shortcut_conv, add, relu_2}`` with ``filters`` x 1, 2, 4 and stride 2 entering
    stacks 2 and 3 (there the shortcut is a 1x1 convolution with stride 2, without BN; stack 1's is
    the identity), then pool (average pooling over the smaller side of the final map) -> flatten ->
    dense_1 logits. Every convolution has a bias (the reference model's). On (32, 32, 3) with 10
    classes: 78,666 parameters (BN statistics included).
    """
    _require_image("resnet8", input_shape, 1)
    seeds = _Seeds(seed)
    L = tf.keras.layers
    inputs = tf.keras.Input(shape=input_shape, name="input")
    x = _conv(seeds, filters, 3, "conv_1")(inputs)
    x = L.BatchNormalization(name="bn_1")(x)
    x = L.ReLU(name="relu_1")(x)
    for stack, mult in enumerate((1, 2, 4), start=1):
        stride = 1 if stack == 1 else 2
        p = f"stack{stack}"
        y = _conv(seeds, filters * mult, 3, f"{p}_conv_1", strides=stride)(x)
        y = L.BatchNormalization(name=f"{p}_bn_1")(y)
        y = L.ReLU(name=f"{p}_relu_1")(y)
        y = _conv(seeds, filters * mult, 3, f"{p}_conv_2")(y)
        y = L.BatchNormalization(name=f"{p}_bn_2")(y)
        if stack > 1:
            x = _conv(seeds, filters * mult, 1, f"{p}_shortcut_conv", strides=2)(x)
        x = L.Add(name=f"{p}_add")([x, y])
        x = L.ReLU(name=f"{p}_relu_2")(x)
    side = int(min(int(x.shape[1]), int(x.shape[2])))
    x = L.AveragePooling2D(pool_size=side, name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    logits = _dense(seeds, num_classes, "dense_1", relu=False)(x)
    return tf.keras.Model(inputs, logits, name="resnet8")


@register_model("fc_autoencoder")
def fc_autoencoder(input_shape: Tuple[int, ...], num_classes: int, seed: Optional[int] = None, *,
                   width: int = 128, bottleneck: int = 8, depth: int = 4) -> tf.keras.Model:
    """MLPerf Tiny anomaly detection FC autoencoder (after the DCASE 2020 task 2 baseline, Koizumi
    et al.): ``depth`` Dense(``width``) + BN + ReLU blocks, a Dense(``bottleneck``) + BN + ReLU
    block, ``depth`` Dense(``width``) + BN + ReLU blocks, then dense_{2 depth + 2} back to the input
    size (linear: the reconstruction). Layers ``dense_i``, ``bn_i``, ``relu_i``. It is not a
    classifier: ``num_classes`` is the output size and must equal the input size (640 for the
    benchmark's 5 frames x 128 log-mel bins). On (640,): 269,992 parameters (BN statistics included).
    """
    if len(input_shape) != 1:
        raise ValueError(f"model 'fc_autoencoder' takes flat vectors (n,); got input_shape {input_shape!r}")
    if num_classes != input_shape[0]:
        raise ValueError(
            f"model 'fc_autoencoder' reconstructs its input: num_classes (the output size) must equal the input "
            f"size {input_shape[0]}, got {num_classes}"
        )
    seeds = _Seeds(seed)
    L = tf.keras.layers
    inputs = tf.keras.Input(shape=input_shape, name="input")
    x = inputs
    widths = [width] * depth + [bottleneck] + [width] * depth
    for i, w in enumerate(widths, start=1):
        x = L.Dense(w, kernel_initializer=seeds.he_normal(), name=f"dense_{i}")(x)
        x = L.BatchNormalization(name=f"bn_{i}")(x)
        x = L.ReLU(name=f"relu_{i}")(x)
    out = _dense(seeds, input_shape[0], f"dense_{len(widths) + 1}", relu=False)(x)
    return tf.keras.Model(inputs, out, name="fc_autoencoder")


@register_model("sensor_cnn1d")
def sensor_cnn1d(input_shape: Tuple[int, ...], num_classes: int, seed: Optional[int] = None, *,
                 filters: Tuple[int, ...] = (16, 32, 64)) -> tf.keras.Model:
    """A 1-D CNN for sensor time series, e.g. (128, 9) inertial windows with 6 activities (UCI HAR
    shape); a common TinyML shape, not a published network: per entry of ``filters``, conv_i
    (Conv1D k=5 'same', no bias) + bn_i + relu_i, max pooling by 2 (pool_i) after every block but
    the last, then gap (GlobalAveragePooling1D) -> drop (0.2) -> dense_1 logits. On (128, 9) with 6
    classes: 14,358 parameters (BN statistics included).
    """
    if len(input_shape) != 2:
        raise ValueError(f"model 'sensor_cnn1d' takes (timesteps, channels); got input_shape {input_shape!r}")
    if input_shape[0] < 2 ** (len(filters) - 1):
        raise ValueError(f"model 'sensor_cnn1d' needs at least {2 ** (len(filters) - 1)} timesteps; got {input_shape!r}")
    seeds = _Seeds(seed)
    L = tf.keras.layers
    inputs = tf.keras.Input(shape=input_shape, name="input")
    x = inputs
    for i, f in enumerate(filters, start=1):
        x = L.Conv1D(int(f), 5, padding="same", use_bias=False, kernel_initializer=seeds.he_normal(), name=f"conv_{i}")(x)
        x = L.BatchNormalization(name=f"bn_{i}")(x)
        x = L.ReLU(name=f"relu_{i}")(x)
        if i < len(filters):
            x = L.MaxPooling1D(2, name=f"pool_{i}")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    x = L.Dropout(0.2, name="drop")(x)
    logits = _dense(seeds, num_classes, "dense_1", relu=False)(x)
    return tf.keras.Model(inputs, logits, name="sensor_cnn1d")
