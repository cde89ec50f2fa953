"""check_gradients_fast: random directional derivatives over all parameters (B2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _gradcheck_helpers import PlantedConv2D, cifar, digits, planted_dense_model, relu_convnet

import kerasdiag
from kerasdiag.gradcheck.fast import random_directions


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
