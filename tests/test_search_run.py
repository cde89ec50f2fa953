"""A real coarse-to-fine search on digits, a search with diverging trials, and the resume of a
search killed in the middle of a trial (``scripts/train.py ... tuner=random``, same run dir)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kerasdiag.config import load_config
from kerasdiag.config.search_space import validate_search
from kerasdiag.core.errors import KerasdiagError
from kerasdiag.data import load_dataset
from kerasdiag.ensemble.selection import best_checkpoints, parse_checkpoint_name, source_checkpoints
from kerasdiag.modeling.safe_load import load_model_safely
from kerasdiag.search import run_search

from conftest import REPO

STAGES = "tuner.stages=[{trials:4,epochs:1},{trials:2,epochs:2}]"
# Trials in this process: faster here; the killed-search test below runs the default (worker
# processes), and tests/test_search_faults.py the distributed faults.
IN_PROCESS = "tuner.trials_per_process=0"
CONSOLE: dict[str, str] = {}  # what the module's search printed


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def trial_number(path: Path) -> int:
    """3 for trials/stage1-trial003-val_accuracy0.9123.keras."""
    return int(parse_checkpoint_name(path).label.split("-trial")[1])


def read_ledger(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "search" / "ledger.jsonl").read_text().splitlines()]  # fmt: skip


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """Two stages on digits: 4 trials x 1 epoch, then 2 trials x 2 epochs in narrowed ranges."""
    cfg = load_config(["tuner=coarse_to_fine", STAGES, "trainer.verbose=0", IN_PROCESS])
    run_dir = tmp_path_factory.mktemp("c2f")
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        summary = run_search(cfg, run_dir)
    CONSOLE["c2f"] = console.getvalue()
    return cfg, run_dir, summary


def test_search_writes_one_row_and_one_named_checkpoint_per_trial(search):
    cfg, run_dir, summary = search
    rows = read_csv(run_dir / "search.csv")
    assert list(rows[0]) == ["stage", "trial", "lr", "l2", "batch_size", "dropout", "score",
                             "status", "epochs", "checkpoint"]  # fmt: skip
    # one project: trial numbers run on across stages
    assert [(r["stage"], r["trial"]) for r in rows] == [
        ("1", "0"), ("1", "1"), ("1", "2"), ("1", "3"), ("2", "4"), ("2", "5"),
    ]  # fmt: skip
    for row in rows:
        assert row["epochs"] == ("1" if row["stage"] == "1" else "2") or row["status"] == "diverged"
        if not row["score"]:
            continue
        name = Path(row["checkpoint"]).name
        assert name.startswith(f"stage{row['stage']}-trial{int(row['trial']):03d}-val_accuracy")
        assert (run_dir / row["checkpoint"]).is_file()
        assert parse_checkpoint_name(name).score == round(float(row["score"]), 4)
    kept = sorted(p.name for p in (run_dir / "trials").iterdir())
    assert kept == sorted(Path(r["checkpoint"]).name for r in rows if r["checkpoint"])
    assert summary["trials"] == 6 and summary["best"]["checkpoint"].startswith("trials/")


def test_the_console_names_trials_as_search_csv_and_no_empty_folder_is_left(search):
    """keras-tuner's own count ("Trial #5" for trial 4) would not match search.csv's rows."""
    _, run_dir, _ = search
    console = CONSOLE["c2f"]
    rows = read_csv(run_dir / "search.csv")
    for row in rows:
        label = f"stage {row['stage']} trial {row['trial']}"
        assert f"Search: running {label}\n" in console and f"{label} ended (" in console
    assert "Trial #" not in console
    assert not list((run_dir / "search").glob("trial_*/checkpoints"))  # best one moved out


def test_the_score_in_a_checkpoint_name_is_its_validation_accuracy(search):
    """Reload the best trial's file and re-measure it on the one validation split."""
    cfg, run_dir, summary = search
    data = load_dataset(cfg.data)
    best = best_checkpoints(source_checkpoints(run_dir), 1)[0]
    score = best.score
    model = load_model_safely(best.path)
    accuracy = model.evaluate(data.x_val, data.y_val, verbose=0, return_dict=True)["accuracy"]
    assert accuracy == pytest.approx(score, abs=6e-5)
    assert summary["best"]["score"] == pytest.approx(score, abs=6e-5)
    assert 0.5 < summary["test"]["accuracy"] <= 1.0  # the best trial on the held-out test split


def test_second_stage_samples_inside_ranges_narrowed_around_the_best(search):
    cfg, run_dir, _ = search
    rows = read_csv(run_dir / "search.csv")
    stage1 = [r for r in rows if r["stage"] == "1" and r["score"]]
    best = sorted(stage1, key=lambda r: -float(r["score"]))[: cfg.tuner.keep]
    space = {p.name: p for p in validate_search(cfg)[0]}
    for name in ("lr", "l2"):
        p = space[name]
        pad = cfg.tuner.margin * (math.log10(p.high) - math.log10(p.low))
        logs = [math.log10(float(r[name])) for r in best]
        low, high = (
            max(math.log10(p.low), min(logs) - pad),
            min(math.log10(p.high), max(logs) + pad),
        )
        for row in (r for r in rows if r["stage"] == "2"):
            assert low - 1e-6 <= math.log10(float(row[name])) <= high + 1e-6, (name, row)
    used = {r["dropout"] for r in best}
    assert {r["dropout"] for r in rows if r["stage"] == "2"} <= used


def test_each_trial_trained_its_stage_config(search):
    """One keras-tuner project for both stages; each trial's values carry its stage and epochs."""
    _, run_dir, _ = search
    assert sorted(p.name for p in (run_dir / "search").iterdir() if p.is_dir()) == [
        f"trial_{n}" for n in range(6)
    ]
    assert json.loads((run_dir / "search" / "oracle.json").read_text())["stage"] == 1
    for trial_dir in sorted((run_dir / "search").glob("trial_*")):
        values = json.loads((trial_dir / "trial.json").read_text())["hyperparameters"]["values"]
        stage, epochs = values["tuner/stage"], values["tuner/epochs"]
        assert (stage, epochs) == ((1, 1) if int(trial_dir.name[6:]) < 4 else (2, 2))
        text = (trial_dir / "config.yaml").read_text()
        assert f"  epochs: {epochs}\n" in text and "  overfit: false\n" in text
        rows = read_csv(trial_dir / "metrics.csv")
        assert 1 <= len(rows) <= epochs
    assert (run_dir / "search.png").stat().st_size > 10_000
    ledger = read_ledger(run_dir)
    assert sum(e["event"] == "start" for e in ledger) == 6
    assert sum(e["event"] == "end" for e in ledger) == 6


def test_diverging_trials_are_stopped_and_recorded_without_a_checkpoint(tmp_path):
    cfg = load_config([
        "tuner=random", "tuner.stages=[{trials:2,epochs:3}]", "trainer.verbose=0",
        "tuner.space={lr:{key:optimizer.lr,type:float,min:5,max:50,sampling:log}}",
        "optimizer=sgd", IN_PROCESS,
    ])  # fmt: skip
    summary = run_search(cfg, tmp_path)
    rows = read_csv(tmp_path / "search.csv")
    assert [r["status"] for r in rows] == ["diverged", "diverged"]
    assert all(r["epochs"] == "1" and r["score"] == "" and r["checkpoint"] == "" for r in rows)
    assert not list((tmp_path / "trials").glob("*.keras"))
    assert summary["diverged"] == 2 and summary["best"] is None
    ends = [e for e in read_ledger(tmp_path) if e["event"] == "end"]
    assert all("first loss" in e["message"] or "nan" in e["message"] for e in ends)


@pytest.mark.slow
def test_a_killed_search_resumes_where_it_stopped(tmp_path, capsys):
    """Kill ``scripts/train.py ... tuner=random`` in the middle of trial 1, run the search again
    in the same directory: trial 0 is not repeated, trial 1 runs again, trial 2 follows."""
    run_dir = tmp_path / "run"
    overrides = ["tuner=random", "tuner.stages=[{trials:3,epochs:1}]", "trainer.verbose=0"]
    command = [sys.executable, str(REPO / "scripts" / "train.py"), *overrides,
               f"hydra.run.dir={run_dir}"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 150
        ledger = run_dir / "search" / "ledger.jsonl"
        while time.time() < deadline and first.poll() is None:
            events = read_ledger(run_dir) if ledger.exists() else []
            if any(e["event"] == "start" and e["trial"] == 1 for e in events):
                break
            time.sleep(0.1)
        assert first.poll() is None, "the search ended before it could be interrupted"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    before = read_ledger(run_dir)
    assert [(e["event"], e["trial"]) for e in before] == [("start", 0), ("end", 0), ("start", 1)]

    # Run again with the same config and directory (in-process: the CLI calls the same function).
    summary = run_search(load_config(overrides), run_dir)
    assert "Reloading Tuner" in capsys.readouterr().out
    after = read_ledger(run_dir)[len(before) :]
    assert [(e["event"], e["trial"]) for e in after] == [
        ("start", 1), ("end", 1), ("start", 2), ("end", 2),
    ]  # fmt: skip
    assert os.getpid() not in {e["pid"] for e in after}  # trained in worker processes
    rows = read_csv(run_dir / "search.csv")
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and summary["trials"] == 3
    named = {trial_number(p) for p in (run_dir / "trials").iterdir()}
    scored = {int(r["trial"]) for r in rows if r["score"]}
    assert named == scored and len(list((run_dir / "trials").iterdir())) == len(scored)


def test_trials_whose_sampled_config_is_invalid_fail_and_end_the_search_in_one_line(tmp_path):
    """Every lr below the cosine schedule's floor: keras-tuner gives up after 3 failed trials,
    and the search says why in one line (exit code 2 from scripts/train.py)."""
    cfg = load_config([
        "tuner=random", "tuner.stages=[{trials:5,epochs:2}]", "trainer.verbose=0",
        "schedule=cosine", "schedule.min_lr=1e-4", "tuner.space.lr.max=1e-4",
    ])  # fmt: skip
    with pytest.raises(KerasdiagError) as info:
        run_search(cfg, tmp_path)
    message = str(info.value)
    assert message.startswith("search stage 1 stopped: Number of consecutive failures")
    assert message.endswith("invalid config: schedule.min_lr=0.0001: must be below optimizer.lr")
    assert "\n" not in message and info.value.exit_code == 2
    ends = [e for e in read_ledger(tmp_path) if e["event"] == "end"]
    assert [e["status"] for e in ends] == ["failed"] * 3
    assert not (tmp_path / "trials").exists() or not list((tmp_path / "trials").iterdir())


def _hparams_of(event_dir: Path) -> tuple[dict, dict]:
    """(hyperparameter values, scalar values) a trial's TensorBoard run holds, read back with
    TensorBoard's own event reader and HParams plugin protos."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(event_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    values = {
        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in info.hparams.items()
    }
    scalars = {tag: float(tensor_util.make_ndarray(acc.Tensors(tag)[0].tensor_proto))
               for tag in acc.Tags()["tensors"] if not tag.startswith("_hparams_")}  # fmt: skip
    return values, scalars


def test_trials_are_on_tensorboards_hparams_dashboard(search):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir, _ = search
    root = run_dir / "tensorboard" / "search"
    config = EventAccumulator(str(root))
    config.Reload()
    assert "_hparams_/experiment" in config.PluginTagToContent("hparams")
    rows = {r["trial"]: r for r in read_csv(run_dir / "search.csv")}
    assert sorted(p.name for p in root.glob("trial_*")) == [f"trial_{n}" for n in range(6)]
    for trial, row in rows.items():
        values, scalars = _hparams_of(root / f"trial_{trial}")
        assert math.isclose(values["lr"], float(row["lr"]), rel_tol=1e-5)
        assert values["batch_size"] == row["batch_size"] and values["dropout"] == row["dropout"]
        if row["score"]:
            assert math.isclose(scalars["val_accuracy"], float(row["score"]), rel_tol=1e-5)
        assert scalars["epochs_run"] == float(row["epochs"])


@pytest.mark.parametrize(
    ("tuner", "extra", "trials"),
    [
        # max_epochs 3, factor 3: a bracket of 3 one-epoch trials whose best trains 3 epochs,
        # and one of 2 three-epoch trials (keras-tuner's own bracket arithmetic)
        ("hyperband", ["tuner.stages=[{trials:1,epochs:3}]"], 6),
        ("bayesian", ["tuner.stages=[{trials:4,epochs:1}]"], 4),
    ],
)
def test_keras_tuners_own_oracles_search_the_same_space(tmp_path, tuner, extra, trials):
    cfg = load_config([f"tuner={tuner}", *extra, "trainer.verbose=0", IN_PROCESS])
    summary = run_search(cfg, tmp_path)
    rows = read_csv(tmp_path / "search.csv")
    assert len(rows) == summary["trials"] == trials
    space, _ = validate_search(cfg)
    assert list(rows[0])[2:6] == [p.name for p in space]
    assert summary["completed"] + summary["diverged"] == trials and summary["best"] is not None
    oracle = json.loads((tmp_path / "search" / "oracle.json").read_text())
    if tuner == "hyperband":
        epochs = sorted(json.loads((d / "trial.json").read_text())["hyperparameters"]["values"]
                        ["tuner/epochs"] for d in (tmp_path / "search").glob("trial_*"))  # fmt: skip
        assert epochs == [1, 1, 1, 3, 3, 3] and oracle["max_epochs"] == 3
        assert {r["stage"] for r in rows} == {"1", "2"}  # Hyperband's rounds
    else:
        assert all(r["epochs"] == "1" for r in rows if r["status"] == "completed")
    for row in rows:
        lr = float(row["lr"])
        assert 1e-6 <= lr <= 10.0 and row["batch_size"] in {"16", "32", "64", "128"}
    assert summary["test"]["accuracy"] > 0.1
