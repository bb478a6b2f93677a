"""Agreement between the workers of a multi-worker training (``tf.distribute``), for
:class:`ecqx_tf.keras.callback.ECQxCallback`.

Under ``MultiWorkerMirroredStrategy`` every worker runs its own copy of the callback. The float
kernels are identical on all workers after each all-reduced optimizer step, so every worker's
refresh gives the same indices **if** it uses the same relevance batches, relevance data and
configuration. :class:`WorkerSync` makes that so, or stops training with a clear error:

* at the start of training the callback takes the chief's seed for the order of the relevance
  batches (the seed is all-gathered; every worker uses the chief's), and compares a fingerprint
  of the relevance data, of every quantized layer's configuration and grid, and of the callback's
  own settings across the workers;
* after every refresh it compares a fingerprint of every kernel's indices and relevance across
  the workers and raises on all workers at the same step if any differ (so no worker is left
  waiting in a collective and no worker saves a model the others disagree with).

The fingerprints are two 64-bit sums over the arrays' bytes (:func:`fingerprint`): one plain,
one with a fixed pseudo-random odd multiplier per position (period 4096), so a change of any
byte, or a swap of values, changes them except with negligible probability. They cost about one
pass over the arrays; the collectives carry a few integers per kernel.
"""
from __future__ import annotations

import json
import zlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

__all__ = ["WorkerSync", "WorkersDisagreeError", "fingerprint"]

_PERIOD = 4096
_MULT = (np.random.default_rng(0x5EC0).integers(0, 2**63, _PERIOD, dtype=np.uint64) * np.uint64(2) + np.uint64(1))
_CHUNK_WORDS = 1 << 18


class WorkersDisagreeError(RuntimeError):
    """Raised on every worker when the workers' quantization state differs."""


def fingerprint(*arrays: Any) -> np.ndarray:
    """Two uint64 words (as int64) identifying the bytes of ``arrays`` (any dtypes and shapes).

    .. math::  s_1 = \\sum_i u_i, \\qquad s_2 = \\sum_i u_i \\, m_{i \\bmod 4096} \\pmod{2^{64}}

    over the 64-bit words :math:`u_i` of each array's bytes (C order, zero-padded to 8 bytes,
    the shape and dtype folded in), :math:`m` fixed odd pseudo-random multipliers.
    """
    s1 = np.uint64(0)
    s2 = np.uint64(0)
    with np.errstate(over="ignore"):
        for k, a in enumerate(arrays):
            a = np.ascontiguousarray(a)
            head = f"{a.dtype.str}{a.shape}".encode()
            s1 += np.uint64(zlib.crc32(head)) + np.uint64(k)
            b = a.reshape(-1).view(np.uint8)
            pad = (-b.size) % 8
            if pad:
                b = np.concatenate([b, np.zeros(pad, np.uint8)])
            u = b.view(np.uint64)
            s1 += u.sum(dtype=np.uint64)
            for a0 in range(0, u.size, _CHUNK_WORDS):
                part = u[a0 : a0 + _CHUNK_WORDS]
                full = part.size - part.size % _PERIOD
                if full:
                    s2 += (part[:full].reshape(-1, _PERIOD) * _MULT).sum(dtype=np.uint64)
                if part.size > full:
                    s2 += (part[full:] * _MULT[: part.size - full]).sum(dtype=np.uint64)
    return np.array([s1, s2], dtype=np.uint64).view(np.int64)


def _config_fingerprint(obj: Any) -> int:
    return zlib.crc32(json.dumps(obj, sort_keys=True, default=str).encode())


class WorkerSync:
    """All-gather based agreement checks between the workers of ``strategy``.

    Use :meth:`for_model`, which returns None when there is only one worker (nothing to agree on).
    All methods are collective: every worker must call them in the same order.
    """

    def __init__(self, strategy: tf.distribute.Strategy, task: str, is_chief: bool, n_workers: int):
        self.strategy = strategy
        self.task = task
        self.is_chief = is_chief
        self.n_workers = n_workers
        self._gather_fn = None

    @classmethod
    def for_model(cls, model: tf.keras.Model) -> Optional["WorkerSync"]:
        strategy = getattr(model, "distribute_strategy", None)
        resolver = getattr(strategy, "cluster_resolver", None)
        if strategy is None or resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return None
        spec = resolver.cluster_spec().as_dict()
        n = sum(len(spec.get(t, [])) for t in ("chief", "worker"))
        if n <= 1:
            return None
        ttype, tid = resolver.task_type, int(resolver.task_id or 0)
        is_chief = ttype == "chief" or (ttype == "worker" and tid == 0 and "chief" not in spec)
        return cls(strategy, f"{ttype}:{tid}", is_chief, n)

    # -- the collective ----------------------------------------------------------------------
    def gather(self, values: Sequence[int]) -> np.ndarray:
        """All-gather a vector of int64 from every replica: ``[n_replicas, len(values)]``."""
        if self._gather_fn is None:

            @tf.function(autograph=False)
            def fn(v):
                # the identity places the value on this replica's device (all_gather needs one)
                return tf.distribute.get_replica_context().all_gather(tf.identity(v), axis=0)

            self._gather_fn = fn
        v = tf.constant(np.asarray(values, dtype=np.int64)[None, :])
        out = self.strategy.run(self._gather_fn, args=(v,))
        return np.asarray(self.strategy.experimental_local_results(out)[0].numpy())

    # -- agreements --------------------------------------------------------------------------
    def chief_seed(self, seed: int) -> int:
        """The chief's ``seed`` on every worker."""
        rows = self.gather([1 if self.is_chief else 0, int(seed)])
        chief = rows[rows[:, 0] == 1]
        if chief.size == 0:  # pragma: no cover - a cluster without a chief is not a TF cluster
            raise WorkersDisagreeError("ECQxCallback: no chief worker found in the cluster")
        return int(chief[0, 1])

    def check(self, what: Dict[str, np.ndarray], when: str) -> None:
        """Raise :class:`WorkersDisagreeError` on every worker unless every worker has the same
        fingerprint (int64 vector) for each name in ``what`` (same names, same order everywhere)."""
        names = list(what)
        vec = np.concatenate([np.asarray(what[k], dtype=np.int64).reshape(-1) for k in names]) if names else np.zeros(0, np.int64)
        rows = self.gather(vec)
        differ = np.any(rows != rows[0:1], axis=0)
        if not differ.any():
            return
        bad: List[str] = []
        pos = 0
        for k in names:
            size = np.asarray(what[k]).size
            if differ[pos : pos + size].any():
                bad.append(k)
            pos += size
        raise WorkersDisagreeError(
            f"ECQxCallback: {when}, the workers disagree on {', '.join(bad)} (fingerprints differ "
            f"between the {self.n_workers} workers; this worker is {self.task}). Every worker must "
            "quantize the same float model with the same quantize() arguments, pass the same "
            "relevance_data and callback settings, and compute deterministically (same TensorFlow "
            "build and thread settings); training is stopped so that no worker saves a model the "
            "others disagree with."
        )

    def check_start(self, slots: Sequence[Any], callback_config: Dict[str, Any], data: Tuple[Any, ...]) -> None:
        """Compare relevance data, layer configurations and grids, and callback settings."""
        what = {
            "the callback settings": np.array([_config_fingerprint({k: v for k, v in callback_config.items() if k != "seed"})]),
            "the quantized layers and their configurations": np.array(
                [_config_fingerprint([[s.name, s.config.get_config()] for s in slots])]
            ),
        }
        for s in slots:
            what[f"the grid of {s.name!r}"] = fingerprint(s.centroids.numpy(), s.step.numpy())
        arrays = [a for a in data if a is not None]
        if arrays:
            what["relevance_data"] = fingerprint(*arrays)
        self.check(what, "at the start of training")

    def check_refresh(self, indices: Dict[str, np.ndarray], relevances: Dict[str, np.ndarray], refresh: int) -> None:
        """Compare every kernel's indices (and relevance, ECQx) after a refresh."""
        what = {}
        for name, idx in indices.items():
            what[f"the indices of {name!r}"] = fingerprint(idx)
            if name in relevances:
                what[f"the relevance of {name!r}"] = fingerprint(relevances[name])
        self.check(what, f"after refresh {refresh}")
