"""Distributed search under faults, as separate processes on 127.0.0.1: a worker
SIGKILLed mid-trial, a chief SIGKILLed (workers say so and exit), a chief restarted under a
running worker (nothing trained twice). Tiny trials, short leases and deadlines."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO

FAULTS = [
    "tuner.lease_seconds=3", "tuner.heartbeat_seconds=0.5", "tuner.trials_per_process=0",
    "trainer.verbose=0", "trainer.early_stopping.enabled=false",
]  # fmt: skip


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Search:
    """The processes of one distributed search in ``run_dir``, each logging to its own file."""

    def __init__(self, tmp_path: Path, trials: int, epochs: int, *extra: str):
        self.tmp_path = tmp_path
        self.run_dir = tmp_path / "run"
        self.port = free_port()
        self.command = [
            sys.executable, str(REPO / "scripts" / "train.py"), "tuner=random",
            f"tuner.stages=[{{trials:{trials},epochs:{epochs}}}]", *FAULTS, *extra,
            f"hydra.run.dir={self.run_dir}",
        ]  # fmt: skip
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, tuner_id: str, name: str | None = None) -> subprocess.Popen:
        name = name or tuner_id
        env = {
            **os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(self.port), "KERASTUNER_TUNER_ID": tuner_id,
            "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost",
        }  # fmt: skip
        with open(self.tmp_path / f"{name}.log", "w") as log:
            proc = subprocess.Popen(self.command, cwd=REPO, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)  # fmt: skip
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text()

    def ledger(self) -> list[dict]:
        path = self.run_dir / "search" / "ledger.jsonl"
        if not path.is_file():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]

    def wait_for_start(self, tuner_id: str, timeout: float = 180) -> int:
        """The trial ``tuner_id`` is training (started, not ended), once there is one."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            mine = [e for e in self.ledger() if e["tuner"] == tuner_id]
            if mine and mine[-1]["event"] == "start":
                time.sleep(0.5)  # into its first epoch
                return mine[-1]["trial"]
            time.sleep(0.2)
        raise AssertionError(f"{tuner_id} never started a trial")

    def wait(self, name: str, timeout: float) -> int:
        return self.procs[name].wait(timeout=timeout)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def ended(self) -> Counter:
        return Counter(e["trial"] for e in self.ledger() if e["event"] == "end")

    def csv_trials(self) -> list[int]:
        with open(self.run_dir / "search.csv", newline="") as f:
            return sorted(int(r["trial"]) for r in csv.DictReader(f))


@pytest.fixture
def search_factory(tmp_path):
    made = []

    def make(*args, **kwargs) -> Search:
        made.append(Search(tmp_path, *args, **kwargs))
        return made[-1]

    yield make
    for search in made:
        search.close()


@pytest.mark.slow
def test_a_sigkilled_worker_loses_its_trial_to_the_other_and_every_process_ends(search_factory):
    search = search_factory(6, 3)
    started = time.time()
    for tuner_id in ("chief", "tuner0", "tuner1"):
        search.start(tuner_id)
    victim_trial = search.wait_for_start("tuner0")
    search.procs["tuner0"].send_signal(signal.SIGKILL)
    killed_at = time.time()
    assert search.wait("tuner1", 240) == 0, search.log("tuner1")[-2000:]
    assert search.wait("chief", 60) == 0, search.log("chief")[-2000:]
    finished = time.time()

    ledger = search.ledger()
    assert search.ended() == Counter(range(6))  # every trial recorded once
    retried = [e for e in ledger if e["trial"] == victim_trial and e["event"] == "start"]
    assert [e["tuner"] for e in retried] == ["tuner0", "tuner1"]  # taken over by the survivor
    assert search.csv_trials() == list(range(6))
    chief = search.log("chief")
    assert f"trial {victim_trial} lost its worker tuner0" in chief
    assert "best val_accuracy" in chief
    print(f"\n6 trials, tuner0 SIGKILLed at {killed_at - started:.1f} s during trial "
          f"{victim_trial}; search done at {finished - started:.1f} s")  # fmt: skip


@pytest.mark.slow
def test_workers_of_a_dead_chief_say_so_and_exit_and_a_restarted_chief_finishes(search_factory):
    search = search_factory(3, 3, "tuner.chief_timeout=4")
    search.start("chief")
    search.start("tuner0")
    trial = search.wait_for_start("tuner0")
    search.procs["chief"].send_signal(signal.SIGKILL)
    killed = time.time()
    code = search.wait("tuner0", 60)
    waited = time.time() - killed
    errors = [ln for ln in search.log("tuner0").splitlines() if ln.startswith("error:")]
    assert code == 5 and len(errors) == 1, search.log("tuner0")[-2000:]
    assert "lost the search chief at 127.0.0.1" in errors[0]
    assert waited < 4 + 10  # chief_timeout, plus one call's deadline and the exit

    search.start("chief", "chief2")
    search.start("tuner0", "tuner0-2")
    assert search.wait("tuner0-2", 240) == 0, search.log("tuner0-2")[-2000:]
    assert search.wait("chief2", 60) == 0, search.log("chief2")[-2000:]
    assert search.ended() == Counter(range(3))
    assert search.csv_trials() == [0, 1, 2]
    print(f"\nchief SIGKILLed during trial {trial}: worker exited (code 5) after {waited:.1f} s")


@pytest.mark.slow
def test_a_chief_restarted_under_a_running_worker_trains_nothing_twice(search_factory):
    search = search_factory(3, 8, "tuner.chief_timeout=90", "tuner.lease_seconds=30")
    search.start("chief")
    search.start("tuner0")
    trial = search.wait_for_start("tuner0")
    search.procs["chief"].send_signal(signal.SIGKILL)
    search.wait("chief", 10)
    search.start("chief", "chief2")  # reloads the oracle: the running trial stays tuner0's
    search.start("tuner1")  # asks for work while tuner0 still trains that trial
    assert search.wait("tuner0", 240) == 0, search.log("tuner0")[-2000:]
    assert search.wait("tuner1", 240) == 0, search.log("tuner1")[-2000:]
    assert search.wait("chief2", 60) == 0, search.log("chief2")[-2000:]
    starts = Counter(e["trial"] for e in search.ledger() if e["event"] == "start")
    assert starts == Counter(range(3)) and search.ended() == Counter(range(3))
    assert [e["tuner"] for e in search.ledger() if e["trial"] == trial] == ["tuner0", "tuner0"]
    assert search.csv_trials() == [0, 1, 2]


@pytest.mark.slow
def test_a_worker_killed_before_reporting_a_trained_trial_reports_it_from_the_ledger(
    search_factory, monkeypatch
):
    """Killed between the ledger's ``end`` of trial 1 and its report to the chief (kill point
    ``search-trained``), the worker started again with the same id gets its trial back and
    reports the ledger's result: every trial trained once, recorded once."""
    search = search_factory(3, 1, "tuner.lease_seconds=30")
    search.start("chief")
    monkeypatch.setenv("KERASDIAG_KILL_AT", "search-trained:1")  # for this worker only
    search.start("tuner0")
    monkeypatch.delenv("KERASDIAG_KILL_AT")
    assert search.wait("tuner0", 240) == -signal.SIGKILL, search.log("tuner0")[-2000:]
    search.start("tuner0", "tuner0-2")  # the same command again
    assert search.wait("tuner0-2", 240) == 0, search.log("tuner0-2")[-2000:]
    assert search.wait("chief", 60) == 0, search.log("chief")[-2000:]
    starts = Counter(e["trial"] for e in search.ledger() if e["event"] == "start")
    assert starts == Counter(range(3)) and search.ended() == Counter(range(3))
    assert "trial 1 had finished on tuner0" in search.log("tuner0-2")
    assert search.csv_trials() == [0, 1, 2]
