"""Every rule that names a symptom from measured numbers, one module per family, with every
threshold.

Pure functions of plain numbers: no TensorFlow, no Keras, no files. The callbacks only gather
the numbers and call these rules: :class:`~kerasdiag.callbacks.TrainingDoctor` during ``fit``
(loss of every step, gradient norms, activation statistics, update ratios),
:func:`kerasdiag.diagnose` on a finished run's files (the curve rules), the stand-alone
monitors (:func:`gradient_flags`, :func:`update_ratio_verdict`), the NaN stop and the search's
divergence stop (:func:`broken_loss`). So a run judged live and a run judged afterwards get
the same verdicts, and each rule can be tested on numbers alone.

Where each symptom is judged (every module's docstring names its rules, thresholds and
fixes; the threshold fields are :class:`Thresholds`' in ``thresholds.py``, overridable by
name; every fix text is written once, in the table of :mod:`kerasdiag.diagnosis.symptoms`,
so that no two places can advise differently):

=========================  ====================  =========================================
symptom                    module                thresholds
=========================  ====================  =========================================
nan (and diverged)         ``nan.py``            ``STABLE_BEFORE_NAN``
exploding_gradients        ``gradients.py``      ``exploding_norm``, ``gradient_growth``
vanishing_gradients        ``gradients.py``      ``vanishing_ratio``
dying_relu                 ``activations.py``    ``dead_fraction``
saturated_activations      ``activations.py``    ``saturated_fraction``
oscillating_loss           ``oscillation.py``    ``oscillation``, ``oscillation_window``
slow_convergence           ``convergence.py``    ``slow_drop``, ``slow_epochs``
stagnant_weights           ``update_ratios.py``  ``stagnant_ratio``; the band per optimizer
lr_too_high, lr_too_low    ``curves.py``         ``min_epochs``, ``rise``, ``plateau_*``,
                                                 ``bump``, ``linear_*``
overfitting, underfitting  ``fitting.py``        ``variance``, ``val_loss_rise``, ``bias``
=========================  ====================  =========================================

``common.py`` holds what the families share (:data:`LearningRate`). Modules of this package
import each other's modules directly, never this ``__init__``, which only re-exports their
names for ``from kerasdiag.diagnosis import rules; rules.X``.

Example:
    >>> from kerasdiag.diagnosis.rules import Thresholds, oscillation_finding
    >>> oscillation_finding([2.3, 0.5, 2.2, 0.4] * 6, 2.3, Thresholds(), lr=0.1, step=24).symptom
    'oscillating_loss'
"""

from __future__ import annotations

from kerasdiag.diagnosis.rules.activations import ActivationStats, activation_findings
from kerasdiag.diagnosis.rules.common import LearningRate
from kerasdiag.diagnosis.rules.convergence import rejudge_slow, slow_finding, slow_fix
from kerasdiag.diagnosis.rules.curves import (
    LEARNING_RATE_KEYS,
    curve_findings,
    epoch_learning_rates,
    learning_rate_findings,
    loss_shape,
    warmup_epochs,
)
from kerasdiag.diagnosis.rules.fitting import (
    TRAIN_INFERENCE_ACCURACY,
    accuracies_at,
    bias_variance,
    bias_variance_findings,
    val_loss_rise,
)
from kerasdiag.diagnosis.rules.gradients import gradient_findings, gradient_flags, vanishing_ratio
from kerasdiag.diagnosis.rules.nan import STABLE_BEFORE_NAN, broken_loss, nan_finding, stable_before
from kerasdiag.diagnosis.rules.oscillation import oscillation_finding, oscillation_index
from kerasdiag.diagnosis.rules.thresholds import (
    EXPLODING_NORM,
    GROWTH_FACTOR,
    VANISHING_RATIO,
    Thresholds,
)
from kerasdiag.diagnosis.rules.update_ratios import (
    ADAPTIVE_OPTIMIZERS,
    ADAPTIVE_SPARSE_UPDATE_RATIO_HIGH,
    ADAPTIVE_UPDATE_RATIO_HIGH,
    HEALTHY_UPDATE_RATIO,
    RUN_RATIO_FROM_STEP,
    UPDATE_RATIO_HIGH,
    UPDATE_RATIO_LOW,
    median_update_ratio,
    stagnant_findings,
    update_ratio_band,
    update_ratio_verdict,
)

# Reachable as rules.X since the rules imported them; their home is symptoms.
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

__all__ = [
    "ADAPTIVE_OPTIMIZERS",
    "ADAPTIVE_SPARSE_UPDATE_RATIO_HIGH",
    "ADAPTIVE_UPDATE_RATIO_HIGH",
    "EXPLODING_NORM",
    "GROWTH_FACTOR",
    "HEALTHY_UPDATE_RATIO",
    "LEARNING_RATE_KEYS",
    "RUN_RATIO_FROM_STEP",
    "STABLE_BEFORE_NAN",
    "TRAIN_INFERENCE_ACCURACY",
    "UPDATE_RATIO_HIGH",
    "UPDATE_RATIO_LOW",
    "VANISHING_RATIO",
    "ActivationStats",
    "Finding",
    "LearningRate",
    "Thresholds",
    "accuracies_at",
    "activation_findings",
    "advice_for",
    "after_causes_fix",
    "bias_variance",
    "bias_variance_findings",
    "broken_loss",
    "curve_findings",
    "epoch_learning_rates",
    "fix_for",
    "gradient_findings",
    "gradient_flags",
    "large_updates_fix",
    "learning_rate_findings",
    "loss_shape",
    "make_finding",
    "median_update_ratio",
    "nan_finding",
    "nan_fix",
    "oscillation_finding",
    "oscillation_index",
    "rejudge_slow",
    "slow_finding",
    "slow_fix",
    "stable_before",
    "stagnant_findings",
    "update_ratio_band",
    "update_ratio_verdict",
    "val_loss_rise",
    "vanishing_after_dying_fix",
    "vanishing_ratio",
    "warmup_epochs",
]
