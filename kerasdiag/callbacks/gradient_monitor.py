"""GradientMonitor: per-layer gradient norms and histograms on a probe batch."""

from __future__ import annotations

import os
from typing import Any

from kerasdiag.callbacks import stats
from kerasdiag.callbacks.base import ProbeSchedule, StepMonitor, warn
from kerasdiag.callbacks.probe_batch import GRADIENTS, ProbeBatch, gradient_record
from kerasdiag.core.arguments import check_positive_float, check_positive_int
from kerasdiag.diagnosis import rules as doctor_rules
from kerasdiag.diagnosis.advice import keras_terms  # its warnings are for a user's own fit
from kerasdiag.diagnosis.symptoms import GRADIENT_FLAG_SYMPTOMS, fix_for


class GradientMonitor(StepMonitor):
    """Logs per-layer gradient norms and histograms, and flags vanishing or exploding gradients.

    Keras' ``fit`` does not hand the training gradients to callbacks, so this monitor
    computes them itself, honestly labelled: every ``freq`` optimizer steps it takes the
    gradient of the compiled loss (regularisation included) with respect to every trainable
    variable on a fixed **probe batch** ``(x, y)``, with the current weights, in inference
    mode (dropout off, batch norm on its moving statistics), so successive probes differ only
    by training progress. It logs

    - the norm of each layer's gradient (all of its variables together),
    - a histogram of each variable's gradient,
    - the global norm before and after the optimizer's own clipping (``clipnorm``,
      ``global_clipnorm`` or ``clipvalue``: what the update would have used).

    Flags, each warned once as a :class:`~kerasdiag.callbacks.base.MonitorWarning`
    naming a fix: **vanishing** when the first layer's gradient norm is below
    ``vanishing_ratio`` times the last layer's; **exploding** when the global norm is not
    finite, above ``max_norm``, or more than ``growth`` times the median of the earlier
    probes.

    Example:

    ```python
    monitor = GradientMonitor(x_train[:64], y_train[:64], freq=100, log_dir="logs")
    model.fit(x_train, y_train, epochs=5, callbacks=[monitor])
    monitor.flags  # e.g. [{"step": 0, "flag": "vanishing", "message": "..."}]
    ```

    Args:
        x: probe inputs (a fixed batch, e.g. 64 training examples), or a
            :class:`~kerasdiag.callbacks.probe_batch.ProbeBatch` holding inputs and targets,
            shared with an :class:`~kerasdiag.callbacks.ActivationHistograms` so that
            probes due at the same step take one pass.
        y: probe targets, as given to ``fit`` (None when ``x`` is a ProbeBatch).
        freq: probe before the optimizer steps 0, freq, 2 * freq, ..., or on a
            :class:`~kerasdiag.callbacks.ProbeSchedule` (a probe costs about one
            training step on the probe batch).
        log_dir: TensorBoard log directory; the run ``<log_dir>/gradients`` gets scalars
            ``gradient_norm/<layer>``, ``global_norm`` and ``global_norm_clipped`` and
            histograms ``gradient/<variable path>``. None: no TensorBoard output.
        csv_path: CSV with columns step, epoch, name, norm (a layer name, ``global_norm`` or
            ``global_norm_clipped``), rewritten at each epoch end. None: no file.
        vanishing_ratio: first/last layer norm ratio below which gradients vanish.
        max_norm: global norm above which gradients explode.
        growth: growth over the median of earlier probes that counts as exploding.
        histogram_every: write the histograms at every n-th probe only (the first included).

    Attributes:
        history: one dict per probe: step, epoch, loss, global_norm, global_norm_clipped,
            layer_norms (dict), flags (dict name -> reason).
        flags: every flag raised, dicts with step, epoch, flag and message.
    """

    probe_kind = GRADIENTS

    def __init__(
        self,
        x: Any,
        y: Any = None,
        freq: int | ProbeSchedule = 200,
        log_dir: str | os.PathLike | None = None,
        csv_path: str | os.PathLike | None = None,
        vanishing_ratio: float = doctor_rules.VANISHING_RATIO,
        max_norm: float = doctor_rules.EXPLODING_NORM,
        growth: float = doctor_rules.GROWTH_FACTOR,
        histogram_every: int = 1,
    ):
        super().__init__(freq, log_dir, "gradients", csv_path, ["step", "epoch", "name", "norm"])
        self.probe = ProbeBatch.of(x, y)
        if self.probe.y is None:
            raise ValueError("GradientMonitor needs probe targets: pass `y`")
        self.probe.attach(self)
        self.vanishing_ratio = check_positive_float("vanishing_ratio", vanishing_ratio)
        self.max_norm = check_positive_float("max_norm", max_norm)
        self.growth = check_positive_float("growth", growth)
        # Histograms at every n-th probe only (the first included): they cost as much as
        # the norms; scripts/train.py, probing often, draws them at every second.
        self.histogram_every = check_positive_int("histogram_every", histogram_every)
        self.history: list[dict] = []
        self.flags: list[dict] = []
        self._warned: set[str] = set()

    @property
    def x(self):
        return self.probe.x

    @property
    def y(self):
        return self.probe.y

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.probe.invalidate()

    def on_due_step(self, step):
        probe = self.probe.take(self.model, step, gradients=True)
        record = gradient_record(self.model, probe, step, self._epoch)
        norm, norm_clipped = record["global_norm"], record["global_norm_clipped"]
        layer_norms = record["layer_norms"]
        earlier = [h["global_norm"] for h in self.history]
        flags = doctor_rules.gradient_flags(
            norm, layer_norms, earlier, self.vanishing_ratio, self.max_norm, self.growth
        )
        self.history.append({**record, "flags": flags})
        for name, value in layer_norms.items():
            self._csv.add([step, self._epoch + 1, name, value])
        self._csv.add([step, self._epoch + 1, "global_norm", norm])
        self._csv.add([step, self._epoch + 1, "global_norm_clipped", norm_clipped])
        for flag, reason in flags.items():
            message = f"GradientMonitor: {flag} gradients at step {step}: {reason}; {keras_terms().phrase(fix_for(GRADIENT_FLAG_SYMPTOMS[flag]))}"
            self.flags.append(
                {"step": step, "epoch": self._epoch, "flag": flag, "message": message}
            )
            if flag not in self._warned:
                self._warned.add(flag)
                warn(message)
        if self._summary.enabled:
            scalars = {f"gradient_norm/{name}": value for name, value in layer_norms.items()}
            scalars.update(global_norm=norm, global_norm_clipped=norm_clipped)
            self._summary.scalars(scalars, step)
        if (
            self._summary.enabled
            and (self.earlier_probes + len(self.history) - 1) % self.histogram_every == 0
        ):
            self._summary.histograms(
                {
                    f"gradient/{v.path}": stats.histogram_buckets(g)
                    for v, g in zip(self.model.trainable_variables, probe.grads, strict=True)
                    if g is not None
                },
                step,
            )
