r"""LRP rules as data: one small, serializable object per rule (zennit's design).

A rule describes how ONE layer hands the relevance at its output, :math:`R_j`, down to its input,
:math:`R_i`. The rules hold no TensorFlow state; the native backend (``native.py``) implements each
rule as a pure TF function, the iNNvestigate backend (``innvestigate_backend.py``) maps each rule to
the iNNvestigate 2.1.2 rule that computes the same numbers, and the tests replicate each rule in a
few slow NumPy lines. Notation for a layer :math:`z_j = \sum_i a_i w_{ij} + b_j`:

* :class:`Epsilon` (Bach et al. 2015, eq. 58; Montavon et al. 2019, sec. 10.2.2)
  :math:`R_i = \sum_j a_i w_{ij} R_j / \mathrm{stab}_\epsilon(z_j)` with
  :math:`\mathrm{stab}_\epsilon(z) = z + \epsilon\,(\mathrm{sign}(z) + [z = 0])`, i.e. the sign of
  zero is taken as positive. iNNvestigate's ``EpsilonRule`` uses exactly this stabilizer
  (``z + eps * (2 [z >= 0] - 1)``) with default ``eps = 1e-7``; we default to ``1e-6`` (the value of
  the ECQx spec and zennit) and pass it to iNNvestigate explicitly, so both backends agree.
* :class:`ZPlus` (Montavon et al. 2017 DTD; Montavon et al. 2019, sec. 10.2.3, "LRP-alpha1-beta0"):
  :math:`R_i = \sum_j (a_i^+ w_{ij}^+ + a_i^- w_{ij}^-) R_j / z_j^{\pm}` with
  :math:`z_j^{\pm} = \sum_i a_i^+ w_{ij}^+ + a_i^- w_{ij}^-` and the bias ignored. This is
  iNNvestigate's ``ZPlusRule`` (= ``Alpha1Beta0IgnoreBiasRule``). Every term of the denominator is
  non-negative, so it is zero only when all numerators are zero; the division by zero is guarded by
  iNNvestigate's ``safe_divide`` (zeros replaced by ``K.epsilon() = 1e-7``), which therefore never
  changes a result. For ReLU inputs (:math:`a \ge 0`) it is the textbook z+ rule.
* :class:`Flat` (Lapuschkin et al. 2019): :math:`R_i = \sum_j R_j / \sum_{i'} 1`, the sum running
  over the inputs connected to :math:`j` (for a padded convolution: only the in-bounds ones).
  Used for the first layer. iNNvestigate's ``FlatRule``.
* :class:`Z` (Bach et al. 2015, eq. 56): :math:`R_i = \sum_j a_i w_{ij} R_j / z_j` (bias included,
  ``safe_divide``). iNNvestigate applies it, fixed, to BatchNormalization (seen as the elementwise
  affine layer :math:`y = x \gamma/\sigma + (\beta - \mu\gamma/\sigma)`, computed as
  :math:`R_x = x (y - \beta) R_y / \mathrm{stab}_{10^{-7}}((x - \mu) y)`) and to average pooling.
  For BatchNormalization followed by the weight-relevance formula this equals folding BN into the
  preceding kernel (the authors' zennit canonizer); see ``docs/relevance.md``.
* :class:`Pass`: :math:`R_i = R_j` elementwise (iNNvestigate: ``Activation`` layers).
* :class:`Gradient`: :math:`R_i = (\partial y / \partial x)^T R_j`: the relevance is routed by the
  layer's gradient, which is a pure re-indexing for Flatten/Reshape/Dropout (inference), the
  winner-take-all rule for max pooling and a mask for a ``ReLU`` layer. iNNvestigate's default
  reverse mapping for every layer without a kernel and without a dedicated rule.

Every rule has ``get_config``/``from_config`` and a string alias in :data:`RULES`; equality is derived
from the config.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Dict, Type

from ecqx_tf.registry import Registry

__all__ = [
    "Rule",
    "Epsilon",
    "ZPlus",
    "Flat",
    "Z",
    "Pass",
    "Gradient",
    "RULES",
    "rule_from_config",
    "DEFAULT_EPSILON",
    "SAFE_DIVIDE_EPSILON",
]

#: Stabilizer of the epsilon rule and of the weight-relevance formula (ECQx; zennit's default).
DEFAULT_EPSILON = 1e-6
#: ``tf.keras.backend.epsilon()``: what iNNvestigate's ``safe_divide`` and its BatchNormalization
#: rule add to a denominator (fixed inside iNNvestigate, mirrored by the native backend).
SAFE_DIVIDE_EPSILON = 1e-7

#: name -> Rule subclass
RULES: Registry[Type["Rule"]] = Registry("LRP rule")


@dataclasses.dataclass(frozen=True)
class Rule:
    """Base class: one layer's relevance step, as data. Subclasses set ``name``."""

    name: ClassVar[str] = ""

    def get_config(self) -> Dict[str, Any]:
        """All constructor arguments plus ``"name"`` (the registry alias)."""
        cfg: Dict[str, Any] = {"name": self.name}
        cfg.update(dataclasses.asdict(self))
        return cfg

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Rule":
        cfg = dict(config)
        cfg.pop("name", None)
        return cls(**cfg)


def rule_from_config(config: Dict[str, Any]) -> Rule:
    """Rebuild any registered rule from :meth:`Rule.get_config`.

    Raises:
        TypeError: ``config`` is not a dict.
        ValueError: unknown rule name (the message lists the registered ones).
    """
    if not isinstance(config, dict):
        raise TypeError(f"rule config must be a dict, got {type(config).__name__}")
    return RULES.get(config.get("name")).from_config(config)


@RULES.register("epsilon")
@dataclasses.dataclass(frozen=True)
class Epsilon(Rule):
    r"""LRP-epsilon: :math:`R_i = \sum_j a_i w_{ij} R_j / (z_j + \epsilon(\mathrm{sign}(z_j) + [z_j=0]))`.

    Args:
        epsilon: stabilizer, > 0 (default 1e-6; iNNvestigate's own default is 1e-7).

    Raises:
        TypeError / ValueError: ``epsilon`` is not a positive finite number.
    """

    epsilon: float = DEFAULT_EPSILON
    name: ClassVar[str] = "epsilon"

    def __post_init__(self) -> None:
        if isinstance(self.epsilon, bool) or not isinstance(self.epsilon, (int, float)):
            raise TypeError(f"Epsilon: epsilon must be a float, got {self.epsilon!r}")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"Epsilon: epsilon must be finite and > 0, got {self.epsilon!r}")
        object.__setattr__(self, "epsilon", float(self.epsilon))


@RULES.register("zplus")
@dataclasses.dataclass(frozen=True)
class ZPlus(Rule):
    r"""LRP-z+ / alpha1-beta0, bias ignored:
    :math:`R_i = \sum_j (a_i^+ w_{ij}^+ + a_i^- w_{ij}^-) R_j / \sum_{i'} (a_{i'}^+ w_{i'j}^+ + a_{i'}^- w_{i'j}^-)`.
    """

    name: ClassVar[str] = "zplus"


@RULES.register("flat")
@dataclasses.dataclass(frozen=True)
class Flat(Rule):
    r"""LRP-flat: :math:`R_i = \sum_j R_j / \sum_{i' \to j} 1` (weights and inputs set to one, no bias)."""

    name: ClassVar[str] = "flat"


@RULES.register("z")
@dataclasses.dataclass(frozen=True)
class Z(Rule):
    r"""LRP-z (bias included): :math:`R_i = \sum_j a_i w_{ij} R_j / z_j`; iNNvestigate's fixed rule for
    BatchNormalization and average pooling."""

    name: ClassVar[str] = "z"


@RULES.register("pass")
@dataclasses.dataclass(frozen=True)
class Pass(Rule):
    """Identity: the relevance at the output is the relevance at the input (elementwise layers)."""

    name: ClassVar[str] = "pass"


@RULES.register("gradient")
@dataclasses.dataclass(frozen=True)
class Gradient(Rule):
    r"""Route relevance by the layer's vector-Jacobian product :math:`(\partial y/\partial x)^T R`."""

    name: ClassVar[str] = "gradient"
