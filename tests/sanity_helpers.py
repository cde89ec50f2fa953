"""Real data and small models for the sanity-stage tests (sklearn digits, the CIFAR-10 sample)."""

from __future__ import annotations

import pickle
from pathlib import Path

import keras
import numpy as np
from sklearn.datasets import load_digits

from kerasdiag.data.dataset import Dataset

CIFAR_DIR = Path("/work/shared/data/cifar10-sample/cifar-10-batches-py")


def _normalised(name, x_train, y_train, x_test, y_test, num_classes, n_val) -> Dataset:
    # Statistics from the training split only (MISSION P7).
    x_train, x_val = x_train[n_val:], x_train[:n_val]
    y_train, y_val = y_train[n_val:], y_train[:n_val]
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0) + 1e-6
    norm = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return Dataset(
        name=name,
        x_train=norm(x_train),
        y_train=y_train.astype(np.int64),
        x_val=norm(x_val),
        y_val=y_val.astype(np.int64),
        x_test=norm(x_test),
        y_test=y_test.astype(np.int64),
        num_classes=num_classes,
        mean=mean,
        std=std,
    )


def digits_dataset() -> Dataset:
    digits = load_digits()
    x = digits.data.astype(np.float64)
    y = digits.target
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return _normalised("digits", x[:1400], y[:1400], x[1400:], y[1400:], 10, n_val=200)


def cifar_dataset(n_train: int = 2000) -> Dataset:
    with open(CIFAR_DIR / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    x = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float64) / 255.0
    y = np.asarray(batch[b"labels"])
    x, y = x[: n_train + 400], y[: n_train + 400]
    # Per-channel statistics, as the recipes normalise images.
    x_train, x_test = x[:n_train], x[n_train:]
    mean = x_train.mean(axis=(0, 1, 2))
    std = x_train.std(axis=(0, 1, 2))
    ds = Dataset(
        name="cifar10-sample",
        x_train=((x_train[200:] - mean) / std).astype(np.float32),
        y_train=y[200:n_train].astype(np.int64),
        x_val=((x_train[:200] - mean) / std).astype(np.float32),
        y_val=y[:200].astype(np.int64),
        x_test=((x_test - mean) / std).astype(np.float32),
        y_test=y[n_train:].astype(np.int64),
        num_classes=10,
        mean=mean,
        std=std,
    )
    return ds


def mlp(
    input_shape,
    num_classes,
    hidden=(64,),
    l2=0.0,
    dropout=0.0,
    activation=None,
    kernel_initializer="he_normal",
    seed=0,
) -> keras.Model:
    keras.utils.set_random_seed(seed)
    reg = keras.regularizers.L2(l2) if l2 else None
    layers = [keras.Input(input_shape)]
    for units in hidden:
        layers.append(
            keras.layers.Dense(
                units, "relu", kernel_initializer=kernel_initializer, kernel_regularizer=reg
            )
        )
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(num_classes, activation, kernel_regularizer=reg))
    return keras.Sequential(layers)
