"""The report's figures: matplotlib on the Agg canvas, returned as base64 PNG for <img> tags."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

DPI = 80
WIDTH = 7.5  # inches; two figures fit side by side on a laptop screen at 80 dpi


def new_figure(rows: int = 1, cols: int = 1, height: float = 3.4, width: float = WIDTH):
    """A figure and its axes (always a flat list), drawn without a display."""
    fig = Figure(figsize=(width, height * rows), dpi=DPI)
    FigureCanvasAgg(fig)
    # Fixed margins: tight_layout measures every tick label and costs more than drawing.
    fig.subplots_adjust(
        left=0.11,
        right=0.97,
        bottom=0.36 / (height * rows) + 0.06,
        top=1 - 0.35 / (height * rows),
        hspace=0.55,
        wspace=0.3,
    )
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(rows * cols)]
    return fig, axes


def set_title(ax, text: str, **kwargs) -> None:
    """``ax.set_title`` at a fixed height: without ``y``, matplotlib measures every tick label
    of the axes at each drawing to lift the title over labels at the top (none here), ~15%
    of a small figure's drawing time."""
    ax.set_title(text, y=1.0, **kwargs)


def log_y(ax) -> None:
    """A log y axis, its unlabelled minor ticks left out where the data spans two decades or
    more (the major ticks then label it; minor ticks were a third of such a figure's
    drawing). Call it once the data is drawn."""
    ax.set_yscale("log")
    low, high = ax.dataLim.intervaly
    if low > 0 and high / low >= 100:
        ax.yaxis.set_minor_locator(NullLocator())


def png_base64(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def bytes_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# Labels with a fixed look; other series take the next colour of the cycle.
STEP_LABEL = "train (per step)"
_STYLES = {
    STEP_LABEL: {"color": "tab:blue", "alpha": 0.3, "lw": 0.8},
    "train": {"color": "tab:blue", "marker": "o", "ms": 3},
    "validation": {"color": "tab:orange", "marker": "o", "ms": 3},
}


class CurveFigure:
    """One metric's curves against epochs: the one renderer of loss and accuracy curves.

    :class:`~kerasdiag.callbacks.CurvePlotter` keeps one per metric during training and
    redraws it after epochs (only the lines' data change: building axes and ticks costs as
    much again as drawing); the report draws one per metric from metrics.csv.

    Example:
        >>> figure = CurveFigure("loss")
        >>> figure.draw([("train", [1, 2, 3], [2.3, 1.1, 0.7])])
        >>> figure.png()[:4]
        b'\x89PNG'
    """

    def __init__(
        self, title: str, ylabel: str | None = None, *, log: bool = False, size=(WIDTH, 3.4)
    ):
        self.fig, (self.ax,) = new_figure(width=size[0], height=size[1])
        self.ax.set_xlabel("epoch")
        self.ax.set_ylabel(title if ylabel is None else ylabel)
        set_title(self.ax, title)
        self.ax.grid(alpha=0.3)
        if log:
            self.ax.set_yscale("log")
        self.lines: dict = {}

    def draw(
        self,
        series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
        mark: int | None = None,
    ) -> None:
        """Set each (label, x in epochs, y) line; ``mark``: a dashed line at that epoch."""
        added = False
        if mark is not None and "mark" not in self.lines:
            self.lines["mark"] = self.ax.axvline(mark, color="tab:green", ls="--", lw=1.2)
        if mark is not None and self.lines["mark"].get_label() != f"kept: epoch {mark}":
            # A redrawn figure moves its mark when the kept epoch changes.
            self.lines["mark"].set_xdata([mark, mark])
            self.lines["mark"].set_label(f"kept: epoch {mark}")
            added = True
        colors = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"])
        for label, xs, ys in series:
            if label not in self.lines:
                style = _STYLES.get(label) or {"color": next(colors), "marker": "o", "ms": 3}
                (self.lines[label],) = self.ax.plot([], [], label=label, **style)
                added = True
            self.lines[label].set_data(xs, ys)
        if added:
            self.ax.legend(loc="best", fontsize="small")
        self.ax.relim()
        self.ax.autoscale_view()

    def png(self, dpi: int = DPI, compress_level: int | None = None) -> bytes:
        buffer = io.BytesIO()
        extra = {} if compress_level is None else {"pil_kwargs": {"compress_level": compress_level}}
        self.fig.savefig(buffer, format="png", dpi=dpi, **extra)
        return buffer.getvalue()


def curves(
    epochs: Sequence[float],
    series: Mapping[str, Sequence[float]],
    title: str,
    ylabel: str,
    steps: tuple[Sequence[float], Sequence[float]] | None = None,
    log: bool = False,
    mark: int | None = None,
) -> str:
    """Lines against epochs (from 1); ``steps`` adds a light per-step curve (x in epochs);
    ``mark`` draws a vertical line at the epoch whose weights the run kept."""
    figure = CurveFigure(title, ylabel, log=log)
    lines = [(STEP_LABEL, *steps)] if steps is not None and len(steps[0]) else []
    figure.draw(lines + [(label, epochs, values) for label, values in series.items()], mark)
    return bytes_base64(figure.png())


def per_layer(
    lines: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    ylabel: str,
    log: bool = True,
    band: tuple[float, float] | None = None,
    dashed: Sequence[str] = (),
    ylim: tuple[float, float] | None = None,
) -> str:
    """One line per layer (x in epochs); ``band`` shades a healthy range."""
    fig, (ax,) = new_figure(height=3.8)
    if band is not None:
        ax.axhspan(*band, color="tab:green", alpha=0.12, label="healthy band")
    for name, (x, y) in lines.items():
        y = np.asarray(y, dtype=np.float64)
        if log:
            y = np.where(y > 0, y, np.nan)  # log axes cannot show 0; a gap says "zero"
        ax.plot(x, y, "--" if name in dashed else "-", marker=".", ms=3, lw=1, label=name)
    if ylim is not None:
        ax.set_ylim(*ylim)
    _finish(ax, title, ylabel, log)
    return png_base64(fig)


def histograms(panels: Mapping[str, Sequence[tuple[str, np.ndarray]]], max_panels: int = 12) -> str:
    """Small multiples: for each tag, its (label, buckets) histograms overlaid.

    ``buckets`` are TensorBoard's rows (left edge, right edge, count).
    """
    names = list(panels)[:max_panels]
    cols = 3 if len(names) > 2 else len(names)
    rows = math.ceil(len(names) / cols)
    fig, axes = new_figure(rows, cols, height=2.2)
    for ax, name in zip(axes, names, strict=False):
        for (label, buckets), color in zip(panels[name], ("0.6", "tab:blue"), strict=False):
            buckets = np.asarray(buckets, dtype=np.float64)
            left, right, count = buckets[:, 0], buckets[:, 1], buckets[:, 2]
            if len(left) > 1 and np.allclose(right[:-1], left[1:]):
                # contiguous buckets (TensorBoard's): one filled outline, not a bar per bucket
                # (a Rectangle each made these figures the slowest part of the report)
                edges = np.append(left, right[-1])
                ax.stairs(count, edges, fill=True, color=color, alpha=0.6, label=label)
            else:
                width = np.where(right > left, right - left, 1e-3)
                ax.bar(left, count, width=width, align="edge", color=color, alpha=0.6, label=label)
        set_title(ax, name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="upper right")  # "best" measures every artist: slow
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    return png_base64(fig)


def bars(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str) -> str:
    fig, (ax,) = new_figure(height=2.6)
    ax.bar([str(v) for v in labels], values, color="tab:blue")
    set_title(ax, title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelsize=7)
    return png_base64(fig)


def confusion(matrix: Sequence[Sequence[int]], names: Sequence[str]) -> str:
    """A confusion matrix (rows: true class, columns: predicted), each cell's count written."""
    m = np.asarray(matrix, dtype=np.float64)
    n = len(names)
    side = min(7.5, 2.2 + 0.42 * n)
    fig, (ax,) = new_figure(height=side, width=side + 0.8)
    fig.subplots_adjust(left=0.22, bottom=0.2, right=0.98, top=0.92)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    color = "white" if share[i, j] > 0.6 else "black"
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                            color=color)  # fmt: skip
    ax.set_xticks(range(n), [str(s) for s in names], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), [str(s) for s in names], fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    set_title(ax, "test split: counts, shaded by the share of each true class")
    return png_base64(fig)


def _finish(ax, title: str, ylabel: str, log: bool) -> None:
    if log:
        log_y(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    set_title(ax, title)
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="best", fontsize="small", ncol=2 if len(handles) > 6 else 1)
