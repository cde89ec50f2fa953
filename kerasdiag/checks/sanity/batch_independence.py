"""Sanity stage: examples of a batch do not mix (batch independence).

In inference mode one example's output must not depend on the other examples of its batch:
the gradient of example ``i``'s output with respect to every other example's input is
exactly zero. A reshape where a transpose was meant (``(batch, time, features)`` reshaped to
``(time, batch, features)``), a transpose over the batch axis, or a reduction over axis 0
breaks this silently: the model trains, but each prediction uses its neighbours. The check
finds the first layer whose output mixes examples and names it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.checks.sanity import _common as common
from kerasdiag.checks.sanity.result import StageResult
from kerasdiag.diagnosis.symptoms import BATCH_MIXING_FIX

# Gradients with respect to other examples above this share of the example's own gradient
# count as mixing (healthy models give exactly 0).
LEAK_TOLERANCE = 1e-6


def check_batch_independence(
    model: keras.Model,
    data: Any,
    *,
    examples: int = 4,
    index: int = 0,
    seed: int = 0,
    class_weight: Mapping[Any, float] | None = None,
) -> StageResult:
    """Is example ``index``'s output independent of the other examples of its batch?

    Takes ``examples`` training examples (a kerasdiag ``Dataset``, an ``(x, y)`` pair or an
    input array; several inputs as a list or dict of arrays), computes in inference mode the
    gradient of a fixed random projection of output row ``index`` with respect to the whole
    batch, and fails when any other example's gradient is not zero. Integer inputs (token
    ids) are checked by perturbation instead: the other examples are replaced and output row
    ``index`` must not change. For functional and Sequential models the first layer whose
    output mixes examples is named. The model is only read.

    ``data`` may also be an ``(x, y, sample_weight)`` triple or a ``tf.data.Dataset``, and
    ``class_weight`` is accepted (and validated) like every check's, but neither weighs
    anything here: the check reads the outputs, not the loss, and whether an example's output
    depends on the rest of its batch does not depend on how much its loss counts.
    """
    if examples < 2:
        raise ValueError(f"examples must be at least 2. Received: {examples!r}")
    if not 0 <= index < examples:
        raise ValueError(f"index must be in [0, {examples}). Received: {index!r}")
    start = time.perf_counter()
    x = _inputs(data, class_weight)
    n = len(tf.nest.flatten(x)[0])
    if n < examples:
        raise ValueError(f"need at least {examples} examples, got {n}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=examples, replace=False))
    batch = tf.nest.map_structure(lambda a: tf.constant(np.asarray(a)[rows]), x)
    floating = all(t.dtype.is_floating for t in tf.nest.flatten(batch))
    details: dict[str, Any] = {"examples": examples, "index": index, "rows": rows.tolist()}
    if floating:
        leak, own = _gradient_leak(model, batch, index, rng)
        details.update(method="gradient", other_max=leak, own_max=own)
        if own == 0:
            return StageResult(
                "batch_independence",
                None,
                message="skipped: the example's output has no gradient with respect to its "
                "own input (see input_baseline)",
                seconds=time.perf_counter() - start,
                details=details,
            )
        mixed = leak > LEAK_TOLERANCE * own
        numbers = f"largest gradient with respect to other examples {leak:.3g}, own {own:.3g}"
    else:
        change = _perturbation_change(model, batch, index, rng, n, x)
        details.update(method="perturbation", output_change=change)
        mixed = change > 0
        numbers = f"output of example {index} changed by {change:.3g} when the others changed"
    layer = _first_mixing_layer(model, batch, index, rng) if mixed and floating else None
    details["layer"] = layer
    if mixed:
        where = f"layer {layer!r} mixes" if layer else "the model mixes"
        message = (
            f"{where} examples across the batch: in inference mode example {index}'s output "
            f"depends on the other examples ({numbers})."
        )
    else:
        message = (
            f"in inference mode example {index} depends on no other example of a batch of "
            f"{examples} ({numbers})"
        )
    return StageResult(
        "batch_independence",
        not mixed,
        details.get("other_max", details.get("output_change")),
        0.0,
        message,
        time.perf_counter() - start,
        details,
        fix=BATCH_MIXING_FIX if mixed else "",
    )


def _inputs(data: Any, class_weight: Mapping[Any, float] | None = None) -> Any:
    """The inputs of ``data``: a data set or an ``(x, y[, sample_weight])`` tuple, whose
    weights are validated (the one way every check reads them), or the inputs themselves."""
    dataset = isinstance(data, tf.data.Dataset) or hasattr(data, "x_train")
    if dataset or hasattr(data, "sample") or (isinstance(data, tuple) and len(data) in (2, 3)):
        return common.training_examples(data, class_weight).x
    return data


def _projection(outputs: Any, index: int, rng: np.random.Generator) -> Any:
    """A fixed random projection of row ``index`` of every output (sum of softmax rows is
    constant, so a plain sum could hide a dependence)."""
    total = 0.0
    for out in tf.nest.flatten(outputs):
        if not out.dtype.is_floating:
            continue
        row = tf.cast(out[index], tf.float32)
        weights = tf.constant(rng.standard_normal(row.shape).astype(np.float32))
        total += tf.reduce_sum(row * weights)
    return total


def _gradient_leak(model: keras.Model, batch: Any, index: int, rng) -> tuple[float, float]:
    with tf.GradientTape() as tape:
        tape.watch(batch)
        value = _projection(model(batch, training=False), index, rng)
    return _split_gradient(tape.gradient(value, batch), index)


def _split_gradient(grads: Any, index: int) -> tuple[float, float]:
    leak = own = 0.0
    for g in tf.nest.flatten(grads):
        if g is None:
            continue
        a = np.abs(keras.ops.convert_to_numpy(tf.convert_to_tensor(g))).reshape(len(g), -1)
        own = max(own, float(a[index].max(initial=0.0)))
        others = np.delete(a, index, axis=0)
        leak = max(leak, float(others.max(initial=0.0)))
    return leak, own


def _perturbation_change(model, batch, index, rng, n, x) -> float:
    before = tf.nest.flatten(model(batch, training=False))
    rows = rng.choice(n, size=len(tf.nest.flatten(batch)[0]), replace=True)
    other = tf.nest.map_structure(lambda a: tf.constant(np.asarray(a)[rows]), x)
    mixed = tf.nest.map_structure(
        lambda keep, new: tf.concat([new[:index], keep[index : index + 1], new[index + 1 :]], 0),
        batch,
        other,
    )
    after = tf.nest.flatten(model(mixed, training=False))
    return max(
        float(np.max(np.abs(keras.ops.convert_to_numpy(a[index] - b[index]))))
        for a, b in zip(before, after, strict=True)
    )


def _first_mixing_layer(model: keras.Model, batch: Any, index: int, rng) -> str | None:
    """The first layer (in the model's order) whose output row ``index`` depends on other
    examples; None for models whose layer outputs cannot be read (subclassed models)."""
    try:
        layers = [
            layer
            for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)
            and isinstance(layer.output, keras.KerasTensor)
        ]
        probe = keras.Model(model.inputs, [layer.output for layer in layers])
    except (AttributeError, ValueError, TypeError):
        return None
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(batch)
        outputs = probe(batch, training=False)
        values = [_projection(out, index, rng) for out in outputs]
    try:
        for layer, value in zip(layers, values, strict=True):
            if not isinstance(value, tf.Tensor):
                continue
            leak, own = _split_gradient(tape.gradient(value, batch), index)
            if leak > LEAK_TOLERANCE * max(own, 1e-30):
                return layer.name
    finally:
        del tape
    return None
