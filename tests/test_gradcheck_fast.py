"""check_gradients_fast: random directional derivatives over all parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _gradcheck_helpers import PlantedConv2D, cifar, digits, planted_dense_model, relu_convnet

import kerasdiag
from kerasdiag.checks.gradcheck.fast import random_directions


def test_healthy_relu_convnet_passes_fast_check():
    x, y = cifar()
    report = kerasdiag.check_gradients_fast(relu_convnet(), x, y, directions=4)
    assert report.passed, str(report)
    assert len(report.rows) == 4 and report.max_relative_error <= 1e-7
    # two forward passes per direction: no per-variable split when nothing fails
    assert report.variable_rows == [] and report.suspects == []
    assert json.loads(json.dumps(report.to_dict()))["passed"] is True


def test_planted_conv_bias_bug_fails_and_names_the_variable():
    x, y = cifar()
    planted = PlantedConv2D(4, bug="no_bias")
    report = kerasdiag.check_gradients_fast(relu_convnet(planted), x, y)
    assert not report.passed
    assert report.suspects == [planted.bias.path]
    assert f"variables=['{planted.bias.path}']" in str(report)


@pytest.mark.parametrize("bug", ["scaled", "transposed"])
def test_planted_dense_kernel_bug_fails_and_names_the_variable(bug):
    x, y = digits()
    model = planted_dense_model(bug)
    planted = model.layers[1]
    report = kerasdiag.check_gradients_fast(model, x, y)
    assert not report.passed and report.max_relative_error > 1e-2
    assert report.suspects == [planted.kernel.path]
    # the follow-up the report points to confirms it with sampled entries
    full = kerasdiag.check_gradients(model, x, y, variables=report.suspects)
    assert [r.verdict for r in full.rows] == ["fail"]


def test_random_directions_are_unit_length_with_equal_shares():
    blocks = random_directions([(50, 20), (20,), (3, 3, 2, 4)], count=3, seed=0)
    for k in range(3):
        shares = [np.sum(b[k] ** 2) for b in blocks]
        np.testing.assert_allclose(shares, 1 / 3)
        assert sum(shares) == pytest.approx(1.0)


def _unit_on_its_kink(model, layer_index: int) -> None:
    # Hidden unit 0 gets zero weights and bias: its ReLU input is exactly 0 for every example,
    # so every direction that moves its weights crosses the kink at any step size.
    hidden = model.layers[layer_index]
    kernel, bias = hidden.kernel.numpy(), hidden.bias.numpy()
    kernel[:, 0], bias[0] = 0.0, 0.0
    hidden.kernel.assign(kernel)
    hidden.bias.assign(bias)


def test_directions_that_all_cross_a_kink_are_inconclusive_and_fall_back_per_variable():
    import keras

    x, y = cifar()
    model = relu_convnet(keras.layers.Flatten(), keras.layers.Dense(8, activation="relu"))
    _unit_on_its_kink(model, 3)
    report = kerasdiag.check_gradients_fast(model, x, y)
    # every whole direction crossed the kink: never a silent PASSED on those ...
    assert all(r.verdict == "kink" for r in report.rows), str(report)
    # ... the per-variable pieces decide: only the kinked layer's pieces are excused
    assert report.fallback and report.passed, str(report)
    excused = {r.variable for r in report.variable_rows if r.verdict == "kink"}
    assert excused <= {model.layers[3].kernel.path, model.layers[3].bias.path}
    assert "per-variable pieces" in str(report).splitlines()[0]


def test_fallback_still_catches_a_planted_bug_behind_a_kink():
    import keras

    x, y = cifar()
    model = relu_convnet(
        PlantedConv2D(4, bug="scaled"), keras.layers.Flatten(), keras.layers.Dense(8, "relu")
    )
    _unit_on_its_kink(model, 4)
    report = kerasdiag.check_gradients_fast(model, x, y)
    assert report.status == "failed", str(report)
    assert any("planted_conv2d" in s and "kernel" in s for s in report.suspects), report.suspects
