"""TrainingDoctor: names training failures as they appear, with the evidence and a fix."""

from __future__ import annotations

import json
import math
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.callbacks import stats, weight_checks
from kerasdiag.callbacks.activation_histograms import ActivationHistograms
from kerasdiag.callbacks.base import FileWrites, MonitorWarning
from kerasdiag.callbacks.curve_plotter import step_losses
from kerasdiag.callbacks.gradient_monitor import GradientMonitor
from kerasdiag.callbacks.probe_batch import ProbeBatch, inference_accuracy
from kerasdiag.callbacks.update_ratio_monitor import UpdateRatioMonitor
from kerasdiag.checks.sanity.outputs import uses_batch_statistics as stats_uses_batch_statistics
from kerasdiag.core.io import json_safe, write_json_atomic
from kerasdiag.diagnosis import rules
from kerasdiag.diagnosis.symptoms import JUDGED_SYMPTOMS, Finding, reconcile
from kerasdiag.modeling.optimizers import optimizer_step

# A step loss this many times the initial loss triggers a probe at once (outside the budget):
# when the loss blows up, the gradient norms are what names the cause.
ALARM_FACTOR = 3.0
# doctor.json keeps at most this many (step, loss) points, evenly thinned.
MAX_SAVED_STEPS = 2000
# Share of the budget for the NaN/Inf check of the weights (about a hundred microseconds:
# every step of a convnet, every ~10 steps of a tiny MLP). ReLU turns NaN inputs into 0,
# so weights can break while the loss stays finite.
WEIGHT_CHECK_SHARE = 0.5


class TrainingDoctor(keras.callbacks.Callback):
    """Watches ``fit`` and names symptoms as they appear, each with its evidence and a fix.

    During training (``findings`` grows as they appear):

    ==========================  =========================================================
    ``nan``                     a NaN/Inf training loss or weights; training stops (see
                                ``stop_on``) and the weights go back to the end of the
                                last finite epoch
    ``exploding_gradients``     global gradient norm above ``exploding_norm`` or growing
                                ``gradient_growth`` x over earlier probes
    ``vanishing_gradients``     first-layer gradient norm below ``vanishing_ratio`` times
                                the last layer's
    ``dying_relu``              a ReLU layer with more than ``dead_fraction`` dead units
    ``saturated_activations``   a tanh/sigmoid layer with more than ``saturated_fraction``
                                of its outputs saturated
    ``oscillating_loss``        the loss jumps at every step by more than ``oscillation``
                                times the initial loss
    ``slow_convergence``        after ``slow_epochs`` epochs the loss is not ``slow_drop``
                                below the initial loss
    ``stagnant_weights``        a layer's kernel moves less than ``stagnant_ratio`` of its
                                norm per step
    ==========================  =========================================================

    At the end of ``fit`` it also judges the curves like :func:`kerasdiag.diagnose`:
    ``lr_too_high``, ``lr_too_low``, ``overfitting``, ``underfitting``.

    Where the numbers come from: the loss of every step is recovered from the running mean
    Keras reports (nothing extra is computed, and the batch-end hook only stores it, so it
    is safe on Keras' asynchronous callback thread). Gradient norms, activation statistics
    and update ratios come from the monitors of :mod:`kerasdiag.callbacks`
    (:class:`GradientMonitor`, :class:`ActivationHistograms`, :class:`UpdateRatioMonitor`):
    pass the ones already in your ``fit`` as ``monitors=`` and the doctor judges what they
    measure at no extra cost; for the kinds not passed it runs its own, on the probe batch
    ``(x, y)``, at step 0 (initialisation faults) and then as often as ``budget`` allows: a
    probe is taken when the training time since the last one is ``1 / budget`` times what
    that probe cost (so after the first probe its probes take at most half the budget). A
    loss that shoots above ``3 x`` the initial loss triggers a probe at once. The weights
    are checked for NaN/Inf with the other half of the budget (every step of a small
    convnet): ReLU turns NaN inputs into 0, so weights can break while the loss stays
    finite. Without ``x`` the doctor judges the loss, the weights and the update ratios: at
    step 0 it judges the initialisation scale from the kernels alone and says once which
    symptoms need probe data (:mod:`kerasdiag.callbacks.weight_checks`).

    Example:

    ```python
    doctor = TrainingDoctor(x_train[:64], y_train[:64], stop_on=["nan", "exploding_gradients"])
    model.fit(x_train, y_train, validation_split=0.1, epochs=10, callbacks=[doctor])
    for finding in doctor.findings:
        print(finding.symptom, finding.step, finding.epoch, finding.evidence, finding.fix)
    ```

    Args:
        x: probe inputs (a fixed batch, e.g. 64 training examples), or None.
        y: probe targets for the gradient probe, or None (no gradient probe).
        monitors: GradientMonitor / ActivationHistograms / UpdateRatioMonitor instances that
            run in the same ``fit``; the doctor reads their measurements instead of probing.
        stop_on: symptoms that end training when found (``model.stop_training``).
        thresholds: a :class:`~kerasdiag.diagnosis.rules.Thresholds` or a mapping overriding some
            of its fields (each is documented there).
        budget: the share of training time the doctor's own probes and weight checks may
            take after its first probe (0 < budget <= 1).
        path: ``doctor.json`` to write (findings, the per-step loss, the epoch logs, probe
            costs), updated atomically at each finding and epoch end; None: no file. A
            ``fit`` that resumes an interrupted run (its optimizer past step 0) continues
            the record found there.
        bayes_error: human/Bayes error for the end-of-training bias/variance judgement.
        restore_on_nan: put the weights of the end of the last finite epoch back after a NaN.
        verbose: print each finding as it appears (1) or stay silent (0).
        train_sample: ``(x, y)`` training examples scored in inference mode at each epoch
            end while the doctor judges the curves (``judge_curves``;
            ``train_accuracy_inference`` in ``history``), which the overfitting
            judgement compares with the validation accuracy: the accuracy ``fit`` reports
            is a training-mode running mean, and while BatchNorm's moving statistics lag it
            sits far above what the same weights score in inference mode. Without it, a
            model with BatchNorm is scored on the probe batch.

    Attributes:
        findings: :class:`~kerasdiag.diagnosis.symptoms.Finding` records (symptom, step, epoch,
            layer, evidence, fix, severity, message), one per symptom and layer, repeats
            counted in ``count`` / ``last_step``.
        step_losses: (step, loss) of every training step seen.
        initial_loss: the loss of the first step, before any update (the scale of the loss
            thresholds).
        probe_seconds: time spent in the doctor's own probes and weight checks (and in
            scoring ``train_sample``, when it judges the curves).
        probes: how many probes the doctor ran itself.
        history: the epoch logs, {name: [value per epoch]}.
    """

    async_safe = True  # on_train_batch_end only appends the logged loss to a list

    # False in scripts/train.py: the curves are judged once, by the diagnosis, at the epoch
    # whose weights the run keeps (early stopping's best), not at the last epoch.
    judge_curves = True

    def __init__(
        self,
        x: Any = None,
        y: Any = None,
        *,
        monitors: Iterable[keras.callbacks.Callback] = (),
        stop_on: Iterable[str] = ("nan",),
        thresholds: rules.Thresholds | Mapping[str, Any] | None = None,
        budget: float = 0.01,
        path: str | os.PathLike | None = None,
        bayes_error: float | None = None,
        restore_on_nan: bool = True,
        verbose: int = 1,
        train_sample: tuple[Any, Any] | None = None,
    ):
        super().__init__()
        self.thresholds = rules.Thresholds.of(thresholds)
        if isinstance(stop_on, str):
            stop_on = [stop_on]
        self.stop_on = frozenset(stop_on)
        unknown = sorted(self.stop_on - set(JUDGED_SYMPTOMS))
        if unknown:
            raise ValueError(
                f"`stop_on` names unknown symptoms {unknown}; known: {', '.join(JUDGED_SYMPTOMS)}"
            )
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
            raise ValueError(f"`budget` must be a number in (0, 1]. Received: budget={budget!r}")
        self.budget = float(budget)
        if bayes_error is not None and not 0 <= bayes_error < 1:
            raise ValueError(f"`bayes_error` must be in [0, 1). Received: {bayes_error!r}")
        self.bayes_error = bayes_error
        self.path = None if path is None else Path(path)
        self.restore_on_nan = bool(restore_on_nan)
        self.verbose = int(verbose)
        self._train_sample = None if train_sample is None else ProbeBatch(*train_sample)

        given = _by_kind(monitors)
        if y is not None and x is None:
            raise ValueError("`y` was given without `x`: pass the probe inputs too")
        # One batch for the doctor's own probes: activations and gradients from one pass.
        self._probe_batch = None if x is None else ProbeBatch(x, y)
        th = self.thresholds
        # The doctor's own monitors: driven by its budget (on_due_step), never by their freq.
        self._owned: list[keras.callbacks.Callback] = []
        self._gradients = given.get(GradientMonitor)
        if self._gradients is None and y is not None:
            self._gradients = GradientMonitor(
                self._probe_batch,
                vanishing_ratio=th.vanishing_ratio,
                max_norm=th.exploding_norm,
                growth=th.gradient_growth,
            )
            self._owned.append(self._gradients)
        self._activations = given.get(ActivationHistograms)
        if self._activations is None and x is not None:
            self._activations = ActivationHistograms(self._probe_batch)
            self._owned.append(self._activations)
        self._ratio_monitor = given.get(UpdateRatioMonitor)
        self._own_ratios = self._ratio_monitor is None

        self.findings: list[Finding] = []
        self.step_losses: list[tuple[int, float]] = []
        self.initial_loss: float | None = None
        self.probe_seconds = 0.0
        self.probes = 0
        self.history: dict[str, list[float]] = {}
        self._writes = FileWrites()
        self._fit: _Fit | None = None  # the state of one fit, from on_train_begin
        self._lock = threading.Lock()

    # --- Keras hooks --------------------------------------------------------------------

    def set_model(self, model):
        super().set_model(model)
        for monitor in self._owned:
            monitor.set_model(model)

    def on_train_begin(self, logs=None):
        model = self.model
        if self._activations in self._owned:
            try:
                self._activations.on_train_begin(logs)
            except ValueError as exc:
                # A subclassed model has no per-layer outputs: judge everything else.
                warnings.warn(f"TrainingDoctor: no activation probes: {exc}", stacklevel=2)
                self._owned.remove(self._activations)
                self._activations = None
        for monitor in self._owned:
            if monitor is not self._activations:
                monitor.on_train_begin(logs)
        self.findings, self.step_losses, self.initial_loss, self.history = [], [], None, {}
        self.probe_seconds, self.probes = 0.0, 0
        self._fit = _Fit.of(model, self.thresholds)
        if self._fit.first_step > 0 and self.path is not None and self.path.is_file():
            self._resume(json.loads(self.path.read_text()))
        self._judge_without_probes()

    def _judge_without_probes(self) -> None:
        """What the weights alone show at step 0, where no probe measures it, and the one
        line saying what cannot be judged without probe data (rules: weight_checks)."""
        measured = set()
        if self._gradients is not None:
            measured |= {"exploding_gradients", "vanishing_gradients"}
        if self._activations is not None:
            measured |= {"saturated_activations"}
        if self._fit.first_step == 0:
            for finding in weight_checks.init_scale_findings(self.model):
                if (
                    finding.symptom not in measured
                    and (finding.symptom, finding.layer) not in self._fit.seen
                ):
                    self._add(finding)
        self.unjudged_note = weight_checks.unjudged_note(
            self._activations is not None, self._gradients is not None
        )
        if self.unjudged_note and self.verbose:
            print(self.unjudged_note)

    def _resume(self, saved: Mapping[str, Any]) -> None:
        """Continue the record of an interrupted run (``fit`` resumed at a later step).

        Without it the loss at the restart would pass for the initial loss, and the first
        epochs of the restart for the first epochs of training.
        """
        for d in saved.get("findings", []):
            finding = Finding.from_dict(d)
            if finding.source == "doctor" and (finding.step or 0) < self._fit.first_step:
                self.findings.append(finding)
                self._fit.seen[(finding.symptom, finding.layer)] = finding
        self.initial_loss = saved.get("initial_loss")
        self.step_losses = [
            (int(s), float(v)) for s, v in saved.get("step_losses", []) if s < self._fit.first_step
        ]
        self.history = {k: list(v) for k, v in (saved.get("history") or {}).items()}
        self._fit.resumed_epoch = -1  # trim the history at the first epoch of this fit

    def on_epoch_begin(self, epoch, logs=None):
        self._forward("on_epoch_begin", epoch, logs)
        if self._fit.resumed_epoch == -1:
            self._fit.resumed_epoch = epoch
            self.history = {k: v[:epoch] for k, v in self.history.items()}
        self._fit.epoch = epoch
        self._fit.epoch_start_step = optimizer_step(self.model.optimizer)
        # Read after the callbacks before this one (a LearningRateScheduler sets the rate in
        # its on_epoch_begin): the rate the epoch starts with, as LearningRateMonitor logs it.
        self._fit.epoch_rate = _learning_rate(self.model)
        self._fit.last_record = (0, 0.0)

    def on_train_batch_begin(self, batch, logs=None):
        step = self._fit.epoch_start_step + batch
        self._drain()
        self._finish_update_ratios()
        self._judge_monitors()
        if self._due(
            step, self._fit.last_check_step, self._fit.last_check_cost, WEIGHT_CHECK_SHARE
        ):
            self._check_weights(step)
        if self._probe_due(step):
            self._probe(step)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        with self._lock:
            self._fit.pending.append((self._fit.epoch, batch + 1, float(loss)))
        if threading.get_ident() == self._fit.train_thread:
            self._drain()  # synchronous dispatch: judge now, before the next step runs

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._drain()
        self._finish_update_ratios()
        self._judge_monitors()
        self._judge_stagnant(epoch)
        for key, value in logs.items():
            if isinstance(value, (int, float, np.number)):
                self.history.setdefault(key, []).append(float(value))
        if not any(key in logs for key in rules.LEARNING_RATE_KEYS):  # no monitor logged it
            if self._fit.epoch_rate is not None:
                self.history.setdefault("learning_rate", []).append(self._fit.epoch_rate)
        if "accuracy" in logs and self.judge_curves:  # what the curve judgement reads
            accuracy = self._inference_accuracy()
            if accuracy is not None:
                self.history.setdefault(rules.TRAIN_INFERENCE_ACCURACY, []).append(accuracy)
        self._judge_slow(epoch, logs.get("loss"))
        self._check_weights(self._fit.last_step + 1)
        if self._fit.nan_epoch is not None:
            self._restore()
        else:
            self._fit.good = (epoch + 1, stats.snapshot(self._fit.float_weights))
        self._forward("on_epoch_end", epoch, logs)
        self._write()

    def on_train_end(self, logs=None):
        self._drain()
        self._finish_update_ratios()
        self._judge_monitors()
        if self._fit.nan_epoch is not None:
            self._restore()
        elif self.history.get("loss") and self.judge_curves:
            rows = self._ratio_rows()
            for finding in rules.curve_findings(
                self.history,
                initial_loss=self.initial_loss,
                update_ratio=rules.median_update_ratio(rows, from_step=rules.RUN_RATIO_FROM_STEP),
                bayes_error=self.bayes_error,
                lr=self._lr(),
                thresholds=self.thresholds,
                step=optimizer_step(self.model.optimizer),
            ):
                self._add(finding)
        self._forward("on_train_end", logs)
        self._write()
        self._writes.wait()  # doctor.json is complete on disk when fit returns
        if self.verbose and not self.findings:
            print("TrainingDoctor: no symptoms found during training.")

    # --- the loss of every step ---------------------------------------------------------

    def _drain(self) -> None:
        """Turn the running means stored by on_train_batch_end into per-step losses."""
        with self._lock:
            pending, self._fit.pending = self._fit.pending, []
        if not pending:
            return
        last_batch = self.params.get("steps") if self.params else None
        for epoch, n, mean in sorted(pending):
            if epoch != self._fit.epoch:
                continue  # a late record of an earlier fit
            n0, m0 = self._fit.last_record
            points = step_losses([(n0, m0), (n, mean)])[1 if n0 else 0 :]
            self._fit.last_record = (n, mean)
            for count, loss in points:
                # The epoch's last batch may be smaller: its recovered loss is biased.
                if count == last_batch and count > 1 and math.isfinite(loss):
                    continue
                self._on_step_loss(self._fit.epoch_start_step + count - 1, loss)

    def _on_step_loss(self, step: int, loss: float) -> None:
        self._fit.last_step = step
        self.step_losses.append((step, loss))
        lr = self._lr
        if rules.broken_loss(loss) is not None:
            if self._fit.nan_epoch is None:
                self._fit.nan_epoch = self._fit.epoch
            recent = [v for _, v in self.step_losses[-6:-1]]
            self._record(rules.nan_finding(recent, loss=loss, **self._nan_context(step, lr)))
            return
        if self.initial_loss is None:
            self.initial_loss = loss  # the first step's loss: before any update
        if self._fit.first_step == 0 and len(self.step_losses) == weight_checks.FLAT_STEPS:
            flat = weight_checks.flat_loss_finding(self.step_losses, self.initial_loss, lr())
            if flat is not None and ("slow_convergence", None) not in self._fit.seen:
                self._add(flat)
        self._fit.window.append(loss)
        scale = self.initial_loss
        if loss > ALARM_FACTOR * scale and step - self._fit.alarm_step >= self._fit.window.maxlen:
            self._fit.alarm_step, self._fit.alarm = step, True
        if len(self._fit.window) == self._fit.window.maxlen:
            finding = rules.oscillation_finding(
                self._fit.window, scale, self.thresholds, lr, step, self._fit.epoch + 1
            )
            if finding is not None:
                self._record(finding)

    def _lr(self) -> float | None:
        """The learning rate the advice starts from (a method: the rules read it only when
        they make a finding): the highest the run has used so far, epoch starts and now.
        Under a schedule that is what ``optimizer.lr`` sets (a warmup's target, a decay's
        start), not wherever the decay stands when the finding is made."""
        rates = [*(rules.epoch_learning_rates(self.history) or []), _learning_rate(self.model)]
        finite = [r for r in rates if r is not None and math.isfinite(r)]
        return max(finite) if finite else None

    def _nan_context(self, step: int, lr: float | None) -> dict[str, Any]:
        """What the nan rules need besides the numbers: the run's scale and its settings."""
        return {
            "initial_loss": self.initial_loss,
            "lr": lr,
            "step": step,
            "epoch": self._fit.epoch + 1,
            "stopping": "nan" in self.stop_on,
            "restoring": self.restore_on_nan,
        }

    def _check_weights(self, step: int) -> None:
        """Name ``nan`` if a weight is NaN/Inf before optimizer step ``step``."""
        start = time.perf_counter()
        finite = bool(self._fit.weights_finite())
        if not self._fit.last_check_cost:
            # The first call traces the function (~100x a warm call): time a warm call, or
            # that one-off would space all later checks far apart.
            self.probe_seconds += time.perf_counter() - start
            start = time.perf_counter()
            finite = bool(self._fit.weights_finite())
        cost = time.perf_counter() - start
        self.probe_seconds += cost
        self._fit.last_check_step, self._fit.last_check_cost = step, cost
        if finite:
            return
        if self._fit.nan_epoch is None:
            self._fit.nan_epoch = self._fit.epoch
        broken = [v.path for v in self._fit.float_weights if not _all_finite([v])]
        recent = [v for _, v in self.step_losses[-5:]]
        lr = self._lr
        self._record(
            rules.nan_finding(recent, broken=broken, **self._nan_context(max(step - 1, 0), lr))
        )

    def _restore(self) -> None:
        epoch, weights = self._fit.good
        if not self.restore_on_nan or self._fit.restored_epoch is not None:
            return
        for variable, value in zip(self._fit.float_weights, weights, strict=True):
            variable.assign(value)
        self._fit.restored_epoch = epoch
        for finding in self.findings:
            if finding.symptom == "nan":
                finding.evidence["restored_weights_of_epoch"] = epoch

    def _judge_slow(self, epoch: int, loss: float | None) -> None:
        causes = [f.symptom for f in self.findings if f.symptom != "slow_convergence"]
        finding = rules.slow_finding(
            epoch,
            loss,
            self.initial_loss,
            self.thresholds,
            self._lr,
            causes,
            step=self._fit.last_step,
            # step 0 left out: an adaptive optimizer's first step moves every weight by ~lr
            update_ratio=rules.median_update_ratio(
                self._ratio_rows(), from_step=rules.RUN_RATIO_FROM_STEP
            ),
            warmup=rules.warmup_epochs(rules.epoch_learning_rates(self.history)),
        )
        if finding is not None:
            self._record(finding)

    def _inference_accuracy(self) -> float | None:
        """Accuracy of the training sample (or, for a BatchNorm model, the probe batch)
        scored in inference mode, as validation is; None when there is nothing to score."""
        sample = self._train_sample
        if sample is None and stats_uses_batch_statistics(self.model):
            sample = self._probe_batch
        if sample is None or sample.y is None:
            return None
        start = time.perf_counter()
        try:
            return inference_accuracy(self.model, sample.x, sample.y)
        finally:
            self.probe_seconds += time.perf_counter() - start

    # --- probes: the doctor's own monitors and the ones it was given --------------------------

    def _probe_due(self, step: int) -> bool:
        if not self._owned and not self._own_ratios:
            return False
        if self._fit.last_probe_step is None or self._fit.alarm:
            self._fit.alarm = False
            return True
        return self._due(
            step, self._fit.last_probe_step, self._fit.last_probe_cost, 1 - WEIGHT_CHECK_SHARE
        )

    def _due(self, step: int, last_step: int, last_cost: float, share: float) -> bool:
        """Whether the training time since ``last_step`` pays for ``last_cost`` within
        ``share`` of the budget."""
        steps = step - self._fit.first_step
        if steps <= 0:
            return False
        train_time = time.perf_counter() - self._fit.started - self.probe_seconds
        step_time = max(train_time / steps, 1e-9)
        return (step - last_step) * step_time * self.budget * share >= last_cost

    def _probe(self, step: int) -> None:
        start = time.perf_counter()
        with warnings.catch_warnings():
            # The doctor reports what its own monitors flag, as findings with fixes.
            warnings.simplefilter("ignore", MonitorWarning)
            if self._owned:
                # One pass for all the parts the owned monitors read.
                self._probe_batch.take(
                    self.model,
                    step,
                    activations=self._activations in self._owned,
                    gradients=self._gradients in self._owned,
                )
            for monitor in self._owned:
                monitor.on_due_step(step)
        if self._own_ratios:
            self._fit.snapshot = (step, self._fit.epoch, stats.snapshot(self._fit.variables))
        cost = time.perf_counter() - start
        self.probe_seconds += cost
        self.probes += 1
        self._fit.last_probe_step, self._fit.last_probe_cost = step, cost
        self._judge_monitors()

    def _finish_update_ratios(self) -> None:
        if self._fit.snapshot is None:
            return
        start = time.perf_counter()
        step, epoch, before = self._fit.snapshot
        self._fit.snapshot = None
        ratios = stats.update_ratios(before, self._fit.variables)
        for name, layer, ratio in zip(self._fit.names, self._fit.layers, ratios, strict=True):
            self._fit.own_rows.append([step, epoch + 1, name, float(ratio), layer])
        self.probe_seconds += time.perf_counter() - start

    def _ratio_rows(self) -> list[list]:
        return self._fit.own_rows if self._own_ratios else self._ratio_monitor.history

    def _judge_monitors(self) -> None:
        lr = self._lr
        if self._activations is not None:
            history = self._activations.history
            for step, epoch, layer_stats in history[self._fit.judged["activations"] :]:
                for finding in rules.activation_findings(
                    layer_stats,
                    self.thresholds,
                    lr,
                    step=step,
                    epoch=epoch + 1,
                    skip=self._fit.outputs,
                ):
                    self._record(finding)
            self._fit.judged["activations"] = len(history)
        if self._gradients is not None:
            history = self._gradients.history
            for i in range(self._fit.judged["gradients"], len(history)):
                dying = [f.layer for f in self.findings if f.symptom == "dying_relu"]
                earlier = [h["global_norm"] for h in history[:i]]
                for finding in rules.gradient_findings(
                    history[i], earlier, self.thresholds, lr, dying
                ):
                    self._record(finding)
            self._fit.judged["gradients"] = len(history)

    def _judge_stagnant(self, epoch: int) -> None:
        rows = self._ratio_rows()
        start = self._fit.judged["ratios"]
        self._fit.judged["ratios"] = len(rows)
        per_layer: dict[str, list[float]] = {}
        for _step, _epoch, name, ratio, *_ in rows[start:]:
            if name in self._fit.main and math.isfinite(float(ratio)):
                per_layer.setdefault(self._fit.main[name], []).append(float(ratio))
        for finding in rules.stagnant_findings(
            per_layer,
            self.thresholds,
            self._lr,
            step=self._fit.last_step,
            epoch=epoch + 1,
        ):
            self._record(finding)

    # --- findings ----------------------------------------------------------------------

    def _record(self, finding: Finding) -> None:
        """Add ``finding``, or count it as a repeat of the same symptom in the same layer."""
        seen = self._fit.seen.get((finding.symptom, finding.layer))
        if seen is not None:
            seen.count += 1
            seen.last_step = finding.step
            return
        self._add(finding)

    def _add(self, finding: Finding) -> None:
        self._fit.seen[(finding.symptom, finding.layer)] = finding
        self.findings.append(finding)
        reconcile(self.findings)  # never "raise the learning rate" next to "lower it"
        if self.verbose:
            print(f"TrainingDoctor: {finding}")
        if finding.symptom in self.stop_on:
            self.model.stop_training = True
        self._write()

    def _forward(self, hook: str, *args) -> None:
        for monitor in self._owned:
            getattr(monitor, hook)(*args)

    def _write(self) -> None:
        if self.path is None:
            return
        points = self.step_losses
        if len(points) > MAX_SAVED_STEPS:
            keep = np.linspace(0, len(points) - 1, MAX_SAVED_STEPS).astype(int)
            points = [points[i] for i in keep]
        # json_safe copies every container, so the background write sees this moment's record;
        # its fsync can wait tens of milliseconds on a busy disk, not on the training thread.
        self._writes.submit(
            write_json_atomic,
            self.path,
            json_safe(
                {
                    "findings": [f.to_dict() for f in self.findings],
                    "initial_loss": self.initial_loss,
                    "step_losses": points,
                    "probes": self.probes,
                    "probe_seconds": self.probe_seconds,
                    "train_seconds": time.perf_counter() - self._fit.started,
                    "history": self.history,
                    "thresholds": vars(self.thresholds),
                    "stop_on": sorted(self.stop_on),
                }
            ),
        )


@dataclass
class _Fit:
    """What the doctor knows about the model and where one ``fit`` stands."""

    # the model: fixed for the fit
    first_step: int  # the optimizer's step when fit began (> 0: a resumed run)
    outputs: set[str]  # output layers: never judged for saturation
    variables: list  # trainable variables, and their paths and layers
    names: list[str]
    layers: list[str]
    main: dict[str, str]  # each layer's largest variable (kernel) path -> layer
    float_weights: list  # what the NaN check reads, and _restore puts back
    weights_finite: Any  # the compiled NaN/Inf check of float_weights
    good: tuple[int, list]  # (epoch, weights) at the end of the last finite epoch
    window: deque[float]  # the loss of the last oscillation_window + 1 steps
    started: float = field(default_factory=time.perf_counter)
    train_thread: int = field(default_factory=threading.get_ident)
    # where training stands
    epoch: int = 0
    epoch_start_step: int = 0
    epoch_rate: float | None = None  # the learning rate the epoch's first step uses
    last_step: int = 0
    last_record: tuple[int, float] = (0, 0.0)  # Keras' last (batches, running mean)
    pending: list[tuple[int, int, float]] = field(default_factory=list)  # (epoch, n, mean)
    seen: dict[tuple[str, str | None], Finding] = field(default_factory=dict)
    # how far each monitor's history has been judged
    judged: dict[str, int] = field(
        default_factory=lambda: {"gradients": 0, "activations": 0, "ratios": 0}
    )
    nan_epoch: int | None = None
    restored_epoch: int | None = None
    resumed_epoch: int | None = None  # -1: trim the resumed history at the next epoch
    alarm_step: int = -(10**9)
    alarm: bool = False  # probe at the next step (the loss shot up)
    last_probe_step: int | None = None
    last_probe_cost: float = 0.0
    last_check_step: int = 0
    last_check_cost: float = 0.0
    own_rows: list[list] = field(default_factory=list)  # update ratios the doctor measured
    snapshot: tuple | None = None  # (step, epoch, weights) before a measured step

    @classmethod
    def of(cls, model: keras.Model, thresholds: rules.Thresholds) -> _Fit:
        variables = list(model.trainable_variables)
        float_weights = [v for v in model.weights if "float" in str(v.dtype)]
        first_step = optimizer_step(model.optimizer)
        return cls(
            first_step=first_step,
            outputs=weight_checks.output_layer_names(model),
            variables=variables,
            names=[v.path for v in variables],
            layers=stats.variable_layers(model),
            main={v.path: layer for layer, v in stats.kernels_by_layer(model).items()},
            float_weights=float_weights,
            weights_finite=_finite_check(float_weights),
            good=(0, stats.snapshot(float_weights)),
            window=deque(maxlen=thresholds.oscillation_window + 1),
            last_check_step=first_step,
        )


def _by_kind(monitors: Iterable[keras.callbacks.Callback]) -> dict[type, Any]:
    kinds = (GradientMonitor, ActivationHistograms, UpdateRatioMonitor)
    found: dict[type, Any] = {}
    for monitor in monitors:
        kind = next((k for k in kinds if isinstance(monitor, k)), None)
        if kind is None:
            raise ValueError(
                f"`monitors` takes GradientMonitor, ActivationHistograms and "
                f"UpdateRatioMonitor instances. Received: {monitor!r}"
            )
        if kind in found:
            raise ValueError(f"`monitors` holds two {kind.__name__} instances; pass one")
        found[kind] = monitor
    return found


def _finite_sum(variables: Sequence) -> tf.Tensor:
    # A NaN or Inf anywhere makes the sum of all values non-finite (float32 sums of real
    # weights are far from overflowing).
    if not variables:
        return tf.constant(True)
    return tf.math.is_finite(tf.add_n([tf.reduce_sum(tf.cast(v, tf.float32)) for v in variables]))


def _finite_check(variables: Sequence):
    """A compiled check that every value of ``variables`` is finite (one call, one sync)."""
    return tf.function(lambda: _finite_sum(variables), autograph=False)


def _all_finite(variables: Sequence) -> bool:
    return bool(_finite_sum(variables))


def _learning_rate(model: keras.Model | None) -> float | None:
    try:
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):
        return None
