"""One call that does the whole quantization-aware fine-tuning: ``quantize`` + ``compile`` +
``fit`` with :class:`ECQxCallback`, then evaluation of the stripped model. Used by the CLI, the
demo, the evidence script and the benchmarks, so they all train the same way."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from ..config import ECQ_DEFAULTS, LR_SCHEDULES, validate_choice
from .api import layer_stats, quantize, strip
from .callback import ECQxCallback

__all__ = ["EpochTimer", "FinetuneResult", "LR_SCHEDULES", "RELEVANCE_SOURCES", "TrainingOrder", "learning_rate",
           "quantize_and_train", "evaluate_logits"]

#: Where ECQx's LRP batches come from in :func:`quantize_and_train`: ``"subset"`` (a fixed seeded
#: subset of the training data, cycled) or ``"batch"`` (the batch just trained on, as the paper).
RELEVANCE_SOURCES = ("subset", "batch")


log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class FinetuneResult:
    """Attributes:
        qmodel: the model in quantization-aware training (save with ``ecqx_tf.save_model``).
        stripped: plain Keras model with kernels = assigned centroids.
        test_accuracy: accuracy of ``qmodel`` (8-bit fake-quantized activations) on the test split.
        stripped_accuracy: accuracy of ``stripped`` (float activations).
        stats: ``layer_stats(qmodel)`` rows (the last row is the total).
        epoch_seconds: wall-clock seconds of each epoch (callback work included).
        history: Keras history.
    """

    qmodel: tf.keras.Model
    stripped: tf.keras.Model
    test_accuracy: float
    stripped_accuracy: float
    stats: List[dict]
    epoch_seconds: List[float]
    history: Dict[str, List[float]]
    refreshes: int


class EpochTimer(tf.keras.callbacks.Callback):
    """Wall-clock seconds of every epoch (``.seconds``), callback work included."""

    def __init__(self):
        super().__init__()
        self.seconds: List[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t)


def evaluate_logits(model, x, y, batch_size: int = 256) -> float:
    """Top-1 accuracy of a logits model."""
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(y).reshape(-1)))


def quantize_and_train(
    model: tf.keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    bits: int = ECQ_DEFAULTS["bits"],
    method: str = ECQ_DEFAULTS["method"],
    Lambda: float = ECQ_DEFAULTS["Lambda"],
    p: float = ECQ_DEFAULTS["p"],
    grid: str = ECQ_DEFAULTS["grid"],
    epochs: int = ECQ_DEFAULTS["epochs"],
    batch_size: int = ECQ_DEFAULTS["batch_size"],
    lr: float = ECQ_DEFAULTS["lr"],
    lr_schedule: str = ECQ_DEFAULTS["lr_schedule"],
    refresh_every: int = ECQ_DEFAULTS["refresh_every"],
    relevance_samples: int = ECQ_DEFAULTS["relevance_samples"],
    exclude: Sequence[str] = (),
    seed: int = ECQ_DEFAULTS["seed"],
    verbose: int = 0,
    strategy: Optional[tf.distribute.Strategy] = None,
    target_sparsity=None,
    target_scope: str = "layer",
    max_layer_sparsity=None,
    lambda_warmup: float = 0.0,
    relevance_source: str = "subset",
    **quantize_kwargs,
) -> FinetuneResult:
    """Quantize ``model`` (not modified) and fine-tune it with ECQ/ECQx. Defaults:
    ``ecqx_tf.config.ECQ_DEFAULTS`` (the authors' values; shared with the command lines).

    ``relevance_samples`` training samples (a fixed seeded subset) feed the LRP relevances.
    With ``strategy`` the model is quantized and trained inside ``strategy.scope()``.
    ``lr_schedule``: ``"constant"`` (the authors' default) or ``"cosine"`` (see :func:`learning_rate`).

    Options of :class:`ECQxCallback` (``docs/frontier.md``; the defaults change nothing):
    ``target_sparsity`` (a share of zeros per kernel, or a mapping kernel key -> share, that sets
    each layer's lambda instead of ``Lambda``; ``target_scope="model"``: one share for all
    kernels together, the paper's allocation between layers; ``max_layer_sparsity``: with it, no
    kernel gets more than that share of zeros); ``lambda_warmup``, the fraction of the run's
    optimizer steps over which ``Lambda`` (or the target) ramps up from 0 (cubic, as gradual
    pruning; 0 = off); ``relevance_source``: ``"subset"`` (default) or ``"batch"``, ECQx's LRP on
    the batch just trained on (the data then come from a :class:`TrainingOrder` instead of Keras'
    shuffling, so the batch order differs from the default's).
    """
    validate_choice("relevance_source", relevance_source, RELEVANCE_SOURCES)
    if isinstance(lambda_warmup, bool) or not isinstance(lambda_warmup, (int, float)) or not 0.0 <= lambda_warmup <= 1.0:
        raise ValueError(f"lambda_warmup must be a fraction of the run in [0, 1], got {lambda_warmup!r}")
    steps_per_epoch = int(np.ceil(len(x_train) / batch_size))
    warmup_steps = int(round(lambda_warmup * epochs * steps_per_epoch))
    schedule = learning_rate(lr, lr_schedule, epochs * int(np.ceil(len(x_train) / batch_size)))
    tf.keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    sel = rng.permutation(len(x_train))[: min(relevance_samples, len(x_train))]
    relevance_data = (x_train[sel], y_train[sel]) if method == "ecqx" else None
    scope = strategy.scope() if strategy is not None else _null()
    with scope:
        qmodel = quantize(
            model, bits=bits, method=method, Lambda=Lambda, p=p, grid=grid,
            relevance_data=relevance_data, exclude=exclude, **quantize_kwargs,
        )
        qmodel.compile(
            optimizer=tf.keras.optimizers.Adam(schedule),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    timer = EpochTimer()
    order = TrainingOrder(x_train, y_train, batch_size, seed) if relevance_source == "batch" else None
    cb = ECQxCallback(refresh_every=refresh_every, relevance_batch_size=batch_size, seed=seed,
                      target_sparsity=target_sparsity, target_scope=target_scope,
                      max_layer_sparsity=max_layer_sparsity, warmup_steps=warmup_steps,
                      relevance_batches=None if order is None or method != "ecqx" else order.batch)
    if order is None:
        hist = qmodel.fit(
            x_train, y_train, epochs=epochs, batch_size=batch_size, shuffle=True,
            callbacks=[cb, timer], verbose=verbose,
        )
    else:
        hist = qmodel.fit(order.dataset(epochs), epochs=epochs, steps_per_epoch=order.steps_per_epoch,
                          callbacks=[cb, timer], verbose=verbose)
    stripped = strip(qmodel)
    return FinetuneResult(
        qmodel=qmodel,
        stripped=stripped,
        test_accuracy=evaluate_logits(qmodel, x_test, y_test),
        stripped_accuracy=evaluate_logits(stripped, x_test, y_test),
        stats=layer_stats(qmodel),
        epoch_seconds=timer.seconds,
        history={k: [float(v) for v in vs] for k, vs in hist.history.items()},
        refreshes=cb.refreshes,
    )


class TrainingOrder:
    r"""A training order that a callback can replay: epoch ``e`` visits the samples in the order
    of the permutation ``numpy.random.default_rng([seed, e]).permutation(N)``, in batches of
    ``batch_size`` (the last one smaller), so :meth:`batch` ``(e, i)`` is exactly the i-th batch
    of epoch e that ``fit`` receives from :meth:`dataset` (one ``tf.data`` pipeline over all the
    epochs, read in order by Keras). Keras callbacks do not see the batch; this is how
    ``relevance_source="batch"`` gives ECQx's LRP the batch just trained on."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int = 0):
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x and y must have the same non-zero length, got {len(x)} and {len(y)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.steps_per_epoch = int(np.ceil(len(x) / self.batch_size))

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, int(epoch)]).permutation(len(self.x))

    def indices(self, epoch: int, batch: int) -> np.ndarray:
        return self.permutation(epoch)[batch * self.batch_size : (batch + 1) * self.batch_size]

    def batch(self, epoch: int, batch: int):
        """``(x, y)`` of batch ``batch`` of epoch ``epoch``."""
        sel = self.indices(epoch, batch)
        return self.x[sel], self.y[sel]

    def dataset(self, epochs: int) -> tf.data.Dataset:
        """All ``epochs`` epochs in order (for ``fit(..., steps_per_epoch=self.steps_per_epoch)``)."""
        perms = np.stack([self.permutation(e) for e in range(epochs)]).astype(np.int64)
        x = tf.constant(self.x)
        y = tf.constant(self.y)
        b = self.batch_size
        ds = tf.data.Dataset.from_tensor_slices(perms).flat_map(lambda p: tf.data.Dataset.from_tensor_slices(p).batch(b))
        return ds.map(lambda i: (tf.gather(x, i), tf.gather(y, i)))


def learning_rate(lr: float, schedule: str, total_steps: int):
    r"""Adam's learning rate: ``lr`` for ``"constant"``; for ``"cosine"``
    :math:`\eta_t = \eta \cdot \tfrac12 (1 + \cos(\pi t / T))` over the ``T = total_steps``
    optimizer steps of the run (Loshchilov & Hutter 2017, without restarts), so the last steps
    barely move the float shadow weights and the final assignment settles instead of flipping
    weights between 0 and a centroid up to the last step (measured in docs/ecq-evidence.md)."""
    validate_choice("lr_schedule", schedule, LR_SCHEDULES)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if schedule == "constant":
        return float(lr)
    if total_steps < 1:
        raise ValueError(f"a cosine schedule needs at least one step, got {total_steps}")
    return tf.keras.optimizers.schedules.CosineDecay(float(lr), int(total_steps), alpha=0.0)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
