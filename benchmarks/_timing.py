"""What the benchmarks share: the data location, per-epoch timing, alternating repetitions."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

# The CIFAR-10 sample beside the repository (../shared), or where KERASDIAG_CIFAR_SAMPLE says.
CIFAR_SAMPLE = Path(
    os.environ.get(
        "KERASDIAG_CIFAR_SAMPLE",
        Path(__file__).resolve().parents[2] / "shared/data/cifar10-sample/cifar-10-batches-py",
    )
)


class EpochTimer(keras.callbacks.Callback):
    """Per epoch: the whole epoch's wall time, and the time of its training steps alone.

    ``steps`` runs from the first training batch to the end of the last, so it leaves out
    validation and the work other callbacks do at epoch end (checkpoints, plots).
    Callers drop the first epoch (tracing, warm-up).
    """

    def __init__(self):
        super().__init__()
        self.epochs: list[float] = []
        self.steps: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._steps_start = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._steps_start is None:
            self._steps_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._steps_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self._epoch_start)
        self.steps.append(self._steps_end - self._steps_start)


def alternate(
    variants: dict[str, Callable[[EpochTimer], None]], repetitions: int
) -> dict[str, EpochTimer]:
    """Run each variant ``repetitions`` times, alternating the order; one timer per variant.

    A variant is called with a fresh EpochTimer to pass to its fit; the first epoch of each
    fit is dropped.
    """
    names = list(variants)
    merged = {n: EpochTimer() for n in names}
    for rep in range(repetitions):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            timer = EpochTimer()
            variants[name](timer)
            merged[name].epochs += timer.epochs[1:]
            merged[name].steps += timer.steps[1:]
    return merged


def report(timers: dict[str, EpochTimer], baseline: str) -> dict[str, tuple[float, float]]:
    """Print median step and epoch times per variant with their ratios to ``baseline``."""
    base = timers[baseline]
    base_steps, base_epoch = statistics.median(base.steps), statistics.median(base.epochs)
    print(f"{'variant':<30}{'epochs':>7}{'steps s':>10}{'ratio':>8}{'epoch s':>10}{'ratio':>8}")
    ratios = {}
    for name, t in timers.items():
        steps, epoch = statistics.median(t.steps), statistics.median(t.epochs)
        ratios[name] = (steps / base_steps, epoch / base_epoch)
        print(f"{name:<30}{len(t.epochs):>7}{steps:>10.3f}{ratios[name][0]:>8.3f}"
              f"{epoch:>10.3f}{ratios[name][1]:>8.3f}")  # fmt: skip
    return ratios


# --- whole fits, with and without something, side by side ---------------------------------


class EpochMarks(keras.callbacks.Callback):
    """The wall-clock time each epoch begins at; put it first in the callback list, so that
    the other callbacks' work at the start of an epoch falls after its mark."""

    def __init__(self):
        super().__init__()
        self.marks: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.marks.append(time.perf_counter())


@dataclass
class FitTime:
    """One whole ``fit``: wall and process CPU seconds, and its wall time cut into parts:
    from the call to the start of epoch 0 (set-up, the callbacks' ``on_train_begin``), from
    the start of each epoch to the start of the next (its steps, validation, every
    callback's epoch-end work), and from the start of the last epoch to the return."""

    wall: float
    cpu: float
    parts: list[float]


def time_fit(run: Callable[[EpochMarks], Any]) -> tuple[FitTime, Any]:
    """Time ``run(marks)``, which calls ``fit`` with ``marks`` first among its callbacks."""
    marks = EpochMarks()
    start, cpu = time.perf_counter(), time.process_time()
    result = run(marks)
    end, cpu = time.perf_counter(), time.process_time() - cpu
    return FitTime(end - start, cpu, np.diff([start, *marks.marks, end]).tolist()), result


def side_by_side(
    variants: dict[str, Callable[[EpochMarks], Any]],
    repetitions: int,
    each: Callable[[int, str, FitTime, Any], None] = lambda *_: None,
) -> dict[str, list[FitTime]]:
    """Time every variant's fit ``repetitions`` times, rotating the order each repetition
    (so every variant runs in every position equally often); ``each(rep, name, time,
    result)`` is called after every fit.

    The first variant (the baseline) runs once untimed before: the process's first fit
    pays for TensorFlow's own start-up, which no variant should carry.
    """
    names = list(variants)
    time_fit(variants[names[0]])
    times: dict[str, list[FitTime]] = {n: [] for n in names}
    for rep in range(repetitions):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            fit_time, result = time_fit(variants[name])
            times[name].append(fit_time)
            each(rep, name, fit_time, result)
    return times


@dataclass
class Ratios:
    """``variant / baseline`` over repeated fits: the medians of the per-repetition ratios
    of whole-fit wall time and of process CPU time (all threads)."""

    wall: float
    cpu: float
    spread: tuple[float, float]  # lowest and highest per-repetition wall ratio


def ratios(times: dict[str, list[FitTime]], baseline: str, variant: str) -> Ratios:
    pairs = list(zip(times[variant], times[baseline], strict=True))
    walls = [o.wall / b.wall for o, b in pairs]
    return Ratios(
        wall=statistics.median(walls),
        cpu=statistics.median(o.cpu / b.cpu for o, b in pairs),
        spread=(min(walls), max(walls)),
    )


def print_ratios(times: dict[str, list[FitTime]], baseline: str) -> dict[str, Ratios]:
    """Print every other variant's :class:`Ratios` to ``baseline``; return them by name."""
    result = {}
    for name in [n for n in times if n != baseline]:
        r = result[name] = ratios(times, baseline, name)
        print(f"{name} / {baseline}: median wall {r.wall:.3f} (per repetition "
              f"{r.spread[0]:.3f} to {r.spread[1]:.3f}), median cpu {r.cpu:.3f}")  # fmt: skip
    return result
