"""Sanity stage: the model can memorise a handful of examples."""

from __future__ import annotations

import math
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.checks.sanity import _common as common
from kerasdiag.checks.sanity import outputs
from kerasdiag.checks.sanity.result import StageResult


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

    Memorised means training accuracy 100% (every classification output) and a loss at most
    ``loss_fraction`` times the loss the copy started from, reached within ``max_steps``
    full-batch steps (e.g. 2.30 -> below 0.115 for 10-class cross-entropy); the result
    reports the steps it took. A model that cannot do this has a bug worth fixing before
    any real training: frozen layers, a learning rate far too low, a loss that cannot reach
    0 (softmax applied twice), labels that do not belong to their inputs, or too little
    capacity.

    The copy trains on the data loss alone (regularization off; several outputs: their
    losses weighted by ``loss_weights``), in the mode ``fit`` trains in where it matters:
    a model with BatchNormalization trains in training mode (batch statistics; dropout is
    then on too), any other in inference mode (dropout, noise and augmentation off). The
    optimizer is a fresh one configured like the model's, a schedule at its peak rate (or
    ``optimizer``). ``model``, its optimizer and the global random state are left as they were.

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
        sub = common.loss_subset(model, data, loss, num_examples, seed)
        hs, names, x, y, targets = sub.heads, sub.names, sub.x, sub.y, sub.targets
        ys = outputs.as_list(y, names)
        labels = [common.class_indices(np.asarray(ys[h.index])) for h in hs]
        clone = common.copy_model(model)
        trainable = list(clone.trainable_variables)
        training = outputs.uses_batch_statistics(model)
        details: dict[str, Any] = {
            "examples": outputs.count(x), "max_steps": max_steps, "training_mode": training,
        }  # fmt: skip
        if not trainable:
            return StageResult(
                "overfit",
                False,
                None,
                None,
                "the model has no trainable weights (every layer is frozen): training cannot "
                "change it. Set layer.trainable = True for the layers that should learn.",
                time.perf_counter() - start,
                details,
            )
        if optimizer is None:
            optimizer = common.fresh_optimizer(model)
        loss_fn = common.weighted_loss(hs, names)
        history = _fit(
            clone, keras.optimizers.get(optimizer), loss_fn, x, targets, max_steps, training
        )
        steps = diverged = first_loss = target = acc = None
        for step, (value, outs) in enumerate(history):
            accs = [
                common.accuracy(h.spec, outs[h.index], lab)
                for h, lab in zip(hs, labels, strict=True)
            ]
            known = [a for a in accs if a is not None]
            acc = min(known) if known else None
            if first_loss is None:
                first_loss = value
                target = loss_fraction * value if math.isfinite(value) else None
            if not math.isfinite(value):
                diverged = step
                break
            if value <= target and (acc is None or acc == 1.0):
                steps = step
                break
        details.update(steps=steps, initial_loss=first_loss, accuracy=acc, target=target)
        value = float(value)
        n = outputs.count(x)

    seconds = time.perf_counter() - start
    summary = f"loss {first_loss:.4g} -> {value:.4g} (target <= {target or 0:.3g}, "
    summary += f"{loss_fraction:.0%} of the start)"
    if acc is not None:
        summary += f", training accuracy {acc:.0%}"
    if steps is not None:
        return StageResult(
            "overfit",
            True,
            value,
            target,
            f"memorised {n} examples in {steps} steps: {summary}",
            seconds,
            details,
        )
    if diverged is not None:
        return StageResult(
            "overfit",
            False,
            value,
            target,
            f"the loss became {value} after {diverged} steps on {n} examples: training "
            "diverges, usually a learning rate far too high.",
            seconds,
            details,
        )
    return StageResult(
        "overfit",
        False,
        value,
        target,
        f"could not memorise {n} examples in {max_steps} steps: {summary}. A model must "
        "fit a handful of examples before the full set is worth training. Usual causes: "
        "frozen layers, a learning rate far too low, a loss that cannot reach 0 (e.g. softmax "
        "applied twice), labels that do not belong to their inputs, or too little capacity.",
        seconds,
        details,
    )


def _fit(
    model: keras.Model,
    optimizer: Any,
    loss_fn: Any,
    x: Any,
    y: list[Any],
    steps: int,
    training: bool,
):
    """Yield ``(loss, outputs per output)`` before each of ``steps`` full-batch updates, then
    once after (in the mode the updates run in)."""
    names = outputs.output_names(model)
    variables = list(model.trainable_variables)
    x_t = keras.tree.map_structure(tf.constant, x)
    y_t = [tf.constant(t) for t in y]

    def evaluate():
        out = outputs.as_list(model(x_t, training=training), names)
        return loss_fn(y_t, out), out

    @tf.function
    def forward():
        return evaluate()

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            value, out = evaluate()
        grads = tape.gradient(value, variables)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        )
        return value, out

    for _ in range(steps):
        value, out = step()
        yield float(value), [o.numpy() for o in out]
    value, out = forward()
    yield float(value), [o.numpy() for o in out]
