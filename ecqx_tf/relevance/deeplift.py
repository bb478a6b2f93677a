r"""DeepLIFT (Shrikumar, Greenside, Kundaje, ICML 2017) with the Rescale rule, in the same
rule / composite framework as the LRP engine, on the same chain models.

DeepLIFT explains the *difference* of the selected logit from its value at a reference input,
:math:`\Delta t = t(x) - t(x^0)`, by multipliers :math:`m_{\Delta x \Delta t}` propagated backwards
with the chain rule for multipliers (paper eq. 3):

.. math::

    m_{\Delta x_i \Delta t} = \sum_j m_{\Delta x_i \Delta y_j}\, m_{\Delta y_j \Delta t},
    \qquad C_{\Delta x_i \Delta t} = \Delta x_i\, m_{\Delta x_i \Delta t}

* **Linear rule** (sec. 3.5.1), for Dense/Conv2D kernels, BatchNormalization in inference mode,
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
exactly (up to float round-off) at the input and, for every Dense/Conv2D layer, for the
contributions of its output units and of its weights, with the Rescale rules whenever no fallback is
taken; for ReLU networks the fallback only ever affects inputs with :math:`\Delta x \approx 0`.

What is reported, as the LRP engine does (so pruning / sharing / mixed precision can take either
criterion):

* ``LayerRelevance.layers[name]``: contribution of every output unit of a Dense/Conv2D layer,
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
import math
import weakref
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import numpy as np
import tensorflow as tf

from ecqx_tf import names
from ecqx_tf.registry import Registry
from ecqx_tf.relevance.composites import KERNEL_LAYER_TYPES
from ecqx_tf.relevance.native import (
    chain_forward,
    chain_layers_before_softmax,
    check_layer_names,
    LayerRelevance,
    UnsupportedLayerError,
    _describe,
    _is_softmax,
    _linear,
    _vjp,
    check_batch_size,
    check_data,
    keras_type_name,
)
from ecqx_tf.relevance.rules import RULES, Gradient, Rule

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
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{cls}: threshold must be a float, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{cls}: threshold must be finite and > 0, got {value!r}")
    return float(value)


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


#: Layer type -> DeepLIFT rules the engine implements for it (drives validation and errors).
DEEPLIFT_ALLOWED_RULES: Dict[str, Tuple[Type[Rule], ...]] = {
    "Dense": (Gradient,),
    "Conv2D": (Gradient,),
    "BatchNormalization": (Gradient,),
    "AveragePooling2D": (Gradient,),
    "GlobalAveragePooling2D": (Gradient,),
    "Flatten": (Gradient,),
    "Reshape": (Gradient,),
    "Dropout": (Gradient,),
    "Activation": (Rescale,),
    "ReLU": (Rescale,),
    "MaxPooling2D": (RescaleMax, Gradient),
    "GlobalMaxPooling2D": (RescaleMax, Gradient),
}

_SUPPORTED = tuple(DEEPLIFT_ALLOWED_RULES) + ("InputLayer",)


@dataclasses.dataclass(frozen=True)
class DeepLiftComposite:
    """Layer type -> DeepLIFT rule (the ``Activation`` entry also covers the activations fused
    into Dense/Conv2D).

    Raises:
        TypeError: a rule is not a :class:`Rule`.
        ValueError: unknown or missing layer type, or a rule the engine cannot run for that type
            (the message lists the accepted rules).
    """

    name: str
    layer_rules: Tuple[Tuple[str, Rule], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"DeepLiftComposite: name must be a non-empty str, got {self.name!r}")
        items = self.layer_rules.items() if isinstance(self.layer_rules, Mapping) else self.layer_rules
        pairs = tuple((str(k), v) for k, v in items)
        seen = set()
        for layer_type, rule in pairs:
            if layer_type not in DEEPLIFT_ALLOWED_RULES:
                raise ValueError(
                    f"DeepLiftComposite {self.name!r}: unknown layer type {layer_type!r}; "
                    f"accepted: {', '.join(DEEPLIFT_ALLOWED_RULES)}"
                )
            if layer_type in seen:
                raise ValueError(f"DeepLiftComposite {self.name!r}: layer type {layer_type!r} given twice")
            seen.add(layer_type)
            if not isinstance(rule, Rule):
                raise TypeError(
                    f"DeepLiftComposite {self.name!r}: rule for {layer_type} must be a Rule, got {type(rule).__name__}"
                )
            allowed = DEEPLIFT_ALLOWED_RULES[layer_type]
            if type(rule) not in allowed:
                raise ValueError(
                    f"DeepLiftComposite {self.name!r}: rule {rule.name!r} is not available for {layer_type}; "
                    f"accepted: {', '.join(a.name for a in allowed)}"
                )
        missing = [t for t in DEEPLIFT_ALLOWED_RULES if t not in seen]
        if missing:
            raise ValueError(f"DeepLiftComposite {self.name!r}: no rule for layer types {missing}")
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


_LINEAR = tuple((t, Gradient()) for t in (
    "Dense", "Conv2D", "BatchNormalization", "AveragePooling2D", "GlobalAveragePooling2D", "Flatten", "Reshape",
    "Dropout",
))

#: name -> DeepLiftComposite
DEEPLIFT_COMPOSITES: Registry[DeepLiftComposite] = Registry("DeepLIFT composite")
DEEPLIFT_COMPOSITES.register("deeplift_rescale")(DeepLiftComposite(
    "deeplift_rescale",
    _LINEAR + (("Activation", Rescale()), ("ReLU", Rescale()), ("MaxPooling2D", RescaleMax()),
               ("GlobalMaxPooling2D", RescaleMax())),
))
DEEPLIFT_COMPOSITES.register("deeplift_rescale_gradmax")(DeepLiftComposite(
    "deeplift_rescale_gradmax",
    _LINEAR + (("Activation", Rescale()), ("ReLU", Rescale()), ("MaxPooling2D", Gradient()),
               ("GlobalMaxPooling2D", Gradient())),
))


def get_deeplift_composite(composite: Union[str, DeepLiftComposite]) -> DeepLiftComposite:
    """A registered DeepLIFT composite by name, or ``composite`` itself.

    Raises:
        TypeError: neither a str nor a :class:`DeepLiftComposite`.
        ValueError: unknown name (lists the registered ones).
    """
    if isinstance(composite, DeepLiftComposite):
        return composite
    if isinstance(composite, str):
        return DEEPLIFT_COMPOSITES.get(composite)
    raise TypeError(
        f"composite must be a str or DeepLiftComposite, got {type(composite).__name__}; "
        f"registered: {', '.join(DEEPLIFT_COMPOSITES.names())}"
    )


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
    grad = _vjp(fn, x, tf.ones_like(x))
    safe = tf.where(small, tf.ones_like(dx), dx)
    return tf.where(small, grad, dy / safe)


def _maxpool_params(layer: tf.keras.layers.Layer, a: tf.Tensor) -> Tuple[Tuple[int, int], Tuple[int, int], str]:
    if type(layer) is tf.keras.layers.GlobalMaxPooling2D:
        return (int(a.shape[1]), int(a.shape[2])), (1, 1), "VALID"
    pool = tuple(int(v) for v in layer.pool_size)
    strides = tuple(int(v) for v in layer.strides)
    return pool, strides, str(layer.padding).upper()


def _rescale_max(layer, a, a_ref, y, y_ref, m_y, threshold):
    """Scaled-gradient max pooling, exact: every window's ``m_y * dy`` goes to the x-winner ``w``
    divided by ``dx_w``; where ``|dx_w| < threshold`` to the reference winner ``r`` divided by
    ``dx_r`` (then ``dy != 0`` implies ``|dx_r| >= |dy|``); where both are tiny, unscaled to ``w``."""
    pool, strides, padding = _maxpool_params(layer, a)
    n = tf.shape(a, out_type=tf.int64)[0]
    per = tf.reduce_prod(tf.shape(a, out_type=tf.int64)[1:])
    _, arg_x = tf.nn.max_pool_with_argmax(a, pool, strides, padding, include_batch_in_index=False)
    _, arg_r = tf.nn.max_pool_with_argmax(a_ref, pool, strides, padding, include_batch_in_index=False)
    offset = tf.reshape(tf.range(n, dtype=tf.int64) * per, [-1, 1, 1, 1])
    arg_x = arg_x + offset
    arg_r = tf.zeros_like(arg_x) + arg_r + offset
    m = tf.reshape(m_y, tf.shape(arg_x))  # GlobalMaxPooling2D: (N, C) -> (N, 1, 1, C)
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
    return tf.reshape(out, tf.shape(a))


# --------------------------------------------------------------------------------------------
# the engine


@dataclasses.dataclass(frozen=True, eq=False)
class _Step:
    layer: tf.keras.layers.Layer
    type_name: str
    rule: Rule
    kernel: bool
    act_rule: Optional[Rule]  # rule of a fused activation (kernel layers)
    skip_activation: bool


def _steps(model: tf.keras.Model, composite: DeepLiftComposite) -> List[_Step]:
    layers, _ = chain_layers_before_softmax(model)
    out: List[_Step] = []
    for i, layer in enumerate(layers):
        t = keras_type_name(layer)
        if t is None or t not in _SUPPORTED or t == "InputLayer":
            raise UnsupportedLayerError(
                f"{_describe(layer)} in model {model.name!r} is not supported by DeepLIFT; supported layer "
                f"types: {', '.join(_SUPPORTED)} (plus a final Softmax)"
            )
        if layer.get_config().get("data_format", "channels_last") != "channels_last":
            raise UnsupportedLayerError(f"{_describe(layer)}: only data_format='channels_last' is supported")
        kernel = t in KERNEL_LAYER_TYPES
        skip = kernel and i == len(layers) - 1 and _is_softmax(layer.activation)
        act = None
        if kernel and not skip and getattr(layer.activation, "__name__", "") != "linear":
            act = composite.rule("Activation")
        if t == "Activation" and _is_softmax(layer.activation):
            raise UnsupportedLayerError(f"{_describe(layer)}: softmax is only supported as the last layer")
        out.append(_Step(layer, t, composite.rule(t), kernel, act, skip))
    return out


class DeepLIFT:
    """DeepLIFT with one composite on one model, compiled once (``tf.function``) and reused.

    Args:
        model: a built Sequential or chain-shaped functional ``tf.keras`` model with logits (or
            a final softmax, which is skipped) output; not modified.
        composite: a :class:`DeepLiftComposite` or a registered name (default ``deeplift_rescale``).
        layers: Dense/Conv2D layer names to report; None = all.

    Raises:
        UnsupportedLayerError: an unsupported layer or structure (names it, lists the supported types).
        ValueError: unknown or non-kernel names in ``layers``; output not ``(N, classes)``.
    """

    def __init__(
        self,
        model: tf.keras.Model,
        composite: Union[str, DeepLiftComposite] = "deeplift_rescale",
        layers: Optional[Sequence[str]] = None,
    ):
        self.composite = get_deeplift_composite(composite)
        self._steps = _steps(model, self.composite)
        self.model_name: str = model.name
        self.input_shape: Tuple[Optional[int], ...] = tuple(tf.TensorShape(model.input_shape).as_list())
        names = check_layer_names(layers, [s.layer.name for s in self._steps if s.kernel], model.name)
        self.layer_names: Tuple[str, ...] = tuple(names)
        shape = tf.TensorShape(self.input_shape)
        for s in self._steps:
            shape = tf.TensorShape(s.layer.compute_output_shape(shape))
        if shape.rank != 2 or shape[-1] is None:
            raise ValueError(f"model {model.name!r} must output (batch, classes) logits, got shape {shape}")
        self.num_classes = int(shape[-1])
        sample = (None,) + self.input_shape[1:]
        x_spec = tf.TensorSpec(sample, tf.float32)
        r_spec = tf.TensorSpec((1,) + self.input_shape[1:], tf.float32)
        y_spec = tf.TensorSpec((None,), tf.int32)
        s_spec = tf.TensorSpec((), tf.float32)
        self._explain_fn = tf.function(self._explain, input_signature=[x_spec, r_spec, y_spec, s_spec])
        self._weights_fn = tf.function(self._weights, input_signature=[x_spec, r_spec, y_spec, s_spec])

    # -- graph pieces -------------------------------------------------------------------------
    def _forward(self, x: tf.Tensor):
        return chain_forward(self._steps, x)

    def _backward(self, acts, acts_ref, labels, scale, want_weights: bool):
        out_logits, ref_logits = acts[-1][2], acts_ref[-1][2]
        m = tf.one_hot(labels, self.num_classes, dtype=out_logits.dtype) * scale
        contrib: Dict[str, tf.Tensor] = {}
        weights: Dict[str, tf.Tensor] = {}
        for i in range(len(self._steps) - 1, -1, -1):
            s = self._steps[i]
            a, z, y = acts[i]
            a0, z0, y0 = acts_ref[i]
            if s.kernel:
                if s.act_rule is not None:
                    m = m * rescale_multiplier(s.layer.activation, z, z0, y, y0, s.act_rule.threshold)
                name = s.layer.name
                if name in self.layer_names:
                    contrib[name] = (z - z0) * m
                    if want_weights:
                        kernel = tf.convert_to_tensor(s.layer.kernel)
                        da = a - a0
                        with tf.GradientTape() as tape:
                            tape.watch(kernel)
                            zz = _linear(s.layer, da, kernel, None)
                        weights[name] = kernel * tape.gradient(zz, kernel, output_gradients=m)
                kernel = tf.convert_to_tensor(s.layer.kernel)
                m = _vjp(lambda t, k=kernel, l=s.layer: _linear(l, t, k, None), a, m)
            elif isinstance(s.rule, Rescale):
                fn = (lambda t, l=s.layer: l(t, training=False))
                m = m * rescale_multiplier(fn, a, a0, y, y0, s.rule.threshold)
            elif isinstance(s.rule, RescaleMax):
                m = _rescale_max(s.layer, a, a0, y, y0, m, s.rule.threshold)
            else:  # Gradient: linear layers (exact) or max pooling in gradient mode
                m = _vjp(lambda t, l=s.layer: l(t, training=False), a, m)
        return m, contrib, weights, out_logits, ref_logits

    def _explain(self, x, ref, labels, scale):
        acts, _ = self._forward(x)
        acts_ref, _ = self._forward(ref)
        m, contrib, _, _, _ = self._backward(acts, acts_ref, labels, scale, want_weights=False)
        return (x - ref) * m, tuple(contrib[n] for n in self.layer_names)

    def _weights(self, x, ref, labels, scale):
        acts, _ = self._forward(x)
        acts_ref, _ = self._forward(ref)
        _, _, weights, _, _ = self._backward(acts, acts_ref, labels, scale, want_weights=True)
        return tuple(weights[n] for n in self.layer_names)

    # -- public -------------------------------------------------------------------------------
    def check_data(self, x: Any, y: Any) -> Tuple[np.ndarray, np.ndarray]:
        return check_data(x, y, self.input_shape, self.num_classes, self.model_name)

    def explain_batch(self, x: np.ndarray, ref: np.ndarray, y: np.ndarray, scale: float) -> LayerRelevance:
        """Contributions of one validated batch (input and every reported layer's output units)."""
        r_in, rs = self._explain_fn(tf.constant(x), tf.constant(ref), tf.constant(y), tf.constant(scale, tf.float32))
        return LayerRelevance(r_in.numpy(), {n: r.numpy() for n, r in zip(self.layer_names, rs)})

    def weight_contributions_batch(self, x: np.ndarray, ref: np.ndarray, y: np.ndarray, scale: float) -> Dict[str, np.ndarray]:
        """Kernel-shaped weight contributions of one validated batch, summed over it."""
        out = self._weights_fn(tf.constant(x), tf.constant(ref), tf.constant(y), tf.constant(scale, tf.float32))
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


def _prepare(model, x, y, reference, reference_data, composite, layers, batch_size):
    engine = deeplift_engine(model, composite, layers)
    xa, ya = engine.check_data(x, y)
    bs = check_batch_size(batch_size)
    ref = make_reference(reference, engine.input_shape, xa if reference_data is None else reference_data)
    return engine, xa, ya, bs, ref


def deeplift_layer_relevance(
    model: tf.keras.Model,
    x: Any,
    y: Any,
    reference: Union[str, np.ndarray] = "zeros",
    layers: Optional[Sequence[str]] = None,
    composite: Union[str, DeepLiftComposite] = "deeplift_rescale",
    batch_size: int = 64,
    reference_data: Optional[np.ndarray] = None,
) -> LayerRelevance:
    """DeepLIFT contributions at the input and at each Dense/Conv2D output, per sample, target the
    true-class logit, scaled by ``1/N`` (``N = len(x)``; ``batch_size`` does not change the result).

    ``reference="mean"`` averages ``reference_data`` (default: ``x``) once over the whole call.

    Raises:
        ValueError / TypeError: as :func:`ecqx_tf.relevance.layer_relevance`, plus a bad reference.
        UnsupportedLayerError: a layer type DeepLIFT does not support here.
    """
    engine, xa, ya, bs, ref = _prepare(model, x, y, reference, reference_data, composite, layers, batch_size)
    scale = 1.0 / xa.shape[0]
    parts = [engine.explain_batch(xa[i : i + bs], ref, ya[i : i + bs], scale) for i in range(0, xa.shape[0], bs)]
    return LayerRelevance(
        np.concatenate([p.input for p in parts]),
        {n: np.concatenate([p.layers[n] for p in parts]) for n in engine.layer_names},
    )


def deeplift_weight_relevance(
    model: tf.keras.Model,
    x: Any,
    y: Any,
    reference: Union[str, np.ndarray] = "zeros",
    layers: Optional[Sequence[str]] = None,
    composite: Union[str, DeepLiftComposite] = "deeplift_rescale",
    batch_size: int = 64,
    reference_data: Optional[np.ndarray] = None,
) -> Dict[str, np.ndarray]:
    r"""DeepLIFT weight contributions :math:`C_{ij} = \sum_n \sum_{pos} w_{ij} \Delta a_i m_{\Delta z_j \Delta t}`
    (kernel-shaped float32, scaled by ``1/N``); per layer they sum to the mean :math:`\Delta t`.
    Arguments and errors as :func:`deeplift_layer_relevance`."""
    engine, xa, ya, bs, ref = _prepare(model, x, y, reference, reference_data, composite, layers, batch_size)
    scale = 1.0 / xa.shape[0]
    total: Dict[str, np.ndarray] = {}
    for i in range(0, xa.shape[0], bs):
        part = engine.weight_contributions_batch(xa[i : i + bs], ref, ya[i : i + bs], scale)
        for n, v in part.items():
            total[n] = v.astype(np.float64) if n not in total else total[n] + v
    return {n: total[n].astype(np.float32) for n in engine.layer_names}
