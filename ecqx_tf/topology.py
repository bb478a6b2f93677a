"""The graph of a Keras model as data: its layers in topological order, each with the layers it
reads from. One reader for every consumer (the relevance graph walker, BatchNorm folding, pruning,
``quantize()``'s early check), so they all accept and refuse the same models.

Supported: a ``Sequential`` model, or a functional model with one input and one output in which
every layer is called once (no shared layers) and produces one tensor. Branches (a tensor read by
several layers) and merges (``Add``, ``Concatenate``) are fine.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import tensorflow as tf

__all__ = ["TopologyError", "Node", "Topology", "topology", "model_problems", "refuse_unsupported"]


class TopologyError(ValueError):
    """The model's structure is not one the package supports (the message says why)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
    """One layer of the graph.

    Attributes:
        index: position in topological order (0 = first layer after the input).
        layer: the Keras layer.
        inputs: indices of the nodes it reads (``-1`` = the model input), in call order.
    """

    index: int
    layer: tf.keras.layers.Layer
    inputs: Tuple[int, ...]

    @property
    def name(self) -> str:
        return self.layer.name


@dataclasses.dataclass(frozen=True, eq=False)
class Topology:
    """Attributes:
        nodes: every layer but the InputLayer, in topological order.
        output: index of the node whose output is the model output.
        input_name: name of the model's input layer.
    """

    nodes: Tuple[Node, ...]
    output: int
    input_name: str

    def consumers(self) -> Dict[int, List[int]]:
        """node index (or -1) -> indices of the nodes that read it."""
        out: Dict[int, List[int]] = {-1: []}
        for n in self.nodes:
            out.setdefault(n.index, [])
            for i in n.inputs:
                out.setdefault(i, []).append(n.index)
        return out

    def by_name(self) -> Dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @property
    def is_chain(self) -> bool:
        return all(n.inputs == (n.index - 1,) for n in self.nodes) and self.output == len(self.nodes) - 1


def _describe(layer) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


def topology(model: tf.keras.Model) -> Topology:
    """The model's graph.

    Raises:
        TypeError: not a ``tf.keras.Model``.
        TopologyError: a subclassed model, several inputs or outputs, a layer called more than once
            (shared) or producing several tensors, or a layer with no path to the output (each
            message names the layer).
    """
    if not isinstance(model, tf.keras.Model):
        raise TypeError(f"model must be a tf.keras.Model, got {type(model).__name__}")
    if isinstance(model, tf.keras.Sequential):
        layers = [l for l in model.layers if type(l).__name__ != "InputLayer"]
        if not layers:
            raise TopologyError(f"model {model.name!r} has no layers")
        nodes = tuple(Node(i, l, (i - 1,)) for i, l in enumerate(layers))
        name = model.input_names[0] if getattr(model, "input_names", None) else "input"
        return Topology(nodes, len(nodes) - 1, name)
    if not getattr(model, "_is_graph_network", False):
        raise TopologyError(
            f"model {model.name!r} is a subclassed Model; the package supports Sequential and functional models"
        )
    cfg = model.get_config()
    ins, outs = cfg.get("input_layers", []), cfg.get("output_layers", [])
    if len(ins) != 1 or len(outs) != 1:
        raise TopologyError(
            f"model {model.name!r} has {len(ins)} inputs and {len(outs)} outputs; the package supports exactly one of each"
        )
    entries = cfg["layers"]
    input_name = ins[0][0]
    producers: Dict[str, Tuple[str, ...]] = {}
    problems: List[str] = []
    for e in entries:
        name = e["name"]
        if e["class_name"] == "InputLayer":
            if name != input_name:
                problems.append(f"input layer {name!r} is not the model's input")
            continue
        nodes = e.get("inbound_nodes") or []
        layer = model.get_layer(name)
        if isinstance(layer, tf.keras.Model):
            problems.append(f"{_describe(layer)} is a nested model (build one flat model instead)")
            continue
        if len(nodes) != 1:
            problems.append(f"{_describe(layer)} is called {len(nodes)} times (shared layers are not supported)")
            continue
        srcs = []
        for item in nodes[0]:
            try:
                src, node_index, tensor_index = item[0], int(item[1]), int(item[2])
            except (TypeError, IndexError, ValueError):
                problems.append(f"{_describe(layer)} has an inbound node this reader does not understand: {item!r}")
                break
            if node_index != 0 or tensor_index != 0:
                problems.append(f"{_describe(layer)} reads output {tensor_index} of call {node_index} of {src!r} "
                                "(shared or multi-output layers are not supported)")
            srcs.append(src)
        producers[name] = tuple(srcs)
    if outs[0][1] != 0 or outs[0][2] != 0:
        problems.append(f"the model output is output {outs[0][2]} of call {outs[0][1]} of {outs[0][0]!r}")
    if problems:
        raise TopologyError(f"model {model.name!r}: " + "; ".join(problems))
    # topological order (Kahn, stable in the config's order)
    order: List[str] = []
    placed = {input_name}
    pending = [e["name"] for e in entries if e["name"] in producers]
    while pending:
        progressed = False
        rest = []
        for name in pending:
            if all(s in placed for s in producers[name]):
                order.append(name)
                placed.add(name)
                progressed = True
            else:
                rest.append(name)
        if not progressed:
            raise TopologyError(f"model {model.name!r}: layers {rest} are not reachable from the input {input_name!r}")
        pending = rest
    index = {name: i for i, name in enumerate(order)}
    index[input_name] = -1
    nodes = tuple(Node(i, model.get_layer(name), tuple(index[s] for s in producers[name])) for i, name in enumerate(order))
    out_name = outs[0][0]
    if out_name not in index or index[out_name] < 0:
        raise TopologyError(f"model {model.name!r}: the output is the input layer itself")
    topo = Topology(nodes, index[out_name], input_name)
    # every node must reach the output (dangling branches would be silently ignored otherwise)
    reach = {topo.output}
    for n in reversed(nodes):
        if n.index in reach:
            reach.update(i for i in n.inputs if i >= 0)
    dangling = [n.name for n in nodes if n.index not in reach]
    if dangling:
        raise TopologyError(f"model {model.name!r}: layers {dangling} do not lead to the output")
    return topo


def model_problems(model: tf.keras.Model) -> List[str]:
    """Everything that stops the package from handling ``model``, one line each: a structure it
    cannot read, every layer of an unsupported type or configuration (name, type, reason), a
    softmax that is not in the last layer. Empty when the model is supported."""
    from . import layers as _layers

    try:
        topo = topology(model)
    except TopologyError as e:
        return [str(e)]
    problems = []
    for n in topo.nodes:
        reason = _layers.layer_problems(n.layer)
        if reason is not None:
            problems.append(f"layer {n.name!r} ({type(n.layer).__name__}): {reason}")
            continue
        spec = _layers.get(n.layer)
        act = getattr(getattr(n.layer, "activation", None), "__name__", "")
        softmax = spec.name == "Softmax" or ((spec.is_kernel or spec.name == "Activation") and act == "softmax")
        if softmax and n.index != topo.output:
            problems.append(f"layer {n.name!r} ({type(n.layer).__name__}): softmax is only supported in the last layer")
        if len(set(n.inputs)) != len(n.inputs):
            problems.append(f"layer {n.name!r} ({type(n.layer).__name__}) reads the same tensor twice")
    return problems


def refuse_unsupported(model: tf.keras.Model, what: str) -> None:
    """Raise one ``ValueError`` listing every problem of :func:`model_problems` and the supported
    layer types (``what`` names the caller, e.g. ``"quantize()"``)."""
    from . import layers as _layers

    problems = model_problems(model)
    if problems:
        raise ValueError(
            f"{what} cannot handle model {model.name!r}: " + "; ".join(problems)
            + f". Supported layer types: {', '.join(_layers.supported_names())} (see docs/layers.md)"
        )
