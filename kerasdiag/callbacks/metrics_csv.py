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
from kerasdiag.modeling.optimizers import current_lr

LEADING_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
# The learning rate's column in metrics.csv files written before it took Keras' name.
LEGACY_LR_COLUMN = "lr"


class MetricsCSV(keras.callbacks.Callback):
    """Write ``epoch, loss, accuracy, val_loss, val_accuracy, learning_rate`` (then any other
    metrics).

    Unlike ``keras.callbacks.CSVLogger`` the whole file is rewritten through a temporary file
    at every epoch end, so a crash never leaves a torn row, and rows are keyed by epoch, so a
    resumed run (``BackupAndRestore``) replaces the epochs it repeats instead of duplicating
    them. ``epoch`` counts epochs from 1. ``learning_rate`` is the rate the epoch's first step
    used (a schedule evaluated at that step; a plateau reduction shows from the next epoch
    on): the record of ``learning_rate``, a :class:`LearningRateMonitor` of the same ``fit``;
    without one it is read the same way, by
    :func:`~kerasdiag.modeling.optimizers.current_lr` before the epoch's first step.

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
        self.learning_rate = learning_rate
        self._rate: float | None = None  # the epoch's rate, read here without a monitor

    def on_train_begin(self, logs=None):
        self.rows = read_metrics_csv(self.path) if self.resume and self.path.exists() else {}
        for row in self.rows.values():  # a file written before the column had its name
            if LEGACY_LR_COLUMN in row:
                row.setdefault("learning_rate", row.pop(LEGACY_LR_COLUMN))

    def on_epoch_begin(self, epoch, logs=None):
        self._rate = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0 and self.learning_rate is None:
            # As LearningRateMonitor reads it: every scheduler callback has set it by now.
            self._rate = current_lr(self.model.optimizer)

    def on_epoch_end(self, epoch, logs=None):
        row = {k: _scalar(v) for k, v in (logs or {}).items()}
        rate = self._rate if self.learning_rate is None else self.learning_rate.rate
        row["learning_rate"] = math.nan if rate is None else rate
        row["epoch"] = epoch + 1
        self.rows[epoch + 1] = row
        # A resumed run restarts at its last backed-up epoch: later rows are from the lost try.
        self.rows = {e: r for e, r in self.rows.items() if e <= epoch + 1}
        self._write()

    def _write(self) -> None:
        extra = sorted({k for r in self.rows.values() for k in r} - set(LEADING_COLUMNS))
        header = [*LEADING_COLUMNS, *extra]
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
