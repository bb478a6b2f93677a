r"""Native LRP backend: eager-compatible TensorFlow (``tf.function`` + ``GradientTape``).

Runs in the caller's (eager) process and never changes TensorFlow's global mode. One
:class:`NativeLRP` is compiled per (model, composite, layers, epsilon) and reused: the graph reads
the model's variables, so weight updates are seen without retracing, and the input signature has
a free batch dimension, so any batch size runs the same graph.

What it computes, for a Sequential or chain-shaped functional ``tf.keras`` model in inference
mode (Dropout off, BatchNormalization with moving statistics):

1. Output relevance: the logit of the true class of each sample, all other logits zero, times
   ``scale`` (``1 / N`` for ``N`` samples). A final ``Softmax`` layer / softmax ``Activation`` is
   dropped and a fused softmax of the last Dense/Conv2D is skipped, so relevance starts at logits.
2. Relevance flows down layer by layer with the rule the composite assigns to each layer type
   (see :mod:`ecqx_tf.relevance.rules`); :math:`R_j` is recorded at the OUTPUT of every requested
   Dense/Conv2D layer (post-activation and pre-activation relevance are the same thing: the
   activation is passed through, as in iNNvestigate).
3. Weight relevance of a recorded layer (ECQx spec section 4, Becking et al. 2021):
   :math:`R_{ij} = \sum_n \sum_{pos} w_{ij} a_i R_j / \mathrm{stab}(z_j)`, computed as
   ``W * d<z(a, W), stop_grad(R / stab(z))>/dW`` and summed over the batch and positions.

Each rule below mirrors the iNNvestigate 2.1.2 implementation operation by operation (same
stabilizers, same order of products) so that both backends agree to float32 round-off.
"""
from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from ecqx_tf.relevance.composites import (
    FIRST_LAYER_TRANSPARENT_TYPES,
    KERNEL_LAYER_TYPES,
    SUPPORTED_LAYER_TYPES,
    Composite,
    get_composite,
)
from ecqx_tf.relevance.rules import (
    DEFAULT_EPSILON,
    SAFE_DIVIDE_EPSILON,
    Epsilon,
    Flat,
    Gradient,
    Pass,
    Rule,
    Z,
    ZPlus,
)

__all__ = [
    "UnsupportedLayerError",
    "LayerRelevance",
    "NativeLRP",
    "native_engine",
    "native_layer_relevance",
    "stabilize",
    "safe_divide",
    "check_data",
    "keras_type_name",
    "check_batch_size",
]


class UnsupportedLayerError(ValueError):
    """A model contains a layer (or a structure) the relevance engine cannot analyze."""


@dataclasses.dataclass(frozen=True, eq=False)
class LayerRelevance:
    """Relevance of one batch (or data set), already scaled by ``1 / N``.

    Attributes:
        input: relevance at the model input, shape ``(N, *input_shape)``.
        layers: layer name -> relevance :math:`R_j` at that Dense/Conv2D layer's output,
            shape ``(N, *output_shape)``.
    """

    input: np.ndarray
    layers: Dict[str, np.ndarray]


# --------------------------------------------------------------------------------------------
# numerics (pure TF)


def stabilize(z: tf.Tensor, epsilon: float) -> tf.Tensor:
    r""":math:`z + \epsilon(\mathrm{sign}(z) + [z = 0])`: push ``z`` away from zero, sign(0) := +1.

    Identical to iNNvestigate's ``z + eps * (2 [z >= 0] - 1)`` and zennit's ``stabilize``.
    """
    return z + (tf.cast(tf.greater_equal(z, 0), z.dtype) * 2.0 - 1.0) * epsilon


def safe_divide(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """``a / b`` with zeros of ``b`` replaced by 1e-7 (iNNvestigate's ``safe_divide``)."""
    return a / (b + SAFE_DIVIDE_EPSILON * tf.cast(tf.equal(b, 0), b.dtype))


def _linear(layer: tf.keras.layers.Layer, a: tf.Tensor, kernel: tf.Tensor, bias: Optional[tf.Tensor]) -> tf.Tensor:
    """The layer's pre-activation ``z = a * kernel (+ bias)``, exactly as Keras computes it."""
    if type(layer) is tf.keras.layers.Conv2D:
        z = layer.convolution_op(a, kernel)
    elif a.shape.rank == 2:
        z = tf.matmul(a, kernel)
    else:
        z = tf.tensordot(a, kernel, [[a.shape.rank - 1], [0]])
    if bias is not None:
        z = tf.nn.bias_add(z, bias)
    return z


def _vjp(fn: Callable[[tf.Tensor], tf.Tensor], a: tf.Tensor, s: tf.Tensor) -> tf.Tensor:
    """``(d fn / d a)^T s`` with a GradientTape."""
    with tf.GradientTape() as tape:
        tape.watch(a)
        out = fn(a)
    return tape.gradient(out, a, output_gradients=s)


def _kernel_rule(rule: Rule, layer: tf.keras.layers.Layer, a: tf.Tensor, z: tf.Tensor, r: tf.Tensor) -> tf.Tensor:
    kernel = tf.convert_to_tensor(layer.kernel)

    def lin(w: tf.Tensor) -> Callable[[tf.Tensor], tf.Tensor]:
        return lambda t: _linear(layer, t, w, None)

    if isinstance(rule, Epsilon):
        return a * _vjp(lin(kernel), a, r / stabilize(z, rule.epsilon))
    if isinstance(rule, Z):
        return a * _vjp(lin(kernel), a, safe_divide(r, z))
    if isinstance(rule, ZPlus):
        zero = tf.zeros((), a.dtype)
        a_pos = a * tf.cast(a > zero, a.dtype)
        a_neg = a * tf.cast(a < zero, a.dtype)
        w_pos = kernel * tf.cast(kernel > 0, kernel.dtype)
        w_neg = kernel * tf.cast(kernel < 0, kernel.dtype)
        z_pm = _linear(layer, a_pos, w_pos, None) + _linear(layer, a_neg, w_neg, None)
        s = safe_divide(r, z_pm)
        return a_pos * _vjp(lin(w_pos), a_pos, s) + a_neg * _vjp(lin(w_neg), a_neg, s)
    if isinstance(rule, Flat):
        ones = tf.ones_like(kernel)
        z_flat = _linear(layer, tf.ones_like(a), ones, None)
        return _vjp(lin(ones), a, safe_divide(r, z_flat))
    raise AssertionError(f"rule {rule!r} on kernel layer {layer.name!r}")  # excluded by Composite


def _other_rule(rule: Rule, layer: tf.keras.layers.Layer, a: tf.Tensor, y: tf.Tensor, r: tf.Tensor) -> tf.Tensor:
    if isinstance(rule, Pass):
        return r
    if isinstance(rule, Gradient):
        return _vjp(lambda t: layer(t, training=False), a, r)
    if isinstance(rule, Z) and type(layer) is tf.keras.layers.BatchNormalization:
        # iNNvestigate's BatchNormalizationReverseLayer, term by term:
        #   R_x = x (y - beta) R / stab_{1e-7}((x - mu) y)   (safe_divide on top)
        y_minus_beta = y - layer.beta if layer.center else y
        numerator = (a * y_minus_beta) * r
        denominator = (a - layer.moving_mean) * y
        return safe_divide(numerator, stabilize(denominator, SAFE_DIVIDE_EPSILON))
    if isinstance(rule, Z):  # average pooling: z-rule on the (linear) pooling
        return a * _vjp(lambda t: layer(t, training=False), a, safe_divide(r, y))
    raise AssertionError(f"rule {rule!r} on layer {layer.name!r}")  # excluded by Composite


def _kernel_relevance(layer: tf.keras.layers.Layer, a: tf.Tensor, z: tf.Tensor, r: tf.Tensor, epsilon: float) -> tf.Tensor:
    """Weight relevance ``W * d<z(a, W), R / stab(z)>/dW`` (summed over batch and positions)."""
    kernel = tf.convert_to_tensor(layer.kernel)
    s = r / stabilize(z, epsilon)
    with tf.GradientTape() as tape:
        tape.watch(kernel)
        zz = _linear(layer, a, kernel, None)
    return kernel * tape.gradient(zz, kernel, output_gradients=s)


# --------------------------------------------------------------------------------------------
# model inspection


def check_layer_names(layers: Optional[Sequence[str]], kernel_names: List[str], model_name: str) -> List[str]:
    """The requested kernel layers (all when ``layers`` is None), each checked to be one of the
    model's Dense/Conv2D layers; shared by the LRP and DeepLIFT engines."""
    if layers is None:
        return list(kernel_names)
    if isinstance(layers, str):
        raise TypeError(f"layers must be a sequence of layer names, got the str {layers!r}")
    names = list(layers)
    for n in names:
        if n not in kernel_names:
            raise ValueError(f"layer {n!r} is not a Dense/Conv2D layer of model {model_name!r}; accepted: {kernel_names}")
    return names


def chain_forward(steps, x: tf.Tensor) -> Tuple[List[Tuple[tf.Tensor, tf.Tensor, tf.Tensor]], tf.Tensor]:
    """Inference-mode forward pass through a chain of steps, keeping per step its input ``a``,
    pre-activation ``z`` and output ``y`` (``z = y`` for layers without a kernel); shared by the
    LRP and DeepLIFT engines."""
    acts = []
    a = x
    for s in steps:
        if s.kernel:
            bias = s.layer.bias if s.layer.use_bias else None
            z = _linear(s.layer, a, tf.convert_to_tensor(s.layer.kernel), bias)
            y = z if s.skip_activation else s.layer.activation(z)
        else:
            y = s.layer(a, training=False)
            z = y
        acts.append((a, z, y))
        a = y
    return acts, a


def keras_type_name(layer: Any) -> Optional[str]:
    """Name of the ``tf.keras.layers`` class that ``type(layer)`` is exactly, else None."""
    name = type(layer).__name__
    cls = getattr(tf.keras.layers, name, None)
    return name if cls is not None and type(layer) is cls else None


def _describe(layer: Any) -> str:
    return f"layer {getattr(layer, 'name', '?')!r} ({type(layer).__module__}.{type(layer).__name__})"


def _is_softmax(fn: Any) -> bool:
    return getattr(fn, "__name__", "") == "softmax"


@dataclasses.dataclass(frozen=True, eq=False)
class _Step:
    layer: tf.keras.layers.Layer
    type_name: str
    rule: Optional[Rule]  # None only for a kernel layer that is never propagated through
    kernel: bool
    first: bool
    skip_activation: bool  # last kernel layer with a fused softmax: use its logits


def _chain_layers(model: tf.keras.Model) -> List[tf.keras.layers.Layer]:
    """The model's layers in execution order (without InputLayer), checking it is one chain."""
    if isinstance(model, tf.keras.Sequential):
        return [l for l in model.layers if keras_type_name(l) != "InputLayer"]
    if not getattr(model, "_is_graph_network", False):
        raise UnsupportedLayerError(
            f"model {model.name!r} is a subclassed Model; the relevance engine supports "
            "Sequential and functional models"
        )
    cfg = model.get_config()
    if len(cfg.get("input_layers", [])) != 1 or len(cfg.get("output_layers", [])) != 1:
        raise UnsupportedLayerError(
            f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "the relevance engine supports exactly one of each"
        )
    entries = cfg["layers"]
    prev: Optional[str] = None
    out: List[tf.keras.layers.Layer] = []
    for e in entries:
        if e["class_name"] == "InputLayer":
            prev = e["name"]
            continue
        nodes = e.get("inbound_nodes") or []
        try:
            sources = [t[0] for node in nodes for t in node]
        except (TypeError, IndexError, KeyError):
            sources = ["?", "?"]
        if len(sources) != 1 or sources[0] != prev:
            raise UnsupportedLayerError(
                f"model {model.name!r} is not a single chain of layers: layer {e['name']!r} takes "
                f"its input from {sources} (expected [{prev!r}]); branches, merges (Add, "
                "Concatenate) and shared layers are not supported"
            )
        out.append(model.get_layer(e["name"]))
        prev = e["name"]
    if cfg["output_layers"][0][0] != prev:
        raise UnsupportedLayerError(f"model {model.name!r}: the output is not the last layer of the chain")
    return out


def chain_layers_before_softmax(model: tf.keras.Model) -> Tuple[List[tf.keras.layers.Layer], bool]:
    """The layers of a built single-chain model, without a final softmax (explanations start from
    the logits); returns (layers, whether a softmax layer was dropped). Shared by the LRP and
    DeepLIFT engines."""
    if not isinstance(model, tf.keras.Model):
        raise TypeError(f"model must be a tf.keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built; call it on data or give it an Input")
    layers = _chain_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no layers")
    last = layers[-1]
    last_type = keras_type_name(last)
    if last_type == "Softmax" or (last_type == "Activation" and _is_softmax(last.activation)):
        layers = layers[:-1]
        if not layers:
            raise ValueError(f"model {model.name!r} has no layers before its softmax")
        return layers, True
    return layers, False


def _build_steps(model: tf.keras.Model, composite: Composite) -> Tuple[List[_Step], bool]:
    """Steps of the chain with their rules; returns (steps, dropped_softmax_layer)."""
    layers, dropped = chain_layers_before_softmax(model)
    steps: List[_Step] = []
    first_possible = True
    for i, layer in enumerate(layers):
        t = keras_type_name(layer)
        if t is None or t not in SUPPORTED_LAYER_TYPES or t == "InputLayer":
            raise UnsupportedLayerError(
                f"{_describe(layer)} in model {model.name!r} is not supported by the relevance "
                f"engine; supported layer types: {', '.join(SUPPORTED_LAYER_TYPES)} "
                "(plus a final Softmax)"
            )
        cfg = layer.get_config()
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise UnsupportedLayerError(f"{_describe(layer)}: only data_format='channels_last' is supported")
        if t == "BatchNormalization":
            axis = [int(v) for v in np.atleast_1d(list(layer.axis) if not isinstance(layer.axis, int) else layer.axis)]
            rank = getattr(getattr(layer, "input_spec", None), "ndim", None)
            if len(axis) != 1 or (axis[0] != -1 and (rank is None or axis[0] != rank - 1)):
                raise UnsupportedLayerError(
                    f"{_describe(layer)}: only normalization over the last axis is supported, "
                    f"got axis={list(axis)}"
                )
        kernel = t in KERNEL_LAYER_TYPES
        first = kernel and first_possible
        if t not in FIRST_LAYER_TRANSPARENT_TYPES:
            first_possible = False
        skip = kernel and i == len(layers) - 1 and _is_softmax(layer.activation)
        steps.append(_Step(layer, t, composite.rule(t, first=first), kernel, first, skip))
    return steps, dropped


def check_data(
    x: Any, y: Any, input_shape: Sequence[Optional[int]], num_classes: int, model_name: str = "model"
) -> Tuple[np.ndarray, np.ndarray]:
    """Validate and convert data: ``x`` to float32, ``y`` (integer labels ``(N,)`` or one-hot
    ``(N, C)``) to int32 labels.

    Raises:
        ValueError: empty data, ``x`` not matching the model input shape, ``y`` of the wrong shape
            or length, labels out of range (each message names the shapes involved).
        TypeError: non-integer labels.
    """
    xa = np.asarray(x)
    if xa.dtype == object:
        raise TypeError("x must be a numeric array, got dtype object")
    xa = xa.astype(np.float32, copy=False)
    expected = tuple(input_shape)
    if xa.ndim == 0 or xa.shape[0] == 0:
        raise ValueError(f"x is empty (shape {xa.shape}); relevance needs at least one sample")
    if xa.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected[1:], xa.shape[1:])):
        raise ValueError(
            f"x has shape {xa.shape} but model {model_name!r} expects input shape {expected} "
            "(None = any size)"
        )
    ya = np.asarray(y)
    if ya.ndim == 2 and ya.shape[1] == num_classes and ya.shape[0] == xa.shape[0]:
        ya = np.argmax(ya, axis=1)
    elif ya.ndim == 2 and ya.shape[1] == 1:
        ya = ya[:, 0]
    if ya.ndim != 1:
        raise ValueError(
            f"y has shape {np.asarray(y).shape}; expected labels of shape ({xa.shape[0]},) or "
            f"one-hot ({xa.shape[0]}, {num_classes})"
        )
    if ya.shape[0] != xa.shape[0]:
        raise ValueError(f"y has {ya.shape[0]} labels (shape {np.asarray(y).shape}) but x has {xa.shape[0]} samples (shape {xa.shape})")
    if not np.issubdtype(ya.dtype, np.integer):
        if np.issubdtype(ya.dtype, np.floating) and np.all(np.isfinite(ya)) and np.all(ya == np.round(ya)):
            ya = ya.astype(np.int64)
        else:
            raise TypeError(f"y must hold integer class labels, got dtype {ya.dtype}")
    if ya.min() < 0 or ya.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got min {ya.min()} and max {ya.max()}")
    return xa, ya.astype(np.int32)


def _check_epsilon(epsilon: float) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise TypeError(f"epsilon must be a float, got {epsilon!r}")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be finite and > 0, got {epsilon!r}")
    return float(epsilon)


def check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return int(batch_size)


# --------------------------------------------------------------------------------------------
# the engine


class NativeLRP:
    """LRP with one composite on one model, compiled once (``tf.function``) and reused.

    Args:
        model: a built Sequential or chain-shaped functional ``tf.keras`` model whose output is
            ``(N, classes)`` logits (or softmax, which is skipped). Not modified.
        composite: a :class:`~ecqx_tf.relevance.composites.Composite` or a registered name.
        layers: names of the Dense/Conv2D layers to report; None = all of them.
        epsilon: stabilizer of the weight-relevance formula (default 1e-6, ECQx spec).

    Raises:
        UnsupportedLayerError: an unsupported layer type or model structure (names the layer and
            lists the supported types).
        ValueError: unknown or non-kernel layer names in ``layers``; output not ``(N, classes)``.
    """

    def __init__(
        self,
        model: tf.keras.Model,
        composite: Union[str, Composite] = "epsilon_plus_flat",
        layers: Optional[Sequence[str]] = None,
        epsilon: float = DEFAULT_EPSILON,
    ):
        self.composite = get_composite(composite)
        self.epsilon = _check_epsilon(epsilon)
        self._steps, self.dropped_softmax_layer = _build_steps(model, self.composite)
        self.model_name: str = model.name
        self.input_shape: Tuple[Optional[int], ...] = tuple(tf.TensorShape(model.input_shape).as_list())
        kernel_names = [s.layer.name for s in self._steps if s.kernel]
        names = check_layer_names(layers, kernel_names, model.name)
        if not names:
            raise ValueError(f"model {model.name!r} has no Dense/Conv2D layer to compute relevance for")
        self.layer_names: Tuple[str, ...] = tuple(names)
        self.kernel_layer_names: Tuple[str, ...] = tuple(kernel_names)
        shape = tf.TensorShape(self.input_shape)
        out_shapes: Dict[str, tf.TensorShape] = {}
        for s in self._steps:
            shape = tf.TensorShape(s.layer.compute_output_shape(shape))
            if s.kernel:
                out_shapes[s.layer.name] = shape
        if shape.rank != 2 or shape[-1] is None:
            raise ValueError(f"model {model.name!r} must output (batch, classes) logits, got shape {shape}")
        self.num_classes: int = int(shape[-1])
        self.output_shapes: Dict[str, Tuple[Optional[int], ...]] = {
            n: tuple(out_shapes[n].as_list()) for n in self.layer_names
        }
        self._target = set(self.layer_names)
        x_spec = tf.TensorSpec((None,) + self.input_shape[1:], tf.float32)
        y_spec = tf.TensorSpec((None,), tf.int32)
        s_spec = tf.TensorSpec((), tf.float32)
        r_specs = tuple(tf.TensorSpec((None,) + tuple(out_shapes[n].as_list()[1:]), tf.float32) for n in self.layer_names)
        self._explain_fn = tf.function(self._explain, input_signature=[x_spec, y_spec, s_spec])
        self._weights_fn = tf.function(self._weights, input_signature=[x_spec, y_spec, s_spec])
        self._weights_from_fn = tf.function(self._weights_from, input_signature=[x_spec, r_specs])

    # -- graph pieces -------------------------------------------------------------------------
    def _forward(self, x: tf.Tensor) -> Tuple[List[Tuple[tf.Tensor, tf.Tensor, tf.Tensor]], tf.Tensor]:
        return chain_forward(self._steps, x)

    def _backward(self, acts, logits, labels, scale, need_input: bool):
        r = tf.one_hot(labels, self.num_classes, dtype=logits.dtype) * logits * scale
        kept: Dict[str, tf.Tensor] = {}
        lowest = min(i for i, s in enumerate(self._steps) if s.kernel and s.layer.name in self._target)
        for i in range(len(self._steps) - 1, -1, -1):
            s = self._steps[i]
            a, z, y = acts[i]
            if s.kernel and s.layer.name in self._target:
                kept[s.layer.name] = r
            if not need_input and i <= lowest:
                break
            r = _kernel_rule(s.rule, s.layer, a, z, r) if s.kernel else _other_rule(s.rule, s.layer, a, y, r)
        return r, kept

    def _explain(self, x, labels, scale):
        acts, logits = self._forward(x)
        r_in, kept = self._backward(acts, logits, labels, scale, need_input=True)
        return r_in, tuple(kept[n] for n in self.layer_names)

    def _weights_of(self, acts, kept):
        index = {s.layer.name: i for i, s in enumerate(self._steps)}
        out = []
        for n in self.layer_names:
            i = index[n]
            a, z, _ = acts[i]
            out.append(_kernel_relevance(self._steps[i].layer, a, z, kept[n], self.epsilon))
        return tuple(out)

    def _weights(self, x, labels, scale):
        acts, logits = self._forward(x)
        _, kept = self._backward(acts, logits, labels, scale, need_input=False)
        return self._weights_of(acts, kept)

    def _weights_from(self, x, rs):
        acts, _ = self._forward(x)
        return self._weights_of(acts, dict(zip(self.layer_names, rs)))

    # -- public -------------------------------------------------------------------------------
    def check_data(self, x: Any, y: Any) -> Tuple[np.ndarray, np.ndarray]:
        """:func:`check_data` against this model's input shape and class count."""
        return check_data(x, y, self.input_shape, self.num_classes, self.model_name)

    def explain_batch(self, x: np.ndarray, y: np.ndarray, scale: float) -> LayerRelevance:
        """Relevance of one batch (validated data), output relevance multiplied by ``scale``."""
        r_in, rs = self._explain_fn(tf.constant(x), tf.constant(y), tf.constant(scale, tf.float32))
        return LayerRelevance(r_in.numpy(), {n: r.numpy() for n, r in zip(self.layer_names, rs)})

    def weight_relevance_batch(self, x: np.ndarray, y: np.ndarray, scale: float) -> Dict[str, np.ndarray]:
        """Kernel-shaped weight relevance of one batch (validated data), summed over it."""
        out = self._weights_fn(tf.constant(x), tf.constant(y), tf.constant(scale, tf.float32))
        return {n: w.numpy() for n, w in zip(self.layer_names, out)}

    def weight_relevance_from(self, x: np.ndarray, layer_relevance: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Weight relevance of one batch from given output relevances ``R_j`` (e.g. computed by
        the iNNvestigate backend): the same formula, activations from this model.

        Raises:
            ValueError: a layer is missing or an array has the wrong shape.
        """
        rs = []
        for n in self.layer_names:
            if n not in layer_relevance:
                raise ValueError(f"no relevance given for layer {n!r}")
            r = np.asarray(layer_relevance[n], dtype=np.float32)
            want = (x.shape[0],) + tuple(self.output_shapes[n][1:])
            if r.shape != want:
                raise ValueError(f"relevance for layer {n!r} has shape {r.shape}, expected {want}")
            rs.append(tf.constant(r))
        out = self._weights_from_fn(tf.constant(x), tuple(rs))
        return {n: w.numpy() for n, w in zip(self.layer_names, out)}


_ENGINES: "weakref.WeakKeyDictionary[tf.keras.Model, Dict[Any, NativeLRP]]" = weakref.WeakKeyDictionary()
_MAX_ENGINES_PER_MODEL = 8


def native_engine(
    model: tf.keras.Model,
    composite: Union[str, Composite] = "epsilon_plus_flat",
    layers: Optional[Sequence[str]] = None,
    epsilon: float = DEFAULT_EPSILON,
) -> NativeLRP:
    """The cached :class:`NativeLRP` for these arguments (built on first use)."""
    comp = get_composite(composite)
    key = (comp, None if layers is None else tuple(layers), float(epsilon))
    try:
        per_model = _ENGINES.setdefault(model, {})
    except TypeError:  # unhashable / not weak-referenceable: no caching
        return NativeLRP(model, comp, layers, epsilon)
    engine = per_model.get(key)
    if engine is None:
        engine = NativeLRP(model, comp, layers, epsilon)
        if len(per_model) >= _MAX_ENGINES_PER_MODEL:
            per_model.pop(next(iter(per_model)))
        per_model[key] = engine
    return engine


def native_layer_relevance(
    model: tf.keras.Model,
    x: Any,
    y: Any,
    composite: Union[str, Composite] = "epsilon_plus_flat",
    layers: Optional[Sequence[str]] = None,
    batch_size: int = 64,
) -> LayerRelevance:
    """Relevance at the input and at every requested Dense/Conv2D output, native backend.

    The output relevance is divided by ``N = len(x)`` (not by the batch size), so the result does
    not depend on ``batch_size``.
    """
    engine = native_engine(model, composite, layers)
    xa, ya = engine.check_data(x, y)
    bs = check_batch_size(batch_size)
    scale = 1.0 / xa.shape[0]
    parts = [engine.explain_batch(xa[i : i + bs], ya[i : i + bs], scale) for i in range(0, xa.shape[0], bs)]
    return LayerRelevance(
        np.concatenate([p.input for p in parts]),
        {n: np.concatenate([p.layers[n] for p in parts]) for n in engine.layer_names},
    )
