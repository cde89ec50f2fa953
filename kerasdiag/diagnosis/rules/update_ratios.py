"""Update/weight ratios: the healthy band per optimizer, and ``stagnant_weights``.

The ratio ``||W_after - W_before|| / ||W_before||`` of one step says whether the learning rate
suits the weights' scale (~1e-3 is healthy).

- Symptom ``stagnant_weights``: :func:`stagnant_findings`, threshold
  ``Thresholds.stagnant_ratio`` (1e-6).
- The band (:func:`update_ratio_band`, :data:`UPDATE_RATIO_LOW` .. :data:`UPDATE_RATIO_HIGH`,
  wider under an adaptive optimizer) and its verdict (:func:`update_ratio_verdict`): the one
  band UpdateRatioMonitor flags by, the doctor judges by and the report shades. The
  monitor's verdicts carry the fixes of ``lr_too_low`` / ``lr_too_high``
  (``UPDATE_RATIO_CAUSES`` in :mod:`kerasdiag.diagnosis.symptoms`).
- :data:`HEALTHY_UPDATE_RATIO` and :func:`median_update_ratio`: the run's ratio that vetoes
  "raise the learning rate" in ``rules/convergence.py`` and ``rules/curves.py``.

Fix texts: ``SYMPTOMS["stagnant_weights"]`` in :mod:`kerasdiag.diagnosis.symptoms`, the one
table every fix is written in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kerasdiag.diagnosis.rules.common import LearningRate, finite, float_or_none, read_lr
from kerasdiag.diagnosis.rules.thresholds import Thresholds
from kerasdiag.diagnosis.symptoms import Finding, fix_for, make_finding, unchanged_weights_fix

# Healthy band of the update/weight ratio ||W_after - W_before|| / ||W_before|| (~1e-3).
UPDATE_RATIO_LOW = 1e-4
UPDATE_RATIO_HIGH = 1e-2
HEALTHY_UPDATE_RATIO = 1e-3
# An adaptive optimizer (Adam, RMSprop, ...) moves every weight by up to about lr per step
# whatever its gradient, so its ratio is up to lr / rms(W). For a Glorot-initialised kernel
# (rms ~0.1) Adam gives ~5e-3 at lr=1e-3, ~3e-2 at 1e-2, ~7e-2 at 0.1 and ~0.1 at 1.0 (an
# MLP on digits, median after step 0): the upper end for kernels is 5e-2. An Embedding table
# starts much smaller (uniform(-0.05, 0.05), rms 0.03), so Adam at lr=1e-3 already moves its
# looked-up rows by ~3e-2..1e-1 of their size and trains well: its upper end is 0.3.
ADAPTIVE_UPDATE_RATIO_HIGH = 5e-2
ADAPTIVE_SPARSE_UPDATE_RATIO_HIGH = 0.3
# Optimizers that step by about lr per weight whatever the gradient's scale (lower case:
# Keras' class names and the config's ``optimizer.name`` alike).
ADAPTIVE_OPTIMIZERS = frozenset({
    "adam", "adamw", "adamax", "nadam", "rmsprop", "adagrad", "adadelta", "adafactor", "lion",
    "ftrl", "lamb", "muon",
})  # fmt: skip
# The first step the learning-rate rules read update ratios from (step 0 left out).
RUN_RATIO_FROM_STEP = 1


def update_ratio_band(
    optimizer: str, low: float | None = None, high: float | None = None, sparse: bool = False
) -> tuple[float, float]:
    """The healthy ``(low, high)`` of the update ratio under the optimizer named ``optimizer``
    (a Keras class name such as ``"Adam"``, or a config's ``optimizer.name`` such as ``"sgd"``):
    the one band the monitor flags by, the doctor judges by and the report shades.

    Plain SGD (with or without momentum) steps by lr x gradient: ~1e-3 is healthy, the band
    is [1e-4, 1e-2]. An adaptive optimizer steps by about lr per weight, so its upper end is
    ``ADAPTIVE_UPDATE_RATIO_HIGH``, and for an Embedding table (``sparse``)
    ``ADAPTIVE_SPARSE_UPDATE_RATIO_HIGH``. ``low`` / ``high`` given explicitly win.

    Example:
        >>> update_ratio_band("SGD"), update_ratio_band("adam")
        ((0.0001, 0.01), (0.0001, 0.05))
    """
    default_high = UPDATE_RATIO_HIGH
    if str(optimizer).lower() in ADAPTIVE_OPTIMIZERS:
        default_high = ADAPTIVE_SPARSE_UPDATE_RATIO_HIGH if sparse else ADAPTIVE_UPDATE_RATIO_HIGH
    return (
        UPDATE_RATIO_LOW if low is None else low,
        default_high if high is None else high,
    )


def update_ratio_verdict(
    ratio: float, low: float = UPDATE_RATIO_LOW, high: float = UPDATE_RATIO_HIGH
) -> str | None:
    """ "too_low", "too_high" or None (healthy, or NaN: nothing to judge)."""
    if not np.isfinite(ratio):
        return "too_high" if np.isinf(ratio) else None
    if ratio < low:
        return "too_low"
    if ratio > high:
        return "too_high"
    return None


def stagnant_findings(
    ratios: Mapping[str, Sequence[float]],
    thresholds: Thresholds,
    lr: LearningRate,
    *,
    step: int,
    epoch: int,
) -> list[Finding]:
    """``stagnant_weights`` for each layer whose kernel's median update/weight ratio over
    the epoch (``ratios``: {layer: the epoch's finite ratios}) is below ``stagnant_ratio``."""
    limit, findings = thresholds.stagnant_ratio, []
    for layer, values in ratios.items():
        median = float(np.median(values))
        if median < limit:
            findings.append(
                make_finding(
                    "stagnant_weights",
                    f"the kernel of layer {layer!r} changes by a median {median:.1e} of its "
                    f"norm per step (below {limit:.0e})",
                    {
                        "median_update_ratio": median,
                        "measurements": len(values),
                        "threshold": limit,
                    },
                    unchanged_weights_fix()
                    if median == 0
                    else fix_for("stagnant_weights", read_lr(lr)),
                    step=step,
                    epoch=epoch,
                    layer=layer,
                )
            )
    return findings


def median_update_ratio(rows: Sequence[Sequence[Any]], from_step: int = 0) -> float | None:
    """Median update/weight ratio of the kernels in UpdateRatioMonitor rows (step, epoch,
    variable, ratio, ...) of steps ``from_step`` on; None without finite kernel measurements.

    Biases start at zero and say nothing about the learning rate, so only kernels count. The
    rules that weigh the learning rate read it ``from_step=1``
    (:data:`RUN_RATIO_FROM_STEP`): an adaptive optimizer's first step moves every weight by
    ~lr whatever its gradient.
    """
    ratios = [
        float(r[3])
        for r in rows
        if str(r[2]).endswith("kernel")
        and finite(float_or_none(r[3]))
        and (float_or_none(r[0]) or 0) >= from_step
    ]
    return float(np.median(ratios)) if ratios else None
