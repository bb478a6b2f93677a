r"""BatchNormalization folding (canonization): a BN that directly follows a kernel layer is merged
into that layer's kernel and bias, so ECQ/ECQx quantizes (and the exporter stores) the kernel the
device really multiplies with.

For a kernel layer :math:`z = W * a + b` (Dense, Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D)
with linear activation followed by a BatchNormalization in inference mode,
:math:`y = \gamma (z - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta`, let
:math:`s = \gamma / \sqrt{\sigma^2 + \epsilon}` (per output channel). Then :math:`y = W' * a + b'` with

.. math::

    W'_{\ldots j} = s_j W_{\ldots j}, \qquad b'_j = s_j (b_j - \mu_j) + \beta_j

(:math:`\gamma = 1` without ``scale``, :math:`\beta = 0` without ``center``, :math:`b = 0` without
bias). The channel axis is the kernel's last axis, except for DepthwiseConv2D, whose output channel
:math:`c M + m` comes from kernel slice ``[:, :, c, m]`` (``M`` = ``depth_multiplier``), and for
SeparableConv2D, where :math:`s` scales the pointwise kernel (the depthwise kernel is unchanged). The
layer registry says which kernel absorbs the BN (``LayerSpec.bn_fold``). This is zennit's
``MergeBatchNorm`` canonizer and what TFLite's converter does; computed in float64, stored float32.

A BN is folded only when the kernel layer's activation is linear and the BN is the only reader of
its output (otherwise the unfolded output is needed elsewhere); any activation after the BN (a
``ReLU`` or ``Activation`` layer) stays where it is, after the folded layer. Every other BN (after
an activation, after a merge, or at the input) stays a float BatchNormalization.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf

from .. import layers as _layers
from ..topology import Node, topology

__all__ = ["fold_batchnorm", "foldable_batchnorms", "fold_kernel"]


def _bn_axis_is_last(bn, rank: int) -> bool:
    axis = bn.axis
    axes = [axis] if isinstance(axis, int) else list(axis)
    return len(axes) == 1 and axes[0] in (-1, rank - 1)


def foldable_batchnorms(model: tf.keras.Model) -> List[Tuple[str, str]]:
    """``[(kernel layer name, BN layer name), ...]`` that :func:`fold_batchnorm` folds.

    Raises:
        TypeError / ``ecqx_tf.topology.TopologyError``: a model the package cannot read.
    """
    topo = topology(model)
    consumers = topo.consumers()
    out = []
    for n in topo.nodes:
        if _layers.type_name(n.layer) != "BatchNormalization" or len(n.inputs) != 1 or n.inputs[0] < 0:
            continue
        k = topo.nodes[n.inputs[0]]
        spec = _layers.spec_of(k.layer)
        if spec is None or spec.bn_fold is None:
            continue
        if getattr(k.layer.activation, "__name__", "") != "linear" or consumers.get(k.index) != [n.index]:
            continue
        if not _bn_axis_is_last(n.layer, len(n.layer.input_shape)):
            continue
        out.append((k.name, n.name))
    return out


def fold_kernel(layer: tf.keras.layers.Layer, bn: tf.keras.layers.BatchNormalization) -> Dict[str, np.ndarray]:
    """The folded weights of ``layer`` (attribute -> float32 array): its BN-absorbing kernel scaled
    per output channel and its bias (created if the layer had none); other kernels unchanged."""
    spec = _layers.get(layer)
    attr = spec.bn_fold
    mean = bn.moving_mean.numpy().astype(np.float64)
    var = bn.moving_variance.numpy().astype(np.float64)
    gamma = bn.gamma.numpy().astype(np.float64) if bn.scale else np.ones_like(mean)
    beta = bn.beta.numpy().astype(np.float64) if bn.center else np.zeros_like(mean)
    s = gamma / np.sqrt(var + float(bn.epsilon))
    w = getattr(layer, attr).numpy().astype(np.float64)
    if spec.name == "DepthwiseConv2D":
        w = w * s.reshape(w.shape[2], w.shape[3])
    else:
        w = w * s
    b = layer.bias.numpy().astype(np.float64) if layer.use_bias else np.zeros_like(mean)
    out = {a: getattr(layer, a).numpy() for a in spec.kernels}
    out[attr] = w.astype(np.float32)
    out["bias"] = (s * (b - mean) + beta).astype(np.float32)
    return out


def fold_batchnorm(model: tf.keras.Model) -> tf.keras.Model:
    """A new model in which every BatchNormalization that directly follows a kernel layer (linear
    activation in between, the BN its only reader) is folded into that layer's kernel and bias
    (see the module docstring); all other layers, names and weights are kept. ``model`` is not
    modified. A Sequential stays Sequential. In inference mode the new model computes what the old
    one computes (up to float32 rounding of the folded weights).

    Raises:
        TypeError: not a Keras model. ``ecqx_tf.topology.TopologyError``: several inputs/outputs,
            shared layers or a subclassed model.
    """
    topo = topology(model)
    pairs = foldable_batchnorms(model)
    by_name = topo.by_name()
    folded_bn = {by_name[bn].index: by_name[k].index for k, bn in pairs}
    kernel_of = {by_name[k].index: by_name[bn].layer for k, bn in pairs}
    src = model.inputs[0]
    new_layers: Dict[int, tf.keras.layers.Layer] = {}

    def clone(n: Node) -> tf.keras.layers.Layer:
        cfg = n.layer.get_config()
        if n.index in kernel_of:
            cfg["use_bias"] = True
        return type(n.layer).from_config(cfg)

    if isinstance(model, tf.keras.Sequential):
        seq = [tf.keras.Input(shape=tuple(model.input_shape[1:]), dtype=src.dtype, name=topo.input_name)]
        for n in topo.nodes:
            if n.index in folded_bn:
                continue
            new_layers[n.index] = clone(n)
            seq.append(new_layers[n.index])
        out = tf.keras.Sequential(seq, name=model.name)
    else:
        inp = tf.keras.Input(shape=tuple(model.input_shape[1:]), dtype=src.dtype, name=topo.input_name)
        tensors = {-1: inp}
        for n in topo.nodes:
            if n.index in folded_bn:
                tensors[n.index] = tensors[folded_bn[n.index]]
                continue
            new = clone(n)
            ins = [tensors[i] for i in n.inputs]
            tensors[n.index] = new(ins[0] if len(ins) == 1 else ins)
            new_layers[n.index] = new
        out = tf.keras.Model(inp, tensors[topo.output], name=model.name)
    for idx, new in new_layers.items():
        old = topo.nodes[idx].layer
        if idx in kernel_of:
            values = fold_kernel(old, kernel_of[idx])
            new.set_weights([values[v.name.split("/")[-1].split(":")[0]] for v in new.weights])
        else:
            new.set_weights(old.get_weights())
    return out
