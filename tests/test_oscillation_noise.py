"""A loss that jumps from batch to batch by no more than drawing the batches gives is not
oscillating: a noisy regression target (scikit-learn's diabetes table, 16 examples a batch)
makes a healthy loss jump by about a third of its size, while a learning rate far too high
makes it jump far beyond that."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from sklearn.datasets import load_diabetes

from kerasdiag.callbacks.probe_batch import example_loss_spread
from kerasdiag.callbacks.training_doctor import TrainingDoctor
from kerasdiag.diagnosis.rules import Thresholds, oscillation_finding

WINDOW = [0.5, 0.63, 0.5, 0.37, 0.5, 0.63, 0.5, 0.37] * 2 + [0.5, 0.63, 0.5, 0.37, 0.5]


def test_jumps_within_the_sampling_noise_are_not_oscillation():
    # median jump 0.13 = 26% of the initial 0.5, above the 25% threshold
    assert oscillation_finding(WINDOW, 0.5, Thresholds(), lr=0.001, step=21) is not None
    # drawing 32 examples whose losses spread by 0.6 moves a batch's loss by 0.106 (sd):
    # two batches differ by a median 0.10, and 0.13 is not 3x that
    noise = 0.6 / math.sqrt(32)
    assert oscillation_finding(WINDOW, 0.5, Thresholds(), 0.001, 21, noise=noise) is None
    found = oscillation_finding(WINDOW, 0.5, Thresholds(), 0.001, 21, noise=noise / 10)
    assert found is not None and found.evidence["sampling_noise"] == pytest.approx(noise / 10)
    assert "what drawing batches alone gives" in found.message


def test_the_noise_is_measured_only_when_the_jumps_pass_the_first_test():
    calls = []

    def noise():
        calls.append(1)
        return 0.001

    steady = [0.5 - 0.001 * i for i in range(21)]
    assert oscillation_finding(steady, 0.5, Thresholds(), 0.001, 21, noise=noise) is None
    assert calls == []
    assert oscillation_finding(WINDOW, 0.5, Thresholds(), 0.001, 21, noise=noise) is not None
    assert calls == [1]


@pytest.fixture(scope="module")
def diabetes():
    bunch = load_diabetes()
    x = ((bunch.data - bunch.data.mean(0)) / bunch.data.std(0)).astype("float32")
    y = ((bunch.target - bunch.target.mean()) / bunch.target.std()).astype("float32")
    return x, y


def _fit(x, y, optimizer, batch_size=16, noise=True):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer, keras.losses.Huber())
    doctor = TrainingDoctor(x[:64], y[:64], verbose=0, batch_size=batch_size)
    if not noise:
        doctor.engine.loss_noise = None  # the rule as it was: the jumps alone
    model.fit(x[:352], y[:352], batch_size=batch_size, epochs=2, verbose=0, callbacks=[doctor])
    return model, doctor


def test_a_noisy_regression_at_a_healthy_rate_is_not_called_oscillating(diabetes):
    x, y = diabetes
    model, doctor = _fit(x, y, keras.optimizers.Adam(1e-3))
    symptoms = {f.symptom for f in doctor.findings}
    assert "oscillating_loss" not in symptoms, [f.message for f in doctor.findings]
    assert doctor.history["loss"][1] < 0.9 * doctor.history["loss"][0]  # it learns steadily
    # judged on the jumps alone, the same fit was called oscillating (31% of the initial loss)
    _, blind = _fit(x, y, keras.optimizers.Adam(1e-3), noise=False)
    assert "oscillating_loss" in {f.symptom for f in blind.findings}
    # the spread that explains it: the examples' losses vary about as much as their mean
    spread = example_loss_spread(model, x[:64], y[:64])
    assert spread is not None and spread > 0.5 * float(
        np.mean(model.evaluate(x[:64], y[:64], verbose=0))
    )


def test_a_learning_rate_far_too_high_still_oscillates(diabetes):
    x, y = diabetes
    _, doctor = _fit(x, y, keras.optimizers.SGD(3.0))
    symptoms = {f.symptom for f in doctor.findings}
    assert symptoms & {"oscillating_loss", "nan"}, [f.message for f in doctor.findings]


def test_batch_size_is_validated():
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        TrainingDoctor(batch_size=0)
