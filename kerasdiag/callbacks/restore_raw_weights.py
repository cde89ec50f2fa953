"""Evaluation with the optimizer's moving average of the weights.

Keras 3 optimizers keep an exponential moving average of the trainable variables when
created with ``use_ema=True`` (``ema_momentum`` sets its decay). Two Keras behaviours shape
this module:

- ``fit`` ends with ``optimizer.finalize_variable_values(...)``, which overwrites the
  model's weights with their moving average. After a plain ``fit`` the raw weights are gone
  and "raw" and "EMA" scores coincide; :class:`RestoreRawWeights` puts the raw weights back
  at the end of ``fit`` so both can be compared.
- ``keras.callbacks.SwapEMAWeights`` swaps by adding and subtracting the two sets of
  values, which changes the last bits of the raw weights. :func:`ema_weights` swaps by
  assignment from a copy instead, so the raw weights come back bit for bit.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from kerasdiag.callbacks.base import MonitorWarning
from kerasdiag.callbacks.stats import snapshot
from kerasdiag.modeling.optimizers import optimizer_step


def ema_optimizer(model: keras.Model) -> keras.optimizers.Optimizer:
    """The model's optimizer holding a weight moving average (unwrapping loss scaling)."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if optimizer is None or not getattr(optimizer, "use_ema", False):
        raise ValueError(
            f"model {model.name!r} was not compiled with an optimizer that has use_ema=True; "
            f"there is no moving average of the weights to evaluate"
        )
    if not hasattr(optimizer, "_model_variables_moving_average"):
        raise ValueError(
            f"the optimizer of model {model.name!r} has not been built yet (train first); "
            f"it holds no moving average of the weights"
        )
    return optimizer


@contextlib.contextmanager
def ema_weights(model: keras.Model) -> Iterator[None]:
    """Within the block, the model's trainable variables hold their moving average.

    On exit the previous values are assigned back exactly.
    """
    optimizer = ema_optimizer(model)
    pairs = [
        (variable, average)
        for variable, average in zip(
            optimizer._trainable_variables, optimizer._model_variables_moving_average, strict=True
        )
        if average is not None
    ]
    raw = snapshot([variable for variable, _ in pairs])
    for variable, average in pairs:
        variable.assign(average)
    try:
        yield
    finally:
        for (variable, _), value in zip(pairs, raw, strict=True):
            variable.assign(value)


def evaluate_with_ema(
    model: keras.Model, x: Any, y: Any, batch_size: int | None = None
) -> dict[str, dict[str, float]]:
    """Scores of the raw weights and of their moving average: {"raw": {...}, "ema": {...}}.

    Each entry is ``model.evaluate(..., return_dict=True)``. The model holds its raw weights
    again afterwards, bit for bit. Raises ValueError when the optimizer has no moving
    average; warns when raw and averaged weights are identical (a ``fit`` without
    :class:`RestoreRawWeights` left the average in the model).

    Example:

    ```python
    model.compile(optimizer=keras.optimizers.Adam(1e-3, use_ema=True), loss=..., metrics=["accuracy"])
    model.fit(x, y, epochs=5, callbacks=[RestoreRawWeights()])
    scores = evaluate_with_ema(model, x_test, y_test, batch_size=256)
    scores["raw"]["accuracy"], scores["ema"]["accuracy"]
    ```
    """
    optimizer = ema_optimizer(model)
    same = all(
        np.array_equal(v.numpy(), a.numpy())
        for v, a in zip(
            optimizer._trainable_variables, optimizer._model_variables_moving_average, strict=True
        )
        if a is not None
    )
    if same:
        warnings.warn(
            "evaluate_with_ema: the model's weights equal their moving average (Keras' fit "
            "overwrites them at its end unless RestoreRawWeights is among the callbacks), so "
            "the raw and EMA scores are the same",
            MonitorWarning,
            stacklevel=2,
        )
    raw = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    with ema_weights(model):
        ema = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    return {"raw": _floats(raw), "ema": _floats(ema)}


class RestoreRawWeights(keras.callbacks.Callback):
    """Keeps the raw weights in the model after ``fit`` when the optimizer uses EMA.

    Keras' ``fit`` replaces the weights with their moving average after the last epoch. This
    callback copies the weights at each epoch end (a copy-on-write reference, no copy until
    the next step) and assigns them back in ``on_train_end``, provided no optimizer step
    happened in between. The moving average stays in the optimizer, so
    :func:`evaluate_with_ema` can report both. Does nothing when the optimizer has no EMA.

    Example:

    ```python
    model.fit(x, y, epochs=5, callbacks=[RestoreRawWeights()])
    evaluate_with_ema(model, x_val, y_val)
    ```
    """

    def __init__(self):
        super().__init__()
        self._raw = None
        self._iterations = None

    def _optimizer(self):
        optimizer = getattr(self.model, "optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        return optimizer if getattr(optimizer, "use_ema", False) else None

    def on_train_begin(self, logs=None):
        self._raw = None

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self._optimizer()
        if optimizer is not None:
            self._raw = snapshot(self.model.trainable_variables)
            self._iterations = optimizer_step(optimizer)

    def on_train_end(self, logs=None):
        optimizer = self._optimizer()
        if optimizer is None or self._raw is None:
            return
        if optimizer_step(optimizer) != self._iterations:
            # Some step ran after the last epoch end (another callback trained on): the copy
            # is stale, and the model keeps what fit left in it.
            return
        for variable, value in zip(self.model.trainable_variables, self._raw, strict=True):
            variable.assign(value)
        self._raw = None


def _floats(scores: dict) -> dict[str, float]:
    return {key: float(value) for key, value in scores.items()}
