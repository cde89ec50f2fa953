"""gradcheck_stage: the gradient check as the first pre-training stage of a run."""

from __future__ import annotations

import json

import keras
import pytest
from _gradcheck_helpers import PlantedDense, digits, sequential
from omegaconf import OmegaConf

from kerasdiag.checks.gradcheck import gradcheck_stage
from kerasdiag.data.dataset import Dataset


@pytest.fixture(scope="module")
def data():
    x, y = digits()
    return Dataset("digits", x[:1200], y[:1200], x[1200:1500], y[1200:1500], x[1500:], y[1500:], 10)


def sanity(**overrides):
    cfg = {
        "gradcheck": True,
        "gradcheck_samples": 2,
        "gradcheck_dims_per_variable": 8,
        "gradcheck_max_params": 2_000_000,
        "gradcheck_warmup_steps": 0,
    }
    return OmegaConf.create({**cfg, **overrides})


def mlp(bug=None):
    return sequential([keras.Input((64,)), PlantedDense(16, bug=bug), keras.layers.Dense(10)])


def test_stage_passes_writes_json_and_prints_table(data, tmp_path, capsys):
    result = gradcheck_stage(sanity(gradcheck_warmup_steps=2), mlp(), data, tmp_path)
    assert result.name == "gradcheck" and result.status == "pass"
    assert result.value <= result.expected
    saved = json.loads((tmp_path / "gradcheck.json").read_text())
    assert saved["passed"] is True and len(saved["rows"]) == 4
    assert saved["samples"] == 2 and saved["settings"]["warmup_steps"] == 2
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically
    out = capsys.readouterr().out
    assert "Gradient check PASSED" in out and "planted_dense" in out


def test_stage_fails_on_a_planted_bug_and_names_it(data, tmp_path, capsys):
    model = mlp("scaled")
    result = gradcheck_stage(sanity(), model, data, tmp_path)
    assert result.status == "fail"
    assert model.layers[0].kernel.path in result.message
    assert json.loads((tmp_path / "gradcheck.json").read_text())["passed"] is False


def test_stage_skips_big_models_and_when_disabled(data, tmp_path):
    model = mlp()
    result = gradcheck_stage(sanity(gradcheck_max_params=100), model, data, tmp_path)
    assert result.passed is None and result.status == "skip"
    assert "gradcheck_max_params=100" in result.message
    assert result.details["params"] == model.count_params()
    assert gradcheck_stage(sanity(gradcheck=False), model, data, tmp_path).status == "skip"
    assert not (tmp_path / "gradcheck.json").exists()


def test_stage_skips_an_uncompiled_model_with_the_reason(data, tmp_path):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    result = gradcheck_stage(sanity(), model, data, tmp_path)
    assert result.status == "skip" and "not compiled" in result.message


def test_a_relu_model_passes_against_the_bound_it_was_held_to(data, tmp_path):
    """The number next to PASS is compared with the bound the entries passed under: the
    kinked-objective band for a ReLU network, not the smooth tolerance."""
    model = sequential(
        [keras.Input((64,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)]
    )
    result = gradcheck_stage(sanity(), model, data, tmp_path)
    assert result.status == "pass"
    assert result.expected == 1e-4
    assert "objective with kinks: relu" in result.message.lower()
    assert "errors below 1e-04 pass" in result.message
    assert result.value <= result.expected
