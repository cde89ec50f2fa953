"""What a sampled gradient check found: one row per variable and part, every entry's raw values.

A report's ``status`` is ``failed`` when some entry is ``suspicious`` or ``fail``;
``inconclusive`` when nothing failed but more than half of what was compared was excused
(``kink``: every step size crossed a non-differentiable point; ``zero``: analytic and
numeric values both below the rounding floor, so nothing was compared); else ``passed``, and
``passed`` is True only then. A variable whose every entry is ``zero`` is ``unverified``, not
``ok``. The maximum relative error leaves kink and zero entries out, since their error
measures the kink or rounding, not the gradient. ``str(report)`` is the table a person
reads; ``to_dict()`` is what ``gradcheck.json`` holds.

Example:
    >>> row = VariableRow("data", "dense/bias", (3,), 3, 2e-10, "ok", kinks=0, retried=0)
    >>> report = GradcheckReport(rows=[row], elements=[], tolerance=1e-7, depth=1, h=1e-5)
    >>> report.passed, report.max_relative_error
    (True, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kerasdiag.checks.gradcheck.finite_diff import Attempt
from kerasdiag.checks.gradcheck.verdict import SUSPICIOUS, worst
from kerasdiag.core import text

PASSING = ("ok", "kink")
FAILING = ("suspicious", "fail")
EXCUSED = ("kink", "zero", "unverified")
# More than this share excused (kinks, zero within rounding) makes a check inconclusive.
INCONCLUSIVE_SHARE = 0.5
# Entries listed under the table when a check does not pass.
_SHOWN_ENTRIES = 8


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> str:
    """Left-aligned text columns (numbers as ``1.2e-09``)."""
    cells = [[_cell(v) for v in row] for row in rows]
    return text.format_table([list(headers), *cells], indent=indent)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:.1e}"
    return str(value)


class VerdictRows:
    """``status``, ``passed`` and ``failing`` of a report whose ``rows`` carry a verdict."""

    rows: list

    def excused(self) -> tuple[int, int]:
        """(compared items excused as kink or zero, items compared)."""
        return sum(r.verdict in EXCUSED for r in self.rows), len(self.rows)

    @property
    def status(self) -> str:
        """``failed``, ``inconclusive`` (mostly excused, or nothing compared, or the objective
        itself unstable: a report's ``unstable`` says why) or ``passed``."""
        if getattr(self, "unstable", ""):
            return "inconclusive"
        if self.failing:
            return "failed"
        excused, total = self.excused()
        return "inconclusive" if excused > INCONCLUSIVE_SHARE * total else "passed"

    @property
    def passed(self) -> bool:
        """True when nothing failed and most of what was compared was verified."""
        return self.status == "passed"

    @property
    def failing(self) -> list:
        """Rows whose verdict is ``suspicious`` or ``fail``."""
        return [r for r in self.rows if r.verdict in FAILING]

    @property
    def unverified(self) -> list:
        """Rows whose every compared value was rounding noise (``unverified``)."""
        return [r for r in self.rows if r.verdict == "unverified"]


@dataclass
class ElementCheck:
    """One sampled entry of one variable, compared in one part of the objective."""

    part: str
    variable: str
    index: tuple[int, ...]
    analytic: float
    verdict: str
    relative_error: float
    attempts: list[Attempt]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["index"] = list(self.index)
        return d


@dataclass
class VariableRow:
    """The summary of one variable in one part (``data`` or ``regularization``)."""

    part: str
    name: str
    shape: tuple[int, ...]
    dims: int
    max_relative_error: float
    verdict: str
    kinks: int = 0
    retried: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def summarize(part: str, name: str, shape: tuple[int, ...], elements: list[ElementCheck]):
    """The row of one variable from its entries' final verdicts."""
    smooth = [e.relative_error for e in elements if e.verdict not in ("kink", "zero")]
    errors = smooth or [e.relative_error for e in elements if e.verdict == "kink"]
    return VariableRow(
        part=part,
        name=name,
        shape=shape,
        dims=len(elements),
        max_relative_error=max(errors, default=float("nan")),
        verdict=worst(e.verdict for e in elements),
        kinks=sum(e.verdict == "kink" for e in elements),
        retried=sum(len(e.attempts) > 1 for e in elements),
    )


@dataclass
class GradcheckReport(VerdictRows):
    """The outcome of ``check_gradients``."""

    rows: list[VariableRow]
    elements: list[ElementCheck]
    tolerance: float
    depth: int
    h: float
    retry_steps: tuple[float, ...] = ()
    samples: int = 0
    loss: dict[str, float] = field(default_factory=dict)
    kink_types: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    # Why the objective itself is unstable with the examples at hand (then inconclusive).
    unstable: str = ""

    @property
    def max_relative_error(self) -> float:
        """The largest relative error of any entry that was compared (no kink, not zero)."""
        return max(
            (e.relative_error for e in self.elements if e.verdict not in ("kink", "zero")),
            default=0.0,
        )

    @property
    def bound(self) -> float:
        """The largest relative error a compared entry could pass with: the smooth
        tolerance, or the kinked-objective band (``< 1e-4``) when the objective has kinks.

        Entries whose difference is float64 rounding noise pass above it; the stage says so
        rather than show a passing number above its bound unexplained.
        """
        return max(self.tolerance, SUSPICIOUS) if self.kink_types else self.tolerance

    def excused(self) -> tuple[int, int]:
        """(entries excused as kink or zero, entries compared)."""
        return sum(e.verdict in EXCUSED for e in self.elements), len(self.elements)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "status": self.status,
            "max_relative_error": self.max_relative_error,
            "tolerance": self.tolerance,
            "depth": self.depth,
            "h": self.h,
            "retry_steps": list(self.retry_steps),
            "samples": self.samples,
            "loss": dict(self.loss),
            "kink_types": list(self.kink_types),
            "rows": [r.to_dict() for r in self.rows],
            "elements": [e.to_dict() for e in self.elements],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "settings": dict(self.settings),
            "seconds": self.seconds,
            "unstable": self.unstable,
        }

    def table(self) -> str:
        """The per-variable table alone."""
        headers = ("part", "variable", "shape", "dims", "max rel err", "verdict")
        return format_table(
            headers,
            [
                (r.part, r.name, r.shape, r.dims, r.max_relative_error, verdict_cell(r))
                for r in self.rows
            ],
        )

    def __str__(self) -> str:
        excused, total = self.excused()
        lines = [
            f"Gradient check {self.status.upper()}: max relative error "
            f"{self.max_relative_error:.1e} over {total - excused} of {total} entries compared "
            f"(float64 copy, {self.samples} example(s), h={self.h:g}, {self.seconds:.1f} s)",
            self.table(),
        ]
        lines += [f"  note: {n}" for n in self.notes]
        if self.unstable:
            lines.append(f"  inconclusive: {self.unstable}")
        else:
            lines += [f"  {line}" for line in unverified_advice(self, self.settings)]
        shown = sorted(
            (e for e in self.elements if e.verdict in FAILING),
            key=lambda e: -e.relative_error,
        )[:_SHOWN_ENTRIES]
        if shown:
            lines.append("  worst entries (analytic vs numeric at each step h):")
            lines += [f"    {_entry_line(e)}" for e in shown]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def unverified_advice(report: Any, settings: dict[str, Any]) -> list[str]:
    """What an ``unverified`` or ``inconclusive`` result means and what to run instead."""
    lines = []
    names = [getattr(r, "name", getattr(r, "variable", "")) for r in report.unverified]
    if names:
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        lines.append(
            f"unverified ({len(names)}): {shown}: their gradients are zero within rounding "
            "here, so they were not checked"
        )
    if names or report.status == "inconclusive":
        advice = []
        if not settings.get("training"):
            advice.append("training=True (BatchNorm at init gives near-zero gradients)")
        if not settings.get("warmup_steps"):
            advice.append("warmup_steps=20")
        advice.append("check_layer_gradients on the layer alone")
        lines.append("to verify them, check again with " + ", or ".join(advice))
    return lines


def verdict_cell(row: Any) -> str:
    """``fail (3 kink, 5 retried)``: a row's verdict with its kink and retry counts."""
    extra = [
        f"{row.kinks} kink" if row.kinks else "",
        f"{row.retried} retried" if row.retried else "",
    ]
    extra = [e for e in extra if e]
    return row.verdict + (f" ({', '.join(extra)})" if extra else "")


def _entry_line(e: ElementCheck) -> str:
    tries = "; ".join(
        f"h={a.h:g}: {a.numeric:.6e} err {a.relative_error:.1e}{' kink' if a.kink else ''}"
        for a in e.attempts
    )
    return f"{e.part} {e.variable}{list(e.index)} {e.verdict}: analytic {e.analytic:.6e}; {tries}"
