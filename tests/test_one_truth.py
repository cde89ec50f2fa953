"""One run, one truth: the score, the saved model, the advice and the report agree (issue 13).

One real run of ``scripts/train.py`` (digits, all monitors and the doctor, a sanity stage
made to fail) serves most tests; the rest are small and direct.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasdiag.callbacks import MonitorWarning, ProbeSchedule, UpdateRatioMonitor
from kerasdiag.callbacks.factory import MIN_PROBES_PER_RUN, probe_freq, probe_schedule
from kerasdiag.config import load_config
from kerasdiag.core.errors import ConfigError, DataError
from kerasdiag.data import cifar, load_dataset
from kerasdiag.diagnosis import (
    SANITY_SYMPTOMS,
    SYMPTOMS,
    curve_findings,
    make_finding,
    rules,
    symptoms,
)
from kerasdiag.diagnosis.advice import keras_terms
from kerasdiag.modeling.factory import resolve_builder
from kerasdiag.modeling.safe_load import load_model_safely
from kerasdiag.report.builder import run_status
from kerasdiag.report.filters import filter_summary, filters_caption
from kerasdiag.training.pipeline import run_training

from conftest import REPO, run_train

EPOCHS = 6
# The overfit stage gets one step: it cannot memorise, so the stage fails (and only it).
RUN = [
    "recipe=digits_softmax",
    f"trainer.epochs={EPOCHS}",
    "sanity.gradcheck=false",
    "sanity.regularization=false",
    "sanity.overfit_max_steps=1",
]
CODES = re.compile(r"\((?:[BMPRSOHEG]\d{1,2})\)|\b[BMPRSOHEG]\d{1,2}:\s")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("truth") / "run"
    proc = run_train(*RUN, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir, proc


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- the reported score is of the model on disk --------------------------------------------


def test_test_score_is_of_the_saved_model(run):
    run_dir, _ = run
    test = json.loads((run_dir / "test_metrics.json").read_text())
    path = run_dir / test["model"]
    assert path.is_file() and path.parent.name == "checkpoints"
    assert [p.name for p in path.parent.glob("*.keras")] == [path.name]
    data = load_dataset(load_config(RUN).data)
    scores = load_model_safely(path).evaluate(
        data.x_test, data.y_test, batch_size=64, verbose=0, return_dict=True
    )
    assert scores["accuracy"] == pytest.approx(test["accuracy"], abs=1e-6)
    assert scores["loss"] == pytest.approx(test["loss"], rel=1e-5)
    # The best epoch by the one monitor (first of ties, as the checkpoint and early stopping).
    rows = read_csv(run_dir / "metrics.csv")
    val = [float(r[test["monitor"]]) for r in rows]
    best = int(np.argmax(val)) + 1
    assert test["monitor"] == "val_accuracy" and test["weights_epoch"] == best
    assert f"epoch{best:03d}" in path.name
    assert test["monitor_value"] == pytest.approx(max(val))
    confusion = json.loads((run_dir / "test_confusion.json").read_text())
    assert confusion["accuracy"] == pytest.approx(test["accuracy"], abs=1e-6)
    assert np.asarray(confusion["matrix"]).sum() == len(data.y_test)


def test_early_stopping_and_checkpoint_share_one_monitor():
    cfg = load_config(["trainer.checkpoint_monitor=val_loss"])
    assert cfg.trainer.early_stopping.monitor == "val_loss"
    with pytest.raises(ConfigError, match="trainer.early_stopping.monitor.*checkpoint_monitor"):
        load_config(["trainer.early_stopping.monitor=val_loss"])
    load_config(["trainer.early_stopping.monitor=val_loss", "trainer.early_stopping.enabled=false"])


# --- one voice ------------------------------------------------------------------------------


def test_run_speaks_with_one_voice(run):
    run_dir, proc = run
    assert "MonitorWarning" not in proc.stderr and "UpdateRatioMonitor" not in proc.stdout
    for finding in json.loads((run_dir / "diagnosis.json").read_text()):
        assert finding["fix"].startswith(symptoms.fix_for(finding["symptom"])[:30]) or (
            finding["fix"].startswith("first fix")
        )


def test_every_symptom_has_one_fix_in_the_table():
    assert {*SYMPTOMS, *SANITY_SYMPTOMS, "diverged"} == set(symptoms.SYMPTOMS)
    sources = {
        p: p.read_text() for p in (REPO / "kerasdiag").rglob("*.py") if p.name != "symptoms.py"
    }
    for entry in symptoms.SYMPTOMS.values():
        head = entry.fix.split("{")[0][:40]
        assert len(head) >= 20
        copies = [str(p) for p, text in sources.items() if head in text]
        assert not copies, f"fix of {entry.name} also written in {copies}"


def test_reconcile_never_advises_opposite_learning_rate_fixes():
    slow = make_finding("slow_convergence", "slow", {}, symptoms.fix_for("slow_convergence"))
    shaky = make_finding("oscillating_loss", "shaky", {}, symptoms.fix_for("oscillating_loss"))
    findings = symptoms.reconcile([slow, shaky])
    assert "raise the learning rate" not in slow.fix and "oscillating loss" in slow.fix
    assert findings[1].fix == symptoms.fix_for("oscillating_loss")
    alone = make_finding("slow_convergence", "slow", {}, symptoms.fix_for("slow_convergence"))
    assert symptoms.reconcile([alone])[0].fix.startswith("raise the learning rate")


def test_reconcile_never_advises_opposite_capacity_fixes():
    """High bias and high variance at once (the README's headline CIFAR run: training error
    30%, validation 51%): 'use a bigger network, regularize less' next to 'regularize more,
    or use a smaller network' contradicted itself. The bias comes first."""
    bias = make_finding("underfitting", "bias", {}, symptoms.fix_for("underfitting"))
    variance = make_finding("overfitting", "variance", {}, symptoms.fix_for("overfitting"))
    symptoms.reconcile([variance, bias])
    assert bias.fix == symptoms.fix_for("underfitting")
    assert variance.fix == symptoms.variance_after_bias_fix()
    assert "smaller network" in variance.fix and "would raise it" in variance.fix
    alone = make_finding("overfitting", "variance", {}, symptoms.fix_for("overfitting"))
    assert symptoms.reconcile([alone])[0].fix == symptoms.fix_for("overfitting")
    # the bias/variance table says the same
    table = rules.bias_variance(0.70, 0.49)
    assert table["verdict"] == "high bias and high variance"
    assert table["fixes"] == [symptoms.fix_for("underfitting"), symptoms.variance_after_bias_fix()]


def test_the_overfitting_fix_does_not_advise_stopping_early_where_the_run_did():
    assert "stop early (trainer.early_stopping.enabled=true)" in symptoms.fix_for("overfitting")
    kept = symptoms.fix_for("overfitting", stopped_early=True)
    assert "stop early" not in kept
    assert kept.endswith(
        "regularize more (model.l2, model.dropout=[0.5]), or use a smaller network"
    )
    history = {"loss": [0.5, 0.3], "accuracy": [0.9, 0.99], "val_accuracy": [0.85, 0.90]}
    (found,) = rules.curve_findings(history, stopped_early=True)
    assert found.symptom == "overfitting" and found.fix == kept
    assert rules.bias_variance(0.99, 0.9, stopped_early=True)["fixes"] == [kept]


def test_monitor_alone_in_a_users_fit_still_warns_with_the_tables_fix():
    x = np.random.default_rng(0).normal(size=(256, 16)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(5.0), keras.losses.SparseCategoricalCrossentropy(True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[UpdateRatioMonitor(1)])
    messages = [str(w.message) for w in caught if issubclass(w.category, MonitorWarning)]
    # the table's fix, in the terms of a reader who wrote the model (no config keys)
    fix = keras_terms().phrase(symptoms.fix_for("lr_too_high"))
    assert any(fix in m and "epoch 1" in m for m in messages)


# --- a failed sanity stage shows -----------------------------------------------------------


def test_failed_sanity_stage_shows_everywhere(run):
    run_dir, proc = run
    stages = {s["name"]: s["status"] for s in json.loads((run_dir / "sanity.json").read_text())}
    assert stages["initial_loss"] == "pass" and stages["overfit"] == "fail"
    summary = [line for line in proc.stdout.splitlines() if line.startswith("digits_softmax:")]
    assert len(summary) == 1 and "FAILED sanity check: overfit" in summary[0]
    found = [f["symptom"] for f in json.loads((run_dir / "diagnosis.json").read_text())]
    assert "failed_sanity_check" in found
    html = (run_dir / "report.html").read_text()
    assert '<span class="badge warning">finished; sanity check failed: overfit</span>' in html


def test_badge_says_how_the_run_ended():
    assert run_status({"accuracy": 0.9}, None, []) == ("ok", "finished")
    assert run_status(None, None, ["overfit"])[0] == "error"
    assert "NaN" in run_status(None, {"loss": "nan"}, [])[1]


def test_fail_fast_still_stops(tmp_path):
    from kerasdiag.checks.sanity.stages import SanityCheckFailed

    cfg = load_config([*RUN, "sanity.fail_fast=true", "monitors=off", "trainer.verbose=0"])
    with pytest.raises(SanityCheckFailed, match="overfit"):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.csv").exists()
    assert (
        "stopped before training: sanity check failed: overfit"
        in (tmp_path / "run" / "report.html").read_text()
    )


# --- probes adapt to the run; one epoch numbering -------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 7, 18, 36, 39, 200, 1563])
@pytest.mark.parametrize("epochs", [1, 3, 10, 20, 90])
def test_probe_schedule_probes_every_epoch_and_20_times(steps, epochs):
    schedule = probe_schedule(steps, epochs)
    probes = schedule.steps(steps * epochs)
    assert probes[0] == 0 and probes == sorted(set(probes))
    assert len(probes) >= min(MIN_PROBES_PER_RUN, steps * epochs)
    per_epoch = np.bincount([p // steps for p in probes], minlength=epochs)
    assert per_epoch.min() >= 1  # every epoch is probed
    # Twice per epoch until 20 probes: a run early stopping ends after 10 epochs has them.
    first = min(epochs, 10)
    assert per_epoch[:first].sum() >= min(MIN_PROBES_PER_RUN, 2 * first, steps * first)
    # ... and no denser than that after, so a long run's probes cost less.
    later = per_epoch[int(np.ceil(schedule.until / steps)) + 1 :]
    assert (later <= (1 if epochs >= 2 * first else 2)).all()


def test_probe_schedule_values():
    assert probe_freq(36, 10) == 18 and probe_freq(39, 20) == 19
    # 10 epochs of 36 steps (the CIFAR sample at batch 128): every 18 steps, 20 probes.
    assert probe_schedule(36, 10).steps(360) == list(range(0, 360, 18))
    # 20 epochs of 39 steps: every 19 steps to step 380 (20 probes), then once per epoch.
    steps = probe_schedule(39, 20).steps(780)
    assert steps[:20] == list(range(0, 380, 19)) and steps[20:] == list(range(390, 780, 39))
    # 90 epochs of 1563 steps (CIFAR-10 at batch 32): two per epoch for ten epochs, then one.
    steps = probe_schedule(1563, 90).steps(1563 * 90)
    assert len(steps) == 20 + 80


def test_probe_schedule_next_after_and_bad_values():
    schedule = ProbeSchedule(5, until=12, then=8)
    assert schedule.steps(40) == [0, 5, 10, 16, 24, 32]
    assert [schedule.next_after(s) for s in (0, 9, 10, 11, 16, 17)] == [5, 10, 16, 16, 24, 24]
    assert ProbeSchedule(7).steps(22) == [0, 7, 14, 21]
    for bad in (dict(freq=0), dict(freq=3, then=0), dict(freq=3, until=-1), dict(freq=True)):
        with pytest.raises(ValueError, match="must be an integer"):
            ProbeSchedule(**bad)


def test_monitors_probe_on_the_schedule_in_fit(tmp_path):
    """A monitor given a ProbeSchedule measures before exactly its steps, across epochs."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 3, 64)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(1e-3), "sparse_categorical_crossentropy")
    schedule = ProbeSchedule(2, until=6, then=5)
    monitor = UpdateRatioMonitor(freq=schedule)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[monitor])  # 24 steps
    assert sorted({row[0] for row in monitor.history}) == schedule.steps(24)


def test_probes_and_epochs_in_the_run_files(run):
    run_dir, proc = run
    epochs = [int(r["epoch"]) for r in read_csv(run_dir / "metrics.csv")]
    assert epochs == list(range(1, len(epochs) + 1))
    for name in ("gradient_norms.csv", "activations.csv", "update_ratios.csv"):
        rows = read_csv(run_dir / name)
        assert {int(r["epoch"]) for r in rows} == set(epochs), name
        assert len({r["step"] for r in rows}) >= MIN_PROBES_PER_RUN, name
    assert [int(r["epoch"]) for r in read_csv(run_dir / "learning_rate.csv")] == epochs
    assert (run_dir / f"filters_epoch{epochs[-1]:03d}.png").is_file()
    assert not (run_dir / "filters_epoch000.png").exists()
    log = (run_dir / "train.log").read_text()
    assert f"Epoch 1/{EPOCHS}" in log and "digits_softmax:" in log


def test_overfitting_is_reported_at_the_kept_epoch():
    history = {
        "loss": [1.0, 0.5, 0.3, 0.2, 0.1, 0.05],
        "accuracy": [0.7, 0.85, 0.93, 0.97, 0.99, 1.0],
        "val_accuracy": [0.68, 0.8, 0.85, 0.86, 0.86, 0.86],
        "val_loss": [1.0, 0.6, 0.5, 0.5, 0.55, 0.6],
    }
    found = {f.symptom: f for f in curve_findings(history, weights_epoch=4, initial_loss=2.3)}
    assert found["overfitting"].epoch == 4 and found["overfitting"].evidence["epoch"] == 4
    assert "epoch 4" in found["overfitting"].message


# --- bad input before TensorFlow ------------------------------------------------------------


def _npz(path: Path, labels: list[int], **extra) -> Path:
    rng = np.random.default_rng(0)
    y = np.array(labels * 10, dtype=np.int64)
    x = rng.normal(size=(len(y), 4, 4, 1)).astype("float32")
    np.savez(path, x_train=x, y_train=y, x_test=x[:8], y_test=y[:8], **extra)
    return path


def test_labels_without_training_examples_are_refused(tmp_path):
    stray = _npz(tmp_path / "stray.npz", [0, 1, 2, 99])
    cfg = load_config(["data=npz", f"data.path={stray}"])
    with pytest.raises(DataError, match=r"labels run 0\.\.99 .* class_names"):
        load_dataset(cfg.data)
    named = _npz(tmp_path / "named.npz", [0, 1, 5], class_names=np.array(["a", "b", "c"]))
    cfg = load_config(["data=npz", f"data.path={named}"])
    with pytest.raises(
        DataError, match=r"label 5 out of range \[0, 2\] of the 3 classes in class_names"
    ):
        load_dataset(cfg.data)
    good = _npz(tmp_path / "good.npz", [0, 1, 2])
    assert load_dataset(load_config(["data=npz", f"data.path={good}"]).data).num_classes == 3


def _module(root: Path, name: str, source: str) -> None:
    (root / "pkg13").mkdir(exist_ok=True)
    (root / "pkg13" / "__init__.py").write_text("")
    (root / "pkg13" / f"{name}.py").write_text(source)


def test_bad_inputs_end_before_tensorflow_and_leave_no_run_dir(tmp_path):
    _module(
        tmp_path,
        "net",
        "import keras\nimport no_such_package_13\n\ndef build(c, s, n):\n    return None\n",
    )
    stray = _npz(tmp_path / "stray.npz", [0, 1, 99])
    cases = {
        "pkg13.net.build": ["model.builder=pkg13.net.build"],
        "stray": ["data=npz", f"data.path={stray}"],
    }
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}"}
    errors = {}
    for name, overrides in cases.items():
        run_dir = tmp_path / f"run_{name}"
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", str(REPO / "scripts/train.py"), *overrides,
             f"hydra.run.dir={run_dir}"],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-1500:]
        # -X importtime lists every module imported: TensorFlow never was.
        assert not re.search(r"\|\s+tensorflow\s*$", proc.stderr, re.M), name
        assert not run_dir.exists(), name
        errors[name] = lines[0]
    assert "ModuleNotFoundError: No module named 'no_such_package_13'" in errors["pkg13.net.build"]
    assert "classes 2, 3, 4" in errors["stray"] and "class_names" in errors["stray"]


def test_builder_import_failure_names_the_real_error(tmp_path, monkeypatch):
    _module(
        tmp_path,
        "net2",
        "import keras\nimport no_such_package_13\n\ndef build(c, s, n):\n    return None\n",
    )
    # An import the static check cannot see: the real exception still names the cause.
    _module(tmp_path, "net3", "import importlib\nimportlib.import_module('gone_13')\nbuild = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="ModuleNotFoundError: No module named 'no_such_pac"):
        load_config(["model.builder=pkg13.net2.build"])
    with pytest.raises(ConfigError, match="ModuleNotFoundError: No module named 'gone_13'"):
        resolve_builder("pkg13.net3.build")
    with pytest.raises(ConfigError, match="defines no 'nothing'"):
        load_config(["model.builder=recipes.models.nothing"])


def test_cifar_from_keras_cache_and_offline_hint(tmp_path, monkeypatch, cifar_dir):
    cache = tmp_path / "keras" / "datasets" / "cifar-10-batches-py-target"
    cache.mkdir(parents=True)
    (cache / "cifar-10-batches-py").symlink_to(cifar_dir)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert cifar.cached_cifar10() == cache / "cifar-10-batches-py"
    data = load_dataset(load_config(["recipe=cifar_softmax", "data.limit=200"]).data)
    assert data.input_shape == (32, 32, 3)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(cifar, "CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(DataError, match=r"offline\?\): point data.path at .*data.path=\.\./"):
        cifar.download_cifar10()


# --- the report -----------------------------------------------------------------------------


def test_report_reads_as_a_person_expects(run):
    run_dir, _ = run
    html = (run_dir / "report.html").read_text()
    assert not CODES.search(html), CODES.search(html)
    test = json.loads((run_dir / "test_metrics.json").read_text())
    assert f"The dashed line marks epoch {test['weights_epoch']}" in html
    assert 'alt="confusion matrix"' in html and "per-class accuracy" in html
    links = re.findall(r'<a href="([^"#]+)">', html)
    assert f"{test['model']}" in links and "metrics.csv" in links
    for link in links:
        assert (run_dir / link).exists(), link
    assert "class=filters" in html and "first-layer filters of layer" in html


def test_filter_caption_depends_on_what_the_filters_show():
    rng = np.random.default_rng(0)
    init = rng.normal(size=(16, 8, 8, 1))
    y, x = np.mgrid[0:8, 0:8]
    smooth = np.stack([np.sin(x / 3 + k) + np.cos(y / 4) for k in range(16)])[..., None]
    noisy = init + rng.normal(size=init.shape)
    captions = {
        name: filters_caption("dense", last.shape, filter_summary(init, last))
        for name, last in (("still", init * 1.01), ("smooth", smooth), ("noisy", noisy))
    }
    assert "barely changed" in captions["still"]
    assert "smooth, structured" in captions["smooth"] and "still noisy" in captions["noisy"]
    small = filters_caption(
        "conv1", (32, 3, 3, 3), filter_summary(init[:, :3, :3], noisy[:, :3, :3])
    )
    assert "too small to show edges" in small
    assert math.isfinite(filter_summary(init, noisy)["moved"])
