"""Exact resume: with trainer.deterministic=true, a run SIGKILLed mid-training and resumed
writes the same metrics.csv, keeps the same checkpoint and reaches the same test score as the
run that was never interrupted; the data order is a function of the seed and the epoch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from kerasdiag.data.pipeline import epoch_order, make_epoch_dataset

from conftest import REPO, run_train

RUN = ["sanity=off", "monitors=off", "trainer.tensorboard=false", "trainer.deterministic=true",
       "trainer.epochs=6", "trainer.verbose=0", "model.dropout=[0.2]",
       "data.augment.noise=0.05", "trainer.early_stopping.patience=100"]  # fmt: skip


def _files(run_dir: Path) -> dict[str, object]:
    return {
        "metrics": (run_dir / "metrics.csv").read_text(),
        "checkpoints": sorted(p.name for p in (run_dir / "checkpoints").iterdir()),
        "test": json.loads((run_dir / "test_metrics.json").read_text()),
    }


def test_a_killed_and_resumed_deterministic_run_equals_the_uninterrupted_one(tmp_path):
    whole = tmp_path / "whole"
    assert run_train(*RUN, f"hydra.run.dir={whole}").returncode == 0

    resumed = tmp_path / "resumed"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, str(REPO / "scripts" / "train.py"), *RUN, f"hydra.run.dir={resumed}"]
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    metrics = resumed / "metrics.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:  # 2 epochs done
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows_at_kill = len(metrics.read_text().splitlines()) - 1
    assert 2 <= rows_at_kill < 6, "killed too late to test a resume"

    again = run_train(*RUN, f"hydra.run.dir={resumed}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming after epoch" in again.stdout
    assert _files(resumed) == _files(whole)


def test_the_order_of_an_epoch_depends_on_seed_and_epoch_only():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20, dtype=np.int64)
    full = [b[1].numpy().tolist() for b in make_epoch_dataset(x, y, 8, epochs=3, seed=5)]
    later = [b[1].numpy().tolist() for b in make_epoch_dataset(x, y, 8, epochs=3, first_epoch=2,
                                                               seed=5)]  # fmt: skip
    assert len(full) == 9 and later == full[6:]  # 3 batches per epoch (8, 8, 4)
    for epoch in range(3):
        seen = sorted(sum(full[3 * epoch : 3 * epoch + 3], []))
        assert seen == list(range(20))  # each epoch is a permutation
    assert full[:3] != full[3:6]  # and a different one each epoch
    assert np.array_equal(epoch_order(20, 5, 1).numpy(), epoch_order(20, 5, 1).numpy())
    assert not np.array_equal(epoch_order(20, 5, 1).numpy(), epoch_order(20, 6, 1).numpy())
