"""What the benchmarks share: the data location, per-epoch timing, alternating repetitions."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import keras

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
        for name in names if rep % 2 == 0 else reversed(names):
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
