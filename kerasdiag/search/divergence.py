"""``StopOnDivergence``: end a training run whose loss blows up, before it wastes epochs."""

from __future__ import annotations

import math

import keras

from kerasdiag.diagnosis.rules import broken_loss


class StopOnDivergence(keras.callbacks.Callback):
    """Stop training when the loss is NaN/Inf or rises above ``factor`` times its first value.

    The first value is the loss of the first training batch; the check runs after every
    batch on the epoch's running loss, so a learning rate far too high stops within the
    first epoch. The epoch in which training diverged is still validated by Keras; its
    metrics are replaced by NaN in the epoch logs, so that callbacks after this one
    (checkpoints, early stopping, CSV logs) never keep the diverged model as a result: put it
    first in the callback list. ``diverged_epoch`` (0-based) and ``reason`` tell what happened.

    Example:
        >>> stop = StopOnDivergence(factor=4.0)
        >>> model.fit(x, y, validation_split=0.1, epochs=5,
        ...           callbacks=[stop, BestCheckpoint("ckpt")])  # doctest: +SKIP
        >>> stop.diverged_epoch, stop.reason  # doctest: +SKIP
        (0, 'loss 41.3 > 4 x first loss 2.31')
    """

    def __init__(self, factor: float = 4.0, monitor: str = "loss"):
        super().__init__()
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 1):
            raise ValueError(f"factor must be a finite number > 1, got {factor!r}")
        self.factor = float(factor)
        self.monitor = monitor
        self.first: float | None = None
        self.diverged_epoch: int | None = None
        self.reason = ""
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self.first, self.diverged_epoch, self.reason = None, None, ""

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or self.diverged_epoch is not None:
            return
        value = float(value)
        # The one NaN/divergence detector, shared with the NaN stop and the doctor.
        reason = broken_loss(value, self.first, self.factor, self.monitor)
        if reason is not None:
            self._stop(reason)
        elif self.first is None:
            self.first = value

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged_epoch == epoch and logs is not None:
            for key in logs:
                logs[key] = math.nan

    def _stop(self, reason: str) -> None:
        self.diverged_epoch, self.reason = self._epoch, reason
        self.model.stop_training = True
