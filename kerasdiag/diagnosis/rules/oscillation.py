"""The loss of the last steps: ``oscillating_loss``.

- :func:`oscillation_index`: the median step-to-step jump of the loss as a fraction of the
  initial loss; :func:`oscillation_finding`: the rule.
- Thresholds: ``Thresholds.oscillation`` (a median jump above 0.25 of the initial loss per
  step) over the last ``Thresholds.oscillation_window`` (20) steps, the window the doctor
  keeps.
- Sampling noise: a batch's loss is the mean of ``B`` examples' losses, so it jumps from
  batch to batch by itself, by more the wider the examples' losses spread (a noisy
  regression target: a median 26% of the initial loss at 32 examples a batch on diabetes,
  with a healthy learning rate). Given that spread (``noise``, the standard deviation of a
  batch's loss from drawing its examples), the jumps must also exceed
  ``Thresholds.oscillation_noise`` times what drawing batches alone gives (a median
  ``0.954 noise`` for two independent batches).
- Fix: ``SYMPTOMS["oscillating_loss"]`` in :mod:`kerasdiag.diagnosis.symptoms`, the one
  table every fix is written in.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence

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


# The median |a - b| of two independent draws of N(m, s^2) is 0.6745 * sqrt(2) * s.
NOISE_MEDIAN_JUMP = 0.6745 * math.sqrt(2)


def oscillation_finding(
    window: Sequence[float],
    initial_loss: float,
    thresholds: Thresholds,
    lr: LearningRate,
    step: int,
    epoch: int | None = None,
    noise: Callable[[], float | None] | float | None = None,
) -> Finding | None:
    """``oscillating_loss`` when the loss of the last steps (``window``) jumps by more than
    ``thresholds.oscillation`` of the initial loss per step (median) and, when ``noise`` (the
    standard deviation of a batch's loss from drawing its examples, or a function measuring
    it: called only when the first test passes) is known, by more than
    ``thresholds.oscillation_noise`` times the jumps drawing batches alone gives; else None."""
    index = oscillation_index(window, initial_loss)
    if not index > thresholds.oscillation:
        return None
    sampling = noise() if callable(noise) else noise
    jump = index * initial_loss
    evidence = {
        "oscillation_index": index,
        "threshold": thresholds.oscillation,
        "initial_loss": initial_loss,
        "recent_losses": list(window),
    }
    if sampling is not None and math.isfinite(sampling):
        noise_jump = NOISE_MEDIAN_JUMP * sampling
        evidence.update(sampling_noise=sampling, noise_multiple=thresholds.oscillation_noise)
        if not jump > thresholds.oscillation_noise * noise_jump:
            return None
    return make_finding(
        "oscillating_loss",
        f"over the last {len(window) - 1} steps the loss jumped by a median "
        f"{index:.0%} of the initial loss {initial_loss:.4g} per step"
        + (
            f", {jump / noise_jump:.1f}x what drawing batches alone gives"
            if "sampling_noise" in evidence and noise_jump > 0
            else ""
        ),
        evidence,
        fix_for("oscillating_loss", read_lr(lr)),
        step=step,
        epoch=epoch,
    )
