"""Any model a user can fit can be checked: a Python-lambda ``Lambda`` layer, a custom layer
that holds a Python callable and has no ``get_config``, a subclassed model. The checks that
train get a verdict (never "cannot copy model") and leave the model as it was: every
variable (weights, seed states) and its optimizer untouched."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from kerasdiag import check_gradients, check_gradients_fast, find_learning_rate
from kerasdiag.checks.sanity import _common as common
from kerasdiag.checks.sanity import (
    check_input_dependence,
    check_regularization_raises_loss,
    overfit_small_subset,
)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.data / 16.0).astype("float32"), d.target


class Apply(keras.layers.Layer):
    """Applies a Python function given at construction; no get_config (cannot be rebuilt)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def call(self, x):
        return self.fn(x)


class TwoLayer(keras.Model):
    """A subclassed model whose constructor takes a Python callable."""

    def __init__(self, squash):
        super().__init__()
        self.squash = squash
        self.hidden = keras.layers.Dense(32, "relu")
        self.drop = keras.layers.Dropout(0.2)
        self.out = keras.layers.Dense(10)

    def call(self, x, training=False):
        return self.out(self.drop(self.hidden(self.squash(x)), training=training))


def compiled(model):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def lambda_model():
    keras.utils.set_random_seed(0)
    x = keras.Input((64,))
    h = keras.layers.Dense(32, "relu")(keras.layers.Lambda(lambda t: 2.0 * t)(x))
    return compiled(keras.Model(x, keras.layers.Dense(10)(h)))


def custom_layer_model():
    keras.utils.set_random_seed(0)
    x = keras.Input((64,))
    h = keras.layers.Dense(32, "relu")(Apply(lambda t: 2.0 * t)(x))
    return compiled(keras.Model(x, keras.layers.Dense(10)(h)))


def subclassed_model():
    keras.utils.set_random_seed(0)
    return compiled(TwoLayer(lambda t: 2.0 * t))


def test_a_lambda_layer_is_copied_around_the_same_function():
    model = lambda_model()
    clone = common.copy_model(model)
    (original,) = [layer for layer in model.layers if isinstance(layer, keras.layers.Lambda)]
    (copied,) = [layer for layer in clone.layers if isinstance(layer, keras.layers.Lambda)]
    assert copied is not original and copied.function is original.function


@pytest.mark.parametrize("build", [custom_layer_model, subclassed_model])
def test_models_that_cannot_be_rebuilt_are_recognised(build, digits):
    model = build()
    model(digits[0][:1])
    with pytest.raises(common.CannotCopy):
        common.copy_model(model)


@pytest.mark.parametrize("build", [lambda_model, custom_layer_model, subclassed_model])
def test_training_checks_give_a_verdict_and_leave_the_model_as_it_was(build, digits):
    x, y = digits
    model = build()
    model(x[:1])
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.variables]
    overfit = overfit_small_subset(model, (x, y))
    assert overfit.status == "pass", overfit.message
    baseline = check_input_dependence(model, (x, y), steps=30)
    assert baseline.status == "pass", baseline.message
    lr = find_learning_rate(model, x, y, max_steps=30)
    assert lr.suggestion is not None and lr.suggestion > 0
    after = [keras.ops.convert_to_numpy(v) for v in model.variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert not model.optimizer.built  # the checks train with optimizers of their own


def test_regularization_check_scales_an_uncopyable_model_in_place_and_puts_it_back(digits):
    x, y = digits
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    l2 = keras.regularizers.L2(1e-3)
    hidden = keras.layers.Dense(32, "relu", kernel_regularizer=l2)(Apply(lambda t: t)(inputs))
    model = compiled(keras.Model(inputs, keras.layers.Dense(10)(hidden)))
    with pytest.raises(common.CannotCopy):
        common.copy_model(model)
    result = check_regularization_raises_loss(model, (x, y))
    assert result.status == "pass", result.message
    (kernel,) = [v for v in model.weights if getattr(v, "regularizer", None) is not None]
    assert kernel.regularizer is l2  # the model's own regularizer is back


@pytest.mark.parametrize("build", [lambda_model, custom_layer_model, subclassed_model])
def test_the_gradient_checks_give_a_verdict_and_leave_the_model_as_it_was(build, digits):
    # a float64 copy is what makes finite differences trustworthy: a model that cannot be
    # rebuilt from its config is turned float64 in place and put back
    x, y = digits
    model = build()
    model(x[:1])
    before = [(v, v.dtype, keras.ops.convert_to_numpy(v).copy()) for v in model.variables]
    assert check_gradients(model, x[:8], y[:8]).status == "passed"
    assert check_gradients_fast(model, x[:8], y[:8]).status == "passed"
    for v, dtype, value in before:
        assert v.dtype == dtype and np.array_equal(keras.ops.convert_to_numpy(v), value)
    assert all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers())


@pytest.mark.parametrize("wrap", ["lambda", "custom_layer"])
def test_a_planted_gradient_bug_is_caught_in_a_model_that_cannot_be_cloned(wrap, digits):
    x, y = digits

    def scaled(scale):
        @tf.custom_gradient
        def f(t):
            return tf.identity(t), lambda g: scale * g

        return f

    def build(scale):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((64,))
        hidden = keras.layers.Dense(16, "tanh")(inputs)
        layer = keras.layers.Lambda if wrap == "lambda" else Apply
        hidden = layer(lambda t: scaled(scale)(t))(hidden)
        out = keras.layers.Dense(10)(keras.layers.Dense(16, "tanh")(hidden))
        return compiled(keras.Model(inputs, out))

    for scale, status in ((1.0, "passed"), (1.1, "failed")):
        assert check_gradients(build(scale), x[:8], y[:8]).status == status, scale
        assert check_gradients_fast(build(scale), x[:8], y[:8]).status == status, scale
