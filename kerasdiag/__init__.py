"""kerasdiag: the discipline of careful neural-network training, built into Keras.

Heavy submodules (TensorFlow) load lazily, so ``import kerasdiag`` and config validation stay
fast and a bad config is reported before TensorFlow starts. Importing kerasdiag also quiets
TensorFlow's start-up noise before TensorFlow loads (:mod:`kerasdiag.core.console`; a
``TF_CPP_MIN_LOG_LEVEL`` already set wins, ``KERASDIAG_TF_LOGS=1`` keeps TensorFlow's own).
"""

from __future__ import annotations

from kerasdiag.core.console import quiet_console as _quiet_console
from kerasdiag.core.lazy import lazy_exports

_quiet_console()  # before anything imports TensorFlow, for the CLI and library users alike

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "ActivationHistograms": "kerasdiag.callbacks.activation_histograms",
    "build_ensemble": "kerasdiag.ensemble",
    "build_report": "kerasdiag.report",
    "check_gradients": "kerasdiag.checks.gradcheck",
    "check_gradients_fast": "kerasdiag.checks.gradcheck",
    "check_initial_loss": "kerasdiag.checks.sanity",
    "check_layer_gradients": "kerasdiag.checks.gradcheck",
    "check_regularization_raises_loss": "kerasdiag.checks.sanity",
    "CurvePlotter": "kerasdiag.callbacks.curve_plotter",
    "diagnose": "kerasdiag.diagnosis",
    "evaluate_with_ema": "kerasdiag.callbacks.restore_raw_weights",
    "expected_initial_loss": "kerasdiag.checks.sanity",
    "FilterImages": "kerasdiag.callbacks.filter_images",
    "find_learning_rate": "kerasdiag.checks.lr_range",
    "check_leakage": "kerasdiag.checks.data",
    "check_split_shift": "kerasdiag.checks.data",
    "check_input_dependence": "kerasdiag.checks.sanity.baseline",
    "check_batch_independence": "kerasdiag.checks.sanity.batch_independence",
    "get_strategy": "kerasdiag.modeling.distribute",
    "GradientMonitor": "kerasdiag.callbacks.gradient_monitor",
    "LearningRateMonitor": "kerasdiag.callbacks.learning_rate_monitor",
    "load_config": "kerasdiag.config",
    "load_dataset": "kerasdiag.data",
    "load_model_safely": "kerasdiag.modeling.safe_load",
    "monitor_callbacks": "kerasdiag.callbacks.factory",
    "MonitorWarning": "kerasdiag.callbacks.base",
    "NaNStop": "kerasdiag.callbacks.nan_stop",
    "NonFiniteLossError": "kerasdiag.callbacks.nan_stop",
    "overfit_small_subset": "kerasdiag.checks.sanity",
    "RestoreRawWeights": "kerasdiag.callbacks.restore_raw_weights",
    "run_ensemble": "kerasdiag.ensemble",
    "run_sanity_stages": "kerasdiag.checks.sanity",
    "run_search": "kerasdiag.search",
    "run_training": "kerasdiag.training.pipeline",
    "RunBackup": "kerasdiag.callbacks.run_backup",
    "StopOnDivergence": "kerasdiag.search",
    "TrainingDoctor": "kerasdiag.callbacks.training_doctor",
    "UpdateRatioMonitor": "kerasdiag.callbacks.update_ratio_monitor",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
__all__ += ["__version__"]
