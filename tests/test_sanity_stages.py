"""run_sanity_stages: order, switches, fail_fast, sanity.json, the training model untouched."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import sanity_helpers as h
from omegaconf import OmegaConf

from kerasdiag.checks.sanity import SanityCheckFailed, run_sanity_stages
from kerasdiag.checks.sanity.stages import STAGES, gradcheck_available
from kerasdiag.config import Config


@pytest.fixture(scope="module")
def digits():
    return h.digits()


# The stages beyond the notes' four have their own tests (test_sanity_beyond.py).
BEYOND = ("leakage", "split_shift", "input_baseline", "batch_independence", "lr_range")


def make_cfg(**sanity):
    """The run config schema with its defaults, the stages' switches and an MLP's regularization."""
    off = dict.fromkeys(BEYOND, False)
    return OmegaConf.merge(
        OmegaConf.structured(Config),
        {
            "sanity": {"gradcheck": False, **off, **sanity},
            "model": {"l2": 1e-3, "dropout": [0.3]},
        },
    )


def factory(data, cfg, *, loss=None, honour_l2=True):
    """build_model(**overrides) as the pipeline passes it: seeded, compiled, cfg.model-driven."""

    def build_model(**overrides):
        model_cfg = {**OmegaConf.to_container(cfg.model), **overrides}
        l2 = model_cfg["l2"] if honour_l2 else 0.0
        dropout = model_cfg["dropout"][0] if model_cfg["dropout"] else 0.0
        return h.compiled(h.mlp(data, l2=l2, dropout=dropout), loss or h.logits_ce())

    return build_model


def read_json(run_dir):
    return json.loads((run_dir / "sanity.json").read_text())


def test_healthy_run_passes_writes_json_and_prints_a_table(digits, tmp_path, capsys):
    cfg = make_cfg()
    build = factory(digits, cfg)
    results = run_sanity_stages(cfg, build(), digits, tmp_path, build)
    assert [r.name for r in results] == list(STAGES)
    assert [r.status for r in results][:4] == ["skip", "pass", "pass", "pass"]
    records = read_json(tmp_path)
    assert [r["name"] for r in records] == list(STAGES)
    for record, result in zip(records, results, strict=True):
        assert {"name", "status", "value", "expected", "seconds", "message"} <= set(record)
        assert record["status"] == result.status and record["message"] == result.message
        assert record["value"] == pytest.approx(result.value) if result.value else True
    assert records[0]["message"] == "disabled (sanity.gradcheck=false)"
    assert records[1]["expected"] == pytest.approx(np.log(10))
    table = capsys.readouterr().out
    for name in STAGES:
        assert name in table
    assert table.count("PASS") == 3 and "SKIP" in table


def test_fail_fast_stops_at_the_failing_stage_after_writing_json(digits, tmp_path):
    cfg = make_cfg(fail_fast=True)
    # Logits into a loss that expects probabilities: the initial-loss stage must fail.
    build = factory(digits, cfg, loss="sparse_categorical_crossentropy")
    with pytest.raises(SanityCheckFailed, match="sanity stage 'initial_loss' failed"):
        run_sanity_stages(cfg, build(), digits, tmp_path, build)
    statuses = [r["status"] for r in read_json(tmp_path)]
    assert statuses[:4] == ["skip", "fail", "skip", "skip"]
    assert "fail_fast" in read_json(tmp_path)[2]["message"]


def test_without_fail_fast_every_stage_runs(digits, tmp_path):
    cfg = make_cfg(fail_fast=False)
    build = factory(digits, cfg, loss="sparse_categorical_crossentropy")
    results = run_sanity_stages(cfg, build(), digits, tmp_path, build)
    assert results[1].status == "fail"
    assert results[2].status == "pass"
    # logits read as probabilities (clipped, renormalised) cannot be driven to a zero loss
    assert results[3].status == "fail" and "could not memorise" in results[3].message


def test_switches_skip_stages(digits, tmp_path):
    cfg = make_cfg(initial_loss=False, regularization=False, overfit=False)
    build = factory(digits, cfg)
    results = run_sanity_stages(cfg, build(), digits, tmp_path, build)
    assert all(r.status == "skip" for r in results)
    assert [r["message"] for r in read_json(tmp_path)][1:] == [
        f"disabled (sanity.{name}=false)" for name in STAGES[1:]
    ]


def test_regularization_wired_to_nothing_fails_the_regularization_stage(digits, tmp_path):
    cfg = make_cfg()  # model.l2 = 1e-3, but the builder never attaches it
    build = factory(digits, cfg, honour_l2=False)
    results = {r.name: r for r in run_sanity_stages(cfg, build(), digits, tmp_path, build)}
    assert results["regularization"].status == "fail"
    assert "model.l2=0.001" in results["regularization"].message
    assert results["initial_loss"].status == "pass" and results["overfit"].status == "pass"


def test_no_configured_regularization_probes_the_wiring(digits, tmp_path):
    cfg = make_cfg()
    cfg.model.l2 = 0.0
    build = factory(digits, cfg)
    result = run_sanity_stages(cfg, build(), digits, tmp_path, build)[2]
    assert result.status == "pass" and "probe" in result.message
    assert result.details["penalty_stronger"] > 0 == result.details["penalty_configured"]


def test_gradcheck_stage_is_run_when_present(digits, tmp_path):
    cfg = make_cfg(gradcheck=True, initial_loss=False, regularization=False, overfit=False)
    build = factory(digits, cfg)
    result = run_sanity_stages(cfg, build(), digits, tmp_path, build)[0]
    assert gradcheck_available()  # part of the package: the stage must really run
    assert result.status == "pass", result.message  # a healthy MLP's gradients are right
    report = json.loads((tmp_path / "gradcheck.json").read_text())
    assert report["passed"] is True


def test_stages_leave_the_training_model_and_random_state_untouched(tmp_path):
    from kerasdiag.config import load_config
    from kerasdiag.data import load_dataset
    from kerasdiag.modeling.factory import build_model

    cfg = load_config(["recipe=digits_softmax", "model.dropout=[0.3]", "model.l2=1e-3"])
    data = load_dataset(cfg.data)

    def train(model):
        x, y = data.x_train[:320], data.y_train[:320]
        model.fit(x, y, batch_size=64, epochs=1, shuffle=True, verbose=0)
        return model.get_weights()

    model = build_model(cfg, data)
    initial = [w.copy() for w in model.get_weights()]
    states = (random.getstate(), np.random.get_state()[1].copy())
    run_sanity_stages(cfg, model, data, tmp_path, lambda **o: build_model(cfg, data, **o))
    assert h.weights_equal(initial, model.get_weights())
    assert not model.optimizer.built and int(model.optimizer.iterations) == 0
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    after_stages = train(model)

    twin = build_model(cfg, data)  # the same run without the stages
    assert h.weights_equal(initial, twin.get_weights())
    without_stages = train(twin)
    assert not h.weights_equal(initial, without_stages)  # training did change the weights
    assert h.weights_equal(after_stages, without_stages)
