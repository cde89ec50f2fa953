"""Relative error and the verdict bands of a gradient check.

The relative error of an analytic value ``a`` against a numeric estimate ``n`` is
``|a - n| / max(|a|, |n|)``; the bands read it as:

- ``> 1e-2``: the gradient is probably wrong (``fail``);
- ``1e-4 .. 1e-2``: ``suspicious``;
- ``< 1e-4``: acceptable only where the objective has kinks (ReLU, max-pool, hinge);
- ``<= 1e-7``: good for a smooth objective (tanh, softmax), the ``ok`` tolerance.

Rounding in float64 adds error at every layer, so the smooth tolerance grows with the
number of weighted layers (``smooth_tolerance``), and the report says by how much.

Example:
    >>> import numpy as np
    >>> relative_error(np.array([1.0, 0.0]), np.array([1.1, 0.0])).round(4).tolist()
    [0.0909, 0.0]
    >>> classify(np.array([5e-9, 3e-3, 0.5]), tolerance=1e-7,
    ...          kink=np.array([False, False, True]), has_kinks=False,
    ...          within_rounding=np.zeros(3, bool)).tolist()
    ['ok', 'suspicious', 'kink']
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

WRONG = 1e-2
SUSPICIOUS = 1e-4
SMOOTH = 1e-7
# Up to this many weighted layers the smooth tolerance is SMOOTH; beyond, it grows linearly.
DEPTH_REFERENCE = 4
# Below this magnitude relative errors are unreliable and loss scaling is offered.
TINY = 1e-10
# The rounding error of f(x+h) - f(x-h) is a few ulps of the largest value summed into f;
# this factor covers the sums over examples, classes and regularized weights.
ROUNDING_SAFETY = 64.0
EPS64 = float(np.finfo(np.float64).eps)

# Verdicts, best first: the worst one decides a variable's row. ``zero``: an entry whose
# analytic and numeric values are both below the rounding floor (nothing to compare);
# ``unverified``: a variable (or direction) whose every entry is ``zero``.
VERDICTS = ("ok", "zero", "kink", "unverified", "suspicious", "fail")


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """``|a - n| / max(|a|, |n|)`` element by element; 0 where both are exactly 0."""
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    scale = np.maximum(np.abs(analytic), np.abs(numeric))
    diff = np.abs(analytic - numeric)
    return np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)


def smooth_tolerance(depth: int) -> float:
    """The ``ok`` tolerance for a smooth objective of ``depth`` weighted layers."""
    return SMOOTH * max(1.0, depth / DEPTH_REFERENCE)


def tolerance_note(depth: int) -> str:
    """One sentence that says how the tolerance grew with depth."""
    tol = smooth_tolerance(depth)
    if depth <= DEPTH_REFERENCE:
        return (
            f"smooth tolerance {tol:.1e} (depth {depth} <= {DEPTH_REFERENCE} weighted layers); "
            "bands: > 1e-2 wrong, 1e-4..1e-2 suspicious, < 1e-4 only where the objective has kinks"
        )
    return (
        f"smooth tolerance {tol:.1e} = 1e-7 x depth {depth} / {DEPTH_REFERENCE}: rounding "
        "error accumulates with every weighted layer; bands: > 1e-2 wrong, 1e-4..1e-2 "
        "suspicious, < 1e-4 only where the objective has kinks"
    )


def rounding_floor(f_plus: np.ndarray, f_minus: np.ndarray, h: float) -> np.ndarray:
    """The absolute error that rounding alone puts on ``(f(x+h) - f(x-h)) / 2h``."""
    size = np.maximum(np.abs(f_plus), np.abs(f_minus))
    return ROUNDING_SAFETY * EPS64 * size / (2.0 * h)


def classify(
    rel: np.ndarray,
    *,
    tolerance: float,
    kink: np.ndarray,
    has_kinks: bool,
    within_rounding: np.ndarray,
    zero: np.ndarray | None = None,
) -> np.ndarray:
    """The verdict of each comparison.

    ``kink`` marks comparisons whose ``x - h`` and ``x + h`` fell on different sides of a
    non-differentiable point; ``within_rounding`` those whose difference is rounding noise;
    ``zero`` those whose analytic and numeric values are both rounding noise: they verify
    nothing (``zero``, not ``ok``).
    """
    rel = np.asarray(rel, dtype=np.float64)
    out = np.full(rel.shape, "fail", dtype=object)
    out[rel <= WRONG] = "suspicious"
    if has_kinks:
        out[rel < SUSPICIOUS] = "ok"
    out[np.asarray(kink, bool) & (out != "ok")] = "kink"
    out[(rel <= tolerance) | np.asarray(within_rounding, bool)] = "ok"
    if zero is not None:
        out[np.asarray(zero, bool)] = "zero"
    return out


def worst(verdicts: Iterable[str]) -> str:
    """The worst verdict of several (``ok`` for none); ``zero`` entries decide nothing, and
    when every entry is ``zero`` the result is ``unverified``."""
    verdicts = list(verdicts)
    decided = [v for v in verdicts if v != "zero"]
    if verdicts and not decided:
        return "unverified"
    return max(decided, key=VERDICTS.index, default="ok")


def settle(verdicts: list[str], kinks: list[bool], errors: list[float]) -> tuple[str, int]:
    """The final verdict of one entry checked at several step sizes, and which attempt decided.

    One ``ok`` attempt settles it (the other step sizes were too large or too small). Else a
    kink excuses the entry only if every attempt crossed one: an attempt that crossed none
    measured the true derivative, so its own verdict stands. A ``zero`` attempt (both
    values rounding noise) decides only when no attempt measured anything.
    """
    for i, v in enumerate(verdicts):
        if v == "ok":
            return "ok", i
    clean = [i for i, k in enumerate(kinks) if not k or verdicts[i] == "zero"]
    if not clean:
        return "kink", 0
    measured = [i for i in clean if verdicts[i] != "zero"]
    best = min(measured or clean, key=lambda i: (VERDICTS.index(verdicts[i]), errors[i]))
    return verdicts[best], best
