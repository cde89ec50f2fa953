"""What a metric's name says about it (no TensorFlow here)."""

from __future__ import annotations


def metric_mode(metric: str) -> str:
    """``"min"`` for losses and errors (``val_loss``, ``error``, a regression's ``val_mae``
    and ``val_rmse``), ``"max"`` for the rest.

    The one rule checkpoints, searches and ensembles use to rank scores by a metric name.

    Example:
        >>> metric_mode("val_rmse"), metric_mode("val_accuracy")
        ('min', 'max')
    """
    return "min" if any(word in metric for word in ("loss", "error", "mae", "mse")) else "max"
