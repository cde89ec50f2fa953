"""``NaNStop``: end training at the first NaN/Inf loss and say where it happened (B1).

Keras' ``TerminateOnNaN`` either sets ``stop_training`` (the epoch then still ends: validation
runs on the broken weights and every ``on_epoch_end`` sees a half epoch, so checkpoints,
backups and metrics.csv would record it) or raises a bare RuntimeError. ``NaNStop`` raises
:class:`NonFiniteLossError` instead, so no callback records the broken epoch, and the error
carries a record: epoch, batch, global step, loss, learning rate and what to try.
``scripts/train.py`` turns it into one line, a ``nan.json`` in the run directory and exit
code 3 (bad input is 2).
"""

from __future__ import annotations

import math
from typing import Any

import keras

from kerasdiag.errors import KerasdiagError

NAN_EXIT_CODE = 3


class NonFiniteLossError(KerasdiagError):
    """The training loss became NaN or Inf; ``record`` says where and what to try."""

    exit_code = NAN_EXIT_CODE

    def __init__(self, record: dict[str, Any]):
        self.record = record
        super().__init__(nan_message(record))


class NaNStop(keras.callbacks.TerminateOnNaN):
    """Raise :class:`NonFiniteLossError` at the first batch whose loss is NaN or Inf.

    Nothing after the last completed epoch is recorded by the other callbacks: the error
    leaves ``fit`` before the broken epoch ends. A callback placed before this one that has
    already stopped training at that batch (the search's ``StopOnDivergence``, which records
    a diverged trial itself) takes precedence: then NaNStop does nothing.

    Example:
        >>> try:
        ...     model.fit(x, y, epochs=5, callbacks=[NaNStop()])  # doctest: +SKIP
        ... except NonFiniteLossError as exc:
        ...     print(exc.record["global_step"], exc.record["advice"])
    """

    def __init__(self):
        super().__init__(raise_error=True)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(keras.ops.convert_to_numpy(loss))
        if math.isfinite(loss) or self.model.stop_training:
            return
        raise NonFiniteLossError(self.record(batch, loss))

    def record(self, batch: int, loss: float) -> dict[str, Any]:
        """Where the loss broke (1-based epoch and batch, global step) and what to try."""
        optimizer = self.model.optimizer
        lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        clipped = any(
            getattr(optimizer, name, None) is not None
            for name in ("clipnorm", "clipvalue", "global_clipnorm")
        )
        return {
            "symptom": "nan_loss" if math.isnan(loss) else "inf_loss",
            "loss": str(loss),
            "epoch": self._epoch + 1,
            "batch": batch + 1,
            "steps_per_epoch": self.params.get("steps"),
            "global_step": step,
            "completed_epochs": self._epoch,
            "learning_rate": lr,
            "advice": nan_advice(lr, step, clipped),
        }


def nan_advice(lr: float, step: int, clipped: bool) -> list[str]:
    """What to try after a NaN/Inf loss, most likely cure first."""
    advice = [f"lower the learning rate 10x: optimizer.lr={lr / 10:.3g} (it was {lr:.3g})"]
    if not clipped:
        advice.append("clip gradients: optimizer.global_clipnorm=1.0")
    if step <= 10:
        advice.append(
            "it broke in the first steps: check the inputs (data.normalize=true, no huge "
            "values) and the loss (loss.from_logits matches the model's last layer)"
        )
    else:
        advice.append(
            "add a warm-up or a decaying schedule (schedule=cosine schedule.warmup_epochs=1)"
        )
    return advice


def nan_message(record: dict[str, Any]) -> str:
    """The one console line for a NaN/Inf stop."""
    where = f"epoch {record.get('epoch')}, batch {record.get('batch')}"
    if record.get("steps_per_epoch"):
        where += f"/{record['steps_per_epoch']}"
    text = (
        f"training stopped: loss became {record.get('loss')} at {where} "
        f"(step {record.get('global_step')}, lr {record.get('learning_rate', float('nan')):.3g})"
        f"; try: {'; '.join(record.get('advice', []))}"
    )
    if "checkpoint" in record:
        kept = record["checkpoint"] or "no checkpoint yet"
        done = record.get("completed_epochs")
        text += f"; metrics.csv keeps the {done} completed epoch(s); best checkpoint: {kept}"
    if "record_file" in record:
        text += f"; details in {record['record_file']}"
    return text
