"""ActivationHistograms: each layer's output on a fixed probe batch."""

from __future__ import annotations

import os
from typing import Any

from kerasdiag.callbacks import stats
from kerasdiag.callbacks.base import ProbeSchedule, StepMonitor
from kerasdiag.callbacks.probe_batch import ACTIVATIONS, ProbeBatch, layer_activation_stats
from kerasdiag.core.arguments import check_positive_int

_COLUMNS = [
    "step",
    "epoch",
    "layer",
    "kind",
    "mean",
    "std",
    "zero_fraction",
    "dead_fraction",
    "saturated_fraction",
]


class ActivationHistograms(StepMonitor):
    """Histograms and health statistics of every layer's activations on a probe batch.

    Every ``freq`` optimizer steps the probe batch ``x`` runs through the model in inference
    mode and, for each layer with weights or an activation function, the monitor records a
    histogram of its output and :class:`~kerasdiag.diagnosis.rules.ActivationStats`: mean,
    std, the share of exact zeros, and

    - for ReLU layers, the **dead fraction**: units (features, or channels of a conv layer)
      that are 0 for every probe example and position;
    - for tanh layers, the **saturated fraction** of values with |a| > 0.99, and for sigmoid
      layers of values outside [0.01, 0.99].

    Healthy tanh units spread over [-1, 1] instead of sitting at 0 or +-1. The model must be
    Sequential or functional (a subclassed model has no per-layer outputs to probe).

    Example:

    ```python
    monitor = ActivationHistograms(x_train[:64], freq=200, log_dir="logs")
    model.fit(x_train, y_train, epochs=5, callbacks=[monitor])
    monitor.latest["dense"].dead_fraction
    ```

    Args:
        x: the probe inputs (a fixed batch, e.g. 64 training examples), or a
            :class:`~kerasdiag.callbacks.probe_batch.ProbeBatch` shared with a
            :class:`~kerasdiag.callbacks.GradientMonitor`, so that probes due at the same
            step take one pass.
        freq: probe before the optimizer steps 0, freq, 2 * freq, ..., or on a
            :class:`~kerasdiag.callbacks.ProbeSchedule` (a probe costs about one
            forward pass on the probe batch).
        log_dir: TensorBoard log directory; the run ``<log_dir>/activations`` gets
            histograms ``activation/<layer>`` and scalars ``dead_fraction/<layer>`` and
            ``saturated_fraction/<layer>``. None: no TensorBoard output.
        histogram_every: write the histograms at every n-th probe only (the first included).
        csv_path: CSV with columns step, epoch, layer, kind, mean, std, zero_fraction,
            dead_fraction, saturated_fraction, rewritten at each epoch end. None: no file.

    Attributes:
        history: one (step, epoch, {layer: ActivationStats}) tuple per probe.
        latest: the most recent {layer: ActivationStats}.
    """

    probe_kind = ACTIVATIONS

    def __init__(
        self,
        x: Any,
        freq: int | ProbeSchedule = 200,
        log_dir: str | os.PathLike | None = None,
        csv_path: str | os.PathLike | None = None,
        histogram_every: int = 1,
    ):
        super().__init__(freq, log_dir, "activations", csv_path, _COLUMNS)
        # Histograms at every n-th probe only (the first included): they cost as much as
        # the statistics; scripts/train.py, probing often, draws them at every second.
        self.histogram_every = check_positive_int("histogram_every", histogram_every)
        self.probe = ProbeBatch.of(x)
        self.probe.attach(self)
        self.history: list[tuple[int, int, dict[str, stats.ActivationStats]]] = []

    @property
    def x(self):
        return self.probe.x

    @property
    def latest(self) -> dict[str, stats.ActivationStats]:
        return self.history[-1][2] if self.history else {}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.probe.invalidate()
        self.probe.extractor(self.model)  # a model without per-layer outputs fails here

    def on_due_step(self, step):
        outputs = self.probe.take(self.model, step, activations=True).layers
        layer_stats = layer_activation_stats(self.model, outputs)
        self.history.append((step, self._epoch, layer_stats))
        scalars = {}
        for name, s in layer_stats.items():
            self._csv.add(
                [step, self._epoch + 1, name, s.kind or "", s.mean, s.std, s.zero_fraction]
                + ["" if v is None else v for v in (s.dead_fraction, s.saturated_fraction)]
            )
            if s.dead_fraction is not None:
                scalars[f"dead_fraction/{name}"] = s.dead_fraction
            if s.saturated_fraction is not None:
                scalars[f"saturated_fraction/{name}"] = s.saturated_fraction
        self._summary.scalars(scalars, step)
        if (self.earlier_probes + len(self.history) - 1) % self.histogram_every == 0:
            self._summary.histograms(
                {f"activation/{n}": stats.histogram_buckets(v) for n, v in outputs.items()}, step
            )
