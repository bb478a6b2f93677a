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

__all__ = ["EpochTimer", "FinetuneResult", "LR_SCHEDULES", "learning_rate", "quantize_and_train", "evaluate_logits"]


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
    **quantize_kwargs,
) -> FinetuneResult:
    """Quantize ``model`` (not modified) and fine-tune it with ECQ/ECQx. Defaults:
    ``ecqx_tf.config.ECQ_DEFAULTS`` (the authors' values; shared with the command lines).

    ``relevance_samples`` training samples (a fixed seeded subset) feed the LRP relevances.
    With ``strategy`` the model is quantized and trained inside ``strategy.scope()``.
    ``lr_schedule``: ``"constant"`` (the authors' default) or ``"cosine"`` (see :func:`learning_rate`).
    """
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
    cb = ECQxCallback(refresh_every=refresh_every, relevance_batch_size=batch_size, seed=seed)
    hist = qmodel.fit(
        x_train, y_train, epochs=epochs, batch_size=batch_size, shuffle=True,
        callbacks=[cb, timer], verbose=verbose,
    )
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
