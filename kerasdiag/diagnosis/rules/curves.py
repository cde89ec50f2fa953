"""The per-epoch loss curve after training: ``lr_too_high`` and ``lr_too_low``, and
:func:`curve_findings`, every judgement of a finished run's curves.

- :func:`loss_shape`: the curve's shape, ``rising`` or ``plateau_high`` (lr too high),
  ``linear`` (lr too low), ``ok`` or ``too_short``; a learning-rate warmup
  (:func:`warmup_epochs`, from :func:`epoch_learning_rates`) is judged apart.
- :func:`learning_rate_findings`: the findings of that shape; a healthy or high median
  update ratio (``HEALTHY_UPDATE_RATIO``, ``rules/update_ratios.py``) vetoes ``lr_too_low``.
- :func:`curve_findings`: these and the bias/variance findings
  (``rules/fitting.py``: ``overfitting``, ``underfitting``), in that order.
- Thresholds: no rate verdict before ``MIN_RATE_STEPS`` (30) optimizer steps
  (``rules/thresholds.py``, as ``slow_convergence``); ``Thresholds.min_epochs`` (4), ``rise`` (0.1), ``plateau_change`` (0.1),
  ``plateau_level`` (0.2), ``bump`` (0.02), ``linear_ratio`` (0.5), ``linear_level`` (0.5).
- Fixes: ``SYMPTOMS["lr_too_high"]`` / ``SYMPTOMS["lr_too_low"]`` in
  :mod:`kerasdiag.diagnosis.symptoms`, the one table every fix is written in.

Example:
    >>> curve_findings({"loss": [2.3, 2.5, 2.8, 3.1, 3.6]})[0].symptom
    'lr_too_high'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kerasdiag.diagnosis.rules.fitting import bias_variance_findings
from kerasdiag.diagnosis.rules.thresholds import MIN_RATE_STEPS, Thresholds
from kerasdiag.diagnosis.rules.update_ratios import HEALTHY_UPDATE_RATIO
from kerasdiag.diagnosis.symptoms import Finding, fix_for, make_finding

# Where a run's per-epoch learning rate is logged: metrics.csv's column, and the key
# LearningRateMonitor (or the doctor, when nothing logged it) adds to the epoch logs.
LEARNING_RATE_KEYS = ("learning_rate",)


def epoch_learning_rates(history: Mapping[str, Sequence[float]]) -> list[float] | None:
    """The learning rate of each epoch's first step from a per-epoch ``history``, if it
    holds one."""
    for key in LEARNING_RATE_KEYS:
        if history.get(key) is not None:
            return list(history[key])
    return None


def warmup_epochs(learning_rates: Sequence[float] | None) -> int:
    """How many leading epochs trained while the learning rate was still rising to the run's
    peak (a warmup schedule's first epochs), from the rate each epoch's first step used (as
    :class:`~kerasdiag.callbacks.LearningRateMonitor` logs it).

    The epochs that start below the peak, as long as the rate rises from one to the next;
    0 when the rate never rises (constant, decaying) or is not known.
    """
    rates = [float(r) for r in learning_rates or [] if r is not None]
    if len(rates) < 2 or not all(math.isfinite(r) for r in rates):
        return 0
    peak = max(rates)
    first_peak = next(i for i, r in enumerate(rates) if r >= peak * (1 - 1e-6))
    rising = all(rates[i] <= rates[i + 1] for i in range(first_peak))
    return first_peak if rising else 0


def loss_shape(
    losses: Sequence[float],
    initial_loss: float | None,
    thresholds: Thresholds,
    learning_rates: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The shape of a per-epoch training loss curve.

    Returns ``{"shape": s, ...numbers}`` where ``s`` is ``"rising"`` (lr far too high),
    ``"plateau_high"`` (fast drop then a bumpy high plateau: lr too high), ``"linear"``
    (near-linear decay far from converged: lr too low), ``"ok"``, or ``"too_short"`` when
    fewer than ``min_epochs`` finite epochs exist. With ``learning_rates`` (the rate of each
    epoch's first step), a warmup (:func:`warmup_epochs`) is judged apart: a loss that rises
    while the rate climbs says the peak is too high (the whole curve is read for that), but
    one that falls slowly then says nothing about the peak, so the rest is read from the
    first epoch after the warmup (``warmup_epochs`` says how many were left out).
    """
    whole = _curve_shape(losses, initial_loss, thresholds)
    warmup = warmup_epochs(learning_rates)
    if not warmup or whole["shape"] in ("rising", "plateau_high"):
        return {**whole, "warmup_epochs": 0}
    return {**_curve_shape(losses[warmup:], initial_loss, thresholds), "warmup_epochs": warmup}


def _curve_shape(
    losses: Sequence[float], initial_loss: float | None, thresholds: Thresholds
) -> dict[str, Any]:
    """:func:`loss_shape` of ``losses`` as they are (no warmup left out)."""
    th = thresholds
    loss = np.asarray([v for v in losses if math.isfinite(v)], dtype=np.float64)
    n = loss.size
    if n < th.min_epochs:
        return {"shape": "too_short", "epochs": int(n)}
    scale = initial_loss if initial_loss and math.isfinite(initial_loss) else float(loss[0])
    mid = (n - 1) // 2
    first_drop = float(loss[0] - loss[mid])
    second_drop = float(loss[mid] - loss[-1])
    late_gain = float(loss[: mid + 1].min() - loss[mid:].min())
    # Rises anywhere after the first epoch's drop: a capacity-limited model flattens smoothly.
    late_bump = float(np.max(np.diff(loss[1:]), initial=0.0))
    numbers = {
        "initial_loss": scale,
        "first_epoch_loss": float(loss[0]),
        "final_loss": float(loss[-1]),
        "min_loss": float(loss.min()),
        "first_half_drop": first_drop,
        "second_half_drop": second_drop,
        "epochs": int(n),
    }
    if loss[-1] > loss[0] and loss[-1] > (1 + th.rise) * loss.min():
        return {"shape": "rising", **numbers}
    if (
        late_gain < th.plateau_change * scale
        and loss[-1] > th.plateau_level * scale
        and late_bump > th.bump * scale
    ):
        return {"shape": "plateau_high", "largest_late_rise": late_bump, **numbers}
    # Per-epoch rates of the two halves (they differ in length when n is even); fewer than
    # three epochs (min_epochs lowered) have no two halves to compare.
    if mid == 0:
        return {"shape": "ok", **numbers}
    first_rate, second_rate = first_drop / mid, second_drop / (n - 1 - mid)
    if (
        first_rate > 0
        and second_rate > th.linear_ratio * first_rate
        and loss[-1] > th.linear_level * scale
    ):
        return {"shape": "linear", "drop_ratio": second_rate / first_rate, **numbers}
    return {"shape": "ok", **numbers}


def learning_rate_findings(
    history: Mapping[str, Sequence[float]],
    thresholds: Thresholds,
    at: Mapping[str, Any],
    *,
    initial_loss: float | None = None,
    update_ratio: float | None = None,
    lr: float | None = None,
) -> list[Finding]:
    """``lr_too_high`` / ``lr_too_low`` from the per-epoch training loss's shape
    (:func:`loss_shape`): the part of :func:`curve_findings` that judges the learning rate
    (its arguments are described there); ``at``: where the finding is recorded (``step``,
    ``epoch``, ``source``). With ``at["step"]`` (the final optimizer step, 0-based) below
    ``MIN_RATE_STEPS`` steps there is no verdict on the rate: a curve of 4 epochs of 2 steps
    each is mostly minibatch noise, whatever its shape."""
    step = at.get("step")
    if step is not None and step + 1 < MIN_RATE_STEPS:
        return []
    losses = list(history.get("loss") or [])
    shape = loss_shape(losses, initial_loss, thresholds, epoch_learning_rates(history))
    ratio_note = {} if update_ratio is None else {"median_update_ratio": update_ratio}
    warmup = shape["warmup_epochs"]
    # The epochs the shape was judged on: after a warmup, from the first epoch at the peak.
    first = "the first epoch" if not warmup else f"epoch {warmup + 1}, the first after the warmup"
    judged = "training" if not warmup else f"training after the {warmup}-epoch warmup"
    if shape["shape"] == "rising":
        return [
            make_finding(
                "lr_too_high",
                f"the training loss rose to {shape['final_loss']:.4g} from "
                f"{shape['first_epoch_loss']:.4g} in {first} (a rising loss: the "
                f"learning rate is far too high)",
                {**shape, **ratio_note},
                fix_for("lr_too_high", lr),
                **at,
            )
        ]
    if shape["shape"] == "plateau_high":
        return [
            make_finding(
                "lr_too_high",
                f"the loss dropped fast, then stalled on a bumpy plateau at "
                f"{shape['final_loss']:.4g} ({shape['final_loss'] / shape['initial_loss']:.0%} "
                f"of the initial {shape['initial_loss']:.4g})",
                {**shape, **ratio_note},
                fix_for("lr_too_high", lr),
                **at,
            )
        ]
    if shape["shape"] == "linear" and (update_ratio is None or update_ratio < HEALTHY_UPDATE_RATIO):
        return [
            make_finding(
                "lr_too_low",
                f"the loss decays almost linearly (in the second half of {judged} it fell "
                f"{shape['drop_ratio']:.0%} as fast per epoch as in the first) and is still at "
                f"{shape['final_loss']:.4g}, {shape['final_loss'] / shape['initial_loss']:.0%} "
                f"of the initial {shape['initial_loss']:.4g}",
                {**shape, **ratio_note},
                fix_for("lr_too_low", lr),
                **at,
            )
        ]
    return []


def curve_findings(
    history: Mapping[str, Sequence[float]],
    *,
    initial_loss: float | None = None,
    update_ratio: float | None = None,
    test_accuracy: float | None = None,
    bayes_error: float | None = None,
    lr: float | None = None,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    step: int | None = None,
    weights_epoch: int | None = None,
    kept_train_accuracy: float | None = None,
    stopped_early: bool = False,
    train_examples: int | None = None,
    dev_examples: int | None = None,
) -> list[Finding]:
    """lr_too_high / lr_too_low / overfitting / underfitting from per-epoch curves.

    The loss curve's rules are :func:`learning_rate_findings` (here), the bias/variance rules
    :func:`~kerasdiag.diagnosis.rules.fitting.bias_variance_findings`.

    Args:
        history: per-epoch lists, ``loss`` and optionally ``accuracy``, ``val_loss``,
            ``val_accuracy`` (Keras' ``History.history`` or metrics.csv columns).
        initial_loss: the loss before training (scale of the shape tests); None = the first
            epoch's loss.
        update_ratio: median kernel update/weight ratio of the run, if measured: a
            healthy or high ratio vetoes "learning rate too low".
        test_accuracy: shown in the bias/variance evidence.
        bayes_error: human/Bayes error for the bias/variance table (None = 0).
        lr: the learning rate, to say which value to try.
        thresholds: overrides of :class:`Thresholds`.
        step: the final optimizer step, recorded in the findings.
        weights_epoch: the epoch (from 1) whose weights the model kept, e.g. early
            stopping's best: the bias/variance table is of that epoch (see
            :func:`~kerasdiag.diagnosis.rules.fitting.accuracies_at`).
        kept_train_accuracy: the kept weights' training accuracy in inference mode, the
            training side of that epoch's table (see
            :func:`~kerasdiag.diagnosis.rules.fitting.accuracies_at`).
        stopped_early: the run keeps its best epoch already (early stopping restores it):
            the overfitting fix does not advise stopping early.
        train_examples, dev_examples: how many examples the training and validation
            accuracies were measured on: a bias or variance within their noise is
            inconclusive, not a finding (None: the rates are taken as exact).
    """
    th = Thresholds.of(thresholds)
    epochs = len(list(history.get("loss") or []))
    at = {"step": step, "epoch": epochs or None, "source": "curves"}
    return [
        *learning_rate_findings(
            history, th, at, initial_loss=initial_loss, update_ratio=update_ratio, lr=lr
        ),
        *bias_variance_findings(
            history,
            th,
            at,
            test_accuracy=test_accuracy,
            bayes_error=bayes_error,
            lr=lr,
            weights_epoch=weights_epoch,
            kept_train_accuracy=kept_train_accuracy,
            stopped_early=stopped_early,
            train_examples=train_examples,
            dev_examples=dev_examples,
        ),
    ]
