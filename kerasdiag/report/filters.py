"""What the first-layer filter grids show, in numbers and in one caption (no TensorFlow).

:class:`~kerasdiag.callbacks.FilterImages` saves the raw filters at initialisation and at its
last drawing in ``filters.npz``; the report turns them into a caption that depends on what
they show: how far they moved from their initialisation and how smooth they are.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Neighbouring weights correlated above this: smooth filters (random init: about 0).
SMOOTH = 0.3
# Moved less than this fraction of their initial norm: the first layer barely learned.
STILL = 0.05


def filter_summary(init: np.ndarray, last: np.ndarray) -> dict[str, float]:
    """How far the filters moved from their initialisation, and how smooth they are.

    ``moved``: ||last - init|| / ||init||. ``smoothness``: the correlation of horizontally and
    vertically neighbouring weights within a filter (over all filters and channels); about 0
    for random initialisations, clearly positive for the smooth edge and colour detectors a
    trained first layer shows. None for kernels too small to have neighbours (1x1).
    """
    init, last = np.asarray(init, np.float64), np.asarray(last, np.float64)
    moved = float(np.linalg.norm(last - init) / max(np.linalg.norm(init), 1e-12))
    return {
        "moved": moved,
        "smoothness": _neighbour_correlation(last),
        "smoothness_init": _neighbour_correlation(init),
        "kernel": int(max(last.shape[1], last.shape[2])),
    }


def _neighbour_correlation(filters: np.ndarray) -> float | None:
    # Each filter centred on its own mean: a filter's offset is not structure.
    centred = filters - filters.mean(axis=(1, 2), keepdims=True)
    pairs = []
    if centred.shape[2] > 1:
        pairs.append((centred[:, :, :-1].ravel(), centred[:, :, 1:].ravel()))
    if centred.shape[1] > 1:
        pairs.append((centred[:, :-1, :].ravel(), centred[:, 1:, :].ravel()))
    if not pairs:
        return None
    a = np.concatenate([p[0] for p in pairs])
    b = np.concatenate([p[1] for p in pairs])
    denom = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.dot(a, b) / denom) if denom > 0 else 0.0


def filters_caption(layer: str, shape: tuple[int, ...], summary: dict[str, Any]) -> str:
    """One caption for the filter grids of ``layer`` (filters of ``shape`` (n, h, w, c))."""
    n, h, w = int(shape[0]), int(shape[1]), int(shape[2])
    moved, smooth = summary["moved"], summary["smoothness"]
    head = (
        f"{n} first-layer filters of layer {layer!r} ({h}x{w}, each cell scaled to its own "
        f"range); they moved {moved:.0%} of their initial norm during training"
    )
    if moved < STILL:
        return (
            f"{head}: they barely changed, so the first layer hardly learns (a learning rate "
            "too low, or gradients that vanish before they reach it)."
        )
    if smooth is None:
        return f"{head}. 1x1 kernels mix channels only: there is no spatial pattern to judge."
    correlation = (
        f"neighbouring weights correlate {smooth:.2f} (at initialisation "
        f"{summary['smoothness_init']:.2f})"
    )
    if max(h, w) <= 3:
        small = (
            f"; {h}x{w} kernels are too small to show edges or blobs by eye, so judge them by "
            f"the numbers: {correlation}"
        )
        verdict = (
            ", structure is emerging." if smooth >= SMOOTH else ", still close to random noise."
        )
        return head + small + verdict
    if smooth >= SMOOTH:
        return (
            f"{head}; {correlation}: smooth, structured filters, as a trained first layer "
            "shows (edge, stroke or colour detectors)."
        )
    return (
        f"{head}; {correlation}: still noisy. First-layer filters on images usually smooth "
        "out with longer training or more regularization (model.l2); noise alone is no fault "
        "when the validation curve above is good."
    )
