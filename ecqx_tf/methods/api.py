"""The compression methods as one small serializable class each, registered by name
(:data:`METHODS`), with one signature:

    method = METHODS.get("relevance_pruning")(sparsity=0.7, criterion="deeplift")
    result = method.apply(float_model, x_train, y_train, x_test, y_test)
    result.model      # plain Keras model to export (smaller / zeros / centroid kernels)
    result.quant      # layer -> QuantizedKernel (the exact integers), {} for a float model
    result.report     # accuracy, weights, sparsity, packed bytes, per-layer rows, config
    ExportRequest(result.model, result.quant, ...) -> firmware_export TARGETS["tflm"/"fantastic4"]

Every method's parameters are dataclass fields with a help text and their accepted values (choices
read from the registries), validated at construction (``ValueError``/``TypeError`` naming the
parameter, the value and what is accepted); ``get_config``/``from_config`` round-trip exactly and
equality derives from the config. ``ecqx-compress`` (``cli.compress``) builds its
sub-commands and options from these fields.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Optional, Tuple, Type

import numpy as np

from .. import names
from ..config import ECQ_DEFAULTS, GRADIENTS, LAMBDA_REDUCE, LR_SCHEDULES
from ..fields import field_choices, param, validate_fields
from ..quantized import QuantizedKernel
from ..registry import Registry
from ..stats import value_entropy

if TYPE_CHECKING:  # TensorFlow is imported where it is used, so that the command line's parser stays light
    import tensorflow as tf

__all__ = [
    "METHODS",
    "CompressionMethod",
    "CompressionResult",
    "TrainingMethod",
    "RelevanceMethod",
    "get_method",
    "method_from_config",
    "param",
    "field_choices",
    "ECQ",
    "ECQx",
    "RelevancePruning",
    "MagnitudePruning",
    "WeightSharing",
    "MixedPrecision",
]

log = logging.getLogger(__name__)

#: name -> CompressionMethod subclass
METHODS: Registry[Type["CompressionMethod"]] = Registry("compression method")

def _criteria() -> List[str]:
    return list(names.CRITERIA)  # the light table of criteria.CRITERIA (no TensorFlow import)


def _relevance_criteria() -> List[str]:
    return [c for c in _criteria() if c != "magnitude"]


def _composites() -> List[str]:
    return list(names.LRP_COMPOSITES)


def _references() -> List[str]:
    return list(names.DEEPLIFT_REFERENCES)


def _grids() -> List[str]:
    from ..grid import GRID_KINDS

    return list(GRID_KINDS)


def _costs() -> List[str]:
    return list(names.WEIGHT_COSTS)


@dataclasses.dataclass(eq=False)
class CompressionResult:
    """What :meth:`CompressionMethod.apply` returns.

    Attributes:
        method: the method's config (``get_config()``).
        model: plain Keras model for the exporters (stripped: kernels = centroid values when
            quantized; pruned float model otherwise).
        quant: layer name -> ``QuantizedKernel`` (empty: float weights, exported as int8 PTQ).
        qmodel: the model in quantization-aware training, when there is one (save with
            ``ecqx_tf.save_model``).
        report: measured figures (see :func:`summarize`).
    """

    method: Dict[str, Any]
    model: tf.keras.Model
    quant: Dict[str, QuantizedKernel]
    qmodel: Optional[tf.keras.Model]
    report: Dict[str, Any]


def _index_bits(q: QuantizedKernel) -> int:
    return max(1, int(math.ceil(math.log2(max(2, len(np.unique(np.asarray(q.levels))))))))


def summarize(model: tf.keras.Model, quant: Dict[str, QuantizedKernel], original_weights: int,
              x_test: np.ndarray, y_test: np.ndarray, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Figures of a compressed model: accuracy (plain model, float activations), kernel weights
    kept / original, sparsity (zero or removed kernel weights over the original count), packed
    weight bytes (quantized: ``ceil(n * ceil(log2 #levels) / 8)`` per layer; float: 4 bytes per
    weight), zeroth-order entropy of the stored integers, per-layer rows."""

    from .. import layers as _layers
    from ..keras.finetune import evaluate_logits
    from .pruning import kernel_sparsity, kernel_weight_count

    rows, packed, ints = [], 0, []
    for key, layer, attr in _layers.model_kernels(model):
        k = getattr(layer, attr).numpy()
        row = {"layer": key, "shape": list(k.shape), "weights": int(k.size),
               "zeros": float(np.mean(k == 0))}
        q = quant.get(key)
        if q is not None:
            b = _index_bits(q)
            row.update(bits=b, levels=int(len(np.unique(q.levels))), used=int(len(np.unique(q.integers()))))
            packed += int(math.ceil(k.size * b / 8))
            ints.append(q.integers().ravel())
        else:
            row.update(bits=32)
            packed += 4 * int(k.size)
        rows.append(row)
    entropy = value_entropy(np.concatenate(ints)) if ints else None
    out = {
        "accuracy": evaluate_logits(model, x_test, y_test),
        "kernel_weights": kernel_weight_count(model),
        "original_kernel_weights": int(original_weights),
        "params": int(model.count_params()),
        "sparsity": kernel_sparsity(model, original_weights),
        "packed_weight_bytes": int(packed),
        "entropy_bits_per_weight": entropy,
        "layers": rows,
    }
    out.update(extra or {})
    return out


@dataclasses.dataclass(frozen=True)
class CompressionMethod:
    """Base class. Subclasses set ``name``/``help``, declare their parameters with :func:`param`
    and implement :meth:`apply`."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""

    def __post_init__(self) -> None:
        validate_fields(self, self.name)
        self.check()

    def check(self) -> None:
        """Cross-parameter checks (subclasses)."""

    def get_config(self) -> Dict[str, Any]:
        """``{"name": <registry name>, <every parameter>}``."""
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "CompressionMethod":
        cfg = dict(config)
        cfg.pop("name", None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ValueError(f"{cls.name}: unknown parameter(s) {unknown}; accepted: {sorted(names)}")
        return cls(**cfg)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompressionMethod) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.get_config().items())))

    def apply(self, model: tf.keras.Model, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
              y_test: np.ndarray) -> CompressionResult:
        """Compress ``model`` (not modified), fine-tuning on the training split; evaluate on the
        test split."""
        raise NotImplementedError

    # helpers ---------------------------------------------------------------------------------
    def _reference(self, x: np.ndarray, y: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(getattr(self, "seed", 0))
        sel = np.sort(rng.permutation(len(x))[: min(n, len(x))])
        return x[sel], np.asarray(y)[sel]

    def _criterion_options(self, x_ref: np.ndarray) -> Dict[str, Any]:
        crit = getattr(self, "criterion", "lrp")
        if crit == "lrp":
            return {"composite": getattr(self, "composite", "epsilon_plus_flat")}
        if crit == "deeplift":
            return {"reference": getattr(self, "reference", "zeros"), "reference_data": x_ref}
        return {}


def get_method(name: str, **params: Any) -> CompressionMethod:
    """``METHODS.get(name)(**params)``. Raises ``ValueError`` for an unknown name (lists them)."""
    return METHODS.get(name)(**params)


def method_from_config(config: Dict[str, Any]) -> CompressionMethod:
    """Rebuild any registered method from its ``get_config()``.

    Raises:
        TypeError: ``config`` is not a dict. ValueError: unknown name or parameter.
    """
    if not isinstance(config, dict):
        raise TypeError(f"method config must be a dict, got {type(config).__name__}")
    return METHODS.get(config.get("name")).from_config(config)


# --------------------------------------------------------------------------------------------
# ECQ / ECQx


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingMethod(CompressionMethod):
    """A method that trains (fine-tuning, QAT): the mini-batch size, Adam's learning rate and the
    seed, defined once for every method with the values of ``ecqx_tf.config.ECQ_DEFAULTS``."""

    batch_size: int = param(ECQ_DEFAULTS["batch_size"], "mini-batch size", low=1)
    lr: float = param(ECQ_DEFAULTS["lr"], "Adam learning rate", low=0)
    seed: int = param(ECQ_DEFAULTS["seed"], "seed of the initial state, the shuffling and the relevance samples", low=0)


@dataclasses.dataclass(frozen=True, eq=False)
class RelevanceMethod(TrainingMethod):
    """A training method steered by relevances computed on a fixed seeded subset of the training
    data (``relevance_samples``, the value of ``ECQ_DEFAULTS`` for every method)."""

    relevance_samples: int = param(ECQ_DEFAULTS["relevance_samples"],
                                   "training samples (a fixed seeded subset) whose relevances steer the method", low=1)


@METHODS.register("ecq")
@dataclasses.dataclass(frozen=True, eq=False)
class ECQ(TrainingMethod):
    """Entropy-constrained quantization (Becking et al.), via ``quantize_and_train``."""

    name: ClassVar[str] = "ecq"
    help: ClassVar[str] = "entropy-constrained quantization (ECQ) with QAT"
    # defaults: ecqx_tf.config.ECQ_DEFAULTS, shared with ecqx_tf.quantize and ecqx-quantize
    bits: int = param(ECQ_DEFAULTS["bits"], "bit width of every layer", low=2, high=8)
    Lambda: float = param(ECQ_DEFAULTS["Lambda"], "rate hyper-parameter (larger = sparser)", low=0)
    grid: str = param(ECQ_DEFAULTS["grid"], "grid kind", choices=_grids)
    gradient: str = param(ECQ_DEFAULTS["gradient"], "backward pass of the quantized kernel", choices=GRADIENTS)
    lambda_reduce: str = param(ECQ_DEFAULTS["lambda_reduce"], "reduction of the per-layer lambda_max",
                               choices=LAMBDA_REDUCE)
    epochs: int = param(ECQ_DEFAULTS["epochs"], "fine-tuning epochs", low=1)
    lr_schedule: str = param(ECQ_DEFAULTS["lr_schedule"], "learning-rate schedule", choices=LR_SCHEDULES)
    refresh_every: int = param(ECQ_DEFAULTS["refresh_every"], "re-assign every k optimizer steps", low=1)

    method: ClassVar[str] = "ecq"

    def quantize_kwargs(self) -> Dict[str, Any]:
        """The ``quantize_and_train`` arguments of this method (ECQ_DEFAULTS for those it lacks)."""
        kw = {k: getattr(self, k, ECQ_DEFAULTS[k]) for k in ECQ_DEFAULTS if k != "method"}
        kw["method"] = self.method
        return kw

    def apply(self, model, x_train, y_train, x_test, y_test) -> CompressionResult:
        from ..keras.api import quantization_info
        from ..keras.finetune import quantize_and_train
        from .pruning import kernel_weight_count

        ft = quantize_and_train(model, x_train, y_train, x_test, y_test, **self.quantize_kwargs())
        quant = quantization_info(ft.qmodel)
        report = summarize(ft.stripped, quant, kernel_weight_count(model), x_test, y_test,
                           {"qat_accuracy": ft.test_accuracy, "epoch_seconds": ft.epoch_seconds})
        return CompressionResult(self.get_config(), ft.stripped, quant, ft.qmodel, report)


@METHODS.register("ecqx")
@dataclasses.dataclass(frozen=True, eq=False)
class ECQx(ECQ, RelevanceMethod):
    """ECQ with LRP relevance (ECQx), via ``quantize_and_train``."""

    name: ClassVar[str] = "ecqx"
    help: ClassVar[str] = "explainability-driven ECQ (ECQx, LRP relevance) with QAT"
    p: float = param(ECQ_DEFAULTS["p"], "largest sparsity drop relative to ECQ per layer", low=0, high=1)

    method: ClassVar[str] = "ecqx"


# --------------------------------------------------------------------------------------------
# pruning


def _quantize_after(model, masks, bits, epochs, Lambda, x_train, y_train, x_test, y_test, batch_size, lr, seed):
    """ECQ (nearest for ``Lambda=0``) of a pruned model, masks kept; returns (stripped, quant, qmodel, acc)."""
    from ..keras.api import quantization_info
    from ..keras.fold import fold_batchnorm
    from ..keras.quantize_config import ECQQuantizeConfig
    from ._qat import MaskCallback, finetune_qat, kernel_masks_of, quantize_per_layer
    from .criteria import kernel_layer_names

    model = fold_batchnorm(model)  # folding scales kernels per channel: the masks' zeros stay zeros
    cfg = {n: ECQQuantizeConfig(bits=bits, grid="symmetric", method="ecq", Lambda=Lambda)
           for n in kernel_layer_names(model)}
    qmodel = quantize_per_layer(model, cfg)
    callbacks = [MaskCallback(kernel_masks_of(qmodel, masks))] if masks else []
    ft = finetune_qat(qmodel, x_train, y_train, x_test, y_test, epochs=epochs, batch_size=batch_size, lr=lr,
                      seed=seed, callbacks=callbacks)
    return ft.stripped, quantization_info(qmodel), qmodel, ft.test_accuracy


@METHODS.register("relevance_pruning")
@dataclasses.dataclass(frozen=True, eq=False)
class RelevancePruning(RelevanceMethod):
    """Structured (units/filters removed) or unstructured (weights masked) pruning by LRP or
    DeepLIFT relevance (Yeom et al. 2021; Sabih et al. 2020), iterative with fine-tuning; optional
    ECQ quantization afterwards for an exact integer export."""

    name: ClassVar[str] = "relevance_pruning"
    help: ClassVar[str] = "prune units/filters (or weights) with the lowest LRP/DeepLIFT relevance"
    sparsity: float = param(0.5, "share of kernel weights removed (structured) or zeroed", low=0, high=1,
                            high_open=True)
    structured: bool = param(True, "remove whole units/filters (a smaller model); False: mask weights")
    criterion: str = param("lrp", "importance criterion", choices=_criteria)
    composite: str = param("epsilon_plus_flat", "LRP composite (criterion lrp)", choices=_composites)
    reference: str = param("zeros", "DeepLIFT reference input (criterion deeplift)", choices=_references)
    scope: str = param("global", "structured ranking: one over all layers, or the same share per layer",
                       choices=("global", "layer"))
    aggregate: str = param("sum", "unit score over samples: signed sum or sum of absolute values",
                           choices=("sum", "abs"))
    rounds: int = param(3, "pruning steps (cubic schedule)", low=1)
    epochs_per_round: int = param(1, "fine-tuning epochs after each step", low=0)
    bits: Optional[int] = param(None, "then quantize with ECQ at this many bits (exact integer export)", low=2,
                                high=8)
    quant_epochs: int = param(1, "QAT epochs of the quantization step", low=0)
    Lambda: float = param(0.0, "ECQ Lambda of the quantization step (0 = nearest)", low=0)

    def apply(self, model, x_train, y_train, x_test, y_test) -> CompressionResult:
        from .pruning import prune_structured, prune_unstructured

        x_ref, y_ref = self._reference(x_train, y_train, self.relevance_samples)
        common = dict(criterion=self.criterion, x_ref=x_ref, y_ref=y_ref, rounds=self.rounds,
                      epochs_per_round=self.epochs_per_round, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                      criterion_options=self._criterion_options(x_ref))
        if self.structured:
            pr = prune_structured(model, x_train, y_train, self.sparsity, scope=self.scope, aggregate=self.aggregate,
                                  **common)
        else:
            pr = prune_unstructured(model, x_train, y_train, self.sparsity, **common)
        return _finish(self, pr, x_train, y_train, x_test, y_test)


def _finish(method, pr, x_train, y_train, x_test, y_test) -> CompressionResult:
    extra = {"rounds": [dataclasses.asdict(r) for r in pr.rounds], "pruned_accuracy": None}
    model, quant, qmodel = pr.model, {}, None
    if method.bits is not None:
        from ..keras.finetune import evaluate_logits

        extra["pruned_accuracy"] = evaluate_logits(pr.model, x_test, y_test)
        model, quant, qmodel, acc = _quantize_after(pr.model, pr.masks, method.bits, method.quant_epochs,
                                                    method.Lambda, x_train, y_train, x_test, y_test,
                                                    method.batch_size, method.lr, method.seed)
        extra["qat_accuracy"] = acc
    report = summarize(model, quant, pr.original_weights, x_test, y_test, extra)
    return CompressionResult(method.get_config(), model, quant, qmodel, report)


@METHODS.register("magnitude_pruning")
@dataclasses.dataclass(frozen=True, eq=False)
class MagnitudePruning(TrainingMethod):
    """Baseline: tfmot ``prune_low_magnitude`` (unstructured, polynomial schedule, same epochs)."""

    name: ClassVar[str] = "magnitude_pruning"
    help: ClassVar[str] = "baseline: tfmot prune_low_magnitude (unstructured) with the same fine-tuning budget"
    sparsity: float = param(0.5, "share of kernel weights zeroed (every layer)", low=0, high=1, high_open=True)
    rounds: int = param(3, "schedule steps (total epochs = rounds * epochs_per_round)", low=1)
    epochs_per_round: int = param(1, "epochs per step", low=0)
    bits: Optional[int] = param(None, "then quantize with ECQ at this many bits (exact integer export)", low=2,
                                high=8)
    quant_epochs: int = param(1, "QAT epochs of the quantization step", low=0)
    Lambda: float = param(0.0, "ECQ Lambda of the quantization step (0 = nearest)", low=0)

    def check(self) -> None:
        if self.rounds * self.epochs_per_round < 1:
            raise ValueError(f"{self.name}: tfmot prunes while training; rounds * epochs_per_round must be >= 1, "
                             f"got {self.rounds} * {self.epochs_per_round}")

    def apply(self, model, x_train, y_train, x_test, y_test) -> CompressionResult:
        from .pruning import prune_tfmot_magnitude

        pr = prune_tfmot_magnitude(model, x_train, y_train, self.sparsity, rounds=self.rounds,
                                   epochs_per_round=self.epochs_per_round, batch_size=self.batch_size, lr=self.lr,
                                   seed=self.seed)
        return _finish(self, pr, x_train, y_train, x_test, y_test)


# --------------------------------------------------------------------------------------------
# weight sharing


@METHODS.register("weight_sharing")
@dataclasses.dataclass(frozen=True, eq=False)
class WeightSharing(RelevanceMethod):
    """Non-uniform codebook per layer by (relevance-weighted) k-means with 0 kept, int8 codebook,
    QAT with the ECQ quantizer; exported exactly (see ``ecqx_tf.methods.sharing``)."""

    name: ClassVar[str] = "weight_sharing"
    help: ClassVar[str] = "relevance-weighted k-means weight sharing (int8 codebook, QAT, exact export)"
    n_clusters: int = param(16, "codebook size including 0", choices=lambda: _clusters())
    weighting: str = param("relevance", "k-means sample weights", choices=("relevance", "uniform"))
    criterion: str = param("lrp", "relevance criterion (weighting relevance)", choices=_relevance_criteria)
    composite: str = param("epsilon_plus_flat", "LRP composite (criterion lrp)", choices=_composites)
    reference: str = param("zeros", "DeepLIFT reference input (criterion deeplift)", choices=_references)
    recluster: bool = param(True, "re-run the clustering before every epoch but the first")
    kmeans_iters: int = param(50, "Lloyd iterations", low=1)
    epochs: int = param(3, "QAT epochs", low=0)

    def apply(self, model, x_train, y_train, x_test, y_test) -> CompressionResult:
        from ..keras.api import strip
        from ..keras.finetune import evaluate_logits
        from ..keras.fold import fold_batchnorm
        from ._qat import finetune_qat
        from .pruning import kernel_weight_count
        from .sharing import ReclusterCallback, cluster_layers, quantize_shared, sharing_info

        model = fold_batchnorm(model)  # cluster the kernels the device multiplies with
        x_ref, y_ref = self._reference(x_train, y_train, self.relevance_samples)
        opts = self._criterion_options(x_ref)
        books = cluster_layers(model, self.n_clusters, self.weighting, x_ref, y_ref, self.criterion,
                               iters=self.kmeans_iters, **opts)
        qmodel = quantize_shared(model, books)
        clustered_acc = evaluate_logits(strip(qmodel), x_test, y_test)
        callbacks = []
        if self.recluster:
            callbacks.append(ReclusterCallback(self.weighting, (x_ref, y_ref), self.criterion,
                                               iters=min(20, self.kmeans_iters), **opts))
        ft = finetune_qat(qmodel, x_train, y_train, x_test, y_test, epochs=self.epochs, batch_size=self.batch_size,
                          lr=self.lr, seed=self.seed, callbacks=callbacks)
        quant = sharing_info(qmodel)
        extra = {
            "clustered_accuracy": clustered_acc,
            "qat_accuracy": ft.test_accuracy,
            "codebook_rounding": {n: {"max_error": b.max_rounding_error(), "moved": b.moved, "scale": float(b.scale)}
                                  for n, b in books.items()},
            "epoch_seconds": ft.epoch_seconds,
        }
        report = summarize(ft.stripped, quant, kernel_weight_count(model), x_test, y_test, extra)
        return CompressionResult(self.get_config(), ft.stripped, quant, qmodel, report)


def _clusters() -> List[int]:
    return list(names.SHARING_CLUSTERS)  # == sharing.ALLOWED_CLUSTERS (tested)


# --------------------------------------------------------------------------------------------
# mixed precision


@METHODS.register("mixed_precision")
@dataclasses.dataclass(frozen=True, eq=False)
class MixedPrecision(RelevanceMethod):
    """Bits per layer from relevance under a weight-byte budget, then ECQ/ECQx at those widths
    (see ``ecqx_tf.methods.mixed_precision``)."""

    name: ClassVar[str] = "mixed_precision"
    help: ClassVar[str] = "per-layer bit widths from relevance under a weight-byte budget, then ECQ/ECQx"
    budget_bytes: Optional[int] = param(None, "weight-byte budget (default: every layer at avg_bits)", low=1)
    avg_bits: float = param(4.0, "budget as average bits per weight when budget_bytes is not given", low=2,
                            high=8)
    cost: str = param("packed", "byte cost model", choices=_costs)
    criterion: str = param("lrp", "distortion weighting (magnitude = plain L1 quantization error)",
                           choices=_criteria)
    composite: str = param("epsilon_plus_flat", "LRP composite (criterion lrp)", choices=_composites)
    reference: str = param("zeros", "DeepLIFT reference input (criterion deeplift)", choices=_references)
    min_bits: int = param(2, "smallest bit width", low=2, high=8)
    max_bits: int = param(8, "largest bit width", low=2, high=8)
    method: str = param("ecqx", "quantization method", choices=("ecq", "ecqx"))
    Lambda: float = param(0.05, "ECQ rate hyper-parameter", low=0)
    p: float = param(0.1, "ECQx sparsity band", low=0, high=1)
    epochs: int = param(3, "QAT epochs", low=0)

    def check(self) -> None:
        if self.min_bits > self.max_bits:
            raise ValueError(f"{self.name}: min_bits ({self.min_bits}) must be <= max_bits ({self.max_bits})")

    def apply(self, model, x_train, y_train, x_test, y_test) -> CompressionResult:
        from ..keras.api import quantization_info
        from ..keras.fold import fold_batchnorm
        from ._qat import finetune_qat
        from .mixed_precision import choose_bits, quantize_mixed
        from .pruning import kernel_weight_count

        model = fold_batchnorm(model)  # allocate bits to the kernels that are quantized
        x_ref, y_ref = self._reference(x_train, y_train, self.relevance_samples)
        bits, details = choose_bits(model, self.budget_bytes, x_ref, y_ref, criterion=self.criterion,
                                    avg_bits=self.avg_bits, choices=range(self.min_bits, self.max_bits + 1),
                                    cost=self.cost, **self._criterion_options(x_ref))
        qmodel = quantize_mixed(model, bits, method=self.method, Lambda=self.Lambda, p=self.p,
                                relevance_data=(x_ref, y_ref) if self.method == "ecqx" else None)
        ft = finetune_qat(qmodel, x_train, y_train, x_test, y_test, epochs=self.epochs, batch_size=self.batch_size,
                          lr=self.lr, seed=self.seed)
        quant = quantization_info(qmodel)
        extra = {"bits": bits, "allocation": details, "qat_accuracy": ft.test_accuracy,
                 "epoch_seconds": ft.epoch_seconds}
        report = summarize(ft.stripped, quant, kernel_weight_count(model), x_test, y_test, extra)
        return CompressionResult(self.get_config(), ft.stripped, quant, qmodel, report)
