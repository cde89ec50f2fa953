"""What a metric's name says about it (no TensorFlow here)."""

from __future__ import annotations


def metric_mode(metric: str) -> str:
    """``"min"`` for losses and errors (``val_loss``, ``error``), ``"max"`` for the rest.

    The one rule checkpoints, searches and ensembles use to rank scores by a metric name.
    """
    return "min" if "loss" in metric or "error" in metric else "max"
