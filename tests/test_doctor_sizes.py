"""The doctor in a user's own ``fit`` knows how many examples its verdicts stand on: the
validation size is learnt from ``fit`` (or given as ``val_size=``), so a gap on 24 validation
examples is not "overfitting", and a learning-rate verdict needs enough optimizer steps."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from kerasdiag.callbacks import TrainingDoctor
from kerasdiag.core.rundir import RunLayout
from kerasdiag.diagnosis import diagnose, rules
from kerasdiag.diagnosis.rules.thresholds import MIN_RATE_STEPS


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    return (d.data[order] / 16.0).astype("float32"), d.target[order]


def mlp(units=32, lr=1e-3, optimizer=keras.optimizers.Adam):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(units, "relu"), keras.layers.Dense(10)]
    )
    model.compile(
        optimizer(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_the_validation_size_is_learnt_from_fit(digits):
    x, y = digits
    val = (x[500:524], y[500:524])
    cases = {
        "validation_split": ({"validation_split": 0.1}, 50),
        "validation_data arrays": ({"validation_data": val}, 24),
        "dataset, dynamic batch": (
            {"validation_data": tf.data.Dataset.from_tensor_slices((x[500:601], y[500:601]))
             .batch(32)},
            101,
        ),
        "dataset, validation_steps": (
            {"validation_data": tf.data.Dataset.from_tensor_slices((x[500:], y[500:]))
             .batch(32, drop_remainder=True).repeat(), "validation_steps": 3},
            96,
        ),
    }  # fmt: skip
    for name, (kwargs, expected) in cases.items():
        doctor = TrainingDoctor(x[:64], y[:64], verbose=0)
        mlp().fit(x[:500], y[:500], epochs=1, batch_size=50, verbose=0, callbacks=[doctor],
                  **kwargs)  # fmt: skip
        assert doctor.validation_examples == expected, name
        assert doctor.train_examples == 64  # the probe batch scores the training error
    given = TrainingDoctor(x[:64], y[:64], verbose=0, val_size=1000)
    mlp().fit(x[:100], y[:100], validation_data=val, epochs=1, verbose=0, callbacks=[given])
    assert given.validation_examples == 1000
    with pytest.raises(ValueError, match="^`val_size` must be a positive integer"):
        TrainingDoctor(val_size=0)


def fit_with_validation(x, y, val_examples):
    """A 120-example training set memorised (100% training accuracy), validated on
    ``val_examples`` examples: about 9% validation error either way."""
    doctor = TrainingDoctor(train_sample=(x[:120], y[:120]), verbose=0)
    mlp(units=64, lr=3e-3).fit(
        x[:120], y[:120], validation_data=(x[1000:1000 + val_examples], y[1000:1000 + val_examples]),
        epochs=30, batch_size=32, verbose=0, callbacks=[doctor],
    )  # fmt: skip
    return doctor


def test_overfitting_on_24_validation_examples_is_inconclusive_in_a_users_fit(digits):
    x, y = digits
    small = fit_with_validation(x, y, 24)
    assert small.validation_examples == 24
    assert "overfitting" not in [f.symptom for f in small.findings]
    large = fit_with_validation(x, y, 600)
    (overfitting,) = [f for f in large.findings if f.symptom == "overfitting"]
    assert "600 validation examples" not in overfitting.message


# A loss that rises epoch after epoch: lr_too_high, once the steps support a rate.
RISING = {"loss": [1.0, 1.1, 1.3, 1.6, 2.0]}
# A loss decaying almost linearly far from converged: lr_too_low.
LINEAR = {"loss": [2.0, 1.9, 1.8, 1.7, 1.6, 1.5]}


@pytest.mark.parametrize(("history", "symptom"), [(RISING, "lr_too_high"),
                                                  (LINEAR, "lr_too_low")])  # fmt: skip
def test_a_learning_rate_verdict_needs_enough_steps(history, symptom):
    few = rules.curve_findings(history, initial_loss=2.0, step=MIN_RATE_STEPS - 2)
    assert symptom not in [f.symptom for f in few]  # 29 steps: no measured rate
    enough = rules.curve_findings(history, initial_loss=2.0, step=MIN_RATE_STEPS - 1)
    assert symptom in [f.symptom for f in enough]
    # the same threshold as slow_convergence's, from its one home
    assert rules.convergence.SLOW_MIN_STEPS == MIN_RATE_STEPS


def test_a_users_fit_of_few_steps_gets_no_learning_rate_verdict(digits):
    x, y = digits
    # 5 epochs of 2 steps at a learning rate far too low: 10 steps, no rate verdict.
    doctor = TrainingDoctor(x[:64], y[:64], verbose=0)
    mlp(lr=1e-2, optimizer=keras.optimizers.SGD).fit(
        x[:64], y[:64], epochs=5, batch_size=32, verbose=0, callbacks=[doctor]
    )
    rate = {"lr_too_high", "lr_too_low"}
    assert not rate & {f.symptom for f in doctor.findings}
    # the curve alone, its number of steps unknown, would have given one
    shape = rules.curve_findings(doctor.history, initial_loss=doctor.initial_loss)
    assert rate & {f.symptom for f in shape}


@pytest.mark.parametrize(("last_step", "judged"), [(MIN_RATE_STEPS - 2, False),
                                                   (MIN_RATE_STEPS - 1, True)])  # fmt: skip
def test_the_diagnosis_of_a_run_directory_reads_its_number_of_steps(tmp_path, last_step, judged):
    # A run directory as a user's fit with the doctor leaves it: the epoch metrics and
    # doctor.json, whose step losses end at the last optimizer step.
    lines = ["epoch,loss"] + [f"{e + 1},{v}" for e, v in enumerate(RISING["loss"])]
    (tmp_path / RunLayout.METRICS).write_text("\n".join(lines) + "\n")
    steps = np.linspace(0, last_step, 5).astype(int)
    record = {"step_losses": [[int(s), 1.0] for s in steps], "initial_loss": 1.0}
    (tmp_path / RunLayout.DOCTOR).write_text(json.dumps(record))
    found = [f.symptom for f in diagnose(tmp_path, write=False)]
    assert ("lr_too_high" in found) == judged, found
