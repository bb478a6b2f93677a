r"""The one graph walker of the relevance engines (LRP in ``native.py``, DeepLIFT in
``deeplift.py``): any single-input, single-output Sequential or functional model whose layers are
in the layer registry (:mod:`ecqx_tf.layers`), branches and merges included.

* **Forward** (:meth:`RelevanceGraph.forward`): the layers in topological order, inference mode,
  keeping every node's input tensors, the input and pre-activation output of every linear stage of
  a kernel layer (Dense/Conv1D/Conv2D/DepthwiseConv2D: one stage; SeparableConv2D: the depthwise
  stage, then the pointwise stage with the bias), and its output.
* **Backward** (:meth:`RelevanceGraph.backward`): from the output relevance (or DeepLIFT
  multiplier) down in reverse topological order; an engine-specific ``step`` maps the quantity at a
  node's output to one per input; where a tensor fans out to several layers, the quantities coming
  back from them are **summed** (relevance is conserved at a branch point; multipliers obey the
  chain rule, which sums over paths).
* **Targets** (:data:`TARGETS`): where the explanation starts. ``"label"``: the logit of the given
  class of each sample (the ECQx paper's choice); ``"predicted"``: the logit of the predicted class
  (argmax of the output) when no labels are given; ``"output"``: every output unit with its own value,
  :math:`R_{out} = y`, for models that are not classifiers (an autoencoder: relevance is then the
  share of each weight in producing the whole reconstruction). ``"auto"`` picks ``label`` when labels
  are given, else ``predicted`` for a classifier and ``output`` otherwise; a *classifier* here is a
  model whose output is ``(N, C)`` with ``C >= 2`` and differs in shape from its input (an
  autoencoder reproduces its input's shape).

A final ``Softmax`` layer or softmax ``Activation`` is dropped and a softmax fused into the last
kernel layer is skipped, so explanations start at the logits.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from ecqx_tf import layers as _layers
from ecqx_tf.config import validate_int_range
from ecqx_tf.topology import model_problems, topology

__all__ = [
    "UnsupportedLayerError",
    "FIRST_LAYER_TRANSPARENT_TYPES",
    "TARGETS",
    "Stage",
    "GraphNode",
    "NodeActs",
    "RelevanceGraph",
    "stages_of",
    "vjp",
    "target_mask",
    "check_batch_size",
]

#: Layers that do not stop a kernel layer from being the "first" layer (iNNvestigate's list).
FIRST_LAYER_TRANSPARENT_TYPES: Tuple[str, ...] = ("Flatten", "Reshape", "Permute")
#: Where an explanation starts (see the module docstring).
TARGETS: Tuple[str, ...] = ("auto", "label", "predicted", "output")


class UnsupportedLayerError(ValueError):
    """A model contains a layer (or a structure) the relevance engine cannot analyze."""


# --------------------------------------------------------------------------------------------
# linear stages of the kernel layers (pure TF)


def _dense(layer, a: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    return tf.matmul(a, w) if a.shape.rank == 2 else tf.tensordot(a, w, [[a.shape.rank - 1], [0]])


def _conv(layer, a: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    return layer.convolution_op(a, w)


def _depthwise(layer, a: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    strides = (1,) + tuple(int(s) for s in layer.strides) + (1,)
    return tf.nn.depthwise_conv2d(a, w, strides=strides, padding=str(layer.padding).upper(),
                                  dilations=tuple(int(d) for d in layer.dilation_rate))


def _pointwise(layer, a: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    return tf.nn.conv2d(a, w, strides=1, padding="VALID")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One linear map of a kernel layer: ``z = op(layer, a, W[attr]) (+ bias if with_bias)``."""

    attr: str
    op: Callable[[Any, tf.Tensor, tf.Tensor], tf.Tensor]
    with_bias: bool


_STAGES: Dict[str, Tuple[Stage, ...]] = {
    "Dense": (Stage("kernel", _dense, True),),
    "Conv1D": (Stage("kernel", _conv, True),),
    "Conv2D": (Stage("kernel", _conv, True),),
    "DepthwiseConv2D": (Stage("depthwise_kernel", _depthwise, True),),
    "SeparableConv2D": (Stage("depthwise_kernel", _depthwise, False), Stage("pointwise_kernel", _pointwise, True)),
}


def stages_of(type_name: str) -> Tuple[Stage, ...]:
    """The linear stages of a kernel layer type (their attributes are the registry's kernels)."""
    stages = _STAGES[type_name]
    assert tuple(s.attr for s in stages) == _layers.get(type_name).kernels
    return stages


def vjp(fn: Callable[[Any], Any], a: Any, s: tf.Tensor) -> Any:
    """``(d fn / d a)^T s`` with a GradientTape (``a`` a tensor or a list of tensors)."""
    with tf.GradientTape() as tape:
        tape.watch(a)
        out = fn(a)
    return tape.gradient(out, a, output_gradients=s)


def _is_softmax(fn: Any) -> bool:
    return getattr(fn, "__name__", "") == "softmax"


# --------------------------------------------------------------------------------------------
# the graph


@dataclasses.dataclass(frozen=True, eq=False)
class GraphNode:
    """One layer in the walker: its registry spec, inputs (node indices, -1 = model input), and
    for kernel layers whether it is a *first* layer (fed by the input through
    :data:`FIRST_LAYER_TRANSPARENT_TYPES` only) and whether its fused softmax is skipped."""

    index: int
    layer: tf.keras.layers.Layer
    spec: _layers.LayerSpec
    inputs: Tuple[int, ...]
    first: bool
    skip_activation: bool

    @property
    def type_name(self) -> str:
        return self.spec.name

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def kernel(self) -> bool:
        return self.spec.is_kernel

    @property
    def stages(self) -> Tuple[Stage, ...]:
        return stages_of(self.spec.name) if self.kernel else ()

    def kernel_key(self, attr: str) -> str:
        return _layers.kernel_key(self.layer.name, attr, len(self.spec.kernels))


@dataclasses.dataclass(eq=False)
class NodeActs:
    """Forward tensors of one node: ``inputs`` (list), per stage ``(a, z)`` (kernel layers; the
    last ``z`` includes the bias), and the output ``y``."""

    inputs: List[tf.Tensor]
    stages: List[Tuple[tf.Tensor, tf.Tensor]]
    y: tf.Tensor


def _describe(layer: Any) -> str:
    return f"layer {getattr(layer, 'name', '?')!r} ({type(layer).__name__})"


class RelevanceGraph:
    """The walker's view of a model (built once per engine; reads the layers' variables at run
    time, so weight updates need no rebuild).

    Raises:
        TypeError: not a ``tf.keras.Model``.
        ValueError: the model is not built or has no layers.
        UnsupportedLayerError: an unsupported structure or layer (ALL such layers are listed, each
            with its name, type and reason, plus the supported types).
    """

    def __init__(self, model: tf.keras.Model, engine: str = "the relevance engine"):
        if not isinstance(model, tf.keras.Model):
            raise TypeError(f"model must be a tf.keras.Model, got {type(model).__name__}")
        if not model.built:
            raise ValueError(f"model {model.name!r} is not built; call it on data or give it an Input")
        problems = model_problems(model)
        if problems:
            raise UnsupportedLayerError(
                f"{engine} cannot handle model {model.name!r}: " + "; ".join(problems)
                + f". Supported layer types: {', '.join(_layers.supported_names())}"
            )
        topo = topology(model)
        nodes = list(topo.nodes)
        output = topo.output
        self.dropped_softmax_layer = False
        out_node = nodes[output]
        out_type = _layers.type_name(out_node.layer)
        if out_type == "Softmax" or (out_type == "Activation" and _is_softmax(out_node.layer.activation)):
            if len(out_node.inputs) != 1 or out_node.inputs[0] < 0:
                raise UnsupportedLayerError(f"model {model.name!r} has no layers before its softmax")
            output = out_node.inputs[0]
            nodes = nodes[:-1] if out_node.index == len(nodes) - 1 else [n for n in nodes if n is not out_node]
            self.dropped_softmax_layer = True
        graph: List[GraphNode] = []
        transparent_from_input = {-1}
        for n in nodes:
            spec = _layers.get(n.layer)
            softmax = spec.name == "Softmax" or (
                (spec.is_kernel or spec.name == "Activation") and _is_softmax(n.layer.activation)
            )
            skip = spec.is_kernel and n.index == output and softmax
            if softmax and not skip:
                raise UnsupportedLayerError(
                    f"{_describe(n.layer)} in model {model.name!r}: softmax is only supported in the last layer"
                )
            first = spec.is_kernel and all(i in transparent_from_input for i in n.inputs)
            if spec.name in FIRST_LAYER_TRANSPARENT_TYPES and all(i in transparent_from_input for i in n.inputs):
                transparent_from_input.add(n.index)
            graph.append(GraphNode(n.index, n.layer, spec, n.inputs, first, skip))
        self.nodes: Tuple[GraphNode, ...] = tuple(graph)
        self.output: int = output
        self.model_name: str = model.name
        self.input_shape: Tuple[Optional[int], ...] = tuple(tf.TensorShape(model.input_shape).as_list())
        # output shape of every node (for validation and the relevance specs)
        shapes: Dict[int, tf.TensorShape] = {-1: tf.TensorShape(self.input_shape)}
        self.stage_shapes: Dict[str, Tuple[Optional[int], ...]] = {}
        for g in self.nodes:
            ins = [shapes[i] for i in g.inputs]
            if g.kernel and len(g.stages) == 2:  # separable: intermediate shape
                dw = tf.TensorShape(tf.keras.layers.DepthwiseConv2D(
                    g.layer.kernel_size, strides=g.layer.strides, padding=g.layer.padding,
                    depth_multiplier=g.layer.depth_multiplier, dilation_rate=g.layer.dilation_rate,
                ).compute_output_shape(ins[0]))
                self.stage_shapes[g.kernel_key("depthwise_kernel")] = tuple(dw.as_list())
            out = tf.TensorShape(g.layer.compute_output_shape(ins[0] if len(ins) == 1 else ins))
            shapes[g.index] = out
            if g.kernel:
                self.stage_shapes[g.kernel_key(g.stages[-1].attr)] = tuple(out.as_list())
        self.output_shape: Tuple[Optional[int], ...] = tuple(shapes[self.output].as_list())
        #: (kernel key, node index, stage index, attr) of every quantized kernel, in node order
        self.kernels: Tuple[Tuple[str, int, int, str], ...] = tuple(
            (g.kernel_key(s.attr), g.index, k, s.attr) for g in self.nodes if g.kernel for k, s in enumerate(g.stages)
        )

    # -- structure ----------------------------------------------------------------------------
    @property
    def is_classifier(self) -> bool:
        """Output ``(N, C)`` with ``C >= 2`` and a shape different from the input's."""
        out = self.output_shape
        return len(out) == 2 and out[-1] is not None and out[-1] >= 2 and out != self.input_shape

    @property
    def kernel_keys(self) -> List[str]:
        return [k for k, _, _, _ in self.kernels]

    def kernel_layer_names(self) -> List[str]:
        return [g.name for g in self.nodes if g.kernel]

    def select(self, layers: Optional[Sequence[str]]) -> List[str]:
        """Kernel keys for ``layers`` (layer names, selecting all kernels of a layer, or kernel
        keys); all keys when None.

        Raises:
            TypeError: ``layers`` is a str.
            ValueError: a name that is neither a kernel layer nor a kernel key (lists them).
        """
        keys = self.kernel_keys
        if layers is None:
            return keys
        if isinstance(layers, str):
            raise TypeError(f"layers must be a sequence of layer names, got the str {layers!r}")
        out: List[str] = []
        names = self.kernel_layer_names()
        for n in layers:
            if n in keys:
                sel = [n]
            elif n in names:
                sel = [k for k, idx, _, _ in self.kernels if self.nodes_by_index[idx].name == n]
            else:
                raise ValueError(
                    f"layer {n!r} is not a kernel layer of model {self.model_name!r} "
                    f"(Dense/Conv1D/Conv2D/DepthwiseConv2D/SeparableConv2D); accepted: {keys}"
                )
            out.extend(k for k in sel if k not in out)
        return out

    @property
    def nodes_by_index(self) -> Dict[int, GraphNode]:
        return {g.index: g for g in self.nodes}

    # -- forward ------------------------------------------------------------------------------
    def forward(self, x: tf.Tensor) -> Dict[int, NodeActs]:
        """Inference-mode forward pass; returns node index -> :class:`NodeActs` (``-1``: the input)."""
        acts: Dict[int, NodeActs] = {-1: NodeActs([], [], x)}
        for g in self.nodes:
            ins = [acts[i].y for i in g.inputs]
            stages: List[Tuple[tf.Tensor, tf.Tensor]] = []
            if g.kernel:
                a = ins[0]
                for s in g.stages:
                    z = s.op(g.layer, a, tf.convert_to_tensor(getattr(g.layer, s.attr)))
                    if s.with_bias and g.layer.use_bias:
                        z = tf.nn.bias_add(z, g.layer.bias)
                    stages.append((a, z))
                    a = z
                y = a if g.skip_activation else g.layer.activation(a)
            else:
                y = g.layer(ins[0] if len(ins) == 1 else ins, training=False)
            acts[g.index] = NodeActs(ins, stages, y)
        return acts

    # -- backward -----------------------------------------------------------------------------
    def backward(
        self,
        acts: Dict[int, NodeActs],
        start: tf.Tensor,
        step: Callable[[GraphNode, NodeActs, tf.Tensor], Sequence[tf.Tensor]],
        stop_below: int = -1,
    ) -> Optional[tf.Tensor]:
        """Walk from the output down: ``step(node, acts, q)`` maps the quantity ``q`` at the node's
        output to one per input (in ``node.inputs`` order); quantities meeting at a tensor read by
        several layers are summed. Nodes with index < ``stop_below`` are skipped (their quantities
        are not needed). Returns the quantity at the model input (None when stopped early)."""
        pending: Dict[int, List[tf.Tensor]] = {self.output: [start]}
        for g in reversed(self.nodes):
            if g.index < stop_below:
                return None
            parts = pending.pop(g.index, None)
            if parts is None:
                continue
            q = parts[0] if len(parts) == 1 else tf.add_n(parts)
            outs = step(g, acts[g.index], q)
            for i, qi in zip(g.inputs, outs):
                pending.setdefault(i, []).append(qi)
        parts = pending.get(-1)
        if not parts:
            return tf.zeros_like(acts[-1].y)
        return parts[0] if len(parts) == 1 else tf.add_n(parts)

    # -- data ---------------------------------------------------------------------------------
    def resolve_target(self, y: Any, target: str = "auto") -> str:
        """The target mode for labels ``y`` (None = no labels) and ``target`` (:data:`TARGETS`).

        Raises:
            ValueError: unknown target; ``"label"`` without labels; labels with ``"predicted"`` or
                ``"output"``; a float ``y`` shaped like the model output that is not one-hot (a
                regression target, e.g. ``(x, x)`` for an autoencoder): the message says to pass
                ``x`` alone; ``"label"``/``"predicted"`` on a model that is not ``(N, classes)``.
        """
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; accepted: {', '.join(TARGETS)}")
        out = self.output_shape
        if y is not None:
            ya = np.asarray(y)
            if (ya.ndim == len(out) and tuple(ya.shape[1:]) == tuple(out[1:]) and np.issubdtype(ya.dtype, np.floating)
                    and not _is_one_hot(ya)):
                raise ValueError(
                    f"y has shape {ya.shape}, the shape of the model's output, and is not one-hot labels: a "
                    f"regression target (e.g. (x, x) for an autoencoder). Relevance does not use such targets: "
                    f"pass x alone (relevance_data=x), and relevance starts from the model's whole output "
                    f"(each output unit with its own value) for a model that is not a classifier"
                )
            if target in ("predicted", "output"):
                raise ValueError(f"target {target!r} takes no labels; pass y=None (or target='label')")
            mode = "label"
        elif target == "label":
            raise ValueError("target 'label' needs labels y")
        elif target == "auto":
            mode = "predicted" if self.is_classifier else "output"
        else:
            mode = target
        if mode in ("label", "predicted") and (len(out) != 2 or out[-1] is None):
            raise ValueError(
                f"target {mode!r} needs a model with (batch, classes) output; model {self.model_name!r} outputs "
                f"{out}: use target='output'"
            )
        return mode

    def check_data(self, x: Any, y: Any, mode: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Validate ``x`` (float32) and, for mode ``"label"``, ``y`` (int labels or one-hot).

        Raises:
            ValueError / TypeError: empty data, shapes that do not match the model, labels out of
                range or not integer (each message names the shapes involved).
        """
        xa = _check_x(x, self.input_shape, self.model_name)
        if mode != "label":
            return xa, None
        return xa, _check_labels(y, xa.shape[0], int(self.output_shape[-1]))


def _is_one_hot(y: np.ndarray) -> bool:
    if y.ndim != 2:
        return False
    return bool(np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1))


def _check_x(x: Any, input_shape: Sequence[Optional[int]], model_name: str) -> np.ndarray:
    xa = np.asarray(x)
    if xa.dtype == object:
        raise TypeError("x must be a numeric array, got dtype object")
    xa = xa.astype(np.float32, copy=False)
    expected = tuple(input_shape)
    if xa.ndim == 0 or xa.shape[0] == 0:
        raise ValueError(f"x is empty (shape {xa.shape}); relevance needs at least one sample")
    if xa.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected[1:], xa.shape[1:])):
        raise ValueError(f"x has shape {xa.shape} but model {model_name!r} expects input shape {expected} (None = any size)")
    return xa


def _check_labels(y: Any, n: int, num_classes: int) -> np.ndarray:
    if y is None:
        raise ValueError("labels y are required for target 'label'")
    ya = np.asarray(y)
    if ya.ndim == 2 and ya.shape[1] == num_classes and ya.shape[0] == n:
        ya = np.argmax(ya, axis=1)
    elif ya.ndim == 2 and ya.shape[1] == 1:
        ya = ya[:, 0]
    if ya.ndim != 1:
        raise ValueError(f"y has shape {np.asarray(y).shape}; expected labels of shape ({n},) or one-hot ({n}, {num_classes})")
    if ya.shape[0] != n:
        raise ValueError(f"y has {ya.shape[0]} labels (shape {np.asarray(y).shape}) but x has {n} samples")
    if not np.issubdtype(ya.dtype, np.integer):
        if np.issubdtype(ya.dtype, np.floating) and np.all(np.isfinite(ya)) and np.all(ya == np.round(ya)):
            ya = ya.astype(np.int64)
        else:
            raise TypeError(f"y must hold integer class labels, got dtype {ya.dtype}")
    if ya.min() < 0 or ya.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got min {ya.min()} and max {ya.max()}")
    return ya.astype(np.int32)


def target_mask(out: tf.Tensor, mode: str, labels: tf.Tensor) -> tf.Tensor:
    """0/1 mask of the output units an explanation starts from: the labelled class (``"label"``),
    the argmax class (``"predicted"``) or every unit (``"output"``)."""
    if mode == "output":
        return tf.ones_like(out)
    classes = out.shape[-1]
    idx = labels if mode == "label" else tf.argmax(out, axis=-1, output_type=tf.int32)
    return tf.one_hot(idx, classes, dtype=out.dtype)


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` as an int >= 1 (``ecqx_tf.config.validate_int_range``)."""
    return validate_int_range("batch_size", batch_size, low=1)
