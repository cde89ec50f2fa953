"""LearningRateMonitor: the learning rate each epoch actually trained with, the run's one
record of it."""

from __future__ import annotations

import os

import keras

from kerasdiag.callbacks.base import CsvLog, SummaryLog, optional_path
from kerasdiag.modeling.optimizers import current_lr, optimizer_step


class LearningRateMonitor(keras.callbacks.Callback):
    """Records the effective learning rate of every epoch, whatever sets it.

    The rate is read just before the epoch's first optimizer step, from
    ``optimizer.learning_rate``, which in Keras 3 evaluates a
    ``keras.optimizers.schedules.LearningRateSchedule`` at the current iteration. Reading it
    there (not at epoch begin or end) gives the right value whatever the callback order:
    ``LearningRateScheduler`` has set it in ``on_epoch_begin`` and ``ReduceLROnPlateau`` in
    the previous ``on_epoch_end``. A per-step schedule changes the rate within the epoch;
    the value recorded is the one its first step used.

    It is the run's one record of the learning rate: the rate is read by
    :func:`~kerasdiag.modeling.optimizers.current_lr` and put into the epoch logs as
    ``learning_rate`` (Keras' own name for it, replacing what ``ReduceLROnPlateau`` or
    ``LearningRateScheduler`` put there: the same number, read at a different moment), so
    ``History``, ``CSVLogger`` and :class:`CurvePlotter` see it. :class:`MetricsCSV`,
    :class:`TrainingDoctor` and :class:`~kerasdiag.callbacks.nan_stop.NaNStop` given this
    monitor read its :attr:`rate` and :meth:`current` instead of the optimizer.

    Example:

    ```python
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=100, decay_rate=0.5)
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    monitor = LearningRateMonitor()
    model.fit(x, y, epochs=3, callbacks=[monitor])
    monitor.history  # [(0, 0, 0.01), (1, steps, 0.01 * 0.5 ** (steps / 100)), ...]
    ```

    Args:
        log_dir: TensorBoard log directory; the run ``<log_dir>/learning_rate`` gets the
            scalar ``learning_rate`` with the epoch as step. None: no TensorBoard output.
        csv_path: CSV with columns epoch, step, learning_rate, rewritten at each epoch end
            (a ``fit`` resumed at a later epoch keeps the file's earlier rows). None: no
            file.

    Attributes:
        history: rows (epoch, step, learning_rate); ``step`` is the optimizer iteration the
            epoch started at.
    """

    def __init__(
        self, log_dir: str | os.PathLike | None = None, csv_path: str | os.PathLike | None = None
    ):
        super().__init__()
        self._summary = SummaryLog(optional_path(log_dir), "learning_rate")
        self._csv = CsvLog(optional_path(csv_path), ["epoch", "step", "learning_rate"])
        self._epoch = 0
        self._current = None
        self._step: int | None = None  # the optimizer step about to run, counted here
        self._reading: tuple[int, float] | None = None  # (step, rate) read at that step
        self._first_epoch = True

    @property
    def history(self) -> list[list]:
        return self._csv.rows

    @property
    def rate(self) -> float | None:
        """The rate of the running epoch, once its first step has begun (else None)."""
        return None if self._current is None else self._current[2]

    def current(self) -> float:
        """The rate of the optimizer step running now (a schedule evaluated at that step,
        also when asked after it), read once per step however many callbacks ask: the
        first step of an epoch gives :attr:`rate`. For a monitor in the running ``fit``."""
        if self._step is not None and self._reading is not None and self._reading[0] == self._step:
            return self._reading[1]
        rate = current_lr(self.model.optimizer, self._step)
        if self._step is not None:
            self._reading = (self._step, rate)
        return rate

    def on_train_begin(self, logs=None):
        self._step, self._reading = None, None
        self._first_epoch = True
        self._csv.read_back()  # a resumed run keeps the rows of its earlier epochs

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._current = None
        if self._first_epoch:  # the backup was restored by now: epoch is where fit resumes
            self._first_epoch = False
            self._csv.keep_epochs(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if batch != 0:
            # Count the step without reading the optimizer (a read at every step would
            # wait for the device each time): the rate is read when someone asks.
            if self._step is not None:
                self._step = self._epoch_start + batch
            return
        optimizer = self.model.optimizer
        self._epoch_start = self._step = optimizer_step(optimizer)
        # Epochs count from 1, as Keras' console and metrics.csv do.
        self._current = [self._epoch + 1, self._step, self.current()]

    def on_epoch_end(self, epoch, logs=None):
        if self._current is None:
            return
        self._csv.add(self._current)
        rate = self._current[2]
        if logs is not None:
            logs["learning_rate"] = rate
        self._summary.scalars({"learning_rate": rate}, epoch + 1)
        self._csv.flush()

    def on_train_end(self, logs=None):
        self._csv.wait()
        self._summary.close()
