"""A broken loss: ``nan`` (NaN/Inf loss or weights), and divergence.

- :func:`broken_loss`: the one NaN/divergence detector, used by the NaN stop, the doctor and
  the search's divergence stop (whose trials are then named ``diverged``). NaN or Inf is
  always broken; a loss above a caller's ``factor`` times the first loss is divergence.
- :func:`nan_finding`: the doctor's ``nan`` finding, for a non-finite loss or weights.
- Threshold: :data:`STABLE_BEFORE_NAN` (2x the initial loss, here): below it just before the
  NaN, the loss was stable, and the fix blames a bad batch or an unsafe operation rather
  than divergence (:func:`stable_before`).
- Fix: ``SYMPTOMS["nan"]`` in :mod:`kerasdiag.diagnosis.symptoms` (the one table every fix is
  written in), told by :func:`~kerasdiag.diagnosis.symptoms.nan_fix` for the doctor and by
  :func:`~kerasdiag.diagnosis.symptoms.nan_advice` for the NaN stop's console.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from kerasdiag.diagnosis.rules.common import LearningRate, read_lr
from kerasdiag.diagnosis.symptoms import Finding, make_finding, nan_fix

# A loss that was below this multiple of the initial loss just before it broke was stable:
# a bad batch or an unsafe operation is then more likely than divergence.
STABLE_BEFORE_NAN = 2.0


def broken_loss(
    value: float, first: float | None = None, factor: float | None = None, name: str = "loss"
) -> str | None:
    """Why a training loss counts as broken, or None: the one NaN/divergence detector.

    NaN or Inf always; with ``factor``, also a loss above ``factor`` times the ``first``
    (positive) loss. Used by the NaN stop, the doctor and the search's divergence stop.

    Example:
        >>> broken_loss(float("nan"))
        'loss is nan'
        >>> broken_loss(41.3, first=2.31, factor=4.0)
        'loss 41.3 > 4 x first loss 2.31'
    """
    if not math.isfinite(value):
        return f"{name} is {value}"
    if factor is not None and first is not None and first > 0 and value > factor * first:
        return f"{name} {value:.3g} > {factor:g} x first loss {first:.3g}"
    return None


def nan_finding(
    recent: Sequence[float],
    initial_loss: float | None,
    lr: LearningRate,
    *,
    step: int,
    epoch: int | None = None,
    loss: float | None = None,
    broken: Sequence[str] = (),
    stopping: bool = True,
    restoring: bool = True,
) -> Finding:
    """``nan``: the training ``loss`` became NaN/Inf, or the weights ``broken`` hold NaN/Inf
    values (the loss may still be finite), after the ``recent`` losses.

    ``stopping``: training stops on it; ``restoring``: the last finite epoch's weights are
    put back (both only change the fix's words).
    """
    if broken:
        loss_note = (
            " while the loss is still finite (ReLU turns NaN inputs into 0)"
            if recent and math.isfinite(recent[-1])
            else ""
        )
        what = (
            f"the weights {', '.join(broken[:4])}{' ...' if len(broken) > 4 else ''} hold "
            f"NaN/Inf values{loss_note}"
        )
        evidence = {"non_finite_weights": list(broken), "previous_losses": list(recent)}
    else:
        what = f"the training loss became {loss}"
        evidence = {"loss": loss, "previous_losses": list(recent), "lr": read_lr(lr)}
    stable = stable_before(recent, initial_loss)
    fix = nan_fix(read_lr(lr), recent, stable, stopping, restoring)
    return make_finding("nan", what, evidence, fix, step=step, epoch=epoch)


def stable_before(recent: Sequence[float], initial_loss: float | None) -> bool:
    """Whether the ``recent`` losses before a NaN stayed below ``STABLE_BEFORE_NAN`` times the
    initial loss (then a bad batch or an unsafe operation is likelier than divergence)."""
    return bool(recent) and bool(initial_loss) and max(recent) < STABLE_BEFORE_NAN * initial_loss
