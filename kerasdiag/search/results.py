"""What a search leaves in its run directory: trial checkpoints, ``search.csv``, ``search.png``.

Trial checkpoints are named ``trials/stage{S}-trial{NNN}-{objective}{score:.4f}.keras``
(``stage1-trial003-val_accuracy0.9123.keras``): the score is the trial's best validation
value, so the top-k trials of a search are picked from file names alone
(``ensemble=topk``, :func:`kerasdiag.ensemble.best_checkpoints`). No TensorFlow here.

Example:
    >>> trial_checkpoint_name(2, "07", "val_accuracy", 0.91234)
    'stage2-trial007-val_accuracy0.9123.keras'
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from kerasdiag.config.search_space import Param, Stage, trial_budget
from kerasdiag.core.io import write_bytes_atomic, write_csv_atomic
from kerasdiag.core.metrics import metric_mode
from kerasdiag.core.rundir import RunLayout


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial of a search: its values (as set in the config) and its result."""

    stage: int
    trial: int
    values: dict[str, Any]
    score: float  # best validation value over its epochs; NaN when it has none
    status: str  # completed | diverged | failed
    epochs: int = 0
    checkpoint: str = ""  # path relative to the run directory, "" when none was kept
    budget: int = 0  # epochs the trial was given (its stage's, or Hyperband's round's)


def trial_prefix(stage: int, trial_id: str | int) -> str:
    """``stage{S}-trial{NNN}-``: how every checkpoint file of one trial starts."""
    return f"stage{int(stage)}-trial{int(trial_id):03d}-"


def trial_checkpoint_name(stage: int, trial_id: str | int, objective: str, score: float) -> str:
    """``stage{S}-trial{NNN}-{objective}{score:.4f}.keras``: the stable name ensembles parse."""
    return f"{trial_prefix(stage, trial_id)}{objective}{score:.4f}.keras"


def kept_checkpoints(run_dir: str | os.PathLike, stage: int, trial_id: str | int) -> list[Path]:
    """The checkpoint(s) kept for one trial in ``run_dir/trials`` (one, or none if it had no score)."""
    return sorted(
        (Path(run_dir) / RunLayout.TRIALS).glob(f"{trial_prefix(stage, trial_id)}*.keras")
    )


def records_from_trials(
    trials: Any, space: Sequence[Param], stages: Sequence[Stage], run_dir: str | os.PathLike
) -> list[TrialRecord]:
    """One :class:`TrialRecord` per keras-tuner ``Trial`` of the oracle (``oracle.trials``);
    its stage and epochs from its values (:func:`~kerasdiag.config.search_space.trial_budget`)."""
    records = []
    for trial in trials:
        metrics = trial.metrics
        diverged = metrics.exists("diverged") and metrics.get_last_value("diverged") > 0
        if trial.status == "COMPLETED":
            status = "diverged" if diverged else "completed"
        else:
            status = "failed" if trial.status in ("FAILED", "INVALID") else trial.status.lower()
        score = trial.score if trial.score is not None else math.nan
        values = trial.hyperparameters.values
        stage, budget = trial_budget(values, stages)
        kept = kept_checkpoints(run_dir, stage, trial.trial_id)
        records.append(
            TrialRecord(
                stage=stage,
                trial=int(trial.trial_id),
                values={p.name: p.decode(values[p.name]) for p in space if p.name in values},
                score=float(score) if math.isfinite(score) else math.nan,
                status=status,
                epochs=int(metrics.get_last_value("epochs_run") or 0)
                if metrics.exists("epochs_run")
                else 0,
                checkpoint=str(kept[0].relative_to(run_dir)) if kept else "",
                budget=budget,
            )
        )
    return records


def best_records(records: Sequence[TrialRecord], objective: str, k: int) -> list[TrialRecord]:
    """The ``k`` best records with a score, best first (by the objective's direction)."""
    scored = [r for r in records if math.isfinite(r.score)]
    maximize = metric_mode(objective) == "max"
    return sorted(scored, key=lambda r: (-r.score if maximize else r.score, r.stage, r.trial))[:k]


def write_search_csv(
    path: str | os.PathLike, records: Sequence[TrialRecord], space: Sequence[Param]
) -> Path:
    """``search.csv``: stage, trial, one column per hyperparameter, score, status, epochs, checkpoint."""
    header = ["stage", "trial", *(p.name for p in space), "score", "status", "epochs", "checkpoint"]
    rows = [
        [
            r.stage,
            r.trial,
            *(_cell(r.values.get(p.name)) for p in space),
            _cell(r.score),
            r.status,
            r.epochs,
            r.checkpoint,
        ]
        for r in sorted(records, key=lambda r: (r.stage, r.trial))
    ]
    return write_csv_atomic(path, header, rows)


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def plot_search(
    path: str | os.PathLike,
    records: Sequence[TrialRecord],
    space: Sequence[Param],
    objective: str,
) -> Path:
    """Write :func:`search_figure` as ``search.png`` (atomically)."""
    buf = io.BytesIO()
    search_figure(records, space, objective).savefig(buf, format="png", dpi=100)
    return write_bytes_atomic(path, buf.getvalue())


def search_figure(records: Sequence[TrialRecord], space: Sequence[Param], objective: str) -> Any:
    """The score against each hyperparameter, one panel each, colour = stage.

    Log-sampled hyperparameters get log x axes, choices one tick per candidate. Trials
    without a score (diverged at once, failed) are red crosses along the bottom edge. A
    ``matplotlib.figure.Figure`` without pyplot: no global backend or state is touched.
    """
    cols = 2 if len(space) == 4 else min(len(space), 3)
    rows = math.ceil(len(space) / cols)
    fig = Figure(figsize=(4.2 * cols + 1.2, 3.4 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    stages = sorted({r.stage for r in records})
    colours = matplotlib.colormaps["viridis"](
        [0.15 + 0.7 * i / max(1, len(stages) - 1) for i in range(len(stages))]
    )
    for ax, param in zip(axes.flat, space, strict=False):
        _plot_param(ax, param, records, stages, colours)
        ax.set_ylabel(objective)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(space) :]:
        ax.set_visible(False)
    handles = [
        Line2D([], [], ls="", marker="o", color=c, label=f"stage {s}")
        for s, c in zip(stages, colours, strict=True)
    ]
    handles.append(Line2D([], [], ls="", marker="x", color="red", label="no score"))
    fig.legend(handles=handles, loc="upper right", fontsize=8)
    fig.suptitle(f"{objective} of {len(records)} trials against each hyperparameter")
    fig.tight_layout(rect=(0, 0, 0.88, 0.95))
    return fig


def _plot_param(ax: Any, param: Param, records, stages, colours) -> None:
    labels = [str(v) for v in param.values]

    def x_of(record: TrialRecord) -> float:
        value = record.values[param.name]
        return float(labels.index(str(value))) if param.type == "choice" else float(value)

    for stage, colour in zip(stages, colours, strict=True):
        mine = [r for r in records if r.stage == stage and param.name in r.values]
        scored = [r for r in mine if math.isfinite(r.score)]
        ax.scatter([x_of(r) for r in scored], [r.score for r in scored], color=colour, s=22)
        unscored = [x_of(r) for r in mine if not math.isfinite(r.score)]
        # Crosses at the bottom edge: x in data units, y in axes units.
        ax.scatter(unscored, [0.02] * len(unscored), marker="x", color="red",
                   transform=ax.get_xaxis_transform())  # fmt: skip
    if param.type == "choice":
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlim(-0.5, len(labels) - 0.5)
    else:
        ax.set_xscale("log" if param.log else "linear")
        ax.set_xlim(param.low, param.high)
    ax.set_xlabel(f"{param.name} ({param.key}{', log scale' if param.log else ''})")
