"""``NaNStop``: end training at the first NaN/Inf loss and say where it happened.

Keras' ``TerminateOnNaN`` either sets ``stop_training`` (the epoch then still ends: validation
runs on the broken weights and every ``on_epoch_end`` sees a half epoch, so checkpoints,
backups and metrics.csv would record it) or raises a bare RuntimeError. ``NaNStop`` raises
:class:`NonFiniteLossError` instead, so no callback records the broken epoch, and the error
carries a record: epoch, batch, global step, loss, learning rate and what to try. A
non-finite ``val_loss`` at an epoch's end stops the run the same way, before that epoch is
recorded.
``scripts/train.py`` turns it into one line, a ``nan.json`` in the run directory and exit
code 3 (bad input is 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras

from kerasdiag.callbacks.learning_rate_monitor import LearningRateMonitor
from kerasdiag.core.errors import KerasdiagError
from kerasdiag.diagnosis.rules import broken_loss
from kerasdiag.diagnosis.symptoms import nan_advice
from kerasdiag.modeling.optimizers import current_lr, optimizer_step

NAN_EXIT_CODE = 3


class NonFiniteLossError(KerasdiagError):
    """The training loss became NaN or Inf; ``record`` says where and what to try."""

    exit_code = NAN_EXIT_CODE

    def __init__(self, record: dict[str, Any]):
        self.record = record
        super().__init__(nan_message(record))


class NaNStop(keras.callbacks.TerminateOnNaN):
    """Raise :class:`NonFiniteLossError` at the first batch whose loss is NaN or Inf.

    Nothing after the last completed epoch is recorded by the other callbacks: the error
    leaves ``fit`` before the broken epoch ends. A callback placed before this one that has
    already stopped training at that batch (the search's ``StopOnDivergence``, which records
    a diverged trial itself) takes precedence: then NaNStop does nothing.

    Example:
        >>> try:
        ...     model.fit(x, y, epochs=5, callbacks=[NaNStop()])  # doctest: +SKIP
        ... except NonFiniteLossError as exc:
        ...     print(exc.record["global_step"], exc.record["advice"])
    """

    def __init__(
        self, base_lr: float | None = None, learning_rate: LearningRateMonitor | None = None
    ):
        """``base_lr``: the configured learning rate (``optimizer.lr``) the advice refers to;
        by default the rate in force when the loss broke. ``learning_rate``: the run's
        :class:`LearningRateMonitor`, whose reading of the step is that rate; without one
        the optimizer's rate is read the same way."""
        super().__init__(raise_error=True)
        if base_lr is not None and not (math.isfinite(base_lr) and base_lr > 0):
            raise ValueError(f"`base_lr` must be a finite number > 0. Received: {base_lr!r}")
        self.base_lr = base_lr
        self.learning_rate = learning_rate
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        self._check(logs, "loss", batch)

    def on_epoch_end(self, epoch, logs=None):
        # Weights that overflow on the validation data: the epoch is not a good one either.
        self._check(logs, "val_loss", None)

    def _check(self, logs: dict | None, key: str, batch: int | None) -> None:
        value = (logs or {}).get(key)
        if value is None:
            return
        value = float(keras.ops.convert_to_numpy(value))
        if broken_loss(value) is None or self.model.stop_training:
            return
        raise NonFiniteLossError(self.record(batch, value, key))

    def record_after_fit(self, epoch: int, metric: str, value: float) -> dict[str, Any]:
        """The record of a non-finite ``metric`` found after ``fit`` in ``epoch`` (from 1)."""
        self._epoch = max(0, epoch - 1)
        return self.record(None, value, metric)

    def record(self, batch: int | None, loss: float, metric: str = "loss") -> dict[str, Any]:
        """Where the loss broke (1-based epoch and batch, global step) and what to try.

        ``batch`` None means at the end of the epoch (``metric`` ``val_loss``): the record
        then names the epoch's last batch.
        """
        steps = self.params.get("steps")
        if batch is None:
            batch = (steps or 1) - 1
        optimizer = self.model.optimizer
        step = optimizer_step(optimizer)
        monitor = self.learning_rate
        in_fit = monitor is not None and monitor.model is self.model
        # The rate the broken step used (the optimizer has counted it already).
        lr = monitor.current() if in_fit else current_lr(optimizer, max(step - 1, 0))
        clipped = any(
            getattr(optimizer, name, None) is not None
            for name in ("clipnorm", "clipvalue", "global_clipnorm")
        )
        return {
            "symptom": f"{'nan' if math.isnan(loss) else 'inf'}_{metric}",
            "metric": metric,
            "loss": str(loss),
            "epoch": self._epoch + 1,
            "batch": batch + 1,
            "steps_per_epoch": steps,
            "global_step": step,
            "completed_epochs": self._epoch,
            "learning_rate": lr,
            "advice": nan_advice(lr, step, clipped, self.base_lr),
        }


def first_non_finite(
    rows: Mapping[int, Mapping[str, Any]], test: Mapping[str, Any] | None = None
) -> tuple[int, str, float] | None:
    """The first (epoch, metric, value) of a finished fit whose loss is NaN/Inf, or None.

    ``rows`` are metrics.csv's rows (epoch from 1), ``test`` the test scores. The last guard
    behind :class:`NaNStop`: a callback that stopped training first (the TrainingDoctor on NaN
    weights) leaves a NaN epoch that NaNStop never raised on; a run that ends so is a NaN stop
    all the same (exit code 3), never a finished run.
    """
    last = max(rows, default=0)
    for epoch in sorted(rows):
        for metric in ("loss", "val_loss"):
            value = rows[epoch].get(metric)
            if value is not None and not math.isfinite(float(value)):
                return epoch, metric, float(value)
    value = (test or {}).get("loss")
    if value is not None and not math.isfinite(float(value)):
        return last, "test_loss", float(value)
    return None


def nan_message(record: dict[str, Any]) -> str:
    """The one console line for a NaN/Inf stop."""
    where = f"epoch {record.get('epoch')}, batch {record.get('batch')}"
    if record.get("steps_per_epoch"):
        where += f"/{record['steps_per_epoch']}"
    text = (
        f"training stopped: {record.get('metric', 'loss')} became {record.get('loss')} at {where} "
        f"(step {record.get('global_step')}, lr {record.get('learning_rate', float('nan')):.3g})"
        f"; try: {'; '.join(record.get('advice', []))}"
    )
    if "checkpoint" in record:
        kept = record["checkpoint"] or "no checkpoint yet"
        done = record.get("completed_epochs")
        text += f"; metrics.csv keeps the {done} completed epoch(s); best checkpoint: {kept}"
    if "record_file" in record:
        text += f"; details in {record['record_file']}"
    return text
