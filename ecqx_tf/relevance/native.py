r"""Native LRP backend: eager-compatible TensorFlow (``tf.function`` + ``GradientTape``).

Runs in the caller's (eager) process and never changes TensorFlow's global mode. One
:class:`NativeLRP` is compiled per (model, composite, layers, epsilon) and reused: the graph reads
the model's variables, so weight updates are seen without retracing, and the input signature has
a free batch dimension, so any batch size runs the same graph.

What it computes, for any single-input, single-output Sequential or functional ``tf.keras`` model
of the layer registry (:mod:`ecqx_tf.layers`; branches and merges included) in inference mode
(Dropout off, BatchNormalization with moving statistics), walking the graph with
:class:`~ecqx_tf.relevance.graph.RelevanceGraph`:

1. Output relevance: the output times a 0/1 mask of the target units (the logit of the labelled
   or predicted class, or every output unit; see :data:`~ecqx_tf.relevance.graph.TARGETS`), times
   ``scale`` (``1 / N`` for ``N`` samples). A final softmax is dropped (relevance starts at logits).
2. Relevance flows down in reverse topological order with the rule the composite assigns to each
   layer type (see :mod:`ecqx_tf.relevance.rules`); where a tensor feeds several layers the
   relevances coming back are summed. :math:`R_j` is recorded at the OUTPUT of every requested
   kernel (for a SeparableConv2D: at the output of its depthwise half for the depthwise kernel and
   at the layer output for the pointwise kernel; the rule runs on each half in turn).
3. Weight relevance of a recorded kernel (ECQx, Becking et al. 2021):
   :math:`R_{ij} = \sum_n \sum_{pos} w_{ij} a_i R_j / \mathrm{stab}(z_j)`, computed as
   ``W * d<z(a, W), stop_grad(R / stab(z))>/dW`` and summed over the batch and positions.

Each rule mirrors the iNNvestigate 2.1.2 implementation operation by operation (same stabilizers,
same order of products) so that both backends agree to float32 round-off.
"""
from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from ecqx_tf import layers as _layers
from ecqx_tf.relevance.composites import Composite, get_composite
from ecqx_tf.relevance.graph import (
    GraphNode,
    NodeActs,
    RelevanceGraph,
    Stage,
    UnsupportedLayerError,
    check_batch_size,
    target_mask,
    vjp,
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
    "keras_type_name",
    "check_batch_size",
    "check_layer_names",
    "kernel_rule",
    "other_rule",
    "stage_weight_relevance",
]


@dataclasses.dataclass(frozen=True, eq=False)
class LayerRelevance:
    """Relevance of one batch (or data set), already scaled by ``1 / N``.

    Attributes:
        input: relevance at the model input, shape ``(N, *input_shape)``.
        layers: kernel key (the layer name; ``"<layer>/<kernel>"`` for a SeparableConv2D) ->
            relevance :math:`R_j` at that kernel's output, shape ``(N, *output_shape)``.
    """

    input: np.ndarray
    layers: Dict[str, np.ndarray]


def keras_type_name(layer: Any) -> Optional[str]:
    """Name of the ``tf.keras.layers`` class that ``type(layer)`` is exactly, else None."""
    return _layers.type_name(layer)


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


def kernel_rule(rule: Rule, stage: Stage, layer: Any, a: tf.Tensor, z: tf.Tensor, r: tf.Tensor) -> tf.Tensor:
    """One linear stage ``z = op(a, W) (+ b)`` of a kernel layer, relevance ``r`` at ``z`` -> at ``a``."""
    kernel = tf.convert_to_tensor(getattr(layer, stage.attr))

    def lin(w: tf.Tensor):
        return lambda t: stage.op(layer, t, w)

    if isinstance(rule, Epsilon):
        return a * vjp(lin(kernel), a, r / stabilize(z, rule.epsilon))
    if isinstance(rule, Z):
        return a * vjp(lin(kernel), a, safe_divide(r, z))
    if isinstance(rule, ZPlus):
        zero = tf.zeros((), a.dtype)
        a_pos = a * tf.cast(a > zero, a.dtype)
        a_neg = a * tf.cast(a < zero, a.dtype)
        w_pos = kernel * tf.cast(kernel > 0, kernel.dtype)
        w_neg = kernel * tf.cast(kernel < 0, kernel.dtype)
        z_pm = stage.op(layer, a_pos, w_pos) + stage.op(layer, a_neg, w_neg)
        s = safe_divide(r, z_pm)
        return a_pos * vjp(lin(w_pos), a_pos, s) + a_neg * vjp(lin(w_neg), a_neg, s)
    if isinstance(rule, Flat):
        ones = tf.ones_like(kernel)
        z_flat = stage.op(layer, tf.ones_like(a), ones)
        return vjp(lin(ones), a, safe_divide(r, z_flat))
    raise AssertionError(f"rule {rule!r} on kernel layer {layer.name!r}")  # excluded by Composite


def other_rule(rule: Rule, node: GraphNode, acts: NodeActs, r: tf.Tensor) -> List[tf.Tensor]:
    """Relevance ``r`` at the output of a layer without a kernel -> one per input."""
    layer, ins, y = node.layer, acts.inputs, acts.y
    single = len(ins) == 1

    def fn(t):
        return layer(t[0] if single else t, training=False)

    if isinstance(rule, Pass):
        return [r]
    if isinstance(rule, Gradient):
        return list(vjp(fn, list(ins), r))
    if isinstance(rule, Z) and node.type_name == "BatchNormalization":
        # iNNvestigate's BatchNormalizationReverseLayer, term by term:
        #   R_x = x (y - beta) R / stab_{1e-7}((x - mu) y)   (safe_divide on top)
        a = ins[0]
        y_minus_beta = y - layer.beta if layer.center else y
        numerator = (a * y_minus_beta) * r
        denominator = (a - layer.moving_mean) * y
        return [safe_divide(numerator, stabilize(denominator, SAFE_DIVIDE_EPSILON))]
    if isinstance(rule, (Z, Epsilon)):
        # the layer is linear without parameters (Add, average pooling): z-rule / epsilon rule on it
        s = safe_divide(r, y) if isinstance(rule, Z) else r / stabilize(y, rule.epsilon)
        grads = vjp(fn, list(ins), s)
        return [x * g for x, g in zip(ins, grads)]
    raise AssertionError(f"rule {rule!r} on layer {layer.name!r}")  # excluded by Composite


def stage_weight_relevance(stage: Stage, layer: Any, a: tf.Tensor, z: tf.Tensor, r: tf.Tensor,
                           epsilon: float) -> tf.Tensor:
    """Weight relevance ``W * d<op(a, W), R / stab(z)>/dW`` (summed over batch and positions)."""
    kernel = tf.convert_to_tensor(getattr(layer, stage.attr))
    s = r / stabilize(z, epsilon)
    with tf.GradientTape() as tape:
        tape.watch(kernel)
        zz = stage.op(layer, a, kernel)
    return kernel * tape.gradient(zz, kernel, output_gradients=s)


# --------------------------------------------------------------------------------------------
# model inspection


def check_layer_names(graph: RelevanceGraph, layers: Optional[Sequence[str]]) -> List[str]:
    """The requested kernel keys (all when ``layers`` is None); layer names select every kernel
    of that layer. Shared by the LRP and DeepLIFT engines."""
    return graph.select(layers)


def _check_epsilon(epsilon: float) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise TypeError(f"epsilon must be a float, got {epsilon!r}")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be finite and > 0, got {epsilon!r}")
    return float(epsilon)


# --------------------------------------------------------------------------------------------
# the engine


class NativeLRP:
    """LRP with one composite on one model, compiled once per target mode (``tf.function``).

    Args:
        model: a built single-input, single-output Sequential or functional ``tf.keras`` model of
            the layer registry (a final softmax is skipped). Not modified.
        composite: a :class:`~ecqx_tf.relevance.composites.Composite` or a registered name.
        layers: kernel layer names or kernel keys to report; None = all of them.
        epsilon: stabilizer of the weight-relevance formula (default 1e-6, ECQx).

    Raises:
        UnsupportedLayerError: an unsupported layer type or model structure (names every such layer
            and lists the supported types).
        ValueError: unknown or non-kernel layer names in ``layers``; a model without a kernel layer.
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
        self.graph = RelevanceGraph(model, "the LRP engine")
        self.dropped_softmax_layer = self.graph.dropped_softmax_layer
        self.model_name: str = model.name
        self.input_shape: Tuple[Optional[int], ...] = self.graph.input_shape
        if not self.graph.kernels:
            raise ValueError(f"model {model.name!r} has no kernel layer to compute relevance for")
        self.layer_names: Tuple[str, ...] = tuple(check_layer_names(self.graph, layers))
        self.kernel_layer_names: Tuple[str, ...] = tuple(self.graph.kernel_keys)
        self.output_shapes: Dict[str, Tuple[Optional[int], ...]] = {n: self.graph.stage_shapes[n] for n in self.layer_names}
        # rule per node (per stage for kernel layers)
        self._rules: Dict[int, Tuple[Rule, ...]] = {}
        for g in self.graph.nodes:
            if g.kernel:
                first = self.composite.rule(g.type_name, first=g.first)
                rest = self.composite.rule(g.type_name)
                self._rules[g.index] = tuple(first if k == 0 else rest for k in range(len(g.stages)))
            else:
                self._rules[g.index] = (self.composite.rule(g.type_name),)
        self._where = {k: (idx, st) for k, idx, st, _ in self.graph.kernels}
        self._target = set(self.layer_names)
        self._lowest = min(self._where[k][0] for k in self.layer_names)
        self._fns: Dict[Tuple[str, str], Any] = {}
        x_spec = tf.TensorSpec((None,) + self.input_shape[1:], tf.float32)
        r_specs = tuple(tf.TensorSpec((None,) + tuple(self.output_shapes[n][1:]), tf.float32) for n in self.layer_names)
        self._weights_from_fn = tf.function(self._weights_from, input_signature=[x_spec, r_specs], autograph=False)

    @property
    def num_classes(self) -> Optional[int]:
        out = self.graph.output_shape
        return int(out[-1]) if len(out) == 2 and out[-1] is not None else None

    # -- graph pieces -------------------------------------------------------------------------
    def _backward(self, acts, labels, scale, mode: str, need_input: bool):
        out = acts[self.graph.output].y
        start = target_mask(out, mode, labels) * out * scale
        kept: Dict[str, tf.Tensor] = {}

        def step(g: GraphNode, a: NodeActs, r: tf.Tensor):
            if g.kernel:
                for k in range(len(g.stages) - 1, -1, -1):
                    key = g.kernel_key(g.stages[k].attr)
                    if key in self._target:
                        kept[key] = r
                    a_k, z_k = a.stages[k]
                    r = kernel_rule(self._rules[g.index][k], g.stages[k], g.layer, a_k, z_k, r)
                return [r]
            return other_rule(self._rules[g.index][0], g, a, r)

        r_in = self.graph.backward(acts, start, step, stop_below=-1 if need_input else self._lowest)
        return r_in, kept

    def _explain(self, x, labels, scale, mode):
        acts = self.graph.forward(x)
        r_in, kept = self._backward(acts, labels, scale, mode, need_input=True)
        return r_in, tuple(kept[n] for n in self.layer_names)

    def _weights_of(self, acts, kept):
        out = []
        for n in self.layer_names:
            idx, st = self._where[n]
            g = self.graph.nodes_by_index[idx]
            a, z = acts[idx].stages[st]
            out.append(stage_weight_relevance(g.stages[st], g.layer, a, z, kept[n], self.epsilon))
        return tuple(out)

    def _weights(self, x, labels, scale, mode):
        acts = self.graph.forward(x)
        _, kept = self._backward(acts, labels, scale, mode, need_input=False)
        return self._weights_of(acts, kept)

    def _weights_from(self, x, rs):
        acts = self.graph.forward(x)
        return self._weights_of(acts, dict(zip(self.layer_names, rs)))

    def _fn(self, kind: str, mode: str):
        key = (kind, mode)
        fn = self._fns.get(key)
        if fn is None:
            x_spec = tf.TensorSpec((None,) + self.input_shape[1:], tf.float32)
            y_spec = tf.TensorSpec((None,), tf.int32)
            s_spec = tf.TensorSpec((), tf.float32)
            body = self._explain if kind == "explain" else self._weights
            fn = tf.function(lambda x, y, s: body(x, y, s, mode), input_signature=[x_spec, y_spec, s_spec], autograph=False)
            self._fns[key] = fn
        return fn

    # -- public -------------------------------------------------------------------------------
    def check_data(self, x: Any, y: Any, target: str = "auto") -> Tuple[np.ndarray, np.ndarray, str]:
        """Validate data for this model: returns ``(x float32, labels int32, mode)``; labels are
        zeros (unused) unless the mode is ``"label"``. See ``RelevanceGraph.resolve_target``."""
        mode = self.graph.resolve_target(y, target)
        xa, ya = self.graph.check_data(x, y, mode)
        return xa, (np.zeros(len(xa), np.int32) if ya is None else ya), mode

    def explain_batch(self, x: np.ndarray, y: np.ndarray, scale: float, mode: str = "label") -> LayerRelevance:
        """Relevance of one batch (validated data), output relevance multiplied by ``scale``."""
        r_in, rs = self._fn("explain", mode)(tf.constant(x), tf.constant(y), tf.constant(scale, tf.float32))
        return LayerRelevance(r_in.numpy(), {n: r.numpy() for n, r in zip(self.layer_names, rs)})

    def weight_relevance_batch(self, x: np.ndarray, y: np.ndarray, scale: float, mode: str = "label") -> Dict[str, np.ndarray]:
        """Kernel-shaped weight relevance of one batch (validated data), summed over it."""
        out = self._fn("weights", mode)(tf.constant(x), tf.constant(y), tf.constant(scale, tf.float32))
        return {n: w.numpy() for n, w in zip(self.layer_names, out)}

    def weight_relevance_graph(self, x: tf.Tensor, labels: tf.Tensor, scale: tf.Tensor, mode: str = "label") -> Tuple[tf.Tensor, ...]:
        """The computation of :meth:`weight_relevance_batch` as tensors (one per name of
        :attr:`layer_names`), for use inside a caller's ``tf.function`` (e.g. fused with a weight
        sync and the running average of the training callback). Same ops, same values."""
        return self._weights(x, labels, scale, mode)

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
    y: Any = None,
    composite: Union[str, Composite] = "epsilon_plus_flat",
    layers: Optional[Sequence[str]] = None,
    batch_size: int = 64,
    target: str = "auto",
) -> LayerRelevance:
    """Relevance at the input and at every requested kernel's output, native backend.

    The output relevance is divided by ``N = len(x)`` (not by the batch size), so the result does
    not depend on ``batch_size``. ``y=None``: see ``target`` (:data:`~ecqx_tf.relevance.graph.TARGETS`).
    """
    engine = native_engine(model, composite, layers)
    xa, ya, mode = engine.check_data(x, y, target)
    bs = check_batch_size(batch_size)
    scale = 1.0 / xa.shape[0]
    parts = [engine.explain_batch(xa[i : i + bs], ya[i : i + bs], scale, mode) for i in range(0, xa.shape[0], bs)]
    return LayerRelevance(
        np.concatenate([p.input for p in parts]),
        {n: np.concatenate([p.layers[n] for p in parts]) for n in engine.layer_names},
    )
