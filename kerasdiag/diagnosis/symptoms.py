"""The one table of symptoms: each named problem's title, its fix, and which way it moves the lr.

Every place that advises a person reads its text from here: the TrainingDoctor during
training, :func:`kerasdiag.diagnose` afterwards, the NaN stop's console line, the standalone
warnings of the gradient and update-ratio monitors (used alone in a user's ``fit``), the
sanity stages' findings and the search's diverged trials. A fix is therefore written once,
and two places can never give different advice for the same symptom.

``lr`` says which way a fix moves the learning rate (-1 lower, +1 higher, 0 neither):
:func:`reconcile` uses it so that one run never advises opposite fixes. When a run shows
symptoms of a learning rate that is too high (instability) and of one that is too low, the
instability is fixed first, so "raise the learning rate" is withheld until it is gone.

The rule that names each symptom, with its thresholds, is in :mod:`kerasdiag.diagnosis.rules`,
one module per family (each entry of the table below names its module). The fix texts stay
here rather than beside their rules so that each is written once (a test checks that no other
file repeats one), and so are the fixes the rules compose from them (:func:`nan_fix`,
:func:`large_updates_fix`, :func:`after_causes_fix`, :func:`vanishing_after_dying_fix`):
the rules import this module, so it cannot import theirs. The checks' own fixes, which name
no symptom, are in :mod:`kerasdiag.diagnosis.check_fixes` and re-exported here.

This module imports no TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from kerasdiag.core.io import json_safe

# The checks' own fixes (no symptom of the table), reachable here as before.
from kerasdiag.diagnosis.check_fixes import (
    BATCH_MIXING_FIX,
    INIT_TOO_LARGE_FIX,
    INIT_TOO_SMALL_FIX,
    INPUT_UNUSED_FIX,
    LEAKAGE_FIX,
    LR_TOO_HIGH_FIX,
    LR_TOO_LOW_FIX,
    NO_DROP_FIX,
    NO_PROBE_HINT,
    SHIFT_FIX,
)


@dataclass(frozen=True)
class Symptom:
    """One named problem: a short title for people, its fix, and the directions its fix
    pushes the learning rate and the model's capacity (+1 up, -1 down, 0 neither).

    ``fix`` may contain ``{lower}`` / ``{higher}``: :func:`fix_for` fills in the learning
    rate to try (``" (optimizer.lr=0.0001; it is 0.001)"``) when the current one is known;
    and ``{stop_early}``, the advice to stop early, left out where the run already did.
    """

    name: str
    title: str
    fix: str
    lr: int = 0
    capacity: int = 0


_SYMPTOMS = (
    # judged in rules/nan.py
    Symptom(
        "nan",
        "NaN/Inf loss or weights",
        "lower the learning rate 10x{lower} and clip gradients (optimizer.global_clipnorm=1.0); "
        "if the loss was stable just before, look for NaN/Inf in the inputs or labels "
        "(np.isfinite(x).all()) or an unsafe operation (log(0), sqrt of a negative, a "
        "division by zero) in a custom loss or layer",
        lr=-1,
    ),
    # judged in rules/gradients.py
    Symptom(
        "exploding_gradients",
        "exploding gradients",
        "clip gradients (optimizer.global_clipnorm=1.0), lower the learning rate ~10x{lower}, "
        "and check the initialisation scale (He for ReLU, Glorot for tanh/sigmoid) and "
        "the input normalisation (data.normalize=true); batch normalization "
        "(model.batch_norm=true) also keeps activations in range",
        lr=-1,
    ),
    # judged in rules/gradients.py
    Symptom(
        "vanishing_gradients",
        "vanishing gradients",
        "the early layers barely learn: use ReLU-family activations with He initialisation "
        "instead of deep sigmoid/tanh stacks, add batch normalization (model.batch_norm=true) "
        "or residual connections, or use fewer layers",
    ),
    # judged in rules/activations.py
    Symptom(
        "dying_relu",
        "dying ReLU units",
        "dead units never recover: lower the learning rate{lower} (one large step can kill "
        "them), initialise biases at 0 with He-initialised kernels, normalise the inputs, or "
        "use LeakyReLU/ELU (model.activation=elu)",
        lr=-1,
    ),
    # judged in rules/activations.py
    Symptom(
        "saturated_activations",
        "saturated tanh/sigmoid units",
        "saturated units pass almost no gradient: scale the initialisation down (Glorot for "
        "tanh/sigmoid, variance 1/n_in), normalise the inputs to zero mean and unit "
        "variance (data.normalize=true), add batch normalization, or use ReLU",
    ),
    # judged in rules/oscillation.py
    Symptom(
        "oscillating_loss",
        "oscillating loss",
        "the steps overshoot: lower the learning rate 3-10x{lower}, use momentum or Adam, a "
        "larger batch (data.batch_size) or a decaying schedule (schedule=step), and clip "
        "gradients (optimizer.global_clipnorm=1.0)",
        lr=-1,
    ),
    # judged in rules/convergence.py
    Symptom(
        "slow_convergence",
        "slow convergence",
        "raise the learning rate 3-10x{higher} until the update/weight ratios are ~1e-3, "
        "and check the initialisation and input normalisation",
        lr=+1,
    ),
    # judged in rules/update_ratios.py
    Symptom(
        "stagnant_weights",
        "stagnant weights",
        "the layer does not learn: check that it receives a gradient (no stop_gradient, not "
        "frozen by mistake, no dead units after it) and raise the learning rate{higher}",
        lr=+1,
    ),
    # judged in rules/curves.py
    Symptom(
        "lr_too_high",
        "learning rate too high",
        "lower the learning rate 3-10x{lower}, or decay it (schedule=step, schedule=cosine "
        "or schedule=plateau)",
        lr=-1,
    ),
    # judged in rules/curves.py
    Symptom(
        "lr_too_low",
        "learning rate too low",
        "raise the learning rate 3-10x{higher}; the update/weight ratios should be ~1e-3",
        lr=+1,
    ),
    # judged in rules/fitting.py
    Symptom(
        "overfitting",
        "overfitting (high variance)",
        "high variance: get more data or augment it (data.augment.flip=true, "
        "data.augment.crop=4), regularize more (model.l2, model.dropout=[0.5]){stop_early}, "
        "or use a smaller network",
        capacity=-1,
    ),
    # judged in rules/fitting.py
    Symptom(
        "underfitting",
        "underfitting (high bias)",
        "high bias: use a bigger network (more units or layers: model.hidden_units, "
        "model.conv_filters), train longer (trainer.epochs), regularize less, or tune the "
        "optimizer and learning rate",
        capacity=+1,
    ),
    # judged in run_dir.py (sanity_findings, from sanity.json)
    Symptom(
        "failed_sanity_check",
        "a sanity check failed before training",
        "read the stage's message (report, sanity.json): a failed gradient check means a wrong "
        "gradient in a custom layer or loss; a wrong initial loss, a mismatch of the last "
        "layer and the loss (loss.from_logits) or a bad initialisation scale; a model that "
        "cannot memorise a tiny subset, a bug or a learning rate far off; set "
        "sanity.fail_fast=true to stop before training when one fails",
    ),
    # judged in rules/nan.py (broken_loss with a factor: the search's divergence stop)
    Symptom(
        "diverged",
        "diverged training",
        "the loss blew up: lower the learning rate{lower} (narrow the searched range of "
        "optimizer.lr) and clip gradients (optimizer.global_clipnorm=1.0)",
        lr=-1,
    ),
)

SYMPTOMS: dict[str, Symptom] = {s.name: s for s in _SYMPTOMS}

# Symptoms the doctor names while training runs, then those judged from the finished curves.
TRAINING_SYMPTOMS = (
    "nan",
    "exploding_gradients",
    "vanishing_gradients",
    "dying_relu",
    "saturated_activations",
    "oscillating_loss",
    "slow_convergence",
    "stagnant_weights",
)
CURVE_SYMPTOMS = ("lr_too_high", "lr_too_low", "overfitting", "underfitting")
# What the doctor and diagnose() name (and what ``stop_on`` may list).
JUDGED_SYMPTOMS = TRAINING_SYMPTOMS + CURVE_SYMPTOMS
# A pre-training check that failed (sanity.json): shown with the run's other findings.
SANITY_SYMPTOMS = ("failed_sanity_check",)
# "error": training is broken and its result is unusable; "warning": it works, but badly.
ERROR_SYMPTOMS = frozenset({"nan", "exploding_gradients"})
# GradientMonitor's flags, as symptoms.
GRADIENT_FLAG_SYMPTOMS = {"vanishing": "vanishing_gradients", "exploding": "exploding_gradients"}
# UpdateRatioMonitor's verdicts: the likely cause, and the symptom whose fix applies.
UPDATE_RATIO_CAUSES = {
    "too_high": ("the learning rate is probably too high", "lr_too_high"),
    "too_low": (
        "the learning rate is probably too low, unless the gradient vanishes",
        "lr_too_low",
    ),
}


@dataclass
class Finding:
    """One named symptom: where it was seen, the numbers that show it, and what to change.

    ``step`` is the optimizer step (0 = before the first update) and ``epoch`` the 1-based
    epoch it was seen in (as in metrics.csv); both are None for whole-run judgements that
    have no single moment. ``count`` and ``last_step`` record repeats of the same symptom in
    the same layer. ``source`` is ``"doctor"`` (seen during training), ``"curves"`` (judged
    from the finished curves) or ``"nan_stop"`` (from nan.json).

    Example:
        >>> make_finding("dying_relu", "90% dead", {}, fix_for("dying_relu"), step=3).severity
        'warning'
    """

    symptom: str
    severity: str
    evidence: dict[str, Any]
    fix: str
    step: int | None = None
    epoch: int | None = None
    layer: str | None = None
    message: str = ""
    source: str = "doctor"
    count: int = 1
    last_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def __str__(self) -> str:
        return f"{self.message} Fix: {self.fix}"


def make_finding(
    symptom: str,
    what: str,
    evidence: dict[str, Any],
    fix: str,
    *,
    step: int | None = None,
    epoch: int | None = None,
    layer: str | None = None,
    source: str = "doctor",
) -> Finding:
    """A Finding with its severity and a one-line message ``"<symptom> at ...: <what>."``."""
    if symptom not in JUDGED_SYMPTOMS + SANITY_SYMPTOMS:
        known = ", ".join(JUDGED_SYMPTOMS + SANITY_SYMPTOMS)
        raise ValueError(f"unknown symptom {symptom!r}; known: {known}")
    where = []
    if step is not None:
        where.append(f"step {step}")
    if epoch is not None:
        where.append(f"epoch {epoch}")
    at = f" at {', '.join(where)}" if where else ""
    return Finding(
        symptom=symptom,
        severity="error" if symptom in ERROR_SYMPTOMS else "warning",
        evidence=evidence,
        fix=fix,
        step=step,
        epoch=epoch,
        layer=layer,
        message=f"{symptom}{at}: {what}.",
        source=source,
        last_step=step,
    )


def lr_hint(lr: float | None, factor: float) -> str:
    """``" (optimizer.lr=0.001; it is 0.01)"``: the learning rate to try, or "" if unknown."""
    if lr is None or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        return ""
    return f" (optimizer.lr={lr * factor:.3g}; it is {lr:.3g})"


def fix_for(symptom: str, lr: float | None = None, *, stopped_early: bool = False) -> str:
    """The fix of ``symptom``, with the learning rate to try filled in when it is known;
    ``stopped_early``: the run already keeps its best epoch (early stopping restores it), so
    "stop early" is not advised."""
    stop_early = "" if stopped_early else ", stop early (trainer.early_stopping.enabled=true)"
    return SYMPTOMS[symptom].fix.format(
        lower=lr_hint(lr, 0.1), higher=lr_hint(lr, 10.0), stop_early=stop_early
    )


def title_of(symptom: str) -> str:
    """The symptom's title for people (its name when it is not in the table)."""
    entry = SYMPTOMS.get(symptom)
    return symptom.replace("_", " ") if entry is None else entry.title


def lr_direction(symptom: str) -> int:
    entry = SYMPTOMS.get(symptom)
    return 0 if entry is None else entry.lr


def withheld_fix(lowering: Iterable[str]) -> str:
    """The fix shown instead of "raise the learning rate" while ``lowering`` symptoms stand."""
    names = ", ".join(sorted({title_of(s) for s in lowering}))
    return (
        f"first fix {names} (a learning rate too high for stable steps); "
        "raising the learning rate is not advised while it stands"
    )


def variance_after_bias_fix() -> str:
    """The fix shown for high variance while the bias is high too (bias first, as in Ng's
    recipe): regularizing more or shrinking the network, the usual variance fixes, would
    raise the bias that the underfitting fix asks to lower."""
    return (
        "first lower the bias (underfitting): regularizing more or a smaller network "
        "would raise it; meanwhile more data or augmentation (data.augment.flip=true, "
        "data.augment.crop=4) lowers the variance without raising the bias"
    )


def advice_for(symptom: str, present: Iterable[str], fix: str) -> str:
    """``fix`` of ``symptom``, or what replaces it beside the ``present`` symptoms, so that a
    run never advises opposite things.

    While some symptom asks for a lower learning rate, one asking for a higher rate gets
    :func:`withheld_fix`: an unstable run is made stable first, and only then judged for
    speed. While one asks for more capacity (high bias), one asking for less (high
    variance) gets :func:`variance_after_bias_fix`: the bias comes first.
    """
    present = list(present)
    lowering = [s for s in present if lr_direction(s) < 0]
    if lowering and lr_direction(symptom) > 0:
        return withheld_fix(lowering)
    if _capacity(symptom) < 0 and any(_capacity(s) > 0 for s in present):
        return variance_after_bias_fix()
    return fix


def reconcile(findings: list[Any]) -> list[Any]:
    """``findings`` (objects with ``symptom`` and ``fix``) with no opposite advice: each
    finding keeps its evidence, its fix becomes :func:`advice_for` the run's symptoms.
    Returns the same list, changed in place."""
    present = [f.symptom for f in findings]
    for finding in findings:
        finding.fix = advice_for(finding.symptom, present, finding.fix)
    return findings


def _capacity(symptom: str) -> int:
    return getattr(SYMPTOMS.get(symptom), "capacity", 0)


def after_causes_fix(causes: Iterable[str], fix: str) -> str:
    """``fix`` of a slow run, after the ``causes`` (symptoms found before) that come first."""
    return f"first fix {', '.join(sorted(set(causes)))} (found above); then {fix}"


def large_updates_fix(ratio: float) -> str:
    """The fix of a slow run whose steps are already large: the kernels' median
    update/weight ratio ``ratio`` is at or above the healthy ~1e-3, so a higher learning rate
    is not what the run lacks (the fix of ``slow_convergence`` would say to raise it)."""
    return (
        f"the steps are already large (median update/weight ratio {ratio:.1e}; ~1e-3 is "
        "healthy), so do not raise the learning rate: check the initialisation, the input "
        "normalisation and the labels, and whether the model can fit the data"
    )


def unchanged_weights_fix() -> str:
    """The fix of a kernel that no step changed at all (its median update/weight ratio is
    exactly 0): it gets no gradient, or the training step does not apply it, and no learning
    rate moves it (the fixes of ``stagnant_weights`` and ``lr_too_low`` would say to raise it)."""
    return (
        "no step changes it at all, so no learning rate would: check that the training step "
        "applies the gradients to every trainable variable of the model (a custom train_step), "
        "that the layer reaches the loss (no stop_gradient) and that the units after it are "
        "not dead"
    )


def vanishing_after_dying_fix(dying_layers: Sequence[str], fix: str) -> str:
    """The vanishing-gradient ``fix`` when dead ReLU units (in ``dying_layers``) explain it."""
    return (
        f"the dead ReLU units of {', '.join(dying_layers)} pass no gradient: "
        f"fix dying_relu first; {fix}"
    )


def nan_fix(
    lr: float | None,
    recent: Sequence[float],
    stable: bool,
    stopping: bool = True,
    restoring: bool = True,
) -> str:
    """The doctor's fix of a NaN: what happens to the run, the likely cause, the nan fix.

    ``stable``: the ``recent`` losses before it were stable (a bad batch or an unsafe
    operation is likelier than divergence); ``stopping``: training stops on it;
    ``restoring``: the last finite epoch's weights are put back.
    """
    kept = (
        "the weights of the end of the last finite epoch are put back"
        if restoring
        else "the last good checkpoint holds the last finite weights"
    )
    stop = "training stops and " if stopping else ""
    if stable:
        cause = (
            f"the loss was stable just before ({', '.join(f'{v:.3g}' for v in recent)}), "
            "so a bad batch or an unsafe operation is more likely than divergence; "
        )
    else:
        cause = "the loss grew before it broke (divergence); "
    return f"{stop}{kept}; {cause}{fix_for('nan', lr)}"


def nan_advice(lr: float, step: int, clipped: bool, base_lr: float | None = None) -> list[str]:
    """What the NaN stop advises after a NaN/Inf loss, most likely cure first.

    ``lr`` is the rate in force when the loss broke, ``base_lr`` the configured one.
    """
    base = lr if base_lr is None else base_lr
    now = not math.isclose(lr, base, rel_tol=1e-6)
    advice = [fix_for("nan", base) + (f" (the rate was {lr:.3g} at that step)" if now else "")]
    if clipped:
        advice.append("gradients are already clipped: lower the learning rate first")
    if step <= 10:
        advice.append(
            "it broke in the first steps: check the inputs (data.normalize=true, no huge "
            "values) and the loss (loss.from_logits matches the model's last layer)"
        )
    elif not now:  # a constant rate: ramping up to it often avoids the blow-up
        advice.append("warm up to the rate: schedule=cosine schedule.warmup_epochs=1")
    return advice


__all__ = [
    "CURVE_SYMPTOMS",
    "ERROR_SYMPTOMS",
    "GRADIENT_FLAG_SYMPTOMS",
    "JUDGED_SYMPTOMS",
    "SANITY_SYMPTOMS",
    "TRAINING_SYMPTOMS",
    "UPDATE_RATIO_CAUSES",
    "Finding",
    "after_causes_fix",
    "advice_for",
    "large_updates_fix",
    "unchanged_weights_fix",
    "make_finding",
    "nan_advice",
    "nan_fix",
    "vanishing_after_dying_fix",
    "variance_after_bias_fix",
    "LEAKAGE_FIX",
    "SHIFT_FIX",
    "INPUT_UNUSED_FIX",
    "BATCH_MIXING_FIX",
    "LR_TOO_HIGH_FIX",
    "LR_TOO_LOW_FIX",
    "NO_DROP_FIX",
    "INIT_TOO_LARGE_FIX",
    "INIT_TOO_SMALL_FIX",
    "NO_PROBE_HINT",
    "SYMPTOMS",
    "Symptom",
    "fix_for",
    "lr_direction",
    "lr_hint",
    "reconcile",
    "title_of",
    "withheld_fix",
]
