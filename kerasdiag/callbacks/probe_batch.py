"""ProbeBatch: the fixed batch the monitors look at a model through, one pass per step for all."""

from __future__ import annotations

import weakref
from typing import Any, Protocol

import keras
import numpy as np

from kerasdiag.callbacks import stats
from kerasdiag.callbacks.base import check_probe
from kerasdiag.checks.sanity import _common, outputs

ACTIVATIONS = "activations"
GRADIENTS = "gradients"


class ProbeUser(Protocol):
    """A monitor sharing a :class:`ProbeBatch`: which part it reads, and whether it is due."""

    probe_kind: str
    model: keras.Model | None

    def due(self, step: int) -> bool: ...


class ProbeBatch:
    """A fixed probe batch shared by the monitors that look at the model through it.

    A probe runs the batch through the model in training mode, as ``fit`` does (batch norm
    on the probe batch's statistics), then puts the model's state back (moving statistics,
    dropout seeds, metric trackers), so successive probes differ only by training progress
    and every probe draws the same dropout masks. When
    :class:`~kerasdiag.callbacks.ActivationHistograms` and
    :class:`~kerasdiag.callbacks.GradientMonitor` share one ``ProbeBatch`` and are due at
    the same step, one forward pass with the gradient tape on gives both the layer outputs
    and the gradients: the pair costs about one training step on the probe batch instead of
    a forward pass more. The result of the latest step is kept until the next probe.

    Example:

    ```python
    probe = ProbeBatch(x_train[:64], y_train[:64])
    callbacks = [ActivationHistograms(probe, freq=200), GradientMonitor(probe, freq=200)]
    model.fit(x_train, y_train, epochs=5, callbacks=callbacks)
    ```

    Args:
        x: probe inputs (a fixed batch with a batch axis, e.g. 64 training examples); a
            list or dict of arrays for a model with several inputs.
        y: probe targets, as given to ``fit`` (a list or dict for several outputs); needed
            for gradients.
    """

    def __init__(self, x: Any, y: Any = None):
        self.x = _probe_data("x", x)
        self.y = None if y is None else _probe_data("y", y)
        if self.y is not None and outputs.count(self.x) != outputs.count(self.y):
            raise ValueError(
                f"`x` and `y` must hold the same number of examples. "
                f"Received: {outputs.count(self.x)} and {outputs.count(self.y)}"
            )
        self._users: weakref.WeakSet = weakref.WeakSet()
        self._extractors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._last: tuple[weakref.ref, stats.Probe] | None = None

    @classmethod
    def of(cls, x: Any, y: Any = None) -> ProbeBatch:
        """``x`` itself when it is a ProbeBatch (``y`` must then be None), else a new one."""
        if isinstance(x, ProbeBatch):
            if y is not None:
                raise ValueError("`y` must be None when `x` is a ProbeBatch (it holds its targets)")
            return x
        return cls(x, y)

    def attach(self, user: ProbeUser) -> None:
        """Register a monitor whose due probes a pass at the same step should also serve."""
        self._users.add(user)

    def extractor(self, model: keras.Model) -> keras.Model:
        """The model from ``model``'s inputs to its monitored layers' outputs and prediction.

        Built once per model. Raises ValueError for a model without symbolic inputs (a
        subclassed model has no per-layer outputs to probe).
        """
        if model not in self._extractors:
            self._extractors[model] = stats.activation_model(model)
        return self._extractors[model]

    def take(
        self, model: keras.Model, step: int, *, activations: bool = False, gradients: bool = False
    ) -> stats.Probe:
        """The probe of ``model`` before optimizer step ``step``, with the parts asked for
        (:class:`~kerasdiag.callbacks.stats.Probe`: layer outputs and their statistics,
        gradients and their norms).

        A probe already taken at this step is reused; parts it lacks are computed, together
        with those that other attached monitors due at this step will ask for.
        """
        if gradients and self.y is None:
            raise ValueError("gradients need probe targets: pass `y` to the ProbeBatch")
        cached = self._cached(model, step)
        if cached is not None:
            activations = activations and cached.layers is None
            gradients = gradients and cached.grads is None
            if not (activations or gradients):
                return cached
        else:
            cached = stats.Probe(step)
        asked = activations
        for user in list(self._users):
            if getattr(user, "model", None) is model and user.due(step):
                activations |= user.probe_kind == ACTIVATIONS and cached.layers is None
                gradients |= (
                    user.probe_kind == GRADIENTS and cached.grads is None and self.y is not None
                )
        extractor = None
        if activations:
            try:
                extractor = self.extractor(model)
            except ValueError:
                if asked:
                    raise
                activations = False  # a peer's part this model cannot give: not ours to fail
        cached.merge(
            stats.probe_model(model, self.x, self.y if gradients else None, extractor=extractor)
        )
        self._last = (weakref.ref(model), cached)
        return cached

    def invalidate(self) -> None:
        """Forget the kept probe (the weights may change without an optimizer step: a new
        ``fit``, restored weights)."""
        self._last = None

    def __len__(self) -> int:
        return outputs.count(self.x)

    def _cached(self, model: keras.Model, step: int) -> stats.Probe | None:
        if self._last is None:
            return None
        ref, result = self._last
        return result if ref() is model and result.step == step else None


def _probe_data(name: str, value: Any) -> Any:
    """A probe array, or a list/dict of them (one per input or output), each checked."""
    if not outputs.is_structure(value):
        return check_probe(name, value)
    checked = keras.tree.map_structure(lambda a: check_probe(name, a), value)
    sizes = {len(a) for a in keras.tree.flatten(checked)}
    if len(sizes) != 1:
        raise ValueError(
            f"`{name}`: every array must hold the same number of examples. Received {sorted(sizes)}"
        )
    return checked


def inference_accuracy(model: keras.Model, x: Any, y: Any, batch_size: int = 256) -> float | None:
    """Share of ``(x, y)`` a single-output classifier gets right in inference mode (as
    validation is scored); None for several outputs or a loss without classes."""
    if outputs.is_structure(y) or len(outputs.output_names(model)) != 1:
        return None
    try:
        spec = _common.describe_loss(model.loss)
    except ValueError:
        return None
    # Keras' compiled predict step (traced once), not eager calls: at every epoch end a
    # convnet's eager forward pass over 1000 examples costs about twice as much.
    names = outputs.output_names(model)
    predicted = np.concatenate(
        [
            np.asarray(
                outputs.as_list(
                    model.predict_on_batch(outputs.take(x, slice(i, i + batch_size))), names
                )[0]
            )
            for i in range(0, outputs.count(x), batch_size)
        ]
    )
    return _common.accuracy(spec, predicted, _common.class_indices(np.asarray(y)))
