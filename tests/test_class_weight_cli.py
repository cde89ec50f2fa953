"""Class weights in a run: ``trainer.class_weight`` (null, balanced, or {class: weight}) is
what ``fit`` trains with and what the checks before training read.

Real data: scikit-learn's digits (ten classes) and breast-cancer table (212 malignant against
357 benign: the imbalance class weights are for).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from kerasdiag.checks.weights import class_weight_setting
from kerasdiag.config import load_config
from kerasdiag.core.errors import ConfigError
from kerasdiag.training.pipeline import run_training

from conftest import run_train

QUIET = ["trainer.verbose=0", "trainer.tensorboard=false", "sanity.gradcheck=false"]


def test_balanced_gives_every_class_the_same_total_weight():
    labels = load_breast_cancer().target  # 212 malignant (0), 357 benign (1)
    weights = class_weight_setting("balanced", labels, 2)
    assert weights == pytest.approx({0: 569 / (2 * 212), 1: 569 / (2 * 357)})
    totals = [weights[c] * np.sum(labels == c) for c in (0, 1)]
    assert totals[0] == pytest.approx(totals[1])
    # a mapping naming some classes: the others weigh 1, as fit needs every class
    assert class_weight_setting({1: 3.0}, labels, 3) == {0: 1.0, 1: 3.0, 2: 1.0}
    assert class_weight_setting(None, labels, 2) is None


@pytest.fixture(scope="module")
def cancer_csv(tmp_path_factory):
    bunch = load_breast_cancer()
    names = [n.replace(" ", "_") for n in bunch.feature_names]
    lines = [",".join([*names, "label"])]
    lines += [
        ",".join([*map(repr, map(float, row)), str(t)])
        for row, t in zip(bunch.data, bunch.target, strict=True)
    ]
    path = tmp_path_factory.mktemp("csv") / "cancer.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_balanced_run_trains_and_checks_the_weighted_loss(cancer_csv, tmp_path):
    cfg = load_config(["recipe=tabular_mlp", f"data.path={cancer_csv}", "data.target=label",
                       "loss=binary", "trainer.class_weight=balanced", "trainer.epochs=3",
                       *QUIET])  # fmt: skip
    run_training(cfg, tmp_path)
    sanity = {s["name"]: s for s in json.loads((tmp_path / "sanity.json").read_text())}
    initial = sanity["initial_loss"]
    assert initial["status"] == "pass", initial["message"]
    assert "weighted" in initial["message"]  # the expectation of the weighted loss
    # balanced weights average 1 over the whole training split, a little off it on a subset
    assert initial["expected"] == pytest.approx(np.log(2), rel=0.05)
    assert sanity["overfit"]["status"] == "pass", sanity["overfit"]["message"]
    assert "class_weight: balanced" in (tmp_path / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("trainer.class_weight={12:1}", "unknown class 12"),
        ("trainer.class_weight=heavy", "must be null, balanced or a mapping"),
    ],
)
def test_a_bad_class_weight_is_one_line_naming_the_key(override, needle, tmp_path):
    proc = run_train(override, "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'run'}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "trainer.class_weight" in lines[0] and needle in lines[0]
    assert not (tmp_path / "run").exists()


def test_class_weights_on_a_regression_are_refused():
    with pytest.raises(ConfigError, match=r"trainer\.class_weight.*trains regression"):
        load_config(["loss=mse", "data=diabetes", "trainer.class_weight=balanced"])
