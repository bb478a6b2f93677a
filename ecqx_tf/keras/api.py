"""Public Keras-side API: ``quantize`` -> train with ``model.fit`` and ``ECQxCallback`` ->
``strip`` / ``quantization_info`` / ``layer_stats``; ``load_model`` and ``quantize_scope`` for
saved models in training.

``quantize`` never mutates the user's model. It checks the whole model against the layer registry
(:mod:`ecqx_tf.layers`) before any work, folds every BatchNormalization that directly follows a
kernel layer into that layer (:func:`ecqx_tf.fold_batchnorm`, on by default), annotates every kernel
layer (Dense, Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D) with :class:`ECQQuantizeConfig`
(every other layer with tfmot's default 8-bit scheme), applies tfmot's ``quantize_apply`` and makes
the initial ECQ assignment ("before training, one ECQ assignment, entropy term on, no relevance").
"""
from __future__ import annotations

import logging
import weakref
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from .. import layers as _layers
from .. import stats as _stats
from ..config import (
    ECQ_DEFAULTS,
    GRADIENTS,
    LAMBDA_REDUCE,
    validate_bits,
    validate_choice,
    validate_nonnegative,
    validate_unit_interval,
)
from ..grid import GRID_KINDS, make_grid
from ..quantized import QuantizedKernel
from ..topology import refuse_unsupported
from .fold import fold_batchnorm as _fold_batchnorm
from .quantize_config import METHODS, SUPPORTED_LAYERS, ECQQuantizeConfig, ECQQuantizeScheme
from .quantizer import ECQWeightQuantizer

__all__ = [
    "quantize",
    "quantize_per_layer",
    "check_relevance_data",
    "copy_weights",
    "mirror_sources",
    "strip",
    "quantization_info",
    "layer_stats",
    "load_model",
    "save_model",
    "quantize_scope",
    "custom_objects",
    "ecq_layers",
    "PASSTHROUGH_LAYERS",
    "SUPPORTED_LAYERS",
    "RelevanceData",
    "relevance_data_of",
]

log = logging.getLogger(__name__)

_QuantizeWrapper = tfmot.quantization.keras.QuantizeWrapperV2
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_registry,
)
from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import QuantizeLayer as _QuantizeLayer  # noqa: E402  (not re-exported by tfmot)

_DEFAULT_REGISTRY = default_8bit_quantize_registry.Default8BitQuantizeRegistry()

#: Layers without weights to quantize that may stand between quantized layers (from the registry).
PASSTHROUGH_LAYERS = tuple(
    getattr(tf.keras.layers, n) for n in _layers.LAYERS.in_order() if not _layers.get(n).is_kernel
)

# Relevance data registered by quantize() for the callback (not part of the saved model).
_RELEVANCE_DATA: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def custom_objects() -> dict:
    return {"ECQQuantizeConfig": ECQQuantizeConfig, "ECQWeightQuantizer": ECQWeightQuantizer}


def quantize_scope():
    """``tfmot.quantization.keras.quantize_scope`` with this package's classes registered."""
    return tfmot.quantization.keras.quantize_scope(custom_objects())


def _check_model(model) -> None:
    if not isinstance(model, tf.keras.Model):
        raise TypeError(f"model must be a tf.keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError("model must be built (call it on data or give it an Input) before quantize()")
    if any(isinstance(l, _QuantizeWrapper) for l in model.layers):
        raise ValueError("model is already quantized; quantize() takes the float model")


def _quantizable(model, exclude: Sequence[str]) -> List[tf.keras.layers.Layer]:
    """The kernel layers of ``model`` not in ``exclude``, after checking that EVERY layer of the
    model is supported (one error listing all unsupported layers with the supported set)."""
    refuse_unsupported(model, "quantize()")
    names = {l.name for l in model.layers}
    unknown = sorted(set(exclude) - names)
    if unknown:
        raise ValueError(f"exclude names layers the model does not have: {unknown}; layers: {sorted(names)}")
    out = [l for l in model.layers if _layers.spec_of(l) is not None and _layers.get(l).is_kernel and l.name not in exclude]
    if not out:
        raise ValueError(
            f"the model has no quantizable layer ({', '.join(_layers.kernel_types())})"
            + (f" left after excluding {list(exclude)}" if exclude else "")
        )
    return out


def quantize(
    model: tf.keras.Model,
    bits: int = ECQ_DEFAULTS["bits"],
    method: str = ECQ_DEFAULTS["method"],
    Lambda: float = ECQ_DEFAULTS["Lambda"],
    p: float = ECQ_DEFAULTS["p"],
    grid: str = ECQ_DEFAULTS["grid"],
    relevance_data: Optional[Any] = None,
    exclude: Iterable[str] = (),
    gradient: str = ECQ_DEFAULTS["gradient"],
    lambda_reduce: str = ECQ_DEFAULTS["lambda_reduce"],
    fold_batchnorm: bool = True,
    relevance_target: str = "auto",
) -> tf.keras.Model:
    r"""Return a new quantization-aware model, ready for ``compile``/``fit`` with
    :class:`ecqx_tf.ECQxCallback`.

    Defaults: ``ecqx_tf.config.ECQ_DEFAULTS`` (the authors' values; shared with the command lines).

    Args:
        model: a built float tf.keras model (Sequential, or functional with one input and one
            output; branches and merges allowed) of the layer registry (``docs/layers.md``); not
            modified.
        bits: bit width of every quantized kernel, 2..8.
        method: ``"ecq"`` (entropy-constrained) or ``"ecqx"`` (relevance-adjusted).
        Lambda: :math:`\Lambda \ge 0`, the rate hyper-parameter (Becking et al. 2021; larger =
            sparser; 0 = nearest neighbour).
        p: ECQx's largest sparsity drop relative to ECQ per layer, in [0, 1].
        grid: ``"symmetric"`` (default, exact INT4/INT8) or ``"paper"`` (the authors' 2^b levels).
        relevance_data: data for ECQx's LRP (required for ``method="ecqx"``): ``x`` alone (an array)
            or a tuple ``(x, y)`` with class labels ``y`` (indices or one-hot). With ``x`` alone the
            relevance starts from the predicted class (argmax of the output) of a classifier, and
            from the whole output (every output unit with its own value) of any other model, e.g. an
            autoencoder (``relevance_target``). A ``y`` shaped like a regression target (the model's
            output, not one-hot, e.g. ``(x, x)`` for an autoencoder) is refused with a message to pass
            ``x`` alone.
        exclude: names of kernel layers to keep out of ECQ (tfmot's default 8-bit scheme).
        gradient: ``"ste"`` or ``"ec2t"``.
        lambda_reduce: ``"min"`` (thesis) or ``"max"`` (ECQx code) for :math:`\lambda_{max}`.
        fold_batchnorm: fold every BatchNormalization that directly follows a kernel layer into its
            kernel and bias first (:func:`ecqx_tf.fold_batchnorm`; default True), so the quantized
            integers are those of the folded kernel the exporters store; False keeps the BNs float.
        relevance_target: ``"auto"`` (default), ``"label"``, ``"predicted"`` or ``"output"``:
            where the relevance starts (``ecqx_tf.relevance.TARGETS``).

    Raises:
        ValueError / TypeError: unknown method or grid, bits outside 2..8, negative Lambda, p
            outside [0, 1], a model with no quantizable layer, unsupported layers (ALL of them are
            listed, with name and type, before any work), a model the relevance engine cannot walk
            (ECQx), relevance data that does not match the model.
    """
    _check_model(model)
    bits = validate_bits(bits)
    method = validate_choice("method", method, METHODS)
    Lambda = validate_nonnegative("Lambda", Lambda)
    p = validate_unit_interval("p", p)
    grid = validate_choice("grid", grid, GRID_KINDS)
    gradient = validate_choice("gradient", gradient, GRADIENTS)
    lambda_reduce = validate_choice("lambda_reduce", lambda_reduce, LAMBDA_REDUCE)
    if not isinstance(fold_batchnorm, bool):
        raise TypeError(f"fold_batchnorm must be a bool, got {fold_batchnorm!r}")
    exclude = tuple(exclude)
    _quantizable(model, exclude)  # complete refusal before any work
    if method == "ecqx" and relevance_data is None:
        raise ValueError("method='ecqx' needs relevance_data: x alone, or a tuple (x, y) with class labels, for LRP")
    float_model = _fold_batchnorm(model) if fold_batchnorm else model
    targets = {l.name for l in _quantizable(float_model, exclude)}
    rdata = None
    if relevance_data is not None:
        rdata = check_relevance_data(float_model, relevance_data, relevance_target)

    cfg = dict(bits=bits, grid=grid, method=method, Lambda=Lambda, p=p, gradient=gradient, lambda_reduce=lambda_reduce)
    qmodel = _quantize_apply(float_model, {n: ECQQuantizeConfig(**cfg) for n in targets})
    initialize_assignment(qmodel)
    if rdata is not None:
        _RELEVANCE_DATA[qmodel] = rdata
    return qmodel


def _annotate_function(configs: Dict[str, ECQQuantizeConfig]):
    def annotate(layer):
        clone = layer.__class__.from_config(layer.get_config())
        if layer.name in configs:
            cfg = ECQQuantizeConfig.from_config(configs[layer.name].get_config())
            return tfmot.quantization.keras.quantize_annotate_layer(clone, quantize_config=cfg)
        if isinstance(layer, tf.keras.layers.InputLayer):
            return clone
        if _layers.type_name(layer) == "SeparableConv2D":
            # excluded: tfmot's 8-bit scheme on both kernels, as one layer (tfmot's own transform
            # would split it into DepthwiseConv2D + Conv2D with new names)
            return tfmot.quantization.keras.quantize_annotate_layer(clone, quantize_config=_separable_8bit_config())
        if not _DEFAULT_REGISTRY.supports(layer):
            return clone  # stays float (e.g. BatchNormalization not folded, Conv1D excluded)
        return tfmot.quantization.keras.quantize_annotate_layer(clone)

    return annotate


def _separable_8bit_config():
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit.default_8bit_quantize_registry import (
        Default8BitQuantizeConfig,
    )

    return Default8BitQuantizeConfig(["depthwise_kernel", "pointwise_kernel"], ["activation"], False)


def quantize_per_layer(
    model: tf.keras.Model,
    configs: Mapping[str, ECQQuantizeConfig],
    relevance_data: Optional[Tuple[np.ndarray, np.ndarray]] = None,
    initialize: bool = True,
) -> tf.keras.Model:
    """A new model in ECQ/ECQx training whose layer ``name`` is quantized with ``configs[name]``;
    kernel layers without a config keep tfmot's default 8-bit scheme (as ``exclude=`` of
    :func:`ecqx_tf.quantize`). ``model`` is not modified; its BatchNormalizations are NOT folded
    here (fold first with :func:`ecqx_tf.fold_batchnorm` where wanted, as the methods do).

    Args:
        model: a built float tf.keras model.
        configs: layer name -> :class:`ECQQuantizeConfig` (e.g. different ``bits`` per layer).
        relevance_data: ``x`` or ``(x, y)`` for ECQx's LRP (needed when a config has ``method="ecqx"``).
        initialize: make the initial ECQ assignment on the layer's own grid (False: the caller sets
            centroids, step and indices, e.g. a non-uniform codebook).

    Raises:
        TypeError: ``configs`` values are not ``ECQQuantizeConfig``.
        ValueError: a name that is not a quantizable kernel layer of ``model`` (lists them),
            no config at all, ECQx without relevance data, and :func:`ecqx_tf.quantize`'s errors.
    """
    _check_model(model)
    if not configs:
        raise ValueError("configs is empty; give at least one layer name -> ECQQuantizeConfig")
    quantizable = [l.name for l in _quantizable(model, ())]
    for name, cfg in configs.items():
        if name not in quantizable:
            raise ValueError(f"configs names layer {name!r}, which is not a quantizable layer; accepted: {quantizable}")
        if not isinstance(cfg, ECQQuantizeConfig):
            raise TypeError(f"configs[{name!r}] must be an ECQQuantizeConfig, got {type(cfg).__name__}")
    if any(c.method == "ecqx" for c in configs.values()) and relevance_data is None:
        raise ValueError("method='ecqx' needs relevance_data: x alone, or a tuple (x, y), for LRP")
    if relevance_data is not None:
        relevance_data = check_relevance_data(model, relevance_data)
    qmodel = _quantize_apply(model, dict(configs))
    if initialize:
        initialize_assignment(qmodel)
    if relevance_data is not None:
        _RELEVANCE_DATA[qmodel] = relevance_data
    return qmodel


def _quantize_apply(float_model: tf.keras.Model, configs: Dict[str, ECQQuantizeConfig]) -> tf.keras.Model:
    """tfmot ``quantize_apply`` of ``float_model`` with ``configs[name]`` on the named kernel layers;
    checks that no ECQ kernel was dropped by a tfmot transform."""
    annotated = tf.keras.models.clone_model(float_model, clone_function=_annotate_function(configs))
    annotated.set_weights(float_model.get_weights())
    with quantize_scope():
        qmodel = tfmot.quantization.keras.quantize_apply(annotated, scheme=ECQQuantizeScheme())
    want = {_layers.kernel_key(n, a, len(_layers.get(float_model.get_layer(n)).kernels))
            for n in configs for a in _layers.get(float_model.get_layer(n)).kernels}
    missing = want - {s.name for s in ecq_layers(qmodel)}
    if missing:  # a tfmot transform replaced the ECQ config: never leave a kernel silently float
        raise RuntimeError(f"tfmot's layout transforms dropped ECQ quantization of kernels {sorted(missing)}")
    return qmodel


class RelevanceData:
    """The relevance data registered by :func:`quantize` for the callback: ``x`` (float32),
    ``y`` (int labels, or None) and the target ``mode`` (``"label"``, ``"predicted"``, ``"output"``)."""

    def __init__(self, x: np.ndarray, y: Optional[np.ndarray], mode: str):
        self.x, self.y, self.mode = x, y, mode

    def __iter__(self):  # (x, y) unpacking, as before
        return iter((self.x, self.y))


def _split_relevance_data(data: Any) -> Tuple[Any, Any]:
    if isinstance(data, tuple):
        if len(data) != 2:
            raise TypeError(f"relevance_data must be x (an array) or a tuple (x, y), got a tuple of {len(data)} items")
        return data
    if isinstance(data, RelevanceData):
        return data.x, data.y
    return data, None


def check_relevance_data(model, data, target: str = "auto") -> RelevanceData:
    """Validate relevance data for ``model`` (x alone or (x, y)); see :func:`quantize`."""
    from ..relevance.graph import RelevanceGraph

    x, y = _split_relevance_data(data)
    graph = RelevanceGraph(model, "ECQx's relevance engine")  # a graph it cannot walk fails here
    mode = graph.resolve_target(y, target)
    xa, ya = graph.check_data(x, y, mode)
    return RelevanceData(xa, ya, mode)


def relevance_data_of(qmodel) -> Optional[RelevanceData]:
    return _RELEVANCE_DATA.get(qmodel)


class _ECQSlot:
    """One quantized kernel inside a QuantizeWrapper: the wrapper, its config and variables.

    ``name`` is the kernel key (the layer name, or ``"<layer>/<attr>"`` for a layer with several
    quantized kernels), ``layer_name`` the Keras layer name, ``attr`` the kernel attribute."""

    def __init__(self, wrapper, config: ECQQuantizeConfig, kernel, qvars: dict, attr: str, n_kernels: int):
        self.wrapper = wrapper
        self.config = config
        self.kernel = kernel
        self.attr = attr
        self.centroids = qvars["centroids"]
        self.indices = qvars["indices"]
        self.relevance = qvars["relevance"]
        self.step = qvars["step"]
        self.name = _layers.kernel_key(wrapper.layer.name, attr, n_kernels)

    @property
    def layer_name(self) -> str:
        return self.wrapper.layer.name

    def levels_and_step(self) -> Tuple[np.ndarray, float]:
        step = np.float32(self.step.numpy())
        levels = np.rint(self.centroids.numpy() / step).astype(np.int32) if step > 0 else np.zeros(0, np.int32)
        return levels, float(step)


def ecq_layers(qmodel) -> List[_ECQSlot]:
    """The quantized kernels of a model made by :func:`quantize` (in layer order; the kernels of one
    layer in the registry's order)."""
    slots = []
    for layer in qmodel.layers:
        if isinstance(layer, _QuantizeWrapper) and isinstance(layer.quantize_config, ECQQuantizeConfig):
            ecq = [(k, q, v) for k, q, v in layer._weight_vars if isinstance(q, ECQWeightQuantizer)]
            for kernel, quantizer, qvars in ecq:
                slots.append(_ECQSlot(layer, layer.quantize_config, kernel, qvars, _short_name(kernel.name), len(ecq)))
    return slots


def initialize_assignment(qmodel) -> None:
    """Grid from each float kernel, then one ECQ assignment (no relevance), in one linear pass
    per kernel (:func:`ecqx_tf.assign_fast.assign_layer`, equal to ``layer_lambda`` then
    ``ecq_assign``)."""
    from ..assign_fast import assign_layer

    slots = ecq_layers(qmodel)
    if not slots:
        raise ValueError("the model has no ECQ-quantized layer")
    n_largest = max(int(np.prod(s.kernel.shape)) for s in slots)
    for s in slots:
        w = s.kernel.numpy()
        g = make_grid(w, s.config.bits, s.config.grid)
        res = assign_layer(w, g.centroids, s.config.Lambda, n_largest, method="ecq", reduce=s.config.lambda_reduce)
        s.centroids.assign(g.centroids)
        s.step.assign(np.float32(g.step))
        s.indices.assign(res.indices)


def quantization_info(qmodel) -> Dict[str, QuantizedKernel]:
    """Kernel key -> :class:`QuantizedKernel` (the integers every exporter must store). The key is
    the layer name for a layer with one quantized kernel (Dense, Conv1D, Conv2D, DepthwiseConv2D)
    and ``"<layer>/<kernel attr>"`` for each kernel of a layer with several (SeparableConv2D)."""
    out = {}
    for s in ecq_layers(qmodel):
        levels, step = s.levels_and_step()
        out[s.name] = QuantizedKernel(
            layer=s.layer_name,
            bits=s.config.bits,
            grid=s.config.grid,
            step=step,
            levels=levels,
            indices=s.indices.numpy().astype(np.int32),
            kernel=s.attr,
        )
    if not out:
        raise ValueError("the model has no ECQ-quantized layer (was it made by ecqx_tf.quantize?)")
    return out


def layer_stats(qmodel) -> List[dict]:
    """Per quantized layer: name, bits, grid, step, n_weights, sparsity, entropy (bits/weight),
    used centroids; plus a final row ``"<total>"`` over all quantized weights."""
    rows = []
    all_idx = []
    for name, q in quantization_info(qmodel).items():
        ints = q.integers()
        rows.append(
            {
                "layer": name,
                "bits": q.bits,
                "grid": q.grid,
                "step": q.step,
                "n_weights": int(ints.size),
                "sparsity": float(np.mean(ints == 0)),
                "entropy": float(_stats.index_entropy(q.indices, len(q.levels))),
                "used_centroids": int(len(np.unique(q.indices))),
            }
        )
        all_idx.append(ints.ravel())
    ints = np.concatenate(all_idx)
    rows.append(
        {
            "layer": "<total>",
            "bits": max(r["bits"] for r in rows),
            "grid": rows[0]["grid"],
            "step": float("nan"),
            "n_weights": int(ints.size),
            "sparsity": float(np.mean(ints == 0)),
            "entropy": _stats.value_entropy(ints),
            "used_centroids": int(len(np.unique(ints))),
        }
    )
    return rows


def _strip_config(qconfig: dict) -> dict:
    """Rewrite a quantize_apply'd functional config into the plain model's config."""
    layers = qconfig["layers"]
    rename: Dict[str, str] = {}
    dropped: Dict[str, list] = {}
    new_layers = []
    for l in layers:
        cls = l["class_name"]
        if cls == "QuantizeLayer" or cls.endswith(">QuantizeLayer"):
            dropped[l["name"]] = l["inbound_nodes"]
            continue
        if cls.endswith("QuantizeWrapperV2") or cls.endswith("QuantizeWrapper"):
            inner = l["config"]["layer"]
            inner_name = inner["config"]["name"]
            rename[l["name"]] = inner_name
            new_layers.append({"class_name": inner["class_name"], "config": inner["config"], "name": inner_name,
                               "inbound_nodes": l["inbound_nodes"], **({"module": inner["module"]} if "module" in inner else {})})
        else:
            new_layers.append(dict(l))

    def resolve(name, node_index, tensor_index):
        # follow dropped QuantizeLayers back to their inputs
        while name in dropped:
            inbound = dropped[name]
            first = inbound[0][0]
            name, node_index, tensor_index = first[0], first[1], first[2]
        return rename.get(name, name), node_index, tensor_index

    for l in new_layers:
        nodes = []
        for node in l.get("inbound_nodes", []):
            new_node = []
            for item in node:
                n, ni, ti = resolve(item[0], item[1], item[2])
                new_node.append([n, ni, ti] + list(item[3:]))
            nodes.append(new_node)
        l["inbound_nodes"] = nodes

    def fix_io(entries):
        return [list(resolve(e[0], e[1], e[2])) for e in entries]

    return {
        "name": qconfig.get("name", "model") + "_stripped",
        "layers": new_layers,
        "input_layers": fix_io(qconfig["input_layers"]),
        "output_layers": fix_io(qconfig["output_layers"]),
    }


def _strip_sequential_config(qconfig: dict) -> dict:
    """The same rewrite for a Sequential model: drop QuantizeLayers, unwrap QuantizeWrappers."""
    layers = []
    for l in qconfig["layers"]:
        cls = l["class_name"]
        if cls.endswith("QuantizeLayer"):
            continue
        if cls.endswith("QuantizeWrapperV2") or cls.endswith("QuantizeWrapper"):
            layers.append(l["config"]["layer"])
        else:
            layers.append(l)
    return {"name": qconfig.get("name", "model") + "_stripped", "layers": layers}


def strip(qmodel) -> tf.keras.Model:
    """A plain Keras model (no tfmot wrappers, no fake quantization) whose quantized kernels are
    exactly the assigned centroid values ``levels[idx] * step`` (float32) and whose other weights
    (biases, BatchNorm kept float) are the trained ones. Layer names are the original ones; a
    BatchNormalization folded by :func:`quantize` is not in it (its kernel layer carries it)."""
    with quantize_scope():
        if isinstance(qmodel, tf.keras.Sequential):
            plain = tf.keras.Sequential.from_config(_strip_sequential_config(qmodel.get_config()))
        else:
            plain = tf.keras.Model.from_config(_strip_config(qmodel.get_config()))
    copy_weights(qmodel, plain)
    return plain


def copy_weights(qmodel, plain) -> None:
    """Write ``qmodel``'s current weights into its stripped twin ``plain`` (kernels snapped)."""
    for v, src in mirror_sources(qmodel, plain):
        v.assign(tf.gather(src.centroids, src.indices) if isinstance(src, _ECQSlot) else src)


def mirror_sources(qmodel, plain) -> List[Tuple[tf.Variable, Any]]:
    """What :func:`copy_weights` writes, as pairs ``(variable of plain, source)``: the source is
    the ``_ECQSlot`` of a quantized kernel (value ``gather(centroids, indices)``) or the variable of
    ``qmodel`` to copy. For a sync inside a ``tf.function`` (the training callback's relevance)."""
    slots = {(s.layer_name, s.attr): s for s in ecq_layers(qmodel)}
    pairs: List[Tuple[tf.Variable, Any]] = []
    for layer in qmodel.layers:
        if isinstance(layer, (_QuantizeLayer, tf.keras.layers.InputLayer)):
            continue
        inner = layer.layer if isinstance(layer, _QuantizeWrapper) else layer
        target = plain.get_layer(inner.name)
        weights = {_short_name(v.name): v for v in layer.weights}
        for v in target.weights:
            key = _short_name(v.name)
            pairs.append((v, slots[(inner.name, key)] if (inner.name, key) in slots else weights[key]))
    return pairs


def _short_name(var_name: str) -> str:
    return var_name.split("/")[-1].split(":")[0]


def save_model(model, path) -> str:
    """Save a model atomically. Models in ECQ training are saved as HDF5 (``.h5``): tfmot
    0.8.1's ``QuantizeLayer`` does not restore from the Keras v3 ``.keras`` format (it expects 5
    variables and finds 3), so a ``.keras`` path for such a model is rejected with that reason.
    Plain (float or stripped) models may use either suffix."""
    import os

    path = str(path)
    quantized = bool(ecq_layers(model))
    suffix = os.path.splitext(path)[1]
    if suffix not in (".h5", ".keras"):
        raise ValueError(f"model path {path!r} must end in .h5 or .keras")
    if quantized and suffix != ".h5":
        raise ValueError(
            f"{path!r}: a model in ECQ training must be saved as .h5 (tfmot 0.8.1 cannot restore "
            "its QuantizeLayer from the .keras format); strip() it first for a .keras file"
        )
    from ..io import atomic_write_with

    def write(tmp: str) -> None:
        with quantize_scope():
            if suffix == ".h5":
                model.save(tmp, include_optimizer=False)
            else:
                model.save(tmp)

    atomic_write_with(path, write)
    return path


def load_model(path) -> tf.keras.Model:
    """Load a ``.keras`` model saved during or after ECQ/ECQx training (or a plain float one).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a loadable Keras model (corrupt or another format).
    """
    import os

    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {str(path)!r}")
    try:
        with quantize_scope():
            return tf.keras.models.load_model(path, compile=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{str(path)!r} is not a loadable Keras model ({type(e).__name__}: {e})") from e
