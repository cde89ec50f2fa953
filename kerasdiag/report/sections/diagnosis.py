"""The verdict first: the findings with their fixes, and the bias/variance table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from kerasdiag.core.rundir import RunLayout
from kerasdiag.diagnosis import (
    Finding,
    accuracies_at,
    bias_variance,
    diagnose,
    restores_best_epoch,
)
from kerasdiag.diagnosis.advice import terms_for_run
from kerasdiag.diagnosis.run_dir import measured_sizes
from kerasdiag.report.blocks import Badge, Block, absent, fmt, note, paragraph, pct, table_block
from kerasdiag.report.context import RunContext


def findings(run: RunContext) -> tuple[list[Finding], bool]:
    """The findings, and whether diagnose() had to run now (it writes diagnosis.json)."""
    stored = run.files.json(RunLayout.DIAGNOSIS)
    if stored is not None:
        return [Finding.from_dict(d) for d in stored], False
    return diagnose(run.path, bayes_error=run.bayes_error), True


def diagnosis(run: RunContext) -> list[Block]:
    """Every finding (symptom, evidence, fix), and what the doctor's probes cost."""
    found, computed = findings(run)
    out = [note(f"{RunLayout.DIAGNOSIS} was missing: diagnosed now.")] if computed else []
    if not found:
        out.append(
            paragraph(
                Badge("ok", "no symptoms"),
                " Neither the doctor during training nor the curves afterwards named a problem.",
            )
        )
    else:
        out.append({"kind": "findings", "rows": [_finding_row(f) for f in found]})
    doctor = run.doctor or {}
    if doctor.get("train_seconds"):
        seconds, total = doctor.get("probe_seconds", 0.0), doctor["train_seconds"]
        out.append(
            note(
                f"TrainingDoctor: its own probes ({doctor.get('probes', 0)}) and "
                f"checks of the weights took {seconds:.2f} s of {total:.1f} s of training "
                f"({seconds / total:.1%})."
            )
        )
    return out


def bias_variance_table(run: RunContext) -> list[Block]:
    """Bayes, training, dev and test error of the kept weights, and what to do about them."""
    test_metrics = run.test or {}
    kept = run.kept_epoch
    kept_train = test_metrics.get("train_accuracy")
    train, dev, epoch = accuracies_at(run.history, kept, kept_train)
    table = bias_variance(
        train,
        dev,
        test_metrics.get("accuracy"),
        run.bayes_error,
        _thresholds_of(run.config),
        stopped_early=restores_best_epoch(run.config),
        **measured_sizes(run.data, test_metrics),
    )
    if table is None and _task(run) == "regression":
        return _regression_errors(run)
    if table is None:
        return [absent("no training and validation accuracy in metrics.csv")]
    bayes_cell = (
        "0 (assumed; set bayes_error=... in the config)"
        if table["bayes_error_assumed"]
        else pct(table["bayes_error"])
    )
    rows = [
        ("human / Bayes error", bayes_cell),
        ("training error", pct(table["train_error"])),
        ("dev (validation) error", pct(table["dev_error"])),
        ("test error", pct(table["test_error"])),
        ("avoidable bias (train - Bayes)", pct(table["avoidable_bias"])),
        ("variance (dev - train)", pct(table["variance"])),
        ("verdict", table["verdict"]),
        # in the terms the diagnosis uses for this run (its model's keys, its data's kind)
        (
            "what to do",
            terms_for_run(run.config).phrase("; ".join(table["fixes"])) or _nothing_to_do(table),
        ),  # fmt: skip
    ]
    which = (
        "the weights the model kept, whose test score is shown"
        if epoch == kept
        else "the last epoch with both accuracies"
    )
    if epoch == kept and isinstance(kept_train, (int, float)) and math.isfinite(kept_train):
        measured = (
            f"training error of those weights on {test_metrics.get('train_examples')} "
            "training examples, scored as the validation and test splits are"
        )
    else:
        measured = "training error as measured during that epoch"
    exact = (
        " Multi-label: an example is right when all its labels are."
        if (_task(run) == "multilabel")
        else ""
    )
    return [
        note(f"Errors of epoch {epoch}: {which} ({measured}).{exact}"),
        table_block(("", ""), rows),
    ]


def _task(run: RunContext) -> str:
    return str((run.data or {}).get("task") or "classification")


def _regression_errors(run: RunContext) -> list[Block]:
    """Regression has no accuracy, so no error rate to split into bias and variance: the
    kept weights' loss and mean absolute error on training, validation and test examples
    instead, each scored in inference mode, for the reader to compare."""
    test, kept = run.test or {}, run.kept_epoch
    column = {k: run.history.get(f"val_{k}") or [] for k in ("loss", "mae")}
    val = {k: v[kept - 1] if kept and len(v) >= kept else None for k, v in column.items()}
    rows = [
        ("training (kept weights)", fmt(test.get("train_loss")), fmt(test.get("train_mae"))),
        (f"validation (epoch {kept})", fmt(val["loss"]), fmt(val["mae"])),
        ("test", fmt(test.get("loss")), fmt(test.get("mae"))),
    ]
    scaled = (
        " (loss on standardised targets: 1 is the best constant prediction's MSE)"
        if ((run.data or {}).get("targets_scaled"))
        else ""
    )
    return [
        note(
            "Regression: no accuracy, so the accuracy-based bias/variance verdict does not "
            "apply. Read bias as a training error far above what the data allows, and "
            f"variance as validation error far above training error{scaled}; mae is in the "
            "targets' units. bayes_error, an error rate, is not used."
        ),
        table_block(("examples", "loss", "mae"), rows),
    ]


def _finding_row(f: Finding) -> dict[str, Any]:
    when = ", ".join(
        p for p in (_opt("step", f.step), _opt("epoch", f.epoch), _opt("layer", f.layer)) if p
    )
    if f.count > 1:
        when += f" (seen {f.count}x, last at step {f.last_step})"
    return {
        "severity": f.severity,
        "symptom": f.symptom,
        "when": when,
        "what": _what(f),
        "evidence": _evidence(f.evidence),
        "fix": f.fix,
    }


def _opt(name: str, value: Any) -> str:
    return "" if value is None else f"{name} {value}"


def _what(finding: Finding) -> str:
    """The message without its "<symptom> at step s, epoch e: " prefix (shown beside it)."""
    head, sep, rest = finding.message.partition(": ")
    return rest if sep and head.startswith(finding.symptom) else finding.message


def _evidence(evidence: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Evidence numbers as (key, text) pairs; long lists and dicts shortened."""
    items = []
    for key, value in evidence.items():
        if isinstance(value, Mapping):
            parts = [f"{k}={fmt(v)}" for k, v in list(value.items())[:6]]
            text = ", ".join(parts) + (" ..." if len(value) > 6 else "")
        elif isinstance(value, (list, tuple)):
            text = ", ".join(fmt(v) for v in value[:8]) + (" ..." if len(value) > 8 else "")
        else:
            text = fmt(value)
        items.append((str(key), text))
    return items


def _thresholds_of(config: Mapping[str, Any]) -> Any:
    return ((config.get("monitors") or {}).get("doctor_thresholds")) or None


def _nothing_to_do(table: dict) -> str:
    """The "what to do" cell when no fix applies: both are low, or the data cannot tell."""
    if table.get("inconclusive"):
        return "nothing the data supports yet: measure on more examples (see the verdict)"
    return "nothing: both are low"
