"""TrainingDoctor: names training failures as they appear, with the evidence and a fix.

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

The judgement is :class:`~kerasdiag.diagnosis.doctor.DoctorEngine` (no TensorFlow); the
callback feeds it numbers. The loss of every step is recovered from the running mean Keras
reports (the batch-end hook only stores it: safe on Keras' asynchronous callback thread).
Gradient norms, activation statistics, update ratios and the learning rate come from the
monitors passed as ``monitors=``, which are in ``fit``'s callback list themselves (the doctor
reads their records at no extra cost). What no monitor measures, the doctor measures
(:class:`~kerasdiag.callbacks.probe_batch.SelfMeasurements`) on its probe batch ``(x, y)`` through
:class:`~kerasdiag.callbacks.ProbeBatch`, at step 0 (initialisation faults) and then as often
as ``budget`` allows (:class:`~kerasdiag.callbacks.probe_batch.ProbeBudget`): after the first
probe, probes take at most half the budget, NaN/Inf checks of the weights the other half,
and a loss that shoots above ``3 x`` the initial loss triggers a probe at once. Without
``x`` it judges the loss, the weights and the update ratios, the initialisation scale from
the kernels, and says once which symptoms need probe data.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from kerasdiag.callbacks import stats, weight_checks
from kerasdiag.callbacks.activation_histograms import ActivationHistograms
from kerasdiag.callbacks.base import FileWrites
from kerasdiag.callbacks.gradient_monitor import GradientMonitor
from kerasdiag.callbacks.learning_rate_monitor import LearningRateMonitor
from kerasdiag.callbacks.probe_batch import ProbeBatch, SelfMeasurements, example_loss_spread
from kerasdiag.callbacks.update_ratio_monitor import UpdateRatioMonitor
from kerasdiag.checks.sanity.outputs import count, input_kind
from kerasdiag.core.io import write_json_atomic
from kerasdiag.diagnosis import rules
from kerasdiag.diagnosis.advice import Vocabulary, keras_terms
from kerasdiag.diagnosis.doctor import DoctorEngine
from kerasdiag.diagnosis.symptoms import Finding
from kerasdiag.modeling.optimizers import current_lr, optimizer_step

NO_TRAINING_ERROR_NOTE = (
    "TrainingDoctor: no training examples to score in inference mode (pass TrainingDoctor(x, "
    "y) or train_sample=(x, y)): the bias/variance judgement is left out, as fit's training "
    "accuracy is a training-mode running mean (dropout on, BatchNorm on batch statistics)"
)
# The batch size fit uses when given arrays and none (callbacks are not told the real one).
FIT_BATCH_SIZE = 32
MONITOR_KINDS = (GradientMonitor, ActivationHistograms, UpdateRatioMonitor, LearningRateMonitor)


class TrainingDoctor(keras.callbacks.Callback):
    """Watches ``fit`` and names symptoms as they appear, each with its evidence and a fix.

    What it names, and where the numbers come from, is said in
    :mod:`kerasdiag.callbacks.training_doctor`. ``TrainingDoctor(x, y)`` alone in ``fit``
    measures what it needs itself; pass the monitors already in your ``fit`` as
    ``monitors=`` and it reads theirs instead.

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
        monitors: GradientMonitor / ActivationHistograms / UpdateRatioMonitor /
            LearningRateMonitor instances in the same ``fit``; the doctor reads their
            records instead of measuring.
        stop_on: symptoms that end training when found (``model.stop_training``).
        thresholds: a :class:`~kerasdiag.diagnosis.rules.Thresholds` or a mapping overriding
            some of its fields (each is documented there).
        budget: the share of training time the doctor's own probes and weight checks may
            take after its first probe (0 < budget <= 1).
        path: ``doctor.json`` to write (findings, the per-step loss, the epoch logs, probe
            costs), updated atomically at each finding and epoch end; None: no file. A
            ``fit`` that resumes an interrupted run (its optimizer past step 0 once a
            ``RunBackup`` anywhere in the list has restored it) continues the record found
            there: its findings, step losses, the epoch history before the resume point and
            the measured costs; one with no epoch left to run leaves the file untouched.
            A :class:`~kerasdiag.callbacks.run_backup.RunBackup` later in the list carries
            the record as it was at its backup (:meth:`backup_state`), and a resume
            continues that one: ``doctor.json`` may be ahead of the backup (a finding
            written after it, its repeats counted), and those repeats must not count twice.
        bayes_error: human/Bayes error for the end-of-training bias/variance judgement.
        restore_on_nan: put the weights of the end of the last finite epoch back after a NaN.
        verbose: print each finding as it appears (1) or stay silent (0).
        train_sample: ``(x, y)`` training examples scored in inference mode at each epoch
            end while the doctor judges the curves (``train_accuracy_inference`` in
            ``history``, which the overfitting judgement compares with the validation
            accuracy: ``fit``'s is a training-mode running mean, far above it while
            BatchNorm's statistics lag and dropout is on). Without it, the probe batch is;
            with neither, no bias/variance verdict is given.
        advice: the terms the fixes are given in: None (the default) names Keras changes
            (a ``BatchNormalization`` layer, ``epochs`` of ``fit``), for a reader who wrote
            the model, fitting what the model reads (``input_kind``: image augmentation
            for images, more data, dropout, L2 and fewer units for tokens and tables); a
            recipe run passes :func:`~kerasdiag.diagnosis.advice.config_terms`
            of its model config, so they name its config keys.
        val_size: how many examples ``fit``'s validation scores, so that a gap within their
            noise is inconclusive, not overfitting (a 20-point gap on 24 validation images
            proves nothing). None (the default): learnt from ``fit`` itself, the examples of
            ``validation_data`` / ``validation_split`` as arrays, or the batches validation
            ran times their size for a ``tf.data.Dataset`` (counted once, in a pass over the
            batches validation uses, when the batch size is not static). The training side
            needs no size: the training error is scored on ``train_sample`` (or the probe
            batch), whose size the doctor knows.
        batch_size: the examples of a training batch, so that a loss jumping from batch to
            batch by no more than drawing its examples gives (a noisy regression target) is
            not called oscillating. None (the default): 32, ``fit``'s own default (``fit``
            does not tell its callbacks). The spread of the examples' losses is measured on
            ``train_sample`` (or the probe batch, with ``y``) only when the rule would fire.

    Attributes:
        findings: :class:`~kerasdiag.diagnosis.symptoms.Finding` records, one per symptom
            and layer, repeats counted in ``count`` / ``last_step``.
        step_losses: (step, loss) of every training step seen.
        initial_loss: the loss of the first step, before any update.
        probe_seconds: time spent in the doctor's own probes and weight checks (and in
            scoring ``train_sample``, when it judges the curves).
        probes: how many probes the doctor ran itself.
        history: the epoch logs, {name: [value per epoch]}, with ``learning_rate``.
        engine: the :class:`~kerasdiag.diagnosis.doctor.DoctorEngine` that judges.
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
        advice: Vocabulary | None = None,
        val_size: int | None = None,
        batch_size: int | None = None,
    ):
        super().__init__()
        self.engine = DoctorEngine(
            thresholds,
            stop_on=stop_on,
            bayes_error=bayes_error,
            restoring=restore_on_nan,
            current_rate=self._rate_now,
            on_finding=self._on_finding,
            advice=keras_terms() if advice is None else advice,
            loss_noise=self._batch_loss_noise,
        )
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size
                                       or batch_size < 1):  # fmt: skip
            raise ValueError(f"`batch_size` must be a positive integer. Received: {batch_size!r}")
        self.batch_size = None if batch_size is None else int(batch_size)
        self._own_advice = advice is None  # chosen from the model's inputs at train begin
        if val_size is not None and (isinstance(val_size, bool) or int(val_size) != val_size
                                     or val_size < 1):  # fmt: skip
            raise ValueError(f"`val_size` must be a positive integer. Received: {val_size!r}")
        self.val_size = None if val_size is None else int(val_size)
        self._in_fit, self._val_batches, self._learned_val_size = False, 0, None
        self.thresholds, self.stop_on = self.engine.thresholds, self.engine.stop_on
        self.bayes_error = bayes_error
        self.path = None if path is None else Path(path)
        self.restore_on_nan, self.verbose = bool(restore_on_nan), int(verbose)
        self._monitors = _by_kind(monitors)
        if y is not None and x is None:
            raise ValueError("`y` was given without `x`: pass the probe inputs too")
        self._own = SelfMeasurements(
            None if x is None else ProbeBatch(x, y),
            budget,
            activations=ActivationHistograms not in self._monitors,
            gradients=GradientMonitor not in self._monitors,
            ratios=UpdateRatioMonitor not in self._monitors,
            train_sample=None if train_sample is None else ProbeBatch(*train_sample),
        )
        self.budget, self.unjudged_note = self._own.budget.budget, None
        self._writes, self._lock = FileWrites(), threading.Lock()
        self._pending: list[tuple[int, int, float]] = []  # (epoch, batches, running mean)
        self._saved: dict[str, Any] | None = None  # doctor.json found at train begin
        self._started, self._epochs_run = False, 0
        self._measured_before = _measured(None)
        # A backup taken inside an epoch: where its fit stopped (restored), and the step
        # before which the resumed fit replays without training (nothing there is judged).
        self._stopped: dict[str, Any] | None = None
        self._replayed_until, self._in_epoch = 0, False

    findings = property(lambda self: self.engine.findings)
    step_losses = property(lambda self: self.engine.step_losses)
    initial_loss = property(lambda self: self.engine.initial_loss)
    history = property(lambda self: self.engine.history)
    probe_seconds = property(lambda self: self._own.budget.spent)
    probes = property(lambda self: self._own.probes)

    # --- Keras hooks --------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._in_fit, self._learned_val_size = True, None
        self._saved = None
        if self.path is not None and self.path.is_file():
            self._saved = json.loads(self.path.read_text())
        self._started, self._epochs_run = False, 0
        self._stopped, self._replayed_until, self._in_epoch = None, 0, False
        if self._saved is None or optimizer_step(self.model.optimizer) > 0:
            self._start()
        # else: a record is there and the optimizer is still at step 0. A RunBackup later in
        # the callback list may restore the interrupted run's state in its on_train_begin,
        # so the doctor starts at the first epoch (or at train end, when the resumed fit has
        # no epoch left): nothing is judged, nor doctor.json written, before it knows
        # whether it continues that record.

    def backup_state(self) -> dict[str, Any]:
        """The record as ``doctor.json`` would hold it now (a RunBackup's, at its step)."""
        if not self._started:
            return dict(self._saved or {})  # a fit that has not begun: the record it found
        self._catch_up()
        record = self._record()
        if self._in_epoch:
            # A backup at a step: the resumed fit continues this epoch's running mean after
            # the step it stopped before (the steps trained so far).
            batches, mean = self.engine.epoch_mean
            step = optimizer_step(self.model.optimizer)
            record["stopped"] = {"epoch": self._epoch, "step": step, "batches": batches,
                                 "mean": mean}  # fmt: skip
        return record

    def restore_state(self, state: dict[str, Any]) -> None:
        """Continue ``state`` (:meth:`backup_state`'s, restored by a RunBackup after this
        callback's ``on_train_begin``) rather than ``doctor.json``: judging (re)starts from it
        at the first epoch, or at train end when no epoch is left to run."""
        state = dict(state or {})
        self._stopped = state.pop("stopped", None)
        self._saved = state or None
        self._started = False

    def _start(self, stopped: dict[str, Any] | None = None) -> None:
        """Begin judging at the optimizer's step now (``stopped``: the step a backup inside
        the epoch beginning stopped before): a fit past step 0 continues the saved
        ``doctor.json`` (findings, step losses, epoch history, measured costs)."""
        self._started = True
        model = self.model
        if self._own_advice:
            self.engine.advice = keras_terms(input_kind(model))
        first_step = optimizer_step(model.optimizer)
        if stopped is not None:  # the optimizer counts the replayed steps again from here
            first_step = max(first_step, int(stopped["step"]))
        saved = self._saved if first_step > 0 else None
        self._measured_before = _measured(saved)
        kernels = {v.path: layer for layer, v in stats.kernels_by_layer(model).items()}
        outputs = weight_checks.output_layer_names(model)
        self.engine.start(first_step, saved, outputs=outputs, kernels=kernels)
        if saved is not None:
            ratios, norms = _earlier_measurements(self._monitors)
            # The stopped epoch's rows are judged at its end, with the rest of it.
            done = len(ratios) if stopped is None else sum(r[1] <= stopped["epoch"] for r in ratios)
            self.engine.resume_measurements(ratios[:done], norms)
            self.engine.update_ratios(ratios[done:])
        self._own.start(model, first_step)
        self._epoch, self._epoch_rate = 0, None
        self._fed = dict.fromkeys(("gradients", "activations", "ratios"), 0)
        self._pending, self._train_thread = [], threading.get_ident()
        self._noise: tuple[int, float | None] | None = None  # (step measured, batch-loss noise)
        self._judge_without_probes(first_step)

    def on_epoch_begin(self, epoch, logs=None):
        stopped, self._stopped = self._stopped, None
        if stopped is not None and stopped.get("epoch") != epoch:
            stopped = None  # not resumed in the epoch the backup was taken in
        if not self._started:
            self._start(stopped)
        self._epochs_run += 1
        self._epoch, self._epoch_rate = epoch, None
        self._in_epoch = True
        self._epoch_start_step = optimizer_step(self.model.optimizer)
        self.engine.begin_epoch(epoch, self._epoch_start_step)
        if stopped is not None:
            self.engine.continue_epoch(stopped["batches"], stopped["mean"])
            self._replayed_until = int(stopped["step"])

    def on_train_batch_begin(self, batch, logs=None):
        step = self._epoch_start_step + batch
        if batch == 0 and LearningRateMonitor not in self._monitors:
            # The rate the epoch's first step uses, read as LearningRateMonitor reads it: at
            # this point any scheduler callback has set it, whatever the callback order.
            self._epoch_rate = self._rate_now()
        if step < self._replayed_until:
            return  # replayed without training: the weights are those of a later step
        self._catch_up()
        self._check_weights(step, due=True)
        if self._own.probe_due(step, alarm=self.engine.take_alarm()):
            layer_stats, gradients = self._own.probe(step, self._epoch)
            if layer_stats is not None:
                self.engine.activations(step, self._epoch, layer_stats)
            if gradients is not None:
                self.engine.gradients(gradients)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        with self._lock:
            self._pending.append((self._epoch, batch + 1, float(loss)))
        if threading.get_ident() == self._train_thread:
            self._drain()  # synchronous dispatch: judge now, before the next step runs

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._in_epoch = False
        self._catch_up()
        accuracy = None
        if "accuracy" in logs and self.judge_curves:  # what the curve judgement reads
            accuracy = self._own.inference_accuracy()
            if accuracy is None:
                # Nothing to score in inference mode: no verdict reads fit's running mean
                # (dropout on, BatchNorm on batch statistics), so the training error is
                # recorded as unknown and the bias/variance judgement is left out.
                accuracy = math.nan
                if epoch == 0 and self.verbose:
                    print(NO_TRAINING_ERROR_NOTE)
        monitor = self._monitors.get(LearningRateMonitor)
        rate = monitor.rate if monitor is not None else self._epoch_rate
        self.engine.end_epoch(epoch, logs, learning_rate=rate, inference_accuracy=accuracy)
        self._check_weights(self.engine.last_step + 1)
        if self.engine.nan_epoch is not None:
            self._restore()
        else:
            self._own.guard.keep(epoch + 1)
        self._write()

    def on_test_begin(self, logs=None):
        self._val_batches = 0

    def on_test_batch_end(self, batch, logs=None):
        self._val_batches = batch + 1  # only stored: safe on Keras' callback thread

    def on_test_end(self, logs=None):
        if self._in_fit and self.val_size is None and self._learned_val_size is None:
            self._learned_val_size = validation_examples(self.model, self._val_batches)

    @property
    def validation_examples(self) -> int | None:
        """How many examples ``fit``'s validation scores: ``val_size``, or what the doctor
        learnt from ``fit`` (None: no validation, or not learnt)."""
        return self.val_size if self.val_size is not None else self._learned_val_size

    @property
    def train_examples(self) -> int | None:
        """How many training examples the inference-mode training error is scored on (the
        training sample, else the probe batch; None: neither)."""
        own = self._own
        sample = own.train_sample if own.train_sample is not None else own.probe_batch
        if sample is None or sample.y is None:
            return None
        return count(sample.x)

    def on_train_end(self, logs=None):
        self._in_fit = False
        if not self._started:
            self._start()
        self._catch_up()
        if self.engine.nan_epoch is not None:
            self._restore()
        else:
            step = optimizer_step(self.model.optimizer)
            self.engine.end_training(
                step,
                judge_curves=self.judge_curves,
                train_examples=self.train_examples,
                dev_examples=self.validation_examples,
            )
        if self._epochs_run or self._saved is None or self.engine.first_step == 0:
            # A resumed fit with no epoch left (killed after fit, before the test) has
            # nothing to add: the record on disk is complete and stays as it is.
            self._write()
        self._writes.wait()  # doctor.json is complete on disk when fit returns
        if self.verbose and not self.findings:
            print("TrainingDoctor: no symptoms found during training.")

    # --- feeding the engine ----------------------------------------------------------------

    def _judge_without_probes(self, first_step: int) -> None:
        """What the weights alone show at step 0, where no probe measures it, and the one
        line saying what cannot be judged without probe data (see weight_checks)."""
        gradients = self._own.gradients or GradientMonitor in self._monitors
        activations = self._own.activations or ActivationHistograms in self._monitors
        measured = ["exploding_gradients", "vanishing_gradients"] if gradients else []
        measured += ["saturated_activations"] if activations else []
        if first_step == 0:
            self.engine.init_findings(weight_checks.init_scale_findings(self.model), measured)
        self.unjudged_note = weight_checks.unjudged_note(activations, gradients)
        if self.unjudged_note and self.verbose:
            print(self.unjudged_note)

    def _catch_up(self) -> None:
        """Hand the engine every number measured since it was last fed: the step losses,
        the update ratios of the step after the last probe, the monitors' records."""
        self._drain()
        rows = self._own.finish_ratios()
        if rows:
            self.engine.update_ratios(rows)
        _feed_records(self.engine, self._monitors, self._fed)

    def _drain(self) -> None:
        """Hand the engine the running means stored by on_train_batch_end."""
        with self._lock:
            pending, self._pending = self._pending, []
        steps = self.params.get("steps") if self.params else None
        for epoch, batches, mean in sorted(pending):
            self.engine.running_mean(epoch, batches, mean, steps)

    def _check_weights(self, step: int, due: bool = False) -> None:
        broken = self._own.check_weights(step, due)
        if broken:
            self.engine.broken_weights(step, broken)

    def _restore(self) -> None:
        if self.restore_on_nan and self.engine.restored_epoch is None:
            self.engine.weights_restored(self._own.guard.restore())

    def _batch_loss_noise(self) -> float | None:
        """The standard deviation of a training batch's loss from drawing its examples: the
        spread of the sample's losses at the current weights over sqrt(batch size)."""
        # Asked at every step while the jumps pass the first test (a loss within its noise
        # keeps passing it): measured once per oscillation window, not per batch.
        step, window = self.engine.last_step, self.thresholds.oscillation_window
        if self._noise is not None and step - self._noise[0] < window:
            return self._noise[1]
        sample = self._own.train_sample or self._own.probe_batch
        if sample is None or sample.y is None:
            return None
        start = time.perf_counter()
        spread = example_loss_spread(self.model, sample.x, sample.y)
        self._own.budget.spend(time.perf_counter() - start)
        noise = None if spread is None else spread / math.sqrt(self.batch_size or FIT_BATCH_SIZE)
        self._noise = (step, noise)
        return noise

    def _rate_now(self) -> float | None:
        """The learning rate in force now: the LearningRateMonitor's reading of this step
        when one was passed, else the optimizer's, read the same way."""
        monitor = self._monitors.get(LearningRateMonitor)
        try:
            if monitor is not None and monitor.model is not None:
                return monitor.current()
            return current_lr(self.model.optimizer)
        except (AttributeError, TypeError, ValueError):  # no optimizer, or no numeric rate
            return None

    def _on_finding(self, finding: Finding, stop: bool) -> None:
        if self.verbose:
            print(f"TrainingDoctor: {finding}")
        if stop:
            self.model.stop_training = True
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        # to_json copies the record, so the background write sees this moment's; its fsync
        # can wait tens of milliseconds on a busy disk, not on the training thread.
        self._writes.submit(write_json_atomic, self.path, self._record())

    def _record(self) -> dict[str, Any]:
        """``doctor.json``'s content now."""
        before = self._measured_before  # what the interrupted run had measured
        return self.engine.to_json(
            probes=before["probes"] + self.probes,
            probe_seconds=before["probe_seconds"] + self.probe_seconds,
            train_seconds=before["train_seconds"] + self._own.budget.elapsed(),
        )


def validation_examples(model: keras.Model, batches: int) -> int | None:
    """How many examples ``fit``'s validation just scored in ``batches`` batches, read from
    the evaluation iterator ``fit`` keeps while it runs: exact for arrays
    (``validation_data`` or ``validation_split``), the batch size times the batches for a
    dataset whose batch size is static, else counted in one pass over those batches; None
    when it cannot be told (a generator, a Python ``PyDataset``)."""
    adapter = getattr(getattr(model, "_eval_epoch_iterator", None), "data_adapter", None)
    if adapter is None or batches < 1:
        return None
    total = getattr(adapter, "_num_samples", None)
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        size = adapter.batch_size
        if total is not None:  # arrays: every batch full but the last
            return int(min(int(total), batches * size)) if size else int(total)
        if size:  # a static batch size: the last batch may be short when all ran
            partial = adapter.partial_batch_size if adapter.has_partial_batch else None
            if partial and batches == adapter.num_batches:
                return int((batches - 1) * size + partial)
            return int(batches * size)
        dataset = adapter.get_tf_dataset()
        count = dataset.take(batches).reduce(
            0, lambda n, batch: n + tf.shape(keras.tree.flatten(batch)[0])[0]
        )
        return int(count)
    return None


def _feed_records(engine: DoctorEngine, monitors: dict[type, Any], fed: dict[str, int]) -> None:
    """Hand ``engine`` the records the ``monitors`` made since ``fed`` (how many of each
    kind's records it has had), in the order a probe gives them: activations first (a dead
    layer explains a vanishing gradient), then gradients, then update ratios."""
    if ActivationHistograms in monitors:
        history = monitors[ActivationHistograms].history
        for step, epoch, layer_stats in history[fed["activations"] :]:
            engine.activations(step, epoch, layer_stats)
        fed["activations"] = len(history)
    if GradientMonitor in monitors:
        history = monitors[GradientMonitor].history
        for record in history[fed["gradients"] :]:
            engine.gradients(record)
        fed["gradients"] = len(history)
    if UpdateRatioMonitor in monitors:
        rows = monitors[UpdateRatioMonitor].history
        engine.update_ratios(rows[fed["ratios"] :])
        fed["ratios"] = len(rows)


def _earlier_measurements(
    monitors: dict[type, Any],
) -> tuple[list[tuple[int, int, str, float, str]], list[float]]:
    """The update-ratio rows and global gradient norms the monitors read back from their
    files for the epochs before a resume (their monitors' records, in number form)."""
    ratios: list[tuple[int, int, str, float, str]] = []
    norms: list[float] = []
    with contextlib.suppress(ValueError, IndexError):  # a file not of this layout: none
        if UpdateRatioMonitor in monitors:
            for step, epoch, name, ratio, layer in monitors[UpdateRatioMonitor].earlier_rows:
                ratios.append((int(step), int(epoch), name, float(ratio), layer))
        if GradientMonitor in monitors:
            rows = monitors[GradientMonitor].earlier_rows
            norms = [float(norm) for _, _, name, norm in rows if name == "global_norm"]
    return ratios, norms


def _measured(saved: Mapping[str, Any] | None) -> dict[str, float]:
    """The measured costs a resumed record adds to: probes and seconds of the earlier
    processes (0 for a fresh record)."""
    saved = saved or {}
    return {
        key: float(saved.get(key) or 0) if key != "probes" else int(saved.get(key) or 0)
        for key in ("probes", "probe_seconds", "train_seconds")
    }


def _by_kind(monitors: Iterable[keras.callbacks.Callback]) -> dict[type, Any]:
    found: dict[type, Any] = {}
    for monitor in monitors:
        kind = next((k for k in MONITOR_KINDS if isinstance(monitor, k)), None)
        if kind is None:
            raise ValueError(
                f"`monitors` takes GradientMonitor, ActivationHistograms, UpdateRatioMonitor "
                f"and LearningRateMonitor instances. Received: {monitor!r}"
            )
        if kind in found:
            raise ValueError(f"`monitors` holds two {kind.__name__} instances; pass one")
        found[kind] = monitor
    return found
