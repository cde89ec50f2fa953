"""The TrainingDoctor's judgement as a pure engine: numbers in, findings out.

:class:`DoctorEngine` holds what the doctor knows about one training run (the findings, with
repeats counted, the loss of every step, the initial loss, the epoch logs) and applies the
rules of :mod:`kerasdiag.diagnosis.rules` to the numbers fed to it through small methods:
per-step losses (or Keras' running means), epoch logs, gradient-norm records, activation
statistics, update-ratio rows, the result of a NaN/Inf check of the weights and the learning
rate. It reconciles the advice (never "raise the learning rate" next to "lower it"), says
when a symptom asks training to stop, and serialises and resumes its ``doctor.json`` record.

It imports no TensorFlow: the Keras callback
:class:`~kerasdiag.callbacks.TrainingDoctor` reads the numbers from the model, the
optimizer and the monitors and feeds them in, and a test can feed numbers by hand.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from kerasdiag.core.io import json_safe
from kerasdiag.diagnosis import rules
from kerasdiag.diagnosis.advice import Vocabulary
from kerasdiag.diagnosis.symptoms import (
    JUDGED_SYMPTOMS,
    Finding,
    fix_for,
    make_finding,
    reconcile,
)

# A step loss this many times the initial loss raises the alarm: the caller then measures
# the gradients at once (outside its budget), since they are what names a blow-up's cause.
ALARM_FACTOR = 3.0
# doctor.json keeps at most this many (step, loss) points, evenly thinned.
MAX_SAVED_STEPS = 2000
# The loss counts as flat when, after FLAT_STEPS steps, the mean of the last FLAT_WINDOW
# step losses is less than FLAT_DROP of the initial loss (plus the noise) below the mean of
# the first ones.
FLAT_STEPS = 100
FLAT_WINDOW = 20
FLAT_DROP = 0.01

OnFinding = Callable[[Finding, bool], None]


class DoctorRecord:
    """What the doctor has seen of one run: the findings, each named once per symptom and
    layer (repeats counted in ``count`` / ``last_step``), the loss of every step, the
    initial loss and the epoch logs; serialised to and resumed from ``doctor.json``.

    Example:

    ```python
    record = DoctorRecord(stop_on=["nan"])
    record.start(first_step=120, saved=json.loads(Path("doctor.json").read_text()))
    record.initial_loss  # the interrupted run's, not the loss at the restart
    ```

    Args:
        thresholds: a :class:`~kerasdiag.diagnosis.rules.Thresholds` or a mapping overriding
            some of its fields.
        stop_on: symptoms that ask training to stop when found.
        current_rate: the learning rate in force now, a number or a function returning one
            (read only when advice needs it).
        on_finding: called with each new finding and whether it asks to stop.
        advice: the reader's terms for the fixes (:mod:`kerasdiag.diagnosis.advice`); None
            keeps them as written (a recipe's config keys).

    Attributes:
        findings: the :class:`~kerasdiag.diagnosis.symptoms.Finding` records so far.
        step_losses: (step, loss) of every training step seen.
        initial_loss: the loss of the first step, before any update.
        history: the epoch logs, {name: [value per epoch]}, with ``learning_rate``.
        stop_requested: a symptom of ``stop_on`` was found.
    """

    def __init__(
        self,
        thresholds: rules.Thresholds | Mapping[str, Any] | None = None,
        *,
        stop_on: Iterable[str] = ("nan",),
        current_rate: rules.LearningRate = None,
        on_finding: OnFinding | None = None,
        advice: Vocabulary | None = None,
    ):
        self.thresholds = rules.Thresholds.of(thresholds)
        self.advice = advice
        self.stop_on = frozenset([stop_on] if isinstance(stop_on, str) else stop_on)
        unknown = sorted(self.stop_on - set(JUDGED_SYMPTOMS))
        if unknown:
            raise ValueError(
                f"`stop_on` names unknown symptoms {unknown}; known: {', '.join(JUDGED_SYMPTOMS)}"
            )
        self.current_rate = current_rate
        self.on_finding = on_finding
        self.start()

    def start(self, first_step: int = 0, saved: Mapping[str, Any] | None = None) -> None:
        """Begin a fit at optimizer step ``first_step``; a fit past step 0 continues the
        ``saved`` record (``doctor.json``), so that the loss at the restart does not pass
        for the initial loss, nor its first epochs for the first epochs of training."""
        self.first_step = int(first_step)
        self.findings: list[Finding] = []
        self.step_losses: list[tuple[int, float]] = []
        self.initial_loss: float | None = None
        self.history: dict[str, list[float]] = {}
        self.stop_requested, self._trim_history = False, False
        self._seen: dict[tuple[str, str | None], Finding] = {}
        if self.first_step > 0 and saved:
            for d in saved.get("findings", []):
                finding = Finding.from_dict(d)
                if finding.source == "doctor" and (finding.step or 0) < self.first_step:
                    self.findings.append(finding)
                    self._seen[(finding.symptom, finding.layer)] = finding
            self.initial_loss = saved.get("initial_loss")
            self.step_losses = [
                (int(s), float(v)) for s, v in saved.get("step_losses", []) if s < self.first_step
            ]
            self.history = {k: list(v) for k, v in (saved.get("history") or {}).items()}
            self._trim_history = True  # at the first epoch of this fit

    def trim_history(self, epoch: int) -> None:
        """A resumed record redoes its epochs from ``epoch`` (0-based) on."""
        if self._trim_history:
            self._trim_history = False
            self.history = {k: v[:epoch] for k, v in self.history.items()}

    def lr(self) -> float | None:
        """The learning rate the advice starts from: the highest the run has used so far,
        epoch starts and now. Under a schedule that is what ``optimizer.lr`` sets (a
        warmup's target, a decay's start), not wherever the decay stands at the finding."""
        now = self.current_rate() if callable(self.current_rate) else self.current_rate
        rates = [*(self.epoch_rates() or []), now]
        finite = [float(r) for r in rates if r is not None and math.isfinite(r)]
        return max(finite) if finite else None

    def epoch_rates(self) -> list[float] | None:
        """The rate each epoch's first step used: the run's ``learning_rate`` record (a
        number another callback logged under another name is not it)."""
        rates = self.history.get("learning_rate")
        return list(rates) if rates is not None else rules.epoch_learning_rates(self.history)

    def to_json(self, **measured: float) -> dict[str, Any]:
        """The ``doctor.json`` record: findings, initial loss, the step losses (thinned to
        ``MAX_SAVED_STEPS``), ``measured`` (probes, probe_seconds, train_seconds), the
        epoch logs, thresholds and ``stop_on``; a copy, safe to write from another thread."""
        points = self.step_losses
        if len(points) > MAX_SAVED_STEPS:
            keep = np.linspace(0, len(points) - 1, MAX_SAVED_STEPS).astype(int)
            points = [points[i] for i in keep]
        return json_safe(
            {
                "findings": [f.to_dict() for f in self.findings],
                "initial_loss": self.initial_loss,
                "step_losses": points,
                **measured,
                "history": self.history,
                "thresholds": vars(self.thresholds),
                "stop_on": sorted(self.stop_on),
            }
        )

    def seen(self, symptom: str, layer: str | None = None) -> bool:
        """Whether ``symptom`` was found in ``layer`` (None: not a layer's)."""
        return (symptom, layer) in self._seen

    def record(self, finding: Finding) -> None:
        """Add ``finding``, or count it as a repeat of the same symptom in the same layer."""
        seen = self._seen.get((finding.symptom, finding.layer))
        if seen is not None:
            seen.count += 1
            seen.last_step = finding.step
            return
        self.add(finding)

    def add(self, finding: Finding) -> None:
        """Add ``finding`` as a new one (a whole-run judgement is never a repeat)."""
        self._seen[(finding.symptom, finding.layer)] = finding
        self.findings.append(finding)
        reconcile(self.findings)  # never "raise the learning rate" next to "lower it"
        if self.advice is not None:
            for each in self.findings:
                each.fix = self.advice.phrase(each.fix)
        stop = finding.symptom in self.stop_on
        self.stop_requested |= stop
        if self.on_finding is not None:
            self.on_finding(finding, stop)


class DoctorEngine(DoctorRecord):
    """What a training run shows, judged from numbers alone: a :class:`DoctorRecord` that
    applies the rules of :mod:`kerasdiag.diagnosis.rules` to the numbers fed to it.

    Example:

    ```python
    engine = DoctorEngine(stop_on=["nan"])
    engine.begin_epoch(0, start_step=0)
    for step, loss in enumerate([2.3, 2.2, float("nan")]):
        engine.step_loss(step, loss)
    engine.findings[0].symptom  # "nan"
    engine.stop_requested  # True
    ```

    Args:
        thresholds, stop_on, current_rate, on_finding, advice: as :class:`DoctorRecord`.
        bayes_error: human/Bayes error for the end-of-training bias/variance judgement.
        restoring: whether the caller puts the last finite epoch's weights back after a NaN
            (it changes the ``nan`` fix's words).

    Attributes:
        nan_epoch: the 0-based epoch in which the loss or the weights broke, else None.
        ratio_rows: the update-ratio rows fed so far.
    """

    def __init__(
        self,
        thresholds: rules.Thresholds | Mapping[str, Any] | None = None,
        *,
        stop_on: Iterable[str] = ("nan",),
        bayes_error: float | None = None,
        restoring: bool = True,
        current_rate: rules.LearningRate = None,
        on_finding: OnFinding | None = None,
        advice: Vocabulary | None = None,
        loss_noise: Callable[[], float | None] | None = None,
    ):
        if bayes_error is not None and not 0 <= bayes_error < 1:
            raise ValueError(f"`bayes_error` must be in [0, 1). Received: {bayes_error!r}")
        self.bayes_error, self.restoring = bayes_error, bool(restoring)
        # The standard deviation of a batch's loss from drawing its examples, measured when
        # the oscillation rule asks (rarely): None where it cannot be measured.
        self.loss_noise = loss_noise
        super().__init__(
            thresholds,
            stop_on=stop_on,
            current_rate=current_rate,
            on_finding=on_finding,
            advice=advice,
        )

    def start(
        self,
        first_step: int = 0,
        saved: Mapping[str, Any] | None = None,
        *,
        outputs: Iterable[str] = (),
        kernels: Mapping[str, str] | None = None,
    ) -> None:
        """As :meth:`DoctorRecord.start`; ``outputs``: the output layers (never judged for
        saturation); ``kernels``: {variable path: layer} of the variables whose update
        ratios say whether a layer learns (each layer's kernel)."""
        super().start(first_step, saved)
        self.outputs, self.kernels = frozenset(outputs), dict(kernels or {})
        self.epoch = self.epoch_start_step = self.last_step = 0
        self.nan_epoch: int | None = None
        self.restored_epoch: int | None = None
        self.alarm, self._alarm_step = False, -(10**9)
        self._window: deque[float] = deque(maxlen=self.thresholds.oscillation_window + 1)
        self._last_mean = (0, 0.0)  # Keras' last (batches, running mean) of the epoch
        self._norms: list[float] = []  # the global norm of each gradient record so far
        self.ratio_rows: list[Sequence[Any]] = []
        self._ratios_judged = 0
        # A resumed record's last losses: the window the uninterrupted run held there.
        recent = [v for _, v in self.step_losses if rules.broken_loss(v) is None]
        self._window.extend(recent[-self._window.maxlen :])

    def begin_epoch(self, epoch: int, start_step: int) -> None:
        """Epoch ``epoch`` (0-based) begins at optimizer step ``start_step``."""
        self.trim_history(epoch)
        self.epoch, self.epoch_start_step = epoch, start_step
        self._last_mean = (0, 0.0)

    @property
    def epoch_mean(self) -> tuple[int, float]:
        """Keras' last (batches, running mean of the loss) of the running epoch fed so far:
        what a backup taken inside the epoch keeps for :meth:`continue_epoch`."""
        return self._last_mean

    def continue_epoch(self, batches: int, mean: float) -> None:
        """The running epoch (just begun) goes on after its first ``batches`` batches, whose
        losses the record holds, with Keras' running ``mean`` over them: a fit resumed from a
        backup taken inside the epoch replays those batches without training. Their reports
        are then ignored, and the next one's loss is recovered from this mean, as in the run
        that was not interrupted."""
        self._last_mean = (int(batches), float(mean))
        if batches > 0:
            self.last_step = self.epoch_start_step + int(batches) - 1

    def end_epoch(
        self,
        epoch: int,
        logs: Mapping[str, Any],
        *,
        learning_rate: float | None = None,
        inference_accuracy: float | None = None,
    ) -> None:
        """Epoch ``epoch`` ended with ``logs``; ``learning_rate``: the rate its first step
        used (the run's one record of it, kept as ``learning_rate``);
        ``inference_accuracy``: training examples scored in inference mode."""
        self._judge_stagnant(epoch)
        values = {k: float(v) for k, v in logs.items() if isinstance(v, numbers.Real)}
        if learning_rate is not None:
            values["learning_rate"] = float(learning_rate)
        if inference_accuracy is not None:
            values[rules.TRAIN_INFERENCE_ACCURACY] = float(inference_accuracy)
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
        finding = rules.slow_finding(
            epoch,
            values.get("loss"),
            self.initial_loss,
            self.thresholds,
            self.lr,
            [f.symptom for f in self.findings if f.symptom != "slow_convergence"],
            step=self.last_step,
            update_ratio=self.median_update_ratio(),
            warmup=rules.warmup_epochs(self.epoch_rates()),
        )
        if finding is not None:
            self.record(finding)

    def end_training(
        self,
        step: int,
        *,
        judge_curves: bool = True,
        train_examples: int | None = None,
        dev_examples: int | None = None,
    ) -> None:
        """Training ended at optimizer step ``step``: judge the curves like
        :func:`kerasdiag.diagnose` (unless the run broke, or ``judge_curves`` is off).
        ``train_examples``, ``dev_examples``: how many examples the training and validation
        accuracies were measured on, when known: a gap within their noise (a 20-point gap on
        24 validation images) is inconclusive, not overfitting."""
        if self.nan_epoch is not None or not self.history.get("loss") or not judge_curves:
            return
        for finding in rules.curve_findings(
            self.history,
            initial_loss=self.initial_loss,
            update_ratio=self.median_update_ratio(),
            bayes_error=self.bayes_error,
            lr=self.lr(),
            thresholds=self.thresholds,
            step=step,
            train_examples=train_examples,
            dev_examples=dev_examples,
        ):
            self.add(finding)

    # --- numbers in --------------------------------------------------------------------

    def running_mean(self, epoch: int, batches: int, mean: float, steps: int | None = None) -> None:
        """Keras' running mean ``mean`` of the loss over the first ``batches`` batches of
        ``epoch``, as it reports after each step: the loss of the steps since the last
        report is recovered from it (equal batches: ``(n1 * m1 - n0 * m0) / (n1 - n0)``).
        ``steps``: the batches of an epoch; its last batch may be smaller, so its recovered
        loss is biased and left out."""
        n0, m0 = self._last_mean
        if epoch != self.epoch or batches <= n0:
            return  # a late report of an earlier epoch or fit
        self._last_mean = (batches, mean)
        loss = (batches * mean - n0 * m0) / (batches - n0)
        if batches == steps and batches > 1 and math.isfinite(loss):
            return
        self.step_loss(self.epoch_start_step + batches - 1, loss)

    def step_loss(self, step: int, loss: float) -> None:
        """The training loss of optimizer step ``step``: NaN, the flat-loss rule at
        ``FLAT_STEPS``, oscillation, and the alarm."""
        self.last_step = step
        self.step_losses.append((step, loss))
        if rules.broken_loss(loss) is not None:
            self._broken()
            recent = [v for _, v in self.step_losses[-6:-1]]
            self.record(rules.nan_finding(recent, loss=loss, **self._nan_context(step)))
            return
        if self.initial_loss is None:
            self.initial_loss = loss  # the first step's loss: before any update
        if self.first_step == 0 and len(self.step_losses) == FLAT_STEPS:
            flat = flat_loss_finding(self.step_losses, self.initial_loss, self.lr())
            if flat is not None and not self.seen("slow_convergence"):
                self.add(flat)
        self._window.append(loss)
        scale = self.initial_loss
        if loss > ALARM_FACTOR * scale and step - self._alarm_step >= self._window.maxlen:
            self._alarm_step, self.alarm = step, True
        if len(self._window) == self._window.maxlen:
            finding = rules.oscillation_finding(
                self._window, scale, self.thresholds, self.lr, step, self.epoch + 1,
                noise=self.loss_noise,
            )  # fmt: skip
            if finding is not None:
                self.record(finding)

    def take_alarm(self) -> bool:
        """Whether the loss shot up since the last call (a probe is due at once)."""
        alarm, self.alarm = self.alarm, False
        return alarm

    def activations(self, step: int, epoch: int, layer_stats: Mapping[str, Any]) -> None:
        """A probe's {layer: :class:`~kerasdiag.diagnosis.rules.ActivationStats`} before
        optimizer step ``step`` of the 0-based ``epoch``: dying ReLU, saturated units."""
        for finding in rules.activation_findings(
            layer_stats, self.thresholds, self.lr, step=step, epoch=epoch + 1, skip=self.outputs
        ):
            self.record(finding)

    def gradients(self, record: Mapping[str, Any]) -> None:
        """A gradient probe as GradientMonitor records it (step, 0-based epoch, loss,
        global_norm, layer_norms): exploding (also by growth over the earlier records) and
        vanishing gradients."""
        dying = [f.layer for f in self.findings if f.symptom == "dying_relu"]
        for finding in rules.gradient_findings(
            record, self._norms, self.thresholds, self.lr, dying
        ):
            self.record(finding)
        self._norms.append(record["global_norm"])

    def update_ratios(self, rows: Iterable[Sequence[Any]]) -> None:
        """Update-ratio rows (step, 1-based epoch, variable path, ratio, layer), as
        UpdateRatioMonitor logs them; judged for stagnant weights at the epoch's end."""
        self.ratio_rows.extend(rows)

    def resume_measurements(
        self, ratio_rows: Iterable[Sequence[Any]] = (), global_norms: Iterable[float] = ()
    ) -> None:
        """A resumed record takes back what the monitors measured before the resume point
        (read back from their files): the update-ratio rows, already judged, for the run's
        median ratio, and the gradient norms the growth rule compares with. Without them a
        resumed run's evidence would differ from the uninterrupted run's."""
        self.ratio_rows.extend(ratio_rows)
        self._ratios_judged = len(self.ratio_rows)
        self._norms.extend(float(n) for n in global_norms)

    def broken_weights(self, step: int, names: Sequence[str]) -> None:
        """A check before optimizer step ``step`` found NaN/Inf in the weights ``names``
        (ReLU turns NaN inputs into 0, so weights can break while the loss stays finite)."""
        self._broken()
        recent = [v for _, v in self.step_losses[-5:]]
        context = self._nan_context(max(step - 1, 0))
        self.record(rules.nan_finding(recent, broken=list(names), **context))

    def weights_restored(self, epoch: int) -> None:
        """The weights of the end of epoch ``epoch`` (0: the initial ones) were put back."""
        self.restored_epoch = epoch
        for finding in self.findings:
            if finding.symptom == "nan":
                finding.evidence["restored_weights_of_epoch"] = epoch

    def init_findings(self, findings: Iterable[Finding], measured: Iterable[str] = ()) -> None:
        """What the weights alone show at step 0 (the initialisation scale), less the
        symptoms a probe measures (``measured``) and those the record already has."""
        if self.first_step != 0:
            return
        skip = set(measured)
        for finding in findings:
            if finding.symptom not in skip and not self.seen(finding.symptom, finding.layer):
                self.add(finding)

    def median_update_ratio(self) -> float | None:
        """The kernels' median update ratio after step 0 (an adaptive optimizer's first
        step moves every weight by ~lr whatever its gradient)."""
        return rules.median_update_ratio(self.ratio_rows, from_step=rules.RUN_RATIO_FROM_STEP)

    def _broken(self) -> None:
        if self.nan_epoch is None:
            self.nan_epoch = self.epoch

    def _nan_context(self, step: int) -> dict[str, Any]:
        """What the nan rules need besides the numbers: the run's scale and its settings."""
        return {
            "initial_loss": self.initial_loss,
            "lr": self.lr,
            "step": step,
            "epoch": self.epoch + 1,
            "stopping": "nan" in self.stop_on,
            "restoring": self.restoring,
        }

    def _judge_stagnant(self, epoch: int) -> None:
        rows, start = self.ratio_rows, self._ratios_judged
        self._ratios_judged = len(rows)
        per_layer: dict[str, list[float]] = {}
        for _step, _epoch, name, ratio, *_ in rows[start:]:
            if name in self.kernels and math.isfinite(float(ratio)):
                per_layer.setdefault(self.kernels[name], []).append(float(ratio))
        for finding in rules.stagnant_findings(
            per_layer, self.thresholds, self.lr, step=self.last_step, epoch=epoch + 1
        ):
            self.record(finding)


def flat_loss_finding(
    step_losses: Sequence[tuple[int, float]], initial_loss: float | None, lr: float | None
) -> Finding | None:
    """``slow_convergence`` when the loss has not moved over the first ``FLAT_STEPS`` steps.

    Judged once, at step ``FLAT_STEPS``: the mean of the last ``FLAT_WINDOW`` losses must be
    below the mean of the first ``FLAT_WINDOW`` by ``FLAT_DROP`` of the initial loss plus
    twice the standard error of that difference (the minibatch noise); a healthy run has
    fallen far more by then.

    Example:
        >>> falling = [(i, 2.3 * 0.99**i) for i in range(FLAT_STEPS)]
        >>> flat_loss_finding(falling, 2.3, 1e-3) is None
        True
    """
    if initial_loss is None or len(step_losses) < FLAT_STEPS or not initial_loss > 0:
        return None
    losses = [v for _, v in step_losses[:FLAT_STEPS]]
    if not all(math.isfinite(v) for v in losses):
        return None
    head, tail = np.array(losses[:FLAT_WINDOW]), np.array(losses[-FLAT_WINDOW:])
    first, last = float(head.mean()), float(tail.mean())
    drop = (first - last) / initial_loss
    # Twice the standard error of the difference of the two means: minibatch noise alone.
    noise = 2 * math.sqrt((head.var(ddof=1) + tail.var(ddof=1)) / FLAT_WINDOW) / initial_loss
    if drop >= FLAT_DROP + noise:
        return None
    step = step_losses[FLAT_STEPS - 1][0]
    return make_finding(
        "slow_convergence",
        f"the loss is flat: over the first {FLAT_STEPS} steps its mean went from {first:.4g} "
        f"(first {FLAT_WINDOW} steps) to {last:.4g} (last {FLAT_WINDOW}), "
        f"{drop:.2%} of the initial loss (expected at least {FLAT_DROP + noise:.1%}: "
        f"{FLAT_DROP:.0%} plus twice the minibatch noise)",
        {
            "first_mean": first,
            "last_mean": last,
            "drop": drop,
            "expected_drop": FLAT_DROP + noise,
            "noise": noise,
            "steps": FLAT_STEPS,
            "initial_loss": initial_loss,
        },
        fix_for("slow_convergence", lr),
        step=step,
    )
