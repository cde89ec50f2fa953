"""Worker processes of a local search: one that stays across trials until its memory grew past
``tuner.worker_memory_mb``, one started ahead of the one it replaces (``tuner.start_ahead``),
and the environment they start with (TensorFlow's GPU memory growth on unless the user said)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kerasdiag.config import load_config
from kerasdiag.core.errors import ConfigError
from kerasdiag.search import run_search
from kerasdiag.search.launch import ENV_GPU_GROWTH, config_file, prestart_workers, spawn


def ends(run_dir: Path) -> list[dict]:
    lines = (run_dir / "search" / "ledger.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == "end"]


def starts(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "search" / "ledger.jsonl").read_text().splitlines()
    return {e["trial"]: e["time"] for e in map(json.loads, lines) if e["event"] == "start"}


def search(run_dir: Path, *overrides: str) -> dict:
    cfg = load_config(["tuner=random", "trainer.verbose=0", *overrides])
    return run_search(cfg, run_dir)


def test_a_worker_stays_across_trials_until_its_memory_grew_past_the_limit(tmp_path):
    """A limit of 1 kB: the worker's baseline is taken after its first trial, and training a
    second model grows any TensorFlow process by more, so it ends after 2 trials (not the 100
    that trials_per_process allows) and a second process trains the third."""
    summary = search(tmp_path, "tuner.stages=[{trials:3,epochs:1}]",
                     "tuner.trials_per_process=100", "tuner.worker_memory_mb=0.001")  # fmt: skip
    done = ends(tmp_path)
    assert sorted(e["trial"] for e in done) == [0, 1, 2] and summary["completed"] == 3
    pids = [e["pid"] for e in sorted(done, key=lambda e: e["trial"])]
    assert pids[0] == pids[1] != pids[2]  # two trials in one process, then a fresh one


def test_a_worker_started_ahead_takes_no_trial_before_its_predecessor_ended(tmp_path):
    """One trial per process, each next one started ahead: every trial in its own process,
    each once, and no two trials training at the same time (the next one waits)."""
    summary = search(tmp_path, "tuner.stages=[{trials:3,epochs:1}]",
                     "tuner.trials_per_process=1", "tuner.start_ahead=true")  # fmt: skip
    done = sorted(ends(tmp_path), key=lambda e: e["trial"])
    assert [e["trial"] for e in done] == [0, 1, 2] and summary["completed"] == 3
    assert len({e["pid"] for e in done}) == 3
    begun = starts(tmp_path)
    for before, after in zip(done, done[1:], strict=False):
        assert begun[after["trial"]] >= before["time"]
    assert not list((tmp_path / "search").glob("trial_*/checkpoints"))  # moved, folder gone


def test_workers_started_before_the_search_serves_train_its_trials_and_end_with_it(tmp_path):
    """The command line starts a local search's workers before its own TensorFlow import: they
    wait for the oracle's port, then train every trial. Run again on the finished search
    (nothing left to train), the prestarted worker is ended, not left waiting."""
    cfg = load_config(["tuner=random", "trainer.verbose=0", "tuner.stages=[{trials:2,epochs:1}]",
                       "tuner.trials_per_process=100"])  # fmt: skip
    with prestart_workers(cfg, tmp_path) as workers:
        pids = {proc.pid for _, proc in workers.procs}
        summary = run_search(cfg, tmp_path, workers=workers)
    assert summary["completed"] == 2 and len(pids) == 1
    assert {e["pid"] for e in ends(tmp_path)} == pids
    with prestart_workers(cfg, tmp_path) as workers:
        ((_, waiting),) = workers.procs
        again = run_search(cfg, tmp_path, workers=workers)
        assert waiting.poll() is not None  # ended as soon as the search found nothing to do
    assert again["completed"] == 2 and len(ends(tmp_path)) == 2


@pytest.mark.parametrize("user", [None, "false"])
def test_worker_processes_start_with_gpu_memory_growth_unless_the_user_set_it(
    tmp_path, monkeypatch, user
):
    if user is None:
        monkeypatch.delenv(ENV_GPU_GROWTH, raising=False)
    else:
        monkeypatch.setenv(ENV_GPU_GROWTH, user)
    cfg = load_config(["tuner=random", "tuner.chief_timeout=1"])
    with config_file(cfg) as cfg_path:
        # No chief on this port: the worker gives up after chief_timeout; its environment is
        # read while it starts (empty for a moment while exec sets the new program up).
        env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "9",
               "KERASTUNER_TUNER_ID": "proc0"}  # fmt: skip
        proc = spawn(cfg_path, tmp_path, 1, env)
        try:
            environ = [b""]
            for _ in range(100):
                environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
                if environ != [b""]:
                    break
                time.sleep(0.02)
        finally:
            proc.kill()
            proc.wait()
    expected = "true" if user is None else user
    assert f"{ENV_GPU_GROWTH}={expected}".encode() in environ


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["tuner.worker_memory_mb=-5"], "tuner.worker_memory_mb"),
        (["tuner.worker_memory_mb=nan"], "tuner.worker_memory_mb"),
        (["tuner.start_ahead=true", "tuner.trials_per_process=0"], "tuner.start_ahead"),
    ],
)
def test_bad_worker_settings_are_refused_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_config(["tuner=random", *overrides])
