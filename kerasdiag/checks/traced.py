"""A check's training step compiled as ``fit`` compiles the model's own.

Keras traces its train step as a ``tf.function`` without AutoGraph (its step is marked
``do_not_convert``), or runs it eagerly when the model was compiled with
``run_eagerly=True``. A check that trains a copy of the model does the same, so that it
works on exactly the models ``fit`` trains: with AutoGraph, a check would also pay the
conversion of the Keras code its step calls (half of the overfit check's time in a fresh
process), and without the eager case a model whose ``call`` branches on a tensor in Python
(which only trains eagerly) would fail in the check while ``fit`` trains it.

Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(loss="mse", run_eagerly=True)
    >>> like_fit(lambda x: x + 1, model)(1)  # the eager function itself
    2
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf


def like_fit(fn: Callable, model: keras.Model, **tf_function_kwargs: Any) -> Callable:
    """``fn`` as ``fit`` would run a step of ``model``: eager when the model runs eagerly,
    else ``tf.function(fn, autograph=False, **tf_function_kwargs)``."""
    if getattr(model, "run_eagerly", False):
        return fn
    return tf.function(fn, autograph=False, **tf_function_kwargs)
