"""Gradient norms: ``exploding_gradients`` and ``vanishing_gradients``.

- :func:`gradient_flags`: the named problems of one gradient probe, the one test both
  GradientMonitor (alone in a user's ``fit``; its flags map to symptoms through
  ``GRADIENT_FLAG_SYMPTOMS``) and the doctor use.
- :func:`gradient_findings`: the doctor's findings of one probe.
- Thresholds: ``Thresholds.exploding_norm`` (:data:`EXPLODING_NORM`, 1e3),
  ``Thresholds.gradient_growth`` (:data:`GROWTH_FACTOR`, 100x the median of earlier probes),
  ``Thresholds.vanishing_ratio`` (:data:`VANISHING_RATIO`, first/last layer norm 1e-3);
  the defaults are defined in ``rules/thresholds.py``, below every family.
- Fixes: ``SYMPTOMS["exploding_gradients"]`` / ``SYMPTOMS["vanishing_gradients"]`` in
  :mod:`kerasdiag.diagnosis.symptoms` (the one table every fix is written in), and
  :func:`~kerasdiag.diagnosis.symptoms.vanishing_after_dying_fix` when dead ReLU units
  explain the vanishing gradient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kerasdiag.diagnosis.rules.common import LearningRate, read_lr
from kerasdiag.diagnosis.rules.thresholds import (
    EXPLODING_NORM,
    GROWTH_FACTOR,
    VANISHING_RATIO,
    Thresholds,
)
from kerasdiag.diagnosis.symptoms import (
    Finding,
    fix_for,
    make_finding,
    vanishing_after_dying_fix,
)


def vanishing_ratio(layer_norms: Mapping[str, float]) -> float:
    """Gradient norm of the first layer over that of the last (inf when the last is 0)."""
    norms = list(layer_norms.values())
    if len(norms) < 2:
        return 1.0
    first, last = norms[0], norms[-1]
    if last == 0:
        return float("inf") if first > 0 else 1.0
    return first / last


def gradient_flags(
    norm: float,
    layer_norms: Mapping[str, float],
    earlier_norms: Sequence[float] = (),
    vanishing: float = VANISHING_RATIO,
    exploding: float = EXPLODING_NORM,
    growth: float = GROWTH_FACTOR,
) -> dict[str, str]:
    """Named problems in one gradient probe: {"vanishing": why, "exploding": why} (or fewer)."""
    flags = {}
    ratio = vanishing_ratio(layer_norms)
    if ratio < vanishing:
        first, last = list(layer_norms)[0], list(layer_norms)[-1]
        flags["vanishing"] = (
            f"gradient norm of the first layer {first!r} is {ratio:.1e} times that of the last "
            f"layer {last!r} (below {vanishing:g})"
        )
    if not np.isfinite(norm):
        flags["exploding"] = f"global gradient norm is {norm}"
    elif norm > exploding:
        flags["exploding"] = f"global gradient norm {norm:.3g} is above {exploding:g}"
    else:
        earlier = [n for n in earlier_norms if np.isfinite(n)]
        if len(earlier) >= 3 and norm > growth * float(np.median(earlier)):
            flags["exploding"] = (
                f"global gradient norm {norm:.3g} grew more than {growth:g}x over the median "
                f"{float(np.median(earlier)):.3g} of the earlier probes"
            )
    return flags


def gradient_findings(
    probe: Mapping[str, Any],
    earlier: Sequence[float],
    thresholds: Thresholds,
    lr: LearningRate,
    dying: Sequence[str] = (),
) -> list[Finding]:
    """``exploding_gradients`` / ``vanishing_gradients`` in one gradient probe.

    ``probe``: GradientMonitor's record (step, 0-based epoch, loss, global_norm,
    layer_norms); ``earlier``: the global norms of the earlier probes; ``dying``: layers
    already found with dead ReLU units (they pass no gradient: fixed first).
    """
    th = thresholds
    step, epoch = probe["step"], probe["epoch"] + 1
    if not math.isfinite(probe["loss"]):
        return []  # broken weights: the nan finding names it
    norms = probe["layer_norms"]
    flags = gradient_flags(
        probe["global_norm"],
        norms,
        earlier,
        th.vanishing_ratio,
        th.exploding_norm,
        th.gradient_growth,
    )
    findings = []
    if "exploding" in flags:
        findings.append(
            make_finding(
                "exploding_gradients",
                flags["exploding"],
                {
                    "global_norm": probe["global_norm"],
                    "threshold": th.exploding_norm,
                    "probe_loss": probe["loss"],
                    "layer_norms": norms,
                },
                fix_for("exploding_gradients", read_lr(lr)),
                step=step,
                epoch=epoch,
            )
        )
    if "vanishing" in flags:
        fix = fix_for("vanishing_gradients")
        findings.append(
            make_finding(
                "vanishing_gradients",
                flags["vanishing"],
                {
                    "first_last_ratio": vanishing_ratio(norms),
                    "threshold": th.vanishing_ratio,
                    "layer_norms": norms,
                },
                vanishing_after_dying_fix(dying, fix) if dying else fix,
                step=step,
                epoch=epoch,
            )
        )
    return findings
