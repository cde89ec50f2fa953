"""CurvePlotter: loss and metric curves, training and validation, against epochs."""

from __future__ import annotations

import concurrent.futures
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable

import keras
import numpy as np

from kerasdiag.core.arguments import check_positive_float, check_positive_int
from kerasdiag.core.io import write_bytes_atomic
from kerasdiag.report.plots import STEP_LABEL, CurveFigure

# Logged values that are not curves to compare between training and validation.
_NOT_CURVES = {"learning_rate", "lr"}


def step_losses(records: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Per-step losses recovered from Keras' running mean within one epoch.

    ``records`` are (batches seen, running mean loss) pairs as Keras reports them after each
    step (or each ``steps_per_execution`` group). Keras' mean is weighted by batch size, so
    with equal batches the loss of the steps between two records is
    ``(n1 * m1 - n0 * m0) / (n1 - n0)``. Returns (batches seen, loss) pairs; the caller drops
    an epoch's last point, whose batch may be smaller.
    """
    out = []
    n0, m0 = 0, 0.0
    for n1, m1 in sorted(records):
        if n1 > n0:
            out.append((n1, (n1 * m1 - n0 * m0) / (n1 - n0)))
            n0, m0 = n1, m1
    return out


class CurvePlotter(keras.callbacks.Callback):
    """Draws each logged metric, training against validation, as a PNG after the epochs.

    One figure per metric (``loss.png``, ``accuracy.png``, ...) with epochs on the x axis
    (iterations depend on the batch size): training and validation values at the end of
    each epoch, and for the loss also the per-step training loss (at fractional epochs) in a
    light line, whose shape tells the learning rate (linear decay = too low, quick drop
    then plateau = too high, rising = far too high) and whose noise reflects the batch size.
    The gap between training and validation accuracy shows overfitting.

    The per-step loss is recovered from the running mean Keras reports after each batch
    (see :func:`step_losses`); that hook only stores two numbers and is safe to run on
    Keras' asynchronous callback thread. The figures are drawn with matplotlib's Agg
    canvas (no display needed) and written atomically, on a worker thread so that the next
    epoch does not wait for them; ``fit`` returns once the last figures are on disk.

    A :class:`~kerasdiag.callbacks.run_backup.RunBackup` later in the list carries this
    record (:meth:`backup_state`): a ``fit`` resumed from it draws every epoch of the run, the
    ones before the interruption included, and a resumed epoch's replayed steps are not
    recorded twice.

    Drawing costs ~0.05 s per figure. The figures are redrawn after every ``freq``-th epoch
    as long as drawing has taken at most ``max_overhead`` of the training time so far;
    with epochs of a few seconds (a small data set) that skips some epochs, with longer ones
    every epoch is drawn. The last epoch is always drawn.

    Example:

    ```python
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, validation_split=0.2, epochs=5, callbacks=[CurvePlotter("run")])
    # run/loss.png, run/accuracy.png
    ```

    Args:
        out_dir: directory for the PNG files (``<metric>.png``).
        freq: draw after every ``freq``-th epoch (the last epoch is always drawn).
        max_overhead: largest share of the training time drawing may take (0 < x <= 1;
            1 draws after every ``freq``-th epoch whatever it costs).
        step_loss: also draw the per-step training loss.
        dpi: resolution of the PNGs.
        kept_epoch: a function returning the epoch (from 1) whose weights the run keeps, or
            None (e.g. ``lambda: checkpoint.best_epoch`` of a
            :class:`~kerasdiag.callbacks.BestCheckpoint`): each drawing marks it with a
            dashed line, so the curves show which model the run's score is of.

    Attributes:
        epochs: {metric name: [value per epoch]} for every numeric epoch log.
        paths: {metric family: PNG path} of the files written.
        drawn: for each drawing, the number of epochs it showed.
    """

    async_safe = True  # on_train_batch_end only reads the logs Keras hands it

    def __init__(
        self,
        out_dir: str | os.PathLike,
        freq: int = 1,
        max_overhead: float = 0.01,
        step_loss: bool = True,
        dpi: int = 72,
        kept_epoch: Callable[[], int | None] | None = None,
    ):
        super().__init__()
        if out_dir is None:
            raise ValueError("`out_dir` must be a directory path. Received: out_dir=None")
        self.out_dir = os.fspath(out_dir)
        self.freq = check_positive_int("freq", freq)
        self.max_overhead = check_positive_float("max_overhead", max_overhead)
        if self.max_overhead > 1:
            raise ValueError(
                f"`max_overhead` must be at most 1. Received: max_overhead={max_overhead}"
            )
        self.step_loss = bool(step_loss)
        self.dpi = check_positive_int("dpi", dpi)
        if kept_epoch is not None and not callable(kept_epoch):
            raise ValueError(f"`kept_epoch` must be callable. Received: kept_epoch={kept_epoch!r}")
        self.kept_epoch = kept_epoch
        self.epochs: dict[str, list[float]] = defaultdict(list)
        self.paths: dict[str, str] = {}
        self._steps: dict[int, list[tuple[int, float]]] = defaultdict(list)
        self._epoch_steps: dict[int, int] = {}
        self._figures: dict[str, CurveFigure] = {}
        self._epoch_index: list[int] = []
        self._epoch = 0
        self._executor = None
        self._futures: list[concurrent.futures.Future] = []
        self._started = 0.0
        self._drawing_seconds = 0.0
        self.drawn: list[int] = []

    def on_train_begin(self, logs=None):
        self.epochs.clear()
        self._steps.clear()
        self._epoch_steps.clear()
        self._epoch_index.clear()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="CurvePlotter")
        self._started = time.perf_counter()
        self._drawing_seconds = 0.0
        self.drawn.clear()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.step_loss and logs and "loss" in logs:
            records = self._steps[self._epoch]
            if records and records[-1][0] >= batch + 1:
                return  # a resumed epoch replaying steps its restored record holds
            records.append((batch + 1, float(logs["loss"])))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._epoch_index.append(epoch)
        for key, value in logs.items():
            if isinstance(value, (int, float, np.number)):
                self.epochs[key].append(float(value))
        if self._steps.get(epoch):
            self._epoch_steps[epoch] = max(n for n, _ in self._steps[epoch])
        last = bool(self.params) and epoch + 1 == self.params.get("epochs")
        self._collect(wait=False)
        budget = self.max_overhead * (time.perf_counter() - self._started)
        busy = bool(self._futures)  # the previous drawing is still running
        if last or ((epoch + 1) % self.freq == 0 and not busy and self._drawing_seconds <= budget):
            self._submit()

    def on_train_end(self, logs=None):
        if self._epoch_index and self.drawn[-1:] != [len(self._epoch_index)]:
            # Stopped before the planned last epoch: draw the final state.
            self._submit()
        self._collect(wait=True)
        self._executor.shutdown(wait=True)

    def backup_state(self) -> dict:
        """Everything drawn so far: what a resumed ``fit`` draws on from. JSON, but for the
        step records, an array of (batches, running mean) rows per epoch: a RunBackup stores
        each in a file of its own, written once (a finished epoch's never changes), where a
        long run's records as JSON would be megabytes rewritten at every epoch."""
        return {
            "epochs": {k: list(v) for k, v in self.epochs.items()},
            "epoch_index": list(self._epoch_index),
            "steps": {str(e): np.asarray(v, dtype=np.float64) for e, v in self._steps.items() if v},
            "epoch_steps": {str(e): n for e, n in self._epoch_steps.items()},
            "drawn": list(self.drawn),
        }

    def restore_state(self, state: dict) -> None:
        """Continue the record :meth:`backup_state` gave (after ``on_train_begin``'s reset)."""
        self.epochs.clear()
        self.epochs.update({k: [float(x) for x in v] for k, v in state["epochs"].items()})
        self._epoch_index[:] = [int(e) for e in state["epoch_index"]]
        self._steps.clear()
        for epoch, records in state["steps"].items():
            self._steps[int(epoch)] = [(int(n), float(m)) for n, m in records]
        self._epoch_steps = {int(e): int(n) for e, n in state["epoch_steps"].items()}
        self.drawn[:] = [int(n) for n in state["drawn"]]

    def families(self) -> list[str]:
        """Metric names that get a figure: loss first, then the others in log order."""
        names = [k for k in self.epochs if not k.startswith("val_") and k not in _NOT_CURVES]
        return sorted(names, key=lambda k: k != "loss")

    def draw(self) -> dict[str, str]:
        """Draw every metric's figure now and write the PNGs; returns {metric: path}."""
        return self._render(self._curves(), self.kept_epoch() if self.kept_epoch else None)

    def _submit(self) -> None:
        # The worker draws from a copy of the numbers while the next epoch trains.
        self.drawn.append(len(self._epoch_index))
        mark = self.kept_epoch() if self.kept_epoch is not None else None
        self._futures.append(self._executor.submit(self._timed_render, self._curves(), mark))

    def _timed_render(self, curves: dict, mark: int | None = None) -> dict[str, str]:
        start = time.perf_counter()
        try:
            return self._render(curves, mark)
        finally:
            self._drawing_seconds += time.perf_counter() - start

    def _collect(self, wait: bool) -> None:
        # Surface a drawing error in the training thread instead of losing it.
        pending = []
        for future in self._futures:
            if wait or future.done():
                future.result()
            else:
                pending.append(future)
        self._futures = pending

    def _curves(self) -> dict:
        """A copy of everything a drawing needs, taken on the training thread."""
        x = [e + 1 for e in self._epoch_index]
        curves = {}
        for name in self.families():
            series = []
            if name == "loss" and self.step_loss:
                series.append((STEP_LABEL, *self._step_points()))
            for key, label in ((name, "train"), (f"val_{name}", "validation")):
                values = self.epochs.get(key)
                if values and len(values) == len(x):
                    series.append((label, list(x), list(values)))
            curves[name] = series
        return curves

    def _render(self, curves: dict, mark: int | None = None) -> dict[str, str]:
        paths = {}
        for name, series in curves.items():
            # Kept between epochs: the next drawing only gives the lines new data.
            if name not in self._figures:
                self._figures[name] = CurveFigure(name, size=(6, 4))
            figure = self._figures[name]
            figure.draw(series, mark)
            path = os.path.join(self.out_dir, f"{name}.png")
            # zlib level 1: a third of the encoding time of the default, files ~20% larger.
            write_bytes_atomic(path, figure.png(dpi=self.dpi, compress_level=1))
            paths[name] = path
        self.paths.update(paths)
        return paths

    def _step_points(self) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for epoch in self._epoch_index:
            total = self._epoch_steps.get(epoch)
            points = step_losses(self._steps.get(epoch, []))[:-1]
            for n, loss in points:
                if math.isfinite(loss):
                    xs.append(epoch + n / total)
                    ys.append(loss)
        return xs, ys
