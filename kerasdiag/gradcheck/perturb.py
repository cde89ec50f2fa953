"""Evaluate a function at many perturbed weight settings in one graph call.

A finite difference needs two evaluations per checked entry. Calling a Python loop of
``assign`` / forward / restore costs a graph launch per evaluation; here the perturbations
are a batch: ``tf.map_fn`` walks them inside one ``tf.function``, and each step rebuilds
only the weight list it needs from the untouched base values (``stateless_call`` style), so
nothing has to be restored and the user's variables are never written.

Two kinds of perturbation cover every check:

- ``offset_element``: one entry of one variable moves by ``delta`` (sampled dims, G11);
- ``offset_directions``: every variable moves by ``coef * mask[v] * direction[v]``
  (random directions over all parameters, B2, and their per-variable pieces).

Example:
    >>> import tensorflow as tf
    >>> base = [tf.zeros([2, 2], tf.float64), tf.zeros([3], tf.float64)]
    >>> def total(vals):
    ...     return (tf.reduce_sum(vals[0] * 2.0) + tf.reduce_sum(vals[1]),)
    >>> evaluate = batched(total)
    >>> out = evaluate(base, "element", tf.constant([0, 1]), tf.constant([3, 2]),
    ...                tf.constant([1.0, -1.0], tf.float64))
    >>> out[0].numpy().tolist()
    [2.0, -1.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

Forward = Callable[[list[tf.Tensor]], Sequence[tf.Tensor]]


def offset_element(
    values: Sequence[tf.Tensor], var_idx: tf.Tensor, flat_idx: tf.Tensor, delta: tf.Tensor
) -> list[tf.Tensor]:
    """``values`` with entry ``flat_idx`` of variable ``var_idx`` moved by ``delta``."""

    def branch(i: int) -> Callable[[], list[tf.Tensor]]:
        def moved() -> list[tf.Tensor]:
            out = list(values)
            flat = tf.reshape(values[i], [-1])
            flat = tf.tensor_scatter_nd_add(flat, tf.reshape(flat_idx, [1, 1]), [delta])
            out[i] = tf.reshape(flat, tf.shape(values[i]))
            return out

        return moved

    # One branch per variable: only the chosen variable is copied.
    return tf.switch_case(var_idx, [branch(i) for i in range(len(values))])


def offset_directions(
    values: Sequence[tf.Tensor],
    directions: Sequence[tf.Tensor],
    dir_idx: tf.Tensor,
    coef: tf.Tensor,
    mask: tf.Tensor,
) -> list[tf.Tensor]:
    """``values[v] + coef * mask[v] * directions[v][dir_idx]`` for every variable ``v``."""
    return [
        v + (coef * mask[i]) * tf.gather(d, dir_idx)
        for i, (v, d) in enumerate(zip(values, directions, strict=True))
    ]


def batched(forward: Forward, outputs: int = 1) -> Callable[..., tuple[tf.Tensor, ...]]:
    """A ``tf.function`` that maps ``forward`` over a batch of perturbations of ``base``.

    ``forward`` returns ``outputs`` float64 tensors. Call the result as
    ``evaluate(base, "element", var_idx, flat_idx, delta)`` or
    ``evaluate(base, "direction", directions, dir_idx, coef, mask)``; every output gains a
    leading batch axis.
    """
    signature = tuple(tf.TensorSpec(None, tf.float64) for _ in range(outputs))

    @tf.function(reduce_retracing=True, autograph=False)
    def evaluate(base, kind, *args):
        if kind == "element":
            var_idx, flat_idx, delta = args
            elems = (var_idx, flat_idx, delta)

            def step(e):
                return tuple(forward(offset_element(base, *e)))

        else:
            directions, dir_idx, coef, mask = args
            elems = (dir_idx, coef, mask)

            def step(e):
                return tuple(forward(offset_directions(base, directions, *e)))

        return tf.map_fn(step, elems, fn_output_signature=signature, parallel_iterations=4)

    return evaluate
