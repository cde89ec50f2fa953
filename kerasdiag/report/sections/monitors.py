"""What the monitors measured during training, on the page's epoch axis: update ratios,
gradient norms, activations, TensorBoard histograms and the first layer's filters."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kerasdiag.core.rundir import RunLayout
from kerasdiag.diagnosis.rules import update_ratio_band
from kerasdiag.report import plots
from kerasdiag.report.blocks import Block, absent, figure, heading, image, note, paragraph, row
from kerasdiag.report.context import RunContext
from kerasdiag.report.events import read_histograms
from kerasdiag.report.filters import filter_summary, filters_caption

# Layers / variables drawn at most in one per-layer plot or histogram grid.
MAX_LINES = 12
# FilterImages names the grid it draws after epoch n (from 1) filters_epoch<n:03d>.png.
_EPOCH_GRID = "filters_epoch"

Lines = dict[str, tuple[list[float], list[float]]]


def update_ratios(run: RunContext) -> list[Block]:
    """||dW|| / ||W|| per variable, the band the run's monitor judged them by shaded."""
    rows = run.files.csv_rows(RunLayout.UPDATE_RATIOS)
    if not rows:
        return [absent("no update_ratios.csv (monitors.update_ratio=false, or no epoch completed)")]
    lines: Lines = defaultdict(lambda: ([], []))
    kernels = any(r[2].endswith("kernel") for r in rows)
    for step, _epoch, variable, ratio, *_ in rows:
        if kernels and not variable.endswith("kernel"):
            continue
        x, y = lines[variable]
        x.append(run.epoch_x(step))
        y.append(_float(ratio))
    drawn = plots.per_layer(
        _first(lines, MAX_LINES),
        "||W_after - W_before|| / ||W_before|| per optimizer step (~1e-3 is healthy)",
        "update ratio",
        # the band the run's UpdateRatioMonitor flagged by: it follows the optimizer
        band=update_ratio_band((run.config.get("optimizer") or {}).get("name", "sgd")),
    )
    out = [image(drawn, "update ratios")]
    if kernels:
        out.append(note("kernels only (biases start at 0: their ratio says nothing)"))
    return out


def gradients(run: RunContext) -> list[Block]:
    """The gradient norm of each layer on the probe batch, and the global norm dashed."""
    rows = run.files.csv_rows(RunLayout.GRADIENT_NORMS)
    if not rows:
        return [absent("no gradient_norms.csv (monitors.gradients=false, or no epoch completed)")]
    lines: Lines = defaultdict(lambda: ([], []))
    for step, _epoch, name, norm in rows:
        x, y = lines[name]
        x.append(run.epoch_x(step))
        y.append(_float(norm))
    drawn = plots.per_layer(
        _first(lines, MAX_LINES + 2),
        "gradient norm per layer on the probe batch",
        "gradient norm",
        dashed=("global_norm", "global_norm_clipped"),
    )
    return [image(drawn, "gradient norms")]


def activations(run: RunContext) -> list[Block]:
    """Dead and saturated fractions, and the spread, of each layer's output."""
    rows = run.files.csv_rows(RunLayout.ACTIVATIONS)
    if not rows:
        return [absent("no activations.csv (monitors.activations=false, or no epoch completed)")]
    fractions: Lines = defaultdict(lambda: ([], []))
    spread: Lines = defaultdict(lambda: ([], []))
    for step, _epoch, layer, kind, _mean, std, _zero, dead, saturated in rows:
        x = run.epoch_x(step)
        if dead:
            fractions[f"{layer} dead"][0].append(x)
            fractions[f"{layer} dead"][1].append(_float(dead))
        if saturated:
            fractions[f"{layer} saturated"][0].append(x)
            fractions[f"{layer} saturated"][1].append(_float(saturated))
        spread[f"{layer} ({kind or 'linear'})"][0].append(x)
        spread[f"{layer} ({kind or 'linear'})"][1].append(_float(std))
    out = []
    if fractions:
        drawn = plots.per_layer(
            _first(fractions, MAX_LINES),
            "dead ReLU units / saturated tanh-sigmoid outputs on the probe batch",
            "fraction",
            log=False,
            ylim=(0.0, 1.0),
        )
        out.append(image(drawn, "dead and saturated fractions"))
    drawn = plots.per_layer(
        _first(spread, MAX_LINES), "standard deviation of each layer's output", "std"
    )
    return [*out, image(drawn, "activation spread")]


def histograms(run: RunContext) -> list[Block]:
    """The first and the last histogram of each layer's activations and gradients."""
    log_dir = run.path / RunLayout.TENSORBOARD
    out = []
    for run_name, title in (("activations", "activations"), ("gradients", "gradients")):
        series = read_histograms(log_dir / run_name)
        if not series:
            continue
        out += [
            heading(f"{title}: first and last probe"),
            image(plots.histograms(histogram_panels(run, series)), f"{title} histograms"),
        ]
    if not out:
        return [
            absent(
                "no activation or gradient histograms under tensorboard/ "
                "(monitors.activations / monitors.gradients off, or trainer.tensorboard=false)"
            )
        ]
    return out


def histogram_panels(
    run: RunContext, series: Mapping[str, list[tuple[int, np.ndarray]]]
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """{panel title: [(label, buckets)]}: each tag's first and last histogram (one if they
    are the same probe), labelled by :func:`probe_label`."""
    panels = {}
    for tag, events in _first(series, MAX_LINES).items():
        (s0, h0), (s1, h1) = events[0], events[-1]
        shown = [(s0, h0), (s1, h1)] if s1 != s0 else [(s0, h0)]
        panels[tag.split("/", 1)[-1]] = [(probe_label(run, s), h) for s, h in shown]
    return panels


def probe_label(run: RunContext, step: int) -> str:
    """When a probe ran, in epochs trained as the page counts them (steps if the epoch
    length is unknown): the summaries' step is the optimizer step."""
    if run.steps_per_epoch is None:
        return f"step {step}"
    return f"epoch {run.epoch_x(step):.1f}"


def filters(run: RunContext) -> list[Block]:
    """The first layer's filters at initialisation and after the last epoch drawn."""
    first = run.path / RunLayout.FILTERS_INIT
    shown = [(first, "at initialisation")] if first.is_file() else []
    last = last_filter_grid(run.path)
    if last is not None:
        path, epoch = last
        shown.append((path, filters_label(epoch, run.kept_epoch)))
    if not shown:
        return [absent("no filter images (monitors.filters=false, or no Conv2D/Dense input layer)")]
    figures = [
        figure(image(plots.bytes_base64(p.read_bytes()), p.name, css=RunLayout.FILTERS), caption)
        for p, caption in shown
    ]
    return [row(*figures), paragraph(_filters_caption(run.path))]


def last_filter_grid(run_dir: Path) -> tuple[Path, int] | None:
    """The grid FilterImages drew last and the epoch it drew it after (by number: epoch
    1000's name sorts before epoch 999's); None without one."""
    grids = []
    for path in run_dir.glob(f"{_EPOCH_GRID}*.png"):
        number = path.stem.removeprefix(_EPOCH_GRID)
        if number.isdigit():
            grids.append((int(number), path))
    if not grids:
        return None
    epoch, path = max(grids)
    return path, epoch


def filters_label(epoch: int, kept: int | None) -> str:
    """The caption of the grid drawn after ``epoch``: whether those are the kept weights,
    since the rest of the page (test scores, bias and variance) is about the kept ones."""
    if kept is None:
        return f"after epoch {epoch}"
    if kept == epoch:
        return f"after epoch {epoch} (the kept weights)"
    return f"after epoch {epoch}, the last drawn (the run kept epoch {kept}'s weights)"


def _filters_caption(run_dir: Path) -> str:
    """What the filter grids show, from the raw filters (``filters.npz``)."""
    path = run_dir / RunLayout.FILTERS_RAW
    if not path.is_file():
        return "Each cell is one first-layer filter, scaled to its own range."
    with np.load(path) as raw:
        summary = filter_summary(raw["init"], raw["last"])
        layer, shape = str(raw["layer"]), raw["last"].shape
    return filters_caption(layer, shape, summary)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _first(mapping: Mapping[str, Any], n: int) -> dict[str, Any]:
    return dict(list(mapping.items())[:n])
