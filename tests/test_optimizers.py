"""Optimizers, schedules in epochs, clipping: checked on real optimizer steps and a real fit."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from kerasdiag.config import load_config
from kerasdiag.modeling.optimizers import build_optimizer, build_schedule, lr_at_epoch

SPE = 7  # steps per epoch: not a round number, so epoch/step mix-ups show


def schedule(*overrides, epochs=20):
    cfg = load_config([*overrides, f"trainer.epochs={epochs}"])
    lr, callbacks = build_schedule(cfg.optimizer.lr, cfg.schedule, SPE, epochs)
    return cfg.optimizer.lr, lr, callbacks


def test_step_decay_halves_every_k_epochs():
    a0, lr, _ = schedule("schedule=step", "schedule.drop_every=5", "schedule.factor=0.5")
    got = [lr_at_epoch(lr, e, SPE) for e in (0, 4, 4.9, 5, 9, 10, 19)]
    assert got == pytest.approx([a0, a0, a0, a0 / 2, a0 / 2, a0 / 4, a0 / 8])


def test_step_decay_tenfold_every_20():
    a0, lr, _ = schedule("schedule=step", "schedule.drop_every=20", "schedule.factor=0.1",
                         epochs=60)  # fmt: skip
    assert [lr_at_epoch(lr, e, SPE) for e in (19, 20, 40)] == pytest.approx([a0, a0 / 10, a0 / 100])


def test_exponential_decay_in_epochs():
    a0, lr, _ = schedule("schedule=exponential", "schedule.decay_rate=0.3")
    for e in (0, 1, 15 / SPE, 10):  # 15 steps: continuous within an epoch
        assert lr_at_epoch(lr, e, SPE) == pytest.approx(a0 * math.exp(-0.3 * e), rel=1e-5)


def test_inverse_time_and_keras_style_default():
    a0, lr, _ = schedule("schedule=inverse_time", "schedule.decay_rate=0.5")
    assert lr_at_epoch(lr, 4, SPE) == pytest.approx(a0 / (1 + 0.5 * 4), rel=1e-6)
    a0, lr, _ = schedule("schedule=inverse_time", epochs=10)  # decay = lr / epochs
    assert lr_at_epoch(lr, 5, SPE) == pytest.approx(a0 / (1 + a0 / 10 * 5), rel=1e-6)


def test_cosine_with_warmup():
    a0, lr, _ = schedule("schedule=cosine", "schedule.warmup_epochs=2", epochs=12)
    assert lr_at_epoch(lr, 0, SPE) == pytest.approx(0.0, abs=1e-12)
    assert lr_at_epoch(lr, 1, SPE) == pytest.approx(a0 / 2, rel=1e-5)
    assert lr_at_epoch(lr, 2, SPE) == pytest.approx(a0, rel=1e-5)
    assert lr_at_epoch(lr, 7, SPE) == pytest.approx(a0 / 2, rel=1e-4)  # halfway through decay
    assert lr_at_epoch(lr, 12, SPE) == pytest.approx(0.0, abs=1e-9)


def test_plateau_is_keras_reduce_lr_on_plateau():
    a0, lr, callbacks = schedule("schedule=plateau", "schedule.patience=1")
    assert lr == a0 and isinstance(callbacks[0], keras.callbacks.ReduceLROnPlateau)


def _one_step(opt_overrides, grad):
    cfg = load_config(["optimizer=sgd", "optimizer.lr=1.0", *opt_overrides])
    opt = build_optimizer(cfg.optimizer, 1.0)
    var = keras.Variable(np.zeros_like(grad))
    opt.apply_gradients([(keras.ops.convert_to_tensor(grad), var)])
    return -np.asarray(var)  # SGD at lr 1: the applied (clipped) gradient


def test_clip_by_global_norm_by_norm_and_by_value():
    g = np.array([3.0, 4.0], "float32")  # norm 5
    assert np.linalg.norm(_one_step(["optimizer.global_clipnorm=0.5"], g)) == pytest.approx(0.5)
    assert np.linalg.norm(_one_step(["optimizer.clipnorm=1.0"], g)) == pytest.approx(1.0)
    np.testing.assert_allclose(_one_step(["optimizer.clipvalue=0.1"], g), [0.1, 0.1])
    np.testing.assert_allclose(_one_step([], g), g)


@pytest.mark.parametrize(
    ("choice", "cls"),
    [("sgd", "SGD"), ("momentum", "SGD"), ("nesterov", "SGD"), ("adagrad", "Adagrad"),
     ("rmsprop", "RMSprop"), ("adam", "Adam"), ("adamw", "AdamW")],
)  # fmt: skip
def test_every_optimizer_choice_builds(choice, cls):
    cfg = load_config([f"optimizer={choice}", "optimizer.use_ema=true"])
    opt = build_optimizer(cfg.optimizer, cfg.optimizer.lr)
    assert type(opt).__name__ == cls and opt.use_ema
    if choice == "nesterov":
        assert opt.nesterov and opt.momentum == 0.9


def test_rmsprop_decay_is_configurable():
    for rho in (0.9, 0.99, 0.999):
        cfg = load_config(["optimizer=rmsprop", f"optimizer.rho={rho}"])
        assert build_optimizer(cfg.optimizer, 1e-3).rho == rho


def test_lr_logged_per_epoch_in_a_real_fit(tmp_path):
    """The lr in metrics.csv follows the step schedule epoch by epoch (epochs -> steps right)."""
    from kerasdiag.core.rundir import read_metrics_csv
    from kerasdiag.training.pipeline import run_training

    cfg = load_config(
        ["schedule=step", "schedule.drop_every=2", "schedule.factor=0.5", "trainer.epochs=5",
         "optimizer.lr=0.01", "trainer.early_stopping.enabled=false", "sanity=off",
         "monitors=off", "trainer.verbose=0", "data.limit=300"]
    )  # fmt: skip
    run_training(cfg, tmp_path)
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    lrs = [rows[e]["learning_rate"] for e in range(1, 6)]
    assert lrs == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])
