"""A short warm-up of the float64 copy before a gradient check.

At random initialisation the activations are in an unusual regime (tiny weights, few dead
units, scores near zero); a check there can pass while the gradient is wrong in the mode
the network trains in. ``warm_up`` trains the copy a few steps with an optimizer configured
like the model's (Adam 1e-3 when it has none). The user's model and optimizer stay untouched.

Example:
    >>> import keras, numpy as np, tensorflow as tf
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
    >>> x, y = tf.ones((4, 3), tf.float64), tf.constant([0, 1, 0, 1])
    >>> clone = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, dtype="float64")])
    >>> len(warm_up(model, clone, loss, x, y, steps=3))
    3
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.checks.traced import like_fit


def optimizer_like(model: keras.Model) -> keras.optimizers.Optimizer:
    """A fresh optimizer configured like ``model``'s (no slots, iteration 0)."""
    opt = getattr(model, "optimizer", None)
    if opt is None:
        return keras.optimizers.Adam(1e-3)
    return type(opt).from_config(opt.get_config())


def warm_up(
    model: keras.Model,
    clone: keras.Model,
    loss_fn: Any,
    x: Any,
    y: Any,
    steps: int,
    batch_size: int = 32,
) -> list[float]:
    """Train ``clone`` for ``steps`` steps on ``(x, y)``; returns the loss of every step."""
    optimizer = optimizer_like(model)
    optimizer.build(clone.trainable_variables)
    n = len(keras.tree.flatten(y)[0])

    def step(xb: Any, yb: Any) -> tf.Tensor:
        with tf.GradientTape() as tape:
            out = clone(xb, training=True)
            loss = loss_fn(yb, out)
            for term in clone.losses:
                loss += tf.cast(term, loss.dtype)
        grads = tape.gradient(loss, clone.trainable_variables)
        optimizer.apply(grads, clone.trainable_variables)
        return loss

    step = like_fit(step, model)

    losses = []
    size = min(batch_size, n)
    for i in range(steps):
        idx = tf.constant((np.arange(size) + i * size) % n)
        batch_x = keras.tree.map_structure(lambda a, idx=idx: tf.gather(a, idx), x)
        batch_y = keras.tree.map_structure(lambda a, idx=idx: tf.gather(a, idx), y)
        losses.append(float(step(batch_x, batch_y)))
    return losses
