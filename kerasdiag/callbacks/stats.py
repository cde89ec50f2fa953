"""The numbers behind the monitors, as small functions any callback (or a diagnosis) can call.

Every function here takes a model (and a probe batch where it needs one) and returns plain
numbers, so the monitors log them and a diagnosis can judge them with the same thresholds.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

# The thresholds and the rules that read these numbers live in kerasdiag.doctor_rules.
from kerasdiag.doctor_rules import (
    ADAPTIVE_SPARSE_UPDATE_RATIO_HIGH,
    ADAPTIVE_UPDATE_RATIO_HIGH,
    UPDATE_RATIO_HIGH,
    UPDATE_RATIO_LOW,
    ActivationStats,
)

ADAPTIVE_OPTIMIZERS = (
    "Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad", "Adadelta", "Adafactor", "Lion",
    "Ftrl", "Lamb", "Muon",
)  # fmt: skip
# tanh units count as saturated at |a| > 0.99, sigmoid units outside [0.01, 0.99] (M4).
TANH_SATURATION = 0.99
SIGMOID_SATURATION = (0.01, 0.99)
RELU_KINDS = ("relu", "relu6")
SATURATING_KINDS = ("tanh", "sigmoid")


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


# --- update ratios (M3) -----------------------------------------------------------------


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
    TensorFlow would spend ~1 ms of dispatch per operation.
    """
    ratios = np.full(len(before), np.nan)
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        sparse = is_sparse_table(a)
        b = np.asarray(keras.ops.convert_to_numpy(b), dtype=np.float32)
        a = np.asarray(keras.ops.convert_to_numpy(a), dtype=np.float32)
        if sparse:
            changed = np.any(a != b, axis=1)
            if changed.any():
                a, b = a[changed], b[changed]
        norm = float(np.linalg.norm(b))
        if norm > 0:
            ratios[i] = float(np.linalg.norm(a - b)) / norm
    return ratios


def update_ratio_band(
    optimizer: Any, low: float | None = None, high: float | None = None, sparse: bool = False
) -> tuple[float, float]:
    """The healthy ``(low, high)`` of the update ratio under ``optimizer``.

    Plain SGD (with or without momentum) steps by lr x gradient: ~1e-3 is healthy, the band
    is [1e-4, 1e-2]. An adaptive optimizer steps by about lr per weight, so its upper end is
    ``ADAPTIVE_UPDATE_RATIO_HIGH``, and for an Embedding table (``sparse``)
    ``ADAPTIVE_SPARSE_UPDATE_RATIO_HIGH``. ``low`` / ``high`` given explicitly win.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    adaptive = any(type(inner).__name__ == name for name in ADAPTIVE_OPTIMIZERS)
    default_high = UPDATE_RATIO_HIGH
    if adaptive:
        default_high = ADAPTIVE_SPARSE_UPDATE_RATIO_HIGH if sparse else ADAPTIVE_UPDATE_RATIO_HIGH
    return (
        UPDATE_RATIO_LOW if low is None else low,
        default_high if high is None else high,
    )


def main_variable_index(variables: Sequence) -> int:
    """Index of the largest variable of a layer (its kernel): the one the lr is judged by.

    Biases start at zero, so their relative updates are huge or undefined early in training
    and say nothing about the learning rate.
    """
    return int(np.argmax([int(np.prod(v.shape)) for v in variables]))


# --- gradients on a probe batch (M4, P8) ------------------------------------------------


def probe_model(
    model: keras.Model,
    x: Any,
    y: Any = None,
    *,
    extractor: keras.Model | None = None,
    sample_weight: Any = None,
) -> tuple[dict[str, np.ndarray] | None, float | None, list[tf.Tensor | None] | None]:
    """One training-mode pass of a probe batch: (layer outputs, loss, gradients).

    With ``extractor`` (from :func:`activation_model`) the layer outputs come back as numpy
    arrays in layer order, else None. With ``y`` the gradient tape is on and the loss (the
    compiled one, regularisation included) and its gradients with respect to
    ``model.trainable_variables`` come back, else None twice; both from the same forward
    pass. The pass runs in training mode, as ``fit`` does: batch normalization normalises
    with the probe batch's statistics (in inference mode, a freshly initialised BN network
    has near-zero gradients in its first layers, a false "vanishing" alarm). The model's
    state is then put back: BN's moving statistics, the seed state of dropout (so every
    probe draws the same masks and successive probes differ only by training progress),
    and the metric trackers. Embedding gradients (IndexedSlices) come back dense.
    """
    # One pass serves both when the prediction is the extractor's single model output;
    # a multi-output model's loss wants its own output structure, so it gets its own pass.
    shared = extractor is not None and y is not None and len(model.outputs or [0]) == 1
    state = list(model.non_trainable_variables)
    if extractor is not None:
        known = {id(v) for v in state}
        state += [v for v in extractor.non_trainable_variables if id(v) not in known]
    # Host copies (not tensors aliasing the variables' buffers): fit's step updates the
    # moving statistics in place.
    saved = [np.array(keras.ops.convert_to_numpy(v)) for v in state]
    metric_variables = [(v, tf.identity(v)) for v in model.metrics_variables]
    try:
        layers, loss, grads = _probe_pass(model, extractor, shared)(x, y, sample_weight)
    finally:
        for variable, value in zip(state, saved, strict=True):
            variable.assign(value)
        # A multi-output model's compiled loss feeds per-output loss trackers (created on
        # first use): put back what they held, zero what is new.
        held = {id(v): value for v, value in metric_variables}
        for variable in model.metrics_variables:
            variable.assign(held.get(id(variable), tf.zeros_like(variable)))
    if loss is not None:
        loss = float(loss)
    if layers is None:
        return None, loss, grads
    # Keras returns dict outputs in key order; report them in layer order.
    order = [layer.name for layer in monitored_layers(model) if layer.name in layers]
    return {name: keras.ops.convert_to_numpy(layers[name]) for name in order}, loss, grads


# The compiled probe passes of each model, by (extractor, shared pass), dropped with the model.
_PROBE_PASSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probe_pass(model: keras.Model, extractor: keras.Model | None, shared: bool) -> Any:
    """The forward (and, with targets, backward) pass of :func:`probe_model`, compiled.

    Run eagerly, a probe costs several training steps (Python dispatch of every op of the
    forward and backward pass); as a ``tf.function`` it costs about one, which is what keeps
    ~20 probes a run inside the monitors' overhead budget. A model that asks to run eagerly
    (``run_eagerly=True``), or whose pass cannot be traced, gets the eager pass. The pass
    holds the model weakly: a cached pass never keeps a model alive.
    """
    passes = _PROBE_PASSES.setdefault(model, {})
    key = (extractor, shared)
    if key in passes:
        return passes[key]
    model_ref = weakref.ref(model)

    def eager(x: Any, y: Any, sample_weight: Any) -> tuple:
        model = model_ref()
        layers = loss = grads = None
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
        return layers, loss, grads

    if getattr(model, "run_eagerly", False):
        passes[key] = eager
        return eager
    compiled = tf.function(eager, reduce_retracing=True)

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


def layer_gradient_norms(model: keras.Model, grads: Sequence) -> dict[str, float]:
    """Per-layer gradient norm (over all the layer's trainable variables), in layer order."""
    squares: dict[str, list] = {}
    for layer, grad in zip(variable_layers(model), grads, strict=True):
        entry = squares.setdefault(layer, [])
        if grad is not None:
            entry.append(tf.reduce_sum(tf.square(tf.cast(grad, tf.float32))))
    names = list(squares)
    if not names:
        return {}
    totals = tf.stack([tf.add_n(s) if s else tf.constant(0.0) for s in squares.values()])
    return dict(zip(names, np.sqrt(totals.numpy().astype(np.float64)).tolist(), strict=True))


# --- activations on a probe batch (M4) --------------------------------------------------


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
    stats = ActivationStats(
        kind=kind,
        mean=float(a.mean()),
        std=float(a.std()),
        zero_fraction=float(np.mean(a == 0)),
    )
    if kind in RELU_KINDS:
        stats.dead_fraction = float(np.mean(np.all(a == 0, axis=0)))
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
        try:
            outputs[layer.name] = layer.output
        except (AttributeError, ValueError):
            # A layer called at several places has no single output to probe.
            continue
    return keras.Model(inputs, [outputs, list(model.outputs)], name=f"{model.name}_activations")


def _single_input(model: keras.Model, x: Any) -> Any:
    # A one-input functional model warns when called with a bare array instead of the
    # list structure it was built with.
    if isinstance(x, list):
        return x
    return [x] if len(model.inputs) == 1 and not isinstance(x, (tuple, dict)) else x
