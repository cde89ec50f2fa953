"""The loss of the last steps: ``oscillating_loss``.

- :func:`oscillation_index`: the median step-to-step jump of the loss as a fraction of the
  initial loss; :func:`oscillation_finding`: the rule.
- Thresholds: ``Thresholds.oscillation`` (a median jump above 0.25 of the initial loss per
  step) over the last ``Thresholds.oscillation_window`` (20) steps, the window the doctor
  keeps.
- Fix: ``SYMPTOMS["oscillating_loss"]`` in :mod:`kerasdiag.diagnosis.symptoms`, the one
  table every fix is written in.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence

from kerasdiag.diagnosis.rules.common import LearningRate, read_lr
from kerasdiag.diagnosis.rules.thresholds import Thresholds
from kerasdiag.diagnosis.symptoms import Finding, fix_for, make_finding


def oscillation_index(losses: Sequence[float], scale: float) -> float:
    """Median |loss[t+1] - loss[t]| over ``losses``, as a fraction of ``scale``.

    The median ignores one bad batch; a loss that bounces at every step raises it.
    """
    # Plain Python: the doctor calls this after every step on a ~20-value window, where
    # numpy's per-call overhead would cost ~10x more.
    values = [float(v) for v in losses]
    if len(values) < 2 or not scale > 0:
        return 0.0
    return statistics.median(abs(b - a) for a, b in itertools.pairwise(values)) / scale


def oscillation_finding(
    window: Sequence[float],
    initial_loss: float,
    thresholds: Thresholds,
    lr: LearningRate,
    step: int,
    epoch: int | None = None,
) -> Finding | None:
    """``oscillating_loss`` when the loss of the last steps (``window``) jumps by more than
    ``thresholds.oscillation`` of the initial loss per step (median), else None."""
    index = oscillation_index(window, initial_loss)
    if not index > thresholds.oscillation:
        return None
    return make_finding(
        "oscillating_loss",
        f"over the last {len(window) - 1} steps the loss jumped by a median "
        f"{index:.0%} of the initial loss {initial_loss:.4g} per step",
        {
            "oscillation_index": index,
            "threshold": thresholds.oscillation,
            "initial_loss": initial_loss,
            "recent_losses": list(window),
        },
        fix_for("oscillating_loss", read_lr(lr)),
        step=step,
        epoch=epoch,
    )
