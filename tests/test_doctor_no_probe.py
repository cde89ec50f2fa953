"""TrainingDoctor() without probe data: judged from the weights and the loss (issue 16)."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pytest
from doctor_zoo import SEED, _saturated, _stagnant, compiled, digits, mlp, project_model

from kerasdiag.callbacks import GradientMonitor, TrainingDoctor
from kerasdiag.callbacks.weight_checks import (
    FLAT_STEPS,
    expected_std,
    flat_loss_finding,
    init_scale_findings,
    unjudged_note,
)


def fit(model, data, doctor, epochs=1, batch_size=32):
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(data.x_val, data.y_val),
        callbacks=[doctor],
        verbose=0,
    )
    return doctor


def by_symptom(doctor):
    return {(f.symptom, f.layer): f for f in doctor.findings}


def test_expected_std_follows_fan_in_and_activation():
    assert expected_std(64, "relu") == pytest.approx(math.sqrt(2 / 64))
    assert expected_std(64, "tanh") == pytest.approx(math.sqrt(1 / 64))
    assert expected_std(27, "linear") == pytest.approx(math.sqrt(1 / 27))


@pytest.mark.parametrize("stddev", [10.0, 1e-4])
def test_init_orders_of_magnitude_off_is_named_at_step_zero_without_probe(stddev):
    data = digits()
    init = keras.initializers.RandomNormal(stddev=stddev, seed=SEED)
    model = compiled(mlp(data, (64, 64), kernel_initializer=init), keras.optimizers.Adam(1e-3))
    doctor = fit(model, data, TrainingDoctor(verbose=0))
    symptom = "exploding_gradients" if stddev > 1 else "vanishing_gradients"
    found = by_symptom(doctor)
    for layer, fan_in in (("hidden1", 64), ("hidden2", 64)):
        finding = found[(symptom, layer)]
        assert finding.step == 0 and finding.fix
        ev = finding.evidence
        assert ev["fan_in"] == fan_in and ev["judged_from"] == "weights (no probe batch)"
        # Independently: the kernel's std over the He std for ReLU units.
        assert ev["ratio"] == pytest.approx(stddev / math.sqrt(2 / fan_in), rel=0.1)
    # The logits layer is not called too small (a small last layer is a choice).
    assert ("vanishing_gradients", "logits") not in found


def test_tanh_init_too_large_is_saturated_activations_without_probe():
    model, data = _saturated()  # tanh layer initialised N(0, 1), fan-in 64: 8x Glorot's std
    doctor = fit(model, data, TrainingDoctor(verbose=0))
    finding = by_symptom(doctor)[("saturated_activations", "hidden1")]
    assert finding.step == 0 and finding.evidence["ratio"] == pytest.approx(8.0, rel=0.1)


def test_healthy_model_without_probe_has_no_finding():
    model, data = project_model()
    assert init_scale_findings(model) == []
    doctor = fit(model, data, TrainingDoctor(verbose=0), epochs=4, batch_size=64)
    # In-training judgements only: 4 epochs are too few for the curve's verdicts.
    seen = [f for f in doctor.findings if f.source == "doctor"]
    assert seen == [], [f.message for f in seen]
    assert doctor.history["loss"][-1] < 0.5 * doctor.initial_loss


def test_stagnant_weights_are_named_without_probe():
    model, data = _stagnant()  # a stop_gradient cuts hidden1 off from the loss
    doctor = fit(model, data, TrainingDoctor(verbose=0), epochs=2)
    assert ("stagnant_weights", "hidden1") in by_symptom(doctor)


def test_flat_loss_is_named_after_the_first_steps():
    data = digits()
    model = compiled(mlp(data), keras.optimizers.SGD(1e-7))
    # 153 steps per epoch: named at step 100, before the epoch-based judgement could.
    doctor = fit(model, data, TrainingDoctor(verbose=0), epochs=1, batch_size=8)
    finding = by_symptom(doctor)[("slow_convergence", None)]
    assert finding.step == FLAT_STEPS - 1 and "flat" in finding.message
    assert finding.evidence["drop"] < finding.evidence["expected_drop"]


def test_flat_loss_rule_on_recorded_losses():
    falling = [(i, 2.3 * 0.99**i) for i in range(FLAT_STEPS)]
    assert flat_loss_finding(falling, 2.3, 1e-3) is None
    rng = np.random.default_rng(0)
    noisy_flat = [(i, 2.3 + 0.1 * rng.standard_normal()) for i in range(FLAT_STEPS)]
    assert flat_loss_finding(noisy_flat, 2.3, 1e-3).symptom == "slow_convergence"
    assert flat_loss_finding(noisy_flat[:50], 2.3, 1e-3) is None  # too early to say


def test_says_once_what_it_cannot_judge_and_how_to_pass_a_probe(capsys):
    model, data = project_model()
    data = dataclasses.replace(data, x_train=data.x_train[:256], y_train=data.y_train[:256])
    fit(model, data, TrainingDoctor(verbose=1), epochs=2)
    out = capsys.readouterr().out
    assert out.count("no probe data") == 1
    for symptom in ("dying_relu", "saturated_activations", "exploding_gradients"):
        assert symptom in out.split("no probe data")[1].split("\n")[0]
    assert "TrainingDoctor(x_train[:32], y_train[:32])" in out
    # With a probe batch there is nothing to say; with only gradients, activations remain.
    assert unjudged_note(True, True) is None
    note = unjudged_note(False, True)
    assert "dying_relu" in note and "exploding_gradients" not in note


def test_with_a_gradient_monitor_the_probe_judges_gradients_not_the_weights():
    data = digits()
    init = keras.initializers.RandomNormal(stddev=10.0, seed=SEED)
    model = compiled(mlp(data, (64, 64), kernel_initializer=init), keras.optimizers.Adam(1e-3))
    x, y = data.x_train[:32], data.y_train[:32]
    monitor = GradientMonitor(x, y, freq=10)
    doctor = TrainingDoctor(monitors=[monitor], verbose=0)
    model.fit(data.x_train, data.y_train, epochs=1, callbacks=[monitor, doctor], verbose=0)
    judged = [f for f in doctor.findings if f.evidence.get("judged_from")]
    assert not any(f.symptom == "exploding_gradients" for f in judged)


def test_warmup_epochs_do_not_count_towards_slow_convergence():
    """The doctor records the rate of each epoch's first step when no monitor logs it, and leaves
    a warmup's epochs out of the slow-convergence judgement: SGD warming up from 0 to 1e-4
    over 2 epochs barely moves the loss, which is expected while the rate climbs. Judged
    after two more epochs, the advice starts from the schedule's peak, not from where its
    decay stands (0 at the end)."""
    data = digits()
    # 10 steps per epoch: 40 by the fourth, enough for a rate (SLOW_MIN_STEPS), and the
    # step-based flat-loss rule never has its 100
    batch_size = 128
    steps = math.ceil(len(data.x_train) / batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=2 * steps, warmup_target=1e-4, warmup_steps=2 * steps
    )
    model = compiled(mlp(data), keras.optimizers.SGD(schedule))
    doctor = fit(model, data, TrainingDoctor(verbose=0), epochs=4, batch_size=batch_size)
    rates = doctor.history["learning_rate"]
    assert rates == pytest.approx([0.0, 0.5e-4, 1e-4, 0.5e-4], rel=1e-3)
    assert doctor.history["loss"][-1] > 0.8 * doctor.initial_loss  # slow, as planned
    found = by_symptom(doctor)[("slow_convergence", None)]
    assert found.epoch == 4 and found.evidence["warmup_epochs"] == 2  # not after epoch 2 or 3
    assert "(learning_rate=0.001 in the optimizer; it is 0.0001)" in found.fix
