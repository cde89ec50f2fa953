"""Evaluate a function at many perturbed weight settings in one graph call.

A finite difference needs two evaluations per checked entry. Calling a Python loop of
``assign`` / forward / restore costs a graph launch per evaluation; here the perturbations
are a batch: ``tf.map_fn`` walks them inside one ``tf.function``, and each step rebuilds
only the weight list it needs from the untouched base values (``stateless_call`` style), so
nothing has to be restored and the user's variables are never written.

Two kinds of perturbation cover every check:

- ``offset_element``: one entry of one variable moves by ``delta`` (sampled dims);
- ``offset_directions``: every variable moves by ``coef * mask[v] * direction[v]``
  (random directions over all parameters, and their per-variable pieces).

Example:
    >>> import tensorflow as tf
    >>> base = [tf.zeros([2, 2], tf.float64), tf.zeros([3], tf.float64)]
    >>> def total(vals):
    ...     return (tf.reduce_sum(vals[0] * 2.0) + tf.reduce_sum(vals[1]),)
    >>> evaluate = batched(total, base)
    >>> out = evaluate("element", tf.constant([0, 1]), tf.constant([3, 2], tf.int64),
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
    out = []
    for i, v in enumerate(values):
        # Every variable gets a scatter that is a no-op unless it is the chosen one: a copy
        # per evaluation, but one small graph (a tf.switch_case costs a graph per variable).
        hit = tf.equal(var_idx, i)
        index = tf.reshape(tf.where(hit, flat_idx, tf.zeros_like(flat_idx)), [1, 1])
        step = tf.where(hit, delta, tf.zeros_like(delta))
        flat = tf.tensor_scatter_nd_add(tf.reshape(v, [-1]), index, tf.reshape(step, [1]))
        out.append(tf.reshape(flat, tf.shape(v)))
    return out


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


def batched(
    forward: Forward, base: Sequence[tf.Tensor], outputs: Sequence[tf.DType] = (tf.float64,)
) -> Callable[..., tuple[tf.Tensor, ...]]:
    """A ``tf.function`` that maps ``forward`` over a batch of perturbations of ``base``.

    ``forward`` returns one tensor of each dtype in ``outputs``. Call the result as
    ``evaluate("element", var_idx, flat_idx, delta)`` or
    ``evaluate("direction", directions, dir_idx, coef, mask)``; every output gains a
    leading batch axis. Each kind is traced once, whatever the batch size.
    """
    out_spec = tuple(tf.TensorSpec(None, dtype) for dtype in outputs)
    base = list(base)
    base_spec = [tf.TensorSpec(v.shape, v.dtype) for v in base]
    vector = tf.TensorSpec([None], tf.float64)

    def mapped(step, elems):
        return tf.map_fn(step, elems, fn_output_signature=out_spec, parallel_iterations=4)

    @tf.function(
        autograph=False,
        input_signature=[
            base_spec,
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None], tf.int64),
            vector,
        ],
    )
    def at_elements(values, var_idx, flat_idx, delta):
        return mapped(
            lambda e: tuple(forward(offset_element(values, *e))), (var_idx, flat_idx, delta)
        )

    direction_fns: list = []

    def along(directions, dir_idx, coef, mask):
        if not direction_fns:  # the direction shapes are known at the first call
            spec = [tf.TensorSpec([None, *v.shape], tf.float64) for v in base]
            matrix = tf.TensorSpec([None, len(base)], tf.float64)

            @tf.function(
                autograph=False,
                input_signature=[base_spec, spec, tf.TensorSpec([None], tf.int32), vector, matrix],
            )
            def fn(values, directions, dir_idx, coef, mask):
                return mapped(
                    lambda e: tuple(forward(offset_directions(values, directions, *e))),
                    (dir_idx, coef, mask),
                )

            direction_fns.append(fn)
        return direction_fns[0](base, directions, dir_idx, coef, mask)

    def evaluate(kind: str, *args):
        if kind == "element":
            return at_elements(base, *args)
        return along(*args)

    return evaluate
