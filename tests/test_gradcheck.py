"""check_gradients: planted gradient bugs are caught, healthy models pass."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from _gradcheck_helpers import (
    BUGS,
    LOGITS_CE,
    PlantedConv2D,
    PlantedCrossEntropy,
    cifar,
    digits,
    planted_dense_model,
    relu_convnet,
    sequential,
)

import kerasdiag
from kerasdiag.checks.gradcheck import check_gradients
from kerasdiag.checks.gradcheck.clone import clone_float64, float64_loss
from kerasdiag.checks.gradcheck.objective import ModelObjective
from kerasdiag.modeling.losses import MulticlassHinge


def planted_conv_model(bug=None):
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="tanh")
    layers = [conv, PlantedConv2D(4, bug=bug), keras.layers.Flatten(), keras.layers.Dense(10)]
    return sequential([keras.Input((8, 8, 3)), *layers])


PLANTED_LAYER_MODELS = {
    "dense": (planted_dense_model, digits),
    "conv2d": (planted_conv_model, cifar),
}


def failing_names(report):
    return {r.name for r in report.failing}


@pytest.mark.parametrize("bug", BUGS)
@pytest.mark.parametrize("kind", sorted(PLANTED_LAYER_MODELS))
def test_planted_bug_in_custom_layer_is_caught(kind, bug):
    build, data = PLANTED_LAYER_MODELS[kind]
    x, y = data()
    model = build(bug)
    report = check_gradients(model, x, y)
    assert not report.passed
    planted = model.layers[1]
    broken = planted.bias if bug == "no_bias" else planted.kernel
    assert failing_names(report) == {broken.path}
    assert all(r.verdict == "fail" for r in report.failing)
    # every other variable, upstream and downstream of the bug, still checks out
    assert {r.verdict for r in report.rows if r not in report.failing} == {"ok"}


@pytest.mark.parametrize("bug", BUGS)
def test_planted_bug_in_custom_loss_is_caught(bug):
    x, y = digits()
    report = check_gradients(planted_dense_model(loss=PlantedCrossEntropy(bug)), x, y)
    assert not report.passed
    # the loss gradient feeds every weight: every variable fails, and every failure is large
    assert len(report.failing) == len(report.rows)
    assert report.max_relative_error > 1e-2


def test_healthy_custom_layers_and_loss_pass():
    x, y = digits()
    report = check_gradients(planted_dense_model(None, PlantedCrossEntropy(None)), x, y)
    assert report.passed, str(report)
    assert report.max_relative_error <= 1e-7


def test_deep_tanh_mlp_passes_at_1e_7_with_depth_note():
    x, y = digits()
    layers = [keras.layers.Dense(32, activation="tanh") for _ in range(6)]
    model = sequential([keras.Input((64,)), *layers, keras.layers.Dense(10)], seed=1)
    report = check_gradients(model, x, y)
    assert report.passed, str(report)
    assert report.max_relative_error <= 1e-7
    assert report.depth == 7
    # every variable, biases included, got its dims
    assert len(report.rows) == 14 and all(r.dims == 8 for r in report.rows)
    assert report.tolerance == pytest.approx(1e-7 * 7 / 4)
    assert "depth 7" in report.notes[0]
    # centered differences: the raw values reproduce the numeric derivative
    a = report.elements[0].attempts[0]
    assert a.numeric == pytest.approx((a.f_plus - a.f_minus) / (2 * a.h), rel=1e-12)


def test_relu_maxpool_convnet_labels_kinks_instead_of_failing():
    x, y = cifar()
    model = relu_convnet(keras.layers.Flatten(), keras.layers.Dense(8, activation="relu"))
    # Put hidden unit 0 exactly on its ReLU kink for every example (zero weights and bias):
    # moving its bias by +-h, at any h, lands on both sides of it.
    hidden = model.layers[3]
    kernel, bias = hidden.kernel.numpy(), hidden.bias.numpy()
    kernel[:, 0], bias[0] = 0.0, 0.0
    hidden.kernel.assign(kernel)
    hidden.bias.assign(bias)
    report = check_gradients(model, x, y)
    assert report.passed, str(report)
    assert set(report.kink_types) == {"MaxPool", "Relu"}
    kink = next(e for e in report.elements if e.variable == hidden.bias.path and e.index == (0,))
    assert kink.verdict == "kink"
    # every step size crossed it (retried at 1e-4 and 1e-6, then at the smaller kink
    # steps 1e-7 and 1e-8, all reported) ...
    steps = [a.h for a in kink.attempts]
    assert steps == [1e-5, 1e-4, 1e-6, 1e-7, 1e-8] and all(a.kink for a in kink.attempts)
    # ... and without the label it would be a failure: the error is the kink's, not a bug's
    assert kink.relative_error > 1e-2 and kink.analytic == 0.0
    assert "kink" in str(report)
    # the conv and output layers, away from the kink, check out
    assert all(r.verdict == "ok" for r in report.rows if "conv2d" in r.name)


def test_hinge_loss_on_its_margin_is_a_kink_not_a_failure():
    x, y = digits()
    x, y = x[y == 0][:2], y[y == 0][:2]
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile(loss=MulticlassHinge())
    # zero kernel, score of class 1 exactly one margin below class 0: max(0, s1 - s0 + 1) = 0
    model.layers[0].kernel.assign(np.zeros((64, 10), "float32"))
    model.layers[0].bias.assign(np.array([0, -1] + [0] * 8, "float32"))
    report = check_gradients(model, x, y, dims_per_variable=10)
    assert report.passed, str(report)
    bias_row = next(r for r in report.rows if r.name.endswith("bias"))
    assert bias_row.verdict == "kink"
    # s_0 and s_1 both move the margin of class 1; the other classes are 2 above theirs
    kinks = {
        e.index for e in report.elements if e.verdict == "kink" and e.variable == bias_row.name
    }
    assert kinks == {(0,), (1,)}


def test_dropout_model_checks_off_and_with_a_frozen_seed():
    x, y = digits()
    layers = [keras.layers.Dense(32, activation="tanh"), keras.layers.Dropout(0.5)]
    model = sequential([keras.Input((64,)), *layers, keras.layers.Dense(10)])
    off = check_gradients(model, x, y)
    on = check_gradients(model, x, y, training=True)
    assert off.passed and on.passed, str(on)
    assert on.max_relative_error <= 1e-7
    # dropout really ran in training mode: half the units dropped changes the loss
    assert on.loss["data"] != pytest.approx(off.loss["data"], rel=1e-3)
    assert any("frozen seed" in n for n in on.notes)
    assert any("off (inference mode)" in n for n in off.notes)


class DoubledGradientL2(keras.regularizers.Regularizer):
    """``l2 * sum(w**2)`` whose hand-written gradient is twice too large."""

    def __init__(self, l2=0.01):
        self.l2 = l2

    def __call__(self, w):
        l2 = self.l2

        @tf.custom_gradient
        def penalty(w):
            return l2 * tf.reduce_sum(w * w), lambda dy: dy * 4.0 * l2 * w

        return penalty(w)

    def get_config(self):
        return {"l2": self.l2}


def regularized_model(regularizer):
    hidden = keras.layers.Dense(16, activation="tanh", kernel_regularizer=regularizer)
    logits = keras.layers.Dense(10, kernel_regularizer=regularizer)
    return sequential([keras.Input((64,)), hidden, logits])


def test_l2_regularized_model_reports_data_and_regularization_apart():
    x, y = digits()
    report = check_gradients(regularized_model(keras.regularizers.L2(0.01)), x, y)
    assert report.passed, str(report)
    parts = {(r.part, r.name.rsplit("/", 1)[-1]) for r in report.rows}
    # biases are not regularized: they get data rows only
    assert ("regularization", "kernel") in parts and ("regularization", "bias") not in parts
    assert ("data", "bias") in parts
    assert report.loss["regularization"] > 0
    assert any("checked separately" in n for n in report.notes)


def test_wrong_regularizer_gradient_fails_only_the_regularization_part():
    x, y = digits()
    report = check_gradients(regularized_model(DoubledGradientL2(0.01)), x, y)
    assert not report.passed
    assert {r.part for r in report.failing} == {"regularization"}
    assert all(r.verdict == "ok" for r in report.rows if r.part == "data")


def test_users_float32_model_is_unchanged_after_a_check_with_warmup():
    x, y = digits()
    model = regularized_model(keras.regularizers.L2(0.01))
    model.compile(loss=LOGITS_CE, optimizer=keras.optimizers.SGD(0.1))
    before = [w.copy() for w in model.get_weights()]
    report = check_gradients(model, x[:64], y[:64], warmup_steps=3)
    assert report.passed, str(report)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert {w.dtype for w in model.weights} == {"float32"}
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert keras.config.floatx() == "float32" and keras.config.dtype_policy().name == "float32"
    assert int(model.optimizer.iterations.numpy()) == 0
    # the warm-up trained the copy: the checked loss is lower than at the user's weights
    cold = check_gradients(model, x[:64], y[:64])
    assert report.loss["data"] < cold.loss["data"]


def test_float64_clone_is_float64_throughout_including_the_loss():
    x, y = digits()
    model = planted_dense_model()
    clone = clone_float64(model)
    assert {v.dtype for v in clone.weights} == {"float64"}
    assert {layer.dtype_policy.name for layer in clone.layers} == {"float64"}
    for a, b in zip(model.weights, clone.weights, strict=True):
        np.testing.assert_array_equal(a.numpy().astype("float64"), b.numpy())
    loss = float64_loss(LOGITS_CE)
    assert loss.dtype == "float64" and LOGITS_CE.dtype == "float32"
    objective = ModelObjective.build(model, x, y, samples=2)
    assert objective.gradients()["data"][0].dtype == np.float64


def test_compiled_loss_name_and_report_formats():
    x, y = digits()
    softmax = keras.layers.Dense(10, activation="softmax")
    model = sequential([keras.Input((64,)), softmax], "sparse_categorical_crossentropy")
    report = kerasdiag.check_gradients(model, x, y, samples=3, dims_per_variable=5)
    assert report.passed and report.samples == 3
    assert [r.dims for r in report.rows] == [5, 5]
    d = json.loads(json.dumps(report.to_dict()))
    assert d["passed"] is True and len(d["rows"]) == 2 and len(d["elements"]) == 10
    assert set(d["elements"][0]["attempts"][0]) >= {"h", "f_plus", "f_minus", "numeric"}
    text = str(report)
    assert text.startswith("Gradient check PASSED") and report.rows[0].name in text


def test_tiny_gradients_warn_and_offer_loss_scaling():
    x, y = digits()
    report = check_gradients(planted_dense_model(), x, y, loss_scale=1e-14)
    assert any("loss_scale=" in w for w in report.warnings)
    scaled = check_gradients(planted_dense_model(), x, y, loss_scale=1e4)
    assert not scaled.warnings and scaled.passed


def test_variables_restricts_the_check_and_arguments_are_validated():
    x, y = digits()
    model = planted_dense_model()
    name = model.trainable_variables[1].path
    report = check_gradients(model, x, y, variables=[name])
    assert [r.name for r in report.rows] == [name]
    with pytest.raises(ValueError, match="variables"):
        check_gradients(model, x, y, variables=["nope"])
    with pytest.raises(ValueError, match="samples"):
        check_gradients(model, x, y, samples=0)
    with pytest.raises(ValueError, match="h must"):
        check_gradients(model, x, y, h=0.0)
    with pytest.raises(ValueError, match="loss"):
        check_gradients(keras.Sequential([keras.Input((64,)), keras.layers.Dense(2)]), x, y)


def test_a_loss_that_computes_in_float32_is_refused_not_cast():
    x, y = digits()

    def float32_loss(y_true, y_pred):
        ce = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        return tf.cast(ce, "float32")

    with pytest.raises(ValueError, match="float32 loss"):
        check_gradients(planted_dense_model(), x, y, loss=float32_loss)
