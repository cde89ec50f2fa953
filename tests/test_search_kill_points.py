"""A search killed at any of its steps, then the same command run again, ends with every trial
recorded once and every trial's files whole, and selects what the uninterrupted search selects.

The search is the one a user runs (``tuner=random``): the command's process holds the oracle
(the chief) and trains nothing; a worker process it starts trains the trials and talks to it
over gRPC on 127.0.0.1. Each case SIGKILLs one of them at one step
(``KERASDIAG_KILL_AT``, :mod:`kerasdiag.core.faults`; ``KERASDIAG_KILL_ONCE`` so that the
worker process started in place of a killed one goes on):

- the chief, after handing trial 1 to the worker; after the worker's result for trial 1
  arrived, before it is recorded; right after recording it; after ``search.csv`` and
  ``search.png``, before the summary (the best trial's test score). The command dies with
  the chief (its worker process with it), and the same command resumes the search.
- the worker, after the ledger's ``start`` of trial 1, before training; after epoch 1 of its
  first trial (``metrics.csv`` holds that epoch); after trial 1 was trained and committed to
  the ledger, before its result reached the chief. The chief replaces the worker and the
  command finishes by itself (running it again on a finished search is checked once, on the
  uninterrupted one: nothing is trained or recorded again).

Every case is compared with one uninterrupted search (module-scoped): ``search.csv``
(``trainer.deterministic=true``: the same values and scores), the best trial and its test
score, one ``end`` per trial in the ledger, keras-tuner's own records (``trial.json``,
``oracle.json``), one ``metrics.csv`` row per epoch, one kept checkpoint per trial, one
HParams event file per trial, no ``.tmp-*`` file. Which trial was trained again is checked
too: a result that reached the chief or the ledger is never trained again.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from conftest import run_train

TRIALS, EPOCHS = 3, 2
ARGS = [
    "tuner=random", f"tuner.stages=[{{trials:{TRIALS},epochs:{EPOCHS}}}]", "trainer.verbose=0",
    "trainer.deterministic=true",
]  # fmt: skip

# kill point -> (the chief dies with it, the trial trained twice: its first try was lost)
CHIEF_POINTS = {
    "search-handed-out:1": None,
    "search-result-received:1": None,  # the worker had committed it to the ledger
    "search-recorded:1": None,
    "search-results": None,
}
WORKER_POINTS = {
    "search-trial-start:1": 1,
    "search-epoch:1": 0,  # epoch 1 of the worker's first trial
    "search-trained:1": None,  # committed to the ledger: taken from there
}


def _search(run_dir: Path) -> subprocess.CompletedProcess:
    return run_train(*ARGS, f"hydra.run.dir={run_dir}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("search_kill_points") / "reference"
    proc = _search(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "search.csv", newline="") as f:
        return list(csv.DictReader(f))


def _ledger(run_dir: Path) -> list[dict]:
    lines = (run_dir / "search" / "ledger.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _summary(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "search_summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in ("run_dir", "seconds")}


def check_whole(run_dir: Path) -> None:
    """Every trial once, in every record, with every file whole."""
    trials = list(range(TRIALS))
    assert not [p for p in run_dir.rglob("*") if p.name.startswith(".tmp")]
    rows = _rows(run_dir)
    assert [int(r["trial"]) for r in rows] == trials
    assert all(r["status"] == "completed" for r in rows)
    ends = Counter(e["trial"] for e in _ledger(run_dir) if e["event"] == "end")
    assert ends == Counter(trials)

    # keras-tuner's own records: each trial completed, ended once, none running or queued
    oracle = json.loads((run_dir / "search" / "oracle.json").read_text())
    assert sorted(oracle["end_order"], key=int) == [str(n) for n in trials]
    assert oracle["ongoing_trials"] == {} and oracle["retry_queue"] == []
    for n in trials:
        trial_dir = run_dir / "search" / f"trial_{n}"
        assert json.loads((trial_dir / "trial.json").read_text())["status"] == "COMPLETED"
        assert (trial_dir / "config.yaml").is_file()
        with open(trial_dir / "metrics.csv", newline="") as f:
            epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
        assert epochs == list(range(1, EPOCHS + 1))  # each epoch once
        assert not list((trial_dir / "checkpoints").glob("*"))  # the best one was kept
        events = list((run_dir / "tensorboard" / "search" / f"trial_{n}").iterdir())
        assert len(events) == 1, events  # one HParams run per trial
    kept = sorted(p.relative_to(run_dir).as_posix() for p in (run_dir / "trials").iterdir())
    assert kept == sorted(r["checkpoint"] for r in rows)
    assert (run_dir / "search.png").stat().st_size > 10_000


def test_the_uninterrupted_search_is_whole_and_running_it_again_changes_nothing(reference):
    check_whole(reference)
    ledger, rows, summary = _ledger(reference), _rows(reference), _summary(reference)
    assert Counter(e["trial"] for e in ledger if e["event"] == "start") == Counter(range(TRIALS))
    again = _search(reference)
    assert again.returncode == 0, again.stderr[-3000:]
    # The last trial is recorded, not running: nothing trained, nothing recorded twice.
    assert _ledger(reference) == ledger and "had finished on" not in again.stdout
    check_whole(reference)
    assert _rows(reference) == rows and _summary(reference) == summary


def test_a_chief_restarted_right_after_recording_a_trial_finds_it_recorded(tmp_path):
    """keras-tuner saves the oracle's state before it lets go of an ended trial: a chief killed
    in between left the trial among the running ones, and the restarted chief ran it again."""
    import keras_tuner

    from kerasdiag.search.distributed import LeasedRandomSearchOracle

    def oracle() -> LeasedRandomSearchOracle:
        hp = keras_tuner.HyperParameters()
        hp.Float("lr", 1e-4, 1e-1, sampling="log")
        made = LeasedRandomSearchOracle(objective=keras_tuner.Objective("val_accuracy", "max"),
                                        max_trials=2, hyperparameters=hp, seed=1)  # fmt: skip
        made._set_project_dir(str(tmp_path), "search")
        return made

    first = oracle()
    trial = first.create_trial("w0")
    first.update_trial(trial.trial_id, {"val_accuracy": 0.5})
    trial.status = "COMPLETED"
    first.end_trial(trial)
    assert json.loads(Path(first._get_oracle_fname()).read_text())["ongoing_trials"] == {}
    state = first.get_state()
    state["ongoing_trials"] = {"w0": trial.trial_id}  # as keras-tuner's own save left it
    Path(first._get_oracle_fname()).write_text(json.dumps(state))

    again = oracle()
    again.reload()
    assert again.ongoing_trials == {} and again._retry_queue == []
    assert again.trials[trial.trial_id].status == "COMPLETED"
    assert again.end_order == [trial.trial_id]
    assert again.create_trial("w1").trial_id != trial.trial_id


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [*CHIEF_POINTS, *WORKER_POINTS])
def test_a_search_killed_anywhere_finishes_with_every_trial_once(
    tmp_path, monkeypatch, reference, kill_at
):
    run_dir = tmp_path / "run"
    monkeypatch.setenv("KERASDIAG_KILL_AT", kill_at)  # the search's processes inherit these
    monkeypatch.setenv("KERASDIAG_KILL_ONCE", str(tmp_path / "killed"))
    killed = _search(run_dir)
    monkeypatch.delenv("KERASDIAG_KILL_AT")
    assert (tmp_path / "killed").exists(), "the kill point was never reached"
    if kill_at in CHIEF_POINTS:
        assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
        assert not (run_dir / "search_summary.json").exists()
        rerun = _search(run_dir)  # the same command again
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        output, retrained = killed.stdout + rerun.stdout, CHIEF_POINTS[kill_at]
    else:  # the chief saw its worker die and gave the trial to the next: no rerun needed
        assert killed.returncode == 0, killed.stderr[-3000:]
        assert "its process ended with exit code -9" in killed.stdout
        output, retrained = killed.stdout, WORKER_POINTS[kill_at]

    check_whole(run_dir)
    # Nothing the chief or the ledger holds is trained again; only a lost try is.
    starts = Counter(e["trial"] for e in _ledger(run_dir) if e["event"] == "start")
    assert starts == Counter([*range(TRIALS), *([] if retrained is None else [retrained])])
    from_ledger = "had finished on" in output
    assert from_ledger == (kill_at in ("search-result-received:1", "search-trained:1")), output
    # What the uninterrupted search found, trial for trial (deterministic training).
    assert _rows(run_dir) == _rows(reference)
    assert _summary(run_dir) == _summary(reference)
