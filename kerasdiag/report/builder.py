"""``report.html``: everything a run learned, on one self-contained page.

The page is built from the files in the run directory alone, so it can be rebuilt at any
time (``python scripts/report.py RUN_DIR``) and a run directory copied elsewhere keeps its
report. Plots are PNGs embedded as base64; there are no external scripts, styles or images.
A section whose files are missing says so in one line.
"""

from __future__ import annotations

import datetime
import functools
import math
import os
import sys
import types
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from kerasdiag.core.io import write_text_atomic
from kerasdiag.core.naming import run_title  # the data and model really used
from kerasdiag.core.rundir import RunFiles, RunLayout
from kerasdiag.diagnosis import (
    Finding,
    accuracies_at,
    bias_variance,
    diagnose,
    failed_stages,
    restores_best_epoch,
)
from kerasdiag.diagnosis.lr_range import RULE_TEXT, LRFinderResult
from kerasdiag.diagnosis.rules import update_ratio_band
from kerasdiag.report import plots
from kerasdiag.report.filters import filter_summary, filters_caption
from kerasdiag.report.lr_range import lr_range_plot

# Test-metrics fields that describe the scored model rather than score it.
_MODEL_FIELDS = ("model", "weights_epoch", "monitor", "monitor_value", "ema_model")
# test_metrics.json's scores of the same model on training examples (pipeline.evaluate_train_sample)
_TRAIN_PREFIX = "train_"
# Layers / variables drawn at most in one per-layer plot or histogram grid.
MAX_LINES = 12


def build_report(run_dir: str | os.PathLike, bayes_error: float | None = None) -> Path:
    """Write ``report.html`` into ``run_dir`` (atomically) from whatever files it holds.

    Uses ``diagnosis.json`` when present, else runs :func:`kerasdiag.diagnose` (which
    writes it). ``bayes_error`` (0..1) overrides the config's for the bias/variance table.
    Returns the path of the report.

    Example:
        >>> from kerasdiag.report import build_report
        >>> build_report("outputs/digits_softmax/2026-01-01_00-00-00-000000")  # doctest: +SKIP
        PosixPath('outputs/digits_softmax/2026-01-01_00-00-00-000000/report.html')
    """
    report = _Report(RunFiles(run_dir), bayes_error)
    return write_text_atomic(report.run.path / RunLayout.REPORT, report.render())


class _Report:
    """One rendering of a run directory: reads each file once, builds each section's blocks.

    A section is a list of blocks (dicts with a ``kind``: table, img, note, ...) that the
    template ``templates/report.html.j2`` turns into HTML, escaping every value.
    """

    def __init__(self, run: RunFiles, bayes_error: float | None = None):
        self.run = run
        self.config = run.config() or {}
        self.bayes_error = self.config.get("bayes_error") if bayes_error is None else bayes_error
        self.history = run.history()
        self.data = run.json(RunLayout.DATA)
        self.doctor = run.json(RunLayout.DOCTOR)
        self.test = run.json(RunLayout.TEST_METRICS)
        self.nan = run.json(RunLayout.NAN)
        self.stages = run.json(RunLayout.SANITY) or []
        self.confusion = run.json(RunLayout.TEST_CONFUSION)

    # --- page ---------------------------------------------------------------------------

    def render(self) -> str:
        sections: list[tuple[str, str, Callable[[], list[dict]]]] = [
            ("diagnosis", "Diagnosis", self.diagnosis),
            ("bias-variance", "Bias and variance", self.bias_variance),
            ("curves", "Loss and accuracy", self.curves),
            ("test", "Test metrics", self.test_metrics),
            ("update-ratios", "Update / weight ratios", self.update_ratios),
            ("gradients", "Gradients", self.gradients),
            ("activations", "Activations", self.activations),
            ("histograms", "Histograms", self.histograms),
            ("filters", "First-layer filters", self.filters),
            ("sanity", "Sanity checks", self.sanity),
            ("lr-range", "Learning-rate range test", self.lr_range),
            ("gradcheck", "Gradient check", self.gradcheck),
            ("data", "Data", self.data_summary),
            ("model", "Model", self.model_summary),
            ("config", "Config", self.config_section),
            ("files", "Files", self.files),
        ]
        rendered = []
        for anchor, title, render in sections:
            try:
                blocks = render()
            except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
                blocks = [absent(f"could not render this section: {type(exc).__name__}: {exc}")]
            rendered.append({"anchor": anchor, "title": title, "blocks": blocks})
        recipe = run_title(self.config) if self.config else self.run.path.name
        return _template().render(
            title=f"kerasdiag report: {recipe}",
            status=Badge(*run_status(self.test, self.nan, failed_stages(self.stages))),
            facts=self.facts(),
            sections=rendered,
        )

    def facts(self) -> list[tuple[str, Any]]:
        recipe = self.config.get("recipe") or "?"
        facts: list[tuple[str, Any]] = [
            ("recipe", recipe),
            ("run directory", self.run.path.resolve()),
        ]
        epochs = len(self.history.get("loss", []))
        if epochs:
            facts.append(("epochs", epochs))
        if self.test:
            facts += [(f"test {k}", v) for k, v in self._test_scores().items()]
            if self._train_scores():
                facts.append(("kept model on training data", self._train_text()))
            if self.test.get("weights_epoch") is not None:
                facts.append(("kept epoch", self._kept_text()))
            if self.test.get("model"):
                facts.append(("kept model", link(self.test["model"])))
        facts.append(("report built", datetime.datetime.now().isoformat(timespec="seconds")))
        return facts

    def _kept_text(self) -> str:
        test = self.test or {}
        value = test.get("monitor_value")
        best = f" (best {test.get('monitor')}: {fmt(value)})" if value is not None else ""
        return f"{test.get('weights_epoch')}{best}"

    # --- diagnosis ------------------------------------------------------------------------

    def findings(self) -> tuple[list[Finding], bool]:
        """The findings, and whether diagnose() had to run now."""
        stored = self.run.json(RunLayout.DIAGNOSIS)
        if stored is not None:
            return [Finding.from_dict(d) for d in stored], False
        return diagnose(self.run.path, bayes_error=self.bayes_error), True

    def diagnosis(self) -> list[dict]:
        findings, computed = self.findings()
        out = [note(f"{RunLayout.DIAGNOSIS} was missing: diagnosed now.")] if computed else []
        if not findings:
            out.append(
                paragraph(
                    Badge("ok", "no symptoms"),
                    " Neither the doctor during training nor the curves afterwards named a "
                    "problem.",
                )
            )
        else:
            out.append({"kind": "findings", "rows": [_finding_row(f) for f in findings]})
        if self.doctor and self.doctor.get("train_seconds"):
            seconds, total = self.doctor.get("probe_seconds", 0.0), self.doctor["train_seconds"]
            out.append(
                note(
                    f"TrainingDoctor: its own probes ({self.doctor.get('probes', 0)}) and "
                    f"checks of the weights took {seconds:.2f} s of {total:.1f} s of training "
                    f"({seconds / total:.1%})."
                )
            )
        return out

    def bias_variance(self) -> list[dict]:
        test_metrics = self.test or {}
        kept = test_metrics.get("weights_epoch")
        kept_train = test_metrics.get("train_accuracy")
        train, dev, epoch = accuracies_at(self.history, kept, kept_train)
        test = test_metrics.get("accuracy")
        table = bias_variance(
            train,
            dev,
            test,
            self.bayes_error,
            _thresholds_of(self.config),
            stopped_early=restores_best_epoch(self.config),
        )
        if table is None:
            return [absent("no training and validation accuracy in metrics.csv")]
        bayes_cell = (
            "0 (assumed; set bayes_error=... in the config)"
            if table["bayes_error_assumed"]
            else _pct(table["bayes_error"])
        )
        rows = [
            ("human / Bayes error", bayes_cell),
            ("training error", _pct(table["train_error"])),
            ("dev (validation) error", _pct(table["dev_error"])),
            ("test error", _pct(table["test_error"])),
            ("avoidable bias (train - Bayes)", _pct(table["avoidable_bias"])),
            ("variance (dev - train)", _pct(table["variance"])),
            ("verdict", table["verdict"]),
            ("what to do", "; ".join(table["fixes"]) or "nothing: both are low"),
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
        return [
            note(f"Errors of epoch {epoch}: {which} ({measured})."),
            table_block(("", ""), rows),
        ]

    # --- curves -------------------------------------------------------------------------

    def curves(self) -> list[dict]:
        if not self.history.get("loss"):
            return [absent("no metrics.csv: training did not complete an epoch")]
        out = []
        epochs = self.history["epoch"]
        steps = self.step_losses()
        kept = (self.test or {}).get("weights_epoch")
        for name in ("loss", "accuracy"):
            series = {
                label: self.history[key]
                for key, label in ((name, "train"), (f"val_{name}", "validation"))
                if key in self.history
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
                    f"{(self.test or {}).get('monitor')}) and scored on the test split."
                )
            )
        lr = self.history.get("lr")
        if lr and len(set(lr)) > 1:
            figure = plots.curves(epochs, {"lr": lr}, "learning rate", "lr", log=True)
            out.append(image(figure, "learning rate"))
        elif lr:
            out.append(note(f"Constant learning rate {fmt(lr[0])}."))
        return out

    def step_losses(self) -> tuple[list[float], list[float]] | None:
        points = (self.doctor or {}).get("step_losses")
        spe = self.steps_per_epoch()
        if not points or not spe:
            return None
        finite = [(s, v) for s, v in points if isinstance(v, (int, float)) and math.isfinite(v)]
        return [(s + 1) / spe for s, _ in finite], [v for _, v in finite]

    def test_metrics(self) -> list[dict]:
        if self.test is None:
            if self.nan:
                return [absent("no test_metrics.json: training stopped on a NaN/Inf loss")]
            return [absent("no test_metrics.json: the run did not reach its test evaluation")]
        out = [table_block(("metric", "value"), list(self._test_scores().items()))]
        if self.test.get("model"):
            out.append(
                note(
                    "Scores of ",
                    link(self.test["model"]),
                    f" (epoch {self.test.get('weights_epoch')}); load it with ",
                    Code("kerasdiag.modeling.safe_load.load_model_safely"),
                    " to reproduce them.",
                )
            )
        return out + self.confusion_section()

    def confusion_section(self) -> list[dict]:
        c = self.confusion
        if not c or not c.get("matrix"):
            return [absent("no test_confusion.json: no confusion matrix for this run")]
        names = c.get("class_names") or [str(i) for i in range(len(c["matrix"]))]
        counts = [sum(row) for row in c["matrix"]]
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

    def _test_scores(self) -> dict[str, Any]:
        # The fields that say which model was scored, and its training-data scores, are not
        # test scores.
        return {
            k: v
            for k, v in (self.test or {}).items()
            if k not in _MODEL_FIELDS and not k.startswith(_TRAIN_PREFIX)
        }

    def _train_scores(self) -> dict[str, Any]:
        prefix = len(_TRAIN_PREFIX)
        test = self.test or {}
        return {
            k[prefix:]: v
            for k, v in test.items()
            if k.startswith(_TRAIN_PREFIX) and k != "train_examples"
        }

    def _train_text(self) -> str:
        scores = ", ".join(f"{k} {fmt(v)}" for k, v in self._train_scores().items())
        examples = (self.test or {}).get("train_examples")
        return f"{scores} ({examples} training examples, scored as the test split is)"

    # --- monitors -----------------------------------------------------------------------

    def steps_per_epoch(self) -> int | None:
        batch = (self.config.get("data") or {}).get("batch_size")
        train = (self.data or {}).get("train")
        if batch and train:
            return max(1, math.ceil(int(train) / int(batch)))
        rows = self.run.csv_rows(RunLayout.LEARNING_RATE)  # epoch, step at the epoch's start
        if len(rows) >= 2:
            return max(1, int(rows[1][1]) - int(rows[0][1]))
        return None

    def _epoch_x(self, step: float) -> float:
        return float(step) / (self.steps_per_epoch() or 1)

    def update_ratios(self) -> list[dict]:
        rows = self.run.csv_rows(RunLayout.UPDATE_RATIOS)
        if not rows:
            return [
                absent("no update_ratios.csv (monitors.update_ratio=false, or no epoch completed)")
            ]
        lines: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        kernels = any(r[2].endswith("kernel") for r in rows)
        for step, _epoch, variable, ratio, *_ in rows:
            if kernels and not variable.endswith("kernel"):
                continue
            x, y = lines[variable]
            x.append(self._epoch_x(step))
            y.append(_float(ratio))
        figure = plots.per_layer(
            _first(lines, MAX_LINES),
            "||W_after - W_before|| / ||W_before|| per optimizer step (~1e-3 is healthy)",
            "update ratio",
            # the band the run's UpdateRatioMonitor flagged by: it follows the optimizer
            band=update_ratio_band((self.config.get("optimizer") or {}).get("name", "sgd")),
        )
        out = [image(figure, "update ratios")]
        if kernels:
            out.append(note("kernels only (biases start at 0: their ratio says nothing)"))
        return out

    def gradients(self) -> list[dict]:
        rows = self.run.csv_rows(RunLayout.GRADIENT_NORMS)
        if not rows:
            return [
                absent("no gradient_norms.csv (monitors.gradients=false, or no epoch completed)")
            ]
        lines: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        for step, _epoch, name, norm in rows:
            x, y = lines[name]
            x.append(self._epoch_x(step))
            y.append(_float(norm))
        figure = plots.per_layer(
            _first(lines, MAX_LINES + 2),
            "gradient norm per layer on the probe batch",
            "gradient norm",
            dashed=("global_norm", "global_norm_clipped"),
        )
        return [image(figure, "gradient norms")]

    def activations(self) -> list[dict]:
        rows = self.run.csv_rows(RunLayout.ACTIVATIONS)
        if not rows:
            return [
                absent("no activations.csv (monitors.activations=false, or no epoch completed)")
            ]
        fractions: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        spread: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        for step, _epoch, layer, kind, _mean, std, _zero, dead, saturated in rows:
            x = self._epoch_x(step)
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
            figure = plots.per_layer(
                _first(fractions, MAX_LINES),
                "dead ReLU units / saturated tanh-sigmoid outputs on the probe batch",
                "fraction",
                log=False,
                ylim=(0.0, 1.0),
            )
            out.append(image(figure, "dead and saturated fractions"))
        figure = plots.per_layer(
            _first(spread, MAX_LINES), "standard deviation of each layer's output", "std"
        )
        return [*out, image(figure, "activation spread")]

    def histograms(self) -> list[dict]:
        log_dir = self.run.path / RunLayout.TENSORBOARD
        out = []
        for run_name, title in (("activations", "activations"), ("gradients", "gradients")):
            series = read_histograms(log_dir / run_name)
            if not series:
                continue
            panels = {}
            for tag, events in _first(series, MAX_LINES).items():
                (s0, h0), (s1, h1) = events[0], events[-1]
                panels[tag.split("/", 1)[-1]] = (
                    [(f"step {s0}", h0), (f"step {s1}", h1)] if s1 != s0 else [(f"step {s0}", h0)]
                )
            out += [
                heading(f"{title}: first and last probe"),
                image(plots.histograms(panels), f"{title} histograms"),
            ]
        if not out:
            return [
                absent(
                    "no activation or gradient histograms under tensorboard/ "
                    "(monitors.activations / monitors.gradients off, or trainer.tensorboard=false)"
                )
            ]
        return out

    def filters(self) -> list[dict]:
        first = self.run.path / RunLayout.FILTERS_INIT
        epochs = sorted(self.run.path.glob("filters_epoch*.png"))
        shown = [(p, "at initialisation") for p in [first] if p.is_file()]
        if epochs:
            shown.append((epochs[-1], f"after epoch {int(epochs[-1].stem[-3:])}"))
        if not shown:
            return [
                absent("no filter images (monitors.filters=false, or no Conv2D/Dense input layer)")
            ]
        figures = [
            {
                "kind": "figure",
                "img": image(plots.bytes_base64(p.read_bytes()), p.name, css=RunLayout.FILTERS),
                "caption": caption,
            }
            for p, caption in shown
        ]
        return [row(*figures), paragraph(self.filters_caption())]

    def filters_caption(self) -> str:
        """What the filter grids show, from the raw filters (``filters.npz``)."""
        path = self.run.path / RunLayout.FILTERS_RAW
        if not path.is_file():
            return "Each cell is one first-layer filter, scaled to its own range."
        with np.load(path) as raw:
            summary = filter_summary(raw["init"], raw["last"])
            layer, shape = str(raw["layer"]), raw["last"].shape
        return filters_caption(layer, shape, summary)

    # --- before training ----------------------------------------------------------------

    def sanity(self) -> list[dict]:
        stages = self.run.json(RunLayout.SANITY)
        if stages is None:
            return [absent("no sanity.json (sanity=off, or the run resumed without them)")]
        rows = [
            (
                s.get("name"),
                _status_badge(s.get("status")),
                s.get("value"),
                s.get("expected"),
                s.get("seconds"),
                " Fix: ".join(t for t in (s.get("message", ""), s.get("fix", "")) if t),
            )
            for s in stages
        ]
        headers = ("stage", "status", "value", "expected", "seconds", "message")
        return [table_block(headers, rows)]

    def lr_range(self) -> list[dict]:
        curve = self.run.json(RunLayout.LR_FINDER)
        if curve is None:
            return [
                absent("no lr_finder.json (run with sanity.lr_range=true or optimizer.lr=auto)")
            ]
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

    def gradcheck(self) -> list[dict]:
        report = self.run.json(RunLayout.GRADCHECK)
        if report is None:
            return [absent("no gradcheck.json (sanity.gradcheck=false, or the check was skipped)")]
        summary = paragraph(
            _status_badge("pass" if report.get("passed") else "fail"),
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
        notes = [*report.get("warnings", []), *report.get("notes", [])]
        return out + ([{"kind": "list", "entries": notes}] if notes else [])

    def data_summary(self) -> list[dict]:
        if self.data is None:
            return [absent("no data.json")]
        d = self.data
        rows = [
            ("data set", d.get("name")),
            ("input shape", " x ".join(str(s) for s in d.get("input_shape", []))),
            ("classes", d.get("num_classes")),
            ("train / validation / test", f"{d.get('train')} / {d.get('val')} / {d.get('test')}"),
        ]
        out = [table_block(("", ""), rows)]
        counts = d.get("train_class_counts")
        if counts:
            names = d.get("class_names") or list(range(len(counts)))
            figure = plots.bars(names, counts, "training examples per class", "examples")
            out.append(image(figure, "class counts"))
        return out

    def model_summary(self) -> list[dict]:
        path = self.run.path / RunLayout.SUMMARY
        if not path.is_file():
            return [absent("no summary.txt")]
        return [{"kind": "pre", "text": path.read_text()}]

    def config_section(self) -> list[dict]:
        path = self.run.path / RunLayout.CONFIG
        if not path.is_file():
            return [absent("no config.yaml")]
        return [{"kind": "details", "summary": RunLayout.CONFIG, "text": path.read_text()}]

    def files(self) -> list[dict]:
        items = [
            (link(p.name + ("/" if p.is_dir() else "")), _size(p))
            for p in sorted(self.run.path.iterdir())
            if not p.name.startswith(".")
        ]
        out = [
            note("Links are relative: they work while report.html sits in its run directory."),
            table_block(("file", "size"), items),
        ]
        if self.nan:
            rows = [(k, "; ".join(v) if isinstance(v, list) else v) for k, v in self.nan.items()]
            out += [heading("NaN stop record (nan.json)"), table_block(("", ""), rows)]
        return out


# --- TensorBoard histograms -----------------------------------------------------------------


def read_histograms(log_dir: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """{tag: [(step, buckets (k, 3)), ...]} of the histogram summaries in one TensorBoard run."""
    if not log_dir.is_dir():
        return {}
    if "tensorflow" not in sys.modules:
        # TensorBoard reads event files with its own TensorFlow stub when this module
        # exists; without it, it imports TensorFlow (seconds) just to read the histograms.
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("notf"))
    # Imported after the stub above is in place (and only when a run has histograms).
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    acc = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    out: dict[str, list[tuple[int, np.ndarray]]] = {}
    for tag in acc.Tags().get(event_accumulator.TENSORS, []):
        if acc.SummaryMetadata(tag).plugin_data.plugin_name != "histograms":
            continue
        events = sorted(acc.Tensors(tag), key=lambda e: e.step)
        arrays = [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in events]
        arrays = [(s, a) for s, a in arrays if a.ndim == 2 and a.shape[1] == 3]
        if arrays:
            out[tag] = arrays
    return out


# --- blocks: what a section shows, for the template to render (and escape) ---------------


@dataclass(frozen=True)
class Link:
    """A link to a file of the run, relative to report.html (which sits in the run directory)."""

    href: str
    text: str


@dataclass(frozen=True)
class Badge:
    css: str  # ok | warning | error
    text: str


@dataclass(frozen=True)
class Code:
    text: str


def link(relative: str) -> Link:
    href = "/".join(urllib.parse.quote(part) for part in str(relative).split("/"))
    return Link(href, str(relative))


def absent(text: str) -> dict:
    return {"kind": "absent", "text": text}


def note(*parts: Any) -> dict:
    return {"kind": "note", "parts": parts}


def paragraph(*parts: Any) -> dict:
    return {"kind": "p", "parts": parts}


def heading(text: str) -> dict:
    return {"kind": "h3", "text": text}


def image(b64: str, alt: str, css: str | None = None) -> dict:
    return {"kind": "img", "b64": b64, "alt": alt, "css": css}


def row(*blocks: dict) -> dict:
    return {"kind": "row", "blocks": blocks}


def table_block(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> dict:
    """A table; each cell is a value (formatted by :func:`fmt`), a Link or a Badge."""
    return {"kind": "table", "headers": headers, "rows": [list(r) for r in rows]}


def fmt(value: Any) -> str:
    """A value as the report shows it: numbers to 4 significant digits, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kerasdiag.report", "templates"),
        autoescape=True,  # every value is text: no markup can come from a run's files
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.tests.update(
        link=lambda v: isinstance(v, Link),
        badge=lambda v: isinstance(v, Badge),
        code=lambda v: isinstance(v, Code),
    )
    return env.get_template("report.html.j2")


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


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _opt(name: str, value: Any) -> str:
    return "" if value is None else f"{name} {value}"


def _status_badge(status: Any) -> Badge:
    return Badge(
        {"pass": "ok", "fail": "error", "skip": "warning"}.get(str(status), "warning"), str(status)
    )


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


def _first(mapping: Mapping[str, Any], n: int) -> dict[str, Any]:
    return dict(list(mapping.items())[:n])


def _thresholds_of(config: Mapping[str, Any]) -> Any:
    return ((config.get("monitors") or {}).get("doctor_thresholds")) or None


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


__all__ = ["build_report", "read_histograms"]
