"""A real coarse-to-fine search on digits, a search with diverging trials, and the resume of a
search killed in the middle of a trial (``scripts/train.py ... tuner=random``, same run dir)."""

from __future__ import annotations

import csv
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
from kerasdiag.data import load_dataset
from kerasdiag.ensemble.selection import best_checkpoints, parse_checkpoint_name, source_checkpoints
from kerasdiag.errors import KerasdiagError
from kerasdiag.io import load_model_safely
from kerasdiag.search import run_search
from kerasdiag.search.oracle import validate_search

from conftest import REPO

STAGES = "tuner.stages=[{trials:4,epochs:1},{trials:2,epochs:2}]"
# Trials in this process: faster here; the killed-search test below runs the default (worker
# processes), and tests/test_search_faults.py the distributed faults.
IN_PROCESS = "tuner.trials_per_process=0"


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
    summary = run_search(cfg, run_dir)
    return cfg, run_dir, summary


def test_search_writes_one_row_and_one_named_checkpoint_per_trial(search):
    cfg, run_dir, summary = search
    rows = read_csv(run_dir / "search.csv")
    assert list(rows[0]) == ["stage", "trial", "lr", "l2", "batch_size", "dropout", "score",
                             "status", "epochs", "checkpoint"]  # fmt: skip
    assert [(r["stage"], r["trial"]) for r in rows] == [
        ("1", "0"), ("1", "1"), ("1", "2"), ("1", "3"), ("2", "0"), ("2", "1"),
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


def test_the_score_in_a_checkpoint_name_is_its_validation_accuracy(search):
    """Reload the best trial's file and re-measure it on the one validation split (H4, H5)."""
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
    _, run_dir, _ = search
    for stage, epochs in ((1, 1), (2, 2)):
        trial_dirs = sorted((run_dir / "search" / f"stage{stage}").glob("trial_*"))
        assert len(trial_dirs) == (4 if stage == 1 else 2)
        for trial_dir in trial_dirs:
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
