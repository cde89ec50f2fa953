"""diagnose(run_dir) and the curve judgements it shares with TrainingDoctor."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from kerasdiag import diagnose
from kerasdiag.callbacks.nan_stop import NonFiniteLossError
from kerasdiag.config import load_config, validate_doctor_config
from kerasdiag.core.errors import ConfigError
from kerasdiag.core.rundir import RunFiles
from kerasdiag.data import load_dataset
from kerasdiag.diagnosis import (
    Finding,
    Thresholds,
    accuracies_at,
    bias_variance,
    confusion_summary,
    curve_findings,
    failed_stages,
    loss_shape,
    oscillation_index,
    restores_best_epoch,
    sanity_findings,
)
from kerasdiag.diagnosis.symptoms import fix_for
from kerasdiag.modeling.safe_load import load_model_safely
from kerasdiag.training.pipeline import run_training

# Per-epoch training losses measured on sklearn digits (first-step loss 3.008, tests/doctor_zoo.py).
HEALTHY_ADAM = [2.033, 1.164, 0.595, 0.396, 0.303, 0.248, 0.212, 0.186, 0.167, 0.151]
SGD_LR_2 = [3.733, 2.099, 1.751, 1.524, 1.762, 1.798, 1.56, 1.499, 1.458, 1.447]
SGD_LR_1E3 = [2.734, 2.6, 2.482, 2.378, 2.283, 2.198, 2.119, 2.046]
TWO_UNITS = [2.272, 2.076, 1.996, 1.939, 1.732, 1.488, 1.334, 1.229, 1.15, 1.092, 1.05, 1.016]
INITIAL = 3.008


@pytest.mark.parametrize(
    ("losses", "shape"),
    [
        (HEALTHY_ADAM, "ok"),
        (SGD_LR_2, "plateau_high"),  # fast drop, then a bumpy plateau high up
        (SGD_LR_1E3, "linear"),  # linear decay
        (TWO_UNITS, "ok"),  # a capacity limit flattens smoothly: not the learning rate
        ([2.3, 2.1, 2.4, 2.9, 3.6], "rising"),  # rising = far too high
        (HEALTHY_ADAM[:3], "too_short"),
    ],
)
def test_loss_shape_reads_the_learning_rate_from_the_curve(losses, shape):
    assert loss_shape(losses, INITIAL, Thresholds())["shape"] == shape


def test_lr_findings_name_the_rate_to_try():
    (high,) = curve_findings({"loss": SGD_LR_2}, initial_loss=INITIAL, lr=2.0)
    assert high.symptom == "lr_too_high" and high.source == "curves"
    assert "optimizer.lr=0.2" in high.fix
    (low,) = curve_findings({"loss": SGD_LR_1E3}, initial_loss=INITIAL, lr=1e-3)
    assert low.symptom == "lr_too_low" and "optimizer.lr=0.01" in low.fix
    # per-epoch fall over epochs 4-8 against epochs 1-4
    assert low.evidence["drop_ratio"] == pytest.approx(
        ((2.378 - 2.046) / 4) / ((2.734 - 2.378) / 3)
    )


def test_healthy_update_ratios_veto_lr_too_low():
    # Update ratios around 1e-3 say the rate is fine; the linear decay then has another cause.
    assert curve_findings({"loss": SGD_LR_1E3}, initial_loss=INITIAL, update_ratio=2e-3) == []
    (low,) = curve_findings({"loss": SGD_LR_1E3}, initial_loss=INITIAL, update_ratio=3e-5)
    assert low.evidence["median_update_ratio"] == 3e-5


@pytest.mark.parametrize(
    ("train_err", "dev_err", "bayes", "verdict"),
    [
        (0.01, 0.11, None, "high variance"),  # the bias/variance table
        (0.15, 0.16, None, "high bias"),
        (0.15, 0.30, None, "high bias and high variance"),
        (0.005, 0.01, None, "low bias, low variance"),
        (0.15, 0.16, 0.14, "low bias, low variance"),  # Bayes error 14%: little is avoidable
    ],
)
def test_bias_variance_table(train_err, dev_err, bayes, verdict):
    table = bias_variance(1 - train_err, 1 - dev_err, 0.9, bayes)
    assert table["verdict"] == verdict
    assert table["avoidable_bias"] == pytest.approx(train_err - (bayes or 0.0))
    assert table["variance"] == pytest.approx(dev_err - train_err)
    assert table["test_error"] == pytest.approx(0.1)
    assert table["bayes_error_assumed"] is (bayes is None)
    fixes = " ".join(table["fixes"])
    assert ("bigger network" in fixes) == ("high bias" in verdict)
    assert ("more data" in fixes) == ("high variance" in verdict)


def test_rising_validation_loss_is_overfitting_even_with_a_small_gap():
    history = {
        "loss": [1.0, 0.5, 0.3, 0.2, 0.1],
        "val_loss": [1.0, 0.6, 0.5, 0.62, 0.7],
        "accuracy": [0.7, 0.85, 0.9, 0.95, 0.97],
        "val_accuracy": [0.7, 0.84, 0.88, 0.92, 0.93],
    }
    (finding,) = curve_findings(history)
    assert finding.symptom == "overfitting"
    assert finding.evidence["min_val_loss_epoch"] == 3
    assert finding.evidence["final_val_loss"] == 0.7


def test_oscillation_index_ignores_one_bad_batch():
    steady = [1.0, 0.98, 0.97, 0.99, 0.96, 0.95, 0.97, 0.94]
    assert oscillation_index(steady, 2.3) < 0.02
    assert oscillation_index([*steady[:4], 9.0, *steady[4:]], 2.3) < 0.02
    bouncing = [2.0, 6.0, 1.5, 7.0, 2.5, 8.0, 1.0, 5.0]
    assert oscillation_index(bouncing, 2.3) > 1.0


def test_thresholds_are_validated_and_overridable():
    th = Thresholds.of({"dead_fraction": 0.9, "oscillation_window": 30})
    assert th.dead_fraction == 0.9 and th.oscillation_window == 30
    assert Thresholds.of(None) == Thresholds()
    with pytest.raises(ValueError, match="unknown threshold 'dead'"):
        Thresholds.of({"dead": 0.5})
    with pytest.raises(ValueError, match="thresholds.bias. must be a finite number > 0"):
        Thresholds.of({"bias": -1})
    with pytest.raises(ValueError, match="'slow_epochs' must be an integer"):
        Thresholds.of({"slow_epochs": 2.5})
    with pytest.raises(ValueError, match="thresholds.variance. must be a number"):
        Thresholds.of({"variance": "high"})


def test_stricter_thresholds_change_the_verdict():
    history = {"loss": HEALTHY_ADAM, "accuracy": [0.96] * 10, "val_accuracy": [0.93] * 10}
    assert curve_findings(history, initial_loss=INITIAL) == []
    (finding,) = curve_findings(history, initial_loss=INITIAL, thresholds={"variance": 0.02})
    assert finding.symptom == "overfitting"


def test_bias_variance_table_is_of_the_epoch_whose_weights_were_kept():
    history = {
        "epoch": [1, 2, 3, 4],
        "loss": [1.0, 0.5, 0.3, 0.2],
        "accuracy": [0.70, 0.97, 0.995, 0.999],
        "val_accuracy": [0.68, 0.955, 0.86, math.nan],
    }
    # The last epoch lacks a validation score: the last with both is epoch 3.
    assert accuracies_at(history) == (0.995, 0.86, 3)
    assert accuracies_at(history, weights_epoch=2) == (0.97, 0.955, 2)
    assert accuracies_at(history, weights_epoch=4) == (0.995, 0.86, 3)
    assert accuracies_at({"loss": [1.0]}) == (None, None, None)
    # Epoch 3 overfits (variance 13.5%); epoch 2, the one kept, does not (1.5%).
    (finding,) = curve_findings(history, initial_loss=2.3)
    assert finding.symptom == "overfitting" and finding.evidence["epoch"] == 3
    assert curve_findings(history, initial_loss=2.3, weights_epoch=2) == []


# --- whole run directories from the real pipeline ---------------------------------------------

QUICK = ["sanity=off", "monitors=off", "trainer.tensorboard=false", "trainer.verbose=0"]


def train(tmp_path_factory, name, *overrides):
    run_dir = tmp_path_factory.mktemp(name)
    run_training(load_config(["recipe=digits_softmax", *QUICK, *overrides]), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def healthy_run(tmp_path_factory):
    return train(tmp_path_factory, "healthy", "trainer.epochs=10")


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory):
    return train(
        tmp_path_factory,
        "slow",
        "optimizer=sgd",
        "optimizer.lr=0.001",
        "trainer.epochs=8",
        "bayes_error=0.02",
    )


def test_healthy_run_is_clean(healthy_run):
    assert diagnose(healthy_run) == []
    assert json.loads((healthy_run / "diagnosis.json").read_text()) == []


def test_slow_run_named_from_its_files(slow_run):
    findings = diagnose(slow_run)
    symptoms = [f.symptom for f in findings]
    assert symptoms == ["lr_too_low", "underfitting"]
    low, under = findings
    assert "optimizer.lr=0.01" in low.fix  # read from config.yaml
    assert under.evidence["bayes_error"] == 0.02 and not under.evidence["bayes_error_assumed"]
    # judged at the kept epoch: the first of the tied best val_accuracy epochs 7 and 8
    kept = json.loads((slow_run / "test_metrics.json").read_text())["weights_epoch"]
    assert under.epoch == kept == 7
    stored = json.loads((slow_run / "diagnosis.json").read_text())
    assert [Finding.from_dict(d) for d in stored] == findings
    # An explicit Bayes error wins over the config's: 80% leaves no avoidable bias.
    assert [f.symptom for f in diagnose(slow_run, bayes_error=0.8, write=False)] == ["lr_too_low"]


# 60 examples, a wide MLP without L2: overfits within 30 epochs.
# 50 training examples to memorise, 150 validation examples: enough to show the gap beyond the
# noise of the validation error (on 10, as data.limit=60 gives, it would be inconclusive)
OVERFITS = [
    "data.limit=200",
    "data.val_fraction=0.75",
    "model.hidden_units=[256]",
    "model.l2=0",
    "optimizer.lr=0.003",
    "data.batch_size=16",
    "trainer.epochs=30",
]


def test_overfitting_run(tmp_path_factory):
    run_dir = train(
        tmp_path_factory,
        "overfit",
        *OVERFITS,
        "trainer.early_stopping.enabled=false",
    )
    findings = {f.symptom: f for f in diagnose(run_dir)}
    # the kept (best-validation) epoch comes early: high variance, and maybe some bias too
    assert set(findings) <= {"overfitting", "underfitting"}
    finding = findings["overfitting"]
    assert finding.evidence["variance"] > 0.1
    # Judged at the kept epoch (the best checkpoint, whose test score is reported).
    kept = json.loads((run_dir / "test_metrics.json").read_text())["weights_epoch"]
    assert finding.epoch == finding.evidence["epoch"] == kept
    # The training side is the kept model scored on training examples in inference mode, as
    # validation is; loading the saved model and scoring them again gives the same number.
    test = json.loads((run_dir / "test_metrics.json").read_text())
    assert finding.evidence["train_error"] == pytest.approx(1 - test["train_accuracy"])
    data = load_dataset(load_config(["recipe=digits_softmax", *OVERFITS]).data)
    assert test["train_examples"] == len(data.y_train) == 50  # all of the limited split
    model = load_model_safely(run_dir / test["model"])
    scores = model.evaluate(data.x_train, data.y_train, verbose=0, return_dict=True)
    assert test["train_accuracy"] == pytest.approx(scores["accuracy"], abs=1e-6)
    assert finding.evidence["dev_error"] - finding.evidence["train_error"] > 0.1
    # digits rows are a table: more data and regularization, no image augmentation
    assert "more data" in finding.fix and "model.l2" in finding.fix
    assert "augment" not in finding.fix


def test_kept_weights_epoch_is_recorded_and_used(tmp_path_factory):
    """Early stopping restores its best epoch: test_metrics.json names it, and the bias/variance
    numbers are that epoch's, like the test score."""
    run_dir = train(
        tmp_path_factory,
        "early",
        *OVERFITS,
        "trainer.early_stopping.patience=3",
    )
    test = json.loads((run_dir / "test_metrics.json").read_text())
    history = RunFiles(run_dir).history()
    monitor = history[test["monitor"]]  # the one monitor: checkpoint and early stopping
    best = int(history["epoch"][monitor.index(max(monitor))])
    assert test["weights_epoch"] == best < history["epoch"][-1]
    train_acc, val_acc, epoch = accuracies_at(history, test["weights_epoch"])
    assert epoch == best and val_acc == history["val_accuracy"][best - 1]
    judged = [f for f in diagnose(run_dir) if {"epoch", "dev_error"} <= set(f.evidence)]
    assert judged, "an overfitting run is judged on its train/dev errors"
    for finding in judged:
        assert finding.evidence["epoch"] == best
        assert finding.evidence["dev_error"] == pytest.approx(1 - val_acc)
    report = (run_dir / "report.html").read_text()
    assert f"Errors of epoch {best}: the weights the model kept" in report
    assert (
        f"(training error of those weights on {test['train_examples']} training examples, "
        "scored as the validation and test splits are)" in report
    )
    # the header gives those scores as the kept model's on training data, not as test scores
    assert "test train_" not in report
    assert (
        f"accuracy {test['train_accuracy']:.4g}, loss {test['train_loss']:.4g} "
        f"({test['train_examples']} training examples, scored as the test split is)" in report
    )


def test_nan_stop_record_becomes_a_finding(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("nan")
    cfg = load_config(
        ["recipe=digits_softmax", *QUICK, "optimizer=sgd", "optimizer.lr=1e6", "trainer.epochs=2"]
    )
    with pytest.raises(NonFiniteLossError):
        run_training(cfg, run_dir)
    findings = diagnose(run_dir)
    nan = findings[0]  # errors come first
    assert nan.symptom == "nan" and nan.severity == "error" and nan.source == "nan_stop"
    assert nan.step == json.loads((run_dir / "nan.json").read_text())["global_step"]
    assert "lower the learning rate 10x" in nan.fix


def test_doctor_findings_are_carried_over(healthy_run, tmp_path):
    # A doctor.json beside the curves: its in-training findings lead, the curves are judged anew.
    for name in ("metrics.csv", "config.yaml"):
        (tmp_path / name).write_bytes((healthy_run / name).read_bytes())
    found = Finding(
        "dying_relu",
        "warning",
        {"dead_fraction": 0.8},
        "lower the lr",
        step=0,
        epoch=1,
        layer="hidden1_relu",
    )
    (tmp_path / "doctor.json").write_text(
        json.dumps({"findings": [found.to_dict()], "initial_loss": 2.3})
    )
    assert diagnose(tmp_path) == [found]


def test_missing_run_dir_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        diagnose(tmp_path / "nope")
    assert diagnose(tmp_path) == []  # nothing to judge in an empty directory
    assert not math.isnan(Thresholds().bias)


def test_gradient_thresholds_match_gradient_monitor():
    import inspect

    from kerasdiag.callbacks import GradientMonitor

    th = Thresholds()
    defaults = inspect.signature(GradientMonitor).parameters
    assert (th.exploding_norm, th.gradient_growth, th.vanishing_ratio) == (
        defaults["max_norm"].default,
        defaults["growth"].default,
        defaults["vanishing_ratio"].default,
    )


def test_doctor_config_is_checked_before_tensorflow_starts():
    code = (
        "import sys\n"
        "from kerasdiag.config import load_config\n"
        "from kerasdiag.config import validate_doctor_config\n"
        "validate_doctor_config(load_config(['+monitors.doctor_thresholds.bias=0.1']).monitors)\n"
        "assert 'tensorflow' not in sys.modules\n"
        "try:\n"
        "    validate_doctor_config(load_config(['monitors.doctor_stop_on=[nna]']).monitors)\n"
        "except Exception as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("invalid config: monitors.doctor_stop_on=['nna']: unknown")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["+monitors.doctor_thresholds.dead=0.5"], "monitors.doctor_thresholds.dead"),
        (["+monitors.doctor_thresholds.bias=0"], "monitors.doctor_thresholds.bias"),
        (["monitors.doctor_budget=0"], "monitors.doctor_budget"),
    ],
)
def test_bad_doctor_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        validate_doctor_config(load_config(overrides, validate=False).monitors)
    assert info.value.key == key


def test_a_nan_record_becomes_one_finding_with_its_numbers_and_fix():
    """nan.json -> the ``nan`` finding: the record's numbers as evidence, its own advice as
    the fix, or the exploding-gradients fix at the record's learning rate when it has none."""
    from kerasdiag.diagnosis import nan_stop_finding
    from kerasdiag.diagnosis.symptoms import fix_for

    record = {"symptom": "nan", "loss": "nan", "batch": 7, "completed_epochs": 2, "epoch": 3,
              "global_step": 77, "learning_rate": 0.5}  # fmt: skip
    finding = nan_stop_finding(record)
    assert finding.symptom == "nan" and finding.source == "nan_stop"
    assert finding.step == 77 and finding.epoch == 3
    assert finding.message == (
        "nan at step 77, epoch 3: the training loss became nan in batch 7 (training stopped; "
        "the last 2 complete epochs and the best checkpoint are kept)."
    )
    assert finding.evidence == {k: v for k, v in record.items() if k != "symptom"}
    assert finding.fix == fix_for("exploding_gradients", 0.5)
    assert "0.5" in finding.fix  # the rate the run used is named
    advised = nan_stop_finding({**record, "advice": ["lower the lr", "clip gradients"]})
    assert advised.fix == "lower the lr; clip gradients"
    assert "advice" not in advised.evidence


def test_confusion_summary_counted_by_hand():
    # labels as a CSV loader may give them (floats); counts stay integers in the JSON
    y_true = [0.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    y_pred = [0.0, 1.0, 0.0, 2.0, 1.0, 2.0]
    summary = confusion_summary(y_true, y_pred, ["cat", "dog", "eel", "fox"])
    assert summary == {
        "class_names": ["cat", "dog", "eel", "fox"],
        "matrix": [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]],
        "per_class_accuracy": [1.0, 0.5, 2 / 3, None],  # no fox in the test split
        "accuracy": 4 / 6,
    }
    assert (
        json.dumps(summary["matrix"]) == "[[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]]"
    )
    # one example, right: accuracy 1 (and no division by zero on an empty split)
    assert confusion_summary([1], [1], ["cat", "dog"])["accuracy"] == 1.0
    assert confusion_summary([], [], ["cat", "dog"])["accuracy"] == 0.0


def test_failed_stages_are_named_from_sanity_json():
    stages = [
        {"name": "initial_loss", "status": "pass"},
        {"name": "overfit", "status": "fail"},
        {"name": "gradcheck", "status": "skipped"},
        {"name": 7, "status": "fail"},
    ]
    assert failed_stages(stages) == ["overfit", "7"]
    assert failed_stages([]) == []


def test_diagnose_reads_the_runs_own_doctor_thresholds(tmp_path):
    # a 9-point gap between training and validation accuracy: overfitting by default (5%)
    (tmp_path / "metrics.csv").write_text(
        "epoch,loss,accuracy,val_loss,val_accuracy\n1,0.5,0.90,0.6,0.85\n2,0.3,0.99,0.5,0.90\n"
    )
    (tmp_path / "config.yaml").write_text("optimizer:\n  lr: 0.1\n")
    assert [f.symptom for f in diagnose(tmp_path)] == ["overfitting"]
    (tmp_path / "config.yaml").write_text("monitors:\n  doctor_thresholds:\n    variance: 0.2\n")
    assert diagnose(tmp_path) == []  # the run's own, looser threshold
    # thresholds passed in win over the run's
    assert [f.symptom for f in diagnose(tmp_path, thresholds={"variance": 0.05})] == ["overfitting"]


def test_a_run_whose_early_stopping_kept_its_best_epoch_is_not_told_to_stop_early(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "epoch,loss,accuracy,val_loss,val_accuracy\n1,0.5,0.90,0.6,0.85\n2,0.3,0.99,0.5,0.90\n"
    )
    (tmp_path / "config.yaml").write_text(
        "trainer:\n  early_stopping:\n    enabled: true\n    restore_best_weights: true\n"
    )
    (found,) = diagnose(tmp_path)
    assert found.symptom == "overfitting"
    assert found.fix == fix_for("overfitting", stopped_early=True)
    assert "stop early" not in found.fix
    for early in ("enabled: false\n    restore_best_weights: true",
                  "enabled: true\n    restore_best_weights: false"):  # fmt: skip
        (tmp_path / "config.yaml").write_text(f"trainer:\n  early_stopping:\n    {early}\n")
        assert diagnose(tmp_path)[0].fix == fix_for("overfitting")
    assert restores_best_epoch({}) is False and restores_best_epoch(None) is False


def test_each_failed_sanity_stage_is_one_whole_finding():
    stages = [
        {"name": "initial_loss", "status": "pass", "value": 2.3, "expected": 2.3},
        {"name": "overfit", "status": "fail", "value": 0.9, "expected": 0.05,
         "message": "loss 0.9 after 200 steps"},
        {"name": "gradcheck", "status": "fail", "value": None, "expected": 1e-7},
    ]  # fmt: skip
    overfit, gradcheck = sanity_findings(stages)
    assert overfit.to_dict() == {
        "symptom": "failed_sanity_check",
        "severity": "warning",
        "evidence": {"stage": "overfit", "value": 0.9, "expected": 0.05},
        "fix": fix_for("failed_sanity_check"),
        "step": None,
        "epoch": None,
        "layer": None,
        "message": "failed_sanity_check: the overfit check failed before training: loss 0.9 "
        "after 200 steps.",
        "source": "sanity",
        "count": 1,
        "last_step": None,
    }
    # without a message the sentence ends at the stage's name
    assert gradcheck.message == "failed_sanity_check: the gradcheck check failed before training."
    assert gradcheck.evidence == {"stage": "gradcheck", "value": None, "expected": 1e-7}
    assert sanity_findings(stages[:1]) == []
    # a stage that names its own fix: the finding gives that one, said once
    (own,) = sanity_findings(
        [{"name": "input_baseline", "status": "fail", "value": 2.2, "expected": 2.3,
          "message": "the model does not use its input: loss 2.2.",
          "fix": "find where the input is lost."}]
    )  # fmt: skip
    assert own.fix == "find where the input is lost"
    assert own.message == (
        "failed_sanity_check: the input_baseline check failed before training: the model does "
        "not use its input: loss 2.2."
    )
    assert str(own).count("Fix:") == 1


# --- diagnose() on hand-made run directories: what each file contributes (no training) ---------


def _write_run(run_dir, losses, *, accuracy=None, val_accuracy=None, files=()):
    """A run directory with ``metrics.csv`` from the given curves and ``files`` {name: text}."""
    run_dir.mkdir(exist_ok=True)
    columns = {"loss": losses, "accuracy": accuracy, "val_accuracy": val_accuracy}
    columns = {k: v for k, v in columns.items() if v is not None}
    lines = ["epoch," + ",".join(columns)]
    lines += [
        f"{e + 1}," + ",".join(str(v[e]) for v in columns.values()) for e in range(len(losses))
    ]
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    for name, text in dict(files).items():
        (run_dir / name).write_text(text)
    return run_dir


def _update_ratios_csv(ratio):
    # UpdateRatioMonitor's rows: step, epoch, variable, ratio. Biases do not count.
    return (
        "step,epoch,variable,ratio\n"
        f"10,1,dense/kernel,{ratio}\n20,2,dense/kernel,{ratio}\n20,2,dense/bias,0.5\n"
    )


def _sanity_json(initial_loss, failed=()):
    stages = [{"name": "initial_loss", "status": "pass", "value": initial_loss, "expected": 2.3}]
    stages += [{"name": name, "status": "fail", "value": 1.0, "expected": 0.1} for name in failed]
    return json.dumps(stages)


def test_diagnose_takes_the_initial_loss_from_the_doctor_else_from_sanity(tmp_path):
    # a linear decay (lr_too_low): its evidence and message give the scale it was judged on
    both = _write_run(
        tmp_path / "both",
        SGD_LR_1E3,
        files={
            "doctor.json": json.dumps({"findings": [], "initial_loss": 3.008}),
            "sanity.json": _sanity_json(2.9),
        },
    )
    (finding,) = diagnose(both)
    assert finding.symptom == "lr_too_low"
    assert finding.evidence["initial_loss"] == 3.008  # the doctor's, measured on the first batch
    assert finding.message.endswith("68% of the initial 3.008.")  # 2.046 / 3.008
    sanity_only = _write_run(
        tmp_path / "sanity_only", SGD_LR_1E3, files={"sanity.json": _sanity_json(2.9)}
    )
    (finding,) = diagnose(sanity_only)
    assert finding.evidence["initial_loss"] == 2.9
    (finding,) = diagnose(_write_run(tmp_path / "neither", SGD_LR_1E3))
    assert finding.evidence["initial_loss"] == SGD_LR_1E3[0]  # the first epoch's loss


def test_diagnose_reads_the_median_update_ratio_of_the_kernels(tmp_path):
    # a slow linear decay with tiny updates: too low a learning rate, the ratio as evidence
    (finding,) = diagnose(
        _write_run(tmp_path, SGD_LR_1E3, files={"update_ratios.csv": _update_ratios_csv(1e-5)})
    )
    assert finding.symptom == "lr_too_low"
    assert finding.evidence["median_update_ratio"] == 1e-5
    # the same curve with healthy updates (1e-3 of the weights' norm per step): not the rate
    (tmp_path / "update_ratios.csv").write_text(_update_ratios_csv(1e-3))
    assert diagnose(tmp_path) == []


def test_one_answer_on_raising_the_learning_rate_from_the_whole_runs_ratio(tmp_path):
    """The doctor's slow_convergence at epoch 2 read the ratio so far (1.8e-3: 'do not raise
    the learning rate'), the curve rule the whole run's (0.92e-3: 'raise it 3-10x'); digits
    under SGD 0.001 said both. The diagnosis judges both from the whole run, step 0 left out."""
    from kerasdiag.diagnosis.rules import slow_finding
    from kerasdiag.diagnosis.symptoms import large_updates_fix

    early = slow_finding(1, 2.27, 2.32, Thresholds(), 0.001, step=76, update_ratio=1.8e-3)
    assert early.fix == large_updates_fix(1.8e-3)
    rows = "step,epoch,variable,ratio\n0,1,d/kernel,0.5\n0,1,e/kernel,0.5\n0,1,f/kernel,0.5\n"
    rows += "".join(f"{s},{s // 10 + 1},d/kernel,{r}\n" for s, r in ((10, 9e-4), (20, 9.2e-4)))
    doctor = json.dumps({"findings": [early.to_dict()], "initial_loss": INITIAL})
    config = "optimizer:\n  lr: 0.001\n"
    _write_run(
        tmp_path,
        SGD_LR_1E3,
        files={"update_ratios.csv": rows, "doctor.json": doctor, "config.yaml": config},
    )
    slow, low = diagnose(tmp_path)
    assert (slow.symptom, low.symptom) == ("slow_convergence", "lr_too_low")
    # step 0's 0.5 left out: the median of 9e-4 and 9.2e-4
    assert slow.evidence["median_update_ratio"] == pytest.approx(9.1e-4)
    assert low.evidence["median_update_ratio"] == pytest.approx(9.1e-4)
    assert slow.fix == fix_for("slow_convergence", 0.001) and low.fix == fix_for(
        "lr_too_low", 0.001
    )
    assert slow.message == early.message and slow.step == 76  # what it saw, as it said it
    # the reverse: slow so far at small steps, large over the run: neither says raise it
    early = slow_finding(1, 2.27, 2.32, Thresholds(), 0.001, causes=["dying_relu"],
                         update_ratio=5e-4)  # fmt: skip
    (tmp_path / "doctor.json").write_text(json.dumps({"findings": [early.to_dict()]}))
    (tmp_path / "update_ratios.csv").write_text(_update_ratios_csv(2e-3))
    (slow,) = diagnose(tmp_path)
    assert slow.fix == "first fix dying_relu (found above); then " + large_updates_fix(2e-3)
    # no ratios measured: the doctor's own judgement stands
    (tmp_path / "update_ratios.csv").unlink()
    slow = next(f for f in diagnose(tmp_path) if f.symptom == "slow_convergence")
    assert slow.fix == early.fix


def test_diagnose_shows_the_test_error_beside_the_bias_variance_table(tmp_path):
    _write_run(
        tmp_path,
        HEALTHY_ADAM[:2],
        accuracy=[0.90, 0.99],
        val_accuracy=[0.85, 0.90],
        files={"test_metrics.json": json.dumps({"accuracy": 0.875, "loss": 0.4})},
    )
    (finding,) = diagnose(tmp_path)
    assert finding.symptom == "overfitting"
    assert finding.evidence["test_error"] == pytest.approx(0.125)
    assert finding.evidence["dev_error"] == pytest.approx(0.10)


def test_diagnose_puts_errors_first_and_reports_a_nan_stop_once(tmp_path):
    dying = Finding("dying_relu", "warning", {"dead_fraction": 0.8}, "fix it", epoch=1,
                    layer="dense")  # fmt: skip
    nan_record = {"symptom": "nan", "loss": "nan", "batch": 3, "completed_epochs": 1,
                  "epoch": 2, "global_step": 13, "learning_rate": 0.5}  # fmt: skip
    _write_run(
        tmp_path,
        HEALTHY_ADAM[:1],
        files={
            "doctor.json": json.dumps({"findings": [dying.to_dict()]}),
            "nan.json": json.dumps(nan_record),
            "sanity.json": _sanity_json(2.3, failed=["overfit"]),
        },
    )
    findings = diagnose(tmp_path)
    # the NaN stop (an error) leads although it was read after the doctor's warning
    assert [(f.symptom, f.source) for f in findings] == [
        ("nan", "nan_stop"),
        ("dying_relu", "doctor"),
        ("failed_sanity_check", "sanity"),
    ]
    assert findings[2].evidence == {"stage": "overfit", "value": 1.0, "expected": 0.1}
    assert json.loads((tmp_path / "diagnosis.json").read_text()) == [f.to_dict() for f in findings]
    # the doctor saw the NaN too: one nan finding, the doctor's
    seen = Finding("nan", "error", {"loss": "nan"}, "lower the lr", step=13, epoch=2)
    (tmp_path / "doctor.json").write_text(
        json.dumps({"findings": [seen.to_dict(), dying.to_dict()]})
    )
    assert [f.symptom for f in diagnose(tmp_path)] == ["nan", "dying_relu", "failed_sanity_check"]
    assert diagnose(tmp_path)[0] == seen
