"""The search space: YAML presets, validation errors, log sampling, coarse-to-fine narrowing,
trial configs, checkpoint names and the divergence stop (fast: no search is run here)."""

from __future__ import annotations

import copy
import math

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from sklearn.datasets import load_digits

from kerasdiag.callbacks.best_checkpoint import BestCheckpoint
from kerasdiag.config import load_config
from kerasdiag.config.schema import check_tuner
from kerasdiag.config.search_space import Param, check_search, narrow_space, validate_search
from kerasdiag.core.errors import ConfigError
from kerasdiag.ensemble.selection import (
    best_checkpoints,
    parse_checkpoint_name,
    source_checkpoints,
)
from kerasdiag.search.distributed import IDLE, RUNNING
from kerasdiag.search.divergence import StopOnDivergence
from kerasdiag.search.oracle import build_oracle
from kerasdiag.search.results import (
    TrialRecord,
    kept_checkpoints,
    search_figure,
    trial_checkpoint_name,
)
from kerasdiag.search.space import build_hyperparameters
from kerasdiag.search.tuner import trial_config


@pytest.fixture(scope="module")
def c2f():
    return load_config(["tuner=coarse_to_fine"])


@pytest.fixture(scope="module")
def random_cfg():
    return load_config(["tuner=random"])


def test_presets_declare_log_ranges_and_stages(c2f, random_cfg):
    space, stages = validate_search(c2f)
    by_name = {p.name: p for p in space}
    assert by_name["lr"] == Param("lr", "optimizer.lr", "float", 1e-6, 10.0, "log")
    assert by_name["l2"].key == "model.l2" and by_name["l2"].log
    assert by_name["dropout"].values == ([], [0.1], [0.3], [0.5])
    assert [(s.number, s.trials, s.epochs) for s in stages] == [(1, 16, 1), (2, 8, 5), (3, 4, 20)]
    assert len(validate_search(random_cfg)[1]) == 1


@pytest.mark.parametrize(
    ("path", "value", "key", "words"),
    [
        ("tuner.space.lr.key", "optimizer.lrate", "tuner.space.lr.key", "no such config key"),
        ("tuner.space.lr.key", "model", "tuner.space.lr.key", "section"),
        ("tuner.space.lr.key", "data.val_fraction", "tuner.space.lr.key", "same data split"),
        ("tuner.space.lr.key", "trainer.epochs", "tuner.space.lr.key", "set by the search"),
        ("tuner.space.lr.min", 0, "tuner.space.lr.min", "must be > 0 with sampling: log"),
        ("tuner.space.lr.min", -1e-3, "tuner.space.lr.min", "must be > 0 with sampling: log"),
        ("tuner.space.lr.max", 1e-7, "tuner.space.lr.max", "must be above min"),
        ("tuner.space.lr.max", None, "tuner.space.lr.max", "required"),
        ("tuner.space.lr.type", "double", "tuner.space.lr.type", "must be one of"),
        ("tuner.space.lr.sampling", "exp", "tuner.space.lr.sampling", "must be one of"),
        ("tuner.space.lr.scale", 2, "tuner.space.lr", "unknown field"),
        ("tuner.space.batch_size.values", [], "tuner.space.batch_size.values", "non-empty"),
        ("tuner.space.batch_size.values", [16, 16], "tuner.space.batch_size.values", "duplicates"),
        ("tuner.space.batch_size.min", 8, "tuner.space.batch_size.min", "not a range"),
        ("tuner.space.k", {"key": "model.kernel_size", "type": "float", "min": 1.5, "max": 4},
         "tuner.space.k", "cannot be stored in model.kernel_size"),
        ("tuner.space.u", {"key": "model.hidden_units", "type": "int", "min": 8, "max": 64},
         "tuner.space.u", "cannot be stored in model.hidden_units"),
        ("tuner.objective", "accuracy", "tuner.objective", "validation split"),
        ("tuner.margin", 0.0, "tuner.margin", "must be > 0"),
        ("tuner.diverge_factor", 1.0, "tuner.diverge_factor", "must be > 1"),
        ("tuner.stages", [], "tuner.stages", "at least one"),
        ("tuner.stages.0.trials", 0, "tuner.stages.0.trials", "must be >= 1"),
    ],
)  # fmt: skip
def test_bad_space_is_one_config_error_naming_the_key(random_cfg, path, value, key, words):
    cfg = copy.deepcopy(random_cfg)
    OmegaConf.update(cfg, path, value, merge=False, force_add=True)
    with pytest.raises(ConfigError) as info:
        check_tuner(cfg)  # the tuner section's own settings ...
        check_search(cfg)  # ... and its space and stages
    message = str(info.value)
    assert info.value.key == key and words in message
    assert "\n" not in message and message.startswith(f"invalid config: {key}=")


def test_space_entries_can_be_added_from_the_command_line():
    cfg = load_config(
        ["tuner=random", "+tuner.space.m={key:optimizer.momentum,type:float,min:0.5,max:0.99}"]
    )
    space, _ = validate_search(cfg)
    assert space[-1] == Param("m", "optimizer.momentum", "float", 0.5, 0.99)


def test_log_sampling_spreads_trials_evenly_over_decades(c2f):
    """lr = 10**uniform(-6, 1): every decade gets about 1/7 of the samples."""
    space, _ = validate_search(c2f)
    hp = build_hyperparameters(space)
    lr = next(h for h in hp.space if h.name == "lr")
    exponents = np.log10([lr.random_sample(seed) for seed in range(1400)])
    counts, _ = np.histogram(exponents, bins=7, range=(-6, 1))
    assert exponents.min() >= -6 and exponents.max() <= 1
    assert counts.min() > 140 and counts.max() < 260, counts  # 200 each if uniform in log
    batch = next(h for h in hp.space if h.name == "batch_size")
    assert {batch.random_sample(s) for s in range(50)} == {"16", "32", "64", "128"}


def _finish(oracle, tuner_id, trial, score):
    assert oracle.report(tuner_id, trial.trial_id, {"val_accuracy": score}, 0)
    trial.status = "COMPLETED"
    assert oracle.finish(tuner_id, trial)


def test_coarse_to_fine_is_one_oracle_that_waits_at_a_stage_boundary_then_narrows(tmp_path):
    """Stage 1's trials, IDLE while its last trial runs, then stage 2 in ranges narrowed around
    the best of stage 1 with stage 2's epochs; a reloaded oracle goes on in stage 2."""
    cfg = load_config(["tuner=coarse_to_fine", "tuner.stages=[{trials:3,epochs:1},{trials:2,epochs:4}]",
                       "tuner.keep=1"])  # fmt: skip
    space, stages = validate_search(cfg)
    oracle = build_oracle(space, stages, cfg.tuner)
    oracle._set_project_dir(str(tmp_path), "search")
    assert oracle.max_trials == 5 and oracle.seed > 0
    assert oracle.objective.name == "val_accuracy" and oracle.objective.direction == "max"
    first = [oracle.create_trial(f"w{i}") for i in range(3)]
    assert [t.hyperparameters.values["tuner/stage"] for t in first] == [1, 1, 1]
    assert [t.hyperparameters.values["tuner/epochs"] for t in first] == [1, 1, 1]
    for trial, score in zip(first[:2], (0.9, 0.2), strict=True):
        _finish(oracle, f"w{first.index(trial)}", trial, score)
    assert oracle.create_trial("w0").status == IDLE  # w2's trial may still beat the others
    _finish(oracle, "w2", first[2], 0.5)
    best_lr = first[0].hyperparameters.values["lr"]
    second = oracle.create_trial("w0")
    assert second.status == RUNNING and second.hyperparameters.values["tuner/stage"] == 2
    assert second.hyperparameters.values["tuner/epochs"] == 4
    lr = next(h for h in oracle.get_space().space if h.name == "lr")
    assert lr.min_value <= best_lr <= lr.max_value
    assert math.log10(lr.max_value / lr.min_value) < 7 * 0.21  # +- 10% of 7 decades
    assert lr.min_value <= second.hyperparameters.values["lr"] <= lr.max_value
    assert second.hyperparameters.values["dropout"] == first[0].hyperparameters.values["dropout"]

    again = build_oracle(space, stages, cfg.tuner)  # a restarted search: keras-tuner's reload
    again._set_project_dir(str(tmp_path), "search")
    again.reload()
    assert again.stage == 1 and len(again.trials) == 4
    relr = next(h for h in again.get_space().space if h.name == "lr")
    assert (relr.min_value, relr.max_value) == (lr.min_value, lr.max_value)


def test_narrowing_log_range_in_decades():
    lr = Param("lr", "optimizer.lr", "float", 1e-6, 10.0, "log")
    [new] = narrow_space([lr], [{"lr": 1e-3}, {"lr": 1e-2}, {"lr": 3e-3}], margin=0.1)
    # kept exponents -3..-2, padded by 0.1 * 7 decades on each side
    assert math.isclose(new.low, 10**-3.7) and math.isclose(new.high, 10**-1.3)
    [clipped] = narrow_space([lr], [{"lr": 5.0}], margin=0.1)
    assert clipped.high == 10.0 and math.isclose(clipped.low, 5.0 / 10**0.7)


def test_narrowing_ints_round_outward_and_choices_keep_the_used_values():
    units = Param("units", "model.kernel_size", "int", 1, 101)
    [new] = narrow_space([units], [{"units": 40}, {"units": 45}], margin=0.05)
    assert (new.low, new.high) == (35, 50)
    drop = Param("drop", "model.dropout", "choice", values=([], [0.1], [0.3], [0.5]))
    [kept] = narrow_space([drop], [{"drop": [0.5]}, {"drop": []}, {"drop": [0.5]}])
    assert kept.values == ([], [0.5])
    assert narrow_space([drop], []) == [drop]  # nothing scored: the range stays


@settings(max_examples=60, deadline=None)
@given(
    bounds=st.tuples(st.floats(-6, 0), st.floats(0.5, 6)),
    kept=st.lists(st.floats(0, 1), min_size=1, max_size=5),
    margin=st.floats(0.01, 0.5),
    log=st.booleans(),
)
def test_narrowed_range_stays_inside_and_holds_every_kept_value(bounds, kept, margin, log):
    lo, hi = (10 ** bounds[0], 10 ** bounds[1]) if log else bounds
    param = Param("x", "optimizer.lr", "float", lo, hi, "log" if log else "linear")
    to_t = math.log10 if log else float
    values = [10 ** (to_t(lo) + f * (to_t(hi) - to_t(lo))) if log else lo + f * (hi - lo)
              for f in kept]  # fmt: skip
    [new] = narrow_space([param], [{"x": v} for v in values], margin)
    assert lo <= new.low < new.high <= hi
    new_lo, new_hi = to_t(new.low), to_t(new.high)
    assert all(new_lo - 1e-9 <= to_t(v) <= new_hi + 1e-9 for v in values)
    # no wider than the kept values plus the margin on each side
    assert new_hi - new_lo <= (max(kept) - min(kept) + 2 * margin) * (to_t(hi) - to_t(lo)) + 1e-9


def test_trial_config_sets_sampled_values_and_the_stage(c2f):
    space, _ = validate_search(c2f)
    values = {"lr": 0.0123, "l2": 1e-5, "batch_size": 64, "dropout": [0.3]}
    cfg = trial_config(c2f, space, values, epochs=5)
    assert cfg.optimizer.lr == 0.0123 and cfg.model.l2 == 1e-5
    assert cfg.data.batch_size == 64 and list(cfg.model.dropout) == [0.3]
    assert cfg.trainer.epochs == 5 and cfg.trainer.checkpoint_monitor == "val_accuracy"
    assert not cfg.sanity.overfit and not cfg.sanity.gradcheck and not cfg.monitors.activations
    assert c2f.optimizer.lr == 1e-3 and c2f.trainer.epochs == 20  # the base config is untouched
    floor = copy.deepcopy(c2f)
    floor.schedule.min_lr = 1e-4  # a sampled lr below the schedule's floor is an invalid trial
    with pytest.raises(ConfigError, match="schedule.min_lr"):
        trial_config(floor, space, {**values, "lr": 1e-5}, epochs=5)


def test_trial_checkpoint_names_are_ranked_by_the_ensembles_reader(tmp_path):
    """The stable name contract with ``ensemble=topk``: it reads the score from the name."""
    name = trial_checkpoint_name(1, "3", "val_accuracy", 0.91234)
    assert name == "stage1-trial003-val_accuracy0.9123.keras"
    parsed = parse_checkpoint_name(name)
    assert (parsed.label, parsed.metric, parsed.score) == (
        "stage1-trial003",
        "val_accuracy",
        0.9123,
    )
    (tmp_path / "trials").mkdir()
    for stage, trial, score in [(1, 0, 0.5), (1, 1, 0.93), (2, 0, 0.97), (2, 1, 0.12)]:
        (tmp_path / "trials" / trial_checkpoint_name(stage, trial, "val_accuracy", score)).touch()
    top = best_checkpoints(source_checkpoints(tmp_path), 3)
    assert [(s.label, s.score) for s in top] == [
        ("stage2-trial000", 0.97), ("stage1-trial001", 0.93), ("stage1-trial000", 0.5),
    ]  # fmt: skip
    assert [p.name for p in kept_checkpoints(tmp_path, 2, "1")] == [
        "stage2-trial001-val_accuracy0.1200.keras"
    ]


def test_search_figure_uses_log_axes_for_log_sampled_entries(c2f):
    space, _ = validate_search(c2f)
    records = [
        TrialRecord(1, 0, {"lr": 1e-4, "l2": 1e-6, "batch_size": 32, "dropout": []}, 0.4, "completed"),
        TrialRecord(1, 1, {"lr": 5.0, "l2": 1e-2, "batch_size": 16, "dropout": [0.5]}, math.nan, "diverged"),
        TrialRecord(2, 0, {"lr": 3e-3, "l2": 1e-5, "batch_size": 32, "dropout": []}, 0.95, "completed"),
    ]  # fmt: skip
    fig = search_figure(records, space, "val_accuracy")
    axes = {ax.get_xlabel().split(" ")[0]: ax for ax in fig.axes if ax.get_visible()}
    assert set(axes) == {"lr", "l2", "batch_size", "dropout"}
    assert axes["lr"].get_xscale() == "log" and axes["l2"].get_xscale() == "log"
    assert axes["lr"].get_xlim() == pytest.approx((1e-6, 10.0))
    assert axes["batch_size"].get_xscale() == "linear"
    assert [t.get_text() for t in axes["dropout"].get_xticklabels()] == ["[]", "[0.1]", "[0.3]", "[0.5]"]  # fmt: skip
    scored, crosses = axes["lr"].collections[0], axes["lr"].collections[1]
    assert scored.get_offsets().tolist() == [[1e-4, 0.4]]
    assert crosses.get_offsets()[:, 0].tolist() == [5.0]  # the diverged trial, no score


# --- StopOnDivergence on a real model ------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = ((x - x.mean(0)) / (x.std(0) + 1e-6)).astype("float32")
    return x[:600], y[:600], x[600:800], y[600:800]


def _mlp(lr: float) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10)])  # fmt: skip
    model.compile(keras.optimizers.SGD(lr), keras.losses.SparseCategoricalCrossentropy(True),
                  metrics=["accuracy"])  # fmt: skip
    return model


def test_divergence_stops_in_the_first_epoch_and_hides_its_metrics(digits, tmp_path):
    x, y, xv, yv = digits
    stop, ckpt = StopOnDivergence(factor=4.0), BestCheckpoint(tmp_path)
    history = _mlp(lr=20.0).fit(x, y, validation_data=(xv, yv), epochs=5, batch_size=32,
                                callbacks=[stop, ckpt], verbose=0)  # fmt: skip
    assert stop.diverged_epoch == 0 and ("first loss" in stop.reason or "nan" in stop.reason)
    assert len(history.history["loss"]) == 1  # stopped at once, not after 5 epochs
    assert math.isnan(history.history["val_accuracy"][0])
    assert ckpt.best is None and not list(tmp_path.glob("*.keras"))  # nothing kept


def test_healthy_training_is_not_stopped(digits, tmp_path):
    x, y, xv, yv = digits
    stop = StopOnDivergence(factor=4.0)
    history = _mlp(lr=0.05).fit(x, y, validation_data=(xv, yv), epochs=3, batch_size=32,
                                callbacks=[stop], verbose=0)  # fmt: skip
    assert stop.diverged_epoch is None and len(history.history["loss"]) == 3
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["val_accuracy"][-1] > 0.72  # learning: 0.775 (chance is 0.1)


@pytest.mark.parametrize("factor", [1.0, 0.5, math.inf, "4"])
def test_divergence_factor_is_validated(factor):
    with pytest.raises(ValueError, match="factor"):
        StopOnDivergence(factor=factor)
