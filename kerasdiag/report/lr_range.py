"""The report's learning-rate range test figure: the curve of ``lr_finder.json``."""

from __future__ import annotations

import math
from typing import Any

from kerasdiag.report.plots import new_figure, png_base64, set_title


def lr_range_plot(curve: dict[str, Any]) -> str:
    """Loss (raw and smoothed) against the learning rate on a log axis, with the suggestion
    and the minimum marked; base64 PNG."""
    fig, (ax,) = new_figure(height=3.0)
    lrs = curve.get("lrs") or []
    raw = [float(v) for v in curve.get("losses") or []]
    smooth = [float(v) for v in curve.get("smoothed") or []]
    finite = [v for v in smooth if math.isfinite(v)]
    ax.plot(lrs, raw, color="tab:blue", alpha=0.3, lw=0.8, label="loss (per step)")
    ax.plot(lrs, smooth, color="tab:blue", label="smoothed")
    if curve.get("min_lr"):
        ax.axvline(curve["min_lr"], color="tab:red", ls=":", label="minimum")
    if curve.get("suggestion"):
        ax.axvline(curve["suggestion"], color="tab:green", ls="--", label="suggestion")
    if finite:
        low, start = min(finite), finite[0]
        ax.set_ylim(max(0.0, low - 0.5 * (start - low)), max(start, low) * 1.5 + 1e-9)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    set_title(ax, "Learning-rate range test")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return png_base64(fig)
