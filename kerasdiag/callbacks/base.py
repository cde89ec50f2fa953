"""What the monitors share: argument checks, step counting, TensorBoard and CSV output."""

from __future__ import annotations

import abc
import concurrent.futures
import csv
import io
import math
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from kerasdiag.core.arguments import check_positive_int
from kerasdiag.core.io import write_csv_atomic
from kerasdiag.modeling.optimizers import optimizer_step


class MonitorWarning(UserWarning):
    """A monitor saw a number outside its healthy range (the message names the likely cause)."""


def check_probe(name: str, value: Any) -> np.ndarray:
    """A probe batch: a non-empty array with a batch axis."""
    array = np.asarray(value)
    if array.ndim < 1 or array.shape[0] < 1:
        raise ValueError(
            f"`{name}` must be a non-empty array with a batch axis. Received shape {array.shape}"
        )
    return array


def optional_path(value: str | os.PathLike | None) -> Path | None:
    return None if value is None else Path(value)


def warn(message: str) -> None:
    # stacklevel 3: point at the Keras callback loop rather than at this helper.
    warnings.warn(message, MonitorWarning, stacklevel=3)


class SummaryLog:
    """One TensorBoard run directory (``log_dir/name``), opened on first use.

    Each monitor writes its own run so that TensorBoard's per-run step order holds (the
    update-ratio run counts steps, the filter run counts epochs) and runs can be toggled.

    Why not ``tf.summary``: every ``tf.summary.write`` is an eager TensorFlow op (~1 ms of
    dispatch on this 2-core machine), and the monitors write ~500 values a run (a scalar and
    a histogram per layer and probe), about 0.5 s of a 20 s fit on the training thread. The
    same records (the plugins' metadata, a tensor per tag, one event per call) go through
    TensorBoard's own :class:`EventFileWriter`, which serialises a protocol buffer per call
    and writes on its own thread: ~0.2 ms per call. TensorBoard reads them as it reads
    ``tf.summary``'s (tested with its ``EventAccumulator``).

    The writer holds events in memory until it flushes (every two minutes): a process
    killed after a backup would lose the events of the epochs that backup says are
    recorded. :func:`flush_records` flushes every open one before each backup (once an
    epoch: a flush waits for the writer's queue and flushes the file, no fsync).
    """

    _open: weakref.WeakSet[SummaryLog] = weakref.WeakSet()  # the logs with a writer open

    def __init__(self, log_dir: Path | None, name: str):
        self.path = None if log_dir is None else log_dir / name
        self._writer: EventFileWriter | None = None

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def scalars(self, values: dict[str, float], step: int) -> None:
        self._write({tag: np.float32(v) for tag, v in values.items()}, _SCALAR_METADATA, step)

    def histograms(self, buckets: dict[str, np.ndarray], step: int) -> None:
        """Histograms already bucketed (:func:`~kerasdiag.callbacks.stats.histogram_buckets`):
        (buckets, 3) arrays of (left edge, right edge, count)."""
        self._write(buckets, _HISTOGRAM_METADATA, step)

    def png(self, tag: str, png: bytes, width: int, height: int, step: int) -> None:
        """An already encoded PNG as a TensorBoard image: the image plugin's data format is
        just (width, height, PNG bytes)."""
        data = np.array([str(width).encode(), str(height).encode(), png], dtype=object)
        self._write({tag: data}, _IMAGE_METADATA, step)

    def flush(self) -> None:
        """Put every event written so far into the file."""
        if self._writer is not None:
            self._writer.flush()

    @classmethod
    def flush_open(cls) -> None:
        """Flush every SummaryLog that has a writer open (any monitor's)."""
        for log in list(cls._open):
            log.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            SummaryLog._open.discard(self)

    def _write(self, values: dict[str, Any], metadata: Any, step: int) -> None:
        if not self.enabled or not values:
            return
        if self._writer is None:
            self._writer = EventFileWriter(str(self.path))
            SummaryLog._open.add(self)
        summary = summary_pb2.Summary()
        for tag, value in values.items():
            entry = summary.value.add(tag=tag, metadata=metadata)
            entry.tensor.CopyFrom(tensor_util.make_tensor_proto(value))
        self._writer.add_event(
            event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        )


_HISTOGRAM_METADATA = histogram_metadata.create_summary_metadata(display_name=None, description="")
_SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name=None, description="")
_IMAGE_METADATA = image_metadata.create_summary_metadata(display_name=None, description="")


class FileWrites:
    """File writes run in order on one background thread shared by all monitors.

    The atomic writes end with an fsync, which waits tens of milliseconds on a busy disk;
    on the training thread that wait would stretch every epoch. :meth:`wait` blocks until
    everything submitted is on disk and re-raises a failed write.
    """

    _executor: concurrent.futures.ThreadPoolExecutor | None = None
    _lock = threading.Lock()

    def __init__(self):
        self._futures: list[concurrent.futures.Future] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        done = [f for f in self._futures if f.done()]
        self._futures = [f for f in self._futures if not f.done()]
        for future in done:
            future.result()
        self._futures.append(self._pool().submit(fn, *args))

    def wait(self) -> None:
        futures, self._futures = self._futures, []
        for future in futures:
            future.result()

    @classmethod
    def drain(cls) -> None:
        """Wait for every write submitted so far, by any instance (the thread runs them in
        order, so the last one done means all are); a failed write raises at its owner's
        :meth:`wait`."""
        with cls._lock:
            executor = cls._executor
        if executor is not None:
            executor.submit(lambda: None).result()

    @classmethod
    def _pool(cls) -> concurrent.futures.ThreadPoolExecutor:
        with cls._lock:
            if cls._executor is None:
                cls._executor = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="kerasdiag-writes"
                )
            return cls._executor


class CsvLog:
    """Rows kept in memory and rewritten atomically: a crash never leaves half a file.

    A resumed run's monitor must keep the rows of the epochs before the resume point: the
    file is rewritten whole at every epoch end, so rows not read back would be erased.
    :meth:`read_back` takes the file's rows (when this log has none yet: a fresh process),
    kept apart from :attr:`rows` (this process's measurements, which callers read as their
    history); :meth:`keep_epochs` drops the read-back rows of the epochs the resumed ``fit``
    runs again (as :class:`~kerasdiag.callbacks.metrics_csv.MetricsCSV` does for
    ``metrics.csv``). The file written is the read-back rows, then :attr:`rows`.
    """

    def __init__(self, path: Path | None, header: Sequence[str]):
        self.path = path
        self.header = list(header)
        self.rows: list[list[Any]] = []
        self.restored: list[list[Any]] = []  # rows of an earlier process, read back
        self._unchanged = False  # the file holds exactly what would be written
        self._writes = FileWrites()

    def add(self, row: Sequence[Any]) -> None:
        self.rows.append(list(row))
        self._unchanged = False

    def read_back(self) -> None:
        """Take the rows the file holds (strings, written back unchanged) when this log has
        none of its own: a process resuming an interrupted run. A file with another header
        (another monitor's, an older layout) is not read: it is rewritten as before."""
        self.restored = []
        if self.path is None or self.rows or not self.path.is_file():
            return
        with open(self.path, newline="") as f:
            lines = list(csv.reader(f))
        if lines and lines[0] == self.header:
            self.restored = lines[1:]
            self._unchanged = True

    def keep_epochs(self, done: int) -> None:
        """Keep the read-back rows of the first ``done`` epochs (1-based ``epoch`` column):
        a ``fit`` resumed after epoch ``done`` measures the later ones again."""
        if not self.restored or "epoch" not in self.header:
            return
        column = self.header.index("epoch")
        kept = [row for row in self.restored if _epoch_of(row, column) <= done]
        self._unchanged &= len(kept) == len(self.restored)
        self.restored = kept

    def rows_of_epoch(self, epoch: int) -> list[list[str]]:
        """The rows of ``epoch`` (1-based ``epoch`` column), read-back ones and this
        process's, as the file holds them (strings): what a backup taken inside that epoch
        carries, since the file gets them only at the epoch's end."""
        if "epoch" not in self.header:
            return []
        column = self.header.index("epoch")
        earlier = [row for row in self.restored if _epoch_of(row, column) == epoch]
        return earlier + _as_text([row for row in self.rows if _epoch_of(row, column) == epoch])

    def carry(self, rows: Sequence[Sequence[str]]) -> None:
        """Add ``rows`` (:meth:`rows_of_epoch`'s, of an earlier process) to the read-back
        rows: a fit resumed inside an epoch keeps what was measured in it before the stop."""
        if rows:
            self.restored = [*self.restored, *([str(v) for v in row] for row in rows)]
            self._unchanged = False

    def flush(self) -> None:
        """Rewrite the file with all rows so far, in the background (not at all while it
        holds them already: a resumed fit with no epoch left to run leaves it untouched)."""
        if self.path is not None and not self._unchanged:
            # Rows are never changed once added: a shallow copy is a stable snapshot.
            rows = [*self.restored, *self.rows]
            self._writes.submit(write_csv_atomic, self.path, self.header, rows)

    def wait(self) -> None:
        self._writes.wait()


def _as_text(rows: list[list[Any]]) -> list[list[str]]:
    """``rows`` as the CSV file holds them (numbers formatted as the csv module writes them,
    numpy scalars included), read back."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return list(csv.reader(io.StringIO(buf.getvalue())))


def _epoch_of(row: Sequence[Any], column: int) -> float:
    try:
        return float(row[column])
    except (IndexError, ValueError):
        return math.inf  # a row that names no epoch is not kept


def flush_records() -> None:
    """Put on disk everything the monitors and the doctor recorded so far: wait for the
    background file writes (:class:`FileWrites`) and flush the open TensorBoard writers
    (:class:`SummaryLog`). Called before each backup, which must never get ahead of the files
    that record what it covers."""
    FileWrites.drain()
    SummaryLog.flush_open()


class WritesBarrier(keras.callbacks.Callback):
    """At each epoch end, put every record written so far on disk (:func:`flush_records`).

    The monitors and the doctor write their files on :class:`FileWrites`' thread and their
    TensorBoard events through buffered writers. Placed just before
    :class:`~kerasdiag.callbacks.run_backup.RunBackup`, this makes the backup of an epoch
    never get ahead of the files that record it: a process killed right after the backup
    would otherwise resume after an epoch whose monitor rows or events never reached the
    disk. (RunBackup flushes them too, at a backup taken inside an epoch.)
    """

    def on_epoch_end(self, epoch, logs=None):
        flush_records()


@dataclass(frozen=True)
class ProbeSchedule:
    """Before which optimizer steps a step monitor measures: steps 0, ``freq``, 2 * ``freq``,
    ... below step ``until``, then every ``then`` steps (the multiples of ``then`` from
    ``until`` on). Without ``then``, every ``freq`` steps throughout.

    A run's curves need their first points early (a run that early stopping cuts short must
    still have enough of them) but not dense ones all along: measuring often at first and
    thinner later keeps a long run's measurements a small share of its training time.
    Monitors that share a probe batch and the same schedule are due at the same steps, so
    one pass serves them.
    """

    freq: int
    until: int = 0
    then: int | None = None

    def __post_init__(self):
        check_positive_int("freq", self.freq)
        if self.then is not None:
            check_positive_int("then", self.then)
        if isinstance(self.until, bool) or not isinstance(self.until, int) or self.until < 0:
            raise ValueError(f"`until` must be an integer >= 0. Received: until={self.until!r}")

    def next_after(self, step: int) -> int:
        """The first step after ``step`` before which a measurement is due."""
        dense = (step // self.freq + 1) * self.freq
        if self.then is None or dense < self.until:
            return dense
        start = max(step + 1, self.until)
        return -(-start // self.then) * self.then

    def steps(self, total: int) -> list[int]:
        """The steps below ``total`` before which a measurement is due."""
        due, step = [], 0
        while step < total:
            due.append(step)
            step = self.next_after(step)
        return due


class StepMonitor(keras.callbacks.Callback, metaclass=abc.ABCMeta):
    """Base of the monitors that act every ``freq`` optimizer steps (or on a
    :class:`ProbeSchedule`).

    The work happens in ``on_train_batch_begin``: Keras runs it on the training thread between
    two steps, so the variables are not being updated meanwhile, and not overriding
    ``on_train_batch_end`` keeps Keras' asynchronous batch-end dispatch on where a backend has
    it (TensorFlow's runs every hook in line). On the other
    batches the hook only adds two integers. Steps count from the optimizer's iteration
    counter (read once per epoch), so they continue across ``fit`` calls and respect
    ``steps_per_execution``. The CSV file is rewritten (in the background) at each epoch
    end; when ``fit`` returns, it and the TensorBoard run are complete on disk. A ``fit``
    resumed at a later epoch keeps the file's rows of the epochs before it and measures on
    the schedule's steps from there, so its file is the uninterrupted run's.

    A backup taken inside an epoch (:class:`~kerasdiag.callbacks.interrupt.StopOnSignal`'s)
    carries that epoch's rows so far and the step it stopped before
    (:meth:`backup_state`); the resumed ``fit``, which replays the epoch's first steps
    without training, keeps those rows and measures nothing before that step: the steps it
    replays hold the weights of the stop, not the ones the interrupted run measured.
    """

    def __init__(
        self,
        freq: int | ProbeSchedule,
        log_dir: str | os.PathLike | None,
        run_name: str,
        csv_path: str | os.PathLike | None,
        columns: Sequence[str],
    ):
        super().__init__()
        self.schedule = (
            freq
            if isinstance(freq, ProbeSchedule)
            else ProbeSchedule(check_positive_int("freq", freq))
        )
        self.freq = self.schedule.freq
        self._summary = SummaryLog(optional_path(log_dir), run_name)
        self._csv = CsvLog(optional_path(csv_path), columns)
        self._epoch = 0
        self._epoch_start_step = 0
        self._next_step = 0
        self._first_epoch = True
        self._in_epoch = False
        self._carried: dict[str, Any] = {}  # a step backup's state, restored

    def on_train_begin(self, logs=None):
        self._next_step = 0
        self._first_epoch = True
        self._in_epoch = False
        self._carried = {}
        self._csv.read_back()

    def backup_state(self) -> dict[str, Any]:
        """Inside an epoch (a backup at a step): the epoch (from 0), the optimizer step the
        fit stopped before and the epoch's rows so far, as the file will hold them. At an
        epoch end, nothing: the file holds the epoch's rows by then."""
        if not self._in_epoch:
            return {}
        step = optimizer_step(self.model.optimizer)  # the steps trained so far
        rows = self._csv.rows_of_epoch(self._epoch + 1)
        return {"epoch": self._epoch, "step": step, "rows": rows}

    def restore_state(self, state: dict[str, Any]) -> None:
        """:meth:`backup_state`'s, restored by a RunBackup after ``on_train_begin``: applied
        at the first epoch, the one the backup was taken in."""
        self._carried = dict(state or {})

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._in_epoch = True
        self._epoch_start_step = optimizer_step(self.model.optimizer)
        if self._first_epoch:
            # A resumed fit (its backup restored after on_train_begin) starts at a later
            # epoch and step: keep the file's rows of the epochs done, and measure on the
            # schedule's steps from here, as the uninterrupted run did.
            self._first_epoch = False
            self._csv.keep_epochs(epoch)
            start = self._epoch_start_step if epoch > 0 else 0
            carried, self._carried = self._carried, {}
            if carried.get("epoch") == epoch:
                # Resumed inside this epoch: its rows before the stop are the interrupted
                # run's, and the steps replayed up to the stop are not measured again.
                self._csv.carry(carried.get("rows") or [])
                start = max(start, int(carried.get("step") or 0))
            if start > 0:
                self._next_step = self.schedule.next_after(start - 1)

    @property
    def earlier_rows(self) -> list[list[str]]:
        """The CSV rows of the epochs before a resumed ``fit``'s first (as the file holds
        them: strings), read back from an earlier process; empty in a fresh run."""
        return self._csv.restored

    @property
    def earlier_probes(self) -> int:
        """How many measurements the rows of :attr:`earlier_rows` hold (one step each), so
        that what is done at every n-th probe continues the uninterrupted run's count."""
        return len({row[0] for row in self._csv.restored if row})

    def due(self, step: int) -> bool:
        """Whether a measurement before optimizer step ``step`` is due and not yet taken."""
        return step >= self._next_step

    def on_train_batch_begin(self, batch, logs=None):
        step = self._epoch_start_step + batch
        if step < self._next_step:
            return
        self._next_step = self.schedule.next_after(step)
        self.on_due_step(step)

    def on_epoch_end(self, epoch, logs=None):
        self._in_epoch = False
        self._csv.flush()

    def on_train_end(self, logs=None):
        self._in_epoch = False
        self._csv.flush()
        self._csv.wait()
        self._summary.close()

    @abc.abstractmethod
    def on_due_step(self, step: int) -> None:
        """Called before the optimizer step number ``step`` whenever it is due."""
