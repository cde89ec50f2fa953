"""Every promise the README and docs/ make has a test here (or names the test that keeps it).

The docs' examples and commands run in test_docs; this file keeps what a real run must show.

Kept elsewhere: exactly-once epochs after a SIGKILL (test_reliability), the pickle and
Lambda refusals (test_security), mirrored training on two logical devices (test_distribute).
"""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from _gradcheck_helpers import digits

from kerasdiag.callbacks.run_backup import RunBackup
from kerasdiag.config import load_config
from kerasdiag.core.errors import DataError
from kerasdiag.data.loaders import load_dataset
from kerasdiag.modeling.safe_load import load_model_safely

from conftest import REPO, run_train

FAST = ["sanity=off", "trainer.verbose=0"]


def readme_run_files() -> list[str]:
    """The file names of the README's run-directory table (first column, in backticks)."""
    text = (REPO / "README.md").read_text()
    section = text.split("## The run directory", 1)[1].split("\n## ", 1)[0]
    names = []
    for line in section.splitlines():
        if line.startswith("| `"):
            names += re.findall(r"`([^`]+)`", line.split("|")[1])
    return names


# Files the README says appear only in some runs, and the run that makes them.
CONDITIONAL = {
    "ema.keras": "optimizer.use_ema=true",
    "nan.json": "a NaN/Inf loss",
    "lr_finder.json": "optimizer.lr=auto or sanity.lr_range=true",
}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("default") / "run"
    proc = run_train("trainer.epochs=3", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


def test_default_run_writes_every_file_the_readme_lists(default_run):
    run_dir, _ = default_run
    names = readme_run_files()
    assert {"report.html", "doctor.json", "diagnosis.json", "metrics.csv"} <= set(names)
    for name in names:
        if name in CONDITIONAL:
            assert not (run_dir / name).exists(), f"{name} without {CONDITIONAL[name]}"
            continue
        found = list(run_dir.glob(name.rstrip("/")))
        assert found, f"the README promises {name} in every run: {sorted(os.listdir(run_dir))}"
        if name.endswith("/"):
            assert found[0].is_dir() and any(found[0].iterdir()), name
        else:
            assert all(f.stat().st_size > 0 for f in found), name
    # the doctor ran inside the fit: its record covers every epoch and every step's loss
    doctor = json.loads((run_dir / "doctor.json").read_text())
    rows = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == 3 and len(doctor["history"]["loss"]) == 3
    assert len(doctor["step_losses"]) > 3 * 10


def test_default_run_console_gives_the_score_and_the_doctors_verdict(default_run):
    _, proc = default_run
    assert re.search(r"test accuracy 0\.\d+", proc.stdout)
    assert "report:" in proc.stdout
    assert re.search(r"doctor|symptom", proc.stdout, re.IGNORECASE)


def test_doctor_findings_reach_the_console_and_its_settings_come_from_the_config(tmp_path):
    # Plain SGD at 1e-4 on the digits MLP barely moves the loss: slow convergence.
    slow = ["optimizer=sgd", "optimizer.lr=1e-4", "trainer.epochs=4", *FAST]
    run_dir = tmp_path / "stop"
    proc = run_train(*slow, "monitors.doctor_stop_on=[nan,slow_convergence]",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"slow[ _]convergence", proc.stdout, re.IGNORECASE), proc.stdout[-3000:]
    # stop_on came from the config: training ended before its 4 epochs
    assert len((run_dir / "metrics.csv").read_text().splitlines()) - 1 < 4
    # the default stop_on ([nan]): the same symptom is named, training runs its 4 epochs, and
    # a threshold given on the command line is the one the doctor used
    relaxed = tmp_path / "relaxed"
    proc = run_train(*slow, "+monitors.doctor_thresholds.slow_epochs=3",
                     f"hydra.run.dir={relaxed}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len((relaxed / "metrics.csv").read_text().splitlines()) - 1 == 4
    doctor = json.loads((relaxed / "doctor.json").read_text())
    assert "slow_convergence" in {f["symptom"] for f in doctor["findings"]}
    assert doctor["thresholds"]["slow_epochs"] == 3 and doctor["stop_on"] == ["nan"]


def test_a_nan_stop_still_writes_the_report(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train("optimizer=sgd", "optimizer.lr=1e30", "model.activation=linear",
                     "trainer.epochs=2", *FAST, f"hydra.run.dir={run_dir}")  # fmt: skip
    assert proc.returncode == 3, proc.stderr[-3000:]
    html = (run_dir / "report.html").read_text()
    record = json.loads((run_dir / "nan.json").read_text())
    assert f"step {record['global_step']}" in html or str(record["global_step"]) in html
    assert re.search(r"NaN|Inf|non-finite", html)


# --- resume ---------------------------------------------------------------------------------


def test_reduce_lr_on_plateau_state_is_restored_on_resume(tmp_path):
    x, y = digits()
    backup = tmp_path / "backup"

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        # min_delta 10: no epoch ever improves enough, so the wait grows and the lr halves
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor="loss", factor=0.5, patience=2, min_delta=10.0, cooldown=1
        )
        return model, plateau

    class Crash(keras.callbacks.Callback):  # the process dies as epoch 4 begins
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                raise KeyboardInterrupt

    model, plateau = build()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=6, batch_size=256, verbose=0,
                  callbacks=[plateau, RunBackup(backup, track=[plateau]), Crash()])  # fmt: skip
    state = (plateau.wait, plateau.cooldown_counter, plateau.best)
    lr = float(model.optimizer.learning_rate)
    assert lr == pytest.approx(0.05)  # reduced once, after its patience ran out

    resumed, fresh = build()
    seen = {}

    class Peek(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.setdefault("epoch", epoch)
            seen.setdefault("state", (fresh.wait, fresh.cooldown_counter, fresh.best))
            seen.setdefault("lr", float(self.model.optimizer.learning_rate))

    resumed.fit(x, y, epochs=4, batch_size=256, verbose=0,
                callbacks=[fresh, RunBackup(backup, track=[fresh]), Peek()])  # fmt: skip
    assert seen["epoch"] == 3  # continued after the 3 backed-up epochs
    assert seen["state"] == state
    assert seen["lr"] == pytest.approx(lr)


def test_the_resume_backup_holds_weights_and_numbers_only(tmp_path):
    x, y = digits()
    backup = tmp_path / "backup"
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=5, restore_best_weights=True)
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=256,
        verbose=0,
        callbacks=[stop, RunBackup(backup, track=[stop], delete_on_train_end=False)],
    )
    files = sorted(p for p in backup.rglob("*") if p.is_file())
    assert files
    for path in files:
        assert path.suffix in {".h5", ".npz", ".json", ".sha256"}, path
        if path.suffix == ".h5":  # Keras' weights-only format: no model config to rebuild from
            raw = path.read_bytes()
            assert b"model_config" not in raw and b"class_name" not in raw
        if path.suffix == ".npz":  # plain arrays: loads with pickling off
            with np.load(path, allow_pickle=False) as arrays:
                assert all(arrays[k].dtype != object for k in arrays.files)


# --- multi-worker ------------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_multiworker_training_from_tf_config_on_two_processes(tmp_path):
    # Two workers with different seeds: only synchronised training (variables broadcast at
    # creation, gradients all-reduced every step) gives both the same curves.
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
        cmd = [sys.executable, str(REPO / "scripts" / "train.py"), "trainer.strategy=multiworker",
               "trainer.epochs=2", f"trainer.seed={index + 1}", "monitors=off", *FAST,
               f"hydra.run.dir={tmp_path / f'worker{index}'}"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    curves = [(tmp_path / f"worker{i}" / "metrics.csv").read_text() for i in range(2)]
    assert curves[0] == curves[1]
    test = [json.loads((tmp_path / f"worker{i}" / "test_metrics.json").read_text()) for i in (0, 1)]
    assert test[0]["accuracy"] == test[1]["accuracy"] > 0.5


# --- safety -------------------------------------------------------------------------------


def _model_loading_calls(tree: ast.AST) -> list[int]:
    """Lines that call a model loader: ``*.load_model(...)`` or ``saved_model.load(...)``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if f.attr == "load_model" or (
                f.attr == "load"
                and isinstance(f.value, ast.Attribute)
                and f.value.attr == "saved_model"
            ):
                lines.append(node.lineno)
    return lines


def test_every_model_load_goes_through_the_safe_loader():
    package = REPO / "kerasdiag"
    gate = package / "modeling" / "safe_load.py"
    offenders = []
    for path in package.rglob("*.py"):
        for line in _model_loading_calls(ast.parse(path.read_text())):
            if path != gate:
                offenders.append(f"{path.relative_to(REPO)}:{line}")
    assert not offenders, f"model loads that bypass load_model_safely: {offenders}"
    # the scan itself finds the one allowed call
    assert _model_loading_calls(ast.parse(gate.read_text()))


def test_savedmodel_folders_are_refused(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    folder = tmp_path / "exported"
    model.export(str(folder), verbose=False)
    assert (folder / "saved_model.pb").is_file()
    for path in (folder, tmp_path / "exported.keras"):
        if path.suffix == ".keras":
            folder.rename(path)
        with pytest.raises(DataError, match="only .keras files|no such file"):
            load_model_safely(path)


def test_a_zip_bomb_is_refused_through_load_dataset(tmp_path):
    # A few bytes on disk that declare a terabyte: the loader must read the declared size and
    # refuse before numpy expands anything.
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x_train.npy", b"\x93NUMPY" + b"\0" * 64)
        archive.filelist[0].file_size = 10**12
    assert path.stat().st_size < 10_000
    cfg = load_config(["data=npz", f"data.path={path}"]).data
    with pytest.raises(DataError, match="expands to 1000.0 GB"):
        load_dataset(cfg)


def test_readme_run_file_table_is_read():
    # guards the parser above: a README reshuffle must not make the file-list test vacuous
    assert len(readme_run_files()) >= 15
    assert Path("report.html").name in readme_run_files()
