"""CIFAR-10 from the "python version" pickle batches.

Registered as ``cifar10``: ``datasets.load("cifar10", path="/data/cifar-10-batches-py")``
(``path`` may also be the folder that contains ``cifar-10-batches-py``).

Expected files: ``data_batch_1`` .. ``data_batch_5`` (train), ``test_batch`` (test) and,
optionally, ``batches.meta`` (class names; the standard ten names are used when it is missing).
Each batch is a pickled dict with bytes keys:

* ``b"data"``: uint8 array ``[N, 3072]``; each row is one 32x32 image in CHW order (1024 red,
  then 1024 green, then 1024 blue values, each plane row-major);
* ``b"labels"``: ``N`` ints in [0, 10).

``batches.meta`` is a pickled dict whose ``b"label_names"`` lists the ten names (bytes).

Batches are unpickled with a restricted unpickler that only resolves the NumPy array
reconstruction helpers, so a tampered file cannot run code; anything else is reported as a bad
pickle.

Output: images transposed to HWC, scaled to [0, 1] (divided by 255) as float32 with shape
``(n, 32, 32, 3)``; labels int64. Split: the official one (``train_batches`` of the five train
batches, 10,000 images each, and the 10,000-image ``test_batch``), in file order.
"""
from __future__ import annotations

import io
import logging
import os
import pickle
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from .base import Dataset, register_dataset

__all__ = ["CIFAR10_CLASSES", "read_cifar_batch", "read_cifar_meta", "load_cifar10"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

CIFAR10_CLASSES: Tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

#: The only globals a CIFAR pickle may reference (NumPy array/dtype reconstruction).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        if module.startswith("numpy._core") and not hasattr(np, "_core"):
            module = module.replace("numpy._core", "numpy.core", 1)
        return super().find_class(module, name)


def _unpickle(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CIFAR-10 file not found: {path!r}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001  (any unpickling failure means a bad file)
        raise ValueError(f"CIFAR-10 file {path!r} is not a valid pickle: {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(
            f"CIFAR-10 file {path!r} is a bad pickle: it holds a {type(obj).__name__}, expected a dict"
        )
    return obj


def _key(d: dict, key: str, path: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise ValueError(
        f"CIFAR-10 file {path!r} is a bad pickle: key b{key!r} missing; "
        f"found {sorted(map(repr, d))}"
    )


def read_cifar_batch(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read one batch file. Returns ``(images uint8 [N, 32, 32, 3] HWC, labels int64 [N])``.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: naming the file: not a pickle, not a dict, missing keys, wrong data shape or
            dtype, label count or value out of range.
    """
    path = os.fspath(path)
    d = _unpickle(path)
    data, labels = _key(d, "data", path), _key(d, "labels", path)
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(
            f"CIFAR-10 file {path!r}: b'data' is {data.dtype.name} of shape {data.shape}; expected "
            "uint8 of shape (N, 3072)"
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"CIFAR-10 file {path!r}: b'labels' is not a list of ints: {e}") from e
    if labels.shape != (data.shape[0],):
        raise ValueError(
            f"CIFAR-10 file {path!r}: {data.shape[0]} images but labels of shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(
            f"CIFAR-10 file {path!r}: labels range {int(labels.min())}..{int(labels.max())}; "
            "expected 0..9"
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_cifar_meta(path: PathLike) -> Tuple[str, ...]:
    """Read the class names from ``batches.meta``.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: naming the file, for a bad pickle or anything but ten names.
    """
    path = os.fspath(path)
    names = _key(_unpickle(path), "label_names", path)
    try:
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except (TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"CIFAR-10 file {path!r}: b'label_names' is not a list of names: {e}") from e
    if len(names) != 10:
        raise ValueError(f"CIFAR-10 file {path!r}: {len(names)} label names, expected 10")
    return names


def _resolve_folder(path: PathLike) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"CIFAR-10 folder not found: {folder!r}; expected the extracted cifar-10-batches-py "
            "folder (data_batch_1..5, test_batch, batches.meta)"
        )
    nested = os.path.join(folder, "cifar-10-batches-py")
    if not os.path.exists(os.path.join(folder, "test_batch")) and os.path.isdir(nested):
        folder = nested
    return folder


def _batch_path(folder: str, name: str) -> str:
    p = os.path.join(folder, name)
    if not os.path.isfile(p):
        raise FileNotFoundError(
            f"CIFAR-10 folder {folder!r} has no {name!r}; expected the python-version batches "
            "data_batch_1..5 and test_batch there"
        )
    return p


@register_dataset("cifar10")
def load_cifar10(
    path: PathLike, train_batches: Sequence[int] = (1, 2, 3, 4, 5),
    max_test: Optional[int] = None,
) -> Dataset:
    """CIFAR-10 from the python pickle batches (see the module docstring).

    Args:
        path: the ``cifar-10-batches-py`` folder, or the folder containing it.
        train_batches: which of ``data_batch_1..5`` to load (e.g. ``(1,)`` for a 10k subset).
        max_test: keep only the first ``n`` test images (``None``: all).

    Raises:
        FileNotFoundError: naming the folder or the missing batch file.
        ValueError: for bad options, or naming the file for malformed batches.
    """
    batches = tuple(train_batches) if not isinstance(train_batches, (str, bytes)) else ()
    if (
        not batches or len(set(batches)) != len(batches)
        or any(isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 5 for b in batches)
    ):
        raise ValueError(
            f"train_batches must be a non-empty sequence of distinct ints from 1..5, got "
            f"{train_batches!r}"
        )
    if max_test is not None and (isinstance(max_test, bool) or not isinstance(max_test, int) or max_test < 1):
        raise ValueError(f"max_test must be None or a positive int, got {max_test!r}")
    folder = _resolve_folder(path)
    parts = [read_cifar_batch(_batch_path(folder, f"data_batch_{b}")) for b in batches]
    test_img, y_te = read_cifar_batch(_batch_path(folder, "test_batch"))
    if max_test is not None:
        test_img, y_te = test_img[:max_test], y_te[:max_test]
    meta = os.path.join(folder, "batches.meta")
    if os.path.isfile(meta):
        class_names = read_cifar_meta(meta)
    else:
        logger.info("no batches.meta in %s; using the standard CIFAR-10 class names", folder)
        class_names = CIFAR10_CLASSES
    # float32 division by 255 is correctly rounded, so this equals (u8 / 255.0).astype(float32)
    scale = np.float32(255.0)
    x_tr = np.concatenate([p[0] for p in parts]).astype(np.float32) / scale
    y_tr = np.concatenate([p[1] for p in parts])
    x_te = test_img.astype(np.float32) / scale
    logger.debug("CIFAR-10: %d train, %d test images from %s", len(x_tr), len(x_te), folder)
    return Dataset("cifar10", x_tr, y_tr, x_te, y_te, num_classes=10, class_names=class_names)
