"""What a learning-rate range test's curve says: the suggested rate and the rule behind it.

Pure numbers, no TensorFlow: :func:`kerasdiag.checks.lr_range.find_learning_rate` records
the curve on a copy of the model; :func:`suggest` reads it, and the report reads
``lr_finder.json`` back through :class:`LRFinderResult`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kerasdiag.diagnosis.symptoms import NO_DROP_FIX

# The rules a suggestion can come from (``rule=`` of find_learning_rate).
RULES = ("minimum", "steepest")
RULE_TEXT = {
    "minimum": "the learning rate at the minimum of the smoothed loss, divided by 10",
    "steepest": "the learning rate where the smoothed loss falls fastest",
}
# The loss must fall at least this share of its starting value for the curve to show a
# usable learning rate at all.
MIN_DROP = 0.05


@dataclass
class LRFinderResult:
    """The curve and the suggestion of a range test.

    ``lrs[i]`` is the learning rate of step ``i`` and ``losses[i]`` the loss of that step's
    batch before its update; ``smoothed`` is their bias-corrected exponential moving average
    (what the rules read). ``suggestion`` is None when the loss never fell by
    ``MIN_DROP`` of its start (``reason`` says so, with a fix). ``stopped`` says why the test
    ended: ``"diverged"`` (the smoothed loss passed ``divergence`` x its minimum, or a loss
    was NaN/Inf) or ``"max_steps"``.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    rule: str
    stopped: str
    min_lr: float | None = None
    min_loss: float | None = None
    steepest_lr: float | None = None
    seconds: float = 0.0
    reason: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["losses"] = [v if math.isfinite(v) else str(v) for v in self.losses]
        d["smoothed"] = [v if math.isfinite(v) else str(v) for v in self.smoothed]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LRFinderResult:
        values = dict(d)
        values["losses"] = [float(v) for v in values.get("losses", [])]
        values["smoothed"] = [float(v) for v in values.get("smoothed", [])]
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    def summary(self) -> str:
        """One line: the suggestion and the rule, or why there is none."""
        if self.suggestion is None:
            return f"no suggestion: {self.reason}"
        return (
            f"suggested learning rate {self.suggestion:.3g} ({RULE_TEXT[self.rule]}; minimum "
            f"loss {self.min_loss:.4g} at lr {self.min_lr:.3g}; {len(self.lrs)} steps, "
            f"stopped: {self.stopped})"
        )


def suggest(
    lrs: list[float], losses: list[float], smoothed: list[float], rule: str = "minimum"
) -> LRFinderResult:
    """The suggestion of ``rule`` from a recorded curve (a pure function of the numbers)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}. Received: {rule!r}")
    finite = [(lr, s) for lr, s in zip(lrs, smoothed, strict=True) if math.isfinite(s)]
    result = LRFinderResult(list(lrs), list(losses), list(smoothed), None, rule, "")
    if len(finite) < 3:
        result.reason = f"only {len(finite)} finite losses: the range starts too high (start_lr)"
        return result
    lr_f = np.array([p[0] for p in finite])
    s_f = np.array([p[1] for p in finite])
    i_min = int(np.argmin(s_f))
    result.min_lr, result.min_loss = float(lr_f[i_min]), float(s_f[i_min])
    # Slope per decade of lr, up to the minimum (after it the loss turns upward).
    if i_min >= 2:
        slopes = np.gradient(s_f[: i_min + 1], np.log10(lr_f[: i_min + 1]))
        result.steepest_lr = float(lr_f[int(np.argmin(slopes))])
    start_loss = float(s_f[0])
    if result.min_loss > (1 - MIN_DROP) * start_loss:
        result.reason = (
            f"the smoothed loss went from {start_loss:.4g} to at best {result.min_loss:.4g} "
            f"(less than {MIN_DROP:.0%} lower); {NO_DROP_FIX}"
        )
        return result
    if rule == "minimum":
        result.suggestion = result.min_lr / 10
    else:
        result.suggestion = result.steepest_lr if result.steepest_lr else result.min_lr / 10
    return result
