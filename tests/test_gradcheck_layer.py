"""check_layer_gradients: full Jacobians of one layer with tf.test.compute_gradient."""

from __future__ import annotations

import json

import keras
import numpy as np
from _gradcheck_helpers import PlantedConv2D, PlantedDense, cifar, digits

import kerasdiag


def test_dense_layer_inputs_and_weights_pass_and_layer_is_unchanged():
    x, _ = digits()
    keras.utils.set_random_seed(0)
    layer = keras.layers.Dense(5, activation="tanh")
    layer.build((None, 6))
    before = [w.copy() for w in layer.get_weights()]
    report = kerasdiag.check_layer_gradients(layer, x[:2, :6])
    assert report.passed, str(report)
    assert [(r.name, r.jacobian_shape) for r in report.rows] == [
        ("input", (10, 12)),
        ("kernel", (10, 30)),
        ("bias", (10, 5)),
    ]
    assert report.max_relative_error <= 1e-7
    assert all(np.array_equal(a, b) for a, b in zip(before, layer.get_weights(), strict=True))
    assert {w.dtype for w in layer.weights} == {"float32"}
    assert json.loads(json.dumps(report.to_dict()))["passed"] is True


def test_planted_transposed_kernel_gradient_fails_only_the_kernel():
    x, _ = digits()
    keras.utils.set_random_seed(0)
    report = kerasdiag.check_layer_gradients(PlantedDense(6, bug="transposed"), x[:2, :6])
    assert not report.passed
    assert {r.name: r.verdict for r in report.rows} == {
        "input": "ok",
        "kernel": "fail",
        "bias": "ok",
    }
    # raw analytic and numeric values of the failing entries, at every step size tried
    worst = report.entries[0]
    assert worst["argument"] == "kernel" and worst["h"] == [1e-5, 1e-4, 1e-6]
    assert "kernel d out" in str(report)


def test_planted_conv_bias_bug_fails_the_bias():
    x, _ = cifar()
    keras.utils.set_random_seed(0)
    report = kerasdiag.check_layer_gradients(PlantedConv2D(2, bug="no_bias"), x[:1, :4, :4])
    assert {r.name: r.verdict for r in report.rows} == {
        "input": "ok",
        "kernel": "ok",
        "bias": "fail",
    }


def test_max_pool_ties_in_real_images_are_kinks():
    # CIFAR pixels are 8-bit: a 2x2 window often holds its maximum twice, so moving the
    # first winner down hands the max to the other one at any step: a kink, not a bug.
    x, _ = cifar()
    report = kerasdiag.check_layer_gradients(keras.layers.MaxPooling2D(), x[:1, :4, :4])
    assert report.passed, str(report)
    assert report.kink_types == ["MaxPool"]
    assert report.rows[0].kinks > 0 and report.rows[0].verdict == "kink"


def test_list_inputs_and_integer_inputs():
    x, _ = digits()
    report = kerasdiag.check_layer_gradients(keras.layers.Add(), [x[:2, :4], x[2:4, :4]])
    assert report.passed and [r.name for r in report.rows] == ["input[0]", "input[1]"]
    embedding = keras.layers.Embedding(7, 3)
    report = kerasdiag.check_layer_gradients(embedding, np.array([[1, 5, 1]]))
    # integer ids are not differentiated; the embedding table is
    assert report.passed and [r.name for r in report.rows] == ["embeddings"]
