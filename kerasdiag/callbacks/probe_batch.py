"""ProbeBatch: the fixed batch the monitors look at a model through, one pass per step for all;
ProbeBudget: when a measurement that costs training time is due; SelfMeasurements: what the
TrainingDoctor measures itself on that budget."""

from __future__ import annotations

import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import keras
import numpy as np

from kerasdiag.callbacks import stats
from kerasdiag.callbacks.base import check_probe
from kerasdiag.callbacks.weight_checks import WeightGuard
from kerasdiag.checks.sanity import _common, outputs

ACTIVATIONS = "activations"
GRADIENTS = "gradients"
# Share of the doctor's budget for the NaN/Inf check of the weights (about a hundred
# microseconds: every step of a convnet, every ~10 steps of a tiny MLP). ReLU turns NaN
# inputs into 0, so weights can break while the loss stays finite. The probes get the rest.
WEIGHT_CHECK_SHARE = 0.5
PROBE, WEIGHTS = "probe", "weights"  # the two kinds of measurement on the doctor's budget


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
        self.seconds = 0.0  # spent in probe passes (extractors' traces included): a run's cost

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
        extractor, start = None, time.perf_counter()
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
        self.seconds += time.perf_counter() - start
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


def gradient_record(
    model: keras.Model, probe: stats.Probe, step: int, epoch: int
) -> dict[str, Any]:
    """What a gradient probe of ``model`` before optimizer step ``step`` (of the 0-based
    ``epoch``) says, as :class:`~kerasdiag.callbacks.GradientMonitor` records it and
    :func:`~kerasdiag.diagnosis.rules.gradient_findings` judges it: step, epoch, loss,
    global_norm, global_norm_clipped and layer_norms."""
    return {
        "step": step,
        "epoch": epoch,
        "loss": probe.loss,
        "global_norm": probe.global_norm,
        "global_norm_clipped": probe.global_norm_clipped,
        "layer_norms": stats.layer_gradient_norms(model, probe.gradient_squares),
    }


def layer_activation_stats(
    model: keras.Model, outputs: dict[str, Any]
) -> dict[str, stats.ActivationStats]:
    """:func:`~kerasdiag.callbacks.stats.activation_stats` of each layer output of a probe (:attr:`~kerasdiag.callbacks.stats.Probe.layers`), with
    the activation each layer of ``model`` applies."""
    kinds = {layer.name: stats.activation_kind(layer) for layer in model.layers}
    return {
        name: stats.activation_stats(values, kinds.get(name)) for name, values in outputs.items()
    }


def inference_accuracy(
    model: keras.Model, x: Any, y: Any, batch_size: int | None = None
) -> float | None:
    """Share of ``(x, y)`` a single-output classifier gets right in inference mode (as
    validation is scored); None for several outputs or a loss without classes.
    ``batch_size``: examples per forward pass (default: ``inference_batch_size``)."""
    if outputs.is_structure(y) or len(outputs.output_names(model)) != 1:
        return None
    try:
        spec = _common.describe_loss(model.loss)
    except ValueError:
        return None
    # Keras' compiled predict step (traced once), not eager calls: at every epoch end a
    # convnet's eager forward pass over 1000 examples costs about twice as much.
    names = outputs.output_names(model)
    batch_size = batch_size or outputs.inference_batch_size(x)
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
    return _common.accuracy(spec, predicted, np.asarray(y))


def example_loss_spread(model: keras.Model, x: Any, y: Any) -> float | None:
    """The standard deviation of the examples' losses (the compiled loss, weighted over the
    outputs, nothing averaged across examples) in inference mode; None for fewer than 2
    examples or a loss the checks cannot take apart."""
    if outputs.count(x) < 2:
        return None
    names = outputs.output_names(model)
    try:
        heads = _common.heads(model)
    except ValueError:
        return None
    step = outputs.inference_batch_size(x)
    parts = [outputs.as_list(model.predict_on_batch(outputs.take(x, slice(i, i + step))), names)
             for i in range(0, outputs.count(x), step)]  # fmt: skip
    predicted = [np.concatenate([np.asarray(p[k]) for p in parts]) for k in range(len(names))]
    widths = [np.asarray(p).shape[-1] for p in predicted]
    targets = _common.head_targets(heads, y, widths, names)
    each = _common.per_example_loss(heads, targets, predicted)
    return float(np.std(each, ddof=1)) if np.all(np.isfinite(each)) else None


class ProbeBudget:
    """When a measurement that costs training time is due, within a share of that time.

    A measurement of a kind (a probe, a weight check) is due when the training time since
    the last one of that kind, times ``budget`` times the kind's ``share``, pays for what
    the last one cost: measurements then take at most ``budget`` of the training time
    whatever a step or a measurement costs. The first of a kind is due at once.

    Example:

    ```python
    budget = ProbeBudget(0.01)
    budget.restart(first_step=0)
    budget.spend(0.02, "probe", step=0)  # the first probe took 20 ms
    budget.due("probe", step=10, share=0.5)  # after ~4 s of training (10 steps of 0.4 s)
    ```

    Args:
        budget: the share of training time measurements may take (0 < budget <= 1).
        clock: seconds, monotonic (a fake one in tests).

    Attributes:
        spent: seconds spent measuring since :meth:`restart`.
    """

    def __init__(self, budget: float, clock: Callable[[], float] = time.perf_counter):
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
            raise ValueError(f"`budget` must be a number in (0, 1]. Received: budget={budget!r}")
        self.budget, self.clock = float(budget), clock
        self.restart()

    def restart(self, first_step: int = 0) -> None:
        """A fit begins at optimizer step ``first_step``: time and costs count from now."""
        self.first_step, self.started, self.spent = int(first_step), self.clock(), 0.0
        self._last: dict[str, tuple[int, float]] = {}

    def elapsed(self) -> float:
        """Seconds since :meth:`restart`, measurements included."""
        return self.clock() - self.started

    def spend(self, seconds: float, kind: str | None = None, step: int | None = None) -> None:
        """Count ``seconds`` of measuring; with ``kind``, as its last cost, before ``step``."""
        self.spent += seconds
        if kind is not None:
            self._last[kind] = (int(step), seconds)

    def last(self, kind: str) -> tuple[int, float] | None:
        """(step, seconds) of the last measurement of ``kind``, or None."""
        return self._last.get(kind)

    def due(self, kind: str, step: int, share: float) -> bool:
        """Whether a measurement of ``kind`` before optimizer step ``step`` fits in
        ``share`` of the budget."""
        if kind not in self._last:
            return True
        last_step, last_cost = self._last[kind]
        steps = step - self.first_step
        if steps <= 0:
            return False
        step_time = max((self.elapsed() - self.spent) / steps, 1e-9)
        return (step - last_step) * step_time * self.budget * share >= last_cost


class SelfMeasurements:
    """What the :class:`~kerasdiag.callbacks.TrainingDoctor` measures itself, on its own
    budget: activations and gradients on its probe batch (one pass, through
    :meth:`ProbeBatch.take` and the functions of :mod:`kerasdiag.callbacks.stats`, as the
    monitors measure them), update ratios, a NaN/Inf check of the weights
    (:class:`~kerasdiag.callbacks.weight_checks.WeightGuard`) and the training sample's
    accuracy in inference mode. The kinds a monitor in ``fit`` measures for the doctor are
    left out: it drives no other callback.

    Example:

    ```python
    own = SelfMeasurements(ProbeBatch(x[:32], y[:32]), budget=0.01, ratios=False)
    own.start(model, first_step=0)
    layer_stats, gradient_record = own.probe(step=0, epoch=0)
    ```

    Args:
        probe_batch: the :class:`~kerasdiag.callbacks.ProbeBatch`, or None (no probes).
        budget: the share of training time all of it may take (see :class:`ProbeBudget`).
        activations, gradients, ratios: whether the doctor wants that kind measured here
            (activations and gradients also need the probe batch, gradients its targets).
        train_sample: training examples scored in inference mode, or None.
    """

    def __init__(
        self,
        probe_batch: ProbeBatch | None,
        budget: float,
        *,
        activations: bool = True,
        gradients: bool = True,
        ratios: bool = True,
        train_sample: ProbeBatch | None = None,
    ):
        self.probe_batch, self.train_sample = probe_batch, train_sample
        self.budget = ProbeBudget(budget)
        self._activations = activations and probe_batch is not None
        self.activations = self._activations
        self.gradients = gradients and probe_batch is not None and probe_batch.y is not None
        self.ratios = ratios
        self.probes = 0

    def start(self, model: keras.Model, first_step: int) -> None:
        """A fit of ``model`` begins at optimizer step ``first_step``."""
        self.model = model
        if self.probe_batch is not None:
            self.probe_batch.invalidate()  # a new fit: the weights may have changed
        self.activations = self._activations and self._extractor_builds(model)
        self.budget.restart(first_step)
        self.budget.spend(0.0, WEIGHTS, first_step)  # the weights as fit found them: checked
        self.probes = 0
        self.guard = WeightGuard(model)
        self._variables = list(model.trainable_variables)
        self._layers = stats.variable_layers(model)
        self._snapshot = None  # (step, epoch, values) before a measured optimizer step

    def probe_due(self, step: int, alarm: bool = False) -> bool:
        """Whether to probe before optimizer step ``step``: when the budget allows, or at
        once on an ``alarm`` (the loss shot up: the gradients name the cause)."""
        if not (self.activations or self.gradients or self.ratios):
            return False
        return self.budget.due(PROBE, step, 1 - WEIGHT_CHECK_SHARE) or alarm

    def probe(self, step: int, epoch: int) -> tuple[dict | None, dict | None]:
        """(layer statistics, gradient record) before optimizer step ``step`` (None for a
        kind not measured here); the update ratios of that step come from
        :meth:`finish_ratios`."""
        start, model = time.perf_counter(), self.model
        layer_stats = gradients = None
        if self.activations or self.gradients:
            # One pass for both parts (ProbeBatch keeps it for the step).
            probe = self.probe_batch.take(
                model, step, activations=self.activations, gradients=self.gradients
            )
            if self.activations:
                layer_stats = layer_activation_stats(model, probe.layers)
            if self.gradients:
                gradients = gradient_record(model, probe, step, epoch)
        if self.ratios:
            self._snapshot = (step, epoch, stats.snapshot(self._variables))
        self.budget.spend(time.perf_counter() - start, PROBE, step)
        self.probes += 1
        return layer_stats, gradients

    def finish_ratios(self) -> list[list] | None:
        """The update-ratio rows (step, 1-based epoch, variable, ratio, layer) of the step
        after the last probe, once; None when there is none to finish."""
        if self._snapshot is None:
            return None
        start = time.perf_counter()
        step, epoch, before = self._snapshot
        self._snapshot = None
        ratios = stats.update_ratios(before, self._variables)
        rows = [
            [step, epoch + 1, v.path, float(ratio), layer]
            for v, layer, ratio in zip(self._variables, self._layers, ratios, strict=True)
        ]
        self.budget.spend(time.perf_counter() - start)
        return rows

    def check_weights(self, step: int, due: bool = False) -> list[str]:
        """The weights holding NaN/Inf before optimizer step ``step`` (empty: all finite);
        with ``due``, only when the budget allows (else nothing is checked)."""
        if due and not self.budget.due(WEIGHTS, step, WEIGHT_CHECK_SHARE):
            return []
        start = time.perf_counter()
        finite = self.guard.finite()
        if not self.budget.last(WEIGHTS)[1]:
            # The first call traces the check (~100x a warm call): time a warm call, or
            # that one-off would space all later checks far apart.
            self.budget.spend(time.perf_counter() - start)
            start = time.perf_counter()
            finite = self.guard.finite()
        self.budget.spend(time.perf_counter() - start, WEIGHTS, step)
        return [] if finite else self.guard.broken()

    def inference_accuracy(self) -> float | None:
        """Accuracy of the training sample (or else the probe batch) scored in inference
        mode, as validation is; None when there is nothing to score. Never fit's running
        mean: dropout on, BatchNorm on batch statistics, the weights of the whole epoch."""
        sample = self.train_sample if self.train_sample is not None else self.probe_batch
        if sample is None or sample.y is None:
            return None
        start = time.perf_counter()
        try:
            return inference_accuracy(self.model, sample.x, sample.y)
        finally:
            self.budget.spend(time.perf_counter() - start)

    def _extractor_builds(self, model: keras.Model) -> bool:
        """Whether ``model``'s layer outputs can be probed (a subclassed model has none:
        then everything else is judged)."""
        try:
            self.probe_batch.extractor(model)
        except ValueError as exc:
            warnings.warn(f"TrainingDoctor: no activation probes: {exc}", stacklevel=4)
            return False
        return True
