"""Regression and multi-label from the command line: recipes end to end on real data, the
task's metrics, monitor and verdicts, one-line errors for a target that does not fit the
loss, and planted faults still caught."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from kerasdiag.config import load_config
from kerasdiag.core.errors import ConfigError
from kerasdiag.data.loaders import load_dataset
from kerasdiag.training.pipeline import run_training

from conftest import run_train

QUIET = ["trainer.verbose=0", "trainer.tensorboard=false"]


def stages(run_dir) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads((run_dir / "sanity.json").read_text())}


def symptoms(run_dir) -> dict[str, str]:
    found = json.loads((run_dir / "diagnosis.json").read_text())
    return {f["symptom"]: f["severity"] for f in found}


def test_regression_recipe_from_the_command_line(tmp_path):
    """A healthy MLP on scikit-learn's diabetes table: no accuracy anywhere, mae and rmse in
    the target's units, the best epoch by val_loss, the initial loss judged against the
    standardised targets' spread, and a report that says the accuracy table does not apply."""
    run_dir = tmp_path / "run"
    proc = run_train("recipe=tabular_regression", "trainer.epochs=6", *QUIET,
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    test = json.loads((run_dir / "test_metrics.json").read_text())
    assert "accuracy" not in test and test["monitor"] == "val_loss"
    # the progression score spans 25..346 (std 77): an MLP after a few epochs is far from
    # both 0 and the std in MAE (measured 46)
    assert 30 < test["mae"] < 70 and test["rmse"] >= test["mae"]
    found = stages(run_dir)
    assert found["initial_loss"]["status"] == "pass", found["initial_loss"]
    assert found["overfit"]["status"] == "pass", found["overfit"]
    assert "error" not in symptoms(run_dir).values()
    per_target = json.loads((run_dir / "test_confusion.json").read_text())
    assert per_target["task"] == "regression" and per_target["r2"][0] > 0.2  # measured 0.44
    assert per_target["mae"][0] == pytest.approx(test["mae"], rel=1e-3)
    page = (run_dir / "report.html").read_text()
    assert "Errors per target" in page and "accuracy-based bias/variance verdict does not" in page
    assert "test mae" in proc.stdout and "test accuracy" not in proc.stdout


def test_multilabel_recipe_reports_exact_match_and_label_accuracy(tmp_path):
    """Four derived attributes of each real digit image: exact match as accuracy, per-label
    accuracy beside it, the initial loss ln 2 per label, and the report's per-label table."""
    cfg = load_config(["recipe=digits_multilabel", "trainer.epochs=6", *QUIET])
    summary = run_training(cfg, tmp_path)
    test = summary["test"]
    assert test["monitor"] == "val_loss"
    # every label right is harder than one label right (measured 0.85 and 0.95)
    assert 0.6 < test["accuracy"] < test["label_accuracy"]
    found = stages(tmp_path)
    assert found["initial_loss"]["status"] == "pass", found["initial_loss"]
    assert abs(found["initial_loss"]["expected"] - np.log(2)) < 1e-3
    per_label = json.loads((tmp_path / "test_confusion.json").read_text())
    assert per_label["labels"] == ["even", "at_least_5", "prime", "closed_loop"]
    assert per_label["exact_match"] == pytest.approx(test["accuracy"], abs=1e-3)
    assert "Per-label accuracy" in (tmp_path / "report.html").read_text()


def _write_csv(path, header, rows) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture(scope="module")
def diabetes_csv(tmp_path_factory):
    """scikit-learn's diabetes table as a user's CSV; and a copy whose sex column is text."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    folder = tmp_path_factory.mktemp("csv")
    _write_csv(folder / "diabetes.csv", [*bunch.feature_names, "progression"],
               [[*x, y] for x, y in zip(bunch.data, bunch.target, strict=True)])  # fmt: skip
    names = [n if n != "sex" else "group" for n in bunch.feature_names]
    text = [[*x[:1], "female" if x[1] == 2 else "male", *x[2:], y]
            for x, y in zip(bunch.data, bunch.target, strict=True)]  # fmt: skip
    _write_csv(folder / "groups.csv", [*names, "progression"], text)
    return folder / "diabetes.csv"


def test_csv_regression_targets_are_streamed_standardised(diabetes_csv, tmp_path):
    cfg = load_config(["recipe=tabular_regression", "data=csv", f"data.path={diabetes_csv}",
                       "data.target=[progression,bmi]", "data.sample_size=100"])  # fmt: skip
    data = load_dataset(cfg.data, "regression")
    assert data.num_classes == 2 and data.class_names == ["progression", "bmi"]
    y = data.y_train
    assert y.shape[1] == 2 and np.allclose(y.mean(0), 0, atol=1e-4)
    assert 140 < data.target_mean[0] < 165 and 70 < data.target_std[0] < 85
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 442
    # a resumed run reads the same standardised targets back from its split record
    data.prepare()
    data.write_record(tmp_path / "splits.json")
    again = load_dataset(cfg.data, "regression")
    again.adopt(tmp_path / "splits.json")
    assert np.array_equal(again.y_train, data.y_train) and again.y_test.dtype == np.float32


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["loss=mse", "data.target=group"], "column 'group' holds 'female' (line 2), not a number"),
        (["loss=multilabel", "data.target=[sex,bp]"], "needs 0/1 label columns"),
        (["loss=softmax", "data.target=[sex,bp]"], "predicts one class column"),
    ],
)
def test_a_target_that_does_not_fit_the_loss_is_one_line(diabetes_csv, overrides, needle):
    path = diabetes_csv.with_name("groups.csv" if "group" in overrides[-1] else "diabetes.csv")
    cfg = load_config(["data=csv", f"data.path={path}", "trainer.checkpoint_monitor="
                       "val_loss", *overrides], validate=False)  # fmt: skip
    with pytest.raises(ConfigError, match="data.target") as caught:
        from kerasdiag.config import validate_config

        validate_config(cfg)
        load_dataset(cfg.data, "multilabel" if cfg.loss.name == "multilabel" else "regression")
    assert needle in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["loss=mse"], "loss.name"),  # the digits hold classes, not numbers
        (["recipe=tabular_regression", "trainer.checkpoint_monitor=val_accuracy"],
         "trainer.checkpoint_monitor"),
        (["recipe=tabular_regression", "tuner=random", "tuner.objective=val_accuracy"],
         "tuner.objective"),
        (["recipe=digits_softmax", "data=diabetes"], "loss.name"),
    ],
)  # fmt: skip
def test_task_mismatches_are_refused_before_training(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides)


def test_the_default_monitor_follows_the_task():
    """A regression loss has no accuracy: the best epoch and a search's trials are chosen on
    val_loss without an override; a classifier keeps val_accuracy."""
    regression = load_config(["loss=mse", "data=diabetes", "tuner=random"])
    assert regression.trainer.checkpoint_monitor == "val_loss"
    assert regression.trainer.early_stopping.monitor == "val_loss"
    assert regression.tuner.objective == "val_loss"
    classifier = load_config(["tuner=random"])
    assert (classifier.trainer.checkpoint_monitor, classifier.tuner.objective) == (
        "val_accuracy", "val_accuracy")  # fmt: skip


def test_unscaled_regression_targets_are_caught(tmp_path):
    """The same healthy model, its targets left in their units (25..346): the model cannot
    memorise 20 examples at the recipe's learning rate, and the doctor sees the gradients."""
    cfg = load_config(["recipe=tabular_regression", "data.scale_target=false",
                       "trainer.epochs=3", *QUIET])  # fmt: skip
    run_training(cfg, tmp_path)
    assert stages(tmp_path)["overfit"]["status"] == "fail"
    assert symptoms(tmp_path).get("exploding_gradients") == "error"


def test_a_search_ranks_regression_trials_by_val_loss(tmp_path):
    """A search on a regression recipe: each trial's checkpoint is named by its val_loss, the
    best is the lowest, and its test score is an MAE."""
    from kerasdiag.search import run_search

    cfg = load_config(["recipe=tabular_regression", "tuner=random", "tuner.objective=val_loss",
                       "tuner.stages=[{trials:2,epochs:2}]", "tuner.trials_per_process=0",
                       "tuner.space={lr:{key:optimizer.lr,type:float,min:1e-3,max:1e-2}}",
                       *QUIET])  # fmt: skip
    summary = run_search(cfg, tmp_path)
    scores = [float(p.stem.rsplit("val_loss", 1)[1]) for p in (tmp_path / "trials").glob("*.keras")]
    assert len(scores) == 2 and summary["best"]["score"] == pytest.approx(min(scores), abs=1e-4)
    assert "mae" in summary["test"] and "accuracy" not in summary["test"]


def test_a_regression_ensemble_averages_the_members_predictions(tmp_path):
    """Two seeds of the regression recipe joined: the ensemble predicts the mean of its
    members' values, so its RMSE (a norm of the error) is at most their mean RMSE."""
    from kerasdiag.ensemble import run_ensemble

    cfg = load_config(["recipe=tabular_regression", "ensemble=seeds", "ensemble.members=2",
                       "trainer.epochs=3", "sanity=off", "monitors=off", *QUIET])  # fmt: skip
    report = run_ensemble(cfg, tmp_path)
    assert report["combination"] == "mean of the members' predicted values"
    members = [m["test_rmse"] for m in report["members"]]
    assert report["ensemble"]["test_rmse"] <= np.mean(members) + 1e-6
    assert 30 < report["ensemble"]["test_mae"] < 70  # in the target's units (std 77)


def test_npz_arrays_serve_regression_and_refuse_non_binary_labels(tmp_path):
    from sklearn.datasets import load_diabetes

    from kerasdiag.core.errors import DataError

    bunch = load_diabetes(scaled=False)
    path = tmp_path / "diabetes.npz"
    np.savez(path, x_train=bunch.data[:350], y_train=bunch.target[:350],
             x_test=bunch.data[350:], y_test=bunch.target[350:])  # fmt: skip
    cfg = load_config(["recipe=tabular_regression", "data=npz", f"data.path={path}"])
    data = load_dataset(cfg.data, "regression")
    assert data.task == "regression" and data.y_test.shape == (92, 1)
    assert abs(float(data.y_train.mean())) < 1e-5 and 60 < data.target_std[0] < 90
    cfg = load_config(["recipe=digits_multilabel", "data=npz", f"data.path={path}"])
    with pytest.raises(DataError, match="y_train must be 0/1 rows"):
        load_dataset(cfg.data, "multilabel")


def test_the_command_line_refuses_a_text_target_for_regression_in_one_line(diabetes_csv, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train("recipe=tabular_regression", "data=csv", "data.target=group",
                     f"data.path={diabetes_csv.with_name('groups.csv')}",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert "data.target='group'" in errors[0] and "not a number" in errors[0]
    assert "Traceback" not in proc.stderr and not run_dir.exists()
