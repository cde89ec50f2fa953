"""The fault zoo: small trainings on real data, each with one planted fault, and healthy ones.

Every recipe names the symptom its fault must produce (``None`` for a healthy recipe, which
must produce no finding at all). Digits recipes use scikit-learn's 8x8 digits and the
CIFAR recipe the real 5000-image CIFAR-10 sample, both loaded through
``kerasdiag.data.load_dataset(load_config([...]).data)``. Shared by ``tests/test_doctor_zoo.py``
and ``benchmarks/bench_doctor.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from kerasdiag.callbacks import TrainingDoctor
from kerasdiag.callbacks.factory import probe_batch
from kerasdiag.config import load_config
from kerasdiag.data import load_dataset

from conftest import CIFAR_SAMPLE

PROBE_SIZE = 64
SEED = 0


@dataclass
class Recipe:
    """One zoo entry: ``build()`` returns (compiled model, Dataset); ``fault`` says what is wrong."""

    name: str
    symptom: str | None
    fault: str
    build: Callable[[], tuple[keras.Model, Any]]
    epochs: int
    batch_size: int = 32
    shuffle: bool = True
    # the optimizer step at which the fault is planted (it shows from then on)
    fault_step: int = 0
    doctor: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    recipe: Recipe
    doctor: TrainingDoctor
    seconds: float

    @property
    def symptoms(self) -> set[str]:
        return {f.symptom for f in self.doctor.findings}

    def first(self, symptom: str):
        return next((f for f in self.doctor.findings if f.symptom == symptom), None)


# --- data --------------------------------------------------------------------------------


@functools.cache
def digits(*overrides: str):
    return load_dataset(load_config(["recipe=digits_softmax", *overrides]).data)


@functools.cache
def cifar(*overrides: str):
    return load_dataset(
        load_config(["recipe=cifar_softmax", f"data.path={CIFAR_SAMPLE}", *overrides]).data
    )


# --- models ------------------------------------------------------------------------------


def mlp(
    data,
    units=(64,),
    activation="relu",
    kernel_initializer="he_normal",
    bias_initializer="zeros",
    cut_after_first: bool = False,
) -> keras.Model:
    """Flatten -> Dense(units, activation)... -> logits, seeded."""
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input(data.input_shape)
    x = keras.layers.Flatten()(inputs)
    for i, n in enumerate(units):
        x = keras.layers.Dense(
            n,
            activation=activation,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            name=f"hidden{i + 1}",
        )(x)
        if cut_after_first and i == 0:
            # The planted bug: a leftover stop_gradient cuts hidden1 off from the loss.
            x = keras.layers.Lambda(keras.ops.stop_gradient, name="detached")(x)
    return keras.Model(inputs, keras.layers.Dense(data.num_classes, name="logits")(x))


def convnet(data, bias_initializer="zeros") -> keras.Model:
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input(data.input_shape)
    x = inputs
    for i, filters in enumerate((16, 32)):
        x = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            activation="relu",
            kernel_initializer="he_normal",
            bias_initializer=bias_initializer,
            name=f"conv{i + 1}",
        )(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu", kernel_initializer="he_normal", name="dense")(x)
    return keras.Model(inputs, keras.layers.Dense(data.num_classes, name="logits")(x))


def compiled(model: keras.Model, optimizer) -> keras.Model:
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def project_model(*overrides: str):
    """A model of the project's own digits recipe (recipes.models.mlp via build_model)."""
    from kerasdiag.modeling.factory import build_model

    cfg = load_config(["recipe=digits_softmax", *overrides])
    data = load_dataset(cfg.data)
    return build_model(cfg, data), data


def with_nan_example(data, index: int):
    """``data`` with one training example corrupted to NaN (a broken record in the data)."""
    x_train = data.x_train.copy()
    x_train[index] = np.nan
    return dataclasses.replace(data, x_train=x_train)


# --- the zoo -----------------------------------------------------------------------------

NAN_INDEX = 4 * 32 + 5  # an example of the 5th batch (step 4) when batches are not shuffled


def _nan_recipe():
    data = with_nan_example(digits(), NAN_INDEX)
    return compiled(mlp(data), keras.optimizers.Adam(1e-3)), data


def _exploding():
    data = digits()
    init = keras.initializers.RandomNormal(stddev=2.0, seed=SEED)
    return compiled(
        mlp(data, (64, 64, 64, 64), kernel_initializer=init), keras.optimizers.SGD(0.01)
    ), data


def _vanishing():
    data = digits()
    model = mlp(data, (32,) * 8, "sigmoid", "glorot_uniform")
    return compiled(model, keras.optimizers.SGD(0.1)), data


def _dying():
    data = cifar("data.limit=1200")
    model = convnet(data, bias_initializer=keras.initializers.Constant(-5.0))
    return compiled(model, keras.optimizers.Adam(1e-3)), data


def _saturated():
    data = digits()
    init = keras.initializers.RandomNormal(stddev=1.0, seed=SEED)
    return compiled(
        mlp(data, activation="tanh", kernel_initializer=init), keras.optimizers.Adam(1e-3)
    ), data


def _oscillating():
    data = digits()
    model = mlp(data, (64,), "tanh", "glorot_uniform")
    return compiled(model, keras.optimizers.SGD(3.0)), data


def _slow():
    data = digits()
    return compiled(mlp(data), keras.optimizers.SGD(1e-4)), data


def _stagnant():
    data = digits()
    model = mlp(data, (64, 64), cut_after_first=True)
    return compiled(model, keras.optimizers.Adam(1e-3)), data


def _lr_too_high():
    data = digits()
    return compiled(mlp(data), keras.optimizers.SGD(2.0)), data


def _lr_too_low():
    data = digits()
    return compiled(mlp(data), keras.optimizers.SGD(1e-3)), data


def _overfitting():
    data = digits("data.limit=60")
    return compiled(mlp(data, (256,)), keras.optimizers.Adam(3e-3)), data


def _underfitting():
    data = digits()
    return compiled(mlp(data, (2,)), keras.optimizers.Adam(1e-2)), data


def _healthy_tanh():
    data = digits()
    model = mlp(data, (64, 64), "tanh", "glorot_uniform")
    return compiled(model, keras.optimizers.SGD(0.01, momentum=0.9)), data


FAULTS = [
    Recipe(
        "nan_in_data",
        "nan",
        "one training example is NaN (a corrupt record)",
        _nan_recipe,
        epochs=2,
        shuffle=False,
        fault_step=NAN_INDEX // 32,
    ),
    Recipe(
        "init_too_large",
        "exploding_gradients",
        "4 ReLU layers initialised N(0, 2^2)",
        _exploding,
        epochs=1,
    ),
    Recipe("deep_sigmoid", "vanishing_gradients", "8 stacked sigmoid layers", _vanishing, epochs=2),
    Recipe(
        "negative_bias",
        "dying_relu",
        "CIFAR convnet with ReLU biases initialised to -5",
        _dying,
        epochs=2,
        batch_size=64,
    ),
    Recipe(
        "tanh_init_too_large",
        "saturated_activations",
        "tanh layer initialised N(0, 1)",
        _saturated,
        epochs=2,
    ),
    Recipe("lr_300x", "oscillating_loss", "tanh MLP, plain SGD at lr 3.0", _oscillating, epochs=2),
    Recipe("lr_1e-4_sgd", "slow_convergence", "plain SGD at lr 1e-4", _slow, epochs=3),
    Recipe(
        "stop_gradient", "stagnant_weights", "a stop_gradient cuts hidden1 off", _stagnant, epochs=2
    ),
    Recipe("sgd_lr_2", "lr_too_high", "plain SGD at lr 2.0", _lr_too_high, epochs=10),
    Recipe("sgd_lr_1e-3", "lr_too_low", "plain SGD at lr 1e-3", _lr_too_low, epochs=8),
    Recipe(
        "60_examples",
        "overfitting",
        "256-unit MLP on 51 training examples",
        _overfitting,
        epochs=40,
        batch_size=16,
    ),
    Recipe("2_units", "underfitting", "a 2-unit hidden layer", _underfitting, epochs=15),
]

HEALTHY = [
    Recipe(
        "digits_softmax",
        None,
        "the project's digits recipe (ReLU MLP, Adam 1e-3)",
        lambda: project_model(),
        epochs=15,
    ),
    Recipe(
        "tanh_momentum", None, "tanh MLP, Glorot init, SGD+momentum 0.01", _healthy_tanh, epochs=15
    ),
]

ZOO = FAULTS + HEALTHY


def run(recipe: Recipe, **doctor_kwargs: Any) -> Outcome:
    """Train ``recipe`` with a TrainingDoctor on a probe batch of its training data."""
    model, data = recipe.build()
    x_probe, y_probe = probe_batch(data, PROBE_SIZE)
    keep = np.isfinite(x_probe).reshape(len(x_probe), -1).all(axis=1)  # not the corrupt record
    x_probe, y_probe = x_probe[keep], y_probe[keep]
    kwargs = {"verbose": 0, **recipe.doctor, **doctor_kwargs}
    doctor = TrainingDoctor(x_probe, y_probe, **kwargs)
    start = time.perf_counter()
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=recipe.batch_size,
        epochs=recipe.epochs,
        shuffle=recipe.shuffle,
        validation_data=(data.x_val, data.y_val),
        callbacks=[doctor],
        verbose=0,
    )
    return Outcome(recipe, doctor, time.perf_counter() - start)
