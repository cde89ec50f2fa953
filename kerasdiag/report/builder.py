"""``report.html``: everything a run learned, on one self-contained page (B3).

The page is built from the files in the run directory alone, so it can be rebuilt at any
time (``python scripts/report.py RUN_DIR``) and a run directory copied elsewhere keeps its
report. Plots are PNGs embedded as base64; there are no external scripts, styles or images.
A section whose files are missing says so in one line.
"""

from __future__ import annotations

import datetime
import html
import math
import os
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerasdiag.diagnosis import (
    DIAGNOSIS_FILE,
    DOCTOR_FILE,
    NAN_FILE,
    Finding,
    RunFiles,
    accuracies_at,
    bias_variance,
    diagnose,
    failed_stages,
)
from kerasdiag.io import write_text_atomic
from kerasdiag.report import plots
from kerasdiag.report.filters import FILTERS_FILE, filter_summary, filters_caption

REPORT_FILE = "report.html"
CONFUSION_FILE = "test_confusion.json"  # written by kerasdiag.pipeline
# Test-metrics fields that describe the scored model rather than score it.
_MODEL_FIELDS = ("model", "weights_epoch", "monitor", "monitor_value", "ema_model")
TENSORBOARD_DIR = "tensorboard"
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
    return write_text_atomic(report.run.path / REPORT_FILE, report.render())


class _Report:
    """One rendering of a run directory: reads each file once, renders each section."""

    def __init__(self, run: RunFiles, bayes_error: float | None = None):
        self.run = run
        self.config = run.config() or {}
        self.bayes_error = self.config.get("bayes_error") if bayes_error is None else bayes_error
        self.history = run.history()
        self.data = run.json("data.json")
        self.doctor = run.json(DOCTOR_FILE)
        self.test = run.json("test_metrics.json")
        self.nan = run.json(NAN_FILE)
        self.stages = run.json("sanity.json") or []
        self.confusion = run.json(CONFUSION_FILE)

    # --- page ---------------------------------------------------------------------------

    def render(self) -> str:
        sections: list[tuple[str, str, Callable[[], str]]] = [
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
        body = []
        for anchor, title, render in sections:
            try:
                content = render()
            except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
                content = _absent(f"could not render this section: {type(exc).__name__}: {exc}")
            body.append(f'<section id="{anchor}"><h2>{_esc(title)}</h2>\n{content}\n</section>')
        toc = " · ".join(f'<a href="#{a}">{_esc(t)}</a>' for a, t, _ in sections)
        from kerasdiag.naming import run_title  # the data and model really used

        recipe = run_title(self.config) if self.config else self.run.path.name
        return _PAGE.format(
            title=_esc(f"kerasdiag report: {recipe}"),
            css=_CSS,
            header=self.header(),
            toc=toc,
            body="\n".join(body),
        )

    def header(self) -> str:
        recipe = self.config.get("recipe") or "?"
        status = _badge_html(*run_status(self.test, self.nan, failed_stages(self.stages)))
        facts = [("recipe", _esc(recipe)), ("run directory", _esc(self.run.path.resolve()))]
        epochs = len(self.history.get("loss", []))
        if epochs:
            facts.append(("epochs", _esc(epochs)))
        if self.test:
            facts += [(f"test {_esc(k)}", _esc(_fmt(v))) for k, v in self._test_scores().items()]
            if self.test.get("weights_epoch") is not None:
                facts.append(("kept epoch", _esc(self._kept_text())))
            if self.test.get("model"):
                facts.append(("kept model", _link(self.test["model"])))
        generated = datetime.datetime.now().isoformat(timespec="seconds")
        facts.append(("report built", generated))
        items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        return f"<p>{status}</p><dl class=facts>{items}</dl>"

    def _kept_text(self) -> str:
        test = self.test or {}
        value = test.get("monitor_value")
        best = f" (best {test.get('monitor')}: {_fmt(value)})" if value is not None else ""
        return f"{test.get('weights_epoch')}{best}"

    # --- diagnosis ------------------------------------------------------------------------

    def findings(self) -> tuple[list[Finding], bool]:
        """The findings, and whether diagnose() had to run now."""
        stored = self.run.json(DIAGNOSIS_FILE)
        if stored is not None:
            return [Finding.from_dict(d) for d in stored], False
        return diagnose(self.run.path, bayes_error=self.bayes_error), True

    def diagnosis(self) -> str:
        findings, computed = self.findings()
        note = f"<p class=note>{DIAGNOSIS_FILE} was missing: diagnosed now.</p>" if computed else ""
        overhead = ""
        if self.doctor and self.doctor.get("train_seconds"):
            share = self.doctor.get("probe_seconds", 0.0) / self.doctor["train_seconds"]
            overhead = (
                f"<p class=note>TrainingDoctor: {self.doctor.get('probes', 0)} own probe(s), "
                f"{self.doctor.get('probe_seconds', 0.0):.2f} s of "
                f"{self.doctor['train_seconds']:.1f} s of training ({share:.1%}).</p>"
            )
        if not findings:
            return (
                f'{note}<p><span class="badge ok">no symptoms</span> Neither the doctor during '
                f"training nor the curves afterwards named a problem.</p>{overhead}"
            )
        rows = []
        for f in findings:
            when = ", ".join(
                p
                for p in (_opt("step", f.step), _opt("epoch", f.epoch), _opt("layer", f.layer))
                if p
            )
            if f.count > 1:
                when += f" (seen {f.count}x, last at step {f.last_step})"
            rows.append(
                "<tr>"
                f'<td><span class="badge {_esc(f.severity)}">{_esc(f.severity)}</span></td>'
                f"<td><b>{_esc(f.symptom)}</b><br><small>{_esc(when)}</small></td>"
                f"<td>{_esc(_what(f))}<br>{_evidence(f.evidence)}</td>"
                f"<td>{_esc(f.fix)}</td>"
                "</tr>"
            )
        table = (
            "<table class=findings><tr><th></th><th>symptom</th><th>evidence</th>"
            f"<th>fix</th></tr>{''.join(rows)}</table>"
        )
        return f"{note}{table}{overhead}"

    def bias_variance(self) -> str:
        test_metrics = self.test or {}
        kept = test_metrics.get("weights_epoch")
        train, dev, epoch = accuracies_at(self.history, kept)
        test = test_metrics.get("accuracy")
        table = bias_variance(train, dev, test, self.bayes_error, _thresholds_of(self.config))
        if table is None:
            return _absent("no training and validation accuracy in metrics.csv")
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
        return (
            f"<p class=note>Errors of epoch {epoch}: {which} (training error as measured "
            f"during that epoch).</p>" + _table(("", ""), rows)
        )

    # --- curves -------------------------------------------------------------------------

    def curves(self) -> str:
        if not self.history.get("loss"):
            return _absent("no metrics.csv: training did not complete an epoch")
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
                out.append(_img(figure, f"{name} curve"))
        if kept is not None:
            out.append(
                f"<p class=note>The dashed line marks epoch {_esc(kept)}, whose weights the run "
                f"kept (best {_esc((self.test or {}).get('monitor'))}) and scored on the test "
                "split.</p>"
            )
        lr = self.history.get("lr")
        if lr and len(set(lr)) > 1:
            out.append(
                _img(
                    plots.curves(
                        self.history["epoch"], {"lr": lr}, "learning rate", "lr", log=True
                    ),
                    "learning rate",
                )
            )
        elif lr:
            out.append(f"<p class=note>Constant learning rate {_fmt(lr[0])}.</p>")
        return "".join(out)

    def step_losses(self) -> tuple[list[float], list[float]] | None:
        points = (self.doctor or {}).get("step_losses")
        spe = self.steps_per_epoch()
        if not points or not spe:
            return None
        finite = [(s, v) for s, v in points if isinstance(v, (int, float)) and math.isfinite(v)]
        return [(s + 1) / spe for s, _ in finite], [v for _, v in finite]

    def test_metrics(self) -> str:
        if self.test is None:
            if self.nan:
                return _absent("no test_metrics.json: training stopped on a NaN/Inf loss")
            return _absent("no test_metrics.json: the run did not reach its test evaluation")
        rows = [(k, _fmt(v)) for k, v in self._test_scores().items()]
        out = _table(("metric", "value"), rows)
        if self.test.get("model"):
            out += (
                f"<p class=note>Scores of {_link(self.test['model'])} (epoch "
                f"{_esc(self.test.get('weights_epoch'))}); load it with "
                "<code>kerasdiag.io.load_model_safely</code> to reproduce them.</p>"
            )
        return out + self.confusion_section()

    def confusion_section(self) -> str:
        c = self.confusion
        if not c or not c.get("matrix"):
            return _absent("no test_confusion.json: no confusion matrix for this run")
        names = c.get("class_names") or [str(i) for i in range(len(c["matrix"]))]
        counts = [sum(row) for row in c["matrix"]]
        per_class = c.get("per_class_accuracy") or []
        rows = [
            (name, n, "—" if acc is None else f"{acc:.1%}")
            for name, n, acc in zip(names, counts, per_class, strict=False)
        ]
        return (
            "<h3>Confusion matrix and per-class accuracy (test split)</h3><div class=row>"
            + _img(plots.confusion(c["matrix"], names), "confusion matrix")
            + _table(("class", "test examples", "accuracy"), rows)
            + "</div>"
        )

    def _test_scores(self) -> dict[str, Any]:
        # The fields that say which model was scored are not scores.
        return {k: v for k, v in (self.test or {}).items() if k not in _MODEL_FIELDS}

    # --- monitors -----------------------------------------------------------------------

    def steps_per_epoch(self) -> int | None:
        batch = (self.config.get("data") or {}).get("batch_size")
        train = (self.data or {}).get("train")
        if batch and train:
            return max(1, math.ceil(int(train) / int(batch)))
        rows = self.run.csv_rows("learning_rate.csv")  # epoch, step at the epoch's start
        if len(rows) >= 2:
            return max(1, int(rows[1][1]) - int(rows[0][1]))
        return None

    def _epoch_x(self, step: float) -> float:
        return float(step) / (self.steps_per_epoch() or 1)

    def update_ratios(self) -> str:
        rows = self.run.csv_rows("update_ratios.csv")
        if not rows:
            return _absent(
                "no update_ratios.csv (monitors.update_ratio=false, or no epoch completed)"
            )
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
            band=plots.update_ratio_band(),
        )
        note = "kernels only (biases start at 0: their ratio says nothing)" if kernels else ""
        return _img(figure, "update ratios") + (f"<p class=note>{note}</p>" if note else "")

    def gradients(self) -> str:
        rows = self.run.csv_rows("gradient_norms.csv")
        if not rows:
            return _absent(
                "no gradient_norms.csv (monitors.gradients=false, or no epoch completed)"
            )
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
        return _img(figure, "gradient norms")

    def activations(self) -> str:
        rows = self.run.csv_rows("activations.csv")
        if not rows:
            return _absent("no activations.csv (monitors.activations=false, or no epoch completed)")
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
            out.append(
                _img(
                    plots.per_layer(
                        _first(fractions, MAX_LINES),
                        "dead ReLU units / saturated tanh-sigmoid outputs on the probe batch",
                        "fraction",
                        log=False,
                        ylim=(0.0, 1.0),
                    ),
                    "dead and saturated fractions",
                )
            )
        out.append(
            _img(
                plots.per_layer(
                    _first(spread, MAX_LINES),
                    "standard deviation of each layer's output",
                    "std",
                ),
                "activation spread",
            )
        )
        return "".join(out)

    def histograms(self) -> str:
        log_dir = self.run.path / TENSORBOARD_DIR
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
            out.append(
                f"<h3>{_esc(title)}: first and last probe</h3>"
                + _img(plots.histograms(panels), f"{title} histograms")
            )
        if not out:
            return _absent(
                "no activation or gradient histograms under tensorboard/ "
                "(monitors.activations / monitors.gradients off, or trainer.tensorboard=false)"
            )
        return "".join(out)

    def filters(self) -> str:
        first = self.run.path / "filters_init.png"
        epochs = sorted(self.run.path.glob("filters_epoch*.png"))
        shown = [(p, "at initialisation") for p in [first] if p.is_file()]
        if epochs:
            shown.append((epochs[-1], f"after epoch {int(epochs[-1].stem[-3:])}"))
        if not shown:
            return _absent(
                "no filter images (monitors.filters=false, or no Conv2D/Dense input layer)"
            )
        cells = "".join(
            f"<figure>{_img(plots.bytes_base64(p.read_bytes()), p.name, css='filters')}"
            f"<figcaption>{_esc(caption)}</figcaption></figure>"
            for p, caption in shown
        )
        return f"<div class=row>{cells}</div><p>{_esc(self.filters_caption())}</p>"

    def filters_caption(self) -> str:
        """What the filter grids show, from the raw filters (``filters.npz``)."""
        path = self.run.path / FILTERS_FILE
        if not path.is_file():
            return "Each cell is one first-layer filter, scaled to its own range."
        with np.load(path) as raw:
            summary = filter_summary(raw["init"], raw["last"])
            layer, shape = str(raw["layer"]), raw["last"].shape
        return filters_caption(layer, shape, summary)

        # --- before training ----------------------------------------------------------------

    def sanity(self) -> str:
        stages = self.run.json("sanity.json")
        if stages is None:
            return _absent("no sanity.json (sanity=off, or the run resumed without them)")
        rows = [
            (
                s.get("name"),
                _badge(s.get("status")),
                _fmt(s.get("value")),
                _fmt(s.get("expected")),
                _fmt(s.get("seconds")),
                s.get("message", ""),
            )
            for s in stages
        ]
        return _table(("stage", "status", "value", "expected", "seconds", "message"), rows, raw=1)

    def lr_range(self) -> str:
        from kerasdiag.report.lr_range import lr_range_section

        return lr_range_section(self.run.json("lr_finder.json"))

    def gradcheck(self) -> str:
        report = self.run.json("gradcheck.json")
        if report is None:
            return _absent("no gradcheck.json (sanity.gradcheck=false, or the check was skipped)")
        status = _badge("pass" if report.get("passed") else "fail")
        summary = (
            f"<p>{status} max relative error {_fmt(report.get('max_relative_error'))} "
            f"(tolerance {_fmt(report.get('tolerance'))}, h={_fmt(report.get('h'))}, "
            f"{report.get('samples')} example(s), depth {report.get('depth')}, "
            f"{_fmt(report.get('seconds'))} s)</p>"
        )
        rows = [
            (
                r.get("part"),
                r.get("name"),
                "x".join(str(d) for d in r.get("shape", [])),
                r.get("dims"),
                _fmt(r.get("max_relative_error")),
                r.get("verdict"),
                r.get("kinks"),
            )
            for r in report.get("rows", [])
        ]
        table = _table(
            ("part", "variable", "shape", "dims", "max rel. error", "verdict", "kinks"), rows
        )
        notes = "".join(
            f"<li>{_esc(n)}</li>" for n in [*report.get("warnings", []), *report.get("notes", [])]
        )
        return summary + table + (f"<ul class=note>{notes}</ul>" if notes else "")

    def data_summary(self) -> str:
        if self.data is None:
            return _absent("no data.json")
        d = self.data
        rows = [
            ("data set", d.get("name")),
            ("input shape", " x ".join(str(s) for s in d.get("input_shape", []))),
            ("classes", d.get("num_classes")),
            ("train / validation / test", f"{d.get('train')} / {d.get('val')} / {d.get('test')}"),
        ]
        out = _table(("", ""), rows)
        counts = d.get("train_class_counts")
        if counts:
            names = d.get("class_names") or list(range(len(counts)))
            out += _img(
                plots.bars(names, counts, "training examples per class", "examples"),
                "class counts",
            )
        return out

    def model_summary(self) -> str:
        path = self.run.path / "summary.txt"
        if not path.is_file():
            return _absent("no summary.txt")
        return f"<pre>{_esc(path.read_text())}</pre>"

    def config_section(self) -> str:
        path = self.run.path / "config.yaml"
        if not path.is_file():
            return _absent("no config.yaml")
        return (
            f"<details><summary>config.yaml</summary><pre>{_esc(path.read_text())}</pre></details>"
        )

    def files(self) -> str:
        items = []
        for p in sorted(self.run.path.iterdir()):
            if p.name.startswith("."):
                continue
            items.append((_link(p.name + ("/" if p.is_dir() else "")), _esc(_size(p))))
        extra = ""
        if self.nan:
            extra = "<h3>NaN stop record (nan.json)</h3>" + _table(
                ("", ""),
                [
                    (k, _fmt(v) if not isinstance(v, list) else "; ".join(v))
                    for k, v in self.nan.items()
                ],
            )
        return (
            "<p class=note>Links are relative: they work while report.html sits in its run "
            "directory.</p>" + _table(("file", "size"), items, raw=(0, 1)) + extra
        )


# --- TensorBoard histograms -----------------------------------------------------------------


def read_histograms(log_dir: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """{tag: [(step, buckets (k, 3)), ...]} of the histogram summaries in one TensorBoard run."""
    if not log_dir.is_dir():
        return {}
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


# --- HTML helpers ---------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _opt(name: str, value: Any) -> str:
    return "" if value is None else f"{name} {value}"


def _badge(status: Any) -> str:
    css = {"pass": "ok", "fail": "error", "skip": "warning"}.get(str(status), "warning")
    return f'<span class="badge {css}">{_esc(status)}</span>'


def _link(relative: str) -> str:
    """A link to a file of the run, relative to report.html (which sits in the run directory)."""
    href = "/".join(urllib.parse.quote(part) for part in str(relative).split("/"))
    return f'<a href="{_esc(href)}">{_esc(relative)}</a>'


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


def _badge_html(css: str, text: str) -> str:
    return f'<span class="badge {css}">{_esc(text)}</span>'


def _absent(text: str) -> str:
    return f"<p class=absent>{_esc(text)}.</p>"


def _img(b64: str, alt: str, css: str | None = None) -> str:
    klass = f" class={css}" if css else ""
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{b64}"{klass}>'


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], raw: int | Sequence[int] | None = None
) -> str:
    """An HTML table; cells are escaped except the column(s) ``raw`` (already HTML)."""
    raw = () if raw is None else ((raw,) if isinstance(raw, int) else tuple(raw))
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers) if any(headers) else ""
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{cell if i in raw else _esc(_fmt(cell))}</td>" for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _what(finding: Finding) -> str:
    """The message without its "<symptom> at step s, epoch e: " prefix (shown beside it)."""
    head, sep, rest = finding.message.partition(": ")
    return rest if sep and head.startswith(finding.symptom) else finding.message


def _evidence(evidence: Mapping[str, Any]) -> str:
    """Evidence numbers as a compact list; long lists and dicts shortened."""
    items = []
    for key, value in evidence.items():
        if isinstance(value, Mapping):
            parts = [f"{k}={_fmt(v)}" for k, v in list(value.items())[:6]]
            text = ", ".join(parts) + (" ..." if len(value) > 6 else "")
        elif isinstance(value, (list, tuple)):
            text = ", ".join(_fmt(v) for v in value[:8]) + (" ..." if len(value) > 8 else "")
        else:
            text = _fmt(value)
        items.append(f"<li><code>{_esc(key)}</code> {_esc(text)}</li>")
    return f"<ul class=evidence>{''.join(items)}</ul>"


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


_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1180px; padding: 0 16px 40px; color: #1d1d1f; }
h1 { font-size: 22px; margin: 18px 0 6px; }
h2 { font-size: 18px; border-bottom: 1px solid #ddd; padding-bottom: 3px; margin-top: 28px; }
nav { font-size: 13px; margin: 6px 0 12px; }
nav a { color: #0b62c4; text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d6d6d6; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f6; }
table.findings td:nth-child(3) { max-width: 480px; }
table.findings td:nth-child(4) { max-width: 380px; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 9px; font-size: 12px;
         font-weight: 600; color: #fff; }
.badge.ok { background: #2e8540; } .badge.warning { background: #c77c02; }
.badge.error { background: #c62828; }
.absent { color: #777; font-style: italic; }
.note { color: #555; font-size: 12.5px; }
ul.evidence { margin: 4px 0 0; padding-left: 18px; font-size: 12px; color: #333; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; margin: 6px 0; }
dl.facts dt { color: #666; } dl.facts dd { margin: 0; }
img { max-width: 100%; margin: 4px 8px 4px 0; vertical-align: top; }
img.filters { width: 340px; image-rendering: pixelated; border: 1px solid #ccc; }
.row { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; }
pre { background: #f6f6f8; padding: 8px; overflow-x: auto; font-size: 12px; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body><h1>{title}</h1>
{header}
<nav>{toc}</nav>
{body}
</body></html>
"""

__all__ = ["REPORT_FILE", "build_report", "read_histograms"]
