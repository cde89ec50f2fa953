"""Runs that survive kill -9, stop cleanly on NaN, never share or reuse a directory, write
files atomically, and repeat exactly when asked to be deterministic."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from kerasdiag.config import load_config
from kerasdiag.core.errors import KerasdiagError
from kerasdiag.core.io import TMP_PREFIX, atomic_path, remove_stale_temporaries, write_json_atomic
from kerasdiag.core.rundir import (
    RunLayout,
    check_run_dir,
    claim_run_dir,
    read_metrics_csv,
    run_dir_status,
)

from conftest import REPO, run_train

FAST = ["sanity=off", "monitors=off", "trainer.tensorboard=false"]


def _popen_train(*overrides: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "w") as out:  # a file, not a pipe: a killed child cannot block on it
        return subprocess.Popen(
            [sys.executable, str(REPO / "scripts" / "train.py"), *overrides],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _error_lines(proc) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


def _leftovers(run_dir: Path) -> list[Path]:
    return [
        p for p in run_dir.rglob("*") if p.name.startswith(TMP_PREFIX) or p.name == RunLayout.LOCK
    ]


# -- resume after kill -9 ----------------------------------------------------------------------


def test_sigkill_mid_run_then_resume_has_every_epoch_once(tmp_path):
    run_dir = tmp_path / "run"
    epochs, lr = 6, 0.05
    args = [*FAST, f"trainer.epochs={epochs}", "optimizer=sgd_momentum", f"optimizer.lr={lr}",
            "schedule=step", "schedule.drop_every=2", "trainer.early_stopping.enabled=false",
            f"hydra.run.dir={run_dir}"]  # fmt: skip
    proc = _popen_train(*args, log=tmp_path / "first.log")
    state = run_dir / "backup" / "state.json"
    deadline = time.time() + 300
    while not (state.exists() and json.loads(state.read_text())["epoch"] >= 2):
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline, "no backup after 300 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (run_dir / "test_metrics.json").exists()

    resumed = run_train(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = int(resumed.stdout.split("resuming after epoch ")[1].split()[0])
    assert 2 <= done < epochs
    rows = read_metrics_csv(run_dir / "metrics.csv")
    lines = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    assert [int(ln.split(",")[0]) for ln in lines] == list(range(1, epochs + 1))
    # The step schedule continues where it was: the optimizer's iteration count came back.
    for epoch, row in rows.items():
        assert math.isclose(row["learning_rate"], lr * 0.5 ** ((epoch - 1) // 2), rel_tol=1e-6), (
            epoch
        )
    assert rows[epochs]["accuracy"] > 0.97  # and the weights too: digits learnt (0.998)
    assert (run_dir / "test_metrics.json").is_file()
    assert not (run_dir / "backup").exists() and not _leftovers(run_dir)
    assert len(list((run_dir / "checkpoints").glob("best-*.keras"))) == 1

    again = run_train(*args)
    assert again.returncode == 2
    assert len(_error_lines(again)) == 1 and "already holds a finished run" in again.stderr


# -- RunBackup inside any fit ------------------------------------------------------------------


class _Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def digits_xy():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:400] / 16.0).astype("float32"), y[:400].astype("int64")


def _model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(10)])  # fmt: skip
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    return model


def _state(cb) -> dict:
    return {k: getattr(cb, k) for k in ("wait", "best", "best_epoch", "stopped_epoch")}


def test_run_backup_restores_weights_optimizer_and_early_stopping(tmp_path, digits_xy):
    import keras

    from kerasdiag.callbacks.run_backup import RunBackup

    x, y = digits_xy
    backup = tmp_path / "backup"
    fit = {"x": x, "y": y, "validation_split": 0.25, "epochs": 7, "verbose": 0, "shuffle": False}

    class Snapshot(keras.callbacks.Callback):
        def __init__(self, es, at="end"):
            super().__init__()
            self.es, self.at, self.seen = es, at, []

        def _take(self, epoch):
            opt = [keras.ops.convert_to_numpy(v) for v in self.model.optimizer.variables]
            self.seen.append((epoch, opt, self.model.get_weights(), _state(self.es)))

        def on_epoch_end(self, epoch, logs=None):
            if self.at == "end":
                self._take(epoch)

        def on_epoch_begin(self, epoch, logs=None):
            if self.at == "begin":
                self._take(epoch)
            elif epoch == 3:
                raise _Interrupted

    es1 = keras.callbacks.EarlyStopping(patience=50, restore_best_weights=True)
    first = Snapshot(es1)
    with pytest.raises(_Interrupted):
        _model(0).fit(**fit, callbacks=[es1, RunBackup(backup, track=[es1]), first])
    _, opt_saved, weights_saved, es_saved = first.seen[-1]  # the end of epoch 3
    assert es_saved["best"] is not None and int(opt_saved[0]) == 3 * 10  # 300 examples, batch 32

    es2 = keras.callbacks.EarlyStopping(patience=50, restore_best_weights=True)
    probe = Snapshot(es2, at="begin")
    history = _model(1).fit(**fit, callbacks=[es2, RunBackup(backup, track=[es2]), probe])
    epoch, opt_restored, weights_restored, es_restored = probe.seen[0]
    assert epoch == 3 and len(history.history["loss"]) == 4
    for saved, restored in zip(opt_saved, opt_restored, strict=True):  # moments, iterations, lr
        np.testing.assert_array_equal(saved, restored)
    for saved, restored in zip(weights_saved, weights_restored, strict=True):
        np.testing.assert_array_equal(saved, restored)
    assert es_restored == es_saved
    assert not backup.exists()  # deleted when fit ended


def test_a_finished_fit_is_not_trained_again(tmp_path, digits_xy):
    import keras

    from kerasdiag.callbacks.run_backup import RunBackup

    x, y = digits_xy
    fit = {"x": x, "y": y, "validation_split": 0.25, "epochs": 4, "verbose": 0}
    es = keras.callbacks.EarlyStopping(patience=50, restore_best_weights=True)
    model = _model(0)
    model.fit(**fit, callbacks=[es, RunBackup(tmp_path, track=[es], delete_on_train_end=False)])
    assert json.loads((tmp_path / "state.json").read_text())["finished"] is True

    # The process died after fit (say, in the test evaluation): a rerun trains nothing and
    # ends with the same model, EarlyStopping's best weights included.
    es = keras.callbacks.EarlyStopping(patience=50, restore_best_weights=True)
    again = _model(1)
    history = again.fit(**fit, callbacks=[es, RunBackup(tmp_path, track=[es])])
    assert history.history == {}
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# -- NaN/Inf -----------------------------------------------------------------------------------


def test_nan_loss_stops_cleanly_keeps_the_good_epochs_and_exits_3(tmp_path):
    from kerasdiag.modeling.safe_load import load_model_safely

    run_dir = tmp_path / "run"
    # A linear network trains while the warm-up's rate is small, then diverges geometrically
    # once it passes ~0.5: a healthy epoch 1, Inf/NaN around epoch 3.
    args = [*FAST, "optimizer=sgd", "optimizer.lr=2", "schedule=cosine",
            "schedule.warmup_epochs=4", "model.activation=linear", "trainer.epochs=5",
            "trainer.deterministic=true", f"hydra.run.dir={run_dir}"]  # fmt: skip
    proc = run_train(*args)
    assert proc.returncode == 3, proc.stderr[-3000:]
    (line,) = _error_lines(proc)
    assert "training stopped:" in line and "lower the learning rate 10x (optimizer.lr=0.2;" in line
    assert "Traceback" not in proc.stderr

    record = json.loads((run_dir / "nan.json").read_text())
    rows = read_metrics_csv(run_dir / "metrics.csv")
    done = record["completed_epochs"]
    assert done >= 1 and list(rows) == list(range(1, done + 1)) and record["epoch"] == done + 1
    assert all(math.isfinite(v) for row in rows.values() for v in row.values())
    steps = record["steps_per_epoch"]
    assert record["global_step"] == done * steps + record["batch"]
    assert f"step {record['global_step']}" in line and f"epoch {record['epoch']}" in line
    assert record["symptom"].split("_", 1)[0] in ("nan", "inf") and record["advice"]
    assert rows[1]["val_accuracy"] > 0.6  # the kept epochs trained for real (0.676)

    best = load_model_safely(record["checkpoint"])  # the last good model survives
    assert all(np.isfinite(w).all() for w in best.get_weights())
    assert not (run_dir / "backup").exists() and not (run_dir / "test_metrics.json").exists()
    assert not _leftovers(run_dir)
    assert run_dir_status(run_dir) == "finished"


# -- reproducibility ---------------------------------------------------------------------------


def test_deterministic_runs_write_identical_metrics(tmp_path):
    # Dropout, augmentation noise and shuffling all draw random numbers here.
    common = [*FAST, "trainer.deterministic=true", "trainer.epochs=2", "model.dropout=[0.3]",
              "data.augment.noise=0.2", "trainer.early_stopping.enabled=false"]  # fmt: skip
    procs = {
        name: _popen_train(
            *common, f"hydra.run.dir={tmp_path / name}", log=tmp_path / f"{name}.log"
        )
        for name in ("a", "b")
    }  # two processes side by side: nothing shared but the config
    for name, proc in procs.items():
        assert proc.wait(timeout=600) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    a, b = ((tmp_path / n / "metrics.csv").read_bytes() for n in ("a", "b"))
    assert a == b
    rows = read_metrics_csv(tmp_path / "a" / "metrics.csv")
    assert list(rows) == [1, 2] and rows[2]["loss"] < rows[1]["loss"]  # real training, not a stub
    assert (tmp_path / "a" / "test_metrics.json").read_bytes() == (
        tmp_path / "b" / "test_metrics.json"
    ).read_bytes()


# -- one run, one directory --------------------------------------------------------------------


def _fake_run(run_dir: Path, cfg, *files: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    for name in files:
        (run_dir / name).write_text("{}")


def test_run_dir_states_and_what_may_start_in_them(tmp_path):
    cfg = load_config(FAST)
    run_dir = tmp_path / "run"
    assert run_dir_status(run_dir) == "new"
    (run_dir / ".hydra").mkdir(parents=True)
    assert run_dir_status(run_dir) == "new" and check_run_dir(run_dir, cfg) == "new"

    _fake_run(run_dir, cfg, "metrics.csv")
    assert check_run_dir(run_dir, cfg) == "unfinished"  # a resume
    quiet = load_config([*FAST, "trainer.verbose=0"])
    assert check_run_dir(run_dir, quiet) == "unfinished"  # display keys may change
    with pytest.raises(KerasdiagError, match=r"its optimizer.lr was 0.001, now 0.01"):
        check_run_dir(run_dir, load_config([*FAST, "optimizer.lr=0.01"]))
    with pytest.raises(KerasdiagError, match="interrupted run; resume it with trainer.resume"):
        check_run_dir(run_dir, load_config([*FAST, "trainer.resume=false"]))

    # A tested (or NaN-stopped) run without its report is unfinished: the rerun writes the
    # diagnosis and report; only the completion marker, written after report.html, finishes it.
    for marker in ("test_metrics.json", "nan.json"):
        _fake_run(tmp_path / marker, cfg, "metrics.csv", marker)
        assert check_run_dir(tmp_path / marker, cfg) == "unfinished"
    done = tmp_path / "complete"
    _fake_run(done, cfg, "metrics.csv", "test_metrics.json", "report.html", RunLayout.COMPLETE)
    with pytest.raises(KerasdiagError, match="already holds a finished run"):
        check_run_dir(done, cfg)


def test_a_run_dir_in_use_is_refused(tmp_path):
    cfg = load_config(FAST)
    run_dir = tmp_path / "run"
    with claim_run_dir(run_dir, cfg) as status:
        assert status == "new"
        with pytest.raises(KerasdiagError, match="in use by another kerasdiag process"):
            with claim_run_dir(run_dir, cfg):
                pass
        assert (run_dir / RunLayout.LOCK).exists()  # the refused claim left the holder's lock alone
        proc = run_train(*FAST, f"hydra.run.dir={run_dir}", timeout=120)
        assert proc.returncode == 2 and "in use by another kerasdiag process" in proc.stderr
        assert not (run_dir / ".hydra").exists()  # refused before Hydra wrote there
    assert not (run_dir / RunLayout.LOCK).exists()


# -- atomic files ------------------------------------------------------------------------------

_WRITER = """
import sys
from kerasdiag.core.io import write_bytes_atomic
for i in range(10**6):
    write_bytes_atomic(sys.argv[1], bytes([i % 251]) * 3_000_000)
"""


def test_a_killed_writer_never_leaves_a_torn_file(tmp_path):
    target = tmp_path / "big.bin"
    rng = np.random.default_rng(0)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)])
        while not target.exists():  # at least one complete version
            assert proc.poll() is None
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = target.read_bytes()  # the last complete version, never a prefix of one
        assert len(data) == 3_000_000 and data == data[:1] * len(data)
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["big.bin"]
    assert all(p.name.startswith(TMP_PREFIX) for p in removed)


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"epoch": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"epo')
        raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
