"""Every threshold of the diagnosis in one dataclass, :class:`Thresholds`: the public API that
takes overrides by field name (``+monitors.doctor_thresholds.bias=0.1``).

Each field is read by one rule family, named in the class docstring and above the field: open
that module to see how the threshold is applied and which fix a finding carries. The rules
take a :class:`Thresholds`, so this module sits below every family and imports none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from kerasdiag.core.arguments import check_positive_float

# Gradient flags (rules/gradients.py): first/last layer gradient-norm ratio below this is
# "vanishing"; a global norm above EXPLODING_NORM, or GROWTH_FACTOR times the median of
# earlier probes, is "exploding". GradientMonitor flags by the same defaults.
VANISHING_RATIO = 1e-3
EXPLODING_NORM = 1e3
GROWTH_FACTOR = 100.0

# A loss that has taken fewer optimizer steps than this has no measured rate of descent: the
# rate rules (slow_convergence in rules/convergence.py, lr_too_high / lr_too_low in
# rules/curves.py) give no verdict before it (3 epochs of a 40-image split are 6 steps).
MIN_RATE_STEPS = 30


@dataclass
class Thresholds:
    """Every threshold of the diagnosis, with the reason for its default.

    Fractions "of the initial loss" are relative to the loss before training (the first
    step's loss; about ln C = 2.30 for softmax over 10 classes), so one setting serves
    cross-entropy, hinge and focal losses alike.

    In training (:class:`~kerasdiag.callbacks.TrainingDoctor`), by family module of
    :mod:`kerasdiag.diagnosis.rules`:

    - ``gradients`` (exploding_gradients, vanishing_gradients):
      ``exploding_norm``: global gradient norm above this explodes (as GradientMonitor).
      ``gradient_growth``: a global norm this many times the median of earlier probes
      explodes. ``vanishing_ratio``: first-layer / last-layer gradient norm below this
      vanishes.
    - ``activations`` (dying_relu, saturated_activations):
      ``dead_fraction``: a ReLU layer with more than this share of units that output 0 for
      every probe example is dying (healthy He-initialised layers: a few percent).
      ``saturated_fraction``: a tanh/sigmoid layer with more than this share of outputs
      saturated (|a| > 0.99, sigmoid outside [0.01, 0.99]) is saturated. The output
      layer is never judged (a confident classifier saturates its output on purpose).
    - ``oscillation`` (oscillating_loss):
      ``oscillation``: the median absolute step-to-step change of the training loss over the
      last ``oscillation_window`` steps, above this fraction of the initial loss, is an
      oscillating loss. Minibatch noise of a healthy run is a few percent; a too-high learning
      rate makes the loss jump by about its own size.
      ``oscillation_noise``: where the spread of the examples' losses is known, the jumps
      must also be this many times what drawing batches alone gives (a noisy regression
      target makes a healthy loss jump by a quarter of its size at 32 examples a batch).
    - ``convergence`` (slow_convergence):
      ``slow_drop`` / ``slow_epochs``: after ``slow_epochs`` epochs the epoch's mean loss
      should be at least ``slow_drop`` (20%) below the initial loss.
    - ``update_ratios`` (stagnant_weights):
      ``stagnant_ratio``: a layer whose kernel's median update/weight ratio over an epoch is
      below this has stagnant weights: 100x under the "learning rate too low" end of the
      update-ratio monitor's healthy band (1e-4 .. 1e-2).

    After training (:func:`~kerasdiag.diagnosis.rules.curve_findings`, also run by the doctor
    at the end of ``fit``):

    - ``curves`` (lr_too_high, lr_too_low):
      ``min_epochs``: the loss curve's shape is judged only with at least this many epochs.
      ``rise``: a final epoch loss above the first epoch's and this fraction above the
      curve's minimum is a rising loss (learning rate far too high).
      ``plateau_change``: a second half of training that lowers the best loss by less than
      this fraction of the initial loss is a plateau;
      ``plateau_level``: ... a high one when the final loss is above this fraction of the
      initial loss;
      ``bump``: ... with the learning rate to blame when the loss rises between two epochs
      after the first by more than this fraction of the initial loss (a capacity-limited
      model flattens smoothly instead).
      ``linear_ratio`` / ``linear_level``: a decay whose second half lowers the loss per epoch
      by more than ``linear_ratio`` times the first half's rate (a healthy curve is convex:
      ~0.1-0.3), with the final loss still above ``linear_level`` of the initial loss, is
      linear (lr too low).
    - ``fitting`` (overfitting, underfitting):
      ``variance``: validation error minus training error above this is high variance,
      overfitting (1% train vs 11% dev error).
      ``val_loss_rise``: a final validation loss this fraction above its minimum while the
      training loss kept falling is overfitting too.
      ``bias``: training error minus the Bayes error above this is high bias, underfitting
      (15% train error against ~0% human error).
      ``confidence_z``: where the run says how many examples each error was measured on,
      bias and variance must clear their thresholds by this many standard errors (1.96:
      a 20-point gap on 24 validation images does not); a gap over its threshold that does
      not is inconclusive, with the number of examples that would decide.

    Example:
        >>> Thresholds.of({"oscillation": 0.5}).oscillation
        0.5
    """

    # rules/gradients.py
    exploding_norm: float = EXPLODING_NORM
    gradient_growth: float = GROWTH_FACTOR
    vanishing_ratio: float = VANISHING_RATIO
    # rules/activations.py
    dead_fraction: float = 0.5
    saturated_fraction: float = 0.5
    # rules/oscillation.py (the doctor keeps the last oscillation_window + 1 losses)
    oscillation: float = 0.25
    oscillation_window: int = 20
    oscillation_noise: float = 3.0
    # rules/convergence.py
    slow_drop: float = 0.2
    slow_epochs: int = 2
    # rules/update_ratios.py
    stagnant_ratio: float = 1e-6
    # rules/curves.py
    min_epochs: int = 4
    rise: float = 0.1
    plateau_change: float = 0.1
    plateau_level: float = 0.2
    bump: float = 0.02
    linear_ratio: float = 0.5
    linear_level: float = 0.5
    # rules/fitting.py
    variance: float = 0.05
    val_loss_rise: float = 0.2
    bias: float = 0.05
    confidence_z: float = 1.96  # a gap must clear its threshold by this many standard errors

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
