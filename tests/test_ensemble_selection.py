"""Scores read from checkpoint file names, top-k choice, and the ensemble config checks."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from kerasdiag.config import load_config
from kerasdiag.core.errors import ConfigError, DataError
from kerasdiag.ensemble import best_checkpoints, parse_checkpoint_name, validate_ensemble_config
from kerasdiag.ensemble.selection import source_checkpoints


@pytest.mark.parametrize(
    ("name", "label", "metric", "score"),
    [
        (
            "trials/stage1-trial003-val_accuracy0.9123.keras",
            "stage1-trial003",
            "val_accuracy",
            0.9123,
        ),
        ("epoch007-val_loss1.2345.keras", "epoch007", "val_loss", 1.2345),
        ("best-epoch002-val_accuracy0.5000.keras", "best-epoch002", "val_accuracy", 0.5),
        ("trial1-val_top5_accuracy0.9.keras", "trial1", "val_top5_accuracy", 0.9),
        ("val_accuracy0.75.keras", "val_accuracy", "val_accuracy", 0.75),
        ("trial4-val_loss1.5e-05.keras", "trial4", "val_loss", 1.5e-5),
    ],
)
def test_parse_reads_label_metric_and_score(name, label, metric, score):
    parsed = parse_checkpoint_name(name)
    assert (parsed.label, parsed.metric) == (label, metric)
    assert parsed.score == pytest.approx(score)
    assert parsed.path == Path(name)


@pytest.mark.parametrize(
    "name",
    [
        "model.keras",
        "trial-3.keras",
        "stage1-trial003.keras",
        "stage1-trial003-val_accuracy0.91.h5",
        "x-0.5.keras",
    ],
)
def test_parse_rejects_names_without_a_score(name):
    assert parse_checkpoint_name(name) is None


def test_parse_keeps_diverged_scores_as_nan():
    assert math.isnan(parse_checkpoint_name("trial9-val_lossnan.keras").score)


@given(
    label=st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,6}){0,2}", fullmatch=True),
    metric=st.sampled_from(["val_accuracy", "val_loss", "accuracy", "val_top5_accuracy"]),
    score=st.floats(min_value=0, max_value=1e4, allow_nan=False),
)
def test_parse_round_trips_the_names_checkpoints_are_written_with(label, metric, score):
    parsed = parse_checkpoint_name(f"{label}-{metric}{score:.4f}.keras")
    assert (parsed.label, parsed.metric) == (label, metric)
    assert parsed.score == pytest.approx(float(f"{score:.4f}"))


def test_best_checkpoints_ranks_accuracy_high_first_and_skips_junk():
    names = [
        "t1-val_accuracy0.80.keras",
        "t2-val_accuracy0.95.keras",
        "t3-val_accuracy0.90.keras",
        "t0-val_accuracy0.90.keras",  # tie with t3: file name breaks it
        "t4-val_accuracynan.keras",  # diverged
        ".tmp-t5-val_accuracy0.99.keras",  # half-written
        "notes.keras",
    ]
    chosen = best_checkpoints(names, 3)
    assert [c.label for c in chosen] == ["t2", "t0", "t3"]
    assert [c.label for c in best_checkpoints(names, 10)] == ["t2", "t0", "t3", "t1"]


def test_best_checkpoints_ranks_losses_low_first():
    names = ["a-val_loss0.7.keras", "b-val_loss0.2.keras", "c-val_loss0.4.keras"]
    assert [c.label for c in best_checkpoints(names, 2)] == ["b", "c"]


def test_best_checkpoints_refuses_to_rank_different_metrics():
    with pytest.raises(DataError, match="val_accuracy, val_loss"):
        best_checkpoints(["a-val_loss0.7.keras", "b-val_accuracy0.9.keras"], 2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        best_checkpoints(["a-val_loss0.7.keras"], 0)


def test_source_checkpoints_prefers_a_search_trials_folder(tmp_path):
    (tmp_path / "trials").mkdir()
    for name in ("trials/s1-trial001-val_accuracy0.5.keras", "stray-val_accuracy0.9.keras"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in source_checkpoints(tmp_path)] == ["s1-trial001-val_accuracy0.5.keras"]
    assert [p.name for p in source_checkpoints(tmp_path / "trials")] == [
        "s1-trial001-val_accuracy0.5.keras"
    ]
    with pytest.raises(DataError, match="not a directory"):
        source_checkpoints(tmp_path / "missing")


@pytest.mark.parametrize("group", ["none", "seeds", "topk", "checkpoints", "ema"])
def test_every_ensemble_config_composes(group, tmp_path):
    overrides = [f"ensemble={group}"]
    if group == "topk":
        overrides.append(f"ensemble.source={tmp_path}")
    cfg = load_config(overrides)
    validate_ensemble_config(cfg)
    assert cfg.ensemble.name == group


@pytest.fixture(scope="module")
def base_cfg():
    return load_config()


@pytest.mark.parametrize(
    ("values", "key", "message"),
    [
        ({"ensemble.name": "seeds", "ensemble.members": 1}, "ensemble.members", "at least 2"),
        ({"ensemble.name": "ema", "ensemble.members": 0}, "ensemble.members", "at least 1"),
        ({"ensemble.name": "topk"}, "ensemble.source", "search's run directory"),
        ({"ensemble.name": "topk", "ensemble.source": "/no/such/dir"}, "ensemble.source",
         "no such"),
        ({"ensemble.name": "checkpoints", "ensemble.members": 4, "trainer.epochs": 3},
         "ensemble.members", "exceeds trainer.epochs=3"),
        ({"ensemble.name": "seeds", "tuner.name": "random"}, "ensemble.name",
         "run the search first"),
        ({"ensemble.name": "bagging"}, "ensemble.name", "must be one of"),
    ],
)  # fmt: skip
def test_bad_ensemble_configs_name_the_key(base_cfg, values, key, message):
    cfg = copy.deepcopy(base_cfg)
    for dotted, value in values.items():
        OmegaConf.update(cfg, dotted, value)
    with pytest.raises(ConfigError, match=message) as info:
        validate_ensemble_config(cfg)
    assert info.value.key == key
