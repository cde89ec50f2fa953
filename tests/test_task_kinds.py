"""Every task kind gets its own rule: the task of an output, the initial loss it should start
from and what "memorised" means for it, on real data (scikit-learn's digits and diabetes).

Each healthy model below is one a user met that got a wrong verdict or a crash before: a
regression model judged by a 0/1-label formula, multi-label outputs scored as top-1 against the
first label that is on, a list of losses that raised, label smoothing's floor read as "could
not memorise", and a failure shown as "value 2.303 expected 2.303".
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_digits

from kerasdiag import find_learning_rate
from kerasdiag.checks.sanity import (
    check_initial_loss,
    check_input_dependence,
    check_regularization_raises_loss,
    overfit_small_subset,
)
from kerasdiag.checks.sanity.expected import (
    describe_loss,
    regression_initial_range,
    smoothed_target_entropy,
)
from kerasdiag.checks.sanity.initial_loss import _distinct
from kerasdiag.checks.tasks import accuracy, label_accuracy, task_of


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.data / 16.0).astype("float32"), d.target


@pytest.fixture(scope="module")
def diabetes():
    """Real regression data: 10 standardised features, the disease progression standardised."""
    d = load_diabetes()
    x = ((d.data - d.data.mean(0)) / d.data.std(0)).astype("float32")
    y = ((d.target - d.target.mean()) / d.target.std()).astype("float32")
    return x, y


def multi_hot(labels: np.ndarray) -> np.ndarray:
    """Five properties of each digit, several on at once: even, below 5, a multiple of 3,
    above 6, one of 1/4/7."""
    return np.stack(
        [labels % 2 == 0, labels < 5, labels % 3 == 0, labels > 6, np.isin(labels, [1, 4, 7])],
        axis=1,
    ).astype("float32")


def mlp(inputs: int, outputs: int, activation: str | None = None, hidden: int = 32):
    keras.utils.set_random_seed(0)
    x = keras.Input((inputs,))
    h = keras.layers.Dense(hidden, "relu")(x)
    return keras.Model(x, keras.layers.Dense(outputs, activation)(h))


def compiled(model, loss, **kwargs):
    model.compile(optimizer="adam", loss=loss, **kwargs)
    return model


# ---- the task of an output, from its loss, width and labels (pure)


def test_each_loss_and_label_shape_names_its_task():
    cases = [
        ("sparse_categorical_crossentropy", 10, np.array([3, 1]), "multiclass", "sparse"),
        ("categorical_crossentropy", 3, np.eye(3)[[0, 2]], "multiclass", "one_hot"),
        ("binary_crossentropy", 1, np.array([0, 1]), "binary", "binary"),
        ("binary_crossentropy", 5, multi_hot(np.array([0, 7])), "multilabel", "multi_hot"),
        ("mse", 1, np.array([0.3, -1.2]), "regression", "values"),
        ("mae", 2, np.array([[0.3, 2.0], [1.0, -1.0]]), "regression", "values"),
        (keras.losses.Huber(delta=2.0), 1, np.array([0.5]), "regression", "values"),
        ("mse", 10, np.array([3, 1]), "multiclass", "sparse"),  # MSE against one-hot rows
    ]
    for loss, width, y, kind, labels in cases:
        task = task_of(describe_loss(loss), width, y)
        assert (task.kind, task.labels) == (kind, labels), (loss, width)
    assert task_of(None, 4).kind == "unknown"
    assert describe_loss(keras.losses.Huber(delta=2.0)).delta == 2.0


def test_label_smoothing_is_read_from_the_loss_config_and_sets_the_floor():
    spec = describe_loss(keras.losses.CategoricalCrossentropy(label_smoothing=0.1))
    assert spec.label_smoothing == pytest.approx(0.1)
    # target 0.91 on the true class, 0.01 on the 9 others: the 0.50
    floor = smoothed_target_entropy(spec, 10)
    assert floor == pytest.approx(-(0.91 * np.log(0.91) + 9 * 0.01 * np.log(0.01)))
    assert round(floor, 2) == 0.50
    binary = describe_loss(keras.losses.BinaryCrossentropy(label_smoothing=0.2))
    assert smoothed_target_entropy(binary, 5) == pytest.approx(
        -(0.1 * np.log(0.1) + 0.9 * np.log(0.9))
    )
    assert task_of(spec, 10).loss_floor == pytest.approx(floor)


def test_multilabel_accuracy_is_the_exact_match_not_top1():
    task = task_of(describe_loss("binary_crossentropy"), 3)
    y = np.array([[1, 0, 1], [0, 1, 1]], "float32")
    right = np.array([[0.9, 0.1, 0.8], [0.2, 0.7, 0.6]])
    assert accuracy(task, right, y) == 1.0
    one_wrong = np.array([[0.9, 0.1, 0.3], [0.2, 0.7, 0.6]])
    assert accuracy(task, one_wrong, y) == 0.5
    assert label_accuracy(task, one_wrong, y) == pytest.approx(5 / 6)


def test_regression_range_is_the_targets_scale_in_closed_form():
    y = np.array([[2.0], [0.0], [1.0], [-3.0]])
    expected, low, high, _ = regression_initial_range(describe_loss("mse"), y)
    assert expected == pytest.approx(np.mean(y**2))  # zero outputs
    assert low == pytest.approx(np.var(y))  # the best constant, the mean
    assert high == pytest.approx(np.mean(y**2) + 4 * max(1.0, np.var(y)))
    expected, low, _, _ = regression_initial_range(describe_loss("mae"), y)
    assert expected == pytest.approx(np.mean(np.abs(y)))
    assert low == pytest.approx(np.mean(np.abs(y - np.median(y))))


def test_failures_show_enough_digits_to_differ():
    assert _distinct(2.302585, 2.302585) == ("2.303", "2.303")
    assert _distinct(2.3026, 2.30258) == ("2.3026", "2.3026") or _distinct(2.3026, 2.30258) == (
        "2.3026",
        "2.30258",
    )
    a, b = _distinct(2.30261, 2.30259)
    assert a != b


# ---- regression (MSE, MAE, Huber) on real targets


@pytest.mark.parametrize("loss", ["mse", "mae", keras.losses.Huber()])
def test_regression_model_passes_the_initial_loss_check(diabetes, loss):
    x, y = diabetes
    result = check_initial_loss(compiled(mlp(10, 1), loss), (x, y))
    assert result.status == "pass", result.message
    assert "share of positive" not in result.message
    low, high = result.details["accepted"]
    assert low <= result.value <= high
    if loss == "mse":  # the loss of zero outputs: the standardised targets' mean square, 1
        assert result.expected == pytest.approx(float(np.mean(y[: len(y)] ** 2)), rel=0.1)


def test_regression_with_unnormalised_inputs_fails_the_initial_loss_check(diabetes):
    x, y = diabetes
    result = check_initial_loss(compiled(mlp(10, 1), "mse"), (x * 255.0, y))
    assert result.status == "fail", result.message
    assert "far larger than an untrained model's" in result.message


def test_regression_memorises_relative_to_the_target_variance(diabetes):
    x, y = diabetes
    result = overfit_small_subset(compiled(mlp(10, 1), "mse"), (x, y))
    assert result.status == "pass", result.message
    assert "best constant prediction" in result.message


def test_regression_on_raw_target_units_names_the_target_scale(diabetes):
    x, _ = diabetes
    raw = load_diabetes().target.astype("float32")  # 25..346: Adam moves ~1e-3 a step
    model = compiled(mlp(10, 1), "mse")
    assert check_initial_loss(model, (x, raw)).status == "pass"
    result = overfit_small_subset(model, (x, raw), max_steps=100)
    assert result.status == "fail" and "standardise the targets" in result.message


def test_a_penalty_next_to_a_large_loss_is_seen_rising(diabetes):
    """MSE on the raw targets starts near 2.9e4, where an L2 penalty of 0.02 is below the
    float32 rounding of the total: the check reads the penalties, which rise 0 -> x -> 10x."""
    x, _ = diabetes
    raw = load_diabetes().target.astype("float32")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(32, "relu", kernel_regularizer=keras.regularizers.L2(1e-4))(inputs)
    model = compiled(keras.Model(inputs, keras.layers.Dense(1)(hidden)), "mse")
    result = check_regularization_raises_loss(model, (x, raw))
    assert result.status == "pass", result.message
    assert result.details["loss_none"] > 1e4
    assert 0 < result.details["penalty_configured"] < 1e-6 * result.details["loss_none"] * 10


# ---- multi-label: independent sigmoids, several labels on per example


def test_multilabel_classifier_passes_initial_loss_and_memorises(digits):
    x, labels = digits
    y = multi_hot(labels)
    model = compiled(mlp(64, 5, "sigmoid"), "binary_crossentropy")
    initial = check_initial_loss(model, (x, y))
    assert initial.status == "pass", initial.message
    assert initial.expected == pytest.approx(np.log(2.0))
    result = overfit_small_subset(model, (x, y))
    assert result.status == "pass", result.message
    assert "exact match" in result.message
    (per_output,) = result.details["outputs"].values()
    assert per_output["label_accuracy"] == 1.0


def test_multilabel_with_sigmoid_applied_twice_cannot_memorise(digits):
    x, labels = digits
    base = mlp(64, 5, "sigmoid")
    twice = keras.Model(base.input, keras.layers.Activation("sigmoid")(base.output))
    result = overfit_small_subset(compiled(twice, "binary_crossentropy"), (x, multi_hot(labels)))
    assert result.status == "fail", result.message


# ---- several outputs: a list or dict of losses with loss_weights


def two_outputs():
    keras.utils.set_random_seed(0)
    x = keras.Input((64,))
    h = keras.layers.Dense(32, "relu")(x)
    return keras.Model(
        x, [keras.layers.Dense(10, name="digit")(h), keras.layers.Dense(1, name="ink")(h)]
    )


def test_a_list_of_losses_is_judged_output_by_output(digits):
    x, labels = digits
    ink = x.mean(axis=1)
    ink = (ink - ink.mean()) / ink.std()  # a real-valued target: how much ink the digit has
    model = compiled(
        two_outputs(),
        [keras.losses.SparseCategoricalCrossentropy(from_logits=True), "mse"],
        loss_weights=[1.0, 0.5],
    )
    result = check_initial_loss(model, (x, [labels, ink]))
    assert result.status == "pass", result.message
    per = result.details["outputs"]
    assert per["digit"]["expected"] == pytest.approx(np.log(10))
    assert per["ink"]["status"] == "pass"
    assert result.expected == pytest.approx(np.log(10) + 0.5 * per["ink"]["expected"])
    assert overfit_small_subset(model, (x, [labels, ink])).status == "pass"


def test_a_dict_of_losses_with_an_unknown_loss_skips_that_output(digits):
    x, labels = digits
    model = compiled(
        two_outputs(),
        {"digit": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
         "ink": keras.losses.KLDivergence()},
    )  # fmt: skip
    ink = x.mean(axis=1, keepdims=True)
    result = check_initial_loss(model, (x, {"digit": labels, "ink": ink}))
    assert result.status == "pass", result.message
    assert result.details["outputs"]["ink"]["status"] == "skip"


# ---- label smoothing in the public function


def test_label_smoothing_floor_is_not_read_as_could_not_memorise(digits):
    x, labels = digits
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    model = compiled(mlp(64, 10), loss)
    result = overfit_small_subset(model, (x, np.eye(10, dtype="float32")[labels]))
    assert result.status == "pass", result.message
    assert result.value > 0.45  # trained with smoothing on: above the 0.50 floor's reach
    assert "label smoothing 0.1" in result.message


# ---- a failure shows why


def test_a_failure_at_the_expected_value_says_why_in_its_numbers(digits):
    x, labels = digits
    # a softmax output under a loss that applies softmax again (a focal loss from logits)
    twice = keras.losses.CategoricalFocalCrossentropy(from_logits=True)
    model = compiled(mlp(64, 10, "softmax"), twice)
    result = check_initial_loss(model, (x, np.eye(10)[labels]))
    assert result.status == "fail"
    assert (
        "accepted" in result.message and ", but the model's outputs are already" in result.message
    )


# ---- input dependence and the learning-rate range test on every task


def test_a_regression_model_uses_its_input_by_the_paired_loss_test(diabetes):
    x, y = diabetes
    result = check_input_dependence(compiled(mlp(10, 1), "mse"), (x, y))
    assert result.status == "pass", result.message
    assert result.details["accuracy_z"] is None and result.details["loss_z"] > 3


def test_a_regression_model_that_ignores_its_input_is_named(diabetes):
    x, y = diabetes
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    deaf = keras.layers.Lambda(lambda t: 0.0 * t)(inputs)
    hidden = keras.layers.Dense(32, "relu")(deaf)
    model = compiled(keras.Model(inputs, keras.layers.Dense(1)(hidden)), "mse")
    result = check_input_dependence(model, (x, y))
    assert result.status == "fail", result.message


def test_several_outputs_get_an_input_check_and_a_learning_rate(digits):
    x, labels = digits
    ink = x.mean(axis=1)
    ink = (ink - ink.mean()) / ink.std()
    model = compiled(
        two_outputs(),
        {"digit": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "ink": "mse"},
    )
    result = check_input_dependence(model, (x, {"digit": labels, "ink": ink}))
    assert result.status == "pass", result.message
    found = find_learning_rate(model, x, {"digit": labels, "ink": ink})
    assert found.suggestion is not None and 1e-4 < found.suggestion < 1.0


def test_the_console_table_shows_the_accepted_range(digits):
    from kerasdiag.checks.sanity.stages import format_table

    x, labels = digits
    twice = keras.losses.CategoricalFocalCrossentropy(from_logits=True)
    model = compiled(mlp(64, 10, "softmax"), twice)
    result = check_initial_loss(model, (x, np.eye(10)[labels]))
    row = next(line for line in format_table([result]).splitlines() if "initial_loss" in line)
    expected = 0.25 * 0.9**2 * np.log(10)  # alpha (1 - 1/C)^gamma ln C, Keras' defaults
    low, high = 0.75 * expected, 1.25 * expected
    assert "FAIL" in row and f"[{low:.4g}..{high:.4g}]" in row, row
