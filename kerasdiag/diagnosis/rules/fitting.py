"""Training against validation error: ``overfitting`` (high variance) and ``underfitting``
(high bias), after training.

- :func:`accuracies_at`: the training and validation accuracy of the epoch whose weights the
  model kept; :func:`bias_variance`: the bias/variance table with its verdict and fixes;
  :func:`val_loss_rise`: a validation loss that rose while the training loss fell.
- :func:`bias_variance_findings`: the rules, run by
  :func:`~kerasdiag.diagnosis.rules.curves.curve_findings` with the loss-curve rules.
- Thresholds: ``Thresholds.variance`` (validation minus training error above 0.05),
  ``Thresholds.val_loss_rise`` (final validation loss 20% above its minimum) and
  ``Thresholds.bias`` (training minus Bayes error above 0.05).
- Fixes: ``SYMPTOMS["overfitting"]`` / ``SYMPTOMS["underfitting"]`` in
  :mod:`kerasdiag.diagnosis.symptoms` (the one table every fix is written in); with both,
  :func:`~kerasdiag.diagnosis.symptoms.advice_for` puts the bias first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kerasdiag.diagnosis.rules.common import finite, pick
from kerasdiag.diagnosis.rules.thresholds import Thresholds
from kerasdiag.diagnosis.symptoms import Finding, advice_for, fix_for, make_finding

MOST_EXAMPLES = 10_000_000  # a gap that needs more examples than this to decide: say none would
# With high bias, the validation-training gap must be at least this share of the training
# error to count as high variance as well (see bias_variance).
VARIANCE_SHARE_AT_HIGH_BIAS = 0.25

# The epoch logs' accuracy of the training split scored in inference mode (TrainingDoctor).
TRAIN_INFERENCE_ACCURACY = "train_accuracy_inference"


def error_se(error: float, examples: int | None) -> float:
    """The standard error of an error rate measured on ``examples`` examples (0 when the
    count is unknown: the rate is then taken as exact). Agresti-Coull's adjusted rate keeps it
    above 0 for an error of 0 or 1 on a small set, where the plain binomial one claims
    certainty."""
    if not examples or examples <= 0:
        return 0.0
    n = float(examples) + 4.0
    p = (error * examples + 2.0) / n
    return math.sqrt(p * (1.0 - p) / n)


def examples_to_decide(
    gap: float, threshold: float, z: float, error: float, fixed_se: float
) -> int | None:
    """How many examples measuring ``error`` would make ``gap`` clear ``threshold`` by ``z``
    standard errors (the other side's ``fixed_se`` included); None when no number would."""
    room = (gap - threshold) / z
    spare = room * room - fixed_se * fixed_se
    if gap <= threshold or spare <= 0:
        return None
    needed = math.ceil(max(error * (1.0 - error), 0.01) / spare)
    return needed if needed <= MOST_EXAMPLES else None


def bias_variance(
    train_accuracy: float | None,
    dev_accuracy: float | None,
    test_accuracy: float | None = None,
    bayes_error: float | None = None,
    thresholds: Thresholds | None = None,
    stopped_early: bool = False,
    *,
    train_examples: int | None = None,
    dev_examples: int | None = None,
) -> dict[str, Any] | None:
    """The bias/variance table: errors, avoidable bias, variance and the verdict with its fixes.

    None when the training or validation accuracy is unknown. ``bayes_error`` None counts as
    0 (``bayes_error_assumed`` says so). With high bias, the variance is high only when it is
    also at least ``VARIANCE_SHARE_AT_HIGH_BIAS`` of the training error: a near-chance model's
    gap is not overfitting.

    ``train_examples`` and ``dev_examples``: how many examples the two accuracies were
    measured on. With them a gap is high only when it clears its threshold by
    ``Thresholds.confidence_z`` standard errors (validation error measured on 24 images
    cannot prove a 20-point gap); a gap over its threshold that does not is listed in
    ``inconclusive`` with the number of examples that would decide, and gives no verdict.
    Unknown counts take the rates as exact.
    """
    th = Thresholds.of(thresholds)
    if not finite(train_accuracy) or not finite(dev_accuracy):
        return None
    bayes = 0.0 if bayes_error is None else float(bayes_error)
    train_error, dev_error = 1.0 - float(train_accuracy), 1.0 - float(dev_accuracy)
    avoidable_bias, variance = train_error - bayes, dev_error - train_error
    z = th.confidence_z
    train_se, dev_se = error_se(train_error, train_examples), error_se(dev_error, dev_examples)
    variance_se = math.hypot(train_se, dev_se)
    high_bias = avoidable_bias - z * train_se > th.bias
    high_variance = variance - z * variance_se > th.variance
    near_chance = avoidable_bias > th.bias and variance < VARIANCE_SHARE_AT_HIGH_BIAS * train_error
    if near_chance:
        # A model that has barely learned (84% training error, near chance for 10 classes)
        # differs on other examples by which classes it happens to guess: a 9.9-point gap
        # there is not overfitting. With high bias, variance must be a clear share of the
        # training error (15% -> 30%, 25% -> 40% are both; 84% -> 94% is bias alone).
        high_variance = False
    inconclusive = []
    if avoidable_bias > th.bias and not high_bias:
        need = examples_to_decide(avoidable_bias, th.bias, z, train_error, 0.0)
        inconclusive.append(
            f"avoidable bias {avoidable_bias:.1%} > {th.bias:.0%} is within the noise of "
            f"{train_examples} training examples (+-{z * train_se:.1%})"
            + (f"; about {need} would decide" if need else "")
        )
    if variance > th.variance and not high_variance and not near_chance:
        need = examples_to_decide(variance, th.variance, z, dev_error, train_se)
        inconclusive.append(
            f"variance {variance:.1%} > {th.variance:.0%} is within the noise of "
            f"{dev_examples} validation examples (+-{z * variance_se:.1%})"
            + (f"; about {need} would decide" if need else "; more training examples would")
        )
    verdict = {
        (False, False): "low bias, low variance",
        (True, False): "high bias",
        (False, True): "high variance",
        (True, True): "high bias and high variance",
    }[(high_bias, high_variance)]
    if inconclusive:
        verdict = (
            "inconclusive: "
            if verdict == "low bias, low variance"
            else f"{verdict}; inconclusive: "
        ) + "; ".join(inconclusive)
    # The symptoms' fixes, from the one table, without opposite advice (as a run's findings).
    present = [
        s for s, high in (("underfitting", high_bias), ("overfitting", high_variance)) if high
    ]
    fixes = [advice_for(s, present, fix_for(s, stopped_early=stopped_early)) for s in present]
    return {
        "train_error": train_error,
        "dev_error": dev_error,
        "test_error": None if not finite(test_accuracy) else 1.0 - float(test_accuracy),
        "bayes_error": bayes,
        "bayes_error_assumed": bayes_error is None,
        "avoidable_bias": avoidable_bias,
        "variance": variance,
        "high_bias": high_bias,
        "high_variance": high_variance,
        "verdict": verdict,
        "fixes": fixes,
        "inconclusive": inconclusive,
    }


def accuracies_at(
    history: Mapping[str, Sequence[float]],
    weights_epoch: int | None = None,
    kept_train_accuracy: float | None = None,
) -> tuple[float | None, float | None, int | None]:
    """(training accuracy, validation accuracy, epoch) for the bias/variance table.

    Of the epoch whose weights the model kept (``weights_epoch``, counted from 1 as
    metrics.csv does: early stopping's best epoch when it restores that), so that the table
    and the test score describe the same model; without it, or when that epoch lacks either
    accuracy, of the last epoch that has both. (None, None, None) when none has.

    ``kept_train_accuracy``: the kept weights' accuracy on training examples scored in
    inference mode, as the validation split is (``test_metrics.json``'s
    ``train_accuracy``); it is the training accuracy of the kept epoch's row.
    """
    # The training split scored in inference mode, as validation is, when it was measured
    # (TrainingDoctor): fit's own training accuracy is a training-mode running mean.
    train = history.get(TRAIN_INFERENCE_ACCURACY) or history.get("accuracy") or []
    val = history.get("val_accuracy") or []
    numbers = history.get("epoch") or range(1, len(train) + 1)
    both = [
        (int(e), float(t), float(v))
        for e, t, v in zip(numbers, train, val, strict=False)
        if finite(t) and finite(v)
    ]
    if not both:
        return None, None, None
    epoch, t, v = next((row for row in both if row[0] == weights_epoch), both[-1])
    if epoch == weights_epoch and finite(kept_train_accuracy):
        t = float(kept_train_accuracy)
    return t, v, epoch


def val_loss_rise(history: Mapping[str, Sequence[float]], th: Thresholds) -> dict | None:
    """The validation loss's rise when it ended ``val_loss_rise`` above its minimum while the
    training loss kept falling (overfitting), else None."""
    val = np.asarray(history.get("val_loss") or [], dtype=np.float64)
    train = np.asarray(history.get("loss") or [], dtype=np.float64)
    if val.size < 2 or train.size != val.size or not np.isfinite(val).all():
        return None
    best = int(np.argmin(val))
    if val[-1] > (1 + th.val_loss_rise) * val[best] and train[-1] < train[best]:
        return {
            "min_val_loss": float(val[best]),
            "min_val_loss_epoch": best + 1,
            "final_val_loss": float(val[-1]),
        }
    return None


def bias_variance_findings(
    history: Mapping[str, Sequence[float]],
    thresholds: Thresholds,
    at: Mapping[str, Any],
    *,
    test_accuracy: float | None = None,
    bayes_error: float | None = None,
    lr: float | None = None,
    weights_epoch: int | None = None,
    kept_train_accuracy: float | None = None,
    stopped_early: bool = False,
    train_examples: int | None = None,
    dev_examples: int | None = None,
) -> list[Finding]:
    """``overfitting`` / ``underfitting`` from per-epoch curves: the part of
    :func:`~kerasdiag.diagnosis.rules.curves.curve_findings` that judges the bias/variance
    table and the validation loss (its arguments are described there).

    ``at``: where the findings are recorded (``step``, ``epoch``, ``source``); a finding read
    from the table is recorded at the table's epoch, the one whose weights the model kept.
    """
    th = thresholds
    findings: list[Finding] = []
    train_acc, val_acc, table_epoch = accuracies_at(history, weights_epoch, kept_train_accuracy)
    table = bias_variance(
        train_acc,
        val_acc,
        test_accuracy,
        bayes_error,
        th,
        stopped_early,
        train_examples=train_examples,
        dev_examples=dev_examples,
    )
    rise = val_loss_rise(history, th)
    if (table and table["high_variance"]) or rise:
        evidence = dict(rise or {})
        if table:
            evidence.update(pick(table, "train_error", "dev_error", "test_error", "variance"))
            evidence["epoch"] = table_epoch
            evidence["variance_threshold"] = th.variance
        parts = []
        if table and table["high_variance"]:
            parts.append(
                f"validation error {table['dev_error']:.1%} vs training error "
                f"{table['train_error']:.1%} (variance {table['variance']:.1%} > "
                f"{th.variance:.0%})"
            )
        if rise:
            parts.append(
                f"validation loss rose to {rise['final_val_loss']:.4g} from its minimum "
                f"{rise['min_val_loss']:.4g} (epoch {rise['min_val_loss_epoch']}) while the "
                f"training loss kept falling"
            )
        # The epoch the numbers are of: the kept weights' table, else the last epoch's curve.
        where = {**at, "epoch": table_epoch} if table and table["high_variance"] else at
        findings.append(
            make_finding(
                "overfitting",
                "; ".join(parts),
                evidence,
                fix_for("overfitting", stopped_early=stopped_early),
                **where,
            )
        )
    if table and table["high_bias"]:
        bayes = "assumed 0" if table["bayes_error_assumed"] else f"{table['bayes_error']:.1%}"
        findings.append(
            make_finding(
                "underfitting",
                f"training error {table['train_error']:.1%} against a Bayes error of {bayes} "
                f"(avoidable bias {table['avoidable_bias']:.1%} > {th.bias:.0%}); validation "
                f"error {table['dev_error']:.1%}",
                {
                    **pick(
                        table,
                        "train_error",
                        "dev_error",
                        "test_error",
                        "bayes_error",
                        "bayes_error_assumed",
                        "avoidable_bias",
                    ),
                    "bias_threshold": th.bias,
                },
                fix_for("underfitting", lr),
                **{**at, "epoch": table_epoch},
            )
        )
    return findings
