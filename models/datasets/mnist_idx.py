"""Full MNIST from the four standard IDX files in one folder.

Registered as ``mnist``: ``datasets.load("mnist", path="/data/mnist")``.

Expected files in ``path`` (each may instead end in ``.gz``; the dotted spelling
``train-images.idx3-ubyte`` found in some mirrors is accepted too):

* ``train-images-idx3-ubyte`` (60,000 x 28 x 28 uint8), ``train-labels-idx1-ubyte`` (60,000 uint8)
* ``t10k-images-idx3-ubyte`` (10,000 x 28 x 28 uint8), ``t10k-labels-idx1-ubyte`` (10,000 uint8)

IDX format (parsed by :func:`read_idx`, all integers big-endian):

======  ========  ==============================================================
offset  size      field
======  ========  ==============================================================
0       2         zero bytes ``00 00``
2       1         dtype code (see ``IDX_DTYPES``: 0x08 uint8, 0x09 int8, 0x0B int16,
                  0x0C int32, 0x0D float32, 0x0E float64)
3       1         ndim, the number of dimensions
4       4 * ndim  the dimensions, uint32 each
...     prod*size the values, row-major, big-endian
======  ========  ==============================================================

Output: pixels scaled to [0, 1] (divided by 255) as float32 with shape ``(n, 28, 28, 1)``, labels
int64 in [0, 10). The split is the official one (60,000 train, 10,000 test), in file order.
"""
from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from typing import Dict, Optional, Tuple, Union

import numpy as np

from ecqx_tf.config import validate_int_range

from .base import Dataset, register_dataset

__all__ = ["IDX_DTYPES", "MNIST_FILES", "read_idx", "parse_idx", "load_mnist"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: IDX dtype code -> big-endian NumPy dtype. Drives both parsing and the error message.
IDX_DTYPES: Dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: (split, role) -> accepted base names, first one is the standard name.
MNIST_FILES: Dict[Tuple[str, str], Tuple[str, ...]] = {
    ("train", "images"): ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("train", "labels"): ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("test", "images"): ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of one IDX file into an array in native byte order.

    Args:
        raw: the whole (decompressed) file content.
        name: used in error messages only.

    Raises:
        ValueError: naming ``name`` and the problem: bad magic (non-zero first two bytes or an
            unknown dtype code), header or data truncated, or trailing bytes after the data.
    """
    if len(raw) < 4:
        raise ValueError(f"IDX file {name!r} is truncated: {len(raw)} bytes, the header needs 4")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in IDX_DTYPES:
        accepted = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(
            f"IDX file {name!r} has bad magic number 0x{raw[:4].hex().upper()}: expected "
            f"00 00 <dtype code> <ndim> with dtype code in {{{accepted}}}"
        )
    if ndim == 0:
        raise ValueError(f"IDX file {name!r} has bad magic: ndim is 0")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"IDX file {name!r} is truncated: {len(raw)} bytes, the header with {ndim} dimensions "
            f"needs {header}"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got < expected:
        raise ValueError(
            f"IDX file {name!r} is truncated: dimensions {dims} of {dtype.name} need {expected} "
            f"data bytes, found {got}"
        )
    if got > expected:
        raise ValueError(
            f"IDX file {name!r} has {got - expected} trailing bytes after the {expected} data "
            f"bytes that its dimensions {dims} describe"
        )
    data = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return data.reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (gzip-compressed when the name ends in ``.gz``).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: naming the file, for a bad magic number, truncation, trailing bytes or a
            corrupt gzip stream.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file not found: {path!r}")
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        if isinstance(e, (FileNotFoundError, PermissionError)):
            raise
        raise ValueError(f"IDX file {path!r} is not a valid gzip file: {e}") from e
    return parse_idx(raw, path)


def _find(folder: str, split: str, role: str) -> str:
    names = MNIST_FILES[(split, role)]
    for base in names:
        for candidate in (base, base + ".gz"):
            full = os.path.join(folder, candidate)
            if os.path.isfile(full):
                return full
    raise FileNotFoundError(
        f"MNIST folder {folder!r} has no {split} {role} file: expected {names[0]!r} or "
        f"{names[0] + '.gz'!r} there"
    )


def _load_split(folder: str, split: str, limit: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    img_path, lab_path = _find(folder, split, "images"), _find(folder, split, "labels")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"MNIST image file {img_path!r} holds {images.dtype.name} of shape {images.shape}; "
            "expected uint8 of shape (n, 28, 28)"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"MNIST label file {lab_path!r} holds {labels.dtype.name} of shape {labels.shape}; "
            "expected uint8 of shape (n,)"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"MNIST {split} split: {img_path!r} has {len(images)} images but {lab_path!r} has "
            f"{len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(
            f"MNIST label file {lab_path!r} has label {int(labels.max())}; expected 0..9"
        )
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = (images.astype(np.float32) / np.float32(255.0)).reshape(-1, 28, 28, 1)
    logger.debug("MNIST %s: %d images from %s", split, len(x), img_path)
    return x, labels.astype(np.int64)


@register_dataset("mnist")
def load_mnist(
    path: PathLike, max_train: Optional[int] = None, max_test: Optional[int] = None
) -> Dataset:
    """Full MNIST from a folder of IDX files (see the module docstring).

    Args:
        path: folder holding the four IDX files (plain or ``.gz``).
        max_train, max_test: keep only the first ``n`` examples of each split (``None``: all).

    Raises:
        FileNotFoundError: naming the folder or the missing file.
        ValueError: naming the file, for malformed IDX content or mismatched counts.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    for arg, value in (("max_train", max_train), ("max_test", max_test)):
        if value is not None:
            validate_int_range(arg, value, low=1)
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"MNIST folder not found: {folder!r}; expected a folder with "
            f"{', '.join(names[0] for names in MNIST_FILES.values())} (each optionally .gz)"
        )
    x_tr, y_tr = _load_split(folder, "train", max_train)
    x_te, y_te = _load_split(folder, "test", max_test)
    return Dataset(
        "mnist", x_tr, y_tr, x_te, y_te, num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
    )
