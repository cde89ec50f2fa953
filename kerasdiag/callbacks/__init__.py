"""Keras callbacks that watch training, each usable in any ``model.fit``.

    from kerasdiag.callbacks import UpdateRatioMonitor
    model.fit(x, y, callbacks=[UpdateRatioMonitor(freq=50, log_dir="logs")])

Importing this package starts TensorFlow; no configuration lives here.
The numbers the monitors log come from :mod:`kerasdiag.callbacks.stats`.
"""

from kerasdiag.callbacks.activation_histograms import ActivationHistograms
from kerasdiag.callbacks.base import MonitorWarning, ProbeSchedule
from kerasdiag.callbacks.best_checkpoint import BestCheckpoint
from kerasdiag.callbacks.curve_plotter import CurvePlotter
from kerasdiag.callbacks.epoch_tensorboard import EpochTensorBoard
from kerasdiag.callbacks.factory import monitor_callbacks
from kerasdiag.callbacks.filter_images import FilterImages
from kerasdiag.callbacks.gradient_monitor import GradientMonitor
from kerasdiag.callbacks.interrupt import StopOnSignal
from kerasdiag.callbacks.learning_rate_monitor import LearningRateMonitor
from kerasdiag.callbacks.metrics_csv import MetricsCSV
from kerasdiag.callbacks.probe_batch import ProbeBatch
from kerasdiag.callbacks.restore_raw_weights import (
    RestoreRawWeights,
    ema_weights,
    evaluate_with_ema,
)
from kerasdiag.callbacks.training_doctor import TrainingDoctor
from kerasdiag.callbacks.update_ratio_monitor import UpdateRatioMonitor

__all__ = [
    "ActivationHistograms",
    "BestCheckpoint",
    "CurvePlotter",
    "EpochTensorBoard",
    "FilterImages",
    "GradientMonitor",
    "LearningRateMonitor",
    "MetricsCSV",
    "MonitorWarning",
    "ProbeBatch",
    "ProbeSchedule",
    "RestoreRawWeights",
    "StopOnSignal",
    "TrainingDoctor",
    "UpdateRatioMonitor",
    "ema_weights",
    "evaluate_with_ema",
    "monitor_callbacks",
]
