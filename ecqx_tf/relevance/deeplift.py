r"""DeepLIFT (Shrikumar, Greenside, Kundaje, ICML 2017) with the Rescale rule, in the same
rule / composite framework as the LRP engine, on the same models and with the same graph walker
(:class:`~ecqx_tf.relevance.graph.RelevanceGraph`: multipliers that meet at a branch point are summed,
which is the chain rule for multipliers over several paths).

DeepLIFT explains the *difference* of the selected logit from its value at a reference input,
:math:`\Delta t = t(x) - t(x^0)`, by multipliers :math:`m_{\Delta x \Delta t}` propagated backwards
with the chain rule for multipliers (paper eq. 3):

.. math::

    m_{\Delta x_i \Delta t} = \sum_j m_{\Delta x_i \Delta y_j}\, m_{\Delta y_j \Delta t},
    \qquad C_{\Delta x_i \Delta t} = \Delta x_i\, m_{\Delta x_i \Delta t}

* **Linear rule** (sec. 3.5.1), for every kernel (each half of a SeparableConv2D), Add,
  Concatenate, zero padding, BatchNormalization in inference mode,
  average pooling, Flatten/Reshape/Dropout: :math:`m_{\Delta x_i \Delta y_j} = \partial y_j /
  \partial x_i` (the weight); the bias cancels in :math:`\Delta`. Expressed by the existing
  :class:`~ecqx_tf.relevance.rules.Gradient` rule (a vector-Jacobian product is exact for an affine
  layer).
* **Rescale rule** (sec. 3.5.2), :class:`Rescale`, for elementwise nonlinearities ``y = f(x)``
  (fused activations, ``Activation``, ``ReLU``): :math:`m_{\Delta x \Delta y} = \Delta y / \Delta x`,
  and :math:`f'(x)` where :math:`|\Delta x| <` ``threshold`` (the reference implementation's
  near-zero fallback).
* **Max pooling**: :class:`RescaleMax` ("scaled gradient", our exact variant): the multiplier is
  routed to the input ``w`` that wins the window for ``x`` (first maximum in row-major window
  order, as TensorFlow's ``MaxPoolWithArgmax``) and scaled by :math:`\Delta y / \Delta x_w`, so the
  window's contribution is exactly :math:`\Delta y`. Where :math:`|\Delta x_w| <` ``threshold`` it
  goes to the reference's winner ``r`` scaled by :math:`\Delta y / \Delta x_r` instead (if
  :math:`x_w = x^0_w` then :math:`\Delta y = x^0_w - x^0_r` and :math:`|\Delta x_r| \ge |\Delta y|`,
  so this is well defined whenever :math:`\Delta y \ne 0`), the same idea as Captum's use of both
  winners; where both are tiny it is routed unscaled. With :class:`~ecqx_tf.relevance.rules.Gradient`
  instead, the multiplier is routed unscaled (the reference implementation's
  ``MaxPoolDeepLiftMode.gradient``), which keeps summation-to-delta only when the reference is
  constant within every pooling window.

**Summation-to-delta** (paper eq. 1): :math:`\sum_i C_{\Delta x_i \Delta t} = \Delta t`. It holds
exactly (up to float round-off) at the input and, for every kernel, for the
contributions of its output units and of its weights, with the Rescale rules whenever no fallback is
taken; for ReLU networks the fallback only ever affects inputs with :math:`\Delta x \approx 0`.

What is reported, as the LRP engine does (so pruning / sharing / mixed precision can take either
criterion):

* ``LayerRelevance.layers[key]``: contribution of every output unit of a kernel (key as in
  ``weight_relevance``),
  :math:`C_j = \Delta z_j\, m_{\Delta z_j \Delta t}` (pre-activation; equal to the post-activation
  contribution under Rescale), per sample;
* weight contributions :math:`C_{ij} = \sum_n \sum_{pos} w_{ij}\, \Delta a_i\, m_{\Delta z_j \Delta t}`
  (kernel-shaped), whose sum over ``i`` is :math:`C_j`;
* the target is the true-class logit of each sample and everything is multiplied by ``1/N`` for
  ``N`` samples (like the LRP engine's output relevance), so totals are mean :math:`\Delta t`.

Reference input (:data:`REFERENCES`): ``"zeros"`` or ``"mean"`` (the mean of ``reference_data``,
default the ``x`` of the call), or an explicit array of the input's shape.
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Callable, ClassVar, Dict, Optional, Sequence, Tuple, Type, Union

import numpy as np
import tensorflow as tf

from ecqx_tf import layers as _layers
from ecqx_tf import names
from ecqx_tf.config import validate_float_range
from ecqx_tf.registry import Registry
from ecqx_tf.relevance.composites import check_layer_rules
from ecqx_tf.relevance.graph import (
    GraphNode,
    NodeActs,
    RelevanceGraph,
    check_batch_size,
    target_mask,
    vjp,
)
from ecqx_tf.relevance.native import LayerRelevance, check_layer_names
from ecqx_tf.relevance.rules import RULES, Rule

__all__ = [
    "Rescale",
    "RescaleMax",
    "DeepLiftComposite",
    "DEEPLIFT_COMPOSITES",
    "DEEPLIFT_ALLOWED_RULES",
    "get_deeplift_composite",
    "REFERENCES",
    "make_reference",
    "DeepLIFT",
    "deeplift_engine",
    "deeplift_layer_relevance",
    "deeplift_weight_relevance",
    "rescale_multiplier",
    "DEFAULT_THRESHOLD",
]

#: ``|Delta x|`` below which Rescale falls back to the gradient (the reference implementation's
#: ``NEAR_ZERO_THRESHOLD``).
DEFAULT_THRESHOLD = 1e-7


def _check_threshold(cls: str, value: Any) -> float:
    return validate_float_range(f"{cls}: threshold", value, low=0, low_open=True)


@RULES.register("rescale")
@dataclasses.dataclass(frozen=True)
class Rescale(Rule):
    r"""DeepLIFT Rescale rule for an elementwise nonlinearity :math:`y = f(x)`:
    :math:`m_{\Delta x \Delta y} = \Delta y / \Delta x`, or :math:`f'(x)` where
    :math:`|\Delta x| <` ``threshold`` (Shrikumar et al. 2017, sec. 3.5.2).

    Raises:
        TypeError / ValueError: ``threshold`` is not a positive finite number.
    """

    threshold: float = DEFAULT_THRESHOLD
    name: ClassVar[str] = "rescale"

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", _check_threshold("Rescale", self.threshold))


@RULES.register("rescale_max")
@dataclasses.dataclass(frozen=True)
class RescaleMax(Rule):
    r"""DeepLIFT for max pooling, "scaled gradient": the window's multiplier goes to the input that
    wins for ``x``, times :math:`\Delta y / \Delta x_{w}`; where :math:`|\Delta x_{w}| <`
    ``threshold``, to the reference's winner times :math:`\Delta y / \Delta x_{r}`; where both are
    tiny, unscaled to the x-winner. The window's contribution is exactly :math:`\Delta y`.

    Raises:
        TypeError / ValueError: ``threshold`` is not a positive finite number.
    """

    threshold: float = DEFAULT_THRESHOLD
    name: ClassVar[str] = "rescale_max"

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", _check_threshold("RescaleMax", self.threshold))


#: Layer type -> DeepLIFT rules the engine implements for it (from the layer registry; drives
#: validation and errors). The ``Activation`` entry also covers activations fused into kernel layers.
DEEPLIFT_ALLOWED_RULES: Dict[str, Tuple[Type[Rule], ...]] = {
    name: tuple(RULES.get(r) for r in _layers.get(name).deeplift_allowed)
    for name in _layers.LAYERS.in_order()
    if _layers.get(name).role != "input"
}

_SUPPORTED = tuple(DEEPLIFT_ALLOWED_RULES) + ("InputLayer",)


@dataclasses.dataclass(frozen=True)
class DeepLiftComposite:
    """Layer type -> DeepLIFT rule (the ``Activation`` entry also covers the activations fused
    into kernel layers).

    Raises:
        TypeError: a rule is not a :class:`Rule`.
        ValueError: unknown or missing layer type, or a rule the engine cannot run for that type
            (the message lists the accepted rules).
    """

    name: str
    layer_rules: Tuple[Tuple[str, Rule], ...]

    def __post_init__(self) -> None:
        pairs = check_layer_rules("DeepLiftComposite", self.name, self.layer_rules, DEEPLIFT_ALLOWED_RULES)
        object.__setattr__(self, "layer_rules", pairs)

    def rule(self, layer_type: str) -> Rule:
        """Rule for a layer of exact Keras class name ``layer_type``.

        Raises:
            ValueError: unsupported layer type (lists the supported ones).
        """
        for t, r in self.layer_rules:
            if t == layer_type:
                return r
        raise ValueError(
            f"layer type {layer_type!r} is not supported by DeepLIFT composite {self.name!r}; "
            f"supported: {', '.join(_SUPPORTED)}"
        )

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "layer_rules": [[t, r.get_config()] for t, r in self.layer_rules]}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "DeepLiftComposite":
        from ecqx_tf.relevance.rules import rule_from_config

        return cls(name=config["name"], layer_rules=tuple((t, rule_from_config(r)) for t, r in config["layer_rules"]))


def _registry_rule(name: str, gradient_max: bool) -> Rule:
    rule = _layers.get(name).deeplift
    if gradient_max and rule == "rescale_max":
        rule = "gradient"
    return RULES.get(rule)()


#: name -> DeepLiftComposite
DEEPLIFT_COMPOSITES: Registry[DeepLiftComposite] = Registry("DeepLIFT composite")
DEEPLIFT_COMPOSITES.register("deeplift_rescale")(DeepLiftComposite(
    "deeplift_rescale", tuple((t, _registry_rule(t, False)) for t in DEEPLIFT_ALLOWED_RULES),
))
DEEPLIFT_COMPOSITES.register("deeplift_rescale_gradmax")(DeepLiftComposite(
    "deeplift_rescale_gradmax", tuple((t, _registry_rule(t, True)) for t in DEEPLIFT_ALLOWED_RULES),
))


def get_deeplift_composite(composite: Union[str, DeepLiftComposite]) -> DeepLiftComposite:
    """A registered DeepLIFT composite by name, or ``composite`` itself.

    Raises:
        TypeError: neither a str nor a :class:`DeepLiftComposite`.
        ValueError: unknown name (lists the registered ones).
    """
    return DEEPLIFT_COMPOSITES.resolve(composite, DeepLiftComposite)


# --------------------------------------------------------------------------------------------
# references

#: name -> ``fn(data: float32 (N, *shape)) -> float32 (*shape)``
REFERENCES: Registry[Callable[[np.ndarray], np.ndarray]] = Registry(
    "DeepLIFT reference", known=names.DEEPLIFT_REFERENCES, known_in="ecqx_tf/names.py")
REFERENCES.register("zeros")(lambda data: np.zeros(data.shape[1:], np.float32))
REFERENCES.register("mean")(lambda data: np.mean(data.astype(np.float64), axis=0).astype(np.float32))


def make_reference(
    reference: Union[str, np.ndarray], input_shape: Sequence[Optional[int]], data: Optional[np.ndarray] = None
) -> np.ndarray:
    """The reference input as float32 of shape ``(1, *input_shape[1:])``.

    Args:
        reference: a :data:`REFERENCES` name or an array of the sample shape (or ``(1, *shape)``).
        input_shape: the model's input shape (with the batch dimension).
        data: samples for ``"mean"`` (required for it).

    Raises:
        ValueError: unknown name, ``"mean"`` without data, or an array of the wrong shape or with
            non-finite values.
        TypeError: neither a str nor an array.
    """
    shape = tuple(input_shape[1:])
    if isinstance(reference, str):
        fn = REFERENCES.get(reference)
        if data is None:
            if reference == "zeros":
                return np.zeros((1,) + shape, np.float32)
            raise ValueError(f"reference {reference!r} needs reference_data (samples to average)")
        d = np.asarray(data, dtype=np.float32)
        if d.ndim != len(shape) + 1 or tuple(d.shape[1:]) != shape or len(d) == 0:
            raise ValueError(f"reference_data has shape {d.shape}; expected (N>0, {', '.join(map(str, shape))})")
        return fn(d).reshape((1,) + shape).astype(np.float32)
    if isinstance(reference, (np.ndarray, list, tuple, tf.Tensor)):
        r = np.asarray(reference, dtype=np.float32)
        if r.shape == shape:
            r = r[None]
        if r.shape != (1,) + shape:
            raise ValueError(
                f"reference array has shape {r.shape}; expected {shape} or {(1,) + shape} (the model's input sample shape)"
            )
        if not np.all(np.isfinite(r)):
            raise ValueError("reference array contains NaN or infinite values")
        return r
    raise TypeError(
        f"reference must be one of {REFERENCES.names()} or an array, got {type(reference).__name__}"
    )


# --------------------------------------------------------------------------------------------
# numerics (pure TF)


def rescale_multiplier(
    fn: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor, x_ref: tf.Tensor, y: tf.Tensor, y_ref: tf.Tensor,
    threshold: float,
) -> tf.Tensor:
    r""":math:`\Delta y / \Delta x` elementwise, :math:`f'(x)` where :math:`|\Delta x| <` threshold."""
    dx = x - x_ref
    dy = y - y_ref
    small = tf.abs(dx) < threshold
    grad = vjp(fn, x, tf.ones_like(x))
    safe = tf.where(small, tf.ones_like(dx), dx)
    return tf.where(small, grad, dy / safe)


def _maxpool_params(layer: tf.keras.layers.Layer, a4: tf.Tensor) -> Tuple[Tuple[int, int], Tuple[int, int], str]:
    """Window, strides and padding of a (1-D or 2-D) max pooling on the 4-D view ``a4``."""
    if type(layer).__name__.startswith("GlobalMaxPooling"):
        return (int(a4.shape[1]), int(a4.shape[2])), (1, 1), "VALID"
    pool = tuple(int(v) for v in layer.pool_size)
    strides = tuple(int(v) for v in layer.strides)
    if len(pool) == 1:
        pool, strides = (pool[0], 1), (strides[0], 1)
    return pool, strides, str(layer.padding).upper()


def _rescale_max(layer, a, a_ref, y, y_ref, m_y, threshold):
    """Scaled-gradient max pooling, exact: every window's ``m_y * dy`` goes to the x-winner ``w``
    divided by ``dx_w``; where ``|dx_w| < threshold`` to the reference winner ``r`` divided by
    ``dx_r`` (then ``dy != 0`` implies ``|dx_r| >= |dy|``); where both are tiny, unscaled to ``w``.
    1-D pooling runs on the 4-D view ``(N, L, 1, C)``."""
    shape_a = tf.shape(a)
    if a.shape.rank == 3:
        a = tf.expand_dims(a, 2)
        a_ref = tf.expand_dims(a_ref, 2)
    pool, strides, padding = _maxpool_params(layer, a)
    n = tf.shape(a, out_type=tf.int64)[0]
    per = tf.reduce_prod(tf.shape(a, out_type=tf.int64)[1:])
    _, arg_x = tf.nn.max_pool_with_argmax(a, pool, strides, padding, include_batch_in_index=False)
    _, arg_r = tf.nn.max_pool_with_argmax(a_ref, pool, strides, padding, include_batch_in_index=False)
    offset = tf.reshape(tf.range(n, dtype=tf.int64) * per, [-1, 1, 1, 1])
    arg_x = arg_x + offset
    arg_r = tf.zeros_like(arg_x) + arg_r + offset
    m = tf.reshape(m_y, tf.shape(arg_x))  # global / 1-D pooling: reshaped onto the 4-D windows
    dy = tf.reshape(y - y_ref, tf.shape(arg_x))
    flat_dx = tf.reshape(a - a_ref, [-1])  # (N, H, W, C) flattened, a_ref broadcast
    dx_w = tf.gather(flat_dx, arg_x)
    dx_r = tf.gather(flat_dx, arg_r)
    use_w = tf.abs(dx_w) >= threshold
    use_r = tf.logical_and(tf.logical_not(use_w), tf.abs(dx_r) >= threshold)
    one = tf.ones_like(dx_w)
    to_w = tf.where(use_w, m * dy / tf.where(use_w, dx_w, one), tf.where(use_r, tf.zeros_like(m), m))
    to_r = tf.where(use_r, m * dy / tf.where(use_r, dx_r, one), tf.zeros_like(m))
    total = tf.size(flat_dx, out_type=tf.int64)
    out = tf.math.unsorted_segment_sum(
        tf.concat([tf.reshape(to_w, [-1]), tf.reshape(to_r, [-1])], 0),
        tf.concat([tf.reshape(arg_x, [-1]), tf.reshape(arg_r, [-1])], 0),
        total,
    )
    return tf.reshape(out, shape_a)


# --------------------------------------------------------------------------------------------
# the engine


def _activation_rule(node: GraphNode, composite: "DeepLiftComposite") -> Optional[Rule]:
    if not node.kernel or node.skip_activation or getattr(node.layer.activation, "__name__", "") == "linear":
        return None
    return composite.rule("Activation")


class DeepLIFT:
    """DeepLIFT with one composite on one model, compiled once per target mode (``tf.function``).

    Args:
        model: a built single-input, single-output Sequential or functional ``tf.keras`` model of
            the layer registry (a final softmax is skipped); not modified.
        composite: a :class:`DeepLiftComposite` or a registered name (default ``deeplift_rescale``).
        layers: kernel layer names or kernel keys to report; None = all.

    Raises:
        UnsupportedLayerError: an unsupported layer or structure (names it, lists the supported types).
        ValueError: unknown or non-kernel names in ``layers``.
    """

    def __init__(
        self,
        model: tf.keras.Model,
        composite: Union[str, DeepLiftComposite] = "deeplift_rescale",
        layers: Optional[Sequence[str]] = None,
    ):
        self.composite = get_deeplift_composite(composite)
        self.graph = RelevanceGraph(model, "DeepLIFT")
        self.model_name: str = model.name
        self.input_shape: Tuple[Optional[int], ...] = self.graph.input_shape
        if not self.graph.kernels:
            raise ValueError(f"model {model.name!r} has no kernel layer to compute contributions for")
        self.layer_names: Tuple[str, ...] = tuple(check_layer_names(self.graph, layers))
        self._target = set(self.layer_names)
        self._rules = {g.index: (None if g.kernel else self.composite.rule(g.type_name)) for g in self.graph.nodes}
        self._act = {g.index: _activation_rule(g, self.composite) for g in self.graph.nodes}
        self._fns: Dict[Tuple[str, str], Any] = {}

    @property
    def num_classes(self) -> Optional[int]:
        out = self.graph.output_shape
        return int(out[-1]) if len(out) == 2 and out[-1] is not None else None

    # -- graph pieces -------------------------------------------------------------------------
    def _backward(self, acts, acts_ref, labels, scale, mode: str, want_weights: bool):
        out = acts[self.graph.output].y
        m0 = target_mask(out, mode, labels) * scale
        contrib: Dict[str, tf.Tensor] = {}
        weights: Dict[str, tf.Tensor] = {}

        def step(g: GraphNode, a: NodeActs, m: tf.Tensor):
            a0 = acts_ref[g.index]
            if g.kernel:
                act = self._act[g.index]
                if act is not None:
                    m = m * rescale_multiplier(g.layer.activation, a.stages[-1][1], a0.stages[-1][1], a.y, a0.y,
                                               act.threshold)
                for k in range(len(g.stages) - 1, -1, -1):
                    st = g.stages[k]
                    (x_k, z_k), (x0_k, z0_k) = a.stages[k], a0.stages[k]
                    key = g.kernel_key(st.attr)
                    if key in self._target:
                        contrib[key] = (z_k - z0_k) * m
                        if want_weights:
                            kernel = tf.convert_to_tensor(getattr(g.layer, st.attr))
                            with tf.GradientTape() as tape:
                                tape.watch(kernel)
                                zz = st.op(g.layer, x_k - x0_k, kernel)
                            weights[key] = kernel * tape.gradient(zz, kernel, output_gradients=m)
                    kernel = tf.convert_to_tensor(getattr(g.layer, st.attr))
                    m = vjp(lambda t, k_=kernel, s_=st: s_.op(g.layer, t, k_), x_k, m)
                return [m]
            rule = self._rules[g.index]
            single = len(a.inputs) == 1

            def fn(t):
                return g.layer(t[0] if single else t, training=False)

            if isinstance(rule, Rescale):
                return [m * rescale_multiplier(lambda t: g.layer(t, training=False), a.inputs[0], a0.inputs[0],
                                               a.y, a0.y, rule.threshold)]
            if isinstance(rule, RescaleMax):
                return [_rescale_max(g.layer, a.inputs[0], a0.inputs[0], a.y, a0.y, m, rule.threshold)]
            return list(vjp(fn, list(a.inputs), m))  # Gradient: linear layers, or max pooling in gradient mode

        m_in = self.graph.backward(acts, m0, step)
        return m_in, contrib, weights

    def _explain(self, x, ref, labels, scale, mode):
        acts = self.graph.forward(x)
        acts_ref = self.graph.forward(ref)
        m, contrib, _ = self._backward(acts, acts_ref, labels, scale, mode, want_weights=False)
        return (x - ref) * m, tuple(contrib[n] for n in self.layer_names)

    def _weights(self, x, ref, labels, scale, mode):
        acts = self.graph.forward(x)
        acts_ref = self.graph.forward(ref)
        _, _, weights = self._backward(acts, acts_ref, labels, scale, mode, want_weights=True)
        return tuple(weights[n] for n in self.layer_names)

    def _fn(self, kind: str, mode: str):
        key = (kind, mode)
        fn = self._fns.get(key)
        if fn is None:
            x_spec = tf.TensorSpec((None,) + self.input_shape[1:], tf.float32)
            r_spec = tf.TensorSpec((1,) + self.input_shape[1:], tf.float32)
            y_spec = tf.TensorSpec((None,), tf.int32)
            s_spec = tf.TensorSpec((), tf.float32)
            body = self._explain if kind == "explain" else self._weights
            fn = tf.function(lambda x, r, y, s: body(x, r, y, s, mode), input_signature=[x_spec, r_spec, y_spec, s_spec], autograph=False)
            self._fns[key] = fn
        return fn

    # -- public -------------------------------------------------------------------------------
    def check_data(self, x: Any, y: Any, target: str = "auto") -> Tuple[np.ndarray, np.ndarray, str]:
        """``(x float32, labels int32 (zeros unless mode "label"), mode)``; see the LRP engine."""
        mode = self.graph.resolve_target(y, target)
        xa, ya = self.graph.check_data(x, y, mode)
        return xa, (np.zeros(len(xa), np.int32) if ya is None else ya), mode

    def explain_batch(self, x: np.ndarray, ref: np.ndarray, y: np.ndarray, scale: float,
                      mode: str = "label") -> LayerRelevance:
        """Contributions of one validated batch (input and every reported kernel's output units)."""
        r_in, rs = self._fn("explain", mode)(tf.constant(x), tf.constant(ref), tf.constant(y), tf.constant(scale, tf.float32))
        return LayerRelevance(r_in.numpy(), {n: r.numpy() for n, r in zip(self.layer_names, rs)})

    def weight_contributions_batch(self, x: np.ndarray, ref: np.ndarray, y: np.ndarray, scale: float,
                                   mode: str = "label") -> Dict[str, np.ndarray]:
        """Kernel-shaped weight contributions of one validated batch, summed over it."""
        out = self._fn("weights", mode)(tf.constant(x), tf.constant(ref), tf.constant(y), tf.constant(scale, tf.float32))
        return {n: w.numpy() for n, w in zip(self.layer_names, out)}


_ENGINES: "weakref.WeakKeyDictionary[tf.keras.Model, Dict[Any, DeepLIFT]]" = weakref.WeakKeyDictionary()


def deeplift_engine(
    model: tf.keras.Model, composite: Union[str, DeepLiftComposite] = "deeplift_rescale",
    layers: Optional[Sequence[str]] = None,
) -> DeepLIFT:
    """The cached :class:`DeepLIFT` engine for these arguments (built on first use)."""
    comp = get_deeplift_composite(composite)
    key = (comp, None if layers is None else tuple(layers))
    try:
        per_model = _ENGINES.setdefault(model, {})
    except TypeError:  # pragma: no cover - not weak-referenceable
        return DeepLIFT(model, comp, layers)
    engine = per_model.get(key)
    if engine is None:
        engine = DeepLIFT(model, comp, layers)
        if len(per_model) >= 8:
            per_model.pop(next(iter(per_model)))
        per_model[key] = engine
    return engine


def _prepare(model, x, y, reference, reference_data, composite, layers, batch_size, target):
    engine = deeplift_engine(model, composite, layers)
    xa, ya, mode = engine.check_data(x, y, target)
    bs = check_batch_size(batch_size)
    ref = make_reference(reference, engine.input_shape, xa if reference_data is None else reference_data)
    return engine, xa, ya, bs, ref, mode


def deeplift_layer_relevance(
    model: tf.keras.Model,
    x: Any,
    y: Any = None,
    reference: Union[str, np.ndarray] = "zeros",
    layers: Optional[Sequence[str]] = None,
    composite: Union[str, DeepLiftComposite] = "deeplift_rescale",
    batch_size: int = 64,
    reference_data: Optional[np.ndarray] = None,
    target: str = "auto",
) -> LayerRelevance:
    """DeepLIFT contributions at the input and at each kernel's output, per sample, target the
    true-class logit (or, without labels, the predicted class / the whole output, see ``target``),
    scaled by ``1/N`` (``N = len(x)``; ``batch_size`` does not change the result).

    ``reference="mean"`` averages ``reference_data`` (default: ``x``) once over the whole call.

    Raises:
        ValueError / TypeError: as :func:`ecqx_tf.relevance.layer_relevance`, plus a bad reference.
        UnsupportedLayerError: a layer type DeepLIFT does not support here.
    """
    engine, xa, ya, bs, ref, mode = _prepare(model, x, y, reference, reference_data, composite, layers, batch_size,
                                             target)
    scale = 1.0 / xa.shape[0]
    parts = [engine.explain_batch(xa[i : i + bs], ref, ya[i : i + bs], scale, mode) for i in range(0, xa.shape[0], bs)]
    return LayerRelevance(
        np.concatenate([p.input for p in parts]),
        {n: np.concatenate([p.layers[n] for p in parts]) for n in engine.layer_names},
    )


def deeplift_weight_relevance(
    model: tf.keras.Model,
    x: Any,
    y: Any = None,
    reference: Union[str, np.ndarray] = "zeros",
    layers: Optional[Sequence[str]] = None,
    composite: Union[str, DeepLiftComposite] = "deeplift_rescale",
    batch_size: int = 64,
    reference_data: Optional[np.ndarray] = None,
    target: str = "auto",
) -> Dict[str, np.ndarray]:
    r"""DeepLIFT weight contributions :math:`C_{ij} = \sum_n \sum_{pos} w_{ij} \Delta a_i m_{\Delta z_j \Delta t}`
    (kernel-shaped float32, scaled by ``1/N``); per kernel they sum to the mean :math:`\Delta t`.
    Arguments and errors as :func:`deeplift_layer_relevance`."""
    engine, xa, ya, bs, ref, mode = _prepare(model, x, y, reference, reference_data, composite, layers, batch_size,
                                             target)
    scale = 1.0 / xa.shape[0]
    total: Dict[str, np.ndarray] = {}
    for i in range(0, xa.shape[0], bs):
        part = engine.weight_contributions_batch(xa[i : i + bs], ref, ya[i : i + bs], scale, mode)
        for n, v in part.items():
            total[n] = v.astype(np.float64) if n not in total else total[n] + v
    return {n: total[n].astype(np.float32) for n in engine.layer_names}
