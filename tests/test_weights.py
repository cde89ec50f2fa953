"""Sample and class weights, as ``fit`` takes them, in every library check: the checks read
the weighted loss ``fit`` minimises, a class-weighted healthy model passes them all, a
planted fault is still caught, and bad weights are refused in one line naming the argument."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from kerasdiag import check_gradients, check_gradients_fast, find_learning_rate
from kerasdiag.checks.sanity import (
    check_batch_independence,
    check_initial_loss,
    check_input_dependence,
    check_regularization_raises_loss,
    overfit_small_subset,
)

# Class 1 counts five times, class 3 not at all (every row of a class of weight 0).
CLASS_WEIGHT = {0: 2.0, 1: 5.0, 3: 0.0}


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.data / 16.0).astype("float32"), d.target


def mlp(loss=None, l2=None, seed=0, activation=None):
    keras.utils.set_random_seed(seed)
    reg = keras.regularizers.L2(l2) if l2 else None
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, "tanh", kernel_regularizer=reg),
            keras.layers.Dense(10, activation),
        ]
    )
    model.compile("adam", loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def class_weights_of(y):
    return np.array([CLASS_WEIGHT.get(int(c), 1.0) for c in y], dtype=np.float32)


@pytest.mark.parametrize(
    "loss",
    [
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "sparse_categorical_crossentropy",
        keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
    ],
    ids=["loss_object", "loss_name", "mean_with_sample_weight"],
)
def test_the_weighted_initial_loss_is_what_keras_evaluate_reports_and_expects(digits, loss):
    x, y = digits
    # A loss name resolves to a plain function, averaged by the check itself.
    model = mlp(loss, activation="softmax" if isinstance(loss, str) else None)
    w = class_weights_of(y)
    evaluated = model.evaluate(x, y, sample_weight=w, batch_size=len(x), verbose=0)
    result = check_initial_loss(model, (x, y, w), max_examples=None)
    assert result.value == pytest.approx(evaluated, rel=1e-5)
    assert result.status == "pass", result.message
    mean_with_weight = getattr(loss, "reduction", None) == "mean_with_sample_weight"
    mean_w = 1.0 if mean_with_weight else float(np.mean(w))
    assert result.expected == pytest.approx(np.log(10) * mean_w, rel=1e-6)
    # class_weight= gives the same weights as the triple
    same = check_initial_loss(model, (x, y), class_weight=CLASS_WEIGHT, max_examples=None)
    assert same.value == pytest.approx(result.value, rel=1e-6)


def test_weighted_regression_initial_loss_matches_evaluate(digits):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, "tanh"),
                              keras.layers.Dense(1)])  # fmt: skip
    model.compile("adam", "mse")
    target = ((y - y.mean()) / y.std()).astype("float32")
    w = class_weights_of(y)
    evaluated = model.evaluate(x, target, sample_weight=w, batch_size=len(x), verbose=0)
    result = check_initial_loss(model, (x, target, w), max_examples=None)
    assert result.status == "pass", result.message
    assert result.value == pytest.approx(evaluated, rel=1e-5)


def test_a_class_weighted_healthy_model_passes_every_check(digits):
    x, y = digits
    model = mlp(l2=1e-3)
    cw = {"class_weight": CLASS_WEIGHT}
    results = {
        "initial": check_initial_loss(model, (x, y), **cw),
        "overfit": overfit_small_subset(model, (x, y), **cw),
        "input": check_input_dependence(model, (x, y), steps=30, **cw),
        "batch": check_batch_independence(model, (x, y), **cw),
        "regularization": check_regularization_raises_loss(model, (x, y), **cw),
    }
    for name, result in results.items():
        assert result.status == "pass", f"{name}: {result.message}"
    lr = find_learning_rate(model, x, y, class_weight=CLASS_WEIGHT, max_steps=30)
    assert lr.suggestion is not None and lr.suggestion > 0
    assert check_gradients(model, x[:16], y[:16], class_weight=CLASS_WEIGHT).status == "passed"
    assert check_gradients_fast(model, x[:16], y[:16], class_weight=CLASS_WEIGHT).status == (
        "passed"
    )


def test_a_tf_data_dataset_of_weighted_triples_is_read_as_fit_reads_it(digits):
    x, y = digits
    model = mlp()
    w = class_weights_of(y)
    dataset = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(64)
    from_dataset = check_initial_loss(model, dataset, max_examples=None)
    from_arrays = check_initial_loss(model, (x, y, w), max_examples=None)
    assert from_dataset.status == "pass", from_dataset.message
    assert from_dataset.value == pytest.approx(from_arrays.value, rel=1e-6)
    assert overfit_small_subset(model, dataset).status == "pass"
    lr = find_learning_rate(model, dataset=dataset, max_steps=20)
    assert lr.suggestion is not None


def test_the_overfit_stage_trains_on_the_weighted_loss_and_skips_weight_zero_rows(digits):
    x, y = digits

    # Only class 3 counts: the stage draws its examples among the 3s (an example of weight 0
    # adds nothing to the loss), the same ones at weight 1 and 5, and its loss is 5x.
    def only_three(weight):
        return {c: (weight if c == 3 else 0.0) for c in range(10)}

    once = overfit_small_subset(mlp(), (x, y), class_weight=only_three(1.0))
    five = overfit_small_subset(mlp(), (x, y), class_weight=only_three(5.0))
    assert once.status == five.status == "pass", (once.message, five.message)
    assert five.details["initial_loss"] == pytest.approx(5 * once.details["initial_loss"])
    unweighted = overfit_small_subset(mlp(), (x, y))
    assert unweighted.details["initial_loss"] != pytest.approx(once.details["initial_loss"])
    # Every example of weight 0: no loss to check, not a failure.
    none = overfit_small_subset(mlp(), (x, y, np.zeros(len(y))))
    assert none.status == "skip" and "weight 0" in none.message
    assert check_initial_loss(mlp(), (x, y, np.zeros(len(y)))).status == "skip"


def test_a_planted_fault_is_still_caught_with_weights(digits):
    x, y = digits
    # Raw 0-255 inputs: outputs far from uniform, whatever the weights.
    raw = check_initial_loss(mlp(), (x * 255.0, y), class_weight=CLASS_WEIGHT)
    assert raw.status == "fail", raw.message
    # A gradient scaled by 1.1 inside the model, under class weights.

    @tf.custom_gradient
    def scaled(t):
        return tf.identity(t), lambda g: 1.1 * g

    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    hidden = keras.layers.Lambda(lambda t: scaled(t))(keras.layers.Dense(16, "tanh")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Dense(16, "tanh")(hidden)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert check_gradients(model, x[:8], y[:8], class_weight=CLASS_WEIGHT).status == "failed"
    assert check_gradients_fast(
        model, x[:8], y[:8], sample_weight=class_weights_of(y[:8])
    ).status == ("failed")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"class_weight": {12: 1.0}}, r"^class_weight: unknown class 12 "),
        ({"class_weight": {"cat": 1.0}}, r"^class_weight: unknown class 'cat'"),
        ({"class_weight": {0: -1.0}}, r"^class_weight: the weight of class 0 must be"),
        ({"class_weight": {0: float("nan")}}, r"^class_weight: the weight of class 0 must be"),
        ({"class_weight": [1.0, 2.0]}, r"^class_weight: expected a mapping"),
    ],
)
def test_bad_class_weights_are_refused_in_one_line(digits, kwargs, message):
    x, y = digits
    model = mlp()
    for check in (check_initial_loss, overfit_small_subset, check_input_dependence):
        with pytest.raises(ValueError, match=message) as info:
            check(model, (x, y), **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=message):
        check_gradients(model, x[:4], y[:4], **kwargs)


def test_bad_sample_weights_are_refused_in_one_line(digits):
    x, y = digits
    model = mlp()
    w = np.ones(len(y))
    w[7] = np.nan
    with pytest.raises(ValueError, match=r"^sample_weight: .* example 7 has nan"):
        check_initial_loss(model, (x, y, w))
    with pytest.raises(ValueError, match=r"^sample_weight: expected one weight per example"):
        overfit_small_subset(model, (x, y, w[:10]))
    with pytest.raises(ValueError, match=r"^class_weight: cannot be combined"):
        check_initial_loss(model, (x, y, np.ones(len(y))), class_weight={0: 1.0})
