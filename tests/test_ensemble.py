"""Ensembles on real data: seeds (CIFAR-10 sample), checkpoints, EMA and top-k (digits)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from kerasdiag.config import load_config
from kerasdiag.core.errors import DataError
from kerasdiag.data import load_dataset
from kerasdiag.ensemble import build_ensemble, load_member, parse_checkpoint_name, run_ensemble
from kerasdiag.modeling.factory import build_model
from kerasdiag.search.results import trial_checkpoint_name
from kerasdiag.training.pipeline import fit, seed_everything

from conftest import run_train

QUIET = ["trainer.verbose=0", "trainer.tensorboard=false"]
# A small MLP on the digits: about a second per training.
DIGITS = ["model.hidden_units=[16]", *QUIET]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


# --- seeds on the CIFAR-10 sample ---------------------------------------------------


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory, cifar_dir):
    """Three MLPs on the real CIFAR-10 sample, 6 epochs each, seeds 0, 1, 2.

    Each member is its best-validation checkpoint; they land within ~3 points of each other
    (0.383, 0.386, 0.415 test accuracy for seeds 0-2), so the ensemble (0.411) beats their
    mean by ~1.5 points but not always the luckiest; its NLL (1.631) beats every member's
    (1.685-1.716).
    """
    cfg = load_config(
        [
            "recipe=cifar_softmax",
            f"data.path={cifar_dir}",
            "model=mlp",
            "model.hidden_units=[128]",
            "trainer.epochs=6",
            "ensemble=seeds",
            "ensemble.members=3",
            *QUIET,
        ]
    )
    run_dir = tmp_path_factory.mktemp("seeds")
    report = run_ensemble(cfg, run_dir)
    return cfg, run_dir, report, load_dataset(cfg.data)


def test_seed_ensemble_beats_its_average_member_and_reports_the_best(seeds_run):
    _, run_dir, report, data = seeds_run
    assert json.loads((run_dir / "ensemble.json").read_text()) == report
    accuracies = [m["test_accuracy"] for m in report["members"]]
    best = report["best_single"]
    assert best["test_accuracy"] == max(accuracies)
    assert report["test_examples"] == len(data.y_test) == 1000
    # what averaging buys: better than the average member, and better calibrated than any
    assert report["ensemble"]["test_accuracy"] > np.mean(accuracies) + 0.005
    assert report["ensemble"]["test_nll"] < min(m["test_nll"] for m in report["members"])
    assert report["gain_over_best_single"] == pytest.approx(
        report["ensemble"]["test_accuracy"] - best["test_accuracy"]
    )
    # -log is convex: the NLL of the mean probability is at most the members' mean NLL.
    member_nll = np.mean([m["test_nll"] for m in report["members"]])
    assert report["ensemble"]["test_nll"] <= member_nll + 1e-9


def test_each_seed_trains_in_its_own_folder(seeds_run):
    cfg, run_dir, report, _ = seeds_run
    assert [m["name"] for m in report["members"]] == ["seed0", "seed1", "seed2"]
    first_kernels = []
    for seed, member in enumerate(report["members"]):
        folder = run_dir / "members" / f"seed{seed}"
        saved = OmegaConf.load(folder / "config.yaml")
        assert saved.trainer.seed == seed and saved.data.seed == cfg.data.seed
        rows = (folder / "metrics.csv").read_text().strip().splitlines()
        assert len(rows) == 1 + cfg.trainer.epochs
        assert (folder / "test_metrics.json").is_file()
        # Pre-training checks once per recipe: the members differ by seed alone.
        assert (folder / "sanity.json").is_file() == (seed == 0)
        path = run_dir / member["path"]
        assert path.parent == folder / "checkpoints" and path.name.startswith("best-")
        assert parse_checkpoint_name(path).score == member["val_score"]
        first_kernels.append(load_member(path).get_layer("hidden1_dense").get_weights()[0])
    # Different seeds, different initialisations: no two members share weights.
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.allclose(first_kernels[i], first_kernels[j], atol=1e-3)


def test_ensemble_file_loads_in_safe_mode_and_averages_member_softmaxes(seeds_run):
    _, run_dir, report, data = seeds_run
    ensemble = keras.models.load_model(run_dir / "ensemble.keras", safe_mode=True)
    assert {"seed0", "seed1", "seed2"} <= {layer.name for layer in ensemble.layers}
    x = data.x_test[:100]
    members = [load_member(run_dir / m["path"]) for m in report["members"]]
    expected = np.mean([_softmax(m.predict(x, verbose=0)) for m in members], axis=0)
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), expected, atol=1e-5)


def test_an_interrupted_ensemble_reuses_its_finished_members(seeds_run):
    cfg, run_dir, report, _ = seeds_run
    assert not list((run_dir / "members").glob("*/backup"))  # removed once a member finished
    csvs = sorted((run_dir / "members").glob("seed*/metrics.csv"))
    stamps = [p.stat().st_mtime_ns for p in csvs]
    # Killed after the members, before the ensemble was written: the rerun only joins them.
    (run_dir / "ensemble.json").unlink()
    (run_dir / "ensemble.keras").unlink()
    again = run_ensemble(cfg, run_dir)
    assert [p.stat().st_mtime_ns for p in csvs] == stamps
    assert again["members"] == report["members"] and again["ensemble"] == report["ensemble"]


# --- checkpoints of one run, through scripts/train.py -----------------------------------


def test_checkpoint_ensemble_from_the_command_line(tmp_path):
    # Multiclass-hinge members: their scores go through the same softmax as logits.
    run_dir = tmp_path / "run"
    done = run_train(
        "loss=multiclass_hinge",
        "ensemble=checkpoints",
        "ensemble.members=3",
        "trainer.epochs=5",
        "trainer.early_stopping.enabled=false",
        "sanity=off",
        "monitors=off",
        *DIGITS,
        f"hydra.run.dir={run_dir}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ensemble=checkpoints: 3 members" in done.stdout
    epochs = sorted((run_dir / "members" / "seed0" / "checkpoints").glob("epoch*.keras"))
    assert len(epochs) == 5
    report = json.loads((run_dir / "ensemble.json").read_text())
    by_score = sorted(epochs, key=lambda p: (-parse_checkpoint_name(p).score, p.name))
    assert [run_dir / m["path"] for m in report["members"]] == by_score[:3]
    assert [m["name"] for m in report["members"]] == [
        f"seed0/{p.name.split('-')[0]}" for p in by_score[:3]
    ]
    assert report["ensemble"]["test_accuracy"] > 0.78  # measured 0.838 (chance is 0.1)
    keras.models.load_model(run_dir / "ensemble.keras", safe_mode=True)


# --- the moving average as an extra member ------------------------------------------


class _WeightRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([v.numpy().copy() for v in self.model.trainable_variables])


def test_ema_member_holds_the_moving_average_of_the_training_weights(tmp_path):
    cfg = load_config(
        [
            "ensemble=ema",
            "trainer.epochs=2",
            "trainer.early_stopping.enabled=false",
            "optimizer.ema_momentum=0.9",
            *DIGITS,
        ]
    )
    report = run_ensemble(cfg, tmp_path)
    assert [m["name"] for m in report["members"]] == ["seed0", "seed0/ema"]
    ema_model = load_member(tmp_path / "members" / "seed0" / "ema.keras")

    # The same training again, recording the raw weights after every step: their EMA
    # (first step copied, then avg = m * avg + (1 - m) * w, as Keras' optimizers do).
    data = load_dataset(cfg.data)
    member_cfg = OmegaConf.merge(cfg, {"optimizer": {"use_ema": True}})
    seed_everything(member_cfg.trainer)
    model = build_model(member_cfg, data)
    recorder = _WeightRecorder()
    fit(member_cfg, model, data, [recorder])
    average = recorder.steps[0]
    for weights in recorder.steps[1:]:
        average = [0.9 * a + 0.1 * w for a, w in zip(average, weights, strict=True)]
    saved = [v.numpy() for v in ema_model.trainable_variables]
    for got, want, last in zip(saved, average, recorder.steps[-1], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert np.max(np.abs(got - last)) > 1e-3  # the average, not the last raw weights
    assert min(m["test_accuracy"] for m in report["members"]) > 0.62  # measured 0.674


# --- the best k models of a search ------------------------------------------------------


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory):
    """A search-like folder: three real digits models named as the search names its trials."""
    source = tmp_path_factory.mktemp("search")
    (source / "trials").mkdir()
    base = load_config(["trainer.epochs=2", *QUIET])
    data = load_dataset(base.data)
    for trial, (units, lr) in enumerate([(8, 3e-4), (32, 3e-3), (16, 1e-3)], start=1):
        cfg = OmegaConf.merge(base, {"model": {"hidden_units": [units]}, "optimizer": {"lr": lr}})
        model = build_model(cfg, data)
        fit(cfg, model, data, [])
        acc = model.evaluate(data.x_val, data.y_val, verbose=0, return_dict=True)["accuracy"]
        model.save(source / "trials" / trial_checkpoint_name(1, trial, "val_accuracy", acc))
    return source


def test_topk_ensemble_takes_the_best_scored_trials(search_dir, tmp_path):
    cfg = load_config(["ensemble=topk", "ensemble.members=2", f"ensemble.source={search_dir}"])
    report = run_ensemble(cfg, tmp_path)
    trials = [parse_checkpoint_name(p) for p in (search_dir / "trials").glob("*.keras")]
    top2 = sorted(trials, key=lambda t: -t.score)[:2]
    assert [m["name"] for m in report["members"]] == [t.label for t in top2]
    assert [m["val_score"] for m in report["members"]] == [t.score for t in top2]
    assert not (tmp_path / "members").exists()  # nothing trained
    ensemble = keras.models.load_model(tmp_path / "ensemble.keras", safe_mode=True)
    assert ensemble.output.shape[-1] == 10


def test_topk_refuses_members_trained_on_other_data(search_dir, tmp_path, cifar_dir):
    cfg = load_config(
        [
            "recipe=cifar_softmax",
            f"data.path={cifar_dir}",
            "ensemble=topk",
            f"ensemble.source={search_dir}",
        ]
    )
    with pytest.raises(DataError, match=r"inputs \(8, 8, 1\).*use the data config"):
        run_ensemble(cfg, tmp_path)


# --- build_ensemble on its own -------------------------------------------------------------


def _tiny(seed: int, softmax: bool = False, input_shape=(64,)) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, name="inputs")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    out = keras.layers.Dense(10, activation="softmax" if softmax else None, name="out")(hidden)
    return keras.Model(inputs, out, name="tiny")


@pytest.fixture(scope="module")
def digits_x():
    from sklearn.datasets import load_digits

    return (load_digits().data[:50] / 16.0).astype("float32")


def test_members_ending_in_a_softmax_are_averaged_as_they_are(digits_x, tmp_path):
    logits, probs = _tiny(1), _tiny(2, softmax=True)
    ensemble = build_ensemble([logits, probs], ["a/logits", "b/probs"])
    expected = (
        _softmax(logits.predict(digits_x, verbose=0)) + probs.predict(digits_x, verbose=0)
    ) / 2
    np.testing.assert_allclose(ensemble.predict(digits_x, verbose=0), expected, atol=1e-6)
    ensemble.save(tmp_path / "e.keras")  # "/" in member names is made safe for layer names
    loaded = keras.models.load_model(tmp_path / "e.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(digits_x, verbose=0), expected, atol=1e-6)


def test_build_ensemble_rejects_what_cannot_be_averaged():
    with pytest.raises(ValueError, match="at least 2"):
        build_ensemble([_tiny(1)])
    with pytest.raises(ValueError, match="unique"):
        build_ensemble([_tiny(1), _tiny(2)], ["same", "same"])
    with pytest.raises(ValueError, match="member 'wide'.*share the input shape"):
        build_ensemble([_tiny(1), _tiny(2, input_shape=(32,))], ["narrow", "wide"])
