"""``BestCheckpoint``: keep the best model so far, its score in the file name."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import keras

from kerasdiag.core.io import atomic_path, remove_stale_temporaries
from kerasdiag.core.metrics import metric_mode


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model whenever ``monitor`` improves, as ``best-epoch003-val_accuracy0.8123.keras``.

    The file is written under a temporary name and renamed into place
    (:func:`kerasdiag.core.io.atomic_path`), so a crash leaves the previous best intact; the previous
    best is removed only once the new one is complete. A non-finite score never counts as best.
    ``mode="auto"`` minimises losses and maximises everything else. With ``every_epoch=True``
    each epoch is also kept as ``epoch003-val_accuracy0.8123.keras`` (for checkpoint ensembles).

    Example:
        >>> model.fit(x, y, validation_split=0.1, epochs=5,
        ...           callbacks=[BestCheckpoint("run/checkpoints")])  # doctest: +SKIP
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        monitor: str = "val_accuracy",
        mode: str = "auto",
        every_epoch: bool = False,
    ):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.directory = Path(directory)
        self.monitor = monitor
        if mode == "auto":
            mode = metric_mode(monitor)
        self.mode = mode
        self.every_epoch = bool(every_epoch)
        self.best: float | None = None
        self.best_path: Path | None = None
        self.best_epoch: int | None = None  # from 1, as in the file name and metrics.csv

    def on_train_begin(self, logs=None):
        # A resumed run picks up the best checkpoint it already has, and drops any half-written
        # one the interrupted process left under a temporary name.
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.directory)
        existing = find_best_checkpoint(self.directory, self.monitor, self.mode)
        if existing is not None:
            self.best_path, self.best = existing
            self.best_epoch = checkpoint_epoch(self.best_path)
            # A process killed between writing a new best and removing the one before it
            # leaves two: the resumed run keeps one best, as the uninterrupted run does.
            for _, path in _best_files(self.directory, self.monitor):
                if path != self.best_path:
                    path.unlink(missing_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        stem = f"epoch{epoch + 1:03d}-{self.monitor}{value:.4f}"
        if self.every_epoch:
            self._save(self.directory / f"{stem}.keras")
        if not math.isfinite(value) or not self._improves(value):
            return
        path = self._save(self.directory / f"best-{stem}.keras")
        if self.best_path is not None and self.best_path != path:
            self.best_path.unlink(missing_ok=True)
        self.best, self.best_path, self.best_epoch = value, path, epoch + 1

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def _save(self, path: Path) -> Path:
        with atomic_path(path) as tmp:
            self.model.save(tmp)
        return path


def find_best_checkpoint(
    directory: str | os.PathLike, monitor: str = "val_accuracy", mode: str = "max"
) -> tuple[Path, float] | None:
    """The ``best-*.keras`` file in ``directory`` and its score, or None."""
    found = _best_files(directory, monitor)
    if not found:
        return None
    score, path = (min if mode == "min" else max)(found)
    return path, score


def _best_files(directory: str | os.PathLike, monitor: str) -> list[tuple[float, Path]]:
    """(score, path) of every ``best-*-<monitor><score>.keras`` file in ``directory``."""
    found = []
    for path in Path(directory).glob(f"best-*-{monitor}*.keras"):
        try:
            found.append((float(path.stem.rsplit(monitor, 1)[1]), path))
        except ValueError:
            continue
    return found


def checkpoint_epoch(path: str | os.PathLike) -> int | None:
    """The epoch (from 1) in a checkpoint's name: ``best-epoch007-val_loss0.1234.keras`` -> 7."""
    match = re.search(r"epoch(\d+)", Path(path).name)
    return None if match is None else int(match.group(1))
