"""The CIFAR recipes train for real on the CIFAR-10 sample and reach their expected accuracy."""

from __future__ import annotations

import json

import pytest

from kerasdiag.config import load_config
from kerasdiag.training.pipeline import run_training

QUIET = ["sanity=off", "monitors=off", "trainer.verbose=0", "trainer.tensorboard=false"]


def test_cifar_softmax_reaches_50_percent_in_10_epochs(tmp_path, cifar_dir):
    cfg = load_config(
        ["recipe=cifar_softmax", f"data.path={cifar_dir}", "trainer.epochs=10", *QUIET]
    )
    summary = run_training(cfg, tmp_path)
    assert summary["test"]["accuracy"] >= 0.50, summary  # measured 0.551 on the sample
    saved = json.loads((tmp_path / "test_metrics.json").read_text())
    assert saved["accuracy"] == pytest.approx(summary["test"]["accuracy"])


# cifar_focal trains on a long tail (the rarest class keeps 10%) and is tested on the balanced
# official test set, so it needs a few more epochs to beat chance clearly.
# Floors a few points under what each reaches (measured: svm 0.466, focal 0.326, fast 0.394).
@pytest.mark.parametrize(
    ("recipe", "epochs", "floor"),
    [("cifar_svm", 3, 0.42), ("cifar_focal", 6, 0.28), ("cifar_fast", 3, 0.34)],
)
def test_other_cifar_recipes_learn(tmp_path, cifar_dir, recipe, epochs, floor):
    cfg = load_config(
        [f"recipe={recipe}", f"data.path={cifar_dir}", f"trainer.epochs={epochs}", *QUIET]
    )
    summary = run_training(cfg, tmp_path)
    assert summary["test"]["accuracy"] > floor, summary  # chance is 0.10
