"""Named symptoms with concrete fixes, from the numbers a run already produced.

:func:`diagnose` reads a finished run directory and writes ``diagnosis.json``: a list of
findings, each a named symptom with its severity, the numbers that show it (evidence) and
what to change (fix). It judges

- the **loss curve's shape**: rising = learning rate far too high; a fast drop then a
  bumpy plateau at a high loss = too high; a near-linear decay still far from converged =
  too low (vetoed when the measured update/weight ratios are healthy);
- the **train/validation gap** and the **bias/variance table**: training error
  against the optional human/Bayes error (config ``bayes_error``, 0 when unknown) is the
  avoidable bias, validation minus training error the variance. High bias -> bigger network
  or train longer (``underfitting``); high variance -> more data or regularization
  (``overfitting``);
- and it carries over what :class:`~kerasdiag.callbacks.TrainingDoctor` saw during training
  (``doctor.json``) and a NaN stop record (``nan.json``).

Where each part lives: the symptoms, their fixes and :class:`Finding` in
:mod:`kerasdiag.diagnosis.symptoms`; every rule and threshold (:class:`Thresholds`, documented there)
in :mod:`kerasdiag.diagnosis.rules`, shared with the doctor at the end of ``fit``, so a run
judged live and a run judged afterwards get the same verdicts; the run directory's files in
:class:`kerasdiag.core.rundir.RunFiles`. This module reads a run and applies the rules. It
imports no TensorFlow.

Example:
    >>> from kerasdiag import diagnose
    >>> for f in diagnose("outputs/digits_softmax/2026-01-01_00-00-00-000000"):  # doctest: +SKIP
    ...     print(f.symptom, f.severity, f.fix)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerasdiag.core.faults import kill_point
from kerasdiag.core.io import write_json_atomic
from kerasdiag.core.rundir import RunFiles, RunLayout
from kerasdiag.diagnosis.advice import terms_for_run
from kerasdiag.diagnosis.rules import (
    HEALTHY_UPDATE_RATIO,
    RUN_RATIO_FROM_STEP,
    TRAIN_INFERENCE_ACCURACY,
    Thresholds,
    accuracies_at,
    bias_variance,
    curve_findings,
    epoch_learning_rates,
    loss_shape,
    median_update_ratio,
    oscillation_index,
    rejudge_slow,
)
from kerasdiag.diagnosis.symptoms import (
    CURVE_SYMPTOMS,
    SANITY_SYMPTOMS,
    TRAINING_SYMPTOMS,
    Finding,
    fix_for,
    lr_hint,
    make_finding,
    reconcile,
)

# What the doctor and diagnose() name: the names ``monitors.doctor_stop_on`` may list.
SYMPTOMS = TRAINING_SYMPTOMS + CURVE_SYMPTOMS


# --- a run directory --------------------------------------------------------------------------


def diagnose(
    run_dir: str | os.PathLike,
    bayes_error: float | None = None,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    write: bool = True,
) -> list[Finding]:
    """Diagnose a finished (or stopped) run directory; write ``diagnosis.json``.

    Reads whatever exists of ``metrics.csv``, ``config.yaml`` (``bayes_error``,
    ``monitors.doctor_thresholds``), ``doctor.json`` (findings seen during training, the
    initial loss), ``nan.json`` (a NaN stop), ``update_ratios.csv``, ``sanity.json`` (the
    measured initial loss) and ``test_metrics.json``; the learning rate the advice starts
    from is :func:`run_learning_rate`.

    Args:
        run_dir: the run directory.
        bayes_error: human/Bayes error (0..1); None = the config's ``bayes_error``, else 0.
        thresholds: overrides of :class:`Thresholds`; None = the config's, else the defaults.
        write: write ``diagnosis.json`` (a list of findings, errors first).

    Returns:
        The findings, errors first, then in the order they were seen.
    """
    run = RunFiles(run_dir)
    cfg = run.config()
    if bayes_error is None:
        bayes_error = _get(cfg, "bayes_error")
    if thresholds is None:
        thresholds = _get(cfg, "monitors", "doctor_thresholds") or None
    th = Thresholds.of(thresholds)

    doctor = run.json(RunLayout.DOCTOR) or {}
    findings = [
        Finding.from_dict(d)
        for d in doctor.get("findings", [])
        if d.get("symptom") in TRAINING_SYMPTOMS
    ]
    nan_record = run.json(RunLayout.NAN)
    if nan_record and not any(f.symptom == "nan" for f in findings):
        findings.append(nan_stop_finding(nan_record))
    findings += sanity_findings(run.json(RunLayout.SANITY) or [])

    # The run's median kernel update ratio: what every learning-rate rule below weighs.
    ratio = median_update_ratio(
        run.csv_rows(RunLayout.UPDATE_RATIOS), from_step=RUN_RATIO_FROM_STEP
    )
    history = run.history()
    lr = run_learning_rate(run, history, nan_record)
    for finding in findings:
        if finding.symptom == "slow_convergence":
            rejudge_slow(finding, ratio, lr)
    if history.get("loss"):
        initial = doctor.get("initial_loss") or run.sanity_initial_loss()
        test = run.json(RunLayout.TEST_METRICS) or {}
        findings += curve_findings(
            history,
            initial_loss=initial,
            update_ratio=ratio,
            test_accuracy=test.get("accuracy"),
            weights_epoch=test.get("weights_epoch"),
            kept_train_accuracy=test.get("train_accuracy"),
            bayes_error=bayes_error,
            lr=lr,
            thresholds=th,
            step=final_step(doctor),
            stopped_early=restores_best_epoch(cfg),
            **measured_sizes(run.json(RunLayout.DATA), test),
        )
    findings.sort(key=lambda f: f.severity != "error")
    reconcile(findings)
    terms = terms_for_run(cfg)  # a recipe's config keys, or Keras for a user's own fit
    for finding in findings:
        finding.fix = terms.phrase(finding.fix)
    kill_point("diagnosis-judged")  # a test's fault injection; inert otherwise
    if write:
        write_json_atomic(Path(run_dir) / RunLayout.DIAGNOSIS, [f.to_dict() for f in findings])
    return findings


def final_step(doctor: Mapping[str, Any]) -> int | None:
    """The last optimizer step the doctor recorded (``doctor.json``'s step losses keep the
    last one however they are thinned): a learning-rate verdict needs enough steps. None
    when the run has no doctor record."""
    points = doctor.get("step_losses") or []
    return int(points[-1][0]) if points else None


def measured_sizes(data: Mapping[str, Any] | None, test: Mapping[str, Any]) -> dict[str, Any]:
    """How many examples the bias/variance table's accuracies were measured on: the kept
    weights' training sample (``test_metrics.json``) or the training split, and the
    validation split (``data.json``); None where the run does not say."""
    data = data or {}
    train = test.get("train_examples") if test.get("train_accuracy") is not None else None
    return {"train_examples": train or data.get("train"), "dev_examples": data.get("val")}


def run_learning_rate(
    run: RunFiles,
    history: Mapping[str, Sequence[float]] | None = None,
    nan_record: Mapping[str, Any] | None = None,
) -> float | None:
    """The learning rate a run trained with, as its advice refers to it; never ``"auto"``.

    The run's own record first: the highest rate its epochs started with (metrics.csv's
    ``learning_rate``, the LearningRateMonitor's record; under a schedule, what
    ``optimizer.lr`` set: a warmup's target, a decay's start), as the doctor reads it
    during training; then the rate of a NaN stop's step (``nan.json``), for a run stopped
    before its first epoch ended. Without them, ``optimizer.lr`` from ``config.yaml`` when
    it is a number, and for ``optimizer.lr=auto`` the range test's suggestion that resolved
    it (``lr_finder.json``). None when nothing says.

    Example:
        >>> run_learning_rate(RunFiles("outputs/digits_softmax/2026-01-01_00-00-00-000000"))  # doctest: +SKIP
        0.001
    """
    history = run.history() if history is None else history
    rates = [r for r in epoch_learning_rates(history) or [] if _number(r) is not None]
    if rates:
        return float(max(rates))
    nan_record = run.json(RunLayout.NAN) if nan_record is None else nan_record
    for value in (
        _get(nan_record, "learning_rate"),
        _get(run.config(), "optimizer", "lr"),
        _get(run.json(RunLayout.LR_FINDER), "suggestion"),
    ):
        if _number(value) is not None:
            return _number(value)
    return None


def sanity_findings(stages: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """One ``failed_sanity_check`` finding per failed stage of ``sanity.json``; a stage that
    is ``inconclusive`` (its examples could not decide) or skipped is no finding.

    A stage that names its own fix (the input baseline, batch independence, the data checks,
    the range test) gives that fix; the others get the general one (read the stage's
    message).
    """
    findings = []
    for stage in stages:
        if stage.get("status") != "fail":
            continue
        said, own_fix = str(stage.get("message") or ""), str(stage.get("fix") or "")
        findings.append(
            make_finding(
                "failed_sanity_check",
                f"the {stage.get('name')} check failed before training"
                + (f": {said.rstrip('.')}" if said else ""),
                {
                    "stage": stage.get("name"),
                    "value": stage.get("value"),
                    "expected": stage.get("expected"),
                },
                own_fix.rstrip(".") or fix_for("failed_sanity_check"),
                source="sanity",
            )
        )
    return findings


def failed_stages(stages: Sequence[Mapping[str, Any]]) -> list[str]:
    """The names of the failed stages in ``sanity.json``'s list."""
    return [str(s.get("name")) for s in stages if s.get("status") == "fail"]


def confusion_summary(
    y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]
) -> dict[str, Any]:
    """Confusion matrix (rows: true class, columns: predicted) and per-class accuracy.

    Per-class accuracy is the recall of each class (the diagonal over the row's total);
    None for a class with no example.
    """
    n = len(class_names)
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    totals = matrix.sum(axis=1)
    per_class = [int(matrix[i, i]) / int(totals[i]) if totals[i] else None for i in range(n)]
    return {
        "class_names": [str(c) for c in class_names],
        "matrix": matrix.tolist(),
        "per_class_accuracy": per_class,
        "accuracy": float(np.trace(matrix) / max(int(matrix.sum()), 1)),
    }


def nan_stop_finding(record: Mapping[str, Any]) -> Finding:
    """A ``nan`` finding from the record NaNStop leaves in ``nan.json``."""
    advice = record.get("advice") or []
    fix = (
        "; ".join(advice) if advice else fix_for("exploding_gradients", record.get("learning_rate"))
    )
    return make_finding(
        "nan",
        f"the training loss became {record.get('loss')} in batch {record.get('batch')} "
        f"(training stopped; the last {record.get('completed_epochs')} complete epochs and "
        f"the best checkpoint are kept)",
        {k: v for k, v in record.items() if k not in ("advice", "symptom")},  # advice: the fix
        fix,
        step=record.get("global_step"),
        epoch=record.get("epoch"),
        source="nan_stop",
    )


def restores_best_epoch(cfg: Any) -> bool:
    """Whether the run's early stopping keeps its best epoch (``config.yaml``): advising it to
    stop early would change nothing."""
    early = _get(cfg, "trainer", "early_stopping") or {}
    return bool(_get(early, "enabled") and _get(early, "restore_best_weights"))


def _number(value: Any) -> float | None:
    """``value`` as a finite positive float, or None (a string such as "auto", a NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


def _get(container: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(container, Mapping) or key not in container:
            return None
        container = container[key]
    return container


__all__ = [
    "CURVE_SYMPTOMS",
    "RunFiles",
    "SANITY_SYMPTOMS",
    "TRAIN_INFERENCE_ACCURACY",
    "median_update_ratio",
    "HEALTHY_UPDATE_RATIO",
    "SYMPTOMS",
    "TRAINING_SYMPTOMS",
    "Finding",
    "Thresholds",
    "accuracies_at",
    "bias_variance",
    "confusion_summary",
    "failed_stages",
    "restores_best_epoch",
    "run_learning_rate",
    "fix_for",
    "lr_hint",
    "sanity_findings",
    "curve_findings",
    "diagnose",
    "loss_shape",
    "make_finding",
    "oscillation_index",
]
