"""The three checks on real data: healthy models pass, planted faults fail the right check."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pytest
import sanity_helpers as h

from kerasdiag.checks.sanity import (
    check_initial_loss,
    check_regularization_raises_loss,
    overfit_small_subset,
)
from kerasdiag.checks.sanity import outputs as outputs_io
from kerasdiag.modeling.losses import MulticlassHinge, SparseCategoricalFocalLoss


@pytest.fixture(scope="module")
def digits():
    return h.digits()


@pytest.fixture(scope="module")
def cifar():
    return h.cifar(limit=600)


def unchanged_after(check, model, *args, **kwargs):
    """Run ``check`` and assert it left the model's weights and optimizer untouched."""
    before = [w.copy() for w in model.get_weights()]
    result = check(model, *args, **kwargs)
    assert h.weights_equal(before, model.get_weights())
    assert int(model.optimizer.iterations) == 0 and not model.optimizer.built
    return result


# ---- healthy models pass


def test_healthy_mlp_passes_all_three(digits):
    model = h.compiled(h.mlp(digits, l2=1e-3, dropout=0.3), h.logits_ce())
    init = unchanged_after(check_initial_loss, model, digits)
    assert init.passed, init.message
    assert init.expected == pytest.approx(math.log(10))
    assert abs(init.value - math.log(10)) < 0.1
    reg = unchanged_after(check_regularization_raises_loss, model, digits)
    assert reg.passed, reg.message
    d = reg.details
    assert d["loss_none"] < d["loss_configured"] < d["loss_stronger"]
    # L2 is quadratic in its strength and the data loss is shared: x10 gives 10x the penalty.
    assert d["penalty_stronger"] == pytest.approx(10 * d["penalty_configured"], rel=1e-4)
    assert d["penalty_none"] == 0.0
    fit = unchanged_after(overfit_small_subset, model, digits, num_examples=20, max_steps=300)
    assert fit.passed, fit.message
    assert fit.details["accuracy"] == 1.0 and fit.value <= fit.expected
    assert 0 < fit.details["steps"] < 300 and f"in {fit.details['steps']} steps" in fit.message


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        (MulticlassHinge(margin=1.0), 9.0),
        (SparseCategoricalFocalLoss(gamma=2.0), 0.81 * math.log(10)),
    ],
    ids=["svm", "focal"],
)
def test_convnet_with_kerasdiag_losses_passes(cifar, loss, expected):
    model = h.compiled(h.convnet(cifar, batch_norm=True), loss)
    init = unchanged_after(check_initial_loss, model, cifar)
    assert init.passed, init.message
    assert init.expected == pytest.approx(expected)
    fit = unchanged_after(overfit_small_subset, model, cifar, max_steps=150)
    assert fit.passed, fit.message


# ---- initial loss: planted faults


def test_unnormalised_inputs_fail_initial_loss(digits):
    model = h.compiled(h.mlp(digits), h.logits_ce())
    raw = h.with_inputs(digits, digits.x_train * 255)
    result = check_initial_loss(model, raw)
    assert result.passed is False
    assert result.value > 10 * result.expected
    assert "not normalised" in result.message
    assert check_initial_loss(model, digits).passed  # the same model on normalised inputs


def test_far_too_large_init_fails_initial_loss(digits):
    big = keras.initializers.RandomNormal(stddev=1.0)
    model = h.compiled(h.mlp(digits, hidden_init=big, output_init=big), h.logits_ce())
    result = check_initial_loss(model, digits)
    assert result.passed is False and result.value > 3 * result.expected
    assert "initialised too large" in result.message


def test_softmax_output_with_from_logits_true_fails_initial_loss_where_it_applies_twice(digits):
    # A focal loss applies softmax itself: softmax in the model and again in the loss, the
    # value alone looks fine (near its expected value).
    twice = h.compiled(
        h.mlp(digits, output_activation="softmax"),
        keras.losses.CategoricalFocalCrossentropy(from_logits=True),
    )
    onehot = dataclasses.replace(digits, y_train=np.eye(10)[digits.y_train])
    result = check_initial_loss(twice, onehot)
    assert result.passed is False
    assert "from_logits=True" in result.message and "twice" in result.message
    # Keras' plain cross-entropy takes the logits back from its softmax: fit minimises the
    # right loss (and Keras warns), so the check scores what fit scores, and passes.
    model = h.compiled(h.mlp(digits, output_activation="softmax"), h.logits_ce())
    result = check_initial_loss(model, digits)
    assert result.passed, result.message
    x, y = digits.x_train[:256], digits.y_train[:256]
    fitted = h.compiled(h.mlp(digits), h.logits_ce())  # the same seeded weights, logits out
    fitted.set_weights(model.get_weights())
    assert float(model.evaluate(x, y, verbose=0)) == pytest.approx(
        float(fitted.evaluate(x, y, verbose=0)), rel=1e-5
    )


def test_logits_with_from_logits_false_fails_initial_loss(digits):
    model = h.compiled(h.mlp(digits), "sparse_categorical_crossentropy")
    result = check_initial_loss(model, digits)
    assert result.passed is False
    assert "from_logits=False" in result.message and "from_logits=True" in result.message


def test_class_count_mismatch_fails_initial_loss(digits):
    five = dataclasses.replace(digits, num_classes=5)
    model = h.compiled(h.mlp(five), h.logits_ce())
    result = check_initial_loss(model, digits)
    assert result.passed is False and "5 outputs but the data has 10 classes" in result.message


# ---- regularization: planted fault and the copy mechanics


def test_regularization_wired_to_nothing_fails(digits):
    # The "regularized" builds forgot to attach the regularizer: same loss at every strength.
    model = h.compiled(h.mlp(digits), h.logits_ce())
    result = check_regularization_raises_loss(
        model,
        digits,
        unregularized=h.compiled(h.mlp(digits), h.logits_ce()),
        stronger=h.compiled(h.mlp(digits), h.logits_ce()),
    )
    assert result.passed is False and "does not rise" in result.message
    # Built correctly, the same comparison passes.
    wired = h.compiled(h.mlp(digits, l2=1e-3), h.logits_ce())
    result = check_regularization_raises_loss(
        wired,
        digits,
        unregularized=h.compiled(h.mlp(digits, l2=0.0, seed=1), h.logits_ce()),
        stronger=h.compiled(h.mlp(digits, l2=1e-2, seed=2), h.logits_ce()),
    )
    assert result.passed, result.message
    # Other seeds, same weights: the builds received the model's weights.
    d = result.details
    assert d["loss_none"] == pytest.approx(d["loss_configured"] - d["penalty_configured"])


def test_unregularized_model_is_skipped_not_passed(digits):
    model = h.compiled(h.mlp(digits), h.logits_ce())
    result = check_regularization_raises_loss(model, digits)
    assert result.passed is None and result.status == "skip"


# ---- overfit: planted faults


def test_frozen_layers_fail_overfit(digits):
    model = h.mlp(digits)
    for layer in model.layers:
        layer.trainable = False
    model = h.compiled(model, h.logits_ce())
    result = overfit_small_subset(model, digits)
    assert result.passed is False and "frozen" in result.message


def test_shuffled_labels_on_a_model_without_capacity_fail_overfit(cifar):
    # Average colour per channel -> 10 classes: 4 numbers cannot separate 20 random labels.
    keras.utils.set_random_seed(0)
    tiny = keras.Sequential(
        [keras.Input(cifar.input_shape), keras.layers.GlobalAveragePooling2D(),
         keras.layers.Dense(10)]
    )  # fmt: skip
    tiny.compile(keras.optimizers.Adam(1e-2), h.logits_ce())
    rng = np.random.default_rng(1)
    shuffled = dataclasses.replace(cifar, y_train=rng.permutation(cifar.y_train))
    result = overfit_small_subset(tiny, shuffled, max_steps=200)
    assert result.passed is False
    assert result.details["accuracy"] < 1.0 and result.value > result.expected
    assert "could not memorise 20 examples in 200 steps" in result.message


def test_softmax_behind_a_float32_cast_with_from_logits_true_still_fails(digits):
    """Mixed precision ends a model with Activation("linear", dtype="float32"): the cast hands
    the loss a new tensor without the softmax's logits, so from_logits=True applies softmax
    twice (fit's loss stalls: 2.19 -> 1.57 in 5 epochs on digits, 1.77 -> 0.22 from logits)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(digits.input_shape)
    hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
    probs = keras.layers.Dense(10, activation="softmax", dtype="mixed_float16")(hidden)
    cast = keras.layers.Activation("linear", dtype="float32")(probs)
    model = h.compiled(keras.Model(inputs, cast), h.logits_ce())
    assert outputs_io.output_activation(model) == "softmax"  # probabilities...
    assert outputs_io.logits_kept(model) is None  # ...whose logits the loss never sees
    result = check_initial_loss(model, digits)
    assert result.passed is False and "twice" in result.message


def test_softmax_applied_twice_inside_the_model_fails_overfit(digits):
    # Two softmaxes in the model: the initial loss is still ~ln 10, but p <= e/(e+9) < 0.24.
    model = h.mlp(digits, output_activation="softmax")
    twice = keras.Model(model.inputs[0], keras.layers.Softmax()(model.outputs[0]))
    twice = h.compiled(twice, "sparse_categorical_crossentropy", keras.optimizers.Adam(1e-2))
    assert check_initial_loss(twice, digits).passed
    result = overfit_small_subset(twice, digits, max_steps=150)
    assert result.passed is False
    assert result.value > -math.log(math.e / (math.e + 9))


def test_overfit_validates_arguments(digits):
    model = h.compiled(h.mlp(digits), h.logits_ce())
    with pytest.raises(ValueError, match="num_examples"):
        overfit_small_subset(model, digits, num_examples=0)
    with pytest.raises(ValueError, match="loss_fraction"):
        overfit_small_subset(model, digits, loss_fraction=1.5)


def test_small_logits_all_in_0_1_are_not_read_as_probabilities(digits):
    """A binary classifier whose small-initialised logit layer gives only positive outputs
    below 1 (ReLU features, a positive kernel): its outputs look like probabilities, and the
    check once said 'sigmoid applied twice' (a test of it failed at random, by the unseeded
    initializer's draw). The output layer is linear: logits, whatever their range; the same
    outputs behind a sigmoid are still refused."""
    zeros = dataclasses.replace(
        digits, y_train=(digits.y_train == 0).astype(np.int64), num_classes=2
    )
    keras.utils.set_random_seed(0)
    positive = keras.initializers.RandomUniform(0.0, 1e-3, seed=0)
    model = keras.Sequential(
        [keras.Input(digits.input_shape), keras.layers.Flatten(),
         keras.layers.Dense(32, "relu", kernel_initializer="he_normal"),
         keras.layers.Dense(1, kernel_initializer=positive,
                            bias_initializer=keras.initializers.Constant(0.5))]
    )  # fmt: skip
    model = h.compiled(model, keras.losses.BinaryCrossentropy(from_logits=True))
    logits = model.predict(zeros.x_train, verbose=0)
    assert 0 < logits.min() and logits.max() < 1  # all within (0, 1), as probabilities are
    assert outputs_io.output_activation(model) == "linear"
    result = check_initial_loss(model, zeros)
    assert "already probabilities" not in result.message, result.message
    # a sigmoid after them, under a loss that applies sigmoid again (a focal one: Keras' plain
    # binary cross-entropy would take the logits back from the sigmoid)
    twice = keras.Sequential([*model.layers, keras.layers.Activation("sigmoid")])
    twice = h.compiled(twice, keras.losses.BinaryFocalCrossentropy(from_logits=True))
    refused = check_initial_loss(twice, zeros)
    assert refused.passed is False and "from_logits" in refused.message


def test_output_activation_sees_through_a_float32_cast():
    """Mixed precision ends a model with Activation("linear", dtype="float32"): the layer
    before it says whether the outputs are probabilities."""
    inputs = keras.Input((8,))
    probs = keras.layers.Dense(4, activation="softmax")(inputs)
    cast = keras.layers.Activation("linear", dtype="float32")(probs)
    assert outputs_io.output_activation(keras.Model(inputs, cast)) == "softmax"
    logits = keras.layers.Activation("linear", dtype="float32")(keras.layers.Dense(4)(inputs))
    assert outputs_io.output_activation(keras.Model(inputs, logits)) == "linear"
    subclassed = type("Net", (keras.Model,), {"call": lambda self, x: x})()
    assert outputs_io.output_activation(subclassed) is None  # the numbers decide


def test_binary_classifier_on_imbalanced_labels(digits):
    # "Is it a zero?": 10% positives, yet the initial loss is ln 2.
    zeros = dataclasses.replace(
        digits, y_train=(digits.y_train == 0).astype(np.int64), num_classes=2
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input(digits.input_shape), keras.layers.Flatten(),
         keras.layers.Dense(32, "relu", kernel_initializer="he_normal"),
         keras.layers.Dense(1, kernel_initializer=h.SMALL_OUTPUT_INIT)]
    )  # fmt: skip
    model = h.compiled(model, keras.losses.BinaryCrossentropy(from_logits=True))
    init = check_initial_loss(model, zeros)
    assert init.passed, init.message
    assert init.expected == pytest.approx(math.log(2))
    fit = overfit_small_subset(model, zeros)
    assert fit.passed, fit.message
    sigmoid_twice = keras.Sequential([*model.layers, keras.layers.Activation("sigmoid")])
    sigmoid_twice = h.compiled(sigmoid_twice, keras.losses.BinaryCrossentropy(from_logits=True))
    result = check_initial_loss(sigmoid_twice, zeros)
    assert result.passed is False and "from_logits=True" in result.message
