"""The monitors a run turns on from its ``monitors`` config section (``conf/monitors/``)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerasdiag.callbacks.activation_histograms import ActivationHistograms
from kerasdiag.callbacks.base import ProbeSchedule
from kerasdiag.callbacks.curve_plotter import CurvePlotter
from kerasdiag.callbacks.filter_images import FilterImages
from kerasdiag.callbacks.gradient_monitor import GradientMonitor
from kerasdiag.callbacks.learning_rate_monitor import LearningRateMonitor
from kerasdiag.callbacks.probe_batch import ProbeBatch
from kerasdiag.callbacks.restore_raw_weights import RestoreRawWeights
from kerasdiag.callbacks.update_ratio_monitor import UpdateRatioMonitor
from kerasdiag.config.schema import MonitorsConfig
from kerasdiag.core.errors import ConfigError
from kerasdiag.core.rundir import RunLayout

# The defaults the monitors use (see benchmarks/bench_monitors.py for their cost). Keys
# missing from the config node fall back to these. A frequency of None adapts to the run:
# see probe_freq.
MONITOR_DEFAULTS: dict[str, Any] = {  # the schema's defaults, the doctor's keys aside
    k: v for k, v in asdict(MonitorsConfig()).items() if not k.startswith("doctor")
}


# A run's curves need points: at least this many probes per run as planned, and this many
# per epoch until then (two, so that a run early stopping cuts short still has ~20); after
# that, at least one per epoch.
MIN_PROBES_PER_RUN = 20
MIN_PROBES_PER_EPOCH = 2
# Probing that often, histograms (the costlier half of a probe) at every second probe.
HISTOGRAM_EVERY = 2
# Without the run's length (monitor_callbacks called without it): fixed frequencies.
FALLBACK_FREQ = {"update_ratio_freq": 50, "activations_freq": 200, "gradients_freq": 200}


def probe_freq(steps_per_epoch: int, epochs: int, min_probes: int = MIN_PROBES_PER_RUN) -> int:
    """Every how many optimizer steps the monitors probe while a run takes its first probes.

    The largest frequency that still probes ``MIN_PROBES_PER_EPOCH`` times in every epoch
    (at least once) and at least ``min_probes`` times in the run as planned (probes go before
    steps 0, f, 2f, ... of ``steps_per_epoch * epochs``). A 10-epoch run of 36 steps per
    epoch probes every 18 steps (20 probes); 20 epochs of 39 steps, every 19.
    """
    spe = max(1, int(steps_per_epoch))
    # floor: any spe consecutive steps hold two multiples of spe // 2 (one when spe is 1)
    per_epoch = max(1, spe // MIN_PROBES_PER_EPOCH)
    return max(1, min(per_epoch, spe * max(1, int(epochs)) // int(min_probes)))


def probe_schedule(
    steps_per_epoch: int, epochs: int, min_probes: int = MIN_PROBES_PER_RUN
) -> ProbeSchedule:
    """When the monitors probe by default: :func:`probe_freq` for the first ``min_probes``
    probes, then as rarely as keeps one probe per epoch and ``min_probes`` per planned run.

    The first probes come twice per epoch, so that a run early stopping ends after half its
    epochs still has ``min_probes``; a longer run then probes once per epoch, which halves
    the monitors' steady cost on short epochs (a probe costs ~25 ms on the CIFAR sample's
    convnet, next to 1.5 s epochs: see ``benchmarks/bench_monitors.py``). 20 epochs of 39
    steps: every 19 steps up to step 380 (20 probes), then every 39 (30 probes in all, 42
    at every 19); 10 epochs of 36 steps: every 18 steps throughout (20 probes).
    """
    spe = max(1, int(steps_per_epoch))
    dense = probe_freq(spe, epochs, min_probes)
    planned = spe * max(1, int(epochs))
    sparse = max(dense, min(spe, planned // int(min_probes)))
    return ProbeSchedule(dense, until=dense * int(min_probes), then=sparse)


def probe_batch(data: Any, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` training examples spread evenly over ``data.x_train`` (fixed, no randomness)."""
    n = len(data.x_train)
    index = np.unique(np.linspace(0, n - 1, num=min(size, n)).astype(int))
    return data.x_train[index], data.y_train[index]


@dataclass
class Monitors:
    """The monitors a run turned on, by role (None: off), and all of them in ``fit``'s order.

    ``measured`` are the ones whose measurements the TrainingDoctor judges.
    """

    learning_rate: LearningRateMonitor | None
    update_ratio: UpdateRatioMonitor | None
    activations: ActivationHistograms | None
    gradients: GradientMonitor | None
    filters: FilterImages | None
    curves: CurvePlotter | None
    restore_raw: RestoreRawWeights

    @property
    def all(self) -> list[keras.callbacks.Callback]:
        return [getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None]

    @property
    def measured(self) -> list[keras.callbacks.Callback]:
        kinds = (self.update_ratio, self.activations, self.gradients)
        return [m for m in kinds if m is not None]


def monitor_callbacks(
    monitors_cfg: Any,
    run_dir: str | os.PathLike,
    data: Any,
    *,
    steps_per_epoch: int | None = None,
    epochs: int | None = None,
) -> Monitors:
    """Build every monitor ``monitors_cfg`` enables, writing into ``run_dir``.

    TensorBoard runs go under ``run_dir/tensorboard/<monitor>``, CSV files
    (``update_ratios.csv``, ``activations.csv``, ``gradient_norms.csv``,
    ``learning_rate.csv``) and PNGs (``loss.png``, ``accuracy.png``, ``filters_*.png``) into
    ``run_dir``. The probe batch is :func:`probe_batch` of ``data`` (a
    :class:`~kerasdiag.data.Dataset`), one :class:`ProbeBatch` shared by the activation
    and gradient monitors. :class:`RestoreRawWeights` is always included: with
    ``optimizer.use_ema`` it keeps the raw weights in the model after ``fit``, so that
    :func:`~kerasdiag.callbacks.restore_raw_weights.evaluate_with_ema` can report both;
    otherwise it does nothing. Invalid values raise :class:`~kerasdiag.core.errors.ConfigError`
    naming the key.

    The ``*_freq`` keys count optimizer steps: the step-based monitors measure before steps
    0, freq, 2 * freq, ... A frequency of None is :func:`probe_schedule` of the run when
    ``steps_per_epoch`` and ``epochs`` are given (twice per epoch until 20 probes are taken,
    then at least once per epoch; histograms at every second probe), else
    ``FALLBACK_FREQ``.

    Example:
        >>> monitors = monitor_callbacks(cfg.monitors, run_dir, data)  # doctest: +SKIP
        >>> model.fit(x, y, callbacks=monitors.all)  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    log_dir = run_dir / RunLayout.TENSORBOARD
    planned = bool(steps_per_epoch and epochs)

    def value(key: str) -> Any:
        found = getattr(monitors_cfg, key, MONITOR_DEFAULTS[key])
        if found is None and key.endswith("_freq"):
            return probe_schedule(steps_per_epoch, epochs) if planned else FALLBACK_FREQ[key]
        return found

    def build(key: str, monitor, filename: str, *probe, **kwargs):
        """The monitor ``key`` if it is on; ``<key>_freq`` is its frequency."""
        if not value(key):
            return None
        try:
            return monitor(
                *probe,
                freq=value(f"{key}_freq"),
                log_dir=log_dir,
                csv_path=run_dir / filename,
                **kwargs,
            )
        except ValueError as exc:
            raise ConfigError(f"monitors.{key}_freq", value(f"{key}_freq"), str(exc)) from None

    probe_size = value("probe_size")
    if isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 1:
        raise ConfigError("monitors.probe_size", probe_size, "must be an integer >= 1")
    # One batch for both probing monitors: when both are due, one pass serves them.
    probe = ProbeBatch(*probe_batch(data, probe_size))
    # Probing at least 20 times a run: half of the probes draw histograms.
    every = {"histogram_every": HISTOGRAM_EVERY if planned else 1}
    return Monitors(
        learning_rate=LearningRateMonitor(
            log_dir=log_dir, csv_path=run_dir / RunLayout.LEARNING_RATE
        )
        if value("learning_rate")
        else None,
        update_ratio=build("update_ratio", UpdateRatioMonitor, RunLayout.UPDATE_RATIOS),
        activations=build(
            "activations", ActivationHistograms, RunLayout.ACTIVATIONS, probe, **every
        ),
        gradients=build("gradients", GradientMonitor, RunLayout.GRADIENT_NORMS, probe, **every),
        filters=FilterImages(out_dir=run_dir, log_dir=log_dir) if value("filters") else None,
        curves=CurvePlotter(run_dir) if value("curves") else None,
        restore_raw=RestoreRawWeights(),
    )
