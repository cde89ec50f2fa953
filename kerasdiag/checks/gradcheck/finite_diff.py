"""Centered finite differences with automatic step-size retries.

The numeric derivative is always the centered difference ``(f(x+h) - f(x-h)) / 2h``, whose
error is O(h^2), never the one-sided ``(f(x+h) - f(x)) / h`` (O(h)). An entry that is not
``ok`` at the default ``h`` is retried at the other step sizes (1e-4 and 1e-6 by default): a
too-large step crosses kinks and curvature, a too-small one drowns in rounding. Every attempt
is kept with its raw values ``f(x+h)``, ``f(x-h)``, numeric derivative and error, so the
report shows them all.

Example:
    >>> import numpy as np
    >>> def evaluate(items, h):  # f(x) = x**3 at x = 2, analytic derivative 12
    ...     x = np.full(len(items), 2.0)
    ...     plus, minus = {"data": (x + h) ** 3}, {"data": (x - h) ** 3}
    ...     return plus, minus, np.zeros(len(items), bool)
    >>> runs = run_attempts(evaluate, {"data": np.array([12.0])}, h=1e-5,
    ...                     retry_steps=(1e-4, 1e-6), tolerance=1e-7, has_kinks=False)
    >>> [(a.h, a.verdict) for a in runs["data"][0]]
    [(1e-05, 'ok')]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from kerasdiag.checks.gradcheck.verdict import (
    SMOOTH,
    classify,
    relative_error,
    rounding_floor,
    settle,
)

RETRY_STEPS = (1e-4, 1e-6)
# Entries that crossed a kink at every step so far are tried again at these smaller steps:
# the chance that +-h straddles a kink falls with h, and float64 still resolves the
# difference (the rounding floor grows as 1/h and decides what is "zero").
KINK_STEPS = (1e-7, 1e-8)

# evaluate(items, h) -> (f at x+h per part, f at x-h per part, kink crossed per item)
Evaluate = Callable[
    [np.ndarray, float], tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]
]


@dataclass
class Attempt:
    """One comparison of an analytic value with a centered difference at step ``h``."""

    h: float
    f_plus: float
    f_minus: float
    numeric: float
    relative_error: float
    kink: bool
    within_rounding: bool
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def centered_difference(f_plus: np.ndarray, f_minus: np.ndarray, h: float) -> np.ndarray:
    """``(f(x+h) - f(x-h)) / 2h``."""
    return (np.asarray(f_plus, np.float64) - np.asarray(f_minus, np.float64)) / (2.0 * h)


def run_attempts(
    evaluate: Evaluate,
    analytic: dict[str, np.ndarray],
    *,
    h: float,
    retry_steps: tuple[float, ...] = RETRY_STEPS,
    tolerance: float,
    has_kinks: bool,
    kink_steps: tuple[float, ...] = KINK_STEPS,
) -> dict[str, list[list[Attempt]]]:
    """Compare every entry at ``h``; retry the entries that are not ``ok`` at each retry step,
    and those that crossed a kink at every step so far at each of ``kink_steps``.

    ``analytic[part]`` holds one analytic value per entry. Returns, per part and entry, the
    list of attempts in the order they ran. The rounding floor grows with the tolerance
    (which grows with depth): rounding accumulates through every layer.
    """
    n = len(next(iter(analytic.values())))
    attempts: dict[str, list[list[Attempt]]] = {p: [[] for _ in range(n)] for p in analytic}
    pending = np.arange(n)
    steps = [h, *[s for s in retry_steps if s != h]]
    depth_factor = max(1.0, tolerance / SMOOTH)
    for step in [*steps, *[s for s in kink_steps if s not in steps]]:
        if step not in steps:  # a kink step: only entries that crossed kinks everywhere
            pending = np.array(
                [i for i in pending if all(a.kink for p in analytic for a in attempts[p][i])],
                dtype=np.int64,
            )
        if pending.size == 0:
            break
        plus, minus, kink = evaluate(pending, step)
        settled = np.ones(pending.size, bool)
        for part, values in analytic.items():
            a = values[pending]
            numeric = centered_difference(plus[part], minus[part], step)
            rel = relative_error(a, numeric)
            floor = rounding_floor(plus[part], minus[part], step) * depth_factor
            rounding = np.abs(a - numeric) <= floor
            zero = np.maximum(np.abs(a), np.abs(numeric)) <= floor
            verdicts = classify(
                rel, tolerance=tolerance, kink=kink, has_kinks=has_kinks,
                within_rounding=rounding, zero=zero,
            )  # fmt: skip
            for j, item in enumerate(pending):
                attempts[part][item].append(
                    Attempt(
                        h=step,
                        f_plus=float(plus[part][j]),
                        f_minus=float(minus[part][j]),
                        numeric=float(numeric[j]),
                        relative_error=float(rel[j]),
                        kink=bool(kink[j]),
                        within_rounding=bool(rounding[j]),
                        verdict=str(verdicts[j]),
                    )
                )
            settled &= verdicts == "ok"
        pending = pending[~settled]
    return attempts


def final(attempts: list[Attempt]) -> tuple[str, Attempt]:
    """The settled verdict of one entry and the attempt that decided it (``settle``)."""
    verdict, i = settle(
        [a.verdict for a in attempts],
        [a.kink for a in attempts],
        [a.relative_error for a in attempts],
    )
    return verdict, attempts[i]
