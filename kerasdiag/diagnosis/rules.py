"""Every rule that names a symptom from measured numbers, with every threshold.

Pure functions of plain numbers: no TensorFlow, no Keras, no files. The callbacks only gather
the numbers and call these rules: :class:`~kerasdiag.callbacks.TrainingDoctor` during ``fit``
(loss of every step, gradient norms, activation statistics, update ratios),
:func:`kerasdiag.diagnose` on a finished run's files (the curve rules), the stand-alone
monitors (:func:`gradient_flags`, :func:`update_ratio_verdict`), the NaN stop and the search's
divergence stop (:func:`broken_loss`). So a run judged live and a run judged afterwards get
the same verdicts, and each rule can be tested on numbers alone. The fix texts come from
:mod:`kerasdiag.diagnosis.symptoms`.

Example:
    >>> from kerasdiag.diagnosis.rules import Thresholds, oscillation_finding
    >>> oscillation_finding([2.3, 0.5, 2.2, 0.4] * 6, 2.3, Thresholds(), lr=0.1, step=24).symptom
    'oscillating_loss'
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from kerasdiag.core.arguments import check_positive_float
from kerasdiag.diagnosis.symptoms import (
    Finding,
    advice_for,
    after_causes_fix,
    fix_for,
    large_updates_fix,
    make_finding,
    nan_fix,
    vanishing_after_dying_fix,
)

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


# Gradient flags: first/last layer gradient-norm ratio below this is "vanishing"; a
# global norm above EXPLODING_NORM, or GROWTH_FACTOR times the median of earlier probes,
# is "exploding".
VANISHING_RATIO = 1e-3
EXPLODING_NORM = 1e3
GROWTH_FACTOR = 100.0
# A loss that was below this multiple of the initial loss just before it broke was stable:
# a bad batch or an unsafe operation is then more likely than divergence.
STABLE_BEFORE_NAN = 2.0
# The learning rate a fix names, or a function that reads it: the doctor's rules run at every
# step, and reading a scheduled rate costs a tensor evaluation, so it is read only when a
# finding is made.
LearningRate = float | None | Callable[[], float | None]
# The epoch logs' accuracy of the training split scored in inference mode (TrainingDoctor).
TRAIN_INFERENCE_ACCURACY = "train_accuracy_inference"


@dataclass
class Thresholds:
    """Every threshold of the diagnosis, with the reason for its default.

    Fractions "of the initial loss" are relative to the loss before training (the first
    step's loss; about ln C = 2.30 for softmax over 10 classes), so one setting serves
    cross-entropy, hinge and focal losses alike.

    In training (:class:`~kerasdiag.callbacks.TrainingDoctor`):

    - ``exploding_norm``: global gradient norm above this explodes (as GradientMonitor).
    - ``gradient_growth``: a global norm this many times the median of earlier probes explodes.
    - ``vanishing_ratio``: first-layer / last-layer gradient norm below this vanishes.
    - ``dead_fraction``: a ReLU layer with more than this share of units that output 0 for
      every probe example is dying (healthy He-initialised layers: a few percent).
    - ``saturated_fraction``: a tanh/sigmoid layer with more than this share of outputs
      saturated (|a| > 0.99, sigmoid outside [0.01, 0.99]) is saturated. The output
      layer is never judged (a confident classifier saturates its output on purpose).
    - ``oscillation``: the median absolute step-to-step change of the training loss over the
      last ``oscillation_window`` steps, above this fraction of the initial loss, is an
      oscillating loss. Minibatch noise of a healthy run is a few percent; a too-high learning
      rate makes the loss jump by about its own size.
    - ``slow_drop`` / ``slow_epochs``: after ``slow_epochs`` epochs the epoch's mean loss
      should be at least ``slow_drop`` (20%) below the initial loss.
    - ``stagnant_ratio``: a layer whose kernel's median update/weight ratio over an epoch is
      below this has stagnant weights: 100x under the "learning rate too low" end of the update-ratio monitor's
      healthy band (1e-4 .. 1e-2).

    After training (:func:`curve_findings`, also run by the doctor at the end of ``fit``):

    - ``min_epochs``: the loss curve's shape is judged only with at least this many epochs.
    - ``rise``: a final epoch loss above the first epoch's and this fraction above the
      curve's minimum is a rising loss (learning rate far too high).
    - ``plateau_change``: a second half of training that lowers the best loss by less than
      this fraction of the initial loss is a plateau;
    - ``plateau_level``: ... a high one when the final loss is above this fraction of the
      initial loss;
    - ``bump``: ... with the learning rate to blame when the loss rises between two epochs
      after the first by more than this fraction of the initial loss (a capacity-limited
      model flattens smoothly instead).
    - ``linear_ratio`` / ``linear_level``: a decay whose second half lowers the loss per epoch
      by more than ``linear_ratio`` times the first half's rate (a healthy curve is convex:
      ~0.1-0.3), with the final loss still above ``linear_level`` of the initial loss, is
      linear (lr too low).
    - ``variance``: validation error minus training error above this is high variance,
      overfitting (1% train vs 11% dev error).
    - ``val_loss_rise``: a final validation loss this fraction above its minimum while the
      training loss kept falling is overfitting too.
    - ``bias``: training error minus the Bayes error above this is high bias, underfitting
      (15% train error against ~0% human error).

    Example:
        >>> Thresholds.of({"oscillation": 0.5}).oscillation
        0.5
    """

    exploding_norm: float = EXPLODING_NORM
    gradient_growth: float = GROWTH_FACTOR
    vanishing_ratio: float = VANISHING_RATIO
    dead_fraction: float = 0.5
    saturated_fraction: float = 0.5
    oscillation: float = 0.25
    oscillation_window: int = 20
    slow_drop: float = 0.2
    slow_epochs: int = 2
    stagnant_ratio: float = 1e-6
    min_epochs: int = 4
    rise: float = 0.1
    plateau_change: float = 0.1
    plateau_level: float = 0.2
    bump: float = 0.02
    linear_ratio: float = 0.5
    linear_level: float = 0.5
    variance: float = 0.05
    val_loss_rise: float = 0.2
    bias: float = 0.05

    @classmethod
    def of(cls, value: Thresholds | Mapping[str, Any] | None) -> Thresholds:
        """``value`` as Thresholds: None = the defaults, a mapping overrides some fields.

        Raises ValueError naming an unknown field or a value that is not a positive number.
        """
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(
                f"`thresholds` must be a Thresholds or a mapping of its fields. Received: {value!r}"
            )
        known = {f.name: f for f in fields(cls)}
        changes = {}
        for key, v in value.items():
            if key not in known:
                raise ValueError(f"unknown threshold {key!r}; known: {', '.join(sorted(known))}")
            number = check_positive_float(f"thresholds.{key}", v)
            if known[key].type == "int":
                if number != int(number):
                    raise ValueError(f"threshold {key!r} must be an integer. Received: {v!r}")
                number = int(number)
            changes[key] = number
        return replace(cls(), **changes)


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


# --- the loss of one step: NaN, divergence, oscillation ---------------------------------------


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
        fix_for("oscillating_loss", _read(lr)),
        step=step,
        epoch=epoch,
    )


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
        evidence = {"loss": loss, "previous_losses": list(recent), "lr": _read(lr)}
    stable = stable_before(recent, initial_loss)
    fix = nan_fix(_read(lr), recent, stable, stopping, restoring)
    return make_finding("nan", what, evidence, fix, step=step, epoch=epoch)


def stable_before(recent: Sequence[float], initial_loss: float | None) -> bool:
    """Whether the ``recent`` losses before a NaN stayed below ``STABLE_BEFORE_NAN`` times the
    initial loss (then a bad batch or an unsafe operation is likelier than divergence)."""
    return bool(recent) and bool(initial_loss) and max(recent) < STABLE_BEFORE_NAN * initial_loss


# --- an epoch's loss ------------------------------------------------------------------------


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
    ``warmup``: epochs of a learning-rate warmup (:func:`warmup_epochs`), which do not count
    towards ``slow_epochs``: a loss that falls slowly while the rate climbs is expected.

    ``update_ratio``: the kernels' median update/weight ratio so far, if measured. At or above
    ``HEALTHY_UPDATE_RATIO`` the steps are not too small, and the fix does not say to raise
    the learning rate (as a healthy ratio vetoes ``lr_too_low`` in :func:`curve_findings`).
    """
    th, scale = thresholds, initial_loss
    if epoch + 1 - warmup < th.slow_epochs or scale is None or loss is None:
        return None
    if not math.isfinite(loss):
        return None
    if not loss > (1 - th.slow_drop) * scale:
        return None
    return make_finding(
        "slow_convergence",
        f"after {epoch + 1} epochs the loss is {loss:.4g}, "
        + (
            f"only {1 - loss / scale:.1%} below"
            if loss < scale
            else f"{loss / scale - 1:.0%} above"
        )
        + f" the initial {scale:.4g} (expected at least {th.slow_drop:.0%} below)",
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


# --- probes: activations, gradients, update ratios ---------------------------------------------


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
                    fix_for("dying_relu", _read(lr)),
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
                fix_for("exploding_gradients", _read(lr)),
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
                    fix_for("stagnant_weights", _read(lr)),
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
        and _finite(_float_or_none(r[3]))
        and (_float_or_none(r[0]) or 0) >= from_step
    ]
    return float(np.median(ratios)) if ratios else None


# The first step the learning-rate rules read update ratios from (step 0 left out).
RUN_RATIO_FROM_STEP = 1


def slow_fix(lr: LearningRate, update_ratio: float | None, causes: Sequence[str] = ()) -> str:
    """The fix of ``slow_convergence``: raise the learning rate, unless the kernels' median
    update/weight ratio is already at or above ``HEALTHY_UPDATE_RATIO`` (then
    :func:`~kerasdiag.diagnosis.symptoms.large_updates_fix`); after the ``causes`` found first."""
    large = update_ratio is not None and update_ratio >= HEALTHY_UPDATE_RATIO
    fix = large_updates_fix(update_ratio) if large else fix_for("slow_convergence", _read(lr))
    return after_causes_fix(causes, fix) if causes else fix


def rejudge_slow(finding: Finding, update_ratio: float | None, lr: LearningRate) -> None:
    """A ``slow_convergence`` finding made during training, its fix judged again from the
    whole run's median update ratio, the number the ``lr_too_low`` veto of
    :func:`curve_findings` reads: a run says one thing about raising the learning rate (an
    early window's ratio of 1.8e-3 said "do not raise it" while the run's, 0.92e-3, let the
    loss curve say "raise it"). Unchanged without a measured ratio."""
    if update_ratio is None:
        return
    finding.evidence["median_update_ratio"] = update_ratio
    finding.fix = slow_fix(lr, update_ratio, finding.evidence.get("causes_first") or ())


# --- the loss curve and the bias/variance table (after training) -------------------------------


# Where a run's per-epoch learning rate is logged: metrics.csv's column, and the key
# LearningRateMonitor (or the doctor, when nothing logged it) adds to the epoch logs.
LEARNING_RATE_KEYS = ("lr", "learning_rate")


def epoch_learning_rates(history: Mapping[str, Sequence[float]]) -> list[float] | None:
    """The learning rate of each epoch's first step from a per-epoch ``history``, if it
    holds one."""
    for key in LEARNING_RATE_KEYS:
        if history.get(key) is not None:
            return list(history[key])
    return None


def warmup_epochs(learning_rates: Sequence[float] | None) -> int:
    """How many leading epochs trained while the learning rate was still rising to the run's
    peak (a warmup schedule's first epochs), from the rate each epoch's first step used (as
    :class:`~kerasdiag.callbacks.LearningRateMonitor` logs it).

    The epochs that start below the peak, as long as the rate rises from one to the next;
    0 when the rate never rises (constant, decaying) or is not known.
    """
    rates = [float(r) for r in learning_rates or [] if r is not None]
    if len(rates) < 2 or not all(math.isfinite(r) for r in rates):
        return 0
    peak = max(rates)
    first_peak = next(i for i, r in enumerate(rates) if r >= peak * (1 - 1e-6))
    rising = all(rates[i] <= rates[i + 1] for i in range(first_peak))
    return first_peak if rising else 0


def loss_shape(
    losses: Sequence[float],
    initial_loss: float | None,
    thresholds: Thresholds,
    learning_rates: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The shape of a per-epoch training loss curve.

    Returns ``{"shape": s, ...numbers}`` where ``s`` is ``"rising"`` (lr far too high),
    ``"plateau_high"`` (fast drop then a bumpy high plateau: lr too high), ``"linear"``
    (near-linear decay far from converged: lr too low), ``"ok"``, or ``"too_short"`` when
    fewer than ``min_epochs`` finite epochs exist. With ``learning_rates`` (the rate of each
    epoch's first step), a warmup (:func:`warmup_epochs`) is judged apart: a loss that rises
    while the rate climbs says the peak is too high (the whole curve is read for that), but
    one that falls slowly then says nothing about the peak, so the rest is read from the
    first epoch after the warmup (``warmup_epochs`` says how many were left out).
    """
    whole = _curve_shape(losses, initial_loss, thresholds)
    warmup = warmup_epochs(learning_rates)
    if not warmup or whole["shape"] in ("rising", "plateau_high"):
        return {**whole, "warmup_epochs": 0}
    return {**_curve_shape(losses[warmup:], initial_loss, thresholds), "warmup_epochs": warmup}


def _curve_shape(
    losses: Sequence[float], initial_loss: float | None, thresholds: Thresholds
) -> dict[str, Any]:
    """:func:`loss_shape` of ``losses`` as they are (no warmup left out)."""
    th = thresholds
    loss = np.asarray([v for v in losses if math.isfinite(v)], dtype=np.float64)
    n = loss.size
    if n < th.min_epochs:
        return {"shape": "too_short", "epochs": int(n)}
    scale = initial_loss if initial_loss and math.isfinite(initial_loss) else float(loss[0])
    mid = (n - 1) // 2
    first_drop = float(loss[0] - loss[mid])
    second_drop = float(loss[mid] - loss[-1])
    late_gain = float(loss[: mid + 1].min() - loss[mid:].min())
    # Rises anywhere after the first epoch's drop: a capacity-limited model flattens smoothly.
    late_bump = float(np.max(np.diff(loss[1:]), initial=0.0))
    numbers = {
        "initial_loss": scale,
        "first_epoch_loss": float(loss[0]),
        "final_loss": float(loss[-1]),
        "min_loss": float(loss.min()),
        "first_half_drop": first_drop,
        "second_half_drop": second_drop,
        "epochs": int(n),
    }
    if loss[-1] > loss[0] and loss[-1] > (1 + th.rise) * loss.min():
        return {"shape": "rising", **numbers}
    if (
        late_gain < th.plateau_change * scale
        and loss[-1] > th.plateau_level * scale
        and late_bump > th.bump * scale
    ):
        return {"shape": "plateau_high", "largest_late_rise": late_bump, **numbers}
    # Per-epoch rates of the two halves (they differ in length when n is even); fewer than
    # three epochs (min_epochs lowered) have no two halves to compare.
    if mid == 0:
        return {"shape": "ok", **numbers}
    first_rate, second_rate = first_drop / mid, second_drop / (n - 1 - mid)
    if (
        first_rate > 0
        and second_rate > th.linear_ratio * first_rate
        and loss[-1] > th.linear_level * scale
    ):
        return {"shape": "linear", "drop_ratio": second_rate / first_rate, **numbers}
    return {"shape": "ok", **numbers}


def bias_variance(
    train_accuracy: float | None,
    dev_accuracy: float | None,
    test_accuracy: float | None = None,
    bayes_error: float | None = None,
    thresholds: Thresholds | None = None,
    stopped_early: bool = False,
) -> dict[str, Any] | None:
    """The bias/variance table: errors, avoidable bias, variance and the verdict with its fixes.

    None when the training or validation accuracy is unknown. ``bayes_error`` None counts as
    0 (``bayes_error_assumed`` says so).
    """
    th = Thresholds.of(thresholds)
    if not _finite(train_accuracy) or not _finite(dev_accuracy):
        return None
    bayes = 0.0 if bayes_error is None else float(bayes_error)
    train_error, dev_error = 1.0 - float(train_accuracy), 1.0 - float(dev_accuracy)
    avoidable_bias, variance = train_error - bayes, dev_error - train_error
    high_bias, high_variance = avoidable_bias > th.bias, variance > th.variance
    verdict = {
        (False, False): "low bias, low variance",
        (True, False): "high bias",
        (False, True): "high variance",
        (True, True): "high bias and high variance",
    }[(high_bias, high_variance)]
    # The symptoms' fixes, from the one table, without opposite advice (as a run's findings).
    present = [
        s for s, high in (("underfitting", high_bias), ("overfitting", high_variance)) if high
    ]
    fixes = [advice_for(s, present, fix_for(s, stopped_early=stopped_early)) for s in present]
    return {
        "train_error": train_error,
        "dev_error": dev_error,
        "test_error": None if not _finite(test_accuracy) else 1.0 - float(test_accuracy),
        "bayes_error": bayes,
        "bayes_error_assumed": bayes_error is None,
        "avoidable_bias": avoidable_bias,
        "variance": variance,
        "high_bias": high_bias,
        "high_variance": high_variance,
        "verdict": verdict,
        "fixes": fixes,
    }


def accuracies_at(
    history: Mapping[str, Sequence[float]],
    weights_epoch: int | None = None,
    kept_train_accuracy: float | None = None,
) -> tuple[float | None, float | None, int | None]:
    """(training accuracy, validation accuracy, epoch) for the bias/variance table.

    Of the epoch whose weights the model kept (``weights_epoch``, counted from 1 as
    metrics.csv does: early stopping's best epoch when it restores that), so that the table
    and the test score describe the same model; without it, or when that epoch lacks either
    accuracy, of the last epoch that has both. (None, None, None) when none has.

    ``kept_train_accuracy``: the kept weights' accuracy on training examples scored in
    inference mode, as the validation split is (``test_metrics.json``'s
    ``train_accuracy``); it is the training accuracy of the kept epoch's row.
    """
    # The training split scored in inference mode, as validation is, when it was measured
    # (TrainingDoctor): fit's own training accuracy is a training-mode running mean.
    train = history.get(TRAIN_INFERENCE_ACCURACY) or history.get("accuracy") or []
    val = history.get("val_accuracy") or []
    numbers = history.get("epoch") or range(1, len(train) + 1)
    both = [
        (int(e), float(t), float(v))
        for e, t, v in zip(numbers, train, val, strict=False)
        if _finite(t) and _finite(v)
    ]
    if not both:
        return None, None, None
    epoch, t, v = next((row for row in both if row[0] == weights_epoch), both[-1])
    if epoch == weights_epoch and _finite(kept_train_accuracy):
        t = float(kept_train_accuracy)
    return t, v, epoch


def curve_findings(
    history: Mapping[str, Sequence[float]],
    *,
    initial_loss: float | None = None,
    update_ratio: float | None = None,
    test_accuracy: float | None = None,
    bayes_error: float | None = None,
    lr: float | None = None,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    step: int | None = None,
    weights_epoch: int | None = None,
    kept_train_accuracy: float | None = None,
    stopped_early: bool = False,
) -> list[Finding]:
    """lr_too_high / lr_too_low / overfitting / underfitting from per-epoch curves.

    Args:
        history: per-epoch lists, ``loss`` and optionally ``accuracy``, ``val_loss``,
            ``val_accuracy`` (Keras' ``History.history`` or metrics.csv columns).
        initial_loss: the loss before training (scale of the shape tests); None = the first
            epoch's loss.
        update_ratio: median kernel update/weight ratio of the run, if measured: a
            healthy or high ratio vetoes "learning rate too low".
        test_accuracy: shown in the bias/variance evidence.
        bayes_error: human/Bayes error for the bias/variance table (None = 0).
        lr: the learning rate, to say which value to try.
        thresholds: overrides of :class:`Thresholds`.
        step: the final optimizer step, recorded in the findings.
        weights_epoch: the epoch (from 1) whose weights the model kept, e.g. early
            stopping's best: the bias/variance table is of that epoch (see
            :func:`accuracies_at`).
        kept_train_accuracy: the kept weights' training accuracy in inference mode, the
            training side of that epoch's table (see :func:`accuracies_at`).
        stopped_early: the run keeps its best epoch already (early stopping restores it):
            the overfitting fix does not advise stopping early.
    """
    th = Thresholds.of(thresholds)
    findings: list[Finding] = []
    losses = list(history.get("loss") or [])
    epochs = len(losses)
    at = {"step": step, "epoch": epochs or None, "source": "curves"}
    shape = loss_shape(losses, initial_loss, th, epoch_learning_rates(history))
    ratio_note = {} if update_ratio is None else {"median_update_ratio": update_ratio}
    warmup = shape["warmup_epochs"]
    # The epochs the shape was judged on: after a warmup, from the first epoch at the peak.
    first = "the first epoch" if not warmup else f"epoch {warmup + 1}, the first after the warmup"
    judged = "training" if not warmup else f"training after the {warmup}-epoch warmup"
    if shape["shape"] == "rising":
        findings.append(
            make_finding(
                "lr_too_high",
                f"the training loss rose to {shape['final_loss']:.4g} from "
                f"{shape['first_epoch_loss']:.4g} in {first} (a rising loss: the "
                f"learning rate is far too high)",
                {**shape, **ratio_note},
                fix_for("lr_too_high", lr),
                **at,
            )
        )
    elif shape["shape"] == "plateau_high":
        findings.append(
            make_finding(
                "lr_too_high",
                f"the loss dropped fast, then stalled on a bumpy plateau at "
                f"{shape['final_loss']:.4g} ({shape['final_loss'] / shape['initial_loss']:.0%} "
                f"of the initial {shape['initial_loss']:.4g})",
                {**shape, **ratio_note},
                fix_for("lr_too_high", lr),
                **at,
            )
        )
    elif shape["shape"] == "linear" and (
        update_ratio is None or update_ratio < HEALTHY_UPDATE_RATIO
    ):
        findings.append(
            make_finding(
                "lr_too_low",
                f"the loss decays almost linearly (in the second half of {judged} it fell "
                f"{shape['drop_ratio']:.0%} as fast per epoch as in the first) and is still at "
                f"{shape['final_loss']:.4g}, {shape['final_loss'] / shape['initial_loss']:.0%} "
                f"of the initial {shape['initial_loss']:.4g}",
                {**shape, **ratio_note},
                fix_for("lr_too_low", lr),
                **at,
            )
        )

    train_acc, val_acc, table_epoch = accuracies_at(history, weights_epoch, kept_train_accuracy)
    table = bias_variance(train_acc, val_acc, test_accuracy, bayes_error, th, stopped_early)
    rise = val_loss_rise(history, th)
    if (table and table["high_variance"]) or rise:
        evidence = dict(rise or {})
        if table:
            evidence.update(_pick(table, "train_error", "dev_error", "test_error", "variance"))
            evidence["epoch"] = table_epoch
            evidence["variance_threshold"] = th.variance
        parts = []
        if table and table["high_variance"]:
            parts.append(
                f"validation error {table['dev_error']:.1%} vs training error "
                f"{table['train_error']:.1%} (variance {table['variance']:.1%} > "
                f"{th.variance:.0%})"
            )
        if rise:
            parts.append(
                f"validation loss rose to {rise['final_val_loss']:.4g} from its minimum "
                f"{rise['min_val_loss']:.4g} (epoch {rise['min_val_loss_epoch']}) while the "
                f"training loss kept falling"
            )
        # The epoch the numbers are of: the kept weights' table, else the last epoch's curve.
        where = {**at, "epoch": table_epoch} if table and table["high_variance"] else at
        findings.append(
            make_finding(
                "overfitting",
                "; ".join(parts),
                evidence,
                fix_for("overfitting", stopped_early=stopped_early),
                **where,
            )
        )
    if table and table["high_bias"]:
        bayes = "assumed 0" if table["bayes_error_assumed"] else f"{table['bayes_error']:.1%}"
        findings.append(
            make_finding(
                "underfitting",
                f"training error {table['train_error']:.1%} against a Bayes error of {bayes} "
                f"(avoidable bias {table['avoidable_bias']:.1%} > {th.bias:.0%}); validation "
                f"error {table['dev_error']:.1%}",
                {
                    **_pick(
                        table,
                        "train_error",
                        "dev_error",
                        "test_error",
                        "bayes_error",
                        "bayes_error_assumed",
                        "avoidable_bias",
                    ),
                    "bias_threshold": th.bias,
                },
                fix_for("underfitting", lr),
                **{**at, "epoch": table_epoch},
            )
        )
    return findings


def val_loss_rise(history: Mapping[str, Sequence[float]], th: Thresholds) -> dict | None:
    """The validation loss's rise when it ended ``val_loss_rise`` above its minimum while the
    training loss kept falling (overfitting), else None."""
    val = np.asarray(history.get("val_loss") or [], dtype=np.float64)
    train = np.asarray(history.get("loss") or [], dtype=np.float64)
    if val.size < 2 or train.size != val.size or not np.isfinite(val).all():
        return None
    best = int(np.argmin(val))
    if val[-1] > (1 + th.val_loss_rise) * val[best] and train[-1] < train[best]:
        return {
            "min_val_loss": float(val[best]),
            "min_val_loss_epoch": best + 1,
            "final_val_loss": float(val[-1]),
        }
    return None


def _read(lr: LearningRate) -> float | None:
    return lr() if callable(lr) else lr


def _pick(mapping: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: mapping[k] for k in keys if k in mapping}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and math.isfinite(value)


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
