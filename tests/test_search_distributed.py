"""Distributed search: a keras-tuner chief and two workers as processes on 127.0.0.1,
started with the documented command; every trial must run exactly once."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from kerasdiag.ensemble.selection import parse_checkpoint_name

from conftest import REPO

TRIALS = 4


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tuner", "stages"),
    [
        ("random", f"[{{trials:{TRIALS},epochs:1}}]"),
        # two stages on the one port: workers wait (IDLE) at the boundary, then get stage 2
        ("coarse_to_fine", f"[{{trials:{TRIALS - 2},epochs:1}},{{trials:2,epochs:1}}]"),
    ],
)
def test_chief_and_two_workers_run_every_trial_exactly_once(tmp_path, tuner, stages):
    run_dir = tmp_path / "run"
    command = [
        sys.executable, str(REPO / "scripts" / "train.py"), f"tuner={tuner}",
        f"tuner.stages={stages}", "trainer.verbose=0", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    base_env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(free_port()),
        "no_proxy": "127.0.0.1,localhost",  # gRPC honours proxy variables
        "NO_PROXY": "127.0.0.1,localhost",
    }
    procs: dict[str, subprocess.Popen] = {}
    logs = {}
    try:
        for tuner_id in ("chief", "tuner0", "tuner1"):
            logs[tuner_id] = open(tmp_path / f"{tuner_id}.log", "w")  # noqa: SIM115
            procs[tuner_id] = subprocess.Popen(
                command, cwd=REPO, env={**base_env, "KERASTUNER_TUNER_ID": tuner_id},
                stdout=logs[tuner_id], stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.time() + 240
        for tuner_id in ("tuner0", "tuner1", "chief"):  # the chief ends after its workers
            procs[tuner_id].wait(timeout=max(1.0, deadline - time.time()))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for log in logs.values():
            log.close()
    output = {k: (tmp_path / f"{k}.log").read_text() for k in procs}
    for tuner_id, proc in procs.items():
        assert proc.returncode == 0, f"{tuner_id}:\n{output[tuner_id][-3000:]}"

    ledger = [json.loads(x) for x in (run_dir / "search" / "ledger.jsonl").read_text().splitlines()]
    starts = sorted(e["trial"] for e in ledger if e["event"] == "start")
    ends = sorted(e["trial"] for e in ledger if e["event"] == "end")
    assert starts == ends == list(range(TRIALS))  # each trial started and finished once
    # The chief trains nothing; each worker trains in its own worker processes (tuner0.0, ...).
    assert {e["tuner"].split(".")[0] for e in ledger} <= {"tuner0", "tuner1"}
    assert procs["chief"].pid not in {e["pid"] for e in ledger}

    with open(run_dir / "search.csv", newline="") as f:  # written by the chief, from its oracle
        rows = list(csv.DictReader(f))
    assert sorted(int(r["trial"]) for r in rows) == list(range(TRIALS))
    assert all(r["status"] in ("completed", "diverged") for r in rows)
    kept = [parse_checkpoint_name(p).label for p in (run_dir / "trials").iterdir()]
    assert sorted(kept) == [
        f"stage{r['stage']}-trial{int(r['trial']):03d}" for r in rows if r["score"]
    ]
    if tuner == "coarse_to_fine":
        assert [r["stage"] for r in sorted(rows, key=lambda r: int(r["trial"]))] == [
            "1"] * (TRIALS - 2) + ["2", "2"]  # fmt: skip
        assert "search stage 2/2" in output["chief"]
    assert "no trials left" in output["tuner0"] and "no trials left" in output["tuner1"]
    assert "best val_accuracy" in output["chief"]
