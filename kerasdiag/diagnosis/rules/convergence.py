"""An epoch's loss against the initial loss: ``slow_convergence``.

- :func:`slow_finding`: the rule, judged at the end of each epoch; the epochs of a
  learning-rate warmup do not count.
- Thresholds: ``Thresholds.slow_epochs`` (2) and ``Thresholds.slow_drop`` (after that many
  epochs the loss should be 20% below the initial loss, judged at the 0.1% the message
  shows). The kernels' median update ratio
  at or above ``HEALTHY_UPDATE_RATIO`` (``rules/update_ratios.py``) vetoes "raise the
  learning rate". Before ``SLOW_MIN_STEPS`` optimizer steps no verdict: a rate measured
  over 6 steps (3 epochs of a 40-image training split) says nothing.
- Fix: :func:`slow_fix` chooses it: ``SYMPTOMS["slow_convergence"]`` in
  :mod:`kerasdiag.diagnosis.symptoms` (the one table every fix is written in), or
  :func:`~kerasdiag.diagnosis.symptoms.large_updates_fix` when the steps are already large,
  after :func:`~kerasdiag.diagnosis.symptoms.after_causes_fix` when other symptoms came
  first. :func:`rejudge_slow` chooses it again from the whole run's ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from kerasdiag.diagnosis.rules.common import LearningRate, read_lr
from kerasdiag.diagnosis.rules.thresholds import MIN_RATE_STEPS, Thresholds
from kerasdiag.diagnosis.rules.update_ratios import HEALTHY_UPDATE_RATIO
from kerasdiag.diagnosis.symptoms import (
    Finding,
    after_causes_fix,
    fix_for,
    large_updates_fix,
    make_finding,
)

# The rate rules' minimum number of steps, kept under its old name (its home is thresholds.py).
SLOW_MIN_STEPS = MIN_RATE_STEPS


def slow_finding(
    epoch: int,
    loss: float | None,
    initial_loss: float | None,
    thresholds: Thresholds,
    lr: LearningRate,
    causes: Sequence[str] = (),
    step: int | None = None,
    update_ratio: float | None = None,
    warmup: int = 0,
) -> Finding | None:
    """``slow_convergence`` when after epoch ``epoch`` (0-based) the epoch's loss is not
    ``slow_drop`` below the initial loss; ``causes``: symptoms found before, fixed first.
    ``warmup``: epochs of a learning-rate warmup
    (:func:`~kerasdiag.diagnosis.rules.curves.warmup_epochs`), which do not count towards
    ``slow_epochs``: a loss that falls slowly while the rate climbs is expected.

    ``update_ratio``: the kernels' median update/weight ratio so far, if measured. At or above
    ``HEALTHY_UPDATE_RATIO`` the steps are not too small, and the fix does not say to raise
    the learning rate (as a healthy ratio vetoes ``lr_too_low`` in
    :func:`~kerasdiag.diagnosis.rules.curves.curve_findings`).

    ``step``: the last optimizer step so far (0-based); before ``SLOW_MIN_STEPS`` steps the
    rule gives no verdict, however many epochs they make.
    """
    th, scale = thresholds, initial_loss
    if epoch + 1 - warmup < th.slow_epochs or scale is None or loss is None:
        return None
    if step is not None and step + 1 < SLOW_MIN_STEPS:
        return None
    if not math.isfinite(loss):
        return None
    # Judged at the precision the message shows (0.1%): a drop shown as "20.0%" is not
    # below a 20% threshold, and one that fires reads below it.
    drop = f"{1 - loss / scale:.1%}"
    if not float(drop[:-1]) < round(100 * th.slow_drop, 6):
        return None
    return make_finding(
        "slow_convergence",
        f"after {epoch + 1} epochs the loss is {loss:.4g}, "
        + (f"only {drop} below" if loss < scale else f"{loss / scale - 1:.0%} above")
        + f" the initial {scale:.4g} (expected at least {th.slow_drop:.1%} below)",
        {
            "epoch_loss": loss,
            "initial_loss": scale,
            "drop": 1 - loss / scale,
            "expected_drop": th.slow_drop,
            **({} if update_ratio is None else {"median_update_ratio": update_ratio}),
            **({"warmup_epochs": warmup} if warmup else {}),
            **({"causes_first": sorted(set(causes))} if causes else {}),
        },
        slow_fix(lr, update_ratio, causes),
        step=step,
        epoch=epoch + 1,
    )


def slow_fix(lr: LearningRate, update_ratio: float | None, causes: Sequence[str] = ()) -> str:
    """The fix of ``slow_convergence``: raise the learning rate, unless the kernels' median
    update/weight ratio is already at or above ``HEALTHY_UPDATE_RATIO`` (then
    :func:`~kerasdiag.diagnosis.symptoms.large_updates_fix`); after the ``causes`` found first."""
    large = update_ratio is not None and update_ratio >= HEALTHY_UPDATE_RATIO
    fix = large_updates_fix(update_ratio) if large else fix_for("slow_convergence", read_lr(lr))
    return after_causes_fix(causes, fix) if causes else fix


def rejudge_slow(finding: Finding, update_ratio: float | None, lr: LearningRate) -> None:
    """A ``slow_convergence`` finding made during training, its fix judged again from the
    whole run's median update ratio, the number the ``lr_too_low`` veto of
    :func:`~kerasdiag.diagnosis.rules.curves.curve_findings` reads: a run says one thing
    about raising the learning rate (an early window's ratio of 1.8e-3 said "do not raise it"
    while the run's, 0.92e-3, let the loss curve say "raise it"). Unchanged without a
    measured ratio."""
    if update_ratio is None:
        return
    finding.evidence["median_update_ratio"] = update_ratio
    finding.fix = slow_fix(lr, update_ratio, finding.evidence.get("causes_first") or ())
