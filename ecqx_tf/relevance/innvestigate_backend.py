"""iNNvestigate backend: LRP by iNNvestigate 2.1.2 in a separate, persistent worker process.

iNNvestigate 2.x only runs with eager execution disabled, which is a process-wide, irreversible
switch. Importing this module (or anything in ``ecqx_tf``) never flips it: the switch happens in a
worker process started with the ``spawn`` context, which

1. calls ``tf.compat.v1.disable_eager_execution()`` before building anything, then imports
   iNNvestigate;
2. receives the model as JSON (softmax removed, see :func:`logits_model_json`) plus its weights
   (``model.get_weights()``), builds an ``innvestigate.analyzer.LRP`` with the rules of the
   composite, and keeps it while the architecture/composite/layers stay the same; later calls
   only ``set_weights`` (the analyzer graph reads the model's variables);
3. returns NumPy arrays: the relevance at the model input and at the OUTPUT of every requested
   kernel layer (captured from iNNvestigate's reversed-tensor dictionary, the data behind
   its ``reverse_keep_tensors`` option).

Worker exceptions come back as :class:`InnvestigateWorkerError` with the worker's traceback. A
worker is a context manager; the shared :func:`default_worker` is shut down at exit.

Composite -> iNNvestigate mapping (built in the worker, :func:`_make_analyzer`): kernel-layer rules
via conditions ``[(is Dense, rule), (is Conv1D, rule), (is Conv2D, rule), (is DepthwiseConv2D,
rule)]`` (SeparableConv2D is refused: iNNvestigate treats its two halves as one layer); Add and
average pooling: iNNvestigate's z-rule mappings, or for ``Epsilon`` the same with the epsilon
stabilizer; ``Epsilon(e)`` -> ``EpsilonRule(epsilon=e,
bias=True)``, ``ZPlus`` -> ``ZPlusRule``, ``Flat`` -> ``FlatRule``, ``Z`` -> ``ZRule``; the first-layer
rule -> ``input_layer_rule``; BatchNormalization ``Z`` -> ``bn_layer_rule=None`` (iNNvestigate's own
BN rule), ``Pass`` -> an identity rule. All other layer types use iNNvestigate's fixed handling,
which the composites mirror (:data:`~ecqx_tf.relevance.composites.INNVESTIGATE_LAYER_RULES`).
"""
from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import threading
import time
import traceback
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from ecqx_tf import layers as _layers
from ecqx_tf.relevance.composites import Composite, get_composite
from ecqx_tf.relevance.graph import UnsupportedLayerError, check_batch_size
from ecqx_tf.relevance.native import LayerRelevance, NativeLRP, native_engine

__all__ = [
    "InnvestigateWorker",
    "InnvestigateWorkerError",
    "default_worker",
    "shutdown_default_worker",
    "logits_model_json",
    "innvestigate_layer_relevance",
    "check_innvestigate_support",
    "NEURON_SELECTION",
]

#: target mode (``ecqx_tf.relevance.graph.TARGETS``) -> iNNvestigate ``neuron_selection_mode``
NEURON_SELECTION = {"label": "index", "predicted": "max_activation", "output": "all"}


def check_innvestigate_support(engine: NativeLRP) -> None:
    """Refuse a model with a layer type the iNNvestigate backend does not run (registry field
    ``innvestigate``), naming every such layer.

    Raises:
        UnsupportedLayerError: the list of layers and the types iNNvestigate supports here.
    """
    bad = [f"{g.name!r} ({g.type_name})" for g in engine.graph.nodes if not g.spec.innvestigate]
    if bad:
        ok = [n for n in _layers.supported_names() if _layers.get(n).innvestigate]
        raise UnsupportedLayerError(
            f"the iNNvestigate backend does not support layers {', '.join(bad)} of model {engine.model_name!r} "
            f"(use backend='native'); iNNvestigate runs: {', '.join(ok)}"
        )


class InnvestigateWorkerError(RuntimeError):
    """The iNNvestigate worker raised, died or did not answer in time."""


# --------------------------------------------------------------------------------------------
# parent side


def logits_model_json(model: Any) -> str:
    """``model.to_json()`` with the softmax removed, so the output is logits.

    A final ``Softmax`` layer or softmax ``Activation`` layer is dropped; a softmax fused into the
    last layer is replaced by ``linear``. Layer names (and the weight order) are unchanged; this is
    what ``innvestigate.model_wo_softmax`` does, but keeping the name of the last layer.
    """
    cfg = json.loads(model.to_json())
    layers = cfg["config"]["layers"]
    sequential = cfg["class_name"] == "Sequential"

    def name_of(entry: Dict[str, Any]) -> str:
        return entry.get("name") or entry["config"]["name"]

    if sequential:
        last = layers[-1]
    else:
        out_name = cfg["config"]["output_layers"][0][0]
        last = next(e for e in layers if name_of(e) == out_name)
    is_softmax_layer = last["class_name"] == "Softmax" or (
        last["class_name"] == "Activation" and last["config"].get("activation") == "softmax"
    )
    if is_softmax_layer:
        layers.remove(last)
        if not sequential:
            src = last["inbound_nodes"][0][0]
            cfg["config"]["output_layers"] = [[src[0], src[1], src[2]]]
            new_last = next(e for e in layers if name_of(e) == src[0])
        else:
            new_last = layers[-1]
        last = new_last
    if last["config"].get("activation") == "softmax":
        last["config"]["activation"] = "linear"
    return json.dumps(cfg)


class InnvestigateWorker:
    """A persistent iNNvestigate process (``spawn`` context), started on first use.

    Args:
        timeout: seconds to wait for one answer (start-up included) before the worker is killed
            and :class:`InnvestigateWorkerError` raised.

    Use as a context manager (``with InnvestigateWorker() as w: ...``) or call :meth:`close`.
    """

    def __init__(self, timeout: float = 600.0):
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Optional[Any] = None
        self._conn: Optional[Any] = None
        self._lock = threading.Lock()
        self._info: Dict[str, Any] = {}
        self._atexit_registered = False

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    @property
    def pid(self) -> Optional[int]:
        """Process id of the running worker (None before start / after close)."""
        return self._proc.pid if self.alive else None

    @property
    def analyzer_builds(self) -> int:
        """How many analyzers the current worker process has built (1 per architecture)."""
        return int(self._info.get("builds", 0))

    def start(self) -> "InnvestigateWorker":
        """Start the worker if it is not running; returns self."""
        with self._lock:
            if self.alive:
                return self
            self._stop_locked(graceful=False)
            parent, child = self._ctx.Pipe()
            proc = self._ctx.Process(
                target=_worker_main, args=(child,), name="ecqx-innvestigate-worker", daemon=True
            )
            proc.start()
            child.close()
            self._proc, self._conn = proc, parent
            if not self._atexit_registered:
                atexit.register(self.close)
                self._atexit_registered = True
            self._info = self._call_locked("ping", None)
            return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker (graceful, then terminate). Safe to call repeatedly."""
        with self._lock:
            self._stop_locked(graceful=True, timeout=timeout)

    def _stop_locked(self, graceful: bool, timeout: float = 10.0) -> None:
        proc, conn = self._proc, self._conn
        self._proc, self._conn, self._info = None, None, {}
        if proc is None:
            return
        if graceful and proc.is_alive() and conn is not None:
            try:
                conn.send(("close", None))
            except (OSError, EOFError, BrokenPipeError):
                pass
            proc.join(timeout)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        if proc.is_alive():  # pragma: no cover - last resort
            proc.kill()
            proc.join(5)
        if conn is not None:
            conn.close()

    def __enter__(self) -> "InnvestigateWorker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- calls --------------------------------------------------------------------------------
    def _call_locked(self, cmd: str, payload: Any) -> Any:
        proc, conn = self._proc, self._conn
        assert proc is not None and conn is not None
        try:
            conn.send((cmd, payload))
        except (OSError, BrokenPipeError) as e:
            code = proc.exitcode
            self._stop_locked(graceful=False)
            raise InnvestigateWorkerError(f"iNNvestigate worker is gone (exit code {code}): {e}") from None
        deadline = time.monotonic() + self.timeout
        while not conn.poll(0.2):
            if not proc.is_alive():
                code = proc.exitcode
                self._stop_locked(graceful=False)
                raise InnvestigateWorkerError(f"iNNvestigate worker died during {cmd!r} (exit code {code})")
            if time.monotonic() > deadline:
                self._stop_locked(graceful=False)
                raise InnvestigateWorkerError(
                    f"iNNvestigate worker did not answer {cmd!r} within {self.timeout:.0f} s; killed it"
                )
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            code = proc.exitcode
            self._stop_locked(graceful=False)
            raise InnvestigateWorkerError(f"iNNvestigate worker died during {cmd!r} (exit code {code})") from None
        if msg[0] == "error":
            _, etype, emsg, tb = msg
            raise InnvestigateWorkerError(
                f"iNNvestigate worker (pid {proc.pid}) raised {etype} during {cmd!r}: {emsg}\n"
                f"--- worker traceback ---\n{tb}"
            )
        return msg[1]

    def call(self, cmd: str, payload: Any = None) -> Any:
        """Send one command (``"ping"`` or ``"relevance"``) and return the worker's answer."""
        self.start()
        with self._lock:
            if not self.alive:
                raise InnvestigateWorkerError("iNNvestigate worker stopped before the call")
            out = self._call_locked(cmd, payload)
            if isinstance(out, dict) and "builds" in out:
                self._info["builds"] = out["builds"]
            return out

    def ping(self) -> Dict[str, Any]:
        """``{"pid", "eager", "innvestigate", "tensorflow", "builds"}`` as seen by the worker."""
        return self.call("ping")

    def relevance(
        self,
        model_json: str,
        weights: Sequence[np.ndarray],
        composite: Union[str, Composite],
        layers: Sequence[str],
        x: np.ndarray,
        y: np.ndarray,
        mode: str = "label",
    ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """Raw iNNvestigate relevance of one batch: ``(input_relevance, {layer: R_j})``, the output
        relevance being the target logit(s) of ``mode`` (``"label"``: class ``y``; ``"predicted"``:
        argmax; ``"output"``: every output unit), NOT divided by the batch size.

        ``model_json`` must describe a logits model (see :func:`logits_model_json`) and ``weights``
        must be that model's ``get_weights()``.
        """
        payload = {
            "model_json": model_json,
            "weights": [np.asarray(w) for w in weights],
            "composite": get_composite(composite).get_config(),
            "layers": list(layers),
            "x": np.ascontiguousarray(x, dtype=np.float32),
            "y": np.asarray(y, dtype=np.int64),
            "mode": mode,
        }
        out = self.call("relevance", payload)
        return out["input"], dict(out["layers"])


def innvestigate_layer_relevance(
    model: Any,
    x: Any,
    y: Any,
    composite: Union[str, Composite] = "epsilon_plus_flat",
    layers: Optional[Sequence[str]] = None,
    batch_size: int = 64,
    worker: Optional["InnvestigateWorker"] = None,
    target: str = "auto",
) -> LayerRelevance:
    """Same contract as :func:`~ecqx_tf.relevance.native.native_layer_relevance`, computed by
    iNNvestigate in the worker (``worker`` or :func:`default_worker`). The model is validated by
    the native engine first, so unsupported layers and bad data raise the same errors here."""
    engine = native_engine(model, composite, layers)
    check_innvestigate_support(engine)
    xa, ya, mode = engine.check_data(x, y, target)
    bs = check_batch_size(batch_size)
    w = default_worker() if worker is None else worker
    model_json, weights = logits_model_json(model), model.get_weights()
    scale = np.float32(1.0 / xa.shape[0])
    inputs, per_layer = [], {n: [] for n in engine.layer_names}
    for i in range(0, xa.shape[0], bs):
        r_in, rs = w.relevance(model_json, weights, engine.composite, engine.layer_names, xa[i : i + bs],
                               ya[i : i + bs], mode)
        inputs.append(r_in * scale)
        for n in engine.layer_names:
            per_layer[n].append(rs[n] * scale)
    return LayerRelevance(np.concatenate(inputs), {n: np.concatenate(v) for n, v in per_layer.items()})


_DEFAULT: Optional[InnvestigateWorker] = None
_DEFAULT_LOCK = threading.Lock()


def default_worker() -> InnvestigateWorker:
    """The process-wide shared worker (started lazily, closed at interpreter exit)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = InnvestigateWorker()
        return _DEFAULT


def shutdown_default_worker() -> None:
    """Close the shared worker, if one was started."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        w, _DEFAULT = _DEFAULT, None
    if w is not None:
        w.close()


atexit.register(shutdown_default_worker)


# --------------------------------------------------------------------------------------------
# worker side (runs only in the spawned process)


def _make_analyzer(model: Any, composite_cfg: Dict[str, Any], keep: Sequence[str], mode: str = "label") -> Any:
    """An ``innvestigate.analyzer.LRP`` reproducing the composite, which also returns the
    relevance at the outputs of the layers named in ``keep``."""
    import tensorflow.keras.layers as klayers
    from innvestigate import backend as ibackend
    from innvestigate.analyzer.relevance_based import relevance_rule as rrule
    from innvestigate.analyzer.relevance_based.relevance_analyzer import (
        LRP,
        AddReverseLayer,
        AveragePoolingReverseLayer,
        BatchNormalizationReverseLayer,
    )
    from innvestigate.backend import checks as ichecks
    from innvestigate.backend import graph as igraph

    def rule_class(cfg: Dict[str, Any]) -> Any:
        name = cfg["name"]
        if name == "epsilon":
            eps = float(cfg["epsilon"])

            class EpsilonProxyRule(rrule.EpsilonRule):
                def __init__(self, *args: Any, **kwargs: Any) -> None:
                    super().__init__(*args, epsilon=eps, bias=True, **kwargs)

            return EpsilonProxyRule
        table = {"zplus": rrule.ZPlusRule, "flat": rrule.FlatRule, "z": rrule.ZRule}
        if name not in table:
            raise ValueError(f"no iNNvestigate equivalent for rule {name!r} on a kernel layer")
        return table[name]

    class PassRule(igraph.ReverseMappingBase):
        """Identity mapping (used for BatchNormalization when the composite says Pass)."""

        def __init__(self, layer: Any, state: Any) -> None:
            pass

        def apply(self, Xs: Any, Ys: Any, Rs: Any, reverse_state: Any) -> Any:
            return Rs

    class BatchNormZRule(BatchNormalizationReverseLayer):
        """iNNvestigate's own BN rule, unchanged except that ``axis`` is made an int: Keras 2.14
        stores it as a list (``ListWrapper([3])``), which the 2.1.2 code cannot index with."""

        def __init__(self, layer: Any, state: Any) -> None:
            super().__init__(layer, state)
            axis = self._axis
            if not isinstance(axis, int):
                (axis,) = list(axis)
            self._axis = int(axis)

    class EpsilonMergeRule(igraph.ReverseMappingBase):
        """zennit's Norm rule on a parameter-free linear layer (Add, average pooling): iNNvestigate's
        own z-rule mapping for these layers with its safe_divide replaced by the epsilon stabilizer
        R_k = x_k * grad(R / (y + eps (2 [y >= 0] - 1)))."""

        def __init__(self, layer: Any, state: Any, eps: float) -> None:
            self._layer_wo_act = igraph.copy_layer_wo_activation(layer, name_template="reversed_kernel_%s")
            self._eps = eps

        def apply(self, Xs: Any, Ys: Any, Rs: Any, reverse_state: Any) -> Any:
            import tensorflow.keras.backend as kb

            eps = self._eps
            Zs = ibackend.apply(self._layer_wo_act, Xs)
            stab = klayers.Lambda(lambda z: z + (kb.cast(kb.greater_equal(z, 0), kb.floatx()) * 2 - 1) * eps)
            tmp = [klayers.Lambda(lambda t: t[0] / t[1])([r, stab(z)]) for r, z in zip(Rs, Zs)]
            grads = ibackend.gradients(Xs, Zs, tmp)
            return [klayers.Multiply()([a, b]) for a, b in zip(Xs, grads)]

    def merge_mapping(rule_cfg: Dict[str, Any], default: Any) -> Any:
        if rule_cfg["name"] == "z":
            return default
        if rule_cfg["name"] == "epsilon":
            eps = float(rule_cfg["epsilon"])

            class BoundEpsilonMergeRule(EpsilonMergeRule):
                def __init__(self, layer: Any, state: Any) -> None:
                    super().__init__(layer, state, eps)

            return BoundEpsilonMergeRule
        raise ValueError(f"no iNNvestigate mapping for rule {rule_cfg['name']!r} on a merge/pooling layer")

    rules = dict((t, r) for t, r in composite_cfg["layer_rules"])
    kernel_types = [t for t in _layers.kernel_types() if _layers.get(t).innvestigate]
    conditions = [
        ((lambda layer, cls=getattr(klayers, t): type(layer) is cls), rule_class(rules[t])) for t in kernel_types
    ]
    merge_types = {
        t: merge_mapping(rules[t], AddReverseLayer if t == "Add" else AveragePoolingReverseLayer)
        for t in ("Add", "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D")
    }
    first = composite_cfg.get("first_layer")
    bn = rules["BatchNormalization"]["name"]
    bn_layer_rule = None if bn == "z" else PassRule

    class KeepLRP(LRP):
        """LRP that also outputs the reversed tensors at the kept layers' outputs."""

        def __init__(self, model: Any, **kwargs: Any) -> None:
            super().__init__(model, **kwargs)
            # Not calling self._do_model_checks(): in iNNvestigate 2.1.2 it raises
            # NotImplementedError after ANY warning-type check (e.g. "LRP is only tested for
            # convolutional neural networks", triggered by a keras ReLU layer). The LRP base class
            # does not call it either; the model was validated by the native engine before it
            # was sent, and the softmax was removed.
            self._all_reversed: Dict[int, Any] = {}
            self.kept: Dict[str, np.ndarray] = {}

        def _reverse_model(self, model, stop_analysis_at_tensors=None, return_all_reversed_tensors=False):  # type: ignore[no-untyped-def]
            rin, reversed_tensors = super()._reverse_model(
                model, stop_analysis_at_tensors=stop_analysis_at_tensors, return_all_reversed_tensors=True
            )
            self._all_reversed = reversed_tensors
            return rin, (reversed_tensors if return_all_reversed_tensors else None)

        def _create_analysis(self, model, stop_analysis_at_tensors=None):  # type: ignore[no-untyped-def]
            if bn_layer_rule is None:  # evaluated before LRP's own BN mapping (priority -1)
                self._add_conditional_reverse_mapping(
                    ichecks.is_batch_normalization_layer, BatchNormZRule, priority=10, name="ecqx_bn_z"
                )
            for t, mapping in merge_types.items():  # before LRP's own Add / average pooling mappings
                self._add_conditional_reverse_mapping(
                    (lambda layer, cls=getattr(klayers, t): type(layer) is cls), mapping, priority=10,
                    name=f"ecqx_{t}",
                )
            ret = super()._create_analysis(model, stop_analysis_at_tensors=stop_analysis_at_tensors)
            kept = []
            for name in keep:
                out = self._model.get_layer(name).output
                entry = self._all_reversed.get(id(out))
                if entry is None:
                    raise RuntimeError(f"iNNvestigate kept no relevance for the output of layer {name!r}")
                tensor = entry["final_tensor"]
                if tensor is None:
                    ts = entry["tensors"]
                    tensor = ts[0] if len(ts) == 1 else klayers.Add()(ts)
                kept.append(tensor)
            return ret, kept

        def _handle_debug_output(self, debug_values):  # type: ignore[no-untyped-def]
            self.kept = dict(zip(keep, debug_values))

    return KeepLRP(
        model,
        rule=conditions,
        input_layer_rule=None if first is None else rule_class(first),
        bn_layer_rule=bn_layer_rule,
        neuron_selection_mode=NEURON_SELECTION[mode],
    )


_PREFIX = "ecqx__"


def _prefixed_model_json(model_json: str) -> str:
    """The model JSON with every layer name prefixed: iNNvestigate adds unnamed Keras layers (e.g.
    ``Add``) to the graph, whose default names ("add", "concatenate", ...) would collide with a user
    layer of that name; the prefix keeps the weight order and the structure unchanged."""
    cfg = json.loads(model_json)
    conf = cfg["config"]

    def rename_entry(entry: Dict[str, Any]) -> None:
        if "name" in entry:
            entry["name"] = _PREFIX + entry["name"]
        entry["config"]["name"] = _PREFIX + entry["config"]["name"]
        for node in entry.get("inbound_nodes") or []:
            for item in node:
                item[0] = _PREFIX + item[0]

    for entry in conf["layers"]:
        rename_entry(entry)
    for key in ("input_layers", "output_layers"):
        if key in conf:
            for item in conf[key]:
                item[0] = _PREFIX + item[0]
    return json.dumps(cfg)


class _WorkerState:
    def __init__(self) -> None:
        self.key: Optional[Tuple[str, str, Tuple[str, ...], str]] = None
        self.model: Any = None
        self.analyzer: Any = None
        self.builds = 0

    def relevance(self, p: Dict[str, Any]) -> Dict[str, Any]:
        import tensorflow as tf

        mode = p.get("mode", "label")
        key = (p["model_json"], json.dumps(p["composite"], sort_keys=True), tuple(p["layers"]), mode)
        if key != self.key:
            self.key, self.model, self.analyzer = None, None, None
            tf.compat.v1.keras.backend.clear_session()
            model = tf.keras.models.model_from_json(_prefixed_model_json(p["model_json"]))
            model.set_weights(p["weights"])
            self.analyzer = _make_analyzer(model, p["composite"], [_PREFIX + n for n in p["layers"]], mode)
            self.model, self.key = model, key
            self.builds += 1
        else:
            self.model.set_weights(p["weights"])
        if mode == "label":
            r_in = self.analyzer.analyze(p["x"], neuron_selection=p["y"])
        else:
            r_in = self.analyzer.analyze(p["x"])
        kept = self.analyzer.kept
        return {
            "input": np.asarray(r_in),
            "layers": {n: np.asarray(kept[_PREFIX + n]) for n in p["layers"]},
            "builds": self.builds,
        }


def _worker_main(conn: Any) -> None:  # pragma: no cover - runs in the child process
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import importlib.metadata

        import tensorflow as tf

        tf.compat.v1.disable_eager_execution()
        import innvestigate  # noqa: F401  (fails early if missing)

        tf.get_logger().setLevel("ERROR")  # graph-mode deprecation chatter from Keras/iNNvestigate
        warnings.filterwarnings("ignore")

        state = _WorkerState()
    except BaseException as e:  # report start-up failures to the parent
        conn.send(("error", type(e).__name__, str(e), traceback.format_exc()))
        return
    while True:
        try:
            cmd, payload = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            break
        if cmd == "close":
            break
        try:
            if cmd == "ping":
                result: Any = {
                    "pid": os.getpid(),
                    "eager": tf.executing_eagerly(),
                    "innvestigate": importlib.metadata.version("innvestigate"),
                    "tensorflow": tf.__version__,
                    "builds": state.builds,
                }
            elif cmd == "relevance":
                result = state.relevance(payload)
            else:
                raise ValueError(f"unknown worker command {cmd!r}")
            conn.send(("ok", result))
        except BaseException as e:
            try:
                conn.send(("error", type(e).__name__, str(e), traceback.format_exc()))
            except (OSError, EOFError):
                break
    conn.close()
