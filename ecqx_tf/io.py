"""Atomic file output. Every file the project writes goes through here, so an interrupted run
leaves either the old file or the new one, never half of one; a folder of outputs is built in a
temporary sibling and renamed into place."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Union

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_with",
    "atomic_output_dir",
    "check_writable_dir",
    "sha256_file",
]

PathLike = Union[str, os.PathLike]


def check_writable_dir(path: PathLike) -> Path:
    """Create ``path`` (and parents) if needed and check that files can be written in it.

    Raises:
        PermissionError: naming the folder, when it (or the nearest existing parent) is not
            writable or a file stands where a folder should be.
    """
    p = Path(path)
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise PermissionError(f"output folder {str(p)!r}: {str(probe)!r} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {str(p)!r} is not writable ({str(probe)!r} denies writing)")
    p.mkdir(parents=True, exist_ok=True)
    return p


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write_with(path, write)


def atomic_write_with(path: PathLike, write: Callable[[str], None]) -> Path:
    """Atomically create ``path`` with a writer that only takes a file name (e.g. Keras's
    ``model.save``): ``write`` gets a temporary name with the same suffix in the same folder,
    which is fsynced and renamed over ``path``; on any failure it is removed."""
    p = Path(path)
    check_writable_dir(p.parent if str(p.parent) else Path("."))
    fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=f".tmp{p.suffix}", dir=p.parent if str(p.parent) else ".")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return p


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    """Deterministic JSON (sorted keys, 2-space indent, trailing newline)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


@contextlib.contextmanager
def atomic_output_dir(path: PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` as a whole.

    On any exception the temporary folder is removed and ``path`` is left as it was.
    """
    final = Path(path)
    check_writable_dir(final.parent if str(final.parent) else Path("."))
    if final.exists() and not overwrite:
        raise FileExistsError(f"output folder {str(final)!r} exists (pass overwrite=True)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.rmdir(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
