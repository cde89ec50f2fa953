"""Which side of every kink a computation is on.

A finite difference across a non-differentiable point (ReLU at 0, a max-pool whose argmax
changes, a hinge at its margin) measures the average of two slopes, not the gradient, and
looks like a bug. ``KinkRecorder`` watches the ops a traced computation creates and turns
each non-differentiable op into a fingerprint of its active pattern: the signs of a ReLU's
inputs, the argmax positions of a max-pool, which operand of a maximum wins. When the
fingerprints of ``f(x+h)`` and ``f(x-h)`` differ, the two evaluations fell on different sides
of a kink, and the comparison is labelled ``kink`` instead of ``fail``.

The recorder sees every op, so it also covers custom layers and losses built from
``tf.nn.relu``, ``tf.maximum``, ``tf.where`` and friends.

Example:
    >>> import tensorflow as tf
    >>> @tf.function
    ... def sides(x):
    ...     with KinkRecorder() as rec:
    ...         y = tf.nn.relu(x)
    ...     return rec.fingerprint()
    >>> a = sides(tf.constant([1.0, -1.0], tf.float64))
    >>> b = sides(tf.constant([1.0, 0.5], tf.float64))
    >>> bool(crossed(a.numpy(), b.numpy()))
    True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import gen_nn_ops


def _attr(op: tf.Operation, name: str):
    value = op.get_attr(name)
    return value.decode() if isinstance(value, bytes) else value


def _positive(op: tf.Operation) -> tf.Tensor:
    # x > 0, as the ReLU family's gradients split it: at exactly 0 a ReLU's gradient is 0.
    return op.inputs[0] > 0


def _relu6_pieces(t: tf.Tensor) -> tf.Tensor:
    # 0 up to 0, 1 between, 2 from 6 on: TensorFlow's ReLU6 gradient is 1 only for 0 < x < 6.
    return tf.cast(t > 0.0, tf.int64) + tf.cast(t >= 6.0, tf.int64)


def _clip_pieces(t: tf.Tensor, low: tf.Tensor, high: tf.Tensor) -> tf.Tensor:
    # 0 below low, 1 from low to high, 2 above: a clip passes the gradient for low <= x <= high.
    return tf.cast(t >= low, tf.int64) + tf.cast(t > high, tf.int64)


def _reduction_argmax(op: tf.Operation) -> tf.Tensor:
    x, axis = op.inputs[0], op.inputs[1]
    reduce = tf.reduce_max if op.type == "Max" else tf.reduce_min
    return tf.equal(x, reduce(x, axis=axis, keepdims=True))


def _max_pool_argmax(op: tf.Operation) -> tf.Tensor:
    # The gradient of a max-pool routes each window's 1 to its argmax: a map of winners.
    x, y = op.inputs[0], op.outputs[0]
    ones = tf.ones_like(y)
    common = {"padding": _attr(op, "padding"), "data_format": _attr(op, "data_format")}
    if op.type == "MaxPoolV2":
        return gen_nn_ops.max_pool_grad_v2(x, y, ones, op.inputs[1], op.inputs[2], **common)
    if op.type == "MaxPool3D":
        return gen_nn_ops.max_pool3d_grad(
            x, y, ones, ksize=op.get_attr("ksize"), strides=op.get_attr("strides"), **common
        )
    if common["padding"] == "EXPLICIT":
        common["explicit_paddings"] = op.get_attr("explicit_paddings")
    return gen_nn_ops.max_pool_grad(
        x, y, ones, ksize=op.get_attr("ksize"), strides=op.get_attr("strides"), **common
    )


# Non-differentiable ops (kinks) -> their active pattern.
KINK_PATTERNS: dict[str, Callable[[tf.Operation], tf.Tensor]] = {
    "Relu": _positive,
    "LeakyRelu": _positive,
    "Elu": _positive,
    "Selu": _positive,
    "Relu6": lambda op: _relu6_pieces(op.inputs[0]),
    "Abs": lambda op: tf.sign(op.inputs[0]),
    "Maximum": lambda op: op.inputs[0] > op.inputs[1],
    "Minimum": lambda op: op.inputs[0] < op.inputs[1],
    "ClipByValue": lambda op: _clip_pieces(op.inputs[0], op.inputs[1], op.inputs[2]),
    "Max": _reduction_argmax,
    "Min": _reduction_argmax,
    "MaxPool": _max_pool_argmax,
    "MaxPoolV2": _max_pool_argmax,
    "MaxPool3D": _max_pool_argmax,
}
# Piecewise ops: a changed pattern is a crossing too, but they do not make the objective
# "one with kinks" (dropout's tf.where has a fixed random condition, for one).
PIECEWISE_PATTERNS: dict[str, Callable[[tf.Operation], tf.Tensor]] = {
    "Select": lambda op: op.inputs[0],
    "SelectV2": lambda op: op.inputs[0],
    "Floor": lambda op: op.outputs[0],
    "Ceil": lambda op: op.outputs[0],
    "Round": lambda op: op.outputs[0],
    "Rint": lambda op: op.outputs[0],
    "Sign": lambda op: op.outputs[0],
}
_PATTERNS = {**KINK_PATTERNS, **PIECEWISE_PATTERNS}
# Fingerprints are integer sums (exact, whatever the summation order) with random weights
# below 2**31: two patterns that differ give equal sums with probability ~2**-31.
_MAX_WEIGHT = 2**31 - 1


class KinkRecorder:
    """Records the non-differentiable ops created inside ``with`` while tracing a graph."""

    def __init__(self) -> None:
        self.ops: list[tf.Operation] = []

    def __enter__(self) -> KinkRecorder:
        if tf.executing_eagerly():
            raise RuntimeError("KinkRecorder works while tracing a tf.function, not eagerly")
        self._graph = tf.compat.v1.get_default_graph()
        self._start = len(self._graph.get_operations())
        return self

    def __exit__(self, *exc) -> None:
        created = self._graph.get_operations()[self._start :]
        self.ops = [op for op in created if op.type in _PATTERNS]

    @property
    def kink_types(self) -> list[str]:
        """The kink op types seen (``Relu``, ``MaxPool``, ...), sorted, without repeats."""
        return sorted({op.type for op in self.ops if op.type in KINK_PATTERNS})

    def fingerprint(self) -> tf.Tensor:
        """An int64 vector: one randomly weighted sum of each op's active pattern."""
        sums = [tf.zeros([], tf.int64)]
        for i, op in enumerate(self.ops):
            pattern = tf.cast(_PATTERNS[op.type](op), tf.int64)
            weights = tf.random.stateless_uniform(
                tf.shape(pattern), seed=[i, 7919], minval=1, maxval=_MAX_WEIGHT, dtype=tf.int64
            )
            sums.append(tf.reduce_sum(pattern * weights))
        return tf.stack(sums)


def crossed(fingerprint_a: np.ndarray, fingerprint_b: np.ndarray) -> np.ndarray:
    """True where two fingerprints (``[..., ops]``) differ: a kink lies between the points."""
    return np.any(np.asarray(fingerprint_a) != np.asarray(fingerprint_b), axis=-1)
