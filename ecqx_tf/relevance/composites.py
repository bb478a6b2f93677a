"""Composites: which LRP rule each Keras layer type gets (zennit's ``LayerMapComposite`` with a
first-layer override, as data).

A composite maps exact ``tf.keras.layers`` class names to :mod:`~ecqx_tf.relevance.rules` objects
and may override the rule of the *first* kernel layer (a Dense/Conv2D layer fed by the model input
directly or through Flatten/Reshape/Permute only; the same test as iNNvestigate's
``checks.is_input_layer``). :data:`ALLOWED_RULES` is the single table that says which rules each
backend can run for each layer type; it drives validation and the error messages.

Registered composites (:data:`COMPOSITES`):

* ``epsilon_plus_flat`` (the ECQx authors' composite): Epsilon(1e-6) for Dense, ZPlus for Conv2D,
  Flat for the first layer.
* ``epsilon``: Epsilon(1e-6) for Dense and Conv2D, no first-layer override.

Both treat the layers without a kernel as iNNvestigate 2.1.2's ``LRP`` analyzer does
(:data:`INNVESTIGATE_LAYER_RULES`): BatchNormalization and average pooling with the z-rule,
``Activation`` layers passed through, everything else (ReLU layer, max pooling, Flatten,
Reshape, Dropout) routed by its gradient.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple, Type, Union

from ecqx_tf import names
from ecqx_tf.registry import Registry
from ecqx_tf.relevance.rules import (
    DEFAULT_EPSILON,
    Epsilon,
    Flat,
    Gradient,
    Pass,
    Rule,
    Z,
    ZPlus,
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

#: Layer types whose kernel is quantized and whose weight relevance is computed.
KERNEL_LAYER_TYPES: Tuple[str, ...] = ("Dense", "Conv2D")

_KERNEL_RULES: Tuple[Type[Rule], ...] = (Epsilon, ZPlus, Flat, Z)

#: Layer type -> rules that BOTH backends implement for it (the native backend and iNNvestigate).
ALLOWED_RULES: Dict[str, Tuple[Type[Rule], ...]] = {
    "Dense": _KERNEL_RULES,
    "Conv2D": _KERNEL_RULES,
    "BatchNormalization": (Z, Pass),
    "AveragePooling2D": (Z,),
    "GlobalAveragePooling2D": (Z,),
    "Activation": (Pass,),
    "ReLU": (Gradient,),
    "MaxPooling2D": (Gradient,),
    "GlobalMaxPooling2D": (Gradient,),
    "Flatten": (Gradient,),
    "Reshape": (Gradient,),
    "Dropout": (Gradient,),
}

#: Every layer type the relevance engine accepts (``InputLayer`` needs no rule; a final
#: ``Softmax`` layer or softmax ``Activation`` is removed: relevance starts at the logits).
SUPPORTED_LAYER_TYPES: Tuple[str, ...] = tuple(ALLOWED_RULES) + ("InputLayer",)

#: Layers that do not stop a kernel layer from being the "first" layer (iNNvestigate's list).
FIRST_LAYER_TRANSPARENT_TYPES: Tuple[str, ...] = ("Flatten", "Reshape", "Permute")

#: How iNNvestigate 2.1.2's ``LRP`` treats layers without a kernel (``bn_layer_rule=None``).
INNVESTIGATE_LAYER_RULES: Tuple[Tuple[str, Rule], ...] = (
    ("BatchNormalization", Z()),
    ("AveragePooling2D", Z()),
    ("GlobalAveragePooling2D", Z()),
    ("Activation", Pass()),
    ("ReLU", Gradient()),
    ("MaxPooling2D", Gradient()),
    ("GlobalMaxPooling2D", Gradient()),
    ("Flatten", Gradient()),
    ("Reshape", Gradient()),
    ("Dropout", Gradient()),
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


_register(
    Composite(
        name="epsilon_plus_flat",
        layer_rules=(("Dense", Epsilon(DEFAULT_EPSILON)), ("Conv2D", ZPlus())) + INNVESTIGATE_LAYER_RULES,
        first_layer=Flat(),
    )
)
_register(
    Composite(
        name="epsilon",
        layer_rules=(("Dense", Epsilon(DEFAULT_EPSILON)), ("Conv2D", Epsilon(DEFAULT_EPSILON)))
        + INNVESTIGATE_LAYER_RULES,
        first_layer=None,
    )
)


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

