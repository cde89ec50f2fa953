"""Real data and small plain-Keras models for the sanity-stage tests."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from kerasdiag.config import load_config
from kerasdiag.data import Dataset, load_dataset

from conftest import CIFAR_SAMPLE

# Glorot uniform with a tenth of the std: near-uniform outputs at initialisation.
SMALL_OUTPUT_INIT = keras.initializers.VarianceScaling(0.01, "fan_avg", "uniform")


def digits() -> Dataset:
    """scikit-learn's 8x8 digits, split and normalised by kerasdiag's loader."""
    return load_dataset(load_config(["recipe=digits_softmax"]).data)


def cifar(limit: int = 1000) -> Dataset:
    """The real CIFAR-10 sample, ``limit`` training images, per-channel normalised."""
    overrides = ["recipe=cifar_softmax", f"data.path={CIFAR_SAMPLE}", f"data.limit={limit}"]
    return load_dataset(load_config(overrides).data)


def with_inputs(data: Dataset, x_train: np.ndarray) -> Dataset:
    return dataclasses.replace(data, x_train=x_train.astype(np.float32))


def mlp(
    data: Dataset,
    *,
    hidden: tuple[int, ...] = (64,),
    output_activation: str | None = None,
    output_init=SMALL_OUTPUT_INIT,
    hidden_init="he_normal",
    l2: float = 0.0,
    dropout: float = 0.0,
    seed: int = 0,
) -> keras.Model:
    """Flatten -> Dense(relu) blocks -> Dense(num_classes), like recipes.models.mlp."""
    keras.utils.set_random_seed(seed)
    reg = keras.regularizers.L2(l2) if l2 else None
    x = inputs = keras.Input(data.input_shape)
    x = keras.layers.Flatten()(x)
    for units in hidden:
        x = keras.layers.Dense(
            units, "relu", kernel_initializer=hidden_init, kernel_regularizer=reg
        )(x)
        if dropout:
            x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(
        data.num_classes,
        output_activation,
        kernel_initializer=output_init,
        kernel_regularizer=reg,
    )(x)
    return keras.Model(inputs, outputs)


def convnet(data: Dataset, *, batch_norm: bool = False, seed: int = 0) -> keras.Model:
    """conv16-pool-conv32-pool-dense64-logits: the cifar recipe's shape, smaller."""
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input(data.input_shape)
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, "relu", kernel_initializer="he_normal")(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(data.num_classes, kernel_initializer=SMALL_OUTPUT_INIT)(x)
    return keras.Model(inputs, outputs)


def compiled(model: keras.Model, loss, optimizer=None) -> keras.Model:
    model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3), loss=loss)
    return model


def logits_ce() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def weights_equal(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
