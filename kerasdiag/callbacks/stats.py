"""The numbers behind the monitors, as small functions any callback (or a diagnosis) can call.

Every function here takes a model (and a probe batch where it needs one) and returns plain
numbers, so the monitors log them and a diagnosis can judge them with the same thresholds.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import keras
import numpy as np
import tensorflow as tf

# The thresholds and the rules that read these numbers live in kerasdiag.diagnosis.rules.
from kerasdiag.checks.traced import like_fit
from kerasdiag.core.activations import ZERO_FLOORED
from kerasdiag.diagnosis.rules import (
    ActivationStats,
)

# tanh units count as saturated at |a| > 0.99, sigmoid units outside [0.01, 0.99].
TANH_SATURATION = 0.99
SIGMOID_SATURATION = (0.01, 0.99)
# Histograms are bucketed from at most this many values (a strided subsample), in this many
# buckets: see histogram_buckets.
HISTOGRAM_MAX_VALUES = 16384
HISTOGRAM_BUCKETS = 30


# --- variables grouped by layer ---------------------------------------------------------


def layer_variables(model: keras.Model) -> dict[str, list]:
    """The model's trainable variables grouped by top-level layer name, in layer order.

    Variables owned by the model itself rather than a layer are grouped under the model's
    name. Layers without trainable variables are left out.
    """
    groups: dict[str, list] = {}
    seen: set[int] = set()
    for layer in model.layers:
        variables = [v for v in layer.trainable_variables if id(v) not in seen]
        seen.update(id(v) for v in variables)
        if variables:
            groups[layer.name] = variables
    rest = [v for v in model.trainable_variables if id(v) not in seen]
    if rest:
        groups[model.name] = rest
    return groups


def variable_layers(model: keras.Model) -> list[str]:
    """The layer name of each of ``model.trainable_variables``, in the same order."""
    owner = {id(v): name for name, vs in layer_variables(model).items() for v in vs}
    return [owner[id(v)] for v in model.trainable_variables]


# --- update ratios -----------------------------------------------------------------


def snapshot(variables: Sequence) -> list[tf.Tensor]:
    """The current values of ``variables`` as tensors.

    TensorFlow copies a variable's buffer on the next write while a tensor still refers to
    it, so this costs no copy until the optimizer updates the variable.
    """
    return [tf.convert_to_tensor(v) for v in variables]


def is_sparse_table(variable: Any) -> bool:
    """Whether ``variable`` is an Embedding table, whose steps update only the looked-up rows."""
    return str(getattr(variable, "path", "")).endswith("embeddings") and len(variable.shape) == 2


def update_ratios(before: Sequence, after: Sequence) -> np.ndarray:
    """||after - before|| / ||before|| per variable; NaN where ``before`` is all zeros.

    A zero-initialised bias has no scale to compare its first update with, hence NaN. For
    an Embedding table (``is_sparse_table``) both norms are over the rows the step changed:
    a batch looks up a few rows of a large vocabulary, and the whole table's norm would make
    a healthy step look stagnant. Computed in numpy: a few small arrays, where eager
    TensorFlow would spend ~1 ms of dispatch per operation. A compiled version measured
    1.9 ms per call against ~3 ms here, but its trace costs ~0.35 s per run, more than the
    ~20 measurements of a run save.
    """
    ratios = np.full(len(before), np.nan)
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        sparse = is_sparse_table(a)
        b, a = host_array(b), host_array(a)
        if sparse:
            changed = np.any(a != b, axis=1)
            if changed.any():
                a, b = a[changed], b[changed]
        norm = float(np.linalg.norm(b))
        if norm > 0:
            ratios[i] = float(np.linalg.norm(a - b)) / norm
    return ratios


def host_array(value: Any) -> np.ndarray:
    """A tensor's or a Keras variable's values as a float32 numpy array, without a copy where
    the memory allows: ``keras.ops.convert_to_numpy`` copies a variable through an eager read
    (2.6 ms for a 4096 x 128 kernel, against 0.15 ms for its value), which was most of an
    update-ratio measurement's cost."""
    if isinstance(value, keras.Variable):
        value = value.value
    return np.asarray(value, dtype=np.float32)


def optimizer_name(optimizer: Any) -> str:
    """The class name of ``optimizer`` (of the optimizer inside a loss-scaling wrapper), as
    :func:`kerasdiag.diagnosis.rules.update_ratio_band` takes it."""
    return type(getattr(optimizer, "inner_optimizer", optimizer)).__name__


# Layers whose update ratio says nothing about the learning rate: a normalization layer's
# scale and offset start at 1 and 0 and move little by design (under SGD a BN layer's gamma
# measured 1e-8..1e-7 of its norm per step while the convolutions around it learned).
NORMALIZATION_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.GroupNormalization,
    keras.layers.LayerNormalization,
    keras.layers.RMSNormalization,
)


def kernels_by_layer(model: keras.Model) -> dict[str, Any]:
    """Each layer's largest trainable variable (its kernel), whose update ratio the rules
    judge against the learning rate; normalization layers (``NORMALIZATION_LAYERS``) are
    left out, their parameters are still measured."""
    normalization = {
        layer.name for layer in model.layers if isinstance(layer, NORMALIZATION_LAYERS)
    }
    return {
        layer: variables[main_variable_index(variables)]
        for layer, variables in layer_variables(model).items()
        if layer not in normalization
    }


def main_variable_index(variables: Sequence) -> int:
    """Index of the largest variable of a layer (its kernel): the one the lr is judged by.

    Biases start at zero, so their relative updates are huge or undefined early in training
    and say nothing about the learning rate.
    """
    return int(np.argmax([int(np.prod(v.shape)) for v in variables]))


# --- one probe pass: layer outputs, gradients and their summaries ---------------


@dataclass
class Probe:
    """What one probe pass saw; the parts not asked for are None.

    ``layers``: each monitored layer's output (numpy, in layer order); ``loss``: the
    compiled loss; ``grads``: aligned with the model's trainable variables (None where a
    variable gets no gradient), with ``gradient_squares`` (the sum of each one's squared
    entries, 0 without a gradient) and ``clipped_squares`` (the same after the optimizer's
    own clipping), both computed inside the compiled pass.
    """

    step: int | None = None
    layers: dict[str, np.ndarray] | None = None
    loss: float | None = None
    grads: list[tf.Tensor | None] | None = None
    gradient_squares: np.ndarray | None = None
    clipped_squares: np.ndarray | None = None

    @property
    def global_norm(self) -> float:
        """The gradients' global norm: sqrt(sum of squared entries) over all variables."""
        return float(np.sqrt(np.sum(self.gradient_squares, dtype=np.float64)))

    @property
    def global_norm_clipped(self) -> float:
        """The global norm of the gradients as the optimizer's clipping leaves them."""
        return float(np.sqrt(np.sum(self.clipped_squares, dtype=np.float64)))

    def merge(self, other: Probe) -> None:
        """Take the parts ``other`` (a pass at the same step) has."""
        for part in fields(self):
            if part.name != "step" and getattr(other, part.name) is not None:
                setattr(self, part.name, getattr(other, part.name))


def probe_model(
    model: keras.Model,
    x: Any,
    y: Any = None,
    *,
    extractor: keras.Model | None = None,
    sample_weight: Any = None,
) -> Probe:
    """One training-mode pass of a probe batch: a :class:`Probe`.

    With ``extractor`` (from :func:`activation_model`) the layer outputs come back as numpy
    arrays in layer order; with ``y`` the gradient tape is on and the loss (the compiled
    one, regularisation included), its gradients with respect to
    ``model.trainable_variables`` and their squared sums (plain and as the optimizer clips
    them, computed in the pass) come back; both from the same forward pass. The pass runs
    in training mode,
    as ``fit`` does: batch normalization normalises with the probe batch's statistics (in
    inference mode, a freshly initialised BN network has near-zero gradients in its first
    layers, a false "vanishing" alarm). The model's state is then put back: BN's moving
    statistics, the seed state of dropout (so every probe draws the same masks and
    successive probes differ only by training progress), and the metric trackers.
    Embedding gradients (IndexedSlices) come back dense.
    """
    # One pass serves both when the prediction is the extractor's single model output;
    # a multi-output model's loss wants its own output structure, so it gets its own pass.
    shared = extractor is not None and y is not None and len(model.outputs or [0]) == 1
    known_metrics = {id(v) for v in model.metrics_variables}
    layers, loss, grads, squares = _probe_pass(model, extractor, shared)(x, y, sample_weight)
    # A multi-output model's compiled loss creates per-output loss trackers on first use,
    # while the pass runs: they start from zero, as fit would start them.
    for variable in model.metrics_variables:
        if id(variable) not in known_metrics:
            variable.assign(tf.zeros_like(variable))
    probe = Probe()
    if layers is not None:
        # Keras returns dict outputs in key order; report them in layer order.
        order = [layer.name for layer in monitored_layers(model) if layer.name in layers]
        probe.layers = {name: keras.ops.convert_to_numpy(layers[name]) for name in order}
    if loss is not None:
        probe.loss, probe.grads = float(loss), grads
        probe.gradient_squares, probe.clipped_squares = (
            s.numpy().astype(np.float64) for s in squares
        )
    return probe


# The compiled probe passes of each model, by (extractor, shared pass), dropped with the model.
_PROBE_PASSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probe_pass(model: keras.Model, extractor: keras.Model | None, shared: bool) -> Any:
    """The forward (and, with targets, backward) pass of :func:`probe_model`, compiled.

    Run eagerly, a probe costs several training steps (Python dispatch of every op of the
    forward and backward pass); as a ``tf.function`` it costs about one, which is what keeps
    ~20 probes a run inside the monitors' overhead budget. A model that asks to run eagerly
    (``run_eagerly=True``), or whose pass cannot be traced, gets the eager pass. The pass
    holds the model weakly: a cached pass never keeps a model alive. The optimizer's
    clipping settings are read when the pass is traced, as Keras' own train step does.
    """
    passes = _PROBE_PASSES.setdefault(model, {})
    key = (extractor, shared)
    if key in passes:
        return passes[key]
    model_ref = weakref.ref(model)

    def eager(x: Any, y: Any, sample_weight: Any) -> tuple:
        model = model_ref()
        # The state the pass changes, put back at its end (inside the compiled pass, so a
        # probe adds no eager operation per variable): BN's moving statistics, dropout's
        # seeds, and the metric trackers a compiled loss updates.
        state = _probe_state(model, extractor)
        saved = [tf.identity(v) for v in state]
        layers = loss = grads = squares = None
        try:
            if extractor is not None and not shared:
                layers = extractor(_single_input(extractor, x), training=True)[0]
            if y is not None:
                with tf.GradientTape() as tape:
                    if shared:
                        layers, (y_pred,) = extractor(_single_input(extractor, x), training=True)
                    else:
                        y_pred = model(x, training=True)
                    loss = model.compute_loss(
                        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
                    )
                grads = [
                    None if g is None else tf.convert_to_tensor(g)
                    for g in tape.gradient(loss, model.trainable_variables)
                ]
                # A few numbers per variable, computed here, instead of ~3 eager ops each.
                plain = _squared_sums(grads)
                clipped = clip_like_optimizer(model.optimizer, grads)
                unclipped = all(c is g for c, g in zip(clipped, grads, strict=True))
                squares = (plain, plain if unclipped else _squared_sums(clipped))
        finally:
            for variable, value in zip(state, saved, strict=True):
                variable.assign(value)
        return layers, loss, grads, squares

    # As fit runs the model's step (a cold process does not pay AutoGraph's conversion of the
    # Keras code the pass calls, ~0.8 s); a model that runs eagerly gets the eager pass.
    compiled = like_fit(eager, model, reduce_retracing=True)
    if compiled is eager:
        passes[key] = eager
        return eager

    def first_call(x: Any, y: Any, sample_weight: Any) -> tuple:
        # Tracing is where an untraceable model shows itself: remember the eager pass then.
        try:
            result = compiled(x, y, sample_weight)
            passes[key] = compiled
        except (
            TypeError,
            ValueError,
            NotImplementedError,
            tf.errors.OperatorNotAllowedInGraphError,
        ):
            passes[key] = eager
            result = eager(x, y, sample_weight)
        return result

    passes[key] = first_call
    return first_call


def _probe_state(model: keras.Model, extractor: keras.Model | None) -> list:
    """The variables a training-mode pass may change and a probe must leave as it found
    them: the model's (and the extractor's) non-trainable variables and its metric trackers."""
    state = list(model.non_trainable_variables)
    if extractor is not None:
        state += extractor.non_trainable_variables
    state += model.metrics_variables
    return list({id(v): v for v in state}.values())  # each once, in order


def _squared_sums(grads: Sequence) -> tf.Tensor:
    """The sum of squared entries of each gradient (0 for None), in float32."""
    if not grads:
        return tf.zeros([0])
    return tf.stack(
        [
            tf.constant(0.0) if g is None else tf.reduce_sum(tf.square(tf.cast(g, tf.float32)))
            for g in grads
        ]
    )


def histogram_buckets(values: Any, buckets: int = HISTOGRAM_BUCKETS) -> np.ndarray:
    """TensorBoard's histogram tensor: rows (left edge, right edge, count), float64.

    Bucketed from at most ``HISTOGRAM_MAX_VALUES`` values: a strided subsample, whose
    counts are scaled back to the full number of values, gives the same shape of histogram
    at a fraction of the cost (``tf.summary.histogram`` one-hot encodes every value, N x 30
    floats, ~0.3 s for one probe of a small convnet). Non-finite values are dropped
    (TensorBoard cannot bin them). The edges are ``np.histogram``'s; a single value gets
    TensorBoard's own convention: all edges equal, the last bucket full.
    """
    flat = np.asarray(keras.ops.convert_to_numpy(values)).ravel()
    total = flat.size
    if total > HISTOGRAM_MAX_VALUES:
        flat = flat[:: -(-total // HISTOGRAM_MAX_VALUES)]
    flat = flat.astype(np.float64)
    scale = total / max(flat.size, 1)
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return np.zeros((buckets, 3))
    lo, hi = float(flat.min()), float(flat.max())
    if lo == hi:
        counts = np.zeros(buckets)
        counts[-1] = flat.size * scale
        return np.stack([np.full(buckets, lo), np.full(buckets, lo), counts], axis=1)
    edges = np.linspace(lo, hi, buckets + 1)
    # np.histogram's binning (the last bucket holds the maximum), by bincount: ~4x faster
    index = np.minimum(((flat - lo) * (buckets / (hi - lo))).astype(np.intp), buckets - 1)
    counts = np.bincount(index, minlength=buckets) * scale
    return np.stack([edges[:-1], edges[1:], counts], axis=1)


def clip_like_optimizer(optimizer: keras.optimizers.Optimizer, grads: Sequence) -> list:
    """The gradients after the optimizer's own clipping (clipnorm, global_clipnorm, clipvalue).

    Mirrors the order Keras applies them in: ``clipnorm`` wins over ``global_clipnorm``,
    which wins over ``clipvalue``.
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    grads = list(grads)
    if optimizer.clipnorm and optimizer.clipnorm > 0:
        return [None if g is None else tf.clip_by_norm(g, optimizer.clipnorm) for g in grads]
    if optimizer.global_clipnorm and optimizer.global_clipnorm > 0:
        present = [g for g in grads if g is not None]
        clipped, _ = tf.clip_by_global_norm(present, optimizer.global_clipnorm)
        it = iter(clipped)
        return [None if g is None else next(it) for g in grads]
    if optimizer.clipvalue and optimizer.clipvalue > 0:
        v = optimizer.clipvalue
        return [None if g is None else tf.clip_by_value(g, -v, v) for g in grads]
    return grads


def global_norm(grads: Sequence) -> float:
    """sqrt(sum of squared entries) over all gradients (None entries skipped)."""
    present = [g for g in grads if g is not None]
    return float(tf.linalg.global_norm(present)) if present else 0.0


def layer_gradient_norms(model: keras.Model, squares: Sequence[float]) -> dict[str, float]:
    """Per-layer gradient norm (over all the layer's trainable variables), in layer order,
    from the sum of squared entries of each trainable variable's gradient
    (:attr:`Probe.gradient_squares`)."""
    totals: dict[str, float] = {}
    for layer, square in zip(variable_layers(model), squares, strict=True):
        totals[layer] = totals.get(layer, 0.0) + float(square)
    return {layer: float(np.sqrt(total)) for layer, total in totals.items()}


# --- activations on a probe batch --------------------------------------------------


def activation_kind(layer: keras.layers.Layer) -> str | None:
    """Name of the activation a layer applies last ("relu", "tanh", "sigmoid", ...), or None."""
    if isinstance(layer, keras.layers.ReLU):
        plain = not layer.negative_slope and layer.max_value is None and not layer.threshold
        return "relu" if plain else None
    fn = getattr(layer, "activation", None)
    if fn is None or not callable(fn):
        return None
    name = getattr(fn, "__name__", None)
    return None if name in (None, "linear") else name


def activation_stats(values: Any, kind: str | None) -> ActivationStats:
    """Statistics of one layer's output ``values`` (batch first, units last)."""
    a = np.asarray(values)
    a = a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(-1, 1)
    zero = a == 0  # one pass serves the zero share and the dead units
    stats = ActivationStats(
        kind=kind,
        mean=float(a.mean()),
        std=float(a.std()),
        zero_fraction=np.count_nonzero(zero) / max(zero.size, 1),
    )
    if kind in ZERO_FLOORED:
        stats.dead_fraction = float(np.mean(zero.all(axis=0)))
    elif kind == "tanh":
        stats.saturated_fraction = float(np.mean(np.abs(a) > TANH_SATURATION))
    elif kind == "sigmoid":
        lo, hi = SIGMOID_SATURATION
        stats.saturated_fraction = float(np.mean((a < lo) | (a > hi)))
    return stats


def monitored_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers whose output is worth watching: those with weights or an activation."""
    return [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and (layer.weights or activation_kind(layer) is not None)
    ]


def activation_model(model: keras.Model) -> keras.Model:
    """A model from the inputs of ``model`` to ``[{layer name: output}, predictions]``.

    The outputs of the monitored layers, and ``model.outputs`` (a list) so that the same
    pass gives the loss too. Needs a model with symbolic inputs (Sequential or functional);
    build it once, call it per probe.
    """
    try:
        inputs = model.inputs if len(model.inputs) == 1 else model.input
    except (AttributeError, ValueError, TypeError) as exc:
        raise ValueError(
            f"activation statistics need a Sequential or functional model with defined "
            f"inputs; {model.name!r} has none ({exc})"
        ) from exc
    if not inputs:
        raise ValueError(
            f"activation statistics need a Sequential or functional model with defined "
            f"inputs; {model.name!r} has none (subclassed models cannot be probed per layer)"
        )
    outputs = {}
    for layer in monitored_layers(model):
        found = own_output(model, layer)
        if found is not None:
            outputs[layer.name] = found
    return keras.Model(inputs, [outputs, list(model.outputs)], name=f"{model.name}_activations")


def own_output(model: keras.Model, layer: keras.layers.Layer) -> Any:
    """``layer``'s output in ``model``'s own graph; None for a layer called at several places
    in it (no single output to probe) or at none.

    Not ``layer.output``: that is the output of the layer's first call, which for a layer or
    sub-model also called in another model (a backbone reused from a pretraining model)
    lies in that other model's graph, where an extractor from ``model``'s inputs cannot reach.
    """
    graph = getattr(model, "_functional", None) or model  # a Sequential's inner Functional
    keys = getattr(graph, "_nodes", None)
    if keys is None:  # a Keras without the graph's node keys: the first call, as Keras gives it
        try:
            return layer.output
        except (AttributeError, ValueError):
            return None
    calls = [
        node
        for index, node in enumerate(layer._inbound_nodes)
        if f"{id(layer)}_ib-{index}" in keys  # keras.src.ops.function.make_node_key
    ]
    if len(calls) != 1:
        return None
    tensors = calls[0].output_tensors
    return tensors[0] if len(tensors) == 1 else tensors


def _single_input(model: keras.Model, x: Any) -> Any:
    # A one-input functional model warns when called with a bare array instead of the
    # list structure it was built with.
    if isinstance(x, list):
        return x
    return [x] if len(model.inputs) == 1 and not isinstance(x, (tuple, dict)) else x
