"""What every command line of the project shares, in one place: the process set-up done before
TensorFlow is imported, interruption handling, the parser type, exit codes and common flags.

A command's ``main`` builds its parser (never importing TensorFlow: ``--help`` and argument errors
are instant), parses, then runs its work inside :func:`run`::

    def main(argv=None):
        args = build_parser().parse_args(argv)
        return run("ecqx-export", lambda: _export(args), verbosity=verbosity(args))

:func:`run` (through :func:`cli_session`):

* silences TensorFlow's C++ log lines (``TF_CPP_MIN_LOG_LEVEL=3``; level 2 still prints the
  ``E`` registration lines), the ``tensorflow`` / ``absl`` Python loggers, the Python warnings of
  TensorFlow, Keras and tfmot, and what native code prints straight to the terminal's file
  descriptors (kept in the private temporary folder instead), unless ``-vv``;
* gives the process a private temporary folder (``TMPDIR`` and ``tempfile.tempdir``) so that
  TensorFlow's temporaries (autograph files, the converter's SavedModel) land there; it is removed
  when the command ends, also on SIGINT/SIGTERM; private folders of killed runs (SIGKILL) are
  removed by the next command (marker file, dead process);
* turns SIGINT into one line ``PROG: interrupted`` and exit code 130, SIGTERM into
  ``PROG: terminated`` and 143, after the ``with`` blocks on the way out removed their partial
  output folders (further signals are ignored during that clean-up);
* prints bad input (:data:`BAD_INPUT` exceptions) as one line ``PROG: error: ...``, exit code 2.

Nested calls (``ecqx-demo`` runs ``ecqx-export`` in-process) share the outer session.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Tuple, Type

__all__ = [
    "EXIT_OK",
    "EXIT_CHECK_FAILED",
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "EXIT_CODES_HELP",
    "BAD_INPUT",
    "Terminated",
    "Parser",
    "HelpFormatter",
    "add_common_arguments",
    "add_force_argument",
    "verbosity",
    "keras_verbosity",
    "plain",
    "check_input_file",
    "version",
    "quiet_tensorflow",
    "quiet_native_output",
    "cli_session",
    "run",
]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM

EXIT_CODES_HELP = ("exit codes: 0 ok, 1 a check failed (e.g. the host check differs), 2 bad input "
                   "(nothing written), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM)")

#: Exceptions that mean bad input (arguments, files): one line, exit code 2.
BAD_INPUT: Tuple[Type[BaseException], ...] = (ValueError, TypeError, OSError, NotImplementedError)

_TMP_PREFIX = "ecqx-tmp."
_TMP_MARKER = ".ecqx-tmp.json"
_NOISY_MODULES = r"(tensorflow|keras|tf_keras|tensorflow_model_optimization|absl|h5py|innvestigate)(\.|$)"


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM (a ``BaseException``, like ``KeyboardInterrupt``, so
    ordinary ``except Exception`` blocks do not swallow it)."""


# ----------------------------------------------------------------------------------------------
# parser
class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written (no re-wrapping) and ``(default: X)`` after every option that has
    a default and a help text."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "default" in text.lower():
            return text
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS \
                or action.option_strings == [] \
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._CountAction)):
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (``PROG: error: ... (see PROG --help)``,
    exit code 2), whose description and epilog are shown without reStructuredText markup and
    whose epilog ends with the exit codes."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        epilog = kwargs.pop("epilog", None)
        kwargs["epilog"] = (plain(epilog).rstrip() + "\n\n" if epilog else "") + EXIT_CODES_HELP
        if kwargs.get("description"):
            kwargs["description"] = plain(kwargs["description"]).strip("\n")
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def version() -> str:
    """The package version, from its metadata when installed, else ``ecqx_tf.__version__``
    (neither imports TensorFlow)."""
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as _v

        try:
            return _v("ecqx-tf")
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover
        pass
    from ecqx_tf import __version__

    return __version__


def add_common_arguments(parser: argparse.ArgumentParser, version_flag: bool = True, defaults: bool = True) -> None:
    """``--version``, ``-q/--quiet`` and ``-v/--verbose`` (repeatable). ``defaults=False`` for a
    sub-command's parser, so that it does not overwrite what the main parser read."""
    if version_flag:
        parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", default=False if defaults else argparse.SUPPRESS,
                   help="print only the result, warnings and errors (no progress)")
    g.add_argument("-v", "--verbose", action="count", default=0 if defaults else argparse.SUPPRESS,
                   help="more detail (-v: debug messages; -vv: also TensorFlow's own log lines and warnings)")


def plain(text: str) -> str:
    """A docstring as ``--help`` text: reStructuredText inline markup removed (````x````,
    ``:func:`x```, ```x```), ``::`` literal-block markers turned into ``:``."""
    import re

    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"`([^`]+)`", r"\1", text)
    text = re.sub(r"(\S)::[ \t]*$", r"\1:", text, flags=re.M)
    text = re.sub(r"^[ \t]*::[ \t]*\n", "", text, flags=re.M)
    return text


def keras_verbosity(level: int) -> int:
    """Keras ``verbose`` for a command's verbosity: 0 with ``-q``; progress bars on a terminal,
    one line per epoch otherwise (logs, pipes)."""
    if level < 0:
        return 0
    try:
        return 1 if sys.stdout.isatty() else 2
    except (AttributeError, ValueError):
        return 2


def add_force_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="replace --out even when it is a non-empty folder that this command did not write "
                             "(files it did not write are kept in OUT.previous; a folder holding an input, a file "
                             "or a symbolic link is never replaced)")


def verbosity(args: argparse.Namespace) -> int:
    """-1 quiet, 0 default, 1 ``-v``, 2 ``-vv``."""
    if getattr(args, "quiet", False):
        return -1
    return int(getattr(args, "verbose", 0) or 0)


def check_input_file(path, what: str = "model file", suffixes: Sequence[str] = (".keras", ".h5")) -> Path:
    """An input file named on the command line: it exists, is a file and has an accepted suffix.

    Raises:
        FileNotFoundError, ValueError: naming the file and what is accepted.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {str(p)!r}")
    if not p.is_file():
        raise ValueError(f"{what} {str(p)!r} is not a file")
    if suffixes and p.suffix not in suffixes:
        raise ValueError(f"{what} {str(p)!r}: suffix {p.suffix!r} not accepted; accepted: {', '.join(suffixes)}")
    return p


# ----------------------------------------------------------------------------------------------
# process set-up
class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def quiet_tensorflow(level: int = 0) -> None:
    """Silence TensorFlow before it is imported (``level`` >= 2 leaves everything on)."""
    if level >= 2:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for name in ("tensorflow", "absl", "h5py"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR)
        # TensorFlow sets its logger's level again on import in an interactive session (notebook);
        # a filter stays
        if not any(isinstance(f, _BelowError) for f in logger.filters):
            logger.addFilter(_BelowError())
    warnings.filterwarnings("ignore", module=_NOISY_MODULES)
    # absl prints "WARNING: All log messages before absl::InitializeLog()..." only above level 3.


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each message (it is swapped while the
    process's native output is set aside)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _Formatter(logging.Formatter):
    """Progress as written; warnings and errors as ``PROG: warning: ...`` / ``PROG: error: ...``."""

    def __init__(self, prog: str):
        super().__init__("%(message)s")
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING and not text.startswith(self.prog):
            kind = "warning" if record.levelno < logging.ERROR else "error"
            text = f"{self.prog}: {kind}: {text}"
        return text


def _configure_logging(level: int, prog: str = "ecqx") -> None:
    root = logging.getLogger()
    lvl = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}.get(min(level, 1), logging.INFO)
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler(sys.stderr)
        root.addHandler(handler)
    handler.setFormatter(_Formatter(prog))
    root.setLevel(lvl)
    if level < 2:
        for name in ("tensorflow", "absl", "h5py"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _remove_stale_tempdirs(base: Path) -> None:
    from ecqx_tf.io import marker_is_stale

    try:
        entries = [e for e in base.iterdir() if e.name.startswith(_TMP_PREFIX)]
    except OSError:
        return
    for e in entries:
        if e.is_dir() and not e.is_symlink() and marker_is_stale(e, _TMP_MARKER):
            shutil.rmtree(e, ignore_errors=True)


_session_depth = 0
_session_lock = threading.Lock()


def _real_std_streams() -> bool:
    try:
        return sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced streams (e.g. pytest's capture)
        return False


@contextlib.contextmanager
def _native_output_aside(log_path: Path) -> Iterator[None]:
    """Send what native code writes straight to file descriptors 1 and 2 (TensorFlow's converter
    prints ``fully_quantize: 0, inference_type: 6, ...`` that way, below any log level) to
    ``log_path``, while Python's ``sys.stdout``/``sys.stderr`` keep writing to the terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    out_fd, err_fd = os.dup(1), os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    saved = sys.stdout, sys.stderr
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stdout = os.fdopen(os.dup(out_fd), "w", buffering=1, encoding=saved[0].encoding, errors=saved[0].errors)
    sys.stderr = os.fdopen(os.dup(err_fd), "w", buffering=1, encoding=saved[1].encoding, errors=saved[1].errors)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
                stream.close()
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        sys.stdout, sys.stderr = saved


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Inside the block, what native code prints straight to file descriptors 1 and 2 (e.g.
    TensorFlow's converter: ``fully_quantize: 0, inference_type: 6, ...``) is discarded, while
    Python's own output (``print``, logging, notebook cells) still shows. For notebooks and
    scripts; the command lines do this for their whole run."""
    fd, log_path = tempfile.mkstemp(prefix="ecqx-native-", suffix=".log")
    os.close(fd)
    try:
        if _real_std_streams():
            with _native_output_aside(Path(log_path)):
                yield
        else:  # Python's streams are not fds 1/2 (a notebook kernel, a test's capture): only move the fds
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            saved = os.dup(1), os.dup(2)
            log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
            try:
                yield
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
    finally:
        with contextlib.suppress(OSError):
            os.unlink(log_path)


@contextlib.contextmanager
def cli_session(prog: str, level: int = 0) -> Iterator[Optional[Path]]:
    """Process set-up for one command (see the module docstring); yields the private temporary
    folder (None in a nested call, which shares the outer one). Everything is restored on exit,
    so that commands can also be called in-process (tests, ``ecqx-demo``)."""
    global _session_depth
    with _session_lock:
        nested = _session_depth > 0
        _session_depth += 1
    if nested:
        try:
            yield None
        finally:
            with _session_lock:
                _session_depth -= 1
        return
    quiet_tensorflow(level)
    _configure_logging(level, prog)
    from ecqx_tf.io import write_process_marker

    base = Path(tempfile.gettempdir())
    _remove_stale_tempdirs(base)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{prog}.", dir=base))
    write_process_marker(tmp, prog, _TMP_MARKER)
    saved_env = os.environ.get("TMPDIR")
    saved_tempdir = tempfile.tempdir
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = str(tmp)
    main_thread = threading.current_thread() is threading.main_thread()
    saved_handlers = {}

    def on_signal(signum, _frame):
        # first signal: ignore further ones so that the clean-up on the way out completes
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    if main_thread:
        for s in (signal.SIGINT, signal.SIGTERM):
            saved_handlers[s] = signal.getsignal(s)
            signal.signal(s, on_signal)
    aside = _native_output_aside(tmp / "native-output.log") if level < 2 and _real_std_streams() \
        else contextlib.nullcontext()
    try:
        with aside:
            yield tmp
    finally:
        if main_thread:
            for s, h in saved_handlers.items():
                signal.signal(s, h if h is not None else signal.SIG_DFL)
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(tmp, ignore_errors=True)
        with _session_lock:
            _session_depth -= 1


def run(prog: str, body: Callable[[], int], level: int = 0,
        bad_input: Sequence[Type[BaseException]] = BAD_INPUT) -> int:
    """Run ``body`` in a :func:`cli_session` and map its outcome to an exit code: its return
    value; ``bad_input`` exceptions -> one line on stderr and 2; SIGINT -> 130; SIGTERM -> 143.
    Inside another command (nested session) interruptions propagate to the outer command."""
    if _session_depth > 0:
        with cli_session(prog, level):
            try:
                return body()
            except tuple(bad_input) as e:
                print(f"{prog}: error: {_one_line(e)}", file=sys.stderr, flush=True)
                return EXIT_BAD_INPUT
    try:
        with cli_session(prog, level):
            return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr, flush=True)
        return EXIT_TERMINATED
    except tuple(bad_input) as e:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT


def _one_line(e: BaseException) -> str:
    text = str(e) if str(e) else type(e).__name__
    if isinstance(e, OSError) and e.filename and e.strerror:
        text = f"{e.strerror}: {e.filename!r}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines) if lines else type(e).__name__
