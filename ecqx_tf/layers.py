r"""THE layer registry: one :class:`LayerSpec` per supported Keras layer type (the exact
``tf.keras.layers`` class name), stating everything the package does with that type.

* ``kernels``: the attributes quantized by ECQ/ECQx (``"kernel"``, ``"depthwise_kernel"``,
  ``"pointwise_kernel"``); empty for layers without weights to quantize.
* ``lrp``: the LRP rule of every registered composite (``ecqx_tf.relevance.COMPOSITES`` is built
  from it), ``lrp_first``: the first-layer override per composite, ``lrp_allowed``: the rules both
  relevance backends implement for the type (what a user-defined composite may choose).
* ``deeplift`` / ``deeplift_allowed``: the DeepLIFT rule (Shrikumar et al. 2017) and the choices.
* ``innvestigate``: whether the iNNvestigate 2.1.2 backend runs the type (cross-checked in the tests).
* ``bn_fold``: for a kernel layer, the attribute into which a directly following
  BatchNormalization is folded (``ecqx_tf.fold_batchnorm``; ``quantize()`` does it by default).
* ``tflm_plan``: how the TFLite Micro exporter plans the layer (one of :data:`TFLM_PLANS`; the
  planner of ``firmware_export.tflm.convert`` has one handler per plan and accepts exactly the
  types that have one); ``tflm_ops``: the TFLite Micro operators the layer becomes (the
  exporter's op names come from here; an activation layer's op depends on its function:
  :data:`TFLM_ACTIVATION_OPS`); ``tflm_note``: the export's constraints.
* ``methods``: the explainability-driven methods that support the type (:data:`METHOD_NAMES`).

Every other table of the package derives from this one: ``quantize()``'s checks, the tfmot
``QuantizeConfig``, the LRP composites and DeepLIFT rules, the graph walker, the compression
methods, and the supported-layers table of ``docs/layers.md``
(``python -m ecqx_tf.layers --markdown``).

    >>> from ecqx_tf import layers
    >>> layers.get("DepthwiseConv2D").kernels
    ('depthwise_kernel',)
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .registry import Registry

__all__ = [
    "LayerSpec",
    "LAYERS",
    "ROLES",
    "METHOD_NAMES",
    "ACTIVATIONS",
    "FUSED_ACTIVATIONS",
    "COMPOSITE_NAMES",
    "TFLM_PLANS",
    "TFLM_WEIGHT_OPS",
    "TFLM_ACTIVATION_OPS",
    "TFLM_FUSE_INTO",
    "tflm_layers",
    "tflm_ops_of",
    "tflm_op_names",
    "get",
    "spec_of",
    "type_name",
    "supported_names",
    "kernel_types",
    "kernel_keys",
    "kernel_key",
    "model_kernels",
    "output_kernel_key",
    "layer_problems",
    "markdown",
]

#: What a layer does in the graph (drives the walker and the docs).
ROLES = ("input", "kernel", "merge", "reshape", "padding", "dropout", "activation", "pooling", "normalization")
#: The explainability-driven methods (``ecqx_tf.methods``) a layer type may support.
METHOD_NAMES = ("relevance_pruning", "structured_pruning", "weight_sharing", "mixed_precision", "deeplift")
#: Activation functions accepted in ``Activation`` layers.
ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "softmax", "tanh")
#: Activation functions accepted fused into kernel layers (tfmot's ``QuantizeAwareActivation`` has
#: no relu6: use a ``ReLU(6.0)`` or ``Activation("relu6")`` layer after the kernel layer instead).
FUSED_ACTIVATIONS = ("linear", "relu", "sigmoid", "softmax", "tanh")
#: The registered LRP composites (``ecqx_tf.relevance.COMPOSITES`` builds them from this registry).
COMPOSITE_NAMES = ("epsilon_plus_flat", "epsilon")
#: How the TFLite Micro exporter plans a layer type (``firmware_export.tflm.convert`` has one handler
#: per plan): a weight op, the depthwise + pointwise pair, BatchNorm folding, the merges, padding,
#: pooling, reshaping, an activation, or nothing (identity at inference).
TFLM_PLANS = ("kernel", "separable", "batchnorm", "add", "concatenate", "pad", "pool", "reshape", "activation",
              "identity")
#: TFLite Micro operators that carry (quantized) weights.
TFLM_WEIGHT_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")
#: The TFLite Micro operator of each activation function (``Activation`` layers, a kernel layer's
#: ``activation=``) when it is an op of its own; ``linear`` is nothing. relu and relu6 are fused into
#: the op that produces their input instead when that op is one of :data:`TFLM_FUSE_INTO` and the
#: activation is the only reader of its output.
TFLM_ACTIVATION_OPS: Dict[str, Tuple[str, ...]] = {
    "linear": (), "relu": ("RELU",), "relu6": ("RELU6",), "sigmoid": ("LOGISTIC",), "tanh": ("TANH",),
    "softmax": ("SOFTMAX",),
}
#: Ops with a fused activation into which the exporter folds a following relu/relu6.
TFLM_FUSE_INTO = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """Everything the package does with one Keras layer type.

    Attributes:
        name: exact ``tf.keras.layers`` class name.
        role: one of :data:`ROLES`.
        kernels: quantized kernel attributes, in the layer's weight order.
        lrp: ``((composite, rule name), ...)`` for every name in :data:`COMPOSITE_NAMES`.
        lrp_first: ``((composite, rule name), ...)``: first-layer overrides (kernel layers).
        lrp_allowed: rule names both relevance backends run for this type.
        deeplift: DeepLIFT rule name; deeplift_allowed: the accepted ones.
        innvestigate: the iNNvestigate backend supports the type (and the tests cross-check it).
        bn_fold: kernel attribute absorbing a following BatchNormalization (kernel layers), else None.
        tflm_plan: one of :data:`TFLM_PLANS` (the TFLM exporter's handler), None: not exported.
        tflm_ops: TFLite Micro operators the layer becomes, in the order they are emitted (for the
            activation layers: every op it can become, see :data:`TFLM_ACTIVATION_OPS`).
        tflm_note: the TFLM export's constraints and choices for the type (one line for the docs).
        methods: subset of :data:`METHOD_NAMES` that supports the type.
        note: one line for the docs (constraints, choices).
    """

    name: str
    role: str
    kernels: Tuple[str, ...] = ()
    lrp: Tuple[Tuple[str, str], ...] = ()
    lrp_first: Tuple[Tuple[str, str], ...] = ()
    lrp_allowed: Tuple[str, ...] = ()
    deeplift: str = ""
    deeplift_allowed: Tuple[str, ...] = ()
    innvestigate: bool = True
    bn_fold: Optional[str] = None
    tflm_plan: Optional[str] = None
    tflm_ops: Tuple[str, ...] = ()
    tflm_note: str = ""
    methods: Tuple[str, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"LayerSpec {self.name!r}: unknown role {self.role!r}; accepted: {', '.join(ROLES)}")
        unknown = sorted(set(self.methods) - set(METHOD_NAMES))
        if unknown:
            raise ValueError(f"LayerSpec {self.name!r}: unknown methods {unknown}; accepted: {', '.join(METHOD_NAMES)}")
        if self.role != "input":
            composites = [c for c, _ in self.lrp]
            if sorted(composites) != sorted(COMPOSITE_NAMES):
                raise ValueError(f"LayerSpec {self.name!r}: lrp must name a rule for every composite {COMPOSITE_NAMES}")
            for _, rule in self.lrp + self.lrp_first:
                if rule not in self.lrp_allowed:
                    raise ValueError(f"LayerSpec {self.name!r}: rule {rule!r} is not in lrp_allowed {self.lrp_allowed}")
            if self.deeplift not in self.deeplift_allowed:
                raise ValueError(f"LayerSpec {self.name!r}: DeepLIFT rule {self.deeplift!r} not in {self.deeplift_allowed}")
        if self.bn_fold is not None and self.bn_fold not in self.kernels:
            raise ValueError(f"LayerSpec {self.name!r}: bn_fold {self.bn_fold!r} is not one of its kernels")
        if self.tflm_plan is not None and self.tflm_plan not in TFLM_PLANS:
            raise ValueError(f"LayerSpec {self.name!r}: unknown tflm_plan {self.tflm_plan!r}; accepted: "
                             f"{', '.join(TFLM_PLANS)}")
        if self.tflm_plan is None and self.tflm_ops:
            raise ValueError(f"LayerSpec {self.name!r}: tflm_ops without a tflm_plan")
        if self.is_kernel and self.tflm_plan is not None and not set(self.tflm_ops) & set(TFLM_WEIGHT_OPS):
            raise ValueError(f"LayerSpec {self.name!r}: a kernel layer must become one of {TFLM_WEIGHT_OPS}")

    @property
    def is_kernel(self) -> bool:
        return self.role == "kernel"

    def lrp_rule(self, composite: str) -> str:
        """Rule name of this type in a registered composite."""
        return dict(self.lrp)[composite]


#: class name -> LayerSpec
LAYERS: Registry[LayerSpec] = Registry("layer type")


def _register(spec: LayerSpec) -> LayerSpec:
    return LAYERS.register(spec.name)(spec)


_ALL_METHODS = METHOD_NAMES
_GRAPH_METHODS = ("relevance_pruning", "weight_sharing", "mixed_precision", "deeplift")
_KERNEL_RULES = ("epsilon", "zplus", "flat", "z")


def _kernel(name: str, kernels: Tuple[str, ...], dense: bool, bn_fold: str, tflm: Tuple[str, ...],
            structured: bool, innvestigate: bool, note: str, tflm_note: str, tflm_plan: str = "kernel") -> LayerSpec:
    return LayerSpec(
        name=name, role="kernel", kernels=kernels,
        lrp=(("epsilon_plus_flat", "epsilon" if dense else "zplus"), ("epsilon", "epsilon")),
        lrp_first=(("epsilon_plus_flat", "flat"),), lrp_allowed=_KERNEL_RULES,
        deeplift="gradient", deeplift_allowed=("gradient",), innvestigate=innvestigate, bn_fold=bn_fold,
        tflm_plan=tflm_plan, tflm_ops=tflm, tflm_note=tflm_note,
        methods=_ALL_METHODS if structured else _GRAPH_METHODS, note=note,
    )


_CONV_TFLM = "padding 'same' or 'valid'; INT4 or INT8 weights, per output channel"
_register(LayerSpec("InputLayer", "input", innvestigate=True, tflm_plan="identity", methods=_ALL_METHODS,
                    note="the model input"))
_register(_kernel("Dense", ("kernel",), True, "kernel", ("FULLY_CONNECTED",), True, True,
                  "on rank-2 inputs (structured pruning); any rank otherwise",
                  "on a flat input (put a Flatten before it); INT4 weights per tensor, or INT8 per output channel "
                  "when a BatchNormalization is folded into a quantized kernel"))
_register(_kernel("Conv1D", ("kernel",), False, "kernel", ("RESHAPE", "CONV_2D"), True, True,
                  "padding 'valid' or 'same' (not 'causal'), groups=1",
                  "a CONV_2D of height 1 between two RESHAPEs; " + _CONV_TFLM))
_register(_kernel("Conv2D", ("kernel",), False, "kernel", ("CONV_2D",), True, True, "groups=1", _CONV_TFLM))
_register(_kernel("DepthwiseConv2D", ("depthwise_kernel",), False, "depthwise_kernel", ("DEPTHWISE_CONV_2D",),
                  True, True, "any depth_multiplier; structured pruning follows the kept input channels", _CONV_TFLM))
_register(_kernel("SeparableConv2D", ("depthwise_kernel", "pointwise_kernel"), False, "pointwise_kernel",
                  ("DEPTHWISE_CONV_2D", "CONV_2D"), False, False,
                  "two quantized kernels; LRP runs the rule on the depthwise and the pointwise half in turn "
                  "(iNNvestigate treats the pair as one layer, so it is not cross-checked)",
                  "the depthwise kernel, then the pointwise kernel as a 1x1 CONV_2D (bias and activation there); "
                  + _CONV_TFLM, tflm_plan="separable"))
_register(LayerSpec("Add", "merge", lrp=(("epsilon_plus_flat", "epsilon"), ("epsilon", "epsilon")),
                    lrp_allowed=("epsilon", "z"), deeplift="gradient", deeplift_allowed=("gradient",),
                    tflm_plan="add", tflm_ops=("ADD",), tflm_note="inputs of one shape (no broadcasting); n inputs "
                    "are n - 1 ADDs; a following relu/relu6 is fused", methods=_GRAPH_METHODS,
                    note="relevance split in proportion to each input, epsilon-stabilized (zennit's Norm rule)"))
_register(LayerSpec("Concatenate", "merge", lrp=(("epsilon_plus_flat", "gradient"), ("epsilon", "gradient")),
                    lrp_allowed=("gradient",), deeplift="gradient", deeplift_allowed=("gradient",),
                    tflm_plan="concatenate", tflm_ops=("CONCATENATION",),
                    tflm_note="the inputs share the output's scale (calibrated together), not a sigmoid/softmax output",
                    methods=_GRAPH_METHODS,
                    note="over the last axis; relevance sliced back to each input (each output has one contributor)"))

_GRADIENT = dict(lrp=(("epsilon_plus_flat", "gradient"), ("epsilon", "gradient")), lrp_allowed=("gradient",),
                 deeplift="gradient", deeplift_allowed=("gradient",))
for _name in ("ZeroPadding1D", "ZeroPadding2D"):
    _register(LayerSpec(_name, "padding", tflm_plan="pad", tflm_ops=("PAD",), methods=_ALL_METHODS, **_GRADIENT))
_register(LayerSpec("Reshape", "reshape", tflm_plan="reshape", tflm_ops=("RESHAPE",), methods=_GRAPH_METHODS,
                    **_GRADIENT))
_register(LayerSpec("Flatten", "reshape", tflm_plan="reshape", tflm_ops=("RESHAPE",), methods=_ALL_METHODS,
                    tflm_note="a RESHAPE that changes nothing is removed by the converter", **_GRADIENT))
_register(LayerSpec("Dropout", "dropout", tflm_plan="identity", tflm_ops=(), methods=_ALL_METHODS,
                    note="identity at inference", **_GRADIENT))
_register(LayerSpec("Activation", "activation", lrp=(("epsilon_plus_flat", "pass"), ("epsilon", "pass")),
                    lrp_allowed=("pass",), deeplift="rescale", deeplift_allowed=("rescale",),
                    tflm_plan="activation", tflm_ops=("RELU", "RELU6", "LOGISTIC", "TANH", "SOFTMAX"),
                    tflm_note="linear is nothing; relu/relu6 fuse into the op before them (" + ", ".join(TFLM_FUSE_INTO)
                    + ") when they are its only reader, else RELU/RELU6; sigmoid LOGISTIC, tanh TANH, softmax SOFTMAX "
                    "(int8 outputs of fixed scale: 1/256 for LOGISTIC/SOFTMAX, 1/128 for TANH)",
                    methods=_ALL_METHODS,
                    note=f"activations {', '.join(ACTIVATIONS)}; a final softmax is dropped for relevance"))
_register(LayerSpec("ReLU", "activation", lrp=(("epsilon_plus_flat", "gradient"), ("epsilon", "gradient")),
                    lrp_allowed=("gradient",), deeplift="rescale", deeplift_allowed=("rescale",),
                    tflm_plan="activation", tflm_ops=("RELU", "RELU6"),
                    tflm_note="fused into the op before it like an Activation('relu'/'relu6'), else RELU/RELU6",
                    methods=_ALL_METHODS, note="relu and relu6 (max_value=6)"))
_register(LayerSpec("Softmax", "activation", lrp=(("epsilon_plus_flat", "pass"), ("epsilon", "pass")),
                    lrp_allowed=("pass",), deeplift="rescale", deeplift_allowed=("rescale",),
                    tflm_plan="activation", tflm_ops=("SOFTMAX",),
                    tflm_note="over the last axis; dropped with --drop-softmax when it is the model output",
                    methods=_ALL_METHODS, note="only as the last layer (relevance starts at the logits)"))
_MAX = dict(lrp=(("epsilon_plus_flat", "gradient"), ("epsilon", "gradient")), lrp_allowed=("gradient",),
            deeplift="rescale_max", deeplift_allowed=("rescale_max", "gradient"))
_AVG = dict(lrp=(("epsilon_plus_flat", "z"), ("epsilon", "z")), lrp_allowed=("z", "epsilon"),
            deeplift="gradient", deeplift_allowed=("gradient",))
_POOL_1D = "a 2-D pool of height 1 between two RESHAPEs"
_GLOBAL_MAX = "a MAX_POOL_2D over the whole input (TFLM's REDUCE_MAX is not used)"
_register(LayerSpec("MaxPooling1D", "pooling", tflm_plan="pool", tflm_ops=("RESHAPE", "MAX_POOL_2D"),
                    tflm_note=_POOL_1D, methods=_ALL_METHODS, **_MAX))
_register(LayerSpec("MaxPooling2D", "pooling", tflm_plan="pool", tflm_ops=("MAX_POOL_2D",), methods=_ALL_METHODS,
                    **_MAX))
_register(LayerSpec("GlobalMaxPooling1D", "pooling", tflm_plan="pool", tflm_ops=("RESHAPE", "MAX_POOL_2D"),
                    tflm_note=_GLOBAL_MAX + ", between two RESHAPEs", methods=_ALL_METHODS, **_MAX))
_register(LayerSpec("GlobalMaxPooling2D", "pooling", tflm_plan="pool", tflm_ops=("MAX_POOL_2D", "RESHAPE"),
                    tflm_note=_GLOBAL_MAX + ", then a RESHAPE", methods=_ALL_METHODS, **_MAX))
_register(LayerSpec("AveragePooling1D", "pooling", tflm_plan="pool", tflm_ops=("RESHAPE", "AVERAGE_POOL_2D"),
                    tflm_note=_POOL_1D, methods=_ALL_METHODS, **_AVG))
_register(LayerSpec("AveragePooling2D", "pooling", tflm_plan="pool", tflm_ops=("AVERAGE_POOL_2D",),
                    methods=_ALL_METHODS, **_AVG))
_register(LayerSpec("GlobalAveragePooling1D", "pooling", tflm_plan="pool", tflm_ops=("MEAN",), methods=_ALL_METHODS,
                    **_AVG))
_register(LayerSpec("GlobalAveragePooling2D", "pooling", tflm_plan="pool", tflm_ops=("MEAN",), methods=_ALL_METHODS,
                    **_AVG))
_register(LayerSpec("BatchNormalization", "normalization", lrp=(("epsilon_plus_flat", "z"), ("epsilon", "z")),
                    lrp_allowed=("z", "pass"), deeplift="gradient", deeplift_allowed=("gradient",),
                    tflm_plan="batchnorm", tflm_ops=(),
                    tflm_note="no op of its own: folded into the Dense/Conv op before it (linear activation in "
                              "between); a BatchNormalization after any other layer is folded into the input side "
                              "of the float (not quantized) Dense, or Conv1D/Conv2D with padding 'valid', that is "
                              "its only reader, and refused otherwise",
                    methods=_ALL_METHODS,
                    note="folded into the kernel layer it directly follows (linear activation in between) by "
                         "fold_batchnorm / quantize(); elsewhere it stays float: z-rule, last axis only"))


# ---------------------------------------------------------------------------------------------
# lookups


def type_name(layer: Any) -> Optional[str]:
    """The ``tf.keras.layers`` class name that ``type(layer)`` is EXACTLY (subclasses: None)."""
    import tensorflow as tf

    name = type(layer).__name__
    cls = getattr(tf.keras.layers, name, None)
    return name if cls is not None and type(layer) is cls else None


def supported_names() -> List[str]:
    """Every supported layer type (sorted)."""
    return LAYERS.names()


def kernel_types() -> List[str]:
    """Layer types with quantized kernels (registry order)."""
    return [n for n in _ordered() if LAYERS.get(n).is_kernel]


def _ordered() -> List[str]:
    return list(LAYERS._items)  # registration order (the docs' order)


def get(layer: Any) -> LayerSpec:
    """The spec of a layer (instance) or of a class name.

    Raises:
        ValueError: the type is not supported (a subclass of a supported type is not either); the
            message names the layer and lists the supported types.
    """
    if isinstance(layer, str):
        name = layer
        if name not in LAYERS:
            raise ValueError(f"layer type {name!r} is not supported; supported: {', '.join(supported_names())}")
        return LAYERS.get(name)
    name = type_name(layer)
    if name is None or name not in LAYERS:
        raise ValueError(
            f"layer {getattr(layer, 'name', '?')!r} of type {type(layer).__name__} is not supported; "
            f"supported: {', '.join(supported_names())}"
        )
    return LAYERS.get(name)


def spec_of(layer: Any) -> Optional[LayerSpec]:
    """:func:`get` that returns None for an unsupported layer."""
    name = type_name(layer)
    return LAYERS.get(name) if name is not None and name in LAYERS else None


def kernel_key(layer_name: str, attr: str, n_kernels: int) -> str:
    """Key of one quantized kernel: the layer name when the layer has one kernel, else
    ``"<layer>/<attr>"`` (SeparableConv2D: ``"sep/depthwise_kernel"``, ``"sep/pointwise_kernel"``)."""
    return layer_name if n_kernels == 1 else f"{layer_name}/{attr}"


def kernel_keys(layer: Any) -> List[Tuple[str, str]]:
    """``[(key, attr), ...]`` of a supported layer's quantized kernels (empty for other layers)."""
    spec = spec_of(layer)
    if spec is None or not spec.kernels:
        return []
    return [(kernel_key(layer.name, a, len(spec.kernels)), a) for a in spec.kernels]


def model_kernels(model: Any) -> List[Tuple[str, Any, str]]:
    """``[(kernel key, layer, attr), ...]`` of every quantizable kernel of a plain Keras model, in
    layer order."""
    return [(key, layer, attr) for layer in model.layers for key, attr in kernel_keys(layer)]


def output_kernel_key(layer: Any) -> str:
    """Key of the kernel that produces the layer's output units (the last one)."""
    keys = kernel_keys(layer)
    if not keys:
        raise ValueError(f"layer {getattr(layer, 'name', '?')!r} has no quantizable kernel")
    return keys[-1][0]


def _activation_name(fn: Any) -> str:
    return getattr(fn, "__name__", str(fn))


def tflm_layers() -> Dict[str, LayerSpec]:
    """The layer types the TFLite Micro exporter accepts (those with a ``tflm_plan``), by name, in
    registry order."""
    return {n: LAYERS.get(n) for n in _ordered() if LAYERS.get(n).tflm_plan is not None}


def tflm_op_names() -> Tuple[str, ...]:
    """Every TFLite Micro operator a layer of the registry can become (sorted)."""
    ops = set(op for s in tflm_layers().values() for op in s.tflm_ops)
    ops.update(op for v in TFLM_ACTIVATION_OPS.values() for op in v)
    return tuple(sorted(ops))


def _relu_name(layer: Any) -> str:
    mv = layer.get_config().get("max_value")
    return "relu" if mv is None else "relu6"


def tflm_ops_of(layer: Any) -> Tuple[str, ...]:
    """The TFLite Micro operators one layer (instance) becomes on its own, in the order emitted:
    the type's ``tflm_ops``, with an activation layer's op chosen by its function and a kernel
    layer's non-fusable ``activation=`` (sigmoid, tanh, softmax) appended. Not counted: a relu/relu6
    fused into the op before it (:data:`TFLM_FUSE_INTO`), BatchNorm folding, and RESHAPEs the
    converter removes because they change nothing.

    Raises:
        ValueError: the layer type is not exported to TFLM (see :func:`get`).
    """
    spec = get(layer)
    if spec.tflm_plan is None:
        raise ValueError(f"layer {getattr(layer, 'name', '?')!r} of type {spec.name} is not exported to TFLite Micro")
    if spec.name == "ReLU":
        return TFLM_ACTIVATION_OPS[_relu_name(layer)]
    if spec.name == "Activation":
        return TFLM_ACTIVATION_OPS[_activation_name(layer.activation)]
    ops = tuple(spec.tflm_ops)
    act = getattr(layer, "activation", None)
    if spec.is_kernel and act is not None and _activation_name(act) not in ("linear", "relu", "relu6"):
        ops += TFLM_ACTIVATION_OPS[_activation_name(act)]
    return ops


def layer_problems(layer: Any) -> Optional[str]:
    """Why a layer cannot be handled (None when it can): unsupported type, activation, data format,
    padding or normalization axis. One short reason, used by ``quantize()``'s complete refusal."""
    spec = spec_of(layer)
    if spec is None:
        return "unsupported layer type"
    cfg = layer.get_config()
    if cfg.get("data_format", "channels_last") not in (None, "channels_last"):
        return f"data_format={cfg['data_format']!r} (only 'channels_last')"
    act = getattr(layer, "activation", None)
    if act is not None and (spec.is_kernel or spec.name == "Activation"):
        accepted = FUSED_ACTIVATIONS if spec.is_kernel else ACTIVATIONS
        if _activation_name(act) not in accepted:
            where = "fused activation" if spec.is_kernel else "activation"
            return f"{where} {_activation_name(act)!r} (accepted: {', '.join(accepted)})"
    if spec.name == "ReLU":
        mv = cfg.get("max_value")
        if cfg.get("negative_slope", 0.0) not in (0, 0.0) or cfg.get("threshold", 0.0) not in (0, 0.0) or (
            mv is not None and float(mv) != 6.0
        ):
            return "ReLU with negative_slope/threshold or max_value other than None/6 (accepted: relu, relu6)"
    if spec.name in ("Conv1D", "Conv2D") and int(cfg.get("groups", 1)) != 1:
        return f"groups={cfg.get('groups')} (only 1)"
    if spec.name == "Conv1D" and cfg.get("padding") == "causal":
        return "padding='causal' (accepted: 'valid', 'same')"
    if spec.name == "BatchNormalization":
        axis = cfg.get("axis")
        axes = [axis] if isinstance(axis, int) else list(axis)
        rank = len(layer.input_shape) if hasattr(layer, "input_shape") else None
        if len(axes) != 1 or (axes[0] != -1 and (rank is None or axes[0] != rank - 1)):
            return f"normalization over axis {axis} (only the last axis)"
    if spec.name in ("Concatenate",):
        rank = len(layer.output_shape) if hasattr(layer, "output_shape") else None
        ax = int(cfg.get("axis", -1))
        if rank is not None and ax not in (-1, rank - 1):
            return f"concatenation over axis {ax} (only the last axis)"
    return None


# ---------------------------------------------------------------------------------------------
# the docs table


_METHOD_SHORT = {
    "relevance_pruning": "prune",
    "structured_pruning": "struct",
    "weight_sharing": "share",
    "mixed_precision": "mixed",
    "deeplift": "DeepLIFT",
}


def _tflm_cell(s: LayerSpec) -> str:
    if s.tflm_plan is None:
        return "not exported"
    if s.role == "activation":
        return " or ".join(s.tflm_ops) + (" (or fused)" if set(s.tflm_ops) & {"RELU", "RELU6"} else "")
    if s.name == "BatchNormalization":
        return "(folded)"
    return ", ".join(s.tflm_ops) or "(none)"


def markdown() -> str:
    """The supported-layers page (``docs/layers.md``), generated from :data:`LAYERS`."""
    lines = [
        "# Supported layers",
        "",
        "<!-- generated by `python -m ecqx_tf.layers --markdown > docs/layers.md`; do not edit by hand:",
        "     tests/test_layers.py checks that this file equals the generated text -->",
        "",
        "Every table of the package (what `ecqx_tf.quantize` accepts and quantizes, the LRP and DeepLIFT",
        "rules, BatchNorm folding, the TFLite Micro operators, which compression methods run) derives from",
        "one registry, `ecqx_tf.layers.LAYERS`. A model may combine these layers in any single-input,",
        "single-output functional graph (branches and merges included) or a Sequential; `quantize()`",
        "refuses any other layer before any work, listing every unsupported layer with its name and type.",
        "Layer types are matched exactly (a subclass of a supported class is not supported).",
        "",
        "| layer | quantized kernels | LRP `epsilon_plus_flat` | LRP `epsilon` | first layer | DeepLIFT | "
        "BatchNorm | TFLM ops | iNNvestigate | methods |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in _ordered():
        s = LAYERS.get(name)
        if s.role == "input":
            continue
        lrp = dict(s.lrp)
        first = ", ".join(f"{r} ({c})" for c, r in s.lrp_first) or "-"
        bn = f"folds into `{s.bn_fold}`" if s.bn_fold else ("folded or standalone" if name == "BatchNormalization" else "-")
        methods = ", ".join(_METHOD_SHORT[m] for m in METHOD_NAMES if m in s.methods) or "-"
        lines.append(
            f"| `{name}` | {', '.join(f'`{k}`' for k in s.kernels) or '-'} | {lrp['epsilon_plus_flat']} | "
            f"{lrp['epsilon']} | {first} | {s.deeplift} | {bn} | {_tflm_cell(s)} | "
            f"{'yes' if s.innvestigate else 'no'} | {methods} |"
        )
    lines += [
        "",
        "Methods: prune = relevance pruning (unstructured), struct = structured pruning (units/filters",
        "removed; single-chain models only, it refuses Add and Concatenate), share = weight sharing,",
        "mixed = mixed precision, DeepLIFT = the DeepLIFT criterion. Rules: see `docs/relevance.md`",
        "(`gradient` routes relevance by the layer's vector-Jacobian product, `pass` hands it through",
        "unchanged, `z`/`epsilon` split it in proportion to each input's contribution).",
        "`Activation` layers accept " + ", ".join(f"`{a}`" for a in ACTIVATIONS) + "; activations fused into",
        "kernel layers accept " + ", ".join(f"`{a}`" for a in FUSED_ACTIVATIONS)
        + " (tfmot cannot fake-quantize a fused relu6: use a `ReLU(6.0)` layer).",
        "",
        "Constraints:",
        "",
    ]
    for name in _ordered():
        s = LAYERS.get(name)
        if s.note and s.role != "input":
            lines.append(f"* `{name}`: {s.note}.")
    lines += [
        "",
        "TFLite Micro export (`ecqx-export --target tflm`, `firmware_export.tflm.convert`): the exporter",
        "accepts exactly the layer types above and takes each one's operators from this registry; a",
        "relu/relu6 (fused or a layer) is fused into the " + ", ".join(TFLM_FUSE_INTO) + " before it when it is",
        "the only reader of that op's output. Per type:",
        "",
    ]
    for name in _ordered():
        s = LAYERS.get(name)
        if s.tflm_note and s.role != "input":
            lines.append(f"* `{name}`: {s.tflm_note}.")
    lines.append("")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecqx_tf.layers", description="The layer registry.")
    parser.add_argument("--markdown", action="store_true", help="print docs/layers.md")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
    else:
        sys.stdout.write("\n".join(supported_names()) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
