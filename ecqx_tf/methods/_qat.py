"""Quantization-aware training with a per-layer ``ECQQuantizeConfig`` (shared by weight sharing and
mixed precision).

``ecqx_tf.quantize`` takes one ``bits`` for every layer; ``ecqx_tf.keras.api.quantize_per_layer``
(re-exported here) takes one config per layer. The result is an ordinary model in ECQ training:
``ECQxCallback``, ``strip``, ``quantization_info``, ``save_model``/``load_model`` and
``ecqx-export`` work on it unchanged.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from ..keras import api as _api
from ..keras.api import quantize_per_layer
from ..keras.callback import ECQxCallback
from ..keras.finetune import EpochTimer, FinetuneResult, evaluate_logits

__all__ = ["quantize_per_layer", "finetune_qat", "MaskCallback", "kernel_masks_of"]


class MaskCallback(tf.keras.callbacks.Callback):
    """Keep pruned weights at zero: after every optimizer step (and at the start) each masked
    variable is multiplied by its 0/1 mask, so every forward pass sees the zeros.

    Args:
        masks: list of ``(variable, mask)`` pairs (mask of the variable's shape, 0 = pruned).
    """

    def __init__(self, masks: Sequence[Tuple[tf.Variable, np.ndarray]]):
        super().__init__()
        self.masks = [(v, tf.constant(np.asarray(m, np.float32))) for v, m in masks]

    def apply(self) -> None:
        for v, m in self.masks:
            v.assign(v * m)

    def on_train_begin(self, logs=None):
        self.apply()

    def on_train_batch_end(self, batch, logs=None):
        self.apply()


def kernel_masks_of(qmodel: tf.keras.Model, masks: Mapping[str, np.ndarray]) -> List[Tuple[tf.Variable, np.ndarray]]:
    """``(shadow kernel variable, mask)`` pairs of a model in ECQ training, by layer name."""
    slots = {s.name: s for s in _api.ecq_layers(qmodel)}
    out = []
    for name, m in masks.items():
        if name in slots:
            out.append((slots[name].kernel, m))
    return out



def finetune_qat(
    qmodel: tf.keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    refresh_every: int = 1,
    verbose: int = 0,
) -> FinetuneResult:
    """Compile and fit a model in ECQ training with :class:`ECQxCallback` (``epochs=0``: no
    training), then strip and evaluate, as :func:`ecqx_tf.keras.finetune.quantize_and_train` does.
    ``callbacks`` run BEFORE the refresh of every step (e.g. :class:`MaskCallback`)."""
    tf.keras.utils.set_random_seed(seed)
    qmodel.compile(
        optimizer=tf.keras.optimizers.Adam(lr),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    timer = EpochTimer()
    cb = ECQxCallback(refresh_every=refresh_every, relevance_batch_size=batch_size, seed=seed)
    history: Dict[str, List[float]] = {}
    if epochs > 0:
        hist = qmodel.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, shuffle=True,
                          callbacks=list(callbacks) + [cb, timer], verbose=verbose)
        history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    stripped = _api.strip(qmodel)
    return FinetuneResult(
        qmodel=qmodel,
        stripped=stripped,
        test_accuracy=evaluate_logits(qmodel, x_test, y_test),
        stripped_accuracy=evaluate_logits(stripped, x_test, y_test),
        stats=_api.layer_stats(qmodel),
        epoch_seconds=timer.seconds,
        history=history,
        refreshes=cb.refreshes,
    )
