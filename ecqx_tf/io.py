"""Atomic file output and safe output folders.

Every file the project writes goes through here, so an interrupted run leaves either the old file
or the new one, never half of one.

A command that writes a folder (``ecqx-train``, ``ecqx-quantize``, ``ecqx-compress``,
``ecqx-export``, ``ecqx-demo``) builds it in a hidden sibling ``.NAME.XXXX.partial`` (marked at
creation by a small file naming the tool and its process) and swaps it into place at the end
(:func:`atomic_output_dir`). The folder ends with ``manifest.json``: ``{"tool": ..., "files":
[{"path", "sha256", "size"}, ...], ...}`` (:func:`write_manifest`). Before any work starts,
:func:`check_output_dir` decides whether ``--out`` may be written:

* a regular file (or anything that is not a folder), a filesystem root, or a symbolic link to
  anything but a previous output of the same tool: refused, even with ``force``;
* a folder that is, contains, or lies inside an input of the command (the model, the data
  folder, a calibration file): refused, even with ``force``;
* a missing or empty folder: written;
* a previous output of the same tool (its ``manifest.json`` names the tool and lists every file
  the folder holds): replaced;
* any other non-empty folder (no manifest, another tool's output, files the manifest does not
  list): refused unless ``force``.

The replacement never deletes what the tool did not write: after the swap only the files the
previous manifest lists (and the manifest) are removed; anything else is kept in a visible
sibling ``NAME.previous`` (``NAME.previous-2``, ...) and a warning names it. Hidden partial folders
of interrupted runs are removed by the next run into the same parent folder, recognised by their
marker file (and only when the process that made them is gone), never by name alone.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

__all__ = [
    "TOOLS",
    "COMMANDS",
    "MANIFEST",
    "PARTIAL_MARKER",
    "OutputFolderError",
    "OutputPlan",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_with",
    "atomic_output_dir",
    "check_output_dir",
    "check_writable_dir",
    "marker_is_stale",
    "read_tool_manifest",
    "remove_stale_partials",
    "safe_join",
    "sha256_file",
    "write_manifest",
    "write_process_marker",
]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: The commands that write output folders; a ``manifest.json`` whose ``"tool"`` is one of these
#: marks a folder this project wrote.
TOOLS = ("ecqx-train", "ecqx-quantize", "ecqx-compress", "ecqx-export", "ecqx-demo")
#: Every command of the project (process markers of temporary folders may name any of them).
COMMANDS = TOOLS + ("ecqx-simulate",)
#: The manifest every output folder ends with.
MANIFEST = "manifest.json"
#: Written into every partial folder at creation; recognises partial folders of interrupted runs.
PARTIAL_MARKER = ".ecqx-partial.json"
_PARTIAL_SUFFIX = ".partial"


class OutputFolderError(ValueError):
    """``--out`` may not be written (bad input: exit code 2). Nothing was touched."""


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


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# paths read from a manifest or report
def safe_join(folder: PathLike, rel: Any, what: str = "path") -> Path:
    """``folder / rel`` for a relative path read from a file inside ``folder`` (a manifest, a
    report), guaranteed to stay inside ``folder``.

    Raises:
        ValueError: ``rel`` is not a non-empty string, is absolute, has a ``..`` part, or resolves
            (through symbolic links) outside ``folder``.
    """
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise ValueError(f"{what} must be a non-empty relative path string, got {rel!r}")
    pr = Path(rel)
    if pr.is_absolute() or rel.startswith(("/", "\\")):
        raise ValueError(f"{what} {rel!r} is an absolute path; only paths inside the folder are accepted")
    if any(part == ".." for part in pr.parts):
        raise ValueError(f"{what} {rel!r} contains '..'; only paths inside the folder are accepted")
    base = Path(folder).resolve()
    full = (base / pr).resolve()
    if full != base and base not in full.parents:
        raise ValueError(f"{what} {rel!r} leaves the folder (it resolves to {str(full)!r} through a symbolic link)")
    return Path(folder) / pr


# ----------------------------------------------------------------------------------------------
# manifests
def _listed_files(folder: Path) -> List[str]:
    """Every file (and symbolic link) under ``folder``, relative, sorted; links are not followed."""
    out = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        r = Path(root)
        for name in files + [d for d in dirs if (r / d).is_symlink()]:
            out.append((r / name).relative_to(folder).as_posix())
    return sorted(out)


def write_manifest(folder: PathLike, content: Dict[str, Any]) -> Dict[str, Any]:
    """Write ``folder/manifest.json``: ``content`` (which names the ``"tool"``) plus ``"files"``,
    every file under ``folder`` (sorted, except the manifest and the partial-folder marker) with
    sha256 and size. Deterministic: no dates, no absolute paths.

    Raises:
        ValueError: ``content["tool"]`` is not one of :data:`TOOLS`.
    """
    if not isinstance(content, dict) or content.get("tool") not in TOOLS:
        got = content.get("tool") if isinstance(content, dict) else content
        raise ValueError(f"manifest tool must be one of {', '.join(TOOLS)}, got {got!r}")
    folder = Path(folder)
    rels = [r for r in _listed_files(folder) if r not in (MANIFEST, PARTIAL_MARKER)]
    manifest = dict(content)
    manifest["files"] = [{"path": r, "sha256": sha256_file(folder / r), "size": (folder / r).stat().st_size}
                         for r in rels if (folder / r).is_file() and not (folder / r).is_symlink()]
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def read_tool_manifest(folder: PathLike) -> Optional[Dict[str, Any]]:
    """The manifest of a folder this project wrote, or None.

    Strict: ``manifest.json`` must be a regular file (not a link) holding a JSON object whose
    ``"tool"`` is one of :data:`TOOLS` and whose ``"files"`` is a list of ``{"path": str}`` objects
    with relative paths inside the folder. Anything else (no file, unreadable, another program's
    manifest) gives None.
    """
    mpath = Path(folder) / MANIFEST
    try:
        if mpath.is_symlink() or not mpath.is_file() or mpath.stat().st_size > 64 << 20:
            return None
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("tool") not in TOOLS or not isinstance(data.get("files"), list):
        return None
    for e in data["files"]:
        if not isinstance(e, dict):
            return None
        try:
            safe_join(folder, e.get("path"))
        except ValueError:
            return None
    return data


# ----------------------------------------------------------------------------------------------
# output folders
class OutputPlan:
    """What :func:`check_output_dir` found at ``--out``.

    Attributes:
        final: the folder to create or replace (the resolved target when ``--out`` is a link to a
            previous output).
        state: ``"missing"``, ``"empty"``, ``"ours"`` (a previous output of this tool, every file
            listed in its manifest) or ``"forced"`` (replaced because of ``force``).
        listed: relative paths the previous manifest lists (removed after the swap).
    """

    def __init__(self, final: Path, state: str, listed: Sequence[str] = ()):
        self.final, self.state, self.listed = final, state, tuple(listed)

    def __repr__(self) -> str:
        return f"OutputPlan({str(self.final)!r}, {self.state!r}, {len(self.listed)} listed files)"


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _input_conflict(final: Path, inputs: Iterable[PathLike]) -> Optional[str]:
    for inp in inputs:
        if inp is None or str(inp) == "":
            continue
        forms = {Path(os.path.abspath(inp))}
        with contextlib.suppress(OSError, RuntimeError):
            forms.add(Path(inp).resolve())
        for f in forms:
            if f == final:
                return f"is the input {str(inp)!r}"
            if _is_within(f, final):
                return f"contains the input {str(inp)!r}"
            if _is_within(final, f):
                return f"lies inside the input {str(inp)!r}"
    return None


def _folder_state(folder: Path, tool: str) -> Tuple[str, Tuple[str, ...], str]:
    """("empty" | "ours" | "foreign", listed files, reason) for an existing real folder."""
    present = _listed_files(folder)
    if not present:
        return "empty", (), ""
    manifest = read_tool_manifest(folder)
    if manifest is None:
        return "foreign", (), f"is a non-empty folder that {tool} did not write (no {MANIFEST} naming an ecqx tool)"
    listed = tuple(e["path"] for e in manifest["files"])
    if manifest["tool"] != tool:
        return "foreign", listed, f"is an output of {manifest['tool']}, not of {tool}"
    extra = sorted(set(present) - set(listed) - {MANIFEST})
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        return "foreign", listed, f"holds files that {tool} did not write ({shown})"
    return "ours", listed, ""


def check_output_dir(path: PathLike, tool: str, inputs: Iterable[PathLike] = (), force: bool = False) -> OutputPlan:
    """Decide whether ``tool`` may write its output folder at ``path`` (see the module docstring).
    Touches nothing.

    Raises:
        OutputFolderError: naming ``path``, what stands there and what is accepted.
        ValueError: ``tool`` is not one of :data:`TOOLS`.
    """
    if tool not in TOOLS:
        raise ValueError(f"tool must be one of {', '.join(TOOLS)}, got {tool!r}")
    inputs = [i for i in inputs if i is not None]
    p = Path(path)
    if str(path) == "":
        raise OutputFolderError("output folder: an empty path is not accepted")
    if p.is_symlink():
        target = p.resolve()
        if not target.is_dir() or p.resolve() == Path(p.anchor):
            raise OutputFolderError(
                f"output folder {str(p)!r} is a symbolic link to {str(target)!r}, which is not a previous output "
                f"of {tool}; refusing to follow it (remove the link or choose another --out)")
        state, listed, reason = _folder_state(target, tool)
        if state == "foreign" or read_tool_manifest(target) is None:
            raise OutputFolderError(
                f"output folder {str(p)!r} is a symbolic link to {str(target)!r}, which "
                f"{reason or 'is not a previous output of ' + tool}; refusing to follow it (even with --force)")
        final = target
    else:
        try:
            final = Path(os.path.abspath(p)).parent.resolve() / Path(os.path.abspath(p)).name
        except (OSError, RuntimeError) as e:
            raise OutputFolderError(f"output folder {str(p)!r}: cannot resolve its parent ({e})") from None
    if final == Path(final.anchor) or final.name in ("", ".", ".."):
        raise OutputFolderError(f"output folder {str(p)!r} is a filesystem root; choose a folder to create")
    conflict = _input_conflict(final, inputs)
    if conflict:
        raise OutputFolderError(
            f"output folder {str(p)!r} {conflict}; replacing it would destroy the input: choose another --out "
            "(--force does not override this)")
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        kind = "a symbolic link" if final.is_symlink() else ("a regular file" if final.is_file() else "not a folder")
        raise OutputFolderError(
            f"output folder {str(p)!r} is {kind}; refusing to replace it (even with --force): choose a folder path")
    probe = final.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputFolderError(f"output folder {str(p)!r} cannot be created: {str(probe)!r} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputFolderError(f"output folder {str(p)!r} is not writable ({str(probe)!r} denies writing)")
    if not final.exists():
        return OutputPlan(final, "missing")
    state, listed, reason = _folder_state(final, tool)
    if state == "foreign":
        if not force:
            raise OutputFolderError(
                f"output folder {str(p)!r} {reason}; refusing to replace it: choose another --out, or pass --force "
                f"(files {tool} did not write are then kept in {final.name}.previous)")
        return OutputPlan(final, "forced", listed)
    return OutputPlan(final, state, listed)


def _proc_start(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks after boot
    except (OSError, IndexError):
        return None


def _process_alive(pid: int, start: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    now = _proc_start(pid)
    return start is None or now is None or now == start


def write_process_marker(folder: PathLike, tool: str, name: str = PARTIAL_MARKER) -> Path:
    """Write ``folder/name``: the tool, this process's id and start time, the host. Marks a folder
    this process is filling, so that a later run can tell a stale one (its process is gone) from
    a folder in use."""
    pid = os.getpid()
    path = Path(folder) / name
    path.write_text(json.dumps({"tool": tool, "pid": pid, "start": _proc_start(pid), "host": socket.gethostname()}) + "\n")
    return path


def marker_is_stale(folder: PathLike, name: str = PARTIAL_MARKER) -> bool:
    """True when ``folder/name`` is a valid marker of one of :data:`COMMANDS` written on this host by
    a process that is gone; False for anything else (no marker, unreadable, alive, other host)."""
    m = Path(folder) / name
    try:
        if m.is_symlink() or not m.is_file() or m.stat().st_size > 4096:
            return False
        data = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("tool") not in COMMANDS or not isinstance(data.get("pid"), int) \
            or isinstance(data.get("pid"), bool):
        return False
    if data.get("host") != socket.gethostname():
        return False
    return not _process_alive(data["pid"], data.get("start"))


def remove_stale_partials(parent: PathLike) -> List[Path]:
    """Remove the hidden ``.NAME.*.partial`` folders in ``parent`` left by interrupted runs of
    this project's tools: only folders holding a valid marker (:data:`PARTIAL_MARKER`) whose
    process is gone (same host). Returns the removed folders."""
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    for e in entries:
        if not (e.name.startswith(".") and e.name.endswith(_PARTIAL_SUFFIX)) or e.is_symlink() or not e.is_dir():
            continue
        if not marker_is_stale(e):
            continue
        shutil.rmtree(e, ignore_errors=True)
        if not e.exists():
            log.info("removed %s, left by an interrupted run", e)
            removed.append(e)
    return removed


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False when unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot swap {str(a)!r} and {str(b)!r}: {os.strerror(err)}")


def _free_sibling(final: Path, tag: str) -> Path:
    cand = final.with_name(f"{final.name}.{tag}")
    i = 2
    while cand.exists() or cand.is_symlink():
        cand = final.with_name(f"{final.name}.{tag}-{i}")
        i += 1
    return cand


def _dispose_previous(old: Path, final: Path, listed: Sequence[str]) -> Optional[Path]:
    """Remove from ``old`` (the previous content of ``final``, now moved aside) the files the
    previous manifest lists, its manifest and the folders left empty; keep anything else in a
    visible sibling of ``final``. Returns where kept files went (None when nothing was kept)."""
    for rel in list(listed) + [MANIFEST]:
        try:
            f = safe_join(old, rel)
        except ValueError:
            continue
        if f.is_symlink() or f.is_file():
            with contextlib.suppress(OSError):
                f.unlink()
    for root, dirs, _files in os.walk(old, topdown=False, followlinks=False):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(Path(root) / d)  # only empty folders
    with contextlib.suppress(OSError):
        os.rmdir(old)
    if not old.exists():
        return None
    keep = _free_sibling(final, "previous")
    os.rename(old, keep)
    log.warning("kept the files of %s that were not written by this tool in %s", final, keep)
    return keep


@contextlib.contextmanager
def atomic_output_dir(path: PathLike, tool: str, inputs: Iterable[PathLike] = (), force: bool = False) -> Iterator[Path]:
    """Yield a fresh hidden partial folder beside ``path``; when the block succeeds it becomes
    ``path`` (checked with :func:`check_output_dir` before and again at the swap).

    The partial folder holds a marker naming ``tool`` and this process; stale partial folders of
    earlier interrupted runs in the same parent are removed first. When the block did not write a
    ``manifest.json``, a minimal one (``{"tool": tool, "files": ...}``) is written. On any
    exception (also ``KeyboardInterrupt``) the partial folder is removed and ``path`` is left as
    it was.

    Raises:
        OutputFolderError: ``path`` may not be written (nothing touched).
        PermissionError: the parent folder is not writable.
    """
    inputs = list(inputs)
    plan = check_output_dir(path, tool, inputs, force)
    parent = plan.final.parent
    check_writable_dir(parent)
    remove_stale_partials(parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{plan.final.name}.", suffix=_PARTIAL_SUFFIX, dir=parent))
    swapped = False
    try:
        write_process_marker(tmp, tool)
        yield tmp
        manifest = read_tool_manifest(tmp)
        if manifest is None:
            write_manifest(tmp, {"tool": tool})
        elif manifest["tool"] != tool:
            raise ValueError(f"{tool} wrote a manifest naming {manifest['tool']!r}")
        plan = check_output_dir(path, tool, inputs, force)  # again: the folder may have changed meanwhile
        (tmp / PARTIAL_MARKER).unlink()
        os.chmod(tmp, 0o755)
        final = plan.final
        if plan.state == "missing":
            os.rename(tmp, final)
            swapped = True
            return
        if _exchange(tmp, final):
            swapped = True
            old = tmp  # the previous content is now at the partial folder's name
        else:  # pragma: no cover - kernels without renameat2
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=parent))
            os.rmdir(old)
            os.rename(final, old)
            swapped = True
            os.rename(tmp, final)
    except BaseException:
        if not swapped:  # the partial folder holds only what this run wrote
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    _dispose_previous(old, final, plan.listed)
