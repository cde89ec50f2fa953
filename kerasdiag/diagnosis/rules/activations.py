"""Activation statistics of a probe batch: ``dying_relu`` and ``saturated_activations``.

- :class:`ActivationStats`: what the rules read of one layer's output (gathered by
  ``kerasdiag.callbacks.stats``, which also sets the saturation levels: |a| > 0.99 for tanh,
  outside [0.01, 0.99] for sigmoid).
- :func:`activation_findings`: the rule. Thresholds: ``Thresholds.dead_fraction`` (0.5 of a
  ReLU layer's units dead) and ``Thresholds.saturated_fraction`` (0.5 of a tanh/sigmoid
  layer's outputs saturated); the output layers are skipped.
- Fixes: ``SYMPTOMS["dying_relu"]`` / ``SYMPTOMS["saturated_activations"]`` in
  :mod:`kerasdiag.diagnosis.symptoms`, the one table every fix is written in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from kerasdiag.diagnosis.rules.common import LearningRate, read_lr
from kerasdiag.diagnosis.rules.thresholds import Thresholds
from kerasdiag.diagnosis.symptoms import Finding, fix_for, make_finding


@dataclass
class ActivationStats:
    """Summary of one layer's output on a probe batch (what the activation rules read).

    ``dead_fraction``: share of units (features, or channels of a conv layer) that are 0 for
    every probe example and position (ReLU layers only). ``saturated_fraction``: share of
    values with |a| > 0.99 (tanh) or outside [0.01, 0.99] (sigmoid).

    Example:
        >>> ActivationStats("relu", mean=0.3, std=0.5, zero_fraction=0.5, dead_fraction=0.1).kind
        'relu'
    """

    kind: str | None
    mean: float
    std: float
    zero_fraction: float
    dead_fraction: float | None = None
    saturated_fraction: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def activation_findings(
    layer_stats: Mapping[str, ActivationStats],
    thresholds: Thresholds,
    lr: LearningRate,
    *,
    step: int,
    epoch: int,
    skip: Sequence[str] = (),
) -> list[Finding]:
    """``dying_relu`` / ``saturated_activations`` in one probe's per-layer statistics.

    ``skip``: layers never judged (the output layers: a confident classifier saturates its
    output on purpose).
    """
    th, findings = thresholds, []
    for layer, s in layer_stats.items():
        if layer in skip:
            continue
        if s.dead_fraction is not None and s.dead_fraction > th.dead_fraction:
            findings.append(
                make_finding(
                    "dying_relu",
                    f"{s.dead_fraction:.0%} of the units of layer {layer!r} output 0 "
                    f"for every probe example",
                    {"dead_fraction": s.dead_fraction, "threshold": th.dead_fraction},
                    fix_for("dying_relu", read_lr(lr)),
                    step=step,
                    epoch=epoch,
                    layer=layer,
                )
            )
        if s.saturated_fraction is not None and s.saturated_fraction > th.saturated_fraction:
            findings.append(
                make_finding(
                    "saturated_activations",
                    f"{s.saturated_fraction:.0%} of the {s.kind} outputs of layer "
                    f"{layer!r} are saturated",
                    {
                        "saturated_fraction": s.saturated_fraction,
                        "threshold": th.saturated_fraction,
                        "mean": s.mean,
                        "std": s.std,
                    },
                    fix_for("saturated_activations"),
                    step=step,
                    epoch=epoch,
                    layer=layer,
                )
            )
    return findings
