"""KinkRecorder: each non-differentiable op's active pattern, on tiny traced functions.

Fast on purpose: ``scripts/mutation_test.py`` runs these against every mutant of
``kerasdiag/checks/gradcheck/kinks.py``. Each case evaluates one op at two points on the same side
of its kink and at two points on either side; only the latter must count as crossed.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from kerasdiag.checks.gradcheck.kinks import KINK_PATTERNS, KinkRecorder, crossed


def _recorded(fn):
    """(fingerprint of fn at a point, the recorder of its trace)."""
    recorders = []

    @tf.function
    def run(x):
        with KinkRecorder() as rec:
            fn(x)
        recorders.append(rec)  # at trace time
        return rec.fingerprint()

    def fingerprint(values):
        return run(tf.constant(values, tf.float64)).numpy()

    return fingerprint, recorders


def _pool(x):
    return tf.nn.max_pool2d(tf.reshape(x, [1, 2, 2, 1]), 2, 1, "VALID")


CASES = {
    # op: (function, a point, a point on the same side, a point across the kink)
    "Relu": (tf.nn.relu, [1.0, -1.0], [2.0, -0.5], [1.0, 0.5]),
    "LeakyRelu": (lambda x: tf.nn.leaky_relu(x, 0.1), [1.0, -1.0], [0.5, -2.0], [-1.0, -1.0]),
    "Elu": (tf.nn.elu, [1.0, -1.0], [3.0, -3.0], [1.0, 1.0]),
    "Selu": (tf.nn.selu, [1.0, -1.0], [3.0, -3.0], [-1.0, -1.0]),
    "Relu6": (tf.nn.relu6, [3.0, -1.0], [5.0, -2.0], [7.0, -1.0]),
    "Abs": (tf.abs, [1.0, -1.0], [2.0, -3.0], [1.0, 1.0]),
    "Maximum": (lambda x: tf.maximum(x[0], x[1]), [1.0, 0.0], [2.0, 1.0], [0.0, 1.0]),
    "Minimum": (lambda x: tf.minimum(x[0], x[1]), [1.0, 0.0], [2.0, 1.0], [0.0, 1.0]),
    # tf.clip_by_value is built from Maximum and Minimum; the fused op comes from raw_ops
    "ClipByValue": (
        lambda x: tf.raw_ops.ClipByValue(
            t=x, clip_value_min=tf.constant(-1.0, x.dtype), clip_value_max=tf.constant(1.0, x.dtype)
        ),
        [0.5, 2.0],
        [0.0, 3.0],
        [0.5, 0.5],
    ),  # fmt: skip
    "Max": (lambda x: tf.reduce_max(x), [1.0, 0.0], [3.0, 2.0], [0.0, 1.0]),
    "Min": (lambda x: tf.reduce_min(x), [1.0, 0.0], [3.0, 2.0], [0.0, 1.0]),
    "MaxPool": (_pool, [4.0, 1.0, 2.0, 3.0], [5.0, 0.0, 1.0, 2.0], [1.0, 4.0, 2.0, 3.0]),
}


@pytest.mark.parametrize("op", sorted(CASES))
def test_each_kink_op_is_recorded_and_crossings_detected(op):
    fn, a, same, across = CASES[op]
    fingerprint, recorders = _recorded(fn)
    base = fingerprint(a)
    assert recorders[0].kink_types == [op]
    assert base.dtype == np.int64 and base.shape == (2,)  # the constant 0, then one op
    assert not crossed(base, fingerprint(same))
    assert crossed(base, fingerprint(across))


def test_every_kink_op_has_a_case():
    covered = set(CASES) | {"MaxPoolV2", "MaxPool3D"}  # the pool variants: see below
    assert covered == set(KINK_PATTERNS)


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_max_pool_variants_and_padding(padding):
    def pool3d(x):
        x = tf.cast(tf.reshape(x, [1, 1, 2, 2, 1]), tf.float32)  # no float64 kernel
        return tf.nn.max_pool3d(x, [1, 2, 2], 1, padding)

    def pool_v2(x):  # ksize as a tensor: the MaxPoolV2 op
        x = tf.reshape(x, [1, 2, 2, 1])
        return tf.raw_ops.MaxPoolV2(input=x, ksize=tf.constant([1, 2, 2, 1]),
                                    strides=tf.constant([1, 1, 1, 1]), padding=padding)  # fmt: skip

    for fn, op in ((pool3d, "MaxPool3D"), (pool_v2, "MaxPoolV2")):
        fingerprint, recorders = _recorded(fn)
        a = [4.0, 1.0, 2.0, 3.0]
        base = fingerprint(a)
        assert op in recorders[0].kink_types
        assert not crossed(base, fingerprint([5.0, 1.0, 2.0, 3.0]))
        assert crossed(base, fingerprint([1.0, 4.0, 2.0, 3.0]))


def test_piecewise_ops_count_as_crossings_but_not_as_kinks():
    def fn(x):
        return tf.where(x > 0, x, 0.0 * x) + tf.floor(x) + tf.round(x) + tf.sign(x)

    fingerprint, recorders = _recorded(fn)
    base = fingerprint([0.3])
    assert recorders[0].kink_types == []  # no kink type: the objective stays "smooth"
    assert [op.type for op in recorders[0].ops] == ["SelectV2", "Floor", "Round", "Sign"]
    assert not crossed(base, fingerprint([0.35]))
    assert crossed(base, fingerprint([0.7]))  # round flips
    assert crossed(base, fingerprint([1.2]))  # floor flips


def test_kink_types_are_sorted_without_repeats_and_other_ops_are_ignored():
    fingerprint, recorders = _recorded(
        lambda x: tf.nn.relu(tf.abs(tf.nn.relu(x) * 2.0 + tf.exp(x)))
    )
    assert fingerprint([1.0]).shape == (4,)  # the constant 0, then one sum per kink op
    assert recorders[0].kink_types == ["Abs", "Relu"] and len(recorders[0].ops) == 3


def test_ops_created_before_the_recorder_are_not_recorded():
    recorders = []

    @tf.function
    def run(x):
        y = tf.nn.relu(x)
        with KinkRecorder() as rec:
            z = y * 2.0
        recorders.append(rec)
        return rec.fingerprint(), z

    fingerprint, _ = run(tf.constant([1.0], tf.float64))
    assert recorders[0].ops == [] and fingerprint.numpy().tolist() == [0]


def test_fingerprints_weigh_positions_so_swaps_are_crossings():
    fingerprint, _ = _recorded(tf.nn.relu)
    # the same number of active units at other positions: a different pattern
    assert crossed(fingerprint([1.0, -1.0]), fingerprint([-1.0, 1.0]))


def test_the_recorder_refuses_eager_use():
    with pytest.raises(
        RuntimeError, match="^KinkRecorder works while tracing a tf.function, not eagerly$"
    ):
        with KinkRecorder():
            pass


def test_crossed_compares_along_the_last_axis():
    a = np.array([[0, 1, 2], [0, 1, 2]])
    b = np.array([[0, 1, 2], [0, 1, 3]])
    assert crossed(a, b).tolist() == [False, True]
    assert crossed(a[0], b[0]).tolist() is False


def test_a_point_exactly_on_a_kink_belongs_to_the_piece_tensorflows_gradient_uses():
    """ReLU's gradient at 0 is 0 (the negative piece); ReLU6's is 0 at 0 and at 6; a clip
    passes the gradient at both of its bounds (the middle piece)."""
    relu, _ = _recorded(tf.nn.relu)
    assert not crossed(relu([0.0]), relu([-1.0])) and crossed(relu([0.0]), relu([1.0]))
    relu6, _ = _recorded(tf.nn.relu6)
    assert not crossed(relu6([0.0]), relu6([-1.0]))
    assert not crossed(relu6([6.0]), relu6([7.0])) and crossed(relu6([6.0]), relu6([5.0]))
    assert crossed(relu6([-1.0]), relu6([7.0]))  # below and above are different pieces
    clip, _ = _recorded(
        lambda x: tf.raw_ops.ClipByValue(
            t=x, clip_value_min=tf.constant(-1.0, x.dtype), clip_value_max=tf.constant(1.0, x.dtype)
        )
    )
    assert not crossed(clip([1.0]), clip([0.5])) and crossed(clip([1.0]), clip([1.5]))
    assert not crossed(clip([-1.0]), clip([0.0])) and crossed(clip([-1.0]), clip([-1.5]))
    assert crossed(clip([-2.0]), clip([2.0]))


@pytest.mark.parametrize("reduce", [tf.reduce_max, tf.reduce_min])
def test_a_reduction_follows_its_own_winner_only(reduce):
    fingerprint, _ = _recorded(lambda x: reduce(x))
    base = [3.0, 1.0, 0.0]
    winner_moves = [1.0, 3.0, 0.0] if reduce is tf.reduce_max else [3.0, 0.0, 1.0]
    other_moves = [3.0, 0.0, 1.0] if reduce is tf.reduce_max else [1.0, 3.0, 0.0]
    assert crossed(fingerprint(base), fingerprint(winner_moves))
    assert not crossed(fingerprint(base), fingerprint(other_moves))


def test_max_pool_with_explicit_padding():
    def pool(x):
        x = tf.reshape(x, [1, 2, 2, 1])
        return tf.nn.max_pool2d(x, 2, 1, padding=[[0, 0], [1, 0], [1, 0], [0, 0]])

    fingerprint, recorders = _recorded(pool)
    base = fingerprint([4.0, 1.0, 2.0, 3.0])
    assert recorders[0].kink_types == ["MaxPool"]
    assert not crossed(base, fingerprint([5.0, 1.0, 2.0, 3.0]))
    assert crossed(base, fingerprint([1.0, 4.0, 2.0, 3.0]))


def test_a_new_recorder_has_seen_nothing():
    recorder = KinkRecorder()
    assert recorder.ops == [] and recorder.kink_types == []


def test_relu6_has_one_piece_from_0_to_6():
    relu6, _ = _recorded(tf.nn.relu6)
    assert not crossed(relu6([0.5]), relu6([3.0]))  # both inside (0, 6): gradient 1 at both
    assert crossed(relu6([-0.5]), relu6([0.5]))


def test_a_reduction_over_an_axis_follows_each_rows_winner():
    fingerprint, recorders = _recorded(lambda x: tf.reduce_max(tf.reshape(x, [2, 2]), axis=1))
    base = fingerprint([3.0, 1.0, 2.0, 0.0])  # winners: row 0 at 0, row 1 at 0
    assert recorders[0].kink_types == ["Max"]
    # the second row's winner moves, the global maximum (row 0) does not: crossed
    assert crossed(base, fingerprint([3.0, 1.0, 0.0, 2.0]))
    # a loser of row 0 rises to row 1's maximum: no winner moves, not crossed
    assert not crossed(base, fingerprint([3.0, 2.0, 2.0, 0.0]))
