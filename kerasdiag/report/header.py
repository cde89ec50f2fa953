"""The top of the page: the run's title, how it ended, and the facts a reader looks for first."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from kerasdiag.core.naming import run_title  # the data and model really used
from kerasdiag.diagnosis import failed_stages
from kerasdiag.report.blocks import Badge, fmt, link
from kerasdiag.report.context import RunContext


def page_title(run: RunContext) -> str:
    recipe = run_title(run.config) if run.config else run.path.name
    return f"kerasdiag report: {recipe}"


def status(run: RunContext) -> Badge:
    """The badge under the title: how the run ended, failed sanity checks too."""
    return Badge(*run_status(run.test, run.nan, failed_stages(run.stages or [])))


def run_status(
    test: Mapping[str, Any] | None, nan: Mapping[str, Any] | None, failed: Sequence[str]
) -> tuple[str, str]:
    """(css class, text) of the report's badge: how the run ended, failed sanity checks too."""
    checks = f"sanity check failed: {', '.join(failed)}" if failed else ""
    if nan:
        return "error", "stopped: NaN/Inf loss" + (f"; {checks}" if checks else "")
    if test is not None:
        return ("warning", f"finished; {checks}") if checks else ("ok", "finished")
    if checks:
        return "error", f"stopped before training: {checks}"
    return "warning", "unfinished (no test_metrics.json)"


def facts(run: RunContext) -> list[tuple[str, Any]]:
    """(name, value) pairs: recipe, directory, epochs, the kept model and its scores."""
    out: list[tuple[str, Any]] = [
        ("recipe", run.config.get("recipe") or "?"),
        ("run directory", run.path.resolve()),
    ]
    epochs = len(run.history.get("loss", []))
    if epochs:
        out.append(("epochs", epochs))
    if run.test:
        out += [(f"test {k}", v) for k, v in run.test_scores().items()]
        if run.train_scores():
            out.append(("kept model on training data", _train_text(run)))
        if run.kept_epoch is not None:
            out.append(("kept epoch", _kept_text(run)))
        if run.test.get("model"):
            out.append(("kept model", link(run.test["model"])))
    out.append(("report built", datetime.datetime.now().isoformat(timespec="seconds")))
    return out


def _kept_text(run: RunContext) -> str:
    test = run.test or {}
    value = test.get("monitor_value")
    best = f" (best {test.get('monitor')}: {fmt(value)})" if value is not None else ""
    return f"{run.kept_epoch}{best}"


def _train_text(run: RunContext) -> str:
    scores = ", ".join(f"{k} {fmt(v)}" for k, v in run.train_scores().items())
    examples = (run.test or {}).get("train_examples")
    return f"{scores} ({examples} training examples, scored as the test split is)"
