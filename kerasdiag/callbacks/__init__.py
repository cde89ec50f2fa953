"""Keras callbacks that watch training (M1-M6, O4), each usable in any ``model.fit``.

    from kerasdiag.callbacks import UpdateRatioMonitor
    model.fit(x, y, callbacks=[UpdateRatioMonitor(freq=50, log_dir="logs")])

Importing this package starts TensorFlow; no configuration lives here.
The numbers the monitors log come from :mod:`kerasdiag.callbacks.stats`.
"""

from kerasdiag.callbacks.activations import ActivationHistograms
from kerasdiag.callbacks.base import MonitorWarning
from kerasdiag.callbacks.checkpoint import BestCheckpoint
from kerasdiag.callbacks.curves import CurvePlotter
from kerasdiag.callbacks.doctor import TrainingDoctor
from kerasdiag.callbacks.ema import RestoreRawWeights, ema_weights, evaluate_with_ema
from kerasdiag.callbacks.factory import monitor_callbacks
from kerasdiag.callbacks.filters import FilterImages
from kerasdiag.callbacks.gradients import GradientMonitor
from kerasdiag.callbacks.learning_rate import LearningRateMonitor
from kerasdiag.callbacks.metrics_csv import MetricsCSV
from kerasdiag.callbacks.probe import ProbeBatch
from kerasdiag.callbacks.update_ratio import UpdateRatioMonitor

__all__ = [
    "ActivationHistograms",
    "BestCheckpoint",
    "CurvePlotter",
    "FilterImages",
    "GradientMonitor",
    "LearningRateMonitor",
    "MetricsCSV",
    "MonitorWarning",
    "ProbeBatch",
    "RestoreRawWeights",
    "TrainingDoctor",
    "UpdateRatioMonitor",
    "ema_weights",
    "evaluate_with_ema",
    "monitor_callbacks",
]
