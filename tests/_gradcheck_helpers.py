"""Layers and a loss with planted gradient bugs (tf.custom_gradient), and real test data.

Each planted component computes the right forward pass; only its hand-written gradient is
wrong, in one of four ways (BUGS). ``bug=None`` gives the correct gradient, so the same
classes double as healthy custom layers.
"""

from __future__ import annotations

from functools import lru_cache

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.data.cifar import read_batch

from conftest import CIFAR_SAMPLE

CIFAR_BATCH = CIFAR_SAMPLE / "data_batch_1"
# scaled: x1.1; sign_flip: every other entry negated; transposed: axes swapped;
# no_bias: bias gradient missing (for the loss: the label term of the gradient missing).
BUGS = ("scaled", "sign_flip", "transposed", "no_bias")


def plant(grad: tf.Tensor, bug: str | None, transpose) -> tf.Tensor:
    """``grad`` with ``bug`` planted (``transpose`` says how this tensor is transposed)."""
    if bug == "scaled":
        return grad * 1.1
    if bug == "sign_flip":
        n = tf.size(grad)
        sign = tf.where(tf.range(n) % 2 == 0, -1.0, 1.0)
        return grad * tf.reshape(tf.cast(sign, grad.dtype), tf.shape(grad))
    if bug == "transposed":
        return transpose(grad)
    return grad


class PlantedDense(keras.layers.Layer):
    """``activation(x @ kernel + bias)`` with a hand-written (optionally buggy) gradient."""

    def __init__(self, units: int, bug: str | None = None, activation: str = "tanh", **kwargs):
        super().__init__(**kwargs)
        self.units, self.bug, self.activation = units, bug, activation

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="random_normal", name="bias")

    def call(self, x):
        bug = self.bug

        @tf.custom_gradient
        def dense(x, kernel, bias):
            def grad(dy):
                dk = plant(tf.transpose(x) @ dy, bug, tf.transpose)
                db = tf.zeros_like(bias) if bug == "no_bias" else tf.reduce_sum(dy, axis=0)
                return dy @ tf.transpose(kernel), dk, db

            return x @ kernel + bias, grad

        out = dense(x, tf.convert_to_tensor(self.kernel), tf.convert_to_tensor(self.bias))
        return keras.activations.get(self.activation)(out)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "bug": self.bug,
            "activation": self.activation,
        }


class PlantedConv2D(keras.layers.Layer):
    """A 'same' 3x3 convolution with a hand-written (optionally buggy) gradient."""

    def __init__(self, filters: int, bug: str | None = None, activation: str = "tanh", **kwargs):
        super().__init__(**kwargs)
        self.filters, self.bug, self.activation = filters, bug, activation

    def build(self, input_shape):
        shape = (3, 3, input_shape[-1], self.filters)
        self.kernel = self.add_weight(shape=shape, name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="random_normal", name="bias")

    def call(self, x):
        bug = self.bug

        @tf.custom_gradient
        def conv(x, kernel, bias):
            def grad(dy):
                dx = tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
                    strides=[1, 1, 1, 1], padding="SAME",
                )  # fmt: skip
                dk = tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=tf.shape(kernel), out_backprop=dy,
                    strides=[1, 1, 1, 1], padding="SAME",
                )  # fmt: skip
                dk = plant(dk, bug, lambda g: tf.transpose(g, [1, 0, 2, 3]))
                db = tf.zeros_like(bias) if bug == "no_bias" else tf.reduce_sum(dy, axis=[0, 1, 2])
                return dx, dk, db

            return tf.nn.conv2d(x, kernel, 1, "SAME") + bias, grad

        out = conv(x, tf.convert_to_tensor(self.kernel), tf.convert_to_tensor(self.bias))
        return keras.activations.get(self.activation)(out)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "bug": self.bug,
            "activation": self.activation,
        }


class PlantedCrossEntropy(keras.losses.Loss):
    """Softmax cross-entropy on logits with a hand-written (optionally buggy) gradient."""

    def __init__(self, bug: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.bug = bug

    def call(self, y_true, logits):
        bug = self.bug
        labels = tf.one_hot(
            tf.cast(tf.reshape(y_true, [-1]), tf.int32), tf.shape(logits)[-1], dtype=logits.dtype
        )

        @tf.custom_gradient
        def cross_entropy(z):
            def grad(dl):
                g = tf.nn.softmax(z) - (0.0 if bug == "no_bias" else labels)
                # "transposed": the (N, C) gradient laid out as (C, N), a classic axis mix-up
                g = plant(g, bug, lambda t: tf.reshape(tf.transpose(t), tf.shape(t)))
                return dl[:, None] * g

            return -tf.reduce_sum(labels * tf.nn.log_softmax(z), axis=-1), grad

        return cross_entropy(logits)

    def get_config(self):
        return {**super().get_config(), "bug": self.bug}


LOGITS_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def sequential(layers: list, loss=LOGITS_CE, seed: int = 0) -> keras.Sequential:
    """A compiled Sequential model, its weights drawn from ``seed``."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(layers)
    model.compile(loss=loss)
    return model


def planted_dense_model(bug: str | None = None, loss=LOGITS_CE) -> keras.Sequential:
    """Dense(tanh) - PlantedDense(16, bug) - logits, on the 64 digits features."""
    layers = [keras.layers.Dense(16, activation="tanh"), PlantedDense(16, bug=bug)]
    # square planted kernel, so a transposed gradient fits
    return sequential([keras.Input((64,)), *layers, keras.layers.Dense(10)], loss)


def relu_convnet(*extra: keras.layers.Layer) -> keras.Sequential:
    """Conv(relu) - max-pool - ``extra`` - flatten - L2-regularized logits, on 8x8x3 crops."""
    return sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            *extra,
            keras.layers.Flatten(),
            keras.layers.Dense(10, kernel_regularizer=keras.regularizers.L2(1e-3)),
        ]
    )


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits, standardised: (1797, 64) float32 and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data - d.data.mean(0)) / (d.data.std(0) + 1e-8)
    return x.astype("float32"), d.target.astype("int64")


@lru_cache(maxsize=1)
def cifar(size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Real CIFAR-10 sample images, centre ``size`` x ``size`` crop, standardised."""
    images, labels = read_batch(CIFAR_BATCH)
    images = images[:64].astype("float32") / 255.0
    lo = (32 - size) // 2
    crop = images[:, lo : lo + size, lo : lo + size, :]
    return (crop - crop.mean()) / crop.std(), labels[:64]
