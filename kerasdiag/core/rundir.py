"""One run, one directory: what a run directory holds and who may write into it.

A run directory is new (nothing but Hydra's files), unfinished (an interrupted run: its
files, perhaps a ``backup/``) or finished (``.kerasdiag.complete``, written after
``report.html``, the run's last file). A fresh run starts only in a new directory; an
unfinished one is resumed when ``trainer.resume`` is on and the config is the same, and the
resume finishes whatever step is missing (training, test, diagnosis, report) without redoing
what is recorded; a finished one is never written into again. While a run works in a
directory it holds an advisory lock there, so a second process (a resume started twice) is
refused instead of interleaving its files with the first's.

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

from kerasdiag.core.errors import KerasdiagError

try:  # POSIX; elsewhere runs are simply not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class RunLayout:
    """Every file and folder a run directory may hold, each named here once.

    Writers and readers alike (the pipeline, the callbacks, the search, the ensembles, the
    diagnosis, the report) name a run's files through these attributes, so a file is renamed
    in one place. ``RunLayout(run_dir)`` also gives paths: ``RunLayout(d).path(RunLayout.METRICS)``.

    Example:
        >>> RunLayout("outputs/run").path(RunLayout.METRICS).as_posix()
        'outputs/run/metrics.csv'
    """

    # what Hydra writes before our code runs
    HYDRA = ".hydra"
    TRAIN_LOG = "train.log"
    OVERRIDES = ".hydra/overrides.yaml"
    # a run: written in this order
    LOCK = ".kerasdiag.lock"
    CONFIG = "config.yaml"
    DATA = "data.json"
    # a streamed data set's splits (file lists, labels), normalisation and skipped files:
    # what a resumed run reads back to train on the same examples
    DATA_SPLITS = "data_splits.json"
    SUMMARY = "summary.txt"
    SANITY = "sanity.json"
    GRADCHECK = "gradcheck.json"
    LR_FINDER = "lr_finder.json"
    METRICS = "metrics.csv"
    LEARNING_RATE = "learning_rate.csv"
    UPDATE_RATIOS = "update_ratios.csv"
    ACTIVATIONS = "activations.csv"
    GRADIENT_NORMS = "gradient_norms.csv"
    FILTERS = "filters"  # a folder of PNG grids
    FILTERS_INIT = "filters_init.png"
    FILTERS_RAW = "filters.npz"
    TENSORBOARD = "tensorboard"
    CHECKPOINTS = "checkpoints"
    BACKUP = "backup"
    BACKUP_STATE = "state.json"  # inside BACKUP
    DOCTOR = "doctor.json"
    NAN = "nan.json"
    EMA_MODEL = "ema.keras"
    TEST_METRICS = "test_metrics.json"
    TEST_CONFUSION = "test_confusion.json"
    DIAGNOSIS = "diagnosis.json"
    REPORT = "report.html"
    TIMINGS = "timings.jsonl"  # seconds per stage, a line appended as each ends
    # Written last, after report.html: the run is complete. A marker of its own, not
    # report.html itself, because ``scripts/report.py`` may build a report in any directory,
    # an interrupted run's too, and that must not make the run count as finished.
    COMPLETE = ".kerasdiag.complete"
    # a search
    TRIALS = "trials"
    SEARCH_PROJECT = "search"  # keras-tuner's project: oracle.json, trial_*/ and the ledger
    SEARCH_HPARAMS = "tensorboard/search"
    SEARCH_CSV = "search.csv"
    SEARCH_FIGURE = "search.png"
    SEARCH_SUMMARY = "search_summary.json"
    # an ensemble
    MEMBERS = "members"
    ENSEMBLE = "ensemble.json"
    ENSEMBLE_MODEL = "ensemble.keras"
    # a multirun's sweep folder
    MULTIRUN_CSV = "multirun.csv"
    MULTIRUN_HTML = "multirun.html"

    # Files Hydra writes into a run directory before our code runs.
    HYDRA_FILES = frozenset({HYDRA, TRAIN_LOG})
    # What a run records from its config and data alone, before it builds or trains anything:
    # the same command writes them again.
    BEFORE_MODEL = frozenset({CONFIG, DATA, DATA_SPLITS, TIMINGS})
    # A run directory holding any of these holds a finished run. test_metrics.json or
    # nan.json alone do not: a run killed after them still lacks its diagnosis and report,
    # which the same command run again writes.
    FINISHED_FILES = (COMPLETE,)

    def __init__(self, run_dir: str | os.PathLike):
        self.root = Path(run_dir)

    def path(self, name: str) -> Path:
        """The path of ``name`` (one of this class's names) in this run directory."""
        return self.root / name


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
    names = {p.name for p in run_dir.iterdir()} - RunLayout.HYDRA_FILES - {RunLayout.LOCK}
    if any(name in names for name in RunLayout.FINISHED_FILES):
        return FINISHED
    return UNFINISHED if names else NEW


def check_run_dir(run_dir: str | os.PathLike, cfg: DictConfig) -> str:
    """Raise a one-line KerasdiagError unless a run with ``cfg`` may use ``run_dir``.

    Returns the directory's status: ``"new"`` (a fresh run) or ``"unfinished"`` (a resume).
    """
    run_dir = Path(run_dir)
    status = run_dir_status(run_dir)
    if status == FINISHED:
        marker = next(name for name in RunLayout.FINISHED_FILES if (run_dir / name).exists())
        raise KerasdiagError(
            f"run directory {run_dir} already holds a finished run ({RunLayout.REPORT} and "
            f"{marker} written); "
            "start a new run in a new directory (leave hydra.run.dir unset)"
        )
    if status == UNFINISHED:
        if not cfg.trainer.resume:
            raise KerasdiagError(
                f"run directory {run_dir} holds an interrupted run; resume it with "
                "trainer.resume=true or start a new run in a new directory"
            )
        difference = config_difference(run_dir / RunLayout.CONFIG, cfg)
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
    lock_path = run_dir / RunLayout.LOCK
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
    lock_path = Path(run_dir) / RunLayout.LOCK
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
        path = self.path / RunLayout.CONFIG
        if not path.is_file():
            return None
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)

    def history(self) -> dict[str, list[float]]:
        """metrics.csv as {column: [value per epoch]} (NaN where a cell is empty)."""
        path = self.path / RunLayout.METRICS
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
        for stage in self.json(RunLayout.SANITY) or []:
            value = stage.get("value")
            if stage.get("name") == "initial_loss" and _finite(value):
                return float(value)
        return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
