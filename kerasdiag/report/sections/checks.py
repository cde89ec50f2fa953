"""The checks before training: sanity stages, the learning-rate range test, the gradient
check."""

from __future__ import annotations

from kerasdiag.core.rundir import RunLayout
from kerasdiag.diagnosis.lr_range import RULE_TEXT, LRFinderResult
from kerasdiag.report.blocks import (
    Block,
    absent,
    bullets,
    fmt,
    image,
    note,
    paragraph,
    status_badge,
    table_block,
)
from kerasdiag.report.context import RunContext
from kerasdiag.report.lr_range import lr_range_plot


def sanity(run: RunContext) -> list[Block]:
    """One row per sanity stage: its status, what it measured against what was expected."""
    if run.stages is None:
        return [absent("no sanity.json (sanity=off, or the run resumed without them)")]
    rows = [
        (
            s.get("name"),
            status_badge(s.get("status")),
            s.get("value"),
            s.get("expected"),
            s.get("seconds"),
            " Fix: ".join(t for t in (s.get("message", ""), s.get("fix", "")) if t),
        )
        for s in run.stages
    ]
    headers = ("stage", "status", "value", "expected", "seconds", "message")
    out = [table_block(headers, rows)]
    if any(s.get("status") == "inconclusive" for s in run.stages):
        out.append(
            note(
                "inconclusive: the stage ran but its examples could not decide; neither a pass "
                "nor a failure (its message says about how many examples would)"
            )
        )
    return out


def lr_range(run: RunContext) -> list[Block]:
    """The range test's loss against the learning rate, and the rate it suggested."""
    curve = run.files.json(RunLayout.LR_FINDER)
    if curve is None:
        return [absent("no lr_finder.json (run with sanity.lr_range=true or optimizer.lr=auto)")]
    result = LRFinderResult.from_dict(curve)
    return [
        paragraph(result.summary()),
        image(lr_range_plot(curve), "learning-rate range test"),
        note(
            "The loss of a copy of the model trained with a learning rate growing every "
            f"step; rule: {RULE_TEXT.get(result.rule, result.rule)}. Flat = too low, "
            "falling = good, rising = too high."
        ),
    ]


def gradcheck(run: RunContext) -> list[Block]:
    """The gradient check's verdict, one row per variable checked, and its caveats."""
    report = run.files.json(RunLayout.GRADCHECK)
    if report is None:
        return [absent("no gradcheck.json (sanity.gradcheck=false, or the check was skipped)")]
    summary = paragraph(
        status_badge(_gradcheck_status(report)),
        f" max relative error {fmt(report.get('max_relative_error'))} "
        f"(tolerance {fmt(report.get('tolerance'))}, h={fmt(report.get('h'))}, "
        f"{report.get('samples')} example(s), depth {report.get('depth')}, "
        f"{fmt(report.get('seconds'))} s)",
    )
    rows = [
        (
            r.get("part"),
            r.get("name"),
            "x".join(str(d) for d in r.get("shape", [])),
            r.get("dims"),
            r.get("max_relative_error"),
            r.get("verdict"),
            r.get("kinks"),
        )
        for r in report.get("rows", [])
    ]
    headers = ("part", "variable", "shape", "dims", "max rel. error", "verdict", "kinks")
    out = [summary, table_block(headers, rows)]
    unstable = [f"inconclusive: {report['unstable']}"] if report.get("unstable") else []
    notes = [*unstable, *report.get("warnings", []), *report.get("notes", [])]
    return out + ([bullets(notes)] if notes else [])


def _gradcheck_status(report: dict) -> str:
    """The badge of ``gradcheck.json``: an inconclusive check (the objective unstable, or
    every entry excused) is neither a pass nor a failure."""
    if report.get("status") == "inconclusive":
        return "inconclusive"
    return "pass" if report.get("passed") else "fail"
