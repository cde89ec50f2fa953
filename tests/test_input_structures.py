"""Models as users write them beyond one array in, one class index out: named (dict) inputs
and a sigmoid output of shape (N, 1) trained on 0/1 labels of shape (N,), which ``fit``
accepts (Keras brings the labels to the output's rank before the loss runs).

Real data: scikit-learn's diabetes table (its ten features as two named inputs of five) and
its digits (zero against the rest).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_digits

from kerasdiag.checks.gradcheck import check_gradients, check_gradients_fast
from kerasdiag.checks.lr_range import find_learning_rate
from kerasdiag.checks.sanity import check_initial_loss, check_input_dependence
from kerasdiag.checks.sanity._common import loss_function


@pytest.fixture(scope="module")
def diabetes():
    bunch = load_diabetes()
    x = bunch.data.astype("float32") / bunch.data.std(0).astype("float32")
    y = ((bunch.target - bunch.target.mean()) / bunch.target.std()).astype("float32")
    return {"a": x[:, :5], "b": x[:, 5:]}, y


def _two_inputs() -> keras.Model:
    keras.utils.set_random_seed(0)
    a, b = keras.Input((5,), name="a"), keras.Input((5,), name="b")
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(1)(h))
    model.compile("adam", keras.losses.Huber())
    return model


def test_named_inputs_get_an_input_verdict_and_a_learning_rate(diabetes):
    model = _two_inputs()
    used = check_input_dependence(model, diabetes)
    assert used.status == "pass", used.message
    found = find_learning_rate(model, *diabetes, max_steps=60)
    assert found.losses and np.all(np.isfinite(found.losses[:10]))


def test_named_inputs_that_are_ignored_are_named(diabetes):
    """Zeros in place of both inputs teach the model as much as the real ones: caught."""
    x, y = diabetes
    blind = {k: np.zeros_like(v) for k, v in x.items()}
    model = _two_inputs()
    model.fit(blind, y, epochs=1, verbose=0)  # what it learns from zeros is the mean only
    ignored = check_input_dependence(model, (blind, y))
    assert ignored.status == "fail", ignored.message


def test_labels_of_shape_n_against_a_sigmoid_column_are_checked_as_fit_trains():
    digits = load_digits()
    x, y = (digits.data / 16).astype("float32"), (digits.target == 0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile("adam", "binary_crossentropy")
    assert check_initial_loss(model, (x, y)).status == "pass"
    full = check_gradients(model, x[:8], y[:8])
    fast = check_gradients_fast(model, x[:8], y[:8])
    assert full.status == "passed" and fast.status == "passed", (str(full), str(fast))
    # the objective is the one fit minimises: the mean binary cross-entropy of the batch
    expected = model.evaluate(x[:8], y[:8], verbose=0)
    assert float(loss_function("binary_crossentropy")(y[:8], model(x[:8]))) == pytest.approx(
        expected, rel=1e-5
    )
