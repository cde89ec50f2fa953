"""The learning-rate range test: find_learning_rate, its rules, and optimizer.lr=auto."""

from __future__ import annotations

import json
import math
import random

import keras
import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from kerasdiag import find_learning_rate
from kerasdiag.config import load_config
from kerasdiag.data import load_dataset
from kerasdiag.diagnosis.lr_range import LRFinderResult, suggest
from kerasdiag.modeling.factory import build_model
from kerasdiag.training.pipeline import fit

from conftest import run_train


@pytest.fixture(scope="module")
def digits_cfg():
    return load_config(["recipe=digits_softmax", "trainer.verbose=0"])


@pytest.fixture(scope="module")
def digits(digits_cfg):
    return load_dataset(digits_cfg.data)


def test_range_test_leaves_the_model_and_random_state_untouched(digits_cfg, digits):
    model = build_model(digits_cfg, digits)
    weights = [w.copy() for w in model.get_weights()]
    states = (random.getstate(), np.random.get_state()[1].copy())
    result = find_learning_rate(model, digits, batch_size=64)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    assert int(model.optimizer.iterations) == 0
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    # The curve: exponentially growing rates, the loss at ln 10 first, divergence at the end.
    lrs = np.array(result.lrs)
    assert lrs[0] == pytest.approx(1e-7)
    assert np.allclose(lrs[1:] / lrs[:-1], (10.0 / 1e-7) ** (1 / 99))
    assert result.losses[0] == pytest.approx(math.log(10), rel=0.1)
    assert result.stopped == "diverged" and len(lrs) < 100
    assert result.min_loss < 0.7 * result.smoothed[0]
    # The rule, recomputed from the curve: the minimum of the smoothed loss over 10.
    assert result.rule == "minimum"
    assert result.suggestion == pytest.approx(lrs[int(np.nanargmin(result.smoothed))] / 10)
    assert 1e-3 <= result.suggestion <= 1e-1  # Adam on normalised digits
    assert "divided by 10" in result.summary()


def test_suggestion_trains_at_least_as_well_as_the_default(digits_cfg, digits):
    """Digits, same epochs: Adam (1e-3) and SGD with momentum (0.01) at their recipe defaults
    against the range test's suggestion (benchmarks/bench_lr_finder.py also runs CIFAR)."""
    for optimizer in ("adam", "sgd_momentum"):
        cfg = load_config(
            ["recipe=digits_softmax", f"optimizer={optimizer}", "trainer.epochs=4"]
            + ["trainer.verbose=0"]
        )
        suggestion = find_learning_rate(build_model(cfg, digits), digits, batch_size=64).suggestion

        def val_accuracy(lr, cfg=cfg):
            run_cfg = OmegaConf.merge(cfg, {"optimizer": {"lr": lr}})
            return fit(run_cfg, build_model(run_cfg, digits), digits, []).history["val_accuracy"][
                -1
            ]

        default, tuned = val_accuracy(float(cfg.optimizer.lr)), val_accuracy(suggestion)
        assert tuned >= default - 0.01, (optimizer, suggestion, tuned, default)


def test_rules_on_a_known_curve():
    # A loss with its minimum at lr = 1e-2 and its steepest fall at 1e-3.
    lrs = list(np.logspace(-6, 0, 61))
    x = np.log10(lrs)
    smooth = list(2.3 - 2.0 / (1 + np.exp(-3 * (x + 3))) + np.where(x > -2, 4 * (x + 2) ** 2, 0))
    minimum = suggest(lrs, smooth, smooth, "minimum")
    assert minimum.min_lr == pytest.approx(1e-2, rel=0.2)
    assert minimum.suggestion == pytest.approx(minimum.min_lr / 10)
    assert suggest(lrs, smooth, smooth, "steepest").suggestion == pytest.approx(1e-3, rel=0.3)


def test_a_loss_that_never_falls_gives_no_suggestion_and_says_why():
    lrs = list(np.logspace(-7, 1, 50))
    flat = [2.3] * 49 + [float("nan")]
    result = suggest(lrs, flat, flat)
    assert result.suggestion is None
    assert "did not fall" in result.reason and "sanity.overfit" in result.reason
    assert result.summary().startswith("no suggestion")


def test_tf_data_dataset_and_json_round_trip(digits_cfg, digits):
    model = build_model(digits_cfg, digits)
    ds = tf.data.Dataset.from_tensor_slices((digits.x_train, digits.y_train)).batch(32)
    result = find_learning_rate(model, dataset=ds, max_steps=40, start_lr=1e-5, end_lr=1.0)
    assert len(result.lrs) <= 40 and result.settings["batch_size"] is None
    again = LRFinderResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.suggestion == result.suggestion and again.lrs == result.lrs


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"start_lr": 0.0}, "start_lr must be > 0"),
        ({"end_lr": 1e-8}, "end_lr must be above start_lr"),
        ({"max_steps": 5}, "max_steps must be an integer >= 10"),
        ({"rule": "valley"}, "rule must be one of minimum, steepest"),
        ({"divergence": 1.0}, "divergence must be > 1"),
    ],
)
def test_bad_arguments_are_named(digits_cfg, digits, kwargs, needle):
    model = build_model(digits_cfg, digits)
    with pytest.raises(ValueError, match=needle):
        find_learning_rate(model, digits, **kwargs)


def test_data_given_twice_or_not_at_all_is_an_error(digits_cfg, digits):
    model = build_model(digits_cfg, digits)
    with pytest.raises(ValueError, match="either as x, y or as dataset="):
        find_learning_rate(model)
    with pytest.raises(ValueError, match="y is required"):
        find_learning_rate(model, digits.x_train)


def test_subclassed_model_without_config_is_tested_and_put_back(digits):
    # no copy can be rebuilt from its config: the original trains and its state goes back
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(10)

        def call(self, x):
            return self.dense(keras.ops.reshape(x, (keras.ops.shape(x)[0], -1)))

    model = Net()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model(digits.x_train[:1])
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.variables]
    result = find_learning_rate(model, digits.x_train, digits.y_train, max_steps=30)
    assert result.suggestion is not None
    after = [keras.ops.convert_to_numpy(v) for v in model.variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert not model.optimizer.built


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    """A run of the digits recipe with ``optimizer.lr=auto``: (run directory, stdout)."""
    run_dir = tmp_path_factory.mktemp("auto") / "run"
    proc = run_train(
        "optimizer.lr=auto",
        "trainer.epochs=2",
        "sanity=off",
        "monitors=off",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir, proc.stdout


def test_train_with_lr_auto_uses_the_suggestion_and_reports_the_curve(auto_run):
    run_dir, stdout = auto_run
    curve = json.loads((run_dir / "lr_finder.json").read_text())
    suggestion = curve["suggestion"]
    assert f"optimizer.lr=auto: suggested learning rate {suggestion:.3g}" in stdout
    header = (run_dir / "metrics.csv").read_text().splitlines()
    column = header[0].split(",").index("learning_rate")
    assert float(header[1].split(",")[column]) == pytest.approx(suggestion, rel=1e-5)
    sanity = {s["name"]: s for s in json.loads((run_dir / "sanity.json").read_text())}
    assert sanity["lr_range"]["status"] == "pass"
    assert sanity["lr_range"]["value"] == pytest.approx(suggestion)
    report = (run_dir / "report.html").read_text()
    assert 'id="lr-range"' in report and 'alt="learning-rate range test"' in report
    assert "lr: auto" in (run_dir / "config.yaml").read_text()


@pytest.mark.parametrize("recorded", [True, False], ids=["metrics.csv", "lr_finder.json"])
def test_the_diagnosis_of_an_lr_auto_run_reads_the_resolved_rate(auto_run, tmp_path, recorded):
    """config.yaml says ``lr: auto``; the diagnosis' advice starts from the rate the run
    trained with: its recorded learning rate, or (a run stopped before its first epoch
    ended) the range test's suggestion that resolved it, never the string."""
    from kerasdiag.core.rundir import RunFiles
    from kerasdiag.diagnosis import diagnose, make_finding
    from kerasdiag.diagnosis.run_dir import run_learning_rate

    run_dir, _ = auto_run
    suggestion = json.loads((run_dir / "lr_finder.json").read_text())["suggestion"]
    copy = tmp_path / "run"
    names = ["config.yaml", "lr_finder.json"] + (["metrics.csv"] if recorded else [])
    copy.mkdir()
    for name in names:
        (copy / name).write_bytes((run_dir / name).read_bytes())
    rate = run_learning_rate(RunFiles(copy))
    assert isinstance(rate, float) and rate == pytest.approx(suggestion, rel=1e-5)
    # A slow run seen during training: its fix is judged again from the run's update
    # ratios (tiny here) and the rate, which it names.
    slow = make_finding("slow_convergence", "slow", {}, "placeholder", step=40, epoch=2)
    (copy / "doctor.json").write_text(json.dumps({"findings": [slow.to_dict()]}))
    rows = "".join(f"{s},1,dense/kernel,1e-5,dense\n" for s in range(1, 5))
    (copy / "update_ratios.csv").write_text("step,epoch,variable,ratio,layer\n" + rows)
    (found,) = [f for f in diagnose(copy, write=False) if f.symptom == "slow_convergence"]
    assert f"it is {suggestion:.3g})" in found.fix


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optimizer.lr=fast", "optimizer.lr"),
        ("sanity.lr_range_steps=5", "sanity.lr_range_steps"),
    ],
)
def test_bad_lr_settings_exit_2_naming_the_key(tmp_path, override, needle):
    proc = run_train(override, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and needle in proc.stderr
    assert not (tmp_path / "run").exists()


def test_lr_auto_is_refused_with_a_search():
    from kerasdiag.core.errors import ConfigError

    with pytest.raises(ConfigError, match="optimizer.lr"):
        load_config(["optimizer.lr=auto", "tuner=random"])
