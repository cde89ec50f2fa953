"""What the run was given and what it left: data, model, config, and its files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasdiag.core.rundir import RunLayout
from kerasdiag.core.timings import PART_SEPARATOR, read_timings, stage_totals
from kerasdiag.report import plots
from kerasdiag.report.blocks import (
    Block,
    absent,
    details,
    heading,
    image,
    link,
    note,
    preformatted,
    table_block,
)
from kerasdiag.report.context import RunContext


def data(run: RunContext) -> list[Block]:
    """The data set's shape and splits, and how many training examples each class has."""
    if run.data is None:
        return [absent("no data.json")]
    d = run.data
    rows = [
        ("data set", d.get("name")),
        ("input shape", " x ".join(str(s) for s in d.get("input_shape", []))),
        *_targets(d),
        ("train / validation / test", f"{d.get('train')} / {d.get('val')} / {d.get('test')}"),
    ]
    if d.get("streamed"):
        rows.append(("read", f"streamed from disk; checks on a sample of {d.get('sample_size')}"))
    if d.get("skipped_files"):
        rows.append(
            ("undecodable files skipped", f"{d['skipped_files']} ({RunLayout.DATA_SPLITS})")
        )
    out = [table_block(("", ""), rows)]
    counts = d.get("train_class_counts")
    if counts:
        names = d.get("class_names") or list(range(len(counts)))
        drawn = plots.bars(names, counts, "training examples per class", "examples")
        out.append(image(drawn, "class counts"))
    if d.get("train_label_counts"):
        drawn = plots.bars(d.get("labels") or [], d["train_label_counts"],
                           "training examples with each label on", "examples")  # fmt: skip
        out.append(image(drawn, "label counts"))
    return out


def _targets(d: Any) -> list[tuple[str, Any]]:
    """What the model predicts: classes, labels (multi-label) or numbers (regression)."""
    if d.get("task") == "regression":
        scaled = "; standardised for training" if d.get("targets_scaled") else ""
        described = [
            f"{name} (mean {mean:.4g}, std {std:.4g}{scaled})"
            for name, mean, std in zip(
                d.get("targets") or [],
                d.get("target_mean") or [],
                d.get("target_std") or [],
                strict=False,
            )
        ]
        return [("task", "regression"), ("targets", ", ".join(described))]
    if d.get("task") == "multilabel":
        return [("task", "multi-label"), ("labels", ", ".join(d.get("labels") or []))]
    return [("classes", d.get("num_classes"))]


def model(run: RunContext) -> list[Block]:
    """The model summary as the run wrote it."""
    path = run.path / RunLayout.SUMMARY
    if not path.is_file():
        return [absent("no summary.txt")]
    return [preformatted(path.read_text())]


def config(run: RunContext) -> list[Block]:
    """The resolved config, folded away: it is long and read only when needed."""
    path = run.path / RunLayout.CONFIG
    if not path.is_file():
        return [absent("no config.yaml")]
    return [details(RunLayout.CONFIG, path.read_text())]


def files(run: RunContext) -> list[Block]:
    """Every file of the run directory, linked, with its size; the NaN stop record."""
    items = [
        (link(p.name + ("/" if p.is_dir() else "")), _size(p))
        for p in sorted(run.path.iterdir())
        if not p.name.startswith(".")
    ]
    out = [
        note("Links are relative: they work while report.html sits in its run directory."),
        table_block(("file", "size"), items),
    ]
    if run.nan:
        rows = [(k, "; ".join(v) if isinstance(v, list) else v) for k, v in run.nan.items()]
        out += [heading("NaN stop record (nan.json)"), table_block(("", ""), rows)]
    return out


def _size(path: Path) -> str:
    total = (
        sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        if path.is_dir()
        else path.stat().st_size
    )
    for unit in ("B", "KB", "MB", "GB"):
        if total < 1024 or unit == "GB":
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1024
    return f"{total} B"


def time_spent(run: RunContext) -> list[Block]:
    """Where the run's time went, stage by stage (``timings.jsonl``); the sanity stages'
    own seconds from ``sanity.json``. The report is written after this page is rendered, so
    its own seconds are in the file, not here. "peak memory" is the process's peak resident
    memory when the stage ended: the stage whose figure first rises is the one that raised it."""
    timings = read_timings(run.path / RunLayout.TIMINGS)
    if not timings:
        return [absent(f"no {RunLayout.TIMINGS} (a run from before stages were timed)")]
    totals = stage_totals(timings)
    whole = sum(seconds for stage, seconds in totals if PART_SEPARATOR not in stage)
    # the sanity stages' own seconds (sanity.json) as parts of "sanity", right below it
    parts = [(f"sanity{PART_SEPARATOR}{stage['name']}", float(stage["seconds"]))
             for stage in run.stages or [] if stage.get("seconds") is not None]  # fmt: skip
    peaks: dict[str, float] = {}
    for t in timings:
        if t.get("peak_rss_mb") is not None:
            peaks[t["stage"]] = max(peaks.get(t["stage"], 0.0), float(t["peak_rss_mb"]))
    rows = []
    for stage, seconds in totals:
        peak = f"{peaks[stage]:.0f} MB" if stage in peaks else "-"
        rows.append((stage, f"{seconds:.2f}", f"{seconds / whole:.1%}" if whole else "-", peak))
        if stage == "sanity":
            rows += [(name, f"{sec:.2f}", f"{sec / whole:.1%}" if whole else "-", "")
                     for name, sec in parts]  # fmt: skip
    out = [table_block(("stage", "seconds", "share", "peak memory"), rows)]
    processes = len({t["pid"] for t in timings})
    if processes > 1:
        out.append(note(f"summed over the {processes} processes that worked on this run "
                        "(it was interrupted and resumed)"))  # fmt: skip
    return out
