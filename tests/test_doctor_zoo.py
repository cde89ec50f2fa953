"""The fault zoo: every planted fault is named by TrainingDoctor, no healthy run gets a finding."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from doctor_zoo import FAULTS, HEALTHY, NAN_INDEX, ZOO, run

from kerasdiag.diagnosis import SYMPTOMS

BY_NAME = {r.name: r for r in ZOO}


@functools.cache
def outcome(name: str):
    return run(BY_NAME[name])


def test_the_zoo_plants_every_symptom():
    assert {r.symptom for r in FAULTS} == set(SYMPTOMS)
    assert len(HEALTHY) >= 2


@pytest.mark.parametrize("name", [r.name for r in FAULTS])
def test_planted_fault_is_named(name):
    result = outcome(name)
    recipe = result.recipe
    finding = result.first(recipe.symptom)
    assert finding is not None, (
        f"{name} ({recipe.fault}): expected {recipe.symptom}, got "
        f"{[f.message for f in result.doctor.findings]}"
    )
    # A named symptom carries where, the numbers and a fix.
    assert finding.evidence and finding.fix and finding.epoch >= 1
    assert finding.step is not None and finding.step >= recipe.fault_step


@pytest.mark.parametrize("name", [r.name for r in HEALTHY])
def test_healthy_run_has_no_finding(name):
    result = outcome(name)
    assert result.doctor.findings == [], [f.message for f in result.doctor.findings]
    assert result.doctor.history["loss"][-1] < 0.2 * result.doctor.initial_loss


def test_init_faults_are_named_at_step_zero():
    for name in ("init_too_large", "deep_sigmoid", "negative_bias", "tanh_init_too_large"):
        result = outcome(name)
        assert result.first(result.recipe.symptom).step == 0, name


def test_nan_in_data_is_caught_within_a_few_steps_and_weights_restored():
    result = outcome("nan_in_data")
    finding = result.first("nan")
    fault_step = NAN_INDEX // 32
    assert fault_step <= finding.step <= fault_step + 10
    # The loss stayed finite (ReLU hides NaN inputs): the broken weights gave it away, and
    # the fix points at the data rather than the learning rate first.
    assert finding.evidence["non_finite_weights"] == ["hidden1/kernel"]
    assert "bad batch" in finding.fix
    # stop_on=("nan",) by default: training ended in the epoch it broke, weights restored.
    assert len(result.doctor.history["loss"]) == 1
    assert finding.evidence["restored_weights_of_epoch"] == 0
    model_weights = result.doctor.model.get_weights()
    assert all(np.isfinite(w).all() for w in model_weights)


def test_exploding_gradient_evidence_names_the_norm():
    finding = outcome("init_too_large").first("exploding_gradients")
    assert finding.severity == "error"
    assert finding.evidence["global_norm"] > finding.evidence["threshold"] == 1e3
    assert "global_clipnorm" in finding.fix


def test_dying_relu_names_each_dead_layer_of_the_cifar_convnet():
    result = outcome("negative_bias")
    dead = {
        f.layer: f.evidence["dead_fraction"]
        for f in result.doctor.findings
        if f.symptom == "dying_relu"
    }
    assert set(dead) == {"conv1", "conv2", "dense"}
    assert dead["conv2"] == dead["dense"] == 1.0


def test_stagnant_layer_is_the_detached_one():
    result = outcome("stop_gradient")
    stagnant = [f for f in result.doctor.findings if f.symptom == "stagnant_weights"]
    assert [f.layer for f in stagnant] == ["hidden1"]
    assert stagnant[0].evidence["median_update_ratio"] == 0.0
