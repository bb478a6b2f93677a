"""Tiny models and a stand-in for ECQ quantization, for the TFLM export tests.

``snap_model_for_tests`` snaps every Dense/Conv2D kernel to a grid the way the exporter expects
from ``ecqx_tf.strip`` + ``ecqx_tf.quantization_info`` (kernel == ``QuantizedKernel.values()``),
without needing the quantization side.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Dict, Tuple  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ecqx_tf.quantized import QuantizedKernel  # noqa: E402

__all__ = ["snap_model_for_tests", "mlp", "cnn", "cnn_bn", "toy_data", "request_for", "GRAPH_MODELS",
           "ds_cnn_like", "mobilenet_like", "resnet_like", "fc_autoencoder_like", "conv1d_like", "concat_like",
           "sigmoid_like", "softmax_like", "randomize_batchnorm", "KERNEL_ATTRS", "fold_dense_batchnorm"]


def toy_data(shape: Tuple[int, ...], n: int = 96, classes: int = 4, seed: int = 0):
    """Inputs in [0, 1] whose class is decided by which quarter of the features is brightest."""
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + tuple(shape), dtype=np.float32) * 0.5
    y = rng.integers(0, classes, size=n)
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    for i in range(n):
        part = slice(y[i] * d // classes, (y[i] + 1) * d // classes)
        flat[i, part] += 0.5
    return flat.reshape(x.shape).astype(np.float32), y.astype(np.int64)


def _train(model, x, y, steps: int = 30):
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=max(1, steps * 32 // len(x)), verbose=0)
    return model


def mlp(seed: int = 0, train: bool = True, softmax: bool = False):
    tf.keras.utils.set_random_seed(seed)
    m = tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(24, activation="relu"),
        tf.keras.layers.Dropout(0.1),
        tf.keras.layers.Dense(16),
        tf.keras.layers.ReLU(),
        tf.keras.layers.Dense(4, activation="softmax" if softmax else None),
    ], name="mlp")
    if train:
        x, y = toy_data((8, 8, 1), 192, seed=seed)
        if softmax:
            m.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
            m.fit(x, y, batch_size=32, epochs=5, verbose=0)
        else:
            _train(m, x, y)
    return m


def cnn(seed: int = 0, train: bool = True):
    tf.keras.utils.set_random_seed(seed)
    m = tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)),
        tf.keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
        tf.keras.layers.MaxPooling2D(2),
        tf.keras.layers.DepthwiseConv2D(3, padding="valid", depth_multiplier=2, activation="relu6"),
        tf.keras.layers.Conv2D(8, 1, strides=1, activation="relu"),
        tf.keras.layers.AveragePooling2D(2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(4),
    ], name="cnn")
    if train:
        x, y = toy_data((8, 8, 1), 192, seed=seed)
        _train(m, x, y)
    return m


def cnn_bn(seed: int = 0, train: bool = True):
    """Conv2D -> BatchNorm -> ReLU, with BN statistics that flip some channel signs."""
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Conv2D(6, 3, padding="valid", use_bias=False)(inp)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same")(x)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.Activation("relu")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    out = tf.keras.layers.Dense(4)(x)
    m = tf.keras.Model(inp, out, name="cnn_bn")
    if train:
        xd, yd = toy_data((8, 8, 1), 192, seed=seed)
        _train(m, xd, yd)
    rng = np.random.default_rng(seed + 1)
    for layer in m.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            gamma = rng.uniform(0.5, 1.5, n) * np.where(np.arange(n) % 3 == 1, -1.0, 1.0)
            layer.set_weights([gamma.astype(np.float32), rng.normal(0, 0.1, n).astype(np.float32),
                               layer.moving_mean.numpy(), rng.uniform(0.5, 2.0, n).astype(np.float32)])
    return m


# Keras layer type -> its quantizable kernel attributes (the contract of ecqx_tf.quantization_info)
KERNEL_ATTRS = {"Dense": ("kernel",), "Conv1D": ("kernel",), "Conv2D": ("kernel",),
                "DepthwiseConv2D": ("depthwise_kernel",), "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel")}


def snap_model_for_tests(model, bits: int = 4, grid: str = "symmetric", sparsity: float = 0.3,
                         seed: int = 0, layers=None, kinds=("Dense", "Conv2D")) -> Tuple[tf.keras.Model, Dict[str, QuantizedKernel]]:
    """A copy of ``model`` with every kernel of the layer types ``kinds`` (``"all"``: every
    quantizable one) snapped to ``k * step`` and the matching ``QuantizedKernel`` per kernel (a
    stand-in for ``ecqx_tf.strip`` + ``quantization_info``; keys: the layer name, or
    ``"<layer>/<kernel attr>"`` for SeparableConv2D).

    symmetric: ``step = pct99.9(|w|) / (2^(b-1) - 1)``, ``k = clip(round(w / step), -q, q)``;
    paper: levels ``-2^(b-1) .. 2^(b-1) - 1`` with ``step = pct99.9(|w|) / 2^(b-1)``.
    ``sparsity``: the smallest ``|w|`` fraction is set to ``k = 0``.
    """
    clone = tf.keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    rng = np.random.default_rng(seed)
    info: Dict[str, QuantizedKernel] = {}
    kinds = tuple(KERNEL_ATTRS) if kinds == "all" else tuple(kinds)
    for layer in clone.layers:
        cls = type(layer).__name__
        if cls not in kinds:
            continue
        if layers is not None and layer.name not in layers:
            continue
        for attr in KERNEL_ATTRS[cls]:
            key = layer.name if len(KERNEL_ATTRS[cls]) == 1 else f"{layer.name}/{attr}"
            info[key] = _snap_kernel(layer, attr, bits, grid, sparsity, rng)
    return clone, info


def _snap_kernel(layer, attr: str, bits: int, grid: str, sparsity: float, rng) -> QuantizedKernel:
    w = getattr(layer, attr).numpy()
    if grid == "symmetric":
        q = 2 ** (bits - 1) - 1
        levels = np.arange(-q, q + 1, dtype=np.int32)
        lo, hi = -q, q
        step = np.float32(np.percentile(np.abs(w), 99.9) / q)
    elif grid == "paper":
        levels = np.arange(-(2 ** (bits - 1)), 2 ** (bits - 1), dtype=np.int32)
        lo, hi = int(levels[0]), int(levels[-1])
        step = np.float32(np.percentile(np.abs(w), 99.9) / (2 ** (bits - 1)))
    else:
        raise ValueError(grid)
    k = np.clip(np.round(w / step), lo, hi).astype(np.int32)
    if sparsity:
        thr = np.quantile(np.abs(w), sparsity)
        k[np.abs(w) <= thr] = 0
    # make sure the extremes of the grid occur (exercises -8/-128 for the paper grid)
    flat = k.reshape(-1)
    flat[int(rng.integers(flat.size))] = lo
    flat[int(rng.integers(flat.size))] = hi
    qk = QuantizedKernel(layer.name, bits, grid, float(step), levels, k - int(levels[0]), kernel=attr)
    assert np.array_equal(qk.integers(), k)
    getattr(layer, attr).assign(qk.values())
    return qk


def request_for(model, quant=None, n_rep: int = 64, n_test: int = 48, seed: int = 0, name: str = "m", **options):
    from firmware_export.registry import ExportRequest

    shape = tuple(int(d) for d in model.input_shape[1:])
    x, y = toy_data(shape, n_rep + n_test, seed=seed + 100)
    return ExportRequest(model=model, quant=quant or {}, name=name, representative=x[:n_rep],
                         x_test=x[n_rep:], y_test=y[n_rep:], options=dict(options))


# ---------------------------------------------------------------------------------------------
# small graph models, one per architecture family (the zoo's full-size ones come from ecqx_tf/models)
L = tf.keras.layers


def randomize_batchnorm(model, seed: int = 1):
    """Give every BatchNormalization non-trivial statistics, some channels with a negative factor."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            gamma = rng.uniform(0.5, 1.5, n) * np.where(np.arange(n) % 3 == 1, -1.0, 1.0)
            layer.set_weights([gamma.astype(np.float32), rng.normal(0, 0.1, n).astype(np.float32),
                               rng.normal(0, 0.1, n).astype(np.float32), rng.uniform(0.5, 2.0, n).astype(np.float32)])
    return model


def _finish(inp, out, name, seed):
    m = tf.keras.Model(inp, out, name=name)
    return randomize_batchnorm(m, seed + 1)


def ds_cnn_like(seed: int = 0):
    """DS-CNN (keyword spotting): Conv+BN+ReLU, DepthwiseConv+BN+ReLU, Conv1x1+BN+ReLU, AvgPool, Dense."""
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((10, 6, 1))
    x = L.Conv2D(8, (3, 3), strides=(2, 2), padding="same", use_bias=False)(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.Conv2D(8, 1, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.AveragePooling2D(pool_size=(5, 3))(x)
    x = L.Flatten()(x)
    out = L.Dense(4)(x)
    return _finish(inp, out, "ds_cnn_like", seed)


def mobilenet_like(seed: int = 0):
    """MobileNetV1: ZeroPadding + strided depthwise, ReLU6, depth multiplier 2, GlobalAveragePooling."""
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((12, 12, 3))
    x = L.Conv2D(4, 3, strides=2, padding="same", use_bias=False)(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="valid", depth_multiplier=2, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.Conv2D(8, 1, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.1)(x)
    out = L.Dense(3)(x)
    return _finish(inp, out, "mobilenet_like", seed)


def resnet_like(seed: int = 0):
    """ResNet: a residual block with identity shortcut and one with a 1x1 strided shortcut (Add)."""
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same")(inp)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    y = L.Conv2D(4, 3, padding="same")(x)
    y = L.BatchNormalization()(y)
    y = L.Activation("relu")(y)
    y = L.Conv2D(4, 3, padding="same")(y)
    y = L.BatchNormalization()(y)
    x = L.Activation("relu")(L.Add()([x, y]))
    y = L.Conv2D(6, 3, strides=2, padding="same")(x)
    y = L.BatchNormalization()(y)
    y = L.Activation("relu")(y)
    y = L.Conv2D(6, 3, padding="same")(y)
    y = L.BatchNormalization()(y)
    s = L.Conv2D(6, 1, strides=2)(x)
    x = L.Activation("relu")(L.Add()([s, y]))
    x = L.AveragePooling2D(4)(x)
    x = L.Flatten()(x)
    out = L.Dense(4)(x)
    return _finish(inp, out, "resnet_like", seed)


def fc_autoencoder_like(seed: int = 0, width: int = 64, bottleneck: int = 8, n_in: int = 40):
    """FC autoencoder (anomaly detection): Dense+BN+ReLU blocks, linear output as wide as the input."""
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((n_in,))
    x = inp
    for w in (width, bottleneck, width):
        x = L.Dense(w)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
    out = L.Dense(n_in)(x)
    return _finish(inp, out, "fc_autoencoder_like", seed)


def conv1d_like(seed: int = 0):
    """Sensor model: Conv1D + MaxPooling1D + Conv1D + GlobalAveragePooling1D + Dense."""
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((24, 3))
    x = L.ZeroPadding1D((1, 1))(inp)
    x = L.Conv1D(6, 3, activation="relu")(x)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(8, 3, strides=2, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling1D()(x)
    out = L.Dense(4)(x)
    return _finish(inp, out, "conv1d_like", seed)


def concat_like(seed: int = 0):
    """Two branches concatenated (Inception-style), a separable convolution and a global max pool."""
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((8, 8, 2))
    a = L.Conv2D(3, 1, activation="relu")(inp)
    b = L.SeparableConv2D(4, 3, padding="same", activation="relu")(inp)
    x = L.Concatenate()([a, b])
    x = L.MaxPooling2D(2)(x)
    x = L.GlobalMaxPooling2D()(x)
    out = L.Dense(4)(x)
    return _finish(inp, out, "concat_like", seed)


def sigmoid_like(seed: int = 0):
    """A binary classifier with a sigmoid output (LOGISTIC)."""
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((8, 8, 1))
    x = L.Flatten()(inp)
    x = L.Dense(12, activation="relu")(x)
    out = L.Dense(1, activation="sigmoid")(x)
    return _finish(inp, out, "sigmoid_like", seed)


def softmax_like(seed: int = 0):
    """A classifier with a softmax output layer (SOFTMAX)."""
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, activation="relu")(inp)
    x = L.Flatten()(x)
    x = L.Dense(5)(x)
    out = L.Softmax()(x)
    return _finish(inp, out, "softmax_like", seed)


#: name -> builder; the end-to-end tests are parametrized over this list (zoo models join it later)
GRAPH_MODELS = {
    "ds_cnn_like": ds_cnn_like,
    "mobilenet_like": mobilenet_like,
    "resnet_like": resnet_like,
    "fc_autoencoder_like": fc_autoencoder_like,
    "conv1d_like": conv1d_like,
    "concat_like": concat_like,
    "sigmoid_like": sigmoid_like,
    "softmax_like": softmax_like,
}


def fold_dense_batchnorm(model):
    """A Sequential copy of a chain model with every Dense -> BatchNormalization pair folded into
    one Dense (``ecqx_tf.fold_batchnorm`` when that exists; this stand-in covers Dense chains)."""
    try:
        from ecqx_tf import fold_batchnorm  # the package's own, once it is on main

        return fold_batchnorm(model)
    except ImportError:
        pass
    layers = [l for l in model.layers if not isinstance(l, tf.keras.layers.InputLayer)]
    out = [tf.keras.Input(tuple(model.input_shape[1:]))]
    weights = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, tf.keras.layers.Dense) and isinstance(nxt, tf.keras.layers.BatchNormalization):
            k, b = layer.get_weights() if layer.use_bias else (layer.get_weights()[0], np.zeros(layer.units))
            gamma, beta, mean, var = [w.astype(np.float64) for w in nxt.get_weights()]
            f = gamma / np.sqrt(var + nxt.epsilon)
            out.append(tf.keras.layers.Dense(layer.units, name=layer.name))
            weights.append((len(out) - 1, [(k * f).astype(np.float32), ((b - mean) * f + beta).astype(np.float32)]))
            i += 2
            continue
        out.append(type(layer).from_config(layer.get_config()))
        weights.append((len(out) - 1, layer.get_weights()))
        i += 1
    folded = tf.keras.Sequential(out, name=model.name + "_folded")
    for idx, w in weights:
        folded.layers[idx - 1].set_weights(w)
    return folded
