"""Float (unquantized) training of a zoo model on a data set, reproducible from a seed.

Library: ``train_float("mnist_mlp", "mnist_bundled", epochs=10, out_dir="out/float")``.
Command line (``ecqx-train``, in ``cli/train.py``)::

    ecqx-train --model mnist_mlp --data mnist_bundled --epochs 10 --out out/float \\
        [--data-path PATH] [--seed 0] [--batch-size 64] [--lr 1e-3] [--patience 3]

Training: Adam(lr) on ``SparseCategoricalCrossentropy(from_logits=True)`` (zoo models output
logits), ``validation_split`` of the training inputs held out (Keras takes the *last* fraction,
before shuffling), ``ModelCheckpoint`` of the best validation loss and ``EarlyStopping(patience,
restore_best_weights=True)``; at the end the best-validation weights are loaded (also when early
stopping never triggered), then the model is evaluated on the test split.

Outputs (when ``out_dir`` is given), each written atomically (temporary file in the same folder,
then ``os.replace``): ``model.keras`` (Keras v3 ``.keras`` format, loads with
``tf.keras.models.load_model`` without custom objects) and ``metrics.json``.

Reproducibility and its process-wide side effects: ``train_float`` calls
``tf.keras.utils.set_random_seed(seed)``, which seeds Python's ``random``, NumPy's global generator
and TensorFlow's global seed **for the whole process**, and (``deterministic=True``)
``tf.config.experimental.enable_op_determinism()``, which is also **process-wide** and makes some
ops slower or raise on GPU. The previous determinism state is restored when training ends (through
TensorFlow's internal ``disable_op_determinism``, when available; otherwise it stays enabled).
With the same seed, data and TensorFlow build, two runs give bit-identical weights on CPU.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import numbers
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Union

import numpy as np

from ecqx_tf.config import validate_int_range
from ecqx_tf.io import atomic_write_json, atomic_write_with, check_writable_dir
from models import datasets as _datasets
from models.datasets import Dataset

if TYPE_CHECKING:  # TensorFlow and the zoo are imported where they are used: ecqx-train's parser stays light
    import tensorflow as tf

__all__ = [
    "DEFAULT_EPOCHS",
    "TrainResult",
    "train_float",
    "save_model_atomic",
    "op_determinism",
]

log = logging.getLogger(__name__)

#: Default number of epochs (10 reaches about 0.94 test accuracy with mnist_mlp on mnist_bundled).
DEFAULT_EPOCHS = 10

PathLike = Union[str, os.PathLike]


@dataclasses.dataclass(frozen=True, eq=False)
class TrainResult:
    """What ``train_float`` returns.

    Attributes:
        model: the trained model (best validation weights), compiled.
        history: Keras history, metric name -> one float per epoch run.
        test_accuracy, test_loss: on the data set's test split.
        epochs_run: epochs actually run (fewer than requested when early stopping triggered).
        best_epoch: 1-based epoch whose weights the model holds.
        seed: the seed used.
        param_count: all parameters (``model.count_params()``, BN moving statistics included).
        seconds: wall-clock seconds of building + fitting + evaluating.
        paths: ``{"model": .../model.keras, "metrics": .../metrics.json}``; empty without out_dir.
        metrics: the dictionary written to ``metrics.json``.
    """

    model: tf.keras.Model
    history: Dict[str, List[float]]
    test_accuracy: float
    test_loss: float
    epochs_run: int
    best_epoch: int
    seed: int
    param_count: int
    seconds: float
    paths: Dict[str, Path]
    metrics: Dict[str, object]


# ---------------------------------------------------------------------------------------------
# helpers


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@contextlib.contextmanager
def op_determinism(enabled: bool = True) -> Iterator[None]:
    """Enable TensorFlow op determinism inside the block and restore the previous state after.

    ``tf.config.experimental.enable_op_determinism`` is process-wide; restoring uses TensorFlow's
    internal ``disable_op_determinism`` (present in TF 2.14). If that is missing, determinism stays
    enabled after the block.
    """
    if not enabled:
        yield
        return
    try:
        from tensorflow.python.framework import config as _tf_config

        was_enabled = bool(_tf_config.is_op_determinism_enabled())
        disable = getattr(_tf_config, "disable_op_determinism", None)
    except (ImportError, AttributeError):  # pragma: no cover - other TF versions
        was_enabled, disable = False, None
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_enabled and disable is not None:
            disable()


def save_model_atomic(model: tf.keras.Model, path: PathLike) -> Path:
    """Save ``model`` in the ``.keras`` format to ``path`` atomically.

    The model is saved to a temporary ``.keras`` file in the same folder, flushed to disk and
    renamed over ``path`` with ``os.replace``, so ``path`` is either the old file or the new one.

    Raises:
        ValueError: ``path`` does not end with ``.keras``.
        PermissionError: the folder is not writable (naming it).
    """
    p = Path(path)
    if p.suffix != ".keras":
        raise ValueError(f"path must end with '.keras', got {str(p)!r}")
    return atomic_write_with(p, lambda tmp: model.save(tmp, overwrite=True))


def _resolve_dataset(dataset: Union[str, Dataset], data_path: Optional[PathLike]) -> Dataset:
    if isinstance(dataset, Dataset):
        if data_path is not None:
            raise ValueError(
                f"data_path={str(data_path)!r} is only used with a data set name, got a loaded "
                f"Dataset {dataset.name!r}"
            )
        return dataset
    if not isinstance(dataset, str):
        raise TypeError(
            f"dataset must be a data set name (one of {', '.join(_datasets.names())}) or a Dataset, "
            f"got {type(dataset).__name__}"
        )
    loader = _datasets.DATASETS.get(dataset)  # ValueError listing the accepted names
    try:
        path_param = inspect.signature(loader).parameters.get("path")
    except (TypeError, ValueError):  # pragma: no cover - builtins without signature
        path_param = None
    if data_path is None:
        if path_param is not None and path_param.default is inspect.Parameter.empty:
            raise ValueError(
                f"data set {dataset!r} is read from disk: pass its location as data_path "
                f"(--data-path PATH)"
            )
        return loader()
    if path_param is None:
        raise ValueError(
            f"data set {dataset!r} is bundled and takes no path; got data_path={str(data_path)!r}"
        )
    return loader(path=str(data_path))


def _check_labels(ds: Dataset) -> None:
    for part in ("train", "test"):
        y = np.asarray(getattr(ds, f"y_{part}"))
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"data set {ds.name!r}: y_{part} must be a 1-D array of int class labels, got "
                f"dtype {y.dtype} shape {y.shape}"
            )
        if y.size and (y.min() < 0 or y.max() >= ds.num_classes):
            raise ValueError(
                f"data set {ds.name!r}: y_{part} labels must be in [0, {ds.num_classes}), got "
                f"[{int(y.min())}, {int(y.max())}]"
            )


# ---------------------------------------------------------------------------------------------
# training


def train_float(
    model_name: str,
    dataset: Union[str, Dataset],
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    out_dir: Optional[PathLike] = None,
    patience: int = 3,
    verbose: int = 1,
    validation_split: float = 0.1,
    data_path: Optional[PathLike] = None,
    deterministic: bool = True,
) -> TrainResult:
    """Train zoo model ``model_name`` in float on ``dataset`` from seed ``seed``.

    Args:
        model_name: a zoo model name (``models.zoo.names()``).
        dataset: a data set name (``models.datasets.names()``) or a loaded ``Dataset``.
        epochs: maximum number of epochs (early stopping may end sooner).
        batch_size, lr: mini-batch size and Adam learning rate.
        seed: seeds the initial weights, the shuffling and all global generators (process-wide).
        out_dir: folder for ``model.keras`` and ``metrics.json`` (created); None writes nothing.
        patience: early-stopping patience in epochs, on the validation loss.
        verbose: Keras verbosity (0 silent, 1 progress bars, 2 one line per epoch).
        validation_split: fraction of the training inputs held out for validation, in [0, 1);
            0 monitors the training loss instead.
        data_path: folder or file for on-disk data sets (only with a data set name).
        deterministic: enable TensorFlow op determinism while training (process-wide, restored
            after; see the module docstring).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: unknown model or data set name (listing the accepted ones); the model does not
            fit the data set's input shape; out-of-range arguments or labels.
        TypeError: arguments of the wrong type.
        PermissionError: ``out_dir`` is not writable (naming it), checked before training.
    """
    import tensorflow as tf

    from models import zoo as _zoo

    _zoo.ZOO.get(model_name)  # ValueError listing the accepted names
    epochs = validate_int_range("epochs", epochs, low=1)
    batch_size = validate_int_range("batch_size", batch_size, low=1)
    seed = validate_int_range("seed", seed, low=0)
    patience = validate_int_range("patience", patience, low=0)
    if not _is_int(verbose) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a positive float, got {type(lr).__name__} {lr!r}")
    if not (float(lr) > 0 and np.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite float, got {lr!r}")
    if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real):
        raise TypeError(f"validation_split must be a float in [0, 1), got {validation_split!r}")
    if not 0.0 <= float(validation_split) < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
    out = check_writable_dir(out_dir) if out_dir is not None else None

    ds = _resolve_dataset(dataset, data_path)
    _check_labels(ds)
    n_train = len(ds.x_train)
    n_val = int(n_train * float(validation_split))
    if validation_split > 0 and (n_val < 1 or n_val >= n_train):
        raise ValueError(
            f"validation_split={validation_split} leaves {n_val} of {n_train} training inputs for "
            f"validation; need at least 1 for validation and 1 for training"
        )
    monitor = "val_loss" if validation_split > 0 else "loss"

    t0 = time.perf_counter()
    tf.keras.utils.set_random_seed(seed)
    with op_determinism(deterministic):
        try:
            model = _zoo.build(model_name, ds.input_shape, ds.num_classes, seed=seed)
        except ValueError as e:
            raise ValueError(
                f"model {model_name!r} does not fit data set {ds.name!r} (input_shape "
                f"{ds.input_shape}, {ds.num_classes} classes): {e}"
            ) from None
        model.compile(
            optimizer=tf.keras.optimizers.Adam(learning_rate=float(lr)),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        log.info("training %s on %s for up to %d epochs (seed %d)", model_name, ds.name, epochs, seed)
        with tempfile.TemporaryDirectory(prefix="ecqx-train-ckpt-") as ckdir:
            ckpt = os.path.join(ckdir, "best.weights.h5")
            callbacks = [
                tf.keras.callbacks.ModelCheckpoint(
                    ckpt, monitor=monitor, save_best_only=True, save_weights_only=True, verbose=0
                ),
                tf.keras.callbacks.EarlyStopping(
                    monitor=monitor, patience=patience, restore_best_weights=True, verbose=0
                ),
            ]
            fit = model.fit(
                ds.x_train,
                ds.y_train,
                epochs=epochs,
                batch_size=batch_size,
                validation_split=float(validation_split),
                shuffle=True,
                callbacks=callbacks,
                verbose=verbose,
            )
            if os.path.exists(ckpt):
                model.load_weights(ckpt)
        test_loss, test_acc = model.evaluate(
            ds.x_test, ds.y_test, batch_size=max(batch_size, 256), verbose=0
        )
    seconds = time.perf_counter() - t0

    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    epochs_run = len(history.get("loss", []))
    best_epoch = int(np.argmin(history[monitor])) + 1 if history.get(monitor) else epochs_run
    param_count = int(model.count_params())
    trainable = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    metrics: Dict[str, object] = {
        "model": model_name,
        "data": ds.name,
        "data_summary": ds.summary(),
        "test_accuracy": float(test_acc),
        "test_loss": float(test_loss),
        "epochs_requested": epochs,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "monitor": monitor,
        "seed": seed,
        "param_count": param_count,
        "trainable_param_count": trainable,
        "batch_size": batch_size,
        "lr": float(lr),
        "patience": patience,
        "validation_split": float(validation_split),
        "deterministic": bool(deterministic),
        "seconds": round(seconds, 3),
        "tensorflow": tf.__version__,
        "history": history,
    }
    paths: Dict[str, Path] = {}
    if out is not None:
        paths["model"] = save_model_atomic(model, out / "model.keras")
        paths["metrics"] = atomic_write_json(out / "metrics.json", metrics)
    return TrainResult(
        model=model,
        history=history,
        test_accuracy=float(test_acc),
        test_loss=float(test_loss),
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        seed=seed,
        param_count=param_count,
        seconds=seconds,
        paths=paths,
        metrics=metrics,
    )
