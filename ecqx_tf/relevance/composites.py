"""Composites: which LRP rule each Keras layer type gets (zennit's ``LayerMapComposite`` with a
first-layer override, as data).

A composite maps exact ``tf.keras.layers`` class names to :mod:`~ecqx_tf.relevance.rules` objects
and may override the rule of the *first* kernel layer (a kernel layer fed by the model input
directly or through Flatten/Reshape/Permute only; the same test as iNNvestigate's
``checks.is_input_layer``). Everything here is read from the layer registry
(:mod:`ecqx_tf.layers`): :data:`ALLOWED_RULES` (which rules both backends run for each layer type;
it drives validation and the error messages) and the registered composites (:data:`COMPOSITES`):

* ``epsilon_plus_flat`` (the ECQx authors' composite): Epsilon(1e-6) for Dense, ZPlus for every
  convolution (Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D), Flat for the first layer.
* ``epsilon``: Epsilon(1e-6) for every kernel layer, no first-layer override.

Both treat the layers without a kernel alike (see ``docs/layers.md``): Add with the epsilon rule
(relevance split in proportion to each input, zennit's ``Norm``), average pooling and a standalone
BatchNormalization with the z-rule (iNNvestigate's rules), ``Activation`` layers passed through,
everything else (ReLU layer, max pooling, Concatenate, padding, Flatten, Reshape, Dropout) routed by
its gradient.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple, Type, Union

from ecqx_tf import layers as _layers
from ecqx_tf import names
from ecqx_tf.registry import Registry
from ecqx_tf.relevance.rules import (
    DEFAULT_EPSILON,
    RULES,
    Epsilon,
    Rule,
    rule_from_config,
)

__all__ = [
    "Composite",
    "COMPOSITES",
    "get_composite",
    "check_layer_rules",
    "check_rule",
    "KERNEL_LAYER_TYPES",
    "ALLOWED_RULES",
    "INNVESTIGATE_LAYER_RULES",
    "FIRST_LAYER_TRANSPARENT_TYPES",
    "SUPPORTED_LAYER_TYPES",
]

#: Layer types whose kernel(s) are quantized and whose weight relevance is computed.
KERNEL_LAYER_TYPES: Tuple[str, ...] = tuple(_layers.kernel_types())

_KERNEL_RULES: Tuple[Type[Rule], ...] = tuple(RULES.get(r) for r in _layers.get("Dense").lrp_allowed)

#: Layer type -> rules that BOTH backends implement for it (the native backend and iNNvestigate).
ALLOWED_RULES: Dict[str, Tuple[Type[Rule], ...]] = {
    name: tuple(RULES.get(r) for r in _layers.get(name).lrp_allowed)
    for name in _layers.LAYERS.in_order()
    if _layers.get(name).role != "input"
}

#: Every layer type the relevance engine accepts (``InputLayer`` needs no rule; a ``Softmax``
#: layer or softmax ``Activation`` only as the last layer, where it is removed).
SUPPORTED_LAYER_TYPES: Tuple[str, ...] = tuple(ALLOWED_RULES) + ("InputLayer",)

#: Layers that do not stop a kernel layer from being the "first" layer (iNNvestigate's list).
FIRST_LAYER_TRANSPARENT_TYPES: Tuple[str, ...] = ("Flatten", "Reshape", "Permute")


def _rule(name: str) -> Rule:
    return Epsilon(DEFAULT_EPSILON) if name == "epsilon" else RULES.get(name)()


def _registry_rules(composite: str) -> Tuple[Tuple[str, Rule], ...]:
    return tuple((name, _rule(_layers.get(name).lrp_rule(composite))) for name in ALLOWED_RULES)


#: The rules of the layers without a kernel in the default composite (from the registry).
INNVESTIGATE_LAYER_RULES: Tuple[Tuple[str, Rule], ...] = tuple(
    (t, r) for t, r in _registry_rules("epsilon_plus_flat") if t not in KERNEL_LAYER_TYPES
)


@dataclasses.dataclass(frozen=True)
class Composite:
    """A layer-type -> rule map with an optional first-layer override.

    Args:
        name: identifier (the registry alias for registered composites).
        layer_rules: mapping (or pairs) of exact ``tf.keras.layers`` class name -> :class:`Rule`;
            every type in :data:`ALLOWED_RULES` must be covered.
        first_layer: rule for the first kernel layer(s), or None for no override.

    Raises:
        TypeError: a rule is not a :class:`Rule`.
        ValueError: unknown layer type, a type missing, or a rule a backend cannot run for that
            type (the message lists the accepted rules).
    """

    name: str
    layer_rules: Tuple[Tuple[str, Rule], ...]
    first_layer: Optional[Rule] = None

    def __post_init__(self) -> None:
        pairs = check_layer_rules("Composite", self.name, self.layer_rules, ALLOWED_RULES)
        if self.first_layer is not None:
            check_rule(f"Composite {self.name!r}", "first layer", self.first_layer, _KERNEL_RULES)
        object.__setattr__(self, "layer_rules", pairs)

    def rule(self, layer_type: str, first: bool = False) -> Rule:
        """Rule for a layer of exact Keras class name ``layer_type`` (``first``: it is a first
        kernel layer).

        Raises:
            ValueError: ``layer_type`` is not supported (lists the supported types).
        """
        if first and self.first_layer is not None and layer_type in KERNEL_LAYER_TYPES:
            return self.first_layer
        for t, r in self.layer_rules:
            if t == layer_type:
                return r
        raise ValueError(
            f"layer type {layer_type!r} is not supported by LRP composite {self.name!r}; "
            f"supported: {', '.join(SUPPORTED_LAYER_TYPES)}"
        )

    def get_config(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "layer_rules": [[t, r.get_config()] for t, r in self.layer_rules],
            "first_layer": None if self.first_layer is None else self.first_layer.get_config(),
        }

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Composite":
        first = config.get("first_layer")
        return cls(
            name=config["name"],
            layer_rules=tuple((t, rule_from_config(r)) for t, r in config["layer_rules"]),
            first_layer=None if first is None else rule_from_config(first),
        )


def check_rule(owner: str, where: str, rule: Any, allowed: Tuple[Type[Rule], ...]) -> None:
    """``rule`` is a :class:`Rule` of one of the ``allowed`` types for ``where`` (a layer type).

    Raises:
        TypeError: not a :class:`Rule`; ValueError: not allowed there (lists the accepted rules).
        Both name ``owner`` (e.g. ``"Composite 'epsilon'"``).
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"{owner}: rule for {where} must be a Rule, got {type(rule).__name__}")
    if type(rule) not in allowed:
        raise ValueError(
            f"{owner}: rule {rule.name!r} is not available for {where}; "
            f"accepted: {', '.join(a.name for a in allowed)}"
        )


def check_layer_rules(kind: str, name: Any, layer_rules: Any,
                      allowed: Mapping[str, Tuple[Type[Rule], ...]]) -> Tuple[Tuple[str, Rule], ...]:
    """The ``(layer type, rule)`` pairs of a composite (``layer_rules``: a mapping or pairs),
    checked: ``name`` is a non-empty str, every layer type is a key of ``allowed``, given once,
    with a rule of its allowed types, and every key of ``allowed`` is covered. ``kind`` names the
    class in the messages (``"Composite"``, ``"DeepLiftComposite"``).

    Raises:
        TypeError: ``name`` is not a non-empty str, or a rule is not a :class:`Rule`.
        ValueError: unknown, repeated or missing layer type, or a rule not allowed for its type.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"{kind}: name must be a non-empty str, got {name!r}")
    owner = f"{kind} {name!r}"
    items = layer_rules.items() if isinstance(layer_rules, Mapping) else layer_rules
    pairs = tuple((str(k), v) for k, v in items)
    seen = set()
    for layer_type, rule in pairs:
        if layer_type not in allowed:
            raise ValueError(f"{owner}: unknown layer type {layer_type!r}; accepted: {', '.join(allowed)}")
        if layer_type in seen:
            raise ValueError(f"{owner}: layer type {layer_type!r} given twice")
        seen.add(layer_type)
        check_rule(owner, layer_type, rule, allowed[layer_type])
    missing = [t for t in allowed if t not in seen]
    if missing:
        raise ValueError(f"{owner}: no rule for layer types {missing}")
    return pairs


#: name -> Composite
COMPOSITES: Registry[Composite] = Registry("LRP composite", known=names.LRP_COMPOSITES, known_in="ecqx_tf/names.py")


def _register(composite: Composite) -> Composite:
    return COMPOSITES.register(composite.name)(composite)


def _first_rule(composite: str) -> Optional[Rule]:
    firsts = {dict(_layers.get(t).lrp_first).get(composite) for t in KERNEL_LAYER_TYPES}
    assert len(firsts) == 1, f"composite {composite!r}: kernel layers disagree on the first-layer rule"
    name = firsts.pop()
    return None if name is None else _rule(name)


for _name in _layers.COMPOSITE_NAMES:
    _register(Composite(name=_name, layer_rules=_registry_rules(_name), first_layer=_first_rule(_name)))


def get_composite(composite: Union[str, Composite]) -> Composite:
    """A registered composite by name, or ``composite`` itself if it already is one.

    Raises:
        TypeError: neither a str nor a :class:`Composite`.
        ValueError: unknown name (lists the registered ones).
    """
    return COMPOSITES.resolve(composite, Composite)

