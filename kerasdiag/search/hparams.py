"""Search trials on TensorBoard's HParams dashboard: ``tensorboard --logdir RUN_DIR/tensorboard``.

The search writes the dashboard's config once (:func:`write_hparams_config`: every
hyperparameter with its domain, the objective and the trial metrics), and each trial one
TensorBoard run ``tensorboard/search/trial_{id}`` holding its values and its results
(:func:`log_trial`), with TensorBoard's own ``hparams`` API. Choices are shown as their JSON
text (``[0.1]``), as keras-tuner holds them.

Example:
    >>> log_trial("outputs/s1", "3", space, {"lr": 0.01}, "val_accuracy", 0.93, {})  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from kerasdiag.config.search_space import Param
from kerasdiag.core.rundir import RunLayout

TRIAL_METRICS = ("epochs_run", "diverged")


def _hparam(param: Param) -> Any:
    if param.type == "choice":
        domain = hp.Discrete([param.encode(v) for v in param.values])
    elif param.type == "int":
        domain = hp.IntInterval(int(param.low), int(param.high))
    else:
        domain = hp.RealInterval(float(param.low), float(param.high))
    return hp.HParam(param.name, domain, description=param.key)


def write_hparams_config(
    run_dir: str | os.PathLike, space: Sequence[Param], objective: str
) -> None:
    """The dashboard's config: the hyperparameters, their domains and the metrics compared."""
    metrics = [hp.Metric(objective, display_name=objective)]
    metrics += [hp.Metric(name, display_name=name) for name in TRIAL_METRICS]
    writer = tf.summary.create_file_writer(str(Path(run_dir) / RunLayout.SEARCH_HPARAMS))
    with writer.as_default():
        hp.hparams_config(hparams=[_hparam(p) for p in space], metrics=metrics)
    writer.close()


def log_trial(
    run_dir: str | os.PathLike,
    trial_id: str,
    space: Sequence[Param],
    values: Mapping[str, Any],
    objective: str,
    score: float,
    metrics: Mapping[str, float],
) -> Path:
    """One trial's values and results as a TensorBoard run; returns its directory.

    A trial run again (its process was killed before its result was recorded) replaces the
    earlier try's run: one event file per trial, whatever was interrupted.
    """
    folder = Path(run_dir) / RunLayout.SEARCH_HPARAMS / f"trial_{trial_id}"
    shutil.rmtree(folder, ignore_errors=True)
    chosen = {p.name: p.encode(values[p.name]) for p in space if p.name in values}
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        hp.hparams(chosen, trial_id=f"trial_{trial_id}")
        if math.isfinite(score):  # a trial without a score shows its values only
            tf.summary.scalar(objective, float(score), step=0)
        for name, value in metrics.items():
            tf.summary.scalar(name, float(value), step=0)
    writer.close()
    return folder
