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
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Composite: name must be a non-empty str, got {self.name!r}")
        items = self.layer_rules.items() if isinstance(self.layer_rules, Mapping) else self.layer_rules
        pairs = tuple((str(k), v) for k, v in items)
        seen = set()
        for layer_type, rule in pairs:
            if layer_type not in ALLOWED_RULES:
                raise ValueError(
                    f"Composite {self.name!r}: unknown layer type {layer_type!r}; "
                    f"accepted: {', '.join(ALLOWED_RULES)}"
                )
            if layer_type in seen:
                raise ValueError(f"Composite {self.name!r}: layer type {layer_type!r} given twice")
            seen.add(layer_type)
            _check_rule(self.name, layer_type, rule)
        missing = [t for t in ALLOWED_RULES if t not in seen]
        if missing:
            raise ValueError(f"Composite {self.name!r}: no rule for layer types {missing}")
        if self.first_layer is not None:
            _check_rule(self.name, "first layer", self.first_layer, _KERNEL_RULES)
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


def _check_rule(
    composite: str, where: str, rule: Any, allowed: Optional[Tuple[Type[Rule], ...]] = None
) -> None:
    if not isinstance(rule, Rule):
        raise TypeError(
            f"Composite {composite!r}: rule for {where} must be a Rule, got {type(rule).__name__}"
        )
    allowed = ALLOWED_RULES[where] if allowed is None else allowed
    if type(rule) not in allowed:
        raise ValueError(
            f"Composite {composite!r}: rule {rule.name!r} is not available for {where}; "
            f"accepted: {', '.join(a.name for a in allowed)}"
        )


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
    if isinstance(composite, Composite):
        return composite
    if isinstance(composite, str):
        return COMPOSITES.get(composite)
    raise TypeError(
        f"composite must be a str or Composite, got {type(composite).__name__}; "
        f"registered: {', '.join(COMPOSITES.names())}"
    )

