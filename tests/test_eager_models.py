"""A model that only trains eagerly: the checks train it as ``fit`` does, instead of failing.

Its ``call`` branches on a tensor in Python, which no graph can trace (with or without
AutoGraph's conversion, which Keras does not apply to its own step); compiled with
``run_eagerly=True``, ``fit`` trains it, and so must every check that trains a copy.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdiag.callbacks.stats import probe_model
from kerasdiag.checks.lr_range import find_learning_rate
from kerasdiag.checks.sanity.baseline import check_input_dependence
from kerasdiag.checks.sanity.overfit import overfit_small_subset


class BranchingNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(32, activation="relu")
        self.out = keras.layers.Dense(3)

    def call(self, x, training=False):
        h = self.hidden(x)
        if tf.reduce_mean(h) > 1e9:  # a Python branch on a tensor: eager only
            h = h * 0
        return self.out(h)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 16)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)  # 3 classes from two inputs
    return x, y


def _model(x, run_eagerly=True):
    keras.utils.set_random_seed(0)
    model = BranchingNet()
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        run_eagerly=run_eagerly,
    )
    model(x[:1])
    return model


def test_fit_itself_needs_eager_for_this_model(data):
    x, y = data
    with pytest.raises(tf.errors.OperatorNotAllowedInGraphError):
        _model(x, run_eagerly=False).fit(x, y, epochs=1, verbose=0)
    _model(x).fit(x, y, epochs=1, verbose=0)


def test_overfit_and_input_check_train_it_eagerly(data):
    x, y = data
    overfit = overfit_small_subset(_model(x), (x, y))
    assert overfit.status == "pass", overfit.message
    assert overfit.details["steps"] > 0
    baseline = check_input_dependence(_model(x), (x, y))
    assert baseline.status != "skip" and "does not apply" not in baseline.message
    assert baseline.details["steps"] > 0, baseline.message


def test_range_test_and_probe_run_it_eagerly(data):
    x, y = data
    found = find_learning_rate(_model(x), x, y, max_steps=30)
    assert len(found.lrs) > 1 and np.isfinite(found.losses[0])
    probe = probe_model(_model(x), x[:32], y[:32])
    assert np.isfinite(probe.loss) and len(probe.grads) == 4
