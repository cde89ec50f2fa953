"""``report.html``: everything a run learned, on one self-contained page.

The page is built from the files in the run directory alone, so it can be rebuilt at any
time (``python scripts/report.py RUN_DIR``) and a run directory copied elsewhere keeps its
report. Plots are PNGs embedded as base64; there are no external scripts, styles or images.
A section whose files are missing says so in one line.

The page is :data:`SECTIONS` in order, each a function of the run (``report/sections/``)
returning blocks (``report/blocks.py``) that the autoescaping template
``templates/report.html.j2`` renders.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jinja2

from kerasdiag.core.faults import kill_point
from kerasdiag.core.io import write_text_atomic
from kerasdiag.core.rundir import RunLayout
from kerasdiag.report.blocks import Badge, Block, Code, Link, absent, fmt
from kerasdiag.report.context import RunContext
from kerasdiag.report.events import read_histograms
from kerasdiag.report.header import facts, page_title, run_status, status
from kerasdiag.report.sections import checks, contents, curves, diagnosis, monitors


class Section(NamedTuple):
    anchor: str  # the section's id in the page (links: report.html#curves)
    title: str
    build: Callable[[RunContext], list[Block]]


SECTIONS: tuple[Section, ...] = (
    Section("diagnosis", "Diagnosis", diagnosis.diagnosis),
    Section("bias-variance", "Bias and variance", diagnosis.bias_variance_table),
    Section("curves", "Learning curves", curves.curves),
    Section("test", "Test metrics", curves.test_metrics),
    Section("update-ratios", "Update / weight ratios", monitors.update_ratios),
    Section("gradients", "Gradients", monitors.gradients),
    Section("activations", "Activations", monitors.activations),
    Section("histograms", "Histograms", monitors.histograms),
    Section("filters", "First-layer filters", monitors.filters),
    Section("sanity", "Sanity checks", checks.sanity),
    Section("lr-range", "Learning-rate range test", checks.lr_range),
    Section("gradcheck", "Gradient check", checks.gradcheck),
    Section("data", "Data", contents.data),
    Section("model", "Model", contents.model),
    Section("config", "Config", contents.config),
    Section("files", "Files", contents.files),
    Section("time", "Where the time went", contents.time_spent),
)

# A malformed file fails its own section, shown in one line, not the page.
_SECTION_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError)


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
    run = RunContext.read(run_dir, bayes_error)
    return write_text_atomic(run.path / RunLayout.REPORT, render(run))


def render(run: RunContext) -> str:
    """The page's HTML: the header, then every section of :data:`SECTIONS` in order."""
    rendered = []
    for section in SECTIONS:
        try:
            blocks = section.build(run)
        except _SECTION_ERRORS as exc:
            blocks = [absent(f"could not render this section: {type(exc).__name__}: {exc}")]
        rendered.append({"anchor": section.anchor, "title": section.title, "blocks": blocks})
        kill_point("report-section", len(rendered))  # a test's fault injection; else inert
    return _template().render(
        title=page_title(run), status=status(run), facts=facts(run), sections=rendered
    )


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


# read_histograms and run_status are imported from here by scripts and tests.
__all__ = ["SECTIONS", "Section", "build_report", "read_histograms", "render", "run_status"]
