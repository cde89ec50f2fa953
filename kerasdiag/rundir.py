"""One run, one directory: what a run directory holds and who may write into it.

A run directory is new (nothing but Hydra's files), unfinished (an interrupted run: its
files, perhaps a ``backup/``) or finished (``test_metrics.json``, or ``nan.json`` after a
NaN stop). A fresh run starts only in a new directory; an unfinished one is resumed when
``trainer.resume`` is on and the config is the same; a finished one is never written into
again. While a run works in a directory it holds an advisory lock there, so a second process
(a resume started twice) is refused instead of interleaving its files with the first's.

No TensorFlow here: ``scripts/train.py`` checks the directory before Hydra writes into it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kerasdiag.errors import KerasdiagError

try:  # POSIX; elsewhere runs are simply not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

# Files Hydra writes into a run directory before our code runs.
HYDRA_FILES = frozenset({".hydra", "train.log"})
LOCK_FILE = ".kerasdiag.lock"
BACKUP_DIR = "backup"
NAN_FILE = "nan.json"
CONFIG_FILE = "config.yaml"
# A run directory holding any of these holds a finished run.
FINISHED_FILES = ("test_metrics.json", NAN_FILE)
# Keys that may differ between an interrupted run and its resume: they change what is shown
# or checked, not what is trained.
RESUME_FREE_KEYS = (
    "trainer.verbose",
    "trainer.resume",
    "trainer.tensorboard",
    "sanity",
    "monitors",
    # how a search's trials are spread over processes, not what they train
    "tuner.lease_seconds",
    "tuner.heartbeat_seconds",
    "tuner.chief_timeout",
    "tuner.trials_per_process",
    "tuner.workers",
)

NEW, UNFINISHED, FINISHED = "new", "unfinished", "finished"


def run_dir_status(run_dir: str | os.PathLike) -> str:
    """``"new"``, ``"unfinished"`` or ``"finished"`` (see the module docstring)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return NEW
    names = {p.name for p in run_dir.iterdir()} - HYDRA_FILES - {LOCK_FILE}
    if any(name in names for name in FINISHED_FILES):
        return FINISHED
    return UNFINISHED if names else NEW


def check_run_dir(run_dir: str | os.PathLike, cfg: DictConfig) -> str:
    """Raise a one-line KerasdiagError unless a run with ``cfg`` may use ``run_dir``.

    Returns the directory's status: ``"new"`` (a fresh run) or ``"unfinished"`` (a resume).
    """
    run_dir = Path(run_dir)
    status = run_dir_status(run_dir)
    if status == FINISHED:
        marker = next(name for name in FINISHED_FILES if (run_dir / name).exists())
        raise KerasdiagError(
            f"run directory {run_dir} already holds a finished run ({marker}); "
            "start a new run in a new directory (leave hydra.run.dir unset)"
        )
    if status == UNFINISHED:
        if not cfg.trainer.resume:
            raise KerasdiagError(
                f"run directory {run_dir} holds an interrupted run; resume it with "
                "trainer.resume=true or start a new run in a new directory"
            )
        difference = config_difference(run_dir / CONFIG_FILE, cfg)
        if difference:
            raise KerasdiagError(
                f"cannot resume the run in {run_dir}: {difference}; a resumed run must use "
                "the interrupted run's config (start a new run in a new directory instead)"
            )
    return status


def config_difference(saved_path: Path, cfg: DictConfig) -> str | None:
    """The first setting in which ``cfg`` differs from the saved config, or None."""
    if not saved_path.is_file():
        return None  # interrupted before its config was written: nothing to compare
    try:
        saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True)
    except Exception as exc:  # YAML the run did not write: someone edited it
        return f"its {saved_path.name} is unreadable ({type(exc).__name__})"
    current = OmegaConf.to_container(cfg, resolve=True)
    for key, old, new in _differences(saved, current):
        if not any(key == free or key.startswith(f"{free}.") for free in RESUME_FREE_KEYS):
            return f"its {key} was {old!r}, now {new!r}"
    return None


def _differences(old: Any, new: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            yield from _differences(
                old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key)
            )
    elif old != new:
        yield prefix, old, new


@contextlib.contextmanager
def claim_run_dir(run_dir: str | os.PathLike, cfg: DictConfig) -> Iterator[str]:
    """Lock ``run_dir`` for this process, check it (:func:`check_run_dir`), yield its status.

    The lock is released (and its file removed) when the block ends, however it ends; the
    operating system releases it if the process is killed.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_path = run_dir / LOCK_FILE
    handle = open(lock_path, "a+")  # noqa: SIM115 - held for the whole block
    if fcntl is not None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()  # the file is the other process's: leave it
            raise KerasdiagError(
                f"run directory {run_dir} is in use by another kerasdiag process"
            ) from None
    try:
        yield check_run_dir(run_dir, cfg)
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()
        handle.close()


def is_locked(run_dir: str | os.PathLike) -> bool:
    """True while another process holds the run directory's lock."""
    lock_path = Path(run_dir) / LOCK_FILE
    if fcntl is None or not lock_path.exists():
        return False
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


# --- reading a run's files --------------------------------------------------------------------


def read_metrics_csv(path: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """Rows of a metrics.csv keyed by epoch, numbers as floats (empty cells dropped)."""
    rows: dict[int, dict[str, Any]] = {}
    with open(path, newline="") as f:
        for rec in csv.DictReader(f):
            row = {k: float(v) for k, v in rec.items() if v not in ("", None)}
            epoch = int(row["epoch"])
            row["epoch"] = epoch
            rows[epoch] = row
    return rows


class RunFiles:
    """Read-only access to the files of a run directory; a missing file reads as empty.

    Example:
        >>> RunFiles("outputs/run").history()["loss"]  # doctest: +SKIP
        [2.1, 1.4, 0.9]
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir)
        if not self.path.is_dir():
            raise FileNotFoundError(f"run directory {self.path} does not exist")

    def exists(self, name: str) -> bool:
        return (self.path / name).is_file()

    def json(self, name: str) -> Any:
        path = self.path / name
        if not path.is_file():
            return None
        with open(path) as f:
            return json.load(f)

    def config(self) -> Any:
        path = self.path / CONFIG_FILE
        if not path.is_file():
            return None
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)

    def history(self) -> dict[str, list[float]]:
        """metrics.csv as {column: [value per epoch]} (NaN where a cell is empty)."""
        path = self.path / "metrics.csv"
        if not path.is_file():
            return {}
        rows = read_metrics_csv(path)
        columns = sorted({k for row in rows.values() for k in row})
        return {c: [float(rows[e].get(c, math.nan)) for e in sorted(rows)] for c in columns}

    def csv_rows(self, name: str) -> list[list[str]]:
        """A CSV file's data rows (header dropped) as lists of strings."""
        path = self.path / name
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            return list(csv.reader(f))[1:]

    def sanity_initial_loss(self) -> float | None:
        for stage in self.json("sanity.json") or []:
            value = stage.get("value")
            if stage.get("name") == "initial_loss" and _finite(value):
                return float(value)
        return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
