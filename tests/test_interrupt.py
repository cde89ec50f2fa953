"""SIGTERM and SIGINT end a run politely (a backup at the step, one line, exit 128+signal) and
the same command resumes it exactly; whatever a resume reads back is checked against the
backup's manifest; a kill -9's temporary files are removed at the next start."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kerasdiag.core.errors import KerasdiagError
from kerasdiag.core.io import TMP_PREFIX, remove_stale_temporaries

from conftest import REPO

SMALL = ["trainer.epochs=3", "data.limit=400", "sanity=off", "trainer.deterministic=true"]


def _start(run_dir: Path, log: Path) -> subprocess.Popen:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "train.py"), *SMALL, f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=env, stdout=open(log, "w"), stderr=open(log.with_suffix(".err"), "w"),
    )  # fmt: skip


def _wait_for(proc: subprocess.Popen, log: Path, text: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:] + log.with_suffix(".err").read_text()
        assert time.time() < deadline, f"no {text!r} after {timeout} s"
        time.sleep(0.01)


def _train(run_dir: Path, log: Path) -> tuple[int, str, str]:
    proc = _start(run_dir, log)
    return proc.wait(timeout=300), log.read_text(), log.with_suffix(".err").read_text()


def _interrupted(run_dir: Path, log: Path, after: str, *signals: int):
    proc = _start(run_dir, log)
    _wait_for(proc, log, after)
    for signum in signals:
        proc.send_signal(signum)
    return proc.wait(timeout=300), log.read_text(), log.with_suffix(".err").read_text()


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def _temporaries(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob(f"{TMP_PREFIX}*")]


@pytest.fixture(scope="module")
def uninterrupted_dir(tmp_path_factory) -> Path:
    """The small deterministic run that nothing interrupts."""
    run_dir = tmp_path_factory.mktemp("plain") / "run"
    code, out, err = _train(run_dir, run_dir.parent / "plain.log")
    assert code == 0, out[-2000:] + err[-2000:]
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_dir) -> str:
    """metrics.csv of the small deterministic run that nothing interrupts."""
    return (uninterrupted_dir / "metrics.csv").read_text()


@pytest.fixture(scope="module")
def terminated_mid_epoch(tmp_path_factory) -> tuple[Path, str]:
    """The same run sent SIGTERM before its step 16 (in epoch 2 of 3), then run again."""
    from test_kill_points import _train as train

    run_dir = tmp_path_factory.mktemp("sigterm") / "run"
    stopped = train(run_dir, "step:16", SMALL, signal_name="SIGTERM")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    state = json.loads((run_dir / "backup" / "state.json").read_text())
    assert (state["epoch"], state["step"]) == (1, 6)  # epoch 2's sixth step, its steps 11..16
    rerun = train(run_dir, args=SMALL)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return run_dir, rerun.stdout


def test_sigterm_mid_epoch_then_rerun_is_the_uninterrupted_deterministic_run(
    terminated_mid_epoch, uninterrupted_dir
):
    """Every file as if nothing had happened (timings aside): metrics.csv, the learning-rate
    record, the curves (every epoch, each step once), the checkpoint, the test's scores, the
    step monitors' CSVs (the stopped epoch's rows before the stop kept, its replayed steps
    not measured again), doctor.json, the diagnosis and the report; and every TensorBoard
    record, the monitors' events of the steps before the stop included."""
    from test_kill_points import _differing, _tensorboard

    run_dir, out = terminated_mid_epoch
    assert "RunBackup: resuming in epoch 2 after step 6" in out
    assert not _differing(run_dir, uninterrupted_dir)
    for name in ("metrics.csv", "update_ratios.csv", "activations.csv", "gradient_norms.csv"):
        assert (run_dir / name).read_bytes() == (uninterrupted_dir / name).read_bytes()
    assert _tensorboard(run_dir) == _tensorboard(uninterrupted_dir)


@pytest.mark.parametrize(
    ("signum", "after"),
    [(signal.SIGTERM, "Epoch 1/3"), (signal.SIGINT, "Epoch 2/3")],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signal_backs_up_at_the_step_and_the_same_command_resumes_exactly(
    tmp_path, uninterrupted, signum, after
):
    run_dir = tmp_path / "run"
    code, out, err = _interrupted(run_dir, tmp_path / "first.log", after, signum)
    assert code == 128 + signum, out[-2000:] + err[-2000:]
    lines = _errors(err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: stopped by {signal.Signals(signum).name} in epoch ")
    assert "to resume, run the same command again: python " in lines[0]
    assert f"hydra.run.dir={run_dir}" in lines[0]
    assert "Traceback" not in err and not _temporaries(run_dir)
    state = json.loads((run_dir / "backup" / "state.json").read_text())
    assert state["step"] > 0  # a backup in the middle of the epoch, not at its end
    assert not (run_dir / "test_metrics.json").exists()

    code, out, err = _train(run_dir, tmp_path / "again.log")
    assert code == 0, out[-2000:] + err[-2000:]
    epoch = state["epoch"] + 1
    assert f"RunBackup: resuming in epoch {epoch} after step {state['step']}" in out
    assert (run_dir / "metrics.csv").read_text() == uninterrupted  # the same numbers
    assert not (run_dir / "backup").exists() and not _temporaries(run_dir)


def test_a_second_signal_while_stopping_ends_the_process_at_once(tmp_path):
    run_dir = tmp_path / "run"
    # Both arrive during the first step (its tracing takes seconds): the first asks for a
    # stop at the batch end, the second does not wait for it. (Two of one kind sent at once
    # may reach Python as one: the operating system keeps one pending signal per kind.)
    log = tmp_path / "first.log"
    code, _, err = _interrupted(run_dir, log, "Epoch 1/3", signal.SIGTERM, signal.SIGINT)
    lines = _errors(err)  # either may be handled first (pending ones go by signal number)
    assert len(lines) == 1 and " while stopping: ended at once; " in lines[0], err
    second = signal.Signals[lines[0].split()[1]]
    assert second in (signal.SIGTERM, signal.SIGINT) and code == 128 + second


def test_a_state_json_edited_by_hand_is_refused_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = _interrupted(run_dir, tmp_path / "first.log", "Epoch 2/3", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, out[-2000:] + err[-2000:]
    state_path = run_dir / "backup" / "state.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({**state, "epoch": state["epoch"] + 2}))

    code, out, err = _train(run_dir, tmp_path / "again.log")
    assert code == 2, out[-2000:] + err[-2000:]
    lines = _errors(err)
    assert len(lines) == 1 and f"backup file {state_path} is corrupt" in lines[0], err
    assert "Epoch " not in out and "resuming" not in out  # nothing trained


def test_a_kill_9s_temporaries_are_removed_at_the_next_start(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    proc = _start(run_dir, tmp_path / "first.log")
    _wait_for(proc, tmp_path / "first.log", "Epoch 2/3")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    # What a writer killed mid-write leaves (its process is gone): in the run directory and
    # in a subfolder.
    dead = proc.pid
    left = [run_dir / f"{TMP_PREFIX}{dead}-x-metrics.csv",
            run_dir / "checkpoints" / f"{TMP_PREFIX}{dead}-y-best.keras"]  # fmt: skip
    for path in left:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    code, out, err = _train(run_dir, tmp_path / "again.log")
    assert code == 0, out[-2000:] + err[-2000:]
    assert not _temporaries(run_dir)
    assert (run_dir / "metrics.csv").read_text() == uninterrupted


def test_a_live_writers_temporary_is_kept(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f"{TMP_PREFIX}{sleeper.pid}-a-x.json"
        mine = tmp_path / "sub" / f"{TMP_PREFIX}{os.getpid()}-b-y.json"
        mine.parent.mkdir()
        live.write_text("{}")
        mine.write_text("{}")
        assert remove_stale_temporaries(tmp_path, recursive=True) == [mine]
        assert live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


# -- in a user's own fit ---------------------------------------------------------------------


@pytest.fixture
def stop_handlers():
    """install_stop_handlers for one test; pytest's own handlers come back after it."""
    from kerasdiag.core import signals

    saved = {s: signal.getsignal(s) for s in signals.STOP_SIGNALS}
    assert signals.install_stop_handlers()
    yield signals
    signals.forget_stop_request()
    for s, handler in saved.items():
        signal.signal(s, handler)


def _fit(backup_dir: Path, *extra):
    import keras

    from kerasdiag.callbacks import StopOnSignal
    from kerasdiag.callbacks.run_backup import RunBackup

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2)])  # fmt: skip
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])  # fmt: skip
    backup = RunBackup(backup_dir, delete_on_train_end=False)
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False,
                        callbacks=[backup, StopOnSignal(backup), *extra])  # fmt: skip
    return model, history


def test_stop_on_signal_in_a_users_fit_resumes_at_the_step(tmp_path, stop_handlers):
    import keras

    class Preempt(keras.callbacks.Callback):  # the scheduler, in epoch 2 before its step 4
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if (self.epoch, batch) == (1, 3):
                os.kill(os.getpid(), signal.SIGTERM)

    plain, plain_history = _fit(tmp_path / "plain")
    with pytest.raises(stop_handlers.RunInterrupted) as info:
        _fit(tmp_path / "backup", Preempt())
    assert info.value.exit_code == 143
    assert str(info.value).startswith("stopped by SIGTERM in epoch 2 after step 4, backed up")
    state = json.loads((tmp_path / "backup" / "state.json").read_text())
    assert (state["epoch"], state["step"]) == (1, 4)

    stop_handlers.forget_stop_request()
    resumed, history = _fit(tmp_path / "backup")
    assert history.epoch == [1, 2]
    for key in ("loss", "accuracy"):  # epoch 2's mean over all its steps, as uninterrupted
        assert history.history[key] == plain_history.history[key][1:]
    for a, b in zip(resumed.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def _preempt():
    """The scheduler: a callback sending SIGTERM before step 4 of epoch 2."""
    import keras

    class Preempt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if (self.epoch, batch) == (1, 3):
                os.kill(os.getpid(), signal.SIGTERM)

    return Preempt()


def _monitored_fit(folder: Path, *extra, keep: list | None = None) -> None:
    """A user's fit with the step monitors, the doctor fed by them, a RunBackup carrying
    their records and a StopOnSignal: the setting a SIGTERM inside an epoch tests. ``keep``
    receives the callbacks (their writers stay open while the list holds them)."""
    import keras

    from kerasdiag.callbacks import (
        ActivationHistograms,
        GradientMonitor,
        LearningRateMonitor,
        StopOnSignal,
        TrainingDoctor,
        UpdateRatioMonitor,
    )
    from kerasdiag.callbacks.base import WritesBarrier
    from kerasdiag.callbacks.run_backup import RunBackup

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int64")
    keras.utils.set_random_seed(0)
    # named: the rows name the layers, and the three fits run in one process
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, "relu", name="hidden"),
                              keras.layers.Dense(2, name="out")], name="net")  # fmt: skip
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])  # fmt: skip
    board = folder / "tensorboard"
    monitors = [
        UpdateRatioMonitor(freq=1, log_dir=board, csv_path=folder / "update_ratios.csv"),
        GradientMonitor(x[:32], y[:32], freq=2, log_dir=board,
                        csv_path=folder / "gradient_norms.csv"),
        ActivationHistograms(x[:32], freq=3, log_dir=board, csv_path=folder / "activations.csv"),
        LearningRateMonitor(log_dir=board, csv_path=folder / "learning_rate.csv"),
    ]  # fmt: skip
    doctor = TrainingDoctor(monitors=monitors, path=folder / "doctor.json", verbose=0)
    callbacks = [*monitors, doctor, WritesBarrier()]
    callbacks.append(RunBackup(folder / "backup", delete_on_train_end=False))
    callbacks.append(StopOnSignal.after(callbacks))
    if keep is not None:
        keep.extend(callbacks)
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False,
              callbacks=[*callbacks, *extra])  # fmt: skip


def test_a_users_fit_stopped_inside_an_epoch_keeps_the_monitors_and_doctor_records(
    tmp_path, stop_handlers
):
    """SIGTERM before step 4 of epoch 2, then the same fit: the monitors' rows of that
    epoch's first steps are the interrupted process's (carried by the step backup, not
    measured again on the replayed steps, whose weights are those of the stop: SGD's update
    ratios would read 0 there), the doctor judges the epoch as one (no false stagnant
    weights), and every TensorBoard record of the stopped process was on disk at its
    backup."""
    from test_kill_points import _tensorboard, normalised

    _monitored_fit(tmp_path / "plain")
    stopped: list = []  # the stopped fit's callbacks, their writers still open
    with pytest.raises(stop_handlers.RunInterrupted):
        _monitored_fit(tmp_path / "run", _preempt(), keep=stopped)
    state = json.loads((tmp_path / "run" / "backup" / "state.json").read_text())
    assert (state["epoch"], state["step"]) == (1, 4)
    # On disk by the backup, not when a writer is closed or collected: the update ratio of
    # the step before the stop, which taking the monitor's state completes.
    at_backup = _tensorboard(tmp_path / "run")
    assert ("update_ratio", "update_ratio/net/hidden/kernel", 11) in at_backup
    stopped.clear()
    stop_handlers.forget_stop_request()
    _monitored_fit(tmp_path / "run")

    for name in ("update_ratios.csv", "gradient_norms.csv", "activations.csv",
                 "learning_rate.csv"):  # fmt: skip
        plain = (tmp_path / "plain" / name).read_text()
        assert (tmp_path / "run" / name).read_text() == plain, name
    rows = (tmp_path / "run" / "update_ratios.csv").read_text().splitlines()
    assert {r.split(",")[0] for r in rows[1:]} == {str(s) for s in range(24)}  # each step once
    doctor = normalised(tmp_path / "run", "doctor.json")
    assert doctor == normalised(tmp_path / "plain", "doctor.json")
    assert "stagnant_weights" not in {f["symptom"] for f in doctor["findings"]}
    assert _tensorboard(tmp_path / "run") == _tensorboard(tmp_path / "plain")


def test_a_commit_cut_between_manifest_and_state_resumes_the_previous_backup(tmp_path):
    """kill -9 after the new manifest, before the new state.json: the old state, its files
    still there, is what ``previous`` vouches for."""
    from kerasdiag.callbacks.run_backup import verified_backup_state

    backup = tmp_path / "backup"
    _fit(backup)  # three epoch backups; the last one's state and manifest stay
    state_path = backup / "state.json"
    old_state = state_path.read_text()
    state = json.loads(old_state)
    manifest = json.loads((backup / "manifest.json").read_text())
    # As if the next backup's manifest were written and the process then killed.
    fake = {"state": "0" * 64, "files": {"next.weights.h5": "1" * 64}}
    (backup / "manifest.json").write_text(json.dumps({**manifest, "current": fake,
                                                      "previous": manifest["current"]}))  # fmt: skip
    assert verified_backup_state(backup)["epoch"] == state["epoch"]

    state_path.write_text(json.dumps({**state, "epoch": 1}))  # neither generation's
    with pytest.raises(KerasdiagError, match=f"backup file {state_path} is corrupt"):
        verified_backup_state(backup)
    state_path.write_text(old_state)
    (backup / "manifest.json").unlink()
    with pytest.raises(KerasdiagError, match="manifest.json is corrupt .it is missing"):
        verified_backup_state(backup)


def test_an_extra_copy_of_the_backup_folder_is_checked_file_by_file(tmp_path):
    from kerasdiag.callbacks.run_backup import verified_backup_state

    backup = tmp_path / "backup"
    _fit(backup)
    copy = shutil.copytree(backup, tmp_path / "copy")
    assert verified_backup_state(copy)["epoch"] == 3
    weights = copy / json.loads((copy / "state.json").read_text())["weights"]
    weights.unlink()
    with pytest.raises(KerasdiagError, match=f"backup file {weights} is corrupt .it is missing"):
        verified_backup_state(copy)


def _edited(value: object) -> object:
    """Another value of the same kind: what a hand edit would put there."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 2
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, value[-1]] if value else [0]
    return {**value, "edited": 1}


def test_every_field_of_state_json_is_vouched_for_by_the_manifest(tmp_path):
    """The digest covers the whole state, the ``finished`` flag written at train end too:
    editing any one field is refused (resuming would be another run, or none)."""
    from kerasdiag.callbacks.run_backup import verified_backup_state

    backup = tmp_path / "backup"
    _fit(backup)
    state_path = backup / "state.json"
    text = state_path.read_text()
    state = json.loads(text)
    assert state["finished"] is True and verified_backup_state(backup) == state
    for field in state:
        state_path.write_text(json.dumps({**state, field: _edited(state[field])}))
        with pytest.raises(KerasdiagError) as info:
            verified_backup_state(backup)
        message = str(info.value)
        assert message.startswith(f"backup file {state_path} is corrupt") and "\n" not in message
    state_path.write_text(text)
    assert verified_backup_state(backup) == state


def test_a_finished_fit_is_not_trained_again_and_its_flag_cannot_be_cleared(tmp_path):
    """The flag that says "training is over" gets a manifest of its own when it is set: a
    second fit trains nothing; clearing the flag by hand is refused, not retrained."""
    from kerasdiag.core.errors import KerasdiagError

    backup = tmp_path / "backup"
    first, _ = _fit(backup)
    again, history = _fit(backup)
    assert history.epoch == []
    for a, b in zip(again.get_weights(), first.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    state_path = backup / "state.json"
    state_path.write_text(json.dumps({**json.loads(state_path.read_text()), "finished": False}))
    with pytest.raises(KerasdiagError, match="it differs from manifest.json"):
        _fit(backup)


def test_a_resumed_users_fit_draws_the_curves_of_every_epoch(tmp_path):
    """A CurvePlotter tracked by the RunBackup: killed after epoch 2's backup (an exception
    out of fit, which skips every train-end hook, as a kill does), the same fit again draws
    epochs 1-3, not only epoch 3: the same PNG as the fit never interrupted."""
    import keras

    from kerasdiag.callbacks import CurvePlotter
    from kerasdiag.callbacks.run_backup import RunBackup

    class Killed(Exception):
        pass

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise Killed

    def fit(folder: Path, *extra) -> CurvePlotter:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(256, 8)).astype("float32")
        y = (x.sum(axis=1) > 0).astype("int64")
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])  # fmt: skip
        plotter = CurvePlotter(folder, max_overhead=1.0)
        backup = RunBackup(folder / "backup", track=[plotter], delete_on_train_end=False)
        model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False,
                  callbacks=[plotter, backup, *extra])  # fmt: skip
        return plotter

    plain = fit(tmp_path / "plain")
    with pytest.raises(Killed):
        fit(tmp_path / "run", Kill())
    # The step record is one .npy file an epoch beside state.json, under the manifest.
    backup = tmp_path / "run" / "backup"
    state = json.loads((backup / "state.json").read_text())
    steps = state["callbacks"][0]["state"]["steps"]
    files = [ref["backup_array"] for ref in steps.values()]
    assert len(files) == 2 and all((backup / name).is_file() for name in files)
    manifest = json.loads((backup / "manifest.json").read_text())
    assert set(files) <= set(manifest["current"]["files"])
    resumed = fit(tmp_path / "run")
    assert len(resumed.epochs["loss"]) == 3 and resumed.epochs == plain.epochs
    for name in ("loss.png", "accuracy.png"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    # epoch 1's array was written once: the backups of epochs 2 and 3 refer to the same file
    final = json.loads((backup / "state.json").read_text())["callbacks"][0]["state"]["steps"]
    assert final["0"] == steps["0"] and len(final) == 3


def test_a_changed_array_file_of_the_backup_is_refused_in_one_line(tmp_path):
    """A carried record's .npy file is checked against the manifest like the weights."""
    import keras

    from kerasdiag.callbacks import CurvePlotter
    from kerasdiag.callbacks.run_backup import RunBackup, verified_backup_state

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plotter = CurvePlotter(tmp_path)
    plotter._steps[0] = [(1, 2.3), (2, 2.2)]
    backup = RunBackup(tmp_path / "backup", track=[plotter])
    backup.set_model(model)
    backup._save(1, 0)
    assert verified_backup_state(backup.backup_dir)["epoch"] == 1
    (array,) = backup.backup_dir.glob("array-*.npy")
    np.save(array, np.array([[1.0, 9.9], [2.0, 2.2]]))  # a valid .npy, other numbers
    with pytest.raises(KerasdiagError, match=f"backup file {array} is corrupt .its checksum"):
        verified_backup_state(backup.backup_dir)


def test_a_resumed_doctor_record_judges_the_loss_window_the_uninterrupted_run_held():
    """The oscillation rule looks at the last 20 step losses, across epochs: a record resumed
    at step 25 starts with the window of steps 5-24, not an empty one, so it finds and counts
    what the uninterrupted record does."""
    from kerasdiag.diagnosis.doctor import DoctorEngine

    losses = [2.3] + [1.0, 2.0] * 20  # jumps of 43% of the initial loss at every step

    def judged(engine: DoctorEngine, steps: range) -> DoctorEngine:
        engine.begin_epoch(0, start_step=0)
        for step in steps:
            engine.step_loss(step, losses[step])
        return engine

    whole = judged(DoctorEngine(), range(len(losses)))
    first = judged(DoctorEngine(), range(25))
    resumed = DoctorEngine()
    resumed.start(25, first.to_json())
    judged(resumed, range(25, len(losses)))
    assert [f.to_dict() for f in whole.findings][0]["count"] == len(losses) - 20
    assert [f.to_dict() for f in resumed.findings] == [f.to_dict() for f in whole.findings]
