"""A quiet console: TensorFlow's start-up noise silenced where it starts, real warnings kept.

Why: a person reading a run's console (or a notebook user calling one check) should see what
kerasdiag found, not a dozen lines TensorFlow prints on every machine. Where each line came
from, and what silences it here:

- ``TF_CPP_MIN_LOG_LEVEL`` (set here, before TensorFlow loads, unless the environment already
  has it: a user's own value wins). TensorFlow's C++ logging reads it when it starts; at ``2``
  INFO and WARNING lines go and errors stay. That covers ``cpu_feature_guard`` ("This
  TensorFlow binary is optimized ...") and ``util.cc``'s "Not handling type DT_DOUBLE": a
  WARNING from the oneDNN data-type check that grappler's remapper pass runs on every float64
  graph (the gradient checks' float64 copy); with the remapper off the lines do not appear.
- Lines TensorFlow writes while its shared libraries load, before its logging has read
  ``TF_CPP_MIN_LOG_LEVEL`` (absl's "WARNING: All log messages before absl::InitializeLog() is
  called ...", "oneDNN custom operations are on ...", "Could not find cuda drivers ..."), once
  for ``libtensorflow_framework`` and once more for the profiler plugin, which carries its own
  copy of absl. No setting reaches them, so the import of ``tensorflow`` runs with the
  process's stderr (file descriptor 2) sent to a temporary file, and what it wrote is then
  copied back to stderr, less the lines below ``TF_CPP_MIN_LOG_LEVEL``: TensorFlow's own
  threshold, applied to the lines it prints before it reads it. Everything else comes back.
- "failed call to cuInit" (an ERROR, from the first device listing): on a machine with no CUDA
  driver it says only that this is a CPU machine, so the devices are listed inside the same
  capture and that line is read as INFO there. Where a driver is installed nothing is listed
  early and the line, a real fault then, stays.
- Keras warnings that repeat. Python shows a warning once per code location, but every
  ``warnings.catch_warnings()`` block that ends (the doctor's, at each probe; the training
  pipeline's around ``fit``; any library's) resets that memory, so a warning such as Keras'
  "received ``from_logits=True``, but the ``output`` argument was produced by a Softmax" came
  back after each one. A ``"once"`` filter cannot help: CPython keeps its memory in the same
  per-module registry. So ``warnings.showwarning`` skips the exact repeat (same text,
  category, file and line) of a warning raised in Keras' or TensorFlow's own files; the first
  one is shown as before, and filters (``"ignore"``, ``"error"``) act as before. kerasdiag's
  own warnings (``MonitorWarning``) and everyone else's are untouched. Python started with
  ``-W`` or ``PYTHONWARNINGS`` keeps its own ``showwarning``.

``KERASDIAG_TF_LOGS=1`` (``scripts/train.py --verbose``) restores TensorFlow's native logging:
:func:`quiet_console` then sets nothing at all. It is also the way to see what TensorFlow
printed if it crashed while loading (the capture is copied back only when the import returns).

This module never imports TensorFlow: it must act before TensorFlow loads.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

VERBOSE_ENV = "KERASDIAG_TF_LOGS"
"""Set to 1 (``scripts/train.py --verbose``): TensorFlow logs as it does by itself."""

MIN_LOG_LEVEL = "2"
"""TensorFlow's C++ threshold unless the user set one: 0 all, 1 no INFO, 2 errors only."""

_NATIVE_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\S+\s+\d+ \S+:\d+\] ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_NO_DRIVER_CUINIT = "failed call to cuInit"
# Output that starts something new, whatever native line came before it: a Python warning
# (``file.py:12: UserWarning: ...``) or a traceback.
_PYTHON_LINE = re.compile(r"^(Traceback \(most recent call last\)|\S.*:\d+: \w+: )")
_applied = False


def verbose_requested(environ: Any = None) -> bool:
    """Whether the environment asks for TensorFlow's native logging (``KERASDIAG_TF_LOGS``)."""
    value = (os.environ if environ is None else environ).get(VERBOSE_ENV, "")
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def quiet_console() -> None:
    """Silence TensorFlow's start-up noise in this process; real warnings and errors stay.

    Called by ``import kerasdiag``, so the CLI and library users get it alike; calling it
    again does nothing. Sets ``TF_CPP_MIN_LOG_LEVEL`` only when the environment has none,
    quiets the coming ``import tensorflow`` (a hook that removes itself once it ran), and shows
    each Keras/TensorFlow warning once. With ``KERASDIAG_TF_LOGS=1`` it does none of this.
    TensorFlow imported before kerasdiag has printed its start-up lines already.
    """
    global _applied
    if _applied or verbose_requested():
        return
    _applied = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", MIN_LOG_LEVEL)
    if not sys.warnoptions:
        warnings.showwarning = once_per_process(warnings.showwarning)
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _QuietTensorFlowImport())


_LIBRARY_FILE = re.compile(r"[\\/](keras|tensorflow)[\\/]")


def once_per_process(show: Callable[..., Any]) -> Callable[..., Any]:
    """``show`` (a ``warnings.showwarning``) that skips exact repeats of Keras/TensorFlow warnings.

    A repeat is the same text and category from the same file and line: what Python's own
    once-per-location rule would have kept quiet, had a ``catch_warnings`` block not reset it.
    kerasdiag's own warnings (a ``MonitorWarning`` may point at Keras' callback loop) always
    pass.
    """
    seen: set[tuple[str, type, str, int]] = set()

    def showwarning(
        message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        ours = str(getattr(category, "__module__", "")).startswith("kerasdiag")
        if not ours and _LIBRARY_FILE.search(str(filename)):
            key = (str(message), category, str(filename), int(lineno))
            if key in seen:
                return
            seen.add(key)
        show(message, category, filename, lineno, file, line)

    return showwarning


def min_log_level(environ: Any = None) -> int:
    """TensorFlow's C++ threshold in ``environ``, read as TensorFlow reads it (0 if unset)."""
    value = (os.environ if environ is None else environ).get("TF_CPP_MIN_LOG_LEVEL", "0")
    try:
        return int(value.strip())
    except ValueError:
        return 0


def start_up_line_filter(level: int, cuda_driver: bool) -> Callable[[str], bool]:
    """A predicate: keep this line TensorFlow printed while it loaded? (stateful: a native
    line's continuation lines share its fate; Python's warnings and tracebacks are kept).

    Dropped: native log lines below ``level`` and absl's preamble (a warning) when ``level``
    hides warnings. The cuInit failure counts as INFO on a machine with no CUDA driver.
    """
    dropping = False

    def keep(line: str) -> bool:
        nonlocal dropping
        if line.startswith(_ABSL_PREAMBLE):
            dropping = False
            return level < _SEVERITY["W"]
        native = _NATIVE_LINE.match(line)
        if native is None:
            if _PYTHON_LINE.match(line):
                dropping = False
            return not dropping  # else a continuation: it shares the fate of its native line
        severity = _SEVERITY[native.group(1)]
        if _NO_DRIVER_CUINIT in line and not cuda_driver:
            severity = _SEVERITY["I"]  # no driver, no GPU: information, not an error
        dropping = severity < level
        return not dropping

    return keep


def has_cuda_driver() -> bool:
    """Whether this machine can load the CUDA driver library (what TensorFlow's cuInit needs)."""
    if not sys.platform.startswith("linux"):
        return False  # TensorFlow uses CUDA on Linux (and WSL) only
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@contextlib.contextmanager
def filtered_stderr(keep: Callable[[str], bool]) -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the block, then copy the lines ``keep``
    accepts to the real stderr.

    C++ code writes to the descriptor, past ``sys.stderr``. A file, not a pipe: a pipe read by
    a thread would need the interpreter lock that the loading of a shared library holds, and
    a chatty TensorFlow (``TF_CPP_MAX_VLOG_LEVEL``) would fill it and hang. Without a usable
    descriptor 2 or a temporary file the block runs as it is.
    """
    import tempfile

    try:
        _flush_python_streams()
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        capture = tempfile.TemporaryFile()
    except OSError:
        os.close(saved)
        yield
        return
    with capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            _flush_python_streams()
            os.dup2(saved, 2)
            os.close(saved)
            with contextlib.suppress(OSError):  # a closed stderr must not hide the block's error
                capture.seek(0)
                with os.fdopen(os.dup(2), "wb", closefd=True) as err:
                    for raw in capture:
                        if keep(raw.decode("utf-8", "replace").rstrip("\r\n")):
                            err.write(raw)


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the other finders do and runs its import in
    :func:`filtered_stderr`; gone from ``sys.meta_path`` after that import."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader, self)
                return spec
        return None

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, its ``exec_module`` run with the start-up lines filtered."""

    def __init__(self, loader: Any, finder: _QuietTensorFlowImport):
        self._loader, self._finder = loader, finder

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # TensorFlow sees its own loader, as if this one had never been there.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._finder.remove()
        driver = has_cuda_driver()
        with filtered_stderr(start_up_line_filter(min_log_level(), driver)):
            self._loader.exec_module(module)
            if not driver:  # cuInit fails now, inside the capture, not at the first op
                with contextlib.suppress(Exception):
                    module.config.list_physical_devices()

    def __getattr__(self, name: str) -> Any:
        if name in ("_loader", "_finder"):  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self._loader, name)
