"""report.html: one self-contained page per run, every section rendered or said to be absent."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from doctor_zoo import compiled, digits, mlp
from omegaconf import OmegaConf

from kerasdiag import diagnose
from kerasdiag.callbacks import (
    MetricsCSV,
    TrainingDoctor,
    monitor_callbacks,
)
from kerasdiag.config import load_config
from kerasdiag.core.io import write_json_atomic, write_text_atomic
from kerasdiag.core.rundir import RunLayout
from kerasdiag.core.timings import StageClock
from kerasdiag.data import load_dataset
from kerasdiag.report import build_report, plots
from kerasdiag.report.builder import read_histograms
from kerasdiag.report.context import RunContext
from kerasdiag.report.sections import curves, monitors
from kerasdiag.training.pipeline import (
    build_model,
    evaluate_test,
    fit,
    model_summary_text,
    record_watch_costs,
    run_sanity,
    training_callbacks,
    write_test_confusion,
)

from conftest import REPO

IMG = re.compile(r'<img alt="([^"]*)" src="([^"]*)"')


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """A digits run with every file a run can hold: the pipeline's stages plus all monitors
    and the doctor judging them (the wiring scripts/train.py uses)."""
    run_dir = tmp_path_factory.mktemp("full")
    cfg = load_config(
        [
            "recipe=digits_softmax",
            "trainer.epochs=4",
            "trainer.verbose=0",
            "monitors.gradients_freq=10",
            "monitors.activations_freq=10",
            "monitors.update_ratio_freq=5",
            "sanity.lr_range=true",
        ]
    )
    clock = StageClock(run_dir / RunLayout.TIMINGS)
    with clock.stage("data"):
        data = load_dataset(cfg.data)
        write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_json_atomic(run_dir / "data.json", data.summary())
    with clock.stage("model"):
        model = build_model(cfg, data)
        write_text_atomic(run_dir / "summary.txt", model_summary_text(model))
    with clock.stage("sanity"):
        run_sanity(cfg, model, data, run_dir)
    monitors = monitor_callbacks(cfg.monitors, run_dir, data)
    doctor = TrainingDoctor(monitors=monitors.measured, path=run_dir / "doctor.json", verbose=0)
    with clock.stage("training"):
        fit(cfg, model, data, [*training_callbacks(cfg, run_dir, data), *monitors.all, doctor])
    record_watch_costs(clock, [*monitors.all, doctor])
    with clock.stage("test"):
        write_json_atomic(run_dir / "test_metrics.json", evaluate_test(cfg, model, data))
        write_test_confusion(cfg, model, data, run_dir / RunLayout.TEST_CONFUSION)
    with clock.stage("diagnosis"):
        diagnose(run_dir)
    build_report(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def bare_run(tmp_path_factory) -> Path:
    """Only metrics.csv and config.yaml, from a 51-example training that overfits."""
    run_dir = tmp_path_factory.mktemp("bare")
    data = digits("data.limit=60")
    model = compiled(mlp(data, (256,)), keras.optimizers.Adam(3e-3))
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=16,
        epochs=30,
        validation_data=(data.x_val, data.y_val),
        callbacks=[MetricsCSV(run_dir / "metrics.csv")],
        verbose=0,
    )
    write_text_atomic(run_dir / "config.yaml", "recipe: overfit_by_hand\nbayes_error: null\n")
    return run_dir


def sections(html: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', html, flags=re.S))


def test_full_report_is_self_contained(full_run):
    html = (full_run / "report.html").read_text()
    assert "<script" not in html and "<link" not in html
    images = IMG.findall(html)
    assert len(images) >= 11
    for alt, src in images:
        assert src.startswith("data:image/png;base64,"), alt
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n", alt
    assert not list(full_run.glob(".report.html.*"))  # written atomically


def test_full_report_renders_every_section(full_run):
    html = (full_run / "report.html").read_text()
    found = sections(html)
    assert list(found) == [
        "diagnosis",
        "bias-variance",
        "curves",
        "test",
        "update-ratios",
        "gradients",
        "activations",
        "histograms",
        "filters",
        "sanity",
        "lr-range",
        "gradcheck",
        "data",
        "model",
        "config",
        "files",
        "time",
    ]
    for name, content in found.items():
        assert "class=absent" not in content, (name, content[:300])
    alts = {alt for alt, _ in IMG.findall(html)}
    assert {"loss curve", "accuracy curve", "update ratios", "gradient norms"} <= alts
    assert {"activations histograms", "gradients histograms", "filters_init.png"} <= alts
    assert "learning-rate range test" in alts and "divided by 10" in found["lr-range"]
    assert "initial_loss" in found["sanity"] and "overfit" in found["sanity"]
    assert "hidden1_dense/kernel" in found["gradcheck"]
    # where the time went: every step the run took, the probes as part of training
    for stage in ("data", "model", "sanity", "training", "training: monitors&#39; probes",
                  "training: doctor", "test", "diagnosis", "sanity: overfit"):  # fmt: skip
        assert f"<td>{stage}</td>" in found["time"], stage
    assert "1222 / 216 / 359" in found["data"]
    assert "recipe: digits_softmax" in found["config"]
    test_accuracy = json.loads((full_run / "test_metrics.json").read_text())["accuracy"]
    assert f"{test_accuracy:.4g}" in found["test"]
    # the doctor's cost, as doctor.json records it, says what it counts
    doctor = json.loads((full_run / "doctor.json").read_text())
    seconds, total = doctor["probe_seconds"], doctor["train_seconds"]
    assert (
        f"TrainingDoctor: its own probes ({doctor['probes']}) and checks of the weights took "
        f"{seconds:.2f} s of {total:.1f} s of training ({seconds / total:.1%})."
    ) in found["diagnosis"]


def test_bare_report_says_what_is_missing_and_names_the_overfit(bare_run):
    path = build_report(bare_run)
    found = sections(path.read_text())
    # diagnose() ran because diagnosis.json was missing, and wrote it.
    assert (bare_run / "diagnosis.json").is_file()
    assert "overfitting" in found["diagnosis"] and "more data" in found["diagnosis"]
    assert "high variance" in found["bias-variance"]
    for name, missing in {
        "sanity": "no sanity.json",
        "gradcheck": "no gradcheck.json",
        "update-ratios": "no update_ratios.csv",
        "histograms": "no activation or gradient histograms",
        "filters": "no filter images",
        "data": "no data.json",
        "test": "no test_metrics.json",
        "lr-range": "no lr_finder.json",
    }.items():
        assert missing in found[name], name
    assert "could not render" not in path.read_text()
    assert "unfinished" in path.read_text()


def test_histograms_are_labelled_by_epoch_as_the_page_counts(full_run, tmp_path):
    # the summaries' step is the optimizer step; the page's axes count epochs
    run = RunContext.read(full_run)
    series = read_histograms(full_run / RunLayout.TENSORBOARD / "activations")
    assert series and run.steps_per_epoch
    last_step = max(step for events in series.values() for step, _ in events)
    for labels in (
        [label for label, _ in shown] for shown in monitors.histogram_panels(run, series).values()
    ):
        assert labels == ["epoch 0.0", f"epoch {last_step / run.steps_per_epoch:.1f}"]
    # without the epoch's length the step is said as such, not passed off as an epoch
    assert monitors.probe_label(RunContext.read(tmp_path), 180) == "step 180"


def _filter_grids(run_dir: Path, epochs: list[int], kept: int | None) -> list[tuple[str, str]]:
    for name in [RunLayout.FILTERS_INIT, *(f"filters_epoch{e:03d}.png" for e in epochs)]:
        (run_dir / name).write_bytes(b"\x89PNG")
    if kept is not None:
        write_json_atomic(run_dir / RunLayout.TEST_METRICS, {"weights_epoch": kept})
    figures = monitors.filters(RunContext.read(run_dir))[0]["blocks"]
    return [(f["img"]["alt"], f["caption"]) for f in figures]


def test_filters_say_whether_they_are_the_kept_weights(tmp_path):
    assert _filter_grids(tmp_path, [18, 19, 20], kept=17) == [
        ("filters_init.png", "at initialisation"),
        (
            "filters_epoch020.png",
            "after epoch 20, the last drawn (the run kept epoch 17's weights)",
        ),
    ]
    assert _filter_grids(tmp_path, [20], kept=20)[1][1] == "after epoch 20 (the kept weights)"


def test_filters_show_the_last_epoch_by_number(tmp_path):
    # filters_epoch1000.png sorts before filters_epoch999.png by name
    assert _filter_grids(tmp_path, [999, 1000], kept=None)[1] == (
        "filters_epoch1000.png",
        "after epoch 1000",
    )


def test_script_rebuilds_the_report(bare_run):
    (bare_run / "report.html").unlink(missing_ok=True)
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "report.py"),
            str(bare_run),
            "--bayes-error",
            "0.3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"report: {bare_run / 'report.html'}"
    html = (bare_run / "report.html").read_text()
    assert "30.0%" in sections(html)["bias-variance"]  # the Bayes error given on the command line


def test_script_refuses_a_missing_directory(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "report.py"), str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: run directory {tmp_path / 'nope'} does not exist"


@pytest.mark.parametrize(("rates", "log"), [([0.0, 0.05, 0.1, 0.05], False), ([0.1, 0.01], True)])
def test_a_warm_up_from_zero_is_drawn_on_a_linear_axis(tmp_path, monkeypatch, rates, log):
    """A log axis cannot show a rate of 0: a warm-up's first epoch would be missing."""
    rows = ["epoch,loss,learning_rate"] + [f"{i},{1.0 / (i + 1)},{r}" for i, r in enumerate(rates)]
    write_text_atomic(tmp_path / "metrics.csv", "\n".join(rows) + "\n")
    write_text_atomic(tmp_path / "config.yaml", "recipe: by_hand\n")
    drawn = {}
    original = plots.curves

    def spy(epochs, series, title, *args, **kwargs):
        drawn[title] = (list(series.values())[0], kwargs.get("log"))
        return original(epochs, series, title, *args, **kwargs)

    monkeypatch.setattr(plots, "curves", spy)
    curves.curves(RunContext.read(tmp_path))
    assert drawn["learning rate"] == (rates, log)
