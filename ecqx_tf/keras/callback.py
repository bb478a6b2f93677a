r"""``ECQxCallback``: the one callback of the package. After every ``refresh_every`` optimizer
steps it recomputes (ECQx) the LRP weight relevances and re-assigns every quantized kernel:

1. (ECQx) the relevance mirror, a plain Keras copy of the model whose kernels are the current
   centroids, is synced; the LRP weight relevance of one batch of ``relevance_data`` is computed
   (from the labelled class, or without labels from the predicted class / the whole output, see
   :func:`ecqx_tf.quantize`) and folded into the per-kernel exponential moving average
   :math:`R \leftarrow (1-\alpha) R_{batch} + \alpha R`, reset at each epoch;
2. for every quantized layer, :math:`\lambda_l` is recomputed from the current float shadow
   kernel and the kernel is assigned with ECQ or ECQx (docs/algorithm.md, sections 2 and 3);
3. the index (and relevance) variables are written; the next forward pass uses them.

Options that change how hard the entropy term pushes (``docs/frontier.md``; defaults leave the
paper's algorithm unchanged): ``warmup_steps`` ramps :math:`\Lambda` (or the sparsity target) from
0 with the cubic schedule of gradual pruning; ``target_sparsity`` replaces the paper's
:math:`\lambda_l = \Lambda \delta_l \lambda_{max,l}` by the smallest :math:`\lambda_l` that gives the
layer that share of zeros (:mod:`ecqx_tf.rate_control`); ``relevance_batches`` feeds the LRP with
the batch just trained on instead of a batch of ``relevance_data``.

Each kernel is assigned in one linear pass (:func:`ecqx_tf.assign_fast.assign_layer`, equal to
the reference functions of :mod:`ecqx_tf.assign`; ``assignment="reference"`` uses those).

Under ``tf.distribute`` strategies the callback runs in the cross-replica context, so the same
indices and relevances are written to every replica (replica-consistent by construction). Under
``MultiWorkerMirroredStrategy`` every worker runs its own callback; they take the chief's seed
for the relevance batches and compare fingerprints of their state at the start of training and
after every refresh, raising :class:`~ecqx_tf.keras.multiworker.WorkersDisagreeError` on all
workers if they differ (:mod:`ecqx_tf.keras.multiworker`).
"""
from __future__ import annotations

import logging
from typing import Dict

import numpy as np
import tensorflow as tf

from ..assign_fast import ASSIGNMENTS, layer_lambda_fast
from ..config import validate_choice, validate_positive_int, validate_unit_interval
from ..rate_control import (
    TARGET_SCOPES,
    Lambda_for_model_sparsity,
    lambda_for_layer_cap,
    lambda_for_sparsity,
    ramp,
    sparsity_targets,
)
from .api import check_relevance_data as _check_relevance_data
from .api import copy_weights as _copy_weights
from .api import ecq_layers, relevance_data_of, strip
from .multiworker import WorkerSync

__all__ = ["ECQxCallback"]

log = logging.getLogger(__name__)

#: Samples per LRP pass of a refresh (the ``batch_size`` default of
#: :func:`ecqx_tf.relevance.weight_relevance`, which the NumPy path calls).
_LRP_CHUNK = 64


@tf.function(jit_compile=True, autograph=False)
def _snap(centroids: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """``centroids[indices]``, the snapped kernel: a pure copy, compiled with XLA, whose gather is
    several times faster on the CPU than TensorFlow's own gather kernel."""
    return tf.gather(centroids, indices)


class ECQxCallback(tf.keras.callbacks.Callback):
    r"""Refresh relevances and assignments during ``fit``.

    Args:
        relevance_data: ``x`` alone or a tuple ``(x, y)`` for LRP (see :func:`ecqx_tf.quantize`);
            defaults to what :func:`ecqx_tf.quantize` was given.
        relevance_target: where relevance starts (``"auto"``, ``"label"``, ``"predicted"``,
            ``"output"``) for ``relevance_data`` given here; default the one of ``quantize``.
        refresh_every: re-assign after every k-th optimizer step (1 = every step, as the paper).
        relevance_batch_size: samples per LRP batch (cycled through ``relevance_data``).
        alpha: EMA factor of the relevance (0.1, as the authors' train.py).
        backend: LRP backend for training, ``"native"`` (default) or ``"innvestigate"``.
        composite: LRP composite name (``ecqx_tf.relevance.COMPOSITES``).
        seed: order in which relevance batches are drawn (multi-worker: the chief's is used).
        assignment: ``"fast"`` (default, linear in the weights) or ``"reference"`` (the
            reference functions; identical results, for verification and benchmarks).
        target_sparsity: ``None`` (default: the paper's layer lambda from ``Lambda``), a share of
            zeros in [0, 1] for every quantized kernel, or a mapping kernel key -> share (kernels
            left out keep the paper's lambda). Each refresh sets the kernel's lambda to
            :func:`ecqx_tf.rate_control.lambda_for_sparsity` of its current float kernel; ECQx then
            moves zeros within its band ``[S - p, S]``.
        target_scope: ``"layer"`` (default: each kernel gets the target) or ``"model"`` (one
            float target for all kernels together: the paper's layer lambda with the
            :math:`\Lambda` of :func:`ecqx_tf.rate_control.Lambda_for_model_sparsity`, recomputed
            at every refresh; the allocation between layers stays the paper's).
        max_layer_sparsity: with ``target_scope="model"``, the largest share of zeros any one
            kernel may get (e.g. 0.99); the zeros it refuses go to the other kernels
            (:func:`ecqx_tf.rate_control.Lambda_for_model_sparsity`). ``None`` (default): the
            paper's allocation without a limit, which can empty a kernel that dominates the
            weight count (then the output no longer depends on the input; a warning says so).
        warmup_steps: ramp ``Lambda`` (or the targets) from 0 over this many optimizer steps,
            :math:`r(t) = 1 - (1 - t/T)^{k}` (:func:`ecqx_tf.rate_control.ramp`); 0 (default) = off.
        warmup_power: the exponent k of the ramp (default 3, as tfmot's gradual pruning).
        relevance_batches: ``None`` (default: batches of ``relevance_data``) or a function
            ``(epoch, batch) -> (x, y)`` returning the training batch that ``fit`` just trained
            on (see :class:`ecqx_tf.keras.finetune.TrainingOrder`); LRP then runs on it, as in the
            paper's training loop.
    """

    #: Native backend: relevance in one ``tf.function`` (:meth:`_native_relevances`); False takes
    #: the NumPy path (mirror synced with ``set_weights``), kept to verify the fused one.
    _fuse_relevance: bool = True

    def __init__(
        self,
        relevance_data=None,
        refresh_every: int = 1,
        relevance_batch_size: int = 64,
        alpha: float = 0.1,
        backend: str = "native",
        composite: str = "epsilon_plus_flat",
        seed: int = 0,
        relevance_target: str = "auto",
        assignment: str = "fast",
        target_sparsity=None,
        target_scope: str = "layer",
        max_layer_sparsity=None,
        warmup_steps: int = 0,
        warmup_power: float = 3.0,
        relevance_batches=None,
    ):
        super().__init__()
        ASSIGNMENTS.get(assignment)  # unknown name -> ValueError listing the accepted ones
        self.assignment = assignment
        self.relevance_data = relevance_data
        self.relevance_target = relevance_target
        self.refresh_every = validate_positive_int("refresh_every", refresh_every)
        self.relevance_batch_size = validate_positive_int("relevance_batch_size", relevance_batch_size)
        self.alpha = validate_unit_interval("alpha", alpha)
        from ..relevance import BACKENDS, get_composite

        BACKENDS.get(backend)  # unknown names fail here, not inside fit
        get_composite(composite)
        self.backend = backend
        self.composite = composite
        self.seed = int(seed)
        # values checked now, kernel names at train begin
        sparsity_targets(target_sparsity, list(target_sparsity) if hasattr(target_sparsity, "keys") else ["every kernel"])
        self.target_sparsity = target_sparsity
        self.target_scope = validate_choice("target_scope", target_scope, TARGET_SCOPES)
        if target_scope == "model" and hasattr(target_sparsity, "keys"):
            raise ValueError("target_scope='model' takes one share of zeros for the whole model, got a mapping per kernel")
        if max_layer_sparsity is not None:
            if target_scope != "model" or target_sparsity is None:
                raise ValueError("max_layer_sparsity limits the allocation of a target for the whole model: it needs "
                                 f"target_sparsity and target_scope='model', got target_sparsity={target_sparsity!r}, "
                                 f"target_scope={target_scope!r}")
            validate_unit_interval("max_layer_sparsity", max_layer_sparsity)
        self.max_layer_sparsity = None if max_layer_sparsity is None else float(max_layer_sparsity)
        ramp(0, warmup_steps, warmup_power)  # checks both
        self.warmup_steps = int(warmup_steps)
        self.warmup_power = float(warmup_power)
        if relevance_batches is not None and not callable(relevance_batches):
            raise TypeError(f"relevance_batches must be a function (epoch, batch) -> (x, y), got {relevance_batches!r}")
        self.relevance_batches = relevance_batches
        self.refreshes = 0
        self._steps = 0
        self._epoch = 0
        self._batch = 0

    def get_config(self) -> dict:
        return {
            "refresh_every": self.refresh_every,
            "relevance_batch_size": self.relevance_batch_size,
            "alpha": self.alpha,
            "backend": self.backend,
            "composite": self.composite,
            "seed": self.seed,
            "relevance_target": self.relevance_target,
            "assignment": self.assignment,
            "target_sparsity": self.target_sparsity if not hasattr(self.target_sparsity, "keys") else dict(self.target_sparsity),
            "target_scope": self.target_scope,
            "max_layer_sparsity": self.max_layer_sparsity,
            "warmup_steps": self.warmup_steps,
            "warmup_power": self.warmup_power,
        }

    # -- Keras hooks -------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._slots = ecq_layers(self.model)
        if not self._slots:
            raise ValueError("ECQxCallback: the model has no ECQ-quantized layer (use ecqx_tf.quantize)")
        self._n_largest = max(int(np.prod(s.kernel.shape)) for s in self._slots)
        self._targets = None
        if self.target_scope == "layer":
            self._targets = sparsity_targets(self.target_sparsity, [s.name for s in self._slots])
        self._needs_relevance = any(s.config.method == "ecqx" for s in self._slots)
        self._mirror = None
        if self._needs_relevance:
            self._mirror = strip(self.model)
            self._check_engine()
            if self.relevance_data is not None:
                data = _check_relevance_data(self._mirror, self.relevance_data, self.relevance_target)
            else:
                data = relevance_data_of(self.model)
            if data is None:
                raise ValueError("ECQxCallback: method 'ecqx' needs relevance_data: x alone or (x, y) (here or in quantize())")
            self._x, self._y, self._mode = data.x, data.y, data.mode
            self._rng = np.random.default_rng(self.seed)
            self._order = self._rng.permutation(len(self._x))
            self._cursor = 0
        self._ema: Dict[str, np.ndarray] = {}
        self._start_workers()

    def _start_workers(self) -> None:
        """Multi-worker: every worker draws relevance batches with the chief's seed, and the
        workers' relevance data, layer configurations, grids and settings must agree."""
        self._sync = WorkerSync.for_model(self.model)
        if self._sync is None:
            return
        seed = self._sync.chief_seed(self.seed)
        data = (self._x, getattr(self, "_y", None)) if self._needs_relevance else ()
        self._sync.check_start(self._slots, self.get_config(), data)
        if self._needs_relevance and seed != self.seed:
            self._rng = np.random.default_rng(seed)
            self._order = self._rng.permutation(len(self._x))
            self._cursor = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._ema = {}
        self._epoch = int(epoch)

    def on_train_batch_end(self, batch, logs=None):
        self._batch = int(batch)
        self._steps += 1
        if self._steps % self.refresh_every == 0:
            self.refresh()

    def on_train_end(self, logs=None):
        if self._steps % self.refresh_every != 0:
            self.refresh()
        for s in self._slots:
            c = s.centroids.numpy()
            if not np.any(c[s.indices.numpy()]):
                log.warning("ECQxCallback: every weight of %s is zero after training: the output no longer depends on "
                            "the input through it. Lower the sparsity target or Lambda%s.", s.name,
                            ", or set max_layer_sparsity (e.g. 0.99)" if self.target_scope == "model"
                            and self.target_sparsity is not None and self.max_layer_sparsity is None else "")

    def _check_engine(self) -> None:
        """Build the relevance engine of the mirror now, so an unsupported model or backend fails
        before the first training step."""
        from ..relevance import native_engine
        from ..relevance.innvestigate_backend import check_innvestigate_support

        names = [s.name for s in self._slots if s.config.method == "ecqx"]
        engine = native_engine(self._mirror, self.composite, names)
        if self.backend == "innvestigate":
            check_innvestigate_support(engine)

    # -- the work ----------------------------------------------------------------------------
    def _next_batch(self):
        n = len(self._x)
        b = min(self.relevance_batch_size, n)
        if self._cursor + b > n:
            self._order = self._rng.permutation(n)
            self._cursor = 0
        sel = self._order[self._cursor : self._cursor + b]
        self._cursor += b
        return self._x[sel], (None if self._y is None else self._y[sel])

    def _relevances(self) -> Dict[str, np.ndarray]:
        from ..relevance import weight_relevance

        fused = self._fused_relevance_path()  # sync, LRP and moving average in one tf.function
        if not fused:
            _copy_weights(self.model, self._mirror)
        if self.relevance_batches is not None:  # the batch fit just trained on
            xb, yb = self.relevance_batches(self._epoch, self._batch)
            if self._y is None:
                yb = None
        else:
            xb, yb = self._next_batch()
        names = [s.name for s in self._slots if s.config.method == "ecqx"]  # kernel keys
        if fused:
            return self._native_relevances(xb, yb, names)
        batch_r = weight_relevance(self._mirror, xb, yb, layers=names, backend=self.backend, composite=self.composite,
                                   target=self._mode)
        for name, r in batch_r.items():
            prev = self._ema.get(name)
            self._ema[name] = r if prev is None else (1.0 - self.alpha) * r + self.alpha * prev
        return self._ema

    def _native_relevances(self, xb, yb, names) -> Dict[str, np.ndarray]:
        """The native backend's path of :meth:`_relevances`, computed in one ``tf.function`` on
        the device: the mirror's variables are assigned from the QAT model's (kernels
        ``gather(centroids, indices)``), the LRP weight relevance of the batch is computed (in
        chunks of 64 samples summed in float64, as :func:`ecqx_tf.relevance.weight_relevance`
        does), and the moving average :math:`(1-\alpha) R_{batch} + \alpha R` (float32, as the
        NumPy form) is written straight into the kernels' relevance variables. Same values as the
        NumPy path (``backend="innvestigate"`` takes that one); only the used relevances come
        back to NumPy, read from those variables."""
        from ..relevance import native_engine

        engine = native_engine(self._mirror, self.composite, names)
        xa, labels, mode = engine.check_data(xb, yb, self._mode)
        cache = getattr(self, "_fused", None)
        if cache is None or cache[0] is not self._mirror or cache[1] != (mode, xa.shape[0]):
            cache = (self._mirror, (mode, xa.shape[0]), self._fused_relevance_fn(engine, names, mode, xa.shape[0]))
            self._fused = cache
        first = not self._ema
        cache[2](tf.constant(xa), tf.constant(labels), tf.constant(1.0 / xa.shape[0], tf.float32), tf.constant(first))
        by_name = {s.name: s for s in self._slots}
        self._ema = {n: by_name[n].relevance.numpy() for n in names}
        return self._ema

    def _fused_relevance_fn(self, engine, names, mode: str, n: int):
        from .api import mirror_sources

        pairs = mirror_sources(self.model, self._mirror)
        slots = {s.name: s for s in self._slots}
        targets = [slots[k].relevance for k in engine.layer_names]
        keep, leak = tf.constant(1.0 - self.alpha, tf.float32), tf.constant(self.alpha, tf.float32)

        def body(x, labels, scale, first):
            for v, src in pairs:  # the mirror = the QAT model's current (snapped) weights
                v.assign(_snap(src.centroids, src.indices) if hasattr(src, "centroids") else src)
            parts = [engine.weight_relevance_graph(x[a : a + _LRP_CHUNK], labels[a : a + _LRP_CHUNK], scale, mode)
                     for a in range(0, n, _LRP_CHUNK)]
            batch = parts[0]
            if len(parts) > 1:  # float64 sum in batch order, then float32
                total = [tf.cast(r, tf.float64) for r in parts[0]]
                for p in parts[1:]:
                    total = [t + tf.cast(r, tf.float64) for t, r in zip(total, p)]
                batch = [tf.cast(t, tf.float32) for t in total]
            for var, r in zip(targets, batch):
                var.assign(tf.where(first, r, keep * r + leak * var))

        return tf.function(body, autograph=False)

    def refresh(self) -> None:
        """Recompute relevances (ECQx) and re-assign every quantized kernel now."""
        relevances = self._relevances() if self._needs_relevance else {}
        assign_layer = ASSIGNMENTS.get(self.assignment)
        self._model_Lambda = None
        if self.target_scope == "model" and self.target_sparsity is not None:
            frac = ramp(self._steps, self.warmup_steps, self.warmup_power)
            self._model_Lambda = Lambda_for_model_sparsity(
                [(s.kernel.numpy(), s.centroids.numpy()) for s in self._slots], self.target_sparsity * frac,
                self._n_largest, reduce=self._slots[0].config.lambda_reduce, max_layer_sparsity=self.max_layer_sparsity)
        used: Dict[str, np.ndarray] = {}
        assigned: Dict[str, np.ndarray] = {}
        for s in self._slots:
            w = s.kernel.numpy()
            c = s.centroids.numpy()
            r = None
            if s.config.method == "ecqx":
                r = used[s.name] = np.asarray(relevances[s.name], dtype=np.float32)  # stored = used
            res = self._assign(assign_layer, s, w, c, r)
            if r is not None:
                self._store_relevance(s, r)
            s.indices.assign(res.indices)
            assigned[s.name] = res.indices
        self.refreshes += 1
        if getattr(self, "_sync", None) is not None:
            self._sync.check_refresh(assigned, used, self.refreshes)

    def _store_relevance(self, s, r: np.ndarray) -> None:
        """Write the used relevance to the kernel's relevance variable, unless the fused native
        path (:meth:`_native_relevances`) already holds it there."""
        if not self._fused_relevance_path():
            s.relevance.assign(r)

    def _fused_relevance_path(self) -> bool:
        return self.backend == "native" and self._fuse_relevance


    def _assign(self, assign_layer, s, w, c, r):
        """One kernel's assignment with the paper's lambda from ``Lambda`` (times the warm-up ramp),
        or with the lambda of its (ramped) sparsity target."""
        frac = ramp(self._steps, self.warmup_steps, self.warmup_power)
        target = None if self._targets is None else self._targets.get(s.name)
        if target is None:
            Lam = s.config.Lambda * frac if self._model_Lambda is None else self._model_Lambda
            if self._model_Lambda is not None and self.max_layer_sparsity is not None:
                cap = lambda_for_layer_cap(w, c, self.max_layer_sparsity)
                if layer_lambda_fast(w, c, Lam, int(w.size), self._n_largest, reduce=s.config.lambda_reduce) > cap:
                    return _assign_with_lambda(self.assignment, w, c, cap, s.config.method, r, s.config.p)
            return assign_layer(
                w, c, Lam, self._n_largest,
                method=s.config.method, relevance=r, p=s.config.p, reduce=s.config.lambda_reduce,
            )
        lam = lambda_for_sparsity(w, c, target * frac)
        return _assign_with_lambda(self.assignment, w, c, lam, s.config.method, r, s.config.p)


class _Assigned:
    def __init__(self, indices):
        self.indices = indices


def _assign_with_lambda(assignment: str, w, c, lam: float, method: str, r, p: float) -> _Assigned:
    """ECQ / ECQx assignment of ``w`` with the layer lambda ``lam`` given directly."""
    if assignment == "reference":
        from ..assign import ecq_assign, ecqx_assign
    else:
        from ..assign_fast import ecq_assign_fast as ecq_assign
        from ..assign_fast import ecqx_assign_fast as ecqx_assign
    if method == "ecqx":
        return _Assigned(ecqx_assign(w, c, lam, r, p=p))
    return _Assigned(ecq_assign(w, c, lam))
