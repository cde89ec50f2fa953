"""UpdateRatioMonitor: the relative size of each optimizer step, per variable."""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np

from kerasdiag.callbacks import stats
from kerasdiag.callbacks.base import ProbeSchedule, StepMonitor, warn
from kerasdiag.core.arguments import check_positive_float
from kerasdiag.diagnosis import rules as doctor_rules
from kerasdiag.diagnosis.advice import keras_terms  # its warnings are for a user's own fit
from kerasdiag.diagnosis.symptoms import UPDATE_RATIO_CAUSES, fix_for, unchanged_weights_fix


class UpdateRatioMonitor(StepMonitor):
    """Logs ||W_after - W_before|| / ||W_before|| of the optimizer step for every variable.

    Every ``freq`` optimizer steps the monitor keeps the values of all trainable variables
    before the step and compares them with the values after it: for plain SGD this is
    ||lr * dW|| / ||W||. Around 1e-3 is healthy; much lower means the learning rate is too
    low, much higher that it is too high. An adaptive optimizer (Adam, RMSprop, ...) moves
    every weight by up to about lr per step, so its ratio is up to lr / rms(W) and the upper
    end of its band is 5e-2, 0.3 for an Embedding table, which starts small (see
    :func:`~kerasdiag.diagnosis.rules.update_ratio_band`); an Embedding table's ratio is
    over the rows the step updated (a batch looks up a few rows of the vocabulary). At the end of each epoch the median ratio of each
    layer's largest variable (its kernel; zero-initialised biases say nothing about the
    learning rate, nor do normalization layers' scales and offsets, which are measured but
    not judged) over that epoch's measurements after step 0 is compared with
    ``[low, high]`` and a :class:`~kerasdiag.callbacks.base.MonitorWarning` names the likely
    cause, once per layer and direction. With ``steps_per_execution=k`` a measurement spans
    the k steps Keras runs between two callback calls.

    Example:

    ```python
    monitor = UpdateRatioMonitor(freq=50, log_dir="logs", csv_path="update_ratios.csv")
    model.fit(x, y, epochs=5, callbacks=[monitor])
    step, epoch, variable, ratio, layer = monitor.history[0]
    ```

    Args:
        freq: measure the optimizer steps 0, freq, 2 * freq, ..., or those of a
            :class:`~kerasdiag.callbacks.ProbeSchedule` (a measurement costs a few
            small tensor operations per variable; other steps cost nothing).
        log_dir: TensorBoard log directory; scalars ``update_ratio/<variable path>`` go to
            the run ``<log_dir>/update_ratio``. None: no TensorBoard output.
        csv_path: CSV file with columns step, epoch, variable, ratio, layer, rewritten at
            each epoch end. None: no file.
        low: lower end of the healthy band (default 1e-4).
        high: upper end of the healthy band (default: 1e-2 for SGD-style optimizers, 5e-2
            for adaptive ones, 0.3 for an Embedding table under an adaptive optimizer).

    Attributes:
        history: all measurements, rows (step, epoch, variable, ratio, layer).
        findings: the layers judged outside the band, dicts with layer, epoch, median,
            verdict and message.
    """

    def __init__(
        self,
        freq: int | ProbeSchedule = 50,
        log_dir: str | os.PathLike | None = None,
        csv_path: str | os.PathLike | None = None,
        low: float = doctor_rules.UPDATE_RATIO_LOW,
        high: float | None = None,
    ):
        super().__init__(
            freq, log_dir, "update_ratio", csv_path, ["step", "epoch", "variable", "ratio", "layer"]
        )
        self.low = check_positive_float("low", low)
        self._high = None if high is None else check_positive_float("high", high)
        if self._high is not None and self.low >= self._high:
            raise ValueError(f"`low` must be below `high`. Received: low={low}, high={high}")
        self.high = doctor_rules.UPDATE_RATIO_HIGH if high is None else self._high
        self.findings: list[dict] = []
        self._pending = None
        self._epoch_ratios: dict[str, list[float]] = defaultdict(list)
        self._warned: set[tuple[str, str]] = set()

    @property
    def history(self) -> list[list]:
        return self._csv.rows

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._variables = list(self.model.trainable_variables)
        self._names = [v.path for v in self._variables]
        self._layers = stats.variable_layers(self.model)
        # Index (into self._variables) of each judged layer's kernel.
        position = {id(v): i for i, v in enumerate(self._variables)}
        self._main = {
            layer: position[id(v)] for layer, v in stats.kernels_by_layer(self.model).items()
        }
        optimizer = self.model.optimizer
        self._bands = {
            layer: doctor_rules.update_ratio_band(
                stats.optimizer_name(optimizer),
                self.low,
                self._high,
                sparse=stats.is_sparse_table(self._variables[i]),
            )
            for layer, i in self._main.items()
        }
        self._pending = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._pending is not None:
            self._finish()
        super().on_train_batch_begin(batch, logs)

    def on_due_step(self, step):
        self._pending = (step, self._epoch, stats.snapshot(self._variables))

    def backup_state(self) -> dict:
        # A backup at a step comes after that step: the weights it measures against are
        # the current ones, and the row is the interrupted run's to keep.
        if self._pending is not None:
            self._finish()
        return super().backup_state()

    def on_epoch_end(self, epoch, logs=None):
        if self._pending is not None:
            self._finish()
        self._judge(epoch)
        super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        if self._pending is not None:
            self._finish()
            self._judge(self._epoch)
        super().on_train_end(logs)

    def _finish(self):
        step, epoch, before = self._pending
        self._pending = None
        ratios = stats.update_ratios(before, self._variables)
        for name, layer, ratio in zip(self._names, self._layers, ratios, strict=True):
            self._csv.add([step, epoch + 1, name, float(ratio), layer])  # epochs from 1
        # Step 0 is logged but not judged: an adaptive optimizer's first step moves every
        # weight by ~lr whatever its gradient, so a small-init layer shows a huge ratio once.
        if step > 0:
            for layer, index in self._main.items():
                self._epoch_ratios[layer].append(float(ratios[index]))
        self._summary.scalars(
            {
                f"update_ratio/{n}": float(r)
                for n, r in zip(self._names, ratios, strict=True)
                if np.isfinite(r)
            },
            step,
        )

    def _judge(self, epoch):
        for layer, ratios in self._epoch_ratios.items():
            finite = [r for r in ratios if not np.isnan(r)]
            if not finite:
                continue
            median = float(np.median(finite))
            low, high = self._bands[layer]
            verdict = doctor_rules.update_ratio_verdict(median, low, high)
            if verdict is None:
                continue
            bound = low if verdict == "too_low" else high
            side = "below" if verdict == "too_low" else "above"
            cause, symptom = UPDATE_RATIO_CAUSES[verdict]
            fix = unchanged_weights_fix() if median == 0 else f"{cause}; {fix_for(symptom)}"
            message = (
                f"UpdateRatioMonitor: layer {layer!r} has a median update/weight ratio of "
                f"{median:.2e} in epoch {epoch + 1}, {side} {bound:.0e}: {keras_terms().phrase(fix)}"
            )
            self.findings.append(
                {
                    "layer": layer,
                    "epoch": epoch + 1,
                    "median": median,
                    "verdict": verdict,
                    "message": message,
                }
            )
            if (layer, verdict) not in self._warned:
                self._warned.add((layer, verdict))
                warn(message)
        self._epoch_ratios.clear()
