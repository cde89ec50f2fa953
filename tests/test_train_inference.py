"""Train/inference differences never make a verdict: the doctor in a user's own ``fit`` reads
the training error scored in inference mode, never Keras' running training-mode mean (dropout
on, the weights of the whole epoch)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from kerasdiag.callbacks import TrainingDoctor


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    return (d.data[order] / 16.0).astype("float32"), d.target[order]


def fit(x, y, doctor, *, units=128, dropout=0.7, epochs=12):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    hidden = keras.layers.Dropout(dropout)(keras.layers.Dense(units, "relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(hidden))
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        x[:1400],
        y[:1400],
        validation_data=(x[1400:], y[1400:]),
        epochs=epochs,
        batch_size=64,
        callbacks=[doctor],
        verbose=0,
    )
    return model, history.history


def test_dropout_running_mean_is_not_read_as_underfitting(digits):
    x, y = digits
    doctor = TrainingDoctor(x[:512], y[:512], verbose=0)
    model, history = fit(x, y, doctor)
    running_error = 1 - history["accuracy"][-1]
    scored = doctor.history["train_accuracy_inference"]
    # fit's running mean with dropout 0.7 says more than the 5% bias threshold...
    assert running_error > doctor.thresholds.bias
    # ...the same weights scored in inference mode, as validation is, say much less
    expected = model.evaluate(x[:512], y[:512], verbose=0, return_dict=True)["accuracy"]
    assert scored[-1] == pytest.approx(expected, abs=1e-6)
    assert 1 - scored[-1] < doctor.thresholds.bias
    assert "underfitting" not in {f.symptom for f in doctor.findings}


def test_without_examples_to_score_no_bias_verdict_reads_the_running_mean(digits, capsys):
    x, y = digits
    doctor = TrainingDoctor(verbose=1)
    _, history = fit(x, y, doctor, epochs=3)
    assert 1 - history["accuracy"][-1] > doctor.thresholds.bias
    assert all(math.isnan(a) for a in doctor.history["train_accuracy_inference"])
    assert not {"underfitting", "overfitting"} & {f.symptom for f in doctor.findings}
    assert "no training examples to score in inference mode" in capsys.readouterr().out


def test_a_model_too_small_is_still_named_underfitting(digits):
    x, y = digits
    doctor = TrainingDoctor(x[:512], y[:512], verbose=0)
    fit(x, y, doctor, units=2, dropout=0.0, epochs=4)
    assert 1 - doctor.history["train_accuracy_inference"][-1] > doctor.thresholds.bias
    assert "underfitting" in {f.symptom for f in doctor.findings}


def test_a_near_chance_model_is_not_called_overfitting():
    from kerasdiag.diagnosis import rules

    # a BN model that barely learned: 84% training error, 93.9% validation error
    table = rules.bias_variance(0.16, 0.061)
    assert table["high_bias"] and not table["high_variance"]
    assert table["verdict"] == "high bias"
    history = {"loss": [2.3, 2.2], "accuracy": [0.12, 0.16], "val_loss": [2.3, 2.3],
               "val_accuracy": [0.07, 0.061]}  # fmt: skip
    found = rules.bias_variance_findings(history, rules.Thresholds(), {"step": 9, "epoch": 2})
    assert [f.symptom for f in found] == ["underfitting"]
    # a model that learned something and generalises worse still gets both
    assert rules.bias_variance(0.85, 0.70)["verdict"] == "high bias and high variance"
