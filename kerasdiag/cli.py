"""What the command-line scripts share: one-line errors, exit codes, no half-written runs.

Exit codes of ``scripts/train.py``:

- 0: the run finished;
- 2: bad input (config value, data file, run directory already used), one ``error:`` line;
- 3: training stopped because the loss became NaN/Inf (one ``error:`` line saying where and
  what to try; ``nan.json``, metrics.csv and the best checkpoint so far stay in the run dir);
- anything else: a bug in kerasdiag or a crash of TensorFlow (a traceback).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from kerasdiag.errors import KerasdiagError
from kerasdiag.rundir import HYDRA_FILES, LOCK_FILE, check_run_dir, is_locked


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` as one line on stderr and exit with ``code``."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)


def preflight(argv: Sequence[str]) -> None:
    """Compose and validate the config the command line asks for, before Hydra makes a run dir.

    Catches unknown recipes, groups and keys, wrong types and bad values with one clear line.
    Multirun sweeps (``-m``) are composed by Hydra per job and checked inside each job.
    """
    if any(a in ("-m", "--multirun") or a.startswith("-") for a in argv):
        return  # flags (--help, --cfg, -m, ...) are Hydra's
    from kerasdiag.config import config_error_line, load_config

    overrides = [a for a in argv if not a.lstrip("+~").startswith("hydra")]
    try:
        cfg = load_config(overrides)
        run_dir = explicit_run_dir(argv)
        if run_dir is not None:  # before Hydra rewrites its .hydra/ files there
            if is_locked(run_dir):
                fail(f"run directory {run_dir} is in use by another kerasdiag process")
            check_run_dir(run_dir, cfg)
    except KerasdiagError as exc:
        fail(str(exc))
    except Exception as exc:  # Hydra's and OmegaConf's composition errors
        fail(config_error_line(exc))


def explicit_run_dir(argv: Sequence[str]) -> Path | None:
    """The ``hydra.run.dir=...`` the command line sets (None if unset or interpolated)."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    if not values or "${" in values[-1]:
        return None  # Hydra's default has microseconds in its name: always a new folder
    return Path(values[-1].strip("'\""))


@contextlib.contextmanager
def exit_on_user_error(run_dir: str | Path) -> Iterator[None]:
    """Turn a KerasdiagError into one line and exit 2; drop a run dir that holds nothing of ours."""
    try:
        yield
    except KerasdiagError as exc:
        _discard_if_empty(Path(run_dir))
        fail(str(exc), exc.exit_code)


def load_inputs(cfg: Any) -> Any:
    """Load and check the data before TensorFlow starts: bad data ends the run here, with its
    real cause and no run directory (the builder was checked with the config)."""
    from kerasdiag.data.loaders import load_dataset

    return load_dataset(cfg.data)


class _Tee(io.TextIOBase):
    """A console stream that also appends everything written to it to a log file."""

    def __init__(self, stream: Any, log: Any):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._log.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._log.flush()
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")


@contextlib.contextmanager
def console_log(path: str | Path) -> Iterator[None]:
    """Copy what the run prints (stdout and stderr) into ``path`` (``train.log``).

    Hydra creates the file for its logging; the run's own output is the console, so the log
    holds what the person saw. Output of TensorFlow's C++ runtime bypasses Python's streams.
    """
    path = Path(path)
    if not path.parent.is_dir():
        yield
        return
    with open(path, "a", encoding="utf-8") as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


def _discard_if_empty(run_dir: Path) -> None:
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= HYDRA_FILES | {LOCK_FILE}:
        shutil.rmtree(run_dir, ignore_errors=True)
