"""Sanity stage: the model can memorise a handful of examples (MISSION S3, R1)."""

from __future__ import annotations

import math
import time
from typing import Any

import keras
import numpy as np

from kerasdiag.sanity import _common as common
from kerasdiag.sanity.expected import expected_initial_loss
from kerasdiag.sanity.result import StageResult


def overfit_small_subset(
    model: keras.Model,
    data: Any,
    *,
    num_examples: int = 20,
    max_steps: int = 300,
    loss: Any = None,
    optimizer: Any = None,
    loss_fraction: float = 0.05,
    seed: int = 0,
) -> StageResult:
    """Train a copy of ``model`` on ``num_examples`` training examples until it memorises them.

    Success means training accuracy 100% and a loss at most ``loss_fraction`` times the
    expected initial loss (0.115 for 10-class cross-entropy), reached within
    ``max_steps`` full-batch steps; the result reports the steps it took. A model that cannot
    do this has a bug worth fixing before any real training: frozen layers, a learning rate
    far too low, a loss that cannot reach 0 (softmax applied twice), labels that do not belong
    to their inputs, or too little capacity.

    The copy trains on the data loss alone (regularization off) in inference mode, so dropout,
    noise and augmentation layers are off; batch normalisation then uses its initial moving
    statistics and acts as a learnable affine map. The optimizer is a fresh one configured
    like the model's (or ``optimizer``). ``model``, its optimizer and the global random state
    are left as they were.

    Example:

    ```python
    result = overfit_small_subset(model, dataset, num_examples=20, max_steps=300)
    print(result.message)  # e.g. "memorised 20 examples in 74 steps: ..."
    ```
    """
    if num_examples < 1:
        raise ValueError(f"num_examples must be at least 1, got {num_examples!r}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps!r}")
    if not 0 < loss_fraction < 1:
        raise ValueError(f"loss_fraction must be in (0, 1), got {loss_fraction!r}")
    start = time.perf_counter()
    with common.preserved_random_state():
        loss, spec, x, y, width = common.loss_and_subset(model, data, loss, num_examples, seed)
        targets = common.loss_targets(spec, y, width)
        labels = common.class_indices(y)
        target = loss_fraction * expected_initial_loss(spec, common.classes_for(spec, width))
        clone = common.copy_model(model)
        trainable = list(clone.trainable_variables)
        details: dict[str, Any] = {"examples": len(x), "max_steps": max_steps}
        if not trainable:
            return StageResult(
                "overfit",
                False,
                None,
                target,
                "the model has no trainable weights (every layer is frozen): training cannot "
                "change it. Set layer.trainable = True for the layers that should learn.",
                time.perf_counter() - start,
                details,
            )
        if optimizer is None:
            optimizer = common.fresh_optimizer(model)
        history = _fit(clone, keras.optimizers.get(optimizer), loss, x, targets, max_steps)
        steps = diverged = first_loss = None
        for step, (value, outputs) in enumerate(history):
            acc = common.accuracy(spec, outputs, labels)
            first_loss = value if first_loss is None else first_loss
            if not math.isfinite(value):
                diverged = step
                break
            if value <= target and (acc is None or acc == 1.0):
                steps = step
                break
        details.update(steps=steps, initial_loss=first_loss, accuracy=acc, target=target)

    seconds = time.perf_counter() - start
    summary = f"loss {first_loss:.4g} -> {value:.4g} (target <= {target:.3g})"
    if acc is not None:
        summary += f", training accuracy {acc:.0%}"
    if steps is not None:
        return StageResult(
            "overfit",
            True,
            value,
            target,
            f"memorised {len(x)} examples in {steps} steps: {summary}",
            seconds,
            details,
        )
    if diverged is not None:
        return StageResult(
            "overfit",
            False,
            value,
            target,
            f"the loss became {value} after {diverged} steps on {len(x)} examples: training "
            "diverges, usually a learning rate far too high.",
            seconds,
            details,
        )
    return StageResult(
        "overfit",
        False,
        value,
        target,
        f"could not memorise {len(x)} examples in {max_steps} steps: {summary}. A model must "
        "fit a handful of examples before the full set is worth training. Usual causes: "
        "frozen layers, a learning rate far too low, a loss that cannot reach 0 (e.g. softmax "
        "applied twice), labels that do not belong to their inputs, or too little capacity.",
        seconds,
        details,
    )


def _fit(model: keras.Model, optimizer: Any, loss: Any, x: np.ndarray, y: np.ndarray, steps: int):
    """Yield ``(loss, outputs)`` before each of ``steps`` full-batch updates, then once after."""
    import tensorflow as tf

    loss_fn = common.loss_function(loss)
    variables = list(model.trainable_variables)
    x_t, y_t = tf.constant(x), tf.constant(y)

    @tf.function
    def forward():
        outputs = model(x_t, training=False)
        return loss_fn(y_t, outputs), outputs

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            outputs = model(x_t, training=False)
            value = loss_fn(y_t, outputs)
        grads = tape.gradient(value, variables)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        )
        return value, outputs

    for _ in range(steps):
        value, outputs = step()
        yield float(value), outputs.numpy()
    value, outputs = forward()
    yield float(value), outputs.numpy()
