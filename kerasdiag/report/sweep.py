"""A multirun's comparison of its jobs: a table on the console, ``multirun.csv`` and
``multirun.html`` in the sweep directory.

Hydra calls :class:`SweepSummary` when a multirun ends (``hydra.callbacks`` in
``conf/config.yaml``); :func:`summarize_sweep` does the same for any sweep folder afterwards.
Each job is read from its own files (``.hydra/overrides.yaml``, ``test_metrics.json``,
``metrics.csv``, ``diagnosis.json``, ``nan.json``): no TensorFlow here.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import jinja2
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from kerasdiag.core.io import write_text_atomic
from kerasdiag.core.metrics import metric_mode
from kerasdiag.core.rundir import RunLayout, read_metrics_csv
from kerasdiag.core.text import format_table

COLUMNS = ("job", "overrides", "best_val", "test_accuracy", "test_loss", "diagnosis", "run_dir",
           "test_mae")  # fmt: skip


def score_name(rows: list[dict[str, Any]]) -> str:
    """The test score the jobs are shown with: accuracy, or a regression's mae."""
    if any(r.get("test_accuracy") is not None for r in rows):
        return "accuracy"
    return "mae" if any(r.get("test_mae") is not None for r in rows) else "accuracy"


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, compare its jobs (see :func:`summarize_sweep`).

    Example (``conf/config.yaml``)::

        hydra:
          callbacks:
            sweep_summary:
              _target_: kerasdiag.report.sweep.SweepSummary
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():
            print(summarize_sweep(sweep_dir))


def job_row(job_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    """One job's line: its overrides, best validation score, test scores and diagnosis."""
    overrides = _yaml_list(job_dir / RunLayout.OVERRIDES)
    test = _json(job_dir / RunLayout.TEST_METRICS) or {}
    findings = _json(job_dir / RunLayout.DIAGNOSIS)
    nan = _json(job_dir / RunLayout.NAN)
    best = test.get("monitor_value")
    monitor = test.get("monitor") or "val_accuracy"
    if best is None:
        best = _best_in_metrics(job_dir / RunLayout.METRICS, monitor)
    if nan is not None:
        headline = "stopped: non-finite loss"
    elif not test:
        headline = "unfinished (no test_metrics.json)"
    elif findings:
        first = findings[0]
        more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
        headline = f"{first.get('severity', '?')}: {first.get('symptom', '?')}{more}"
    else:
        headline = "no symptoms found"
    return {
        "job": job_dir.name,
        "overrides": " ".join(o for o in overrides if not o.startswith("hydra.")),
        "monitor": monitor,
        "best_val": best,
        "test_accuracy": test.get("accuracy"),
        "test_loss": test.get("loss"),
        "test_mae": test.get("mae"),
        "diagnosis": headline,
        "run_dir": str(job_dir),
    }


def sweep_jobs(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep (those with Hydra's ``.hydra/``), in job-number order."""
    jobs = [p for p in Path(sweep_dir).iterdir() if (p / ".hydra").is_dir()]
    return sorted(
        jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)
    )


def summarize_sweep(sweep_dir: str | Path) -> str:
    """Write ``multirun.csv`` and ``multirun.html`` into ``sweep_dir``; return the table text.

    Example:
        >>> print(summarize_sweep("multirun/digits_softmax/2026-01-01_00-00-00-000000"))  # doctest: +SKIP
    """
    sweep_dir = Path(sweep_dir)
    rows = [job_row(job, sweep_dir) for job in sweep_jobs(sweep_dir)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*COLUMNS, "monitor"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(sweep_dir / RunLayout.MULTIRUN_CSV, buffer.getvalue())
    write_text_atomic(sweep_dir / RunLayout.MULTIRUN_HTML, render_html(rows, sweep_dir))
    table = sweep_table(rows)
    return f"{table}\nsweep summary: {sweep_dir / RunLayout.MULTIRUN_CSV}, {sweep_dir / RunLayout.MULTIRUN_HTML}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def selected_job(rows: list[dict[str, Any]]) -> int | None:
    """The index of the job a sweep selects: the best validation score (``best_val``, by
    its monitor's direction). Selection uses validation only: the test split is reported,
    never chosen on, or its score would no longer estimate the chosen model's."""
    monitor = rows[0]["monitor"] if rows else "val_accuracy"
    scored = [
        (r["best_val"], i)
        for i, r in enumerate(rows)
        if isinstance(r["best_val"], float) and math.isfinite(r["best_val"])
    ]
    if not scored:
        return None
    sign = 1 if metric_mode(monitor) == "max" else -1
    return max(scored, key=lambda pair: (sign * pair[0], -pair[1]))[1]  # ties: the first job


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """The jobs as a plain-text table, the one selected on validation marked with ``*``."""
    monitor = rows[0]["monitor"] if rows else "val_accuracy"
    best = selected_job(rows)
    name = score_name(rows)
    shown = "test acc" if name == "accuracy" else f"test {name}"
    lines = [["job", "overrides", f"best {monitor}", shown, "test loss", "diagnosis",
              "run dir"]]  # fmt: skip
    for i, r in enumerate(rows):
        mark = " *" if i == best else ""
        lines.append([r["job"], r["overrides"] or "(none)", _cell(r["best_val"]) + mark,
                      _cell(r.get(f"test_{name}")), _cell(r["test_loss"]), r["diagnosis"],
                      r["run_dir"]])  # fmt: skip
    text = format_table(lines).splitlines()
    text.insert(1, "-" * len(text[0]))
    note = f"\n* best {monitor}: the job selected on validation (its test score is reported)"
    return "\n".join(text) + (note if best is not None else "")


def render_html(rows: list[dict[str, Any]], sweep_dir: Path) -> str:
    """A self-contained page (``templates/multirun.html.j2``): one row per job, each linking
    to its report; autoescaped, as the run report is."""
    jobs, name = [], score_name(rows)
    for r in rows:
        job_dir = Path(r["run_dir"])
        report = f"{job_dir.name}/report.html" if job_dir.parent == sweep_dir else None
        has_report = report is not None and (sweep_dir / report).is_file()
        cells = [_cell(r["best_val"]), _cell(r.get(f"test_{name}")), _cell(r["test_loss"])]
        jobs.append({**r, "scores": cells, "report": report if has_report else None})
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kerasdiag.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("multirun.html.j2").render(
        jobs=jobs,
        best=selected_job(rows),
        monitor=rows[0]["monitor"] if rows else "val_accuracy",
        score_name=name,
        sweep=str(sweep_dir.resolve()),
    )


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _yaml_list(path: Path) -> list[str]:
    try:
        return [str(o) for o in OmegaConf.load(path)]
    except Exception:  # a missing or broken file: the job shows no overrides
        return []


def _best_in_metrics(path: Path, monitor: str) -> float | None:
    try:
        rows = read_metrics_csv(path)
    except (OSError, ValueError, KeyError):
        return None
    values = [row[monitor] for row in rows.values() if math.isfinite(row.get(monitor, math.nan))]
    if not values:
        return None
    return max(values) if metric_mode(monitor) == "max" else min(values)
