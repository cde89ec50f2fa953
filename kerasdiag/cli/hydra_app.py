"""What the command-line scripts share: one-line errors, exit codes, no half-written runs.

Exit codes of ``scripts/train.py``:

- 0: the run finished;
- 2: bad input (config value, data file, run directory already used), one ``error:`` line;
- 3: training stopped because the loss became NaN/Inf (one ``error:`` line saying where and
  what to try; ``nan.json``, metrics.csv and the best checkpoint so far stay in the run dir);
- 4: the machine refused a file operation (disk full, read-only file system, no permission,
  a path that is not a file): one ``error:`` line naming the path and the cause; files are
  written atomically, so none is left half-written and the same command resumes the run;
- 5: a distributed search worker lost its chief (one ``error:`` line);
- 130, 143: stopped by SIGINT / SIGTERM (128 + the signal) at a safe point, backed up at
  that step: one ``error:`` line says how to resume (the same command);
- anything else: a bug in kerasdiag or a crash of TensorFlow (a traceback).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import io
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from kerasdiag.config import composition_error, validate_config
from kerasdiag.config.schema import loss_task
from kerasdiag.core.errors import KerasdiagError, shorten
from kerasdiag.core.process_exit import exit_code_of, exit_process
from kerasdiag.core.rundir import RunLayout, check_run_dir, is_locked
from kerasdiag.data.loaders import check_batch_size, load_dataset

try:  # POSIX; elsewhere run directories are not locked (as in kerasdiag.core.rundir)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

IO_EXIT_CODE = 4
# Free space a run needs to start: Hydra's .hydra/ files and train.log, the run's config,
# data.json and first CSV rows (tmpfs and most file systems count whole 4 kB pages). Below it
# the run is refused before anything is written; a disk that fills later is caught per write.
MIN_FREE_BYTES = 64 * 1024
# Whether this process created its run directory itself (None: Hydra's default directory,
# made for this process alone). Only a directory it made may be removed when the run is
# refused: another process may be starting in one it found.
_made_run_dir: bool | None = None
# The run directory's ancestors this process made (outputs/, outputs/<recipe>/ of a first run):
# a run refused before it wrote anything leaves them empty, and they go with it.
_made_parents: list[Path] = []
_task_started = False
# An open descriptor of the run directory, flock()ed from the preflight until this process
# exits: the directory is claimed before Hydra or this process writes a byte into it, so a
# second process started on it is refused having written nothing there. The run's own lock
# file (``RunLayout.LOCK``, taken later by the pipeline) is another inode: no conflict.
_dir_lock: int | None = None
_run_dir: Path | None = None  # the directory claimed by the preflight, if it claimed one


# An error line is cut here (a whole file echoed back by a library would bury the cause);
# config values are already cut to 100 characters where the message is made.
MAX_LINE = 1000


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` as one line on stderr and exit with ``code``."""
    print(f"error: {shorten(str(message), MAX_LINE)}", file=sys.stderr)
    raise SystemExit(code)


class Preflight(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``): check the config Hydra
    composed, and the run directory, before Hydra makes that directory and writes its files.

    ``on_run_start`` runs once per single run, after composition and before ``run_job``; a
    multirun's jobs are checked by the task function instead (each has its own directory).
    Refusals are one ``error:`` line and exit code 2 (4 for a directory that cannot be made).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        cfg = job_config(config)
        run_dir = Path(str(config.hydra.run.dir))
        # Hydra's default name is timestamped (``${now:...}``): a folder new to this process.
        explicit = "${" not in str(OmegaConf.to_container(config.hydra.run)["dir"])
        try:
            validate_config(cfg)
        except KerasdiagError as exc:
            fail(str(exc))
        _check_free_space(run_dir)
        _claim_creation(run_dir, explicit, exclusive=not _search_member(cfg))
        if explicit:  # claimed: now read what the directory holds, before Hydra writes there
            try:
                if is_locked(run_dir):
                    fail(f"run directory {run_dir} is in use by another kerasdiag process")
                check_run_dir(run_dir, cfg)
            except KerasdiagError as exc:
                _discard_if_empty(run_dir)
                fail(str(exc))
            except OSError as exc:
                _discard_if_empty(run_dir)
                fail(os_error_line(exc), IO_EXIT_CODE)


def job_config(config: DictConfig) -> DictConfig:
    """The composed config without Hydra's own ``hydra`` section (what the task function gets)."""
    cfg = copy.deepcopy(config)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def run_app(main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` app; a config Hydra cannot compose is one ``error:`` line, exit 2.

    ``HYDRA_FULL_ERROR=1`` makes Hydra raise its exception instead of printing it, so the line
    is made from the exception's fields (:func:`kerasdiag.config.composition_error`). Errors
    raised once the task function started are the task's own and travel on unchanged.

    When the app succeeds, the process ends here, through
    :func:`kerasdiag.core.process_exit.exit_process`: threads, ``atexit`` and the output run
    down as at any exit, without the interpreter's second-long teardown of TensorFlow. Every
    writer of a finished run is closed by then (training's end closes them; the report has
    read their files back). Any other ending (an error, a stop on a signal, a NaN) exits as
    Python does: a run stopped in the middle of an epoch may still hold buffered records
    that only the interpreter's teardown writes out.
    """
    try:
        _run_app(main)
    except SystemExit as exc:
        if exit_code_of(exc) != 0:
            raise
    exit_process(0)


def _run_app(main: Callable[[], Any]) -> None:
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (HydraException, OmegaConfBaseException) as exc:
        if _task_started:
            raise
        fail(str(composition_error(exc, sys.argv[1:])))
    except OSError as exc:  # Hydra writing its .hydra/ files or opening train.log
        if _task_started:
            raise
        if _run_dir is not None:
            _discard_if_empty(_run_dir)
        if exc.errno == errno.ENAMETOOLONG:  # an override Hydra took for a file name: input
            fail(f"a value on the command line is too long for a file name: {exc.filename}")
        fail(os_error_line(exc), IO_EXIT_CODE)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_free_space(run_dir: Path) -> None:
    """Refuse to start on a disk without :data:`MIN_FREE_BYTES` free, before anything is
    written: Hydra's own writes would otherwise fail with a traceback and leave a directory
    holding a truncated ``.hydra/`` and an empty ``train.log``."""
    where = _nearest_existing(run_dir)
    try:
        stats = os.statvfs(where)
    except (OSError, AttributeError):  # not POSIX, or the path vanished: writes will tell
        return
    free = stats.f_bavail * stats.f_frsize
    if free < MIN_FREE_BYTES:
        fail(
            f"cannot write or read {run_dir}: {os.strerror(errno.ENOSPC)} ({free} bytes free, "
            f"a run needs {MIN_FREE_BYTES} to start); free space or point hydra.run.dir at "
            "another disk, then run the same command again",
            IO_EXIT_CODE,
        )


def _lock_directory(run_dir: Path) -> bool:
    """Take this process's lock on ``run_dir`` itself (see :data:`_dir_lock`); False when
    another process holds it. Without ``fcntl`` (Windows) every claim succeeds."""
    global _dir_lock
    if fcntl is None:
        return True
    fd = os.open(run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _dir_lock = fd
    return True


def task_started() -> None:
    """Mark that Hydra called the task function (its errors are no composition errors)."""
    global _task_started
    _task_started = True


def _search_member(cfg: DictConfig) -> bool:
    """Whether this process is the chief or a worker of a distributed search: those share one
    run directory by design (keras-tuner's variables, as ``kerasdiag.search.run`` reads them;
    not imported here, it starts TensorFlow)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and str(cfg.tuner.name) != "none"


def _claim_creation(run_dir: Path, explicit: bool, exclusive: bool = True) -> None:
    """Create the run directory now, atomically, lock it, and remember whether this process
    made it.

    ``os.mkdir`` succeeds for exactly one of several processes started on one directory: only
    that one may later remove it. The lock (:data:`_dir_lock`) is what admits one process: a
    second one, whether it found the directory or raced for it, is refused here, before Hydra
    writes its ``.hydra/`` files and ``train.log``, so nothing of it lands in the winner's.
    Not ``exclusive``: the processes of one distributed search, which share the directory. Hydra's own run directories (microseconds in the name) are
    made by Hydra for this process alone. A directory that cannot be made (read-only file
    system, no permission) is one ``error:`` line here, before Hydra's logging trips on it.
    """
    global _made_run_dir, _run_dir
    _run_dir = run_dir  # Hydra's own (timestamped) one too: removable when left empty
    try:
        missing = [p for p in run_dir.absolute().parents if not p.exists()]
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        _made_parents[:] = missing  # deepest first
        probe = run_dir.parent
        if explicit:
            try:
                run_dir.mkdir()
                made = True
            except FileExistsError:
                made = False
            if not run_dir.is_dir():  # a file (or a link to one) stands there
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(run_dir))
            if exclusive and not _lock_directory(run_dir):
                # The other process's directory (it made it, or is resuming in it): this one
                # leaves without writing or removing anything there.
                fail(f"run directory {run_dir} is in use by another kerasdiag process")
            _made_run_dir = made
            probe = run_dir
        if not os.access(probe, os.W_OK):
            read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
            code = errno.EROFS if read_only else errno.EACCES
            raise OSError(code, os.strerror(code), str(probe))
    except OSError as exc:
        fail(os_error_line(exc), IO_EXIT_CODE)


_ADVICE = {
    errno.ENOSPC: "the disk is full: free space (or point hydra.run.dir at another disk) and "
    "run the same command again; the run resumes from its last complete epoch",
    errno.EDQUOT: "the disk quota is used up: free space and run the same command again",
    errno.EROFS: "the file system is read-only: choose a writable hydra.run.dir",
    errno.EACCES: "no permission: choose a directory you can write (hydra.run.dir=...) or fix "
    "the file's permissions",
    errno.EISDIR: "a directory stands where a file is expected: move it away",
    errno.ENOTDIR: "a file stands where a directory is expected: move it away",
}


def os_error_line(exc: OSError) -> str:
    """One line for a failed file operation: the path, the cause, what to do."""
    code = exc.errno
    if code is None:  # h5py and others put the errno in the text only
        found = re.search(r"errno = (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    cause = exc.strerror or (os.strerror(code) if code else " ".join(str(exc).split())[:200])
    path = shorten(exc.filename or _path_in(str(exc)) or "a run file", 300)
    advice = _ADVICE.get(code, "check the disk and the path, then run the same command again")
    if code == errno.EPERM:
        advice = _ADVICE[errno.EACCES]
    return f"cannot write or read {path}: {cause}; {advice}"


def _path_in(text: str) -> str | None:
    found = re.search(r"name = '([^']+)'", text)  # h5py: "Unable to create file (name = '...')"
    return found.group(1) if found else None


@contextlib.contextmanager
def exit_on_user_error(run_dir: str | Path) -> Iterator[None]:
    """Turn a KerasdiagError into one line and exit 2; drop a run dir that holds nothing of ours."""
    try:
        yield
    except KerasdiagError as exc:
        # Bad input found before a model was built (a builder refusing a setting): the run
        # recorded nothing the corrected command will not write again, and its directory
        # would make that command a resume of a run that never trained.
        _discard_if_empty(Path(run_dir), RunLayout.BEFORE_MODEL)
        fail(str(exc), exc.exit_code)
    except OSError as exc:  # disk full, read-only, no permission: the run stays resumable
        _discard_if_empty(Path(run_dir))  # unless nothing of it was written yet
        fail(os_error_line(exc), IO_EXIT_CODE)


def load_inputs(cfg: Any) -> Any:
    """Load and check the data before TensorFlow starts: bad data ends the run here, with its
    real cause and no run directory (the builder was checked with the config)."""
    data = load_dataset(cfg.data, loss_task(cfg.loss.name))
    check_batch_size(cfg.data, data)
    return data


class _Tee(io.TextIOBase):
    """A console stream that also appends everything written to it to a log file."""

    def __init__(self, stream: Any, log: Any):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._to_log(self._log.write, text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._to_log(self._log.flush)
        self._stream.flush()

    def _to_log(self, method: Callable[..., Any], *args: Any) -> None:
        # The log is a copy of the console: a disk that fills must not also silence the
        # console, where the error line that says so is printed.
        if self._log is None:
            return
        try:
            method(*args)
        except OSError:
            self._log = None

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
    try:
        log = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed below, errors ignored
    except OSError:  # a full disk: the console alone; the run's first write says why
        yield
        return
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
        with contextlib.suppress(OSError):
            log.close()


def _discard_if_empty(run_dir: Path, also: frozenset[str] = frozenset()) -> None:
    """Remove a run directory that holds nothing but Hydra's files (and files named in
    ``also``), if this process made it.

    A directory it found may be another process's that is still starting (its lock not yet
    taken): that one is never removed. Neither is one whose lock another process holds.
    """
    mine = _made_run_dir if _made_run_dir is not None else _hydra_default(run_dir)
    if not mine or is_locked(run_dir):
        return
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= RunLayout.HYDRA_FILES | also | {
        RunLayout.LOCK
    }:
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in _made_parents:  # deepest first; rmdir leaves a folder others wrote in
            with contextlib.suppress(OSError):
                parent.rmdir()


def _hydra_default(run_dir: Path) -> bool:
    # Hydra's default run directories end in a timestamp with microseconds: made for this run.
    return bool(re.search(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}-\d{6}$", run_dir.name))
