"""How training went and what it came to: loss/accuracy curves, test scores, confusion."""

from __future__ import annotations

import math

from kerasdiag.report import plots
from kerasdiag.report.blocks import (
    Block,
    Code,
    absent,
    fmt,
    heading,
    image,
    link,
    note,
    paragraph,
    row,
    table_block,
)
from kerasdiag.report.context import RunContext

# The metrics.csv columns drawn as curves, training and validation, where a run has them.
CURVES = ("loss", "accuracy", "label_accuracy", "mae")


def curves(run: RunContext) -> list[Block]:
    """Loss and accuracy per epoch (the loss per step too), the kept epoch marked; the
    learning rate when it changed."""
    history = run.history
    if not history.get("loss"):
        return [absent("no metrics.csv: training did not complete an epoch")]
    out = []
    epochs = history["epoch"]
    steps = step_losses(run)
    kept = run.kept_epoch
    for name in CURVES:  # those the task logs (regression: no accuracy)
        series = {
            label: history[key]
            for key, label in ((name, "train"), (f"val_{name}", "validation"))
            if key in history
        }
        if series:
            figure = plots.curves(
                epochs, series, name, name, steps if name == "loss" else None, mark=kept
            )
            out.append(image(figure, f"{name} curve"))
    if kept is not None:
        out.append(
            note(
                f"The dashed line marks epoch {kept}, whose weights the run kept (best "
                f"{(run.test or {}).get('monitor')}) and scored on the test split."
            )
        )
    lr = history.get("learning_rate")
    if lr and len(set(lr)) > 1:
        # Log, as rates are compared in decades; a warm-up from 0 starts at a rate a log
        # axis cannot show (its first epoch was missing), so such a schedule is linear.
        log = all(rate > 0 for rate in lr)
        figure = plots.curves(epochs, {"lr": lr}, "learning rate", "lr", log=log)
        out.append(image(figure, "learning rate"))
    elif lr:
        out.append(note(f"Constant learning rate {fmt(lr[0])}."))
    return out


def step_losses(run: RunContext) -> tuple[list[float], list[float]] | None:
    """The doctor's per-step training losses as (x in epochs, loss); None without them."""
    points = (run.doctor or {}).get("step_losses")
    spe = run.steps_per_epoch
    if not points or not spe:
        return None
    finite = [(s, v) for s, v in points if isinstance(v, (int, float)) and math.isfinite(v)]
    return [(s + 1) / spe for s, _ in finite], [v for _, v in finite]


def test_metrics(run: RunContext) -> list[Block]:
    """The kept model's test scores, which file holds it, and its confusion matrix."""
    if run.test is None:
        if run.nan:
            return [absent("no test_metrics.json: training stopped on a NaN/Inf loss")]
        return [absent("no test_metrics.json: the run did not reach its test evaluation")]
    out = [table_block(("metric", "value"), list(run.test_scores().items()))]
    if run.test.get("model"):
        out.append(
            note(
                "Scores of ",
                link(run.test["model"]),
                f" (epoch {run.kept_epoch}); load it with ",
                Code("kerasdiag.modeling.safe_load.load_model_safely"),
                " to reproduce them.",
            )
        )
    return out + _confusion(run)


def _confusion(run: RunContext) -> list[Block]:
    c = run.confusion
    if c and c.get("task") in _PER_OUTPUT:
        return _PER_OUTPUT[c["task"]](c)
    if not c or not c.get("matrix"):
        return [absent("no test_confusion.json: no confusion matrix for this run")]
    names = c.get("class_names") or [str(i) for i in range(len(c["matrix"]))]
    counts = [sum(r) for r in c["matrix"]]
    per_class = c.get("per_class_accuracy") or []
    rows = [
        (name, n, "—" if acc is None else f"{acc:.1%}")
        for name, n, acc in zip(names, counts, per_class, strict=False)
    ]
    return [
        heading("Confusion matrix and per-class accuracy (test split)"),
        row(
            image(plots.confusion(c["matrix"], names), "confusion matrix"),
            table_block(("class", "test examples", "accuracy"), rows),
        ),
    ]


def _per_label(c) -> list[Block]:
    """A multi-label model on the test split: each label's accuracy and how often it is on."""
    rows = [
        (name, f"{share:.1%}", f"{acc:.1%}")
        for name, share, acc in zip(
            c["labels"], c["positive_share"], c["per_label_accuracy"], strict=False
        )
    ]
    return [
        heading("Per-label accuracy (test split)"),
        paragraph(
            f"Multi-label: every label is its own decision (a logit above 0 means on). All "
            f"{len(rows)} labels right (exact match): {c['exact_match']:.1%} of "
            f"{c['examples']} test examples; no confusion matrix applies."
        ),
        table_block(("label", "on in (test)", "accuracy"), rows),
    ]


def _per_target(c) -> list[Block]:
    """A regression model on the test split: each target's errors in its own units."""
    rows = [
        (name, f"{mae:.4g}", f"{rmse:.4g}", "—" if r2 is None else f"{r2:.3f}")
        for name, mae, rmse, r2 in zip(c["targets"], c["mae"], c["rmse"], c["r2"], strict=False)
    ]
    return [
        heading("Errors per target (test split)"),
        paragraph(
            f"Regression on {c['examples']} test examples, in the targets' units: no accuracy "
            "and no confusion matrix apply. R² is 1 - squared error / the targets' variance "
            "(0: no better than predicting their mean)."
        ),
        table_block(("target", "MAE", "RMSE", "R²"), rows),
    ]


_PER_OUTPUT = {"multilabel": _per_label, "regression": _per_target}
