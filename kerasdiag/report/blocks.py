"""What a section shows, as data: blocks for the template to render (and escape).

A section of ``report.html`` is a list of blocks, dicts with a ``kind`` (table, img, note,
...) that ``templates/report.html.j2`` turns into HTML. Sections never write markup: every
value here is text, and the autoescaping template is the only place markup comes from, so
nothing in a run's files can inject any. Inline parts of a paragraph or a table cell are
plain values (formatted by :func:`fmt`), :class:`Link`, :class:`Badge` or :class:`Code`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# One block of a section: {"kind": ..., ...}, as the template's ``block`` macro reads it.
Block = dict[str, Any]


@dataclass(frozen=True)
class Link:
    """A link to a file of the run, relative to report.html (which sits in the run directory)."""

    href: str
    text: str


@dataclass(frozen=True)
class Badge:
    """A coloured label: ``css`` is ok | warning | error (report.css colours them)."""

    css: str
    text: str


@dataclass(frozen=True)
class Code:
    """A Python name or snippet, set in a monospace font."""

    text: str


def link(relative: str) -> Link:
    """A link to ``relative`` (a path inside the run directory), each part URL-quoted."""
    href = "/".join(urllib.parse.quote(part) for part in str(relative).split("/"))
    return Link(href, str(relative))


def status_badge(status: Any) -> Badge:
    """The badge of a check's status: pass is ok, fail an error, anything else a warning."""
    css = {"pass": "ok", "fail": "error", "skip": "warning"}.get(str(status), "warning")
    return Badge(css, str(status))


def absent(text: str) -> Block:
    """The one line a section shows when the files it draws from are missing."""
    return {"kind": "absent", "text": text}


def note(*parts: Any) -> Block:
    """A small grey paragraph: how to read what is above it."""
    return {"kind": "note", "parts": parts}


def paragraph(*parts: Any) -> Block:
    return {"kind": "p", "parts": parts}


def heading(text: str) -> Block:
    return {"kind": "h3", "text": text}


def image(b64: str, alt: str, css: str | None = None) -> Block:
    """An embedded PNG (base64): the page needs no file beside it."""
    return {"kind": "img", "b64": b64, "alt": alt, "css": css}


def figure(img: Block, caption: str) -> Block:
    """An image block with a caption under it."""
    return {"kind": "figure", "img": img, "caption": caption}


def row(*blocks: Block) -> Block:
    """Blocks side by side (wrapping on a narrow screen)."""
    return {"kind": "row", "blocks": blocks}


def table_block(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> Block:
    """A table; each cell is a value (formatted by :func:`fmt`), a Link or a Badge."""
    return {"kind": "table", "headers": headers, "rows": [list(r) for r in rows]}


def bullets(entries: Sequence[str]) -> Block:
    return {"kind": "list", "entries": entries}


def preformatted(text: str) -> Block:
    return {"kind": "pre", "text": text}


def details(summary: str, text: str) -> Block:
    """Preformatted text folded away under ``summary`` (long files such as the config)."""
    return {"kind": "details", "summary": summary, "text": text}


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


def pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal (errors differ by tenths of a percent)."""
    return "—" if value is None else f"{value:.1%}"
