"""Quantization-aware training with a per-layer ``ECQQuantizeConfig`` (shared by weight sharing and
mixed precision).

``ecqx_tf.quantize`` takes one ``bits`` for every layer. :func:`quantize_per_layer` builds the same
annotated model itself, with one config per layer, and reuses ``ecqx_tf.keras.api`` for the
checks, tfmot's ``quantize_apply``, the initial assignment and the relevance-data registration,
so the result is an ordinary model in ECQ training: ``ECQxCallback``, ``strip``,
``quantization_info``, ``save_model``/``load_model`` and ``ecqx-export`` work on it unchanged.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from ..keras import api as _api
from ..keras.callback import ECQxCallback
from ..keras.finetune import EpochTimer, FinetuneResult, evaluate_logits
from ..keras.quantize_config import ECQQuantizeConfig

__all__ = ["quantize_per_layer", "finetune_qat", "MaskCallback", "kernel_masks_of"]


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
    _api._check_model(model)
    if not configs:
        raise ValueError("configs is empty; give at least one layer name -> ECQQuantizeConfig")
    quantizable = [l.name for l in _api._quantizable(model, ())]
    for name, cfg in configs.items():
        if name not in quantizable:
            raise ValueError(f"configs names layer {name!r}, which is not a quantizable layer; accepted: {quantizable}")
        if not isinstance(cfg, ECQQuantizeConfig):
            raise TypeError(f"configs[{name!r}] must be an ECQQuantizeConfig, got {type(cfg).__name__}")
    if any(c.method == "ecqx" for c in configs.values()) and relevance_data is None:
        raise ValueError("method='ecqx' needs relevance_data: x alone, or a tuple (x, y), for LRP")
    if relevance_data is not None:
        relevance_data = _api._check_relevance_data(model, relevance_data)
    qmodel = _api._quantize_apply(model, dict(configs))
    if initialize:
        _api.initialize_assignment(qmodel)
    if relevance_data is not None:
        _api._RELEVANCE_DATA[qmodel] = relevance_data
    return qmodel


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
