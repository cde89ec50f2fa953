"""``MetricsCSV``: one row per epoch in ``metrics.csv``, rewritten atomically."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import keras

from kerasdiag.callbacks.learning_rate_monitor import LearningRateMonitor
from kerasdiag.core.io import write_csv_atomic
from kerasdiag.core.rundir import read_metrics_csv

LEADING_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]


class MetricsCSV(keras.callbacks.Callback):
    """Write ``epoch, loss, accuracy, val_loss, val_accuracy, lr`` (then any other metrics).

    Unlike ``keras.callbacks.CSVLogger`` the whole file is rewritten through a temporary file
    at every epoch end, so a crash never leaves a torn row, and rows are keyed by epoch, so a
    resumed run (``BackupAndRestore``) replaces the epochs it repeats instead of duplicating
    them. ``epoch`` counts epochs from 1. ``lr`` is the learning rate the epoch started with
    (a schedule evaluated at that step; a plateau reduction shows from the next epoch on), as
    ``learning_rate`` (a :class:`LearningRateMonitor` of the same ``fit``) records it; without
    one, a monitor of its own reads it the same way, writing no file.

    Example:
        >>> model.fit(x, y, validation_split=0.1, epochs=3,
        ...           callbacks=[MetricsCSV("run/metrics.csv")])  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike,
        resume: bool = True,
        learning_rate: LearningRateMonitor | None = None,
    ):
        super().__init__()
        self.path = Path(path)
        self.resume = bool(resume)
        self.rows: dict[int, dict[str, Any]] = {}
        # One record of the learning rate: the run's monitor, else one driven from here.
        self._owned_lr = LearningRateMonitor() if learning_rate is None else None
        self.learning_rate = learning_rate or self._owned_lr

    def set_model(self, model):
        super().set_model(model)
        if self._owned_lr is not None:
            self._owned_lr.set_model(model)

    def on_epoch_begin(self, epoch, logs=None):
        if self._owned_lr is not None:
            self._owned_lr.on_epoch_begin(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        if self._owned_lr is not None:
            self._owned_lr.on_train_batch_begin(batch, logs)

    def on_train_begin(self, logs=None):
        self.rows = read_metrics_csv(self.path) if self.resume and self.path.exists() else {}

    def on_epoch_end(self, epoch, logs=None):
        row = {k: _scalar(v) for k, v in (logs or {}).items()}
        row.pop("learning_rate", None)  # ReduceLROnPlateau's key; ours is "lr"
        rate = self.learning_rate.rate
        row["lr"] = math.nan if rate is None else rate
        row["epoch"] = epoch + 1
        self.rows[epoch + 1] = row
        # A resumed run restarts at its last backed-up epoch: later rows are from the lost try.
        self.rows = {e: r for e, r in self.rows.items() if e <= epoch + 1}
        self._write()

    def _write(self) -> None:
        extra = sorted({k for r in self.rows.values() for k in r} - set(LEADING_COLUMNS))
        header = LEADING_COLUMNS + extra
        body = [[_fmt(self.rows[e].get(k)) for k in header] for e in sorted(self.rows)]
        write_csv_atomic(self.path, header, body)


def _scalar(value: Any) -> float:
    return float(keras.ops.convert_to_numpy(value))


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return repr(value) if isinstance(value, float) else str(value)
