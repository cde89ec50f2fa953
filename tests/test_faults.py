"""Faults on disk and in the numbers: a corrupt backup, a disk that fills up, a read-only run
directory, an lr that overflows float32, a NaN no callback raised on, and two processes racing
for one run directory. Each ends in one ``error:`` line with its documented exit code."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from kerasdiag.cli import hydra_app as cli
from kerasdiag.core.errors import KerasdiagError
from kerasdiag.core.io import TMP_PREFIX
from kerasdiag.core.rundir import RunLayout

from conftest import run_train

FAST = ["sanity=off", "monitors=off", "trainer.tensorboard=false", "trainer.verbose=0"]


def _errors(proc) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


# -- non-finite learning rates and losses ------------------------------------------------------


def test_an_lr_that_overflows_float32_is_refused_before_training(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train("optimizer.lr=1e308", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert _errors(proc) == [
        "error: invalid config: optimizer.lr=1e+308: must be finite in float32 (at most 3.403e+38)"
    ]
    assert not run_dir.exists()


def test_a_nan_the_doctor_stopped_on_first_still_ends_as_a_nan_stop(tmp_path):
    # lr 3e38 is finite in float32; the first step makes the weights Inf/NaN while the loss of
    # that batch is finite, so the TrainingDoctor stops training before NaNStop sees a NaN loss.
    run_dir = tmp_path / "run"
    proc = run_train("sanity=off", "trainer.epochs=2", "trainer.tensorboard=false",
                     "optimizer.lr=3e38", f"hydra.run.dir={run_dir}")  # fmt: skip
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert len(_errors(proc)) == 1 and "became nan" in _errors(proc)[0]
    record = json.loads((run_dir / "nan.json").read_text())
    assert record["loss"] == "nan" and record["advice"]
    assert not (run_dir / "test_metrics.json").exists()  # never counted as a finished run


# -- the resume backup -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_xy():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:400] / 16.0).astype("float32"), y[:400].astype("int64")


def _backed_up_fit(backup: Path, digits_xy, epochs: int, units: int = 16):
    import keras

    from kerasdiag.callbacks.run_backup import RunBackup

    x, y = digits_xy
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(units, activation="relu"),
                              keras.layers.Dense(10)])  # fmt: skip
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    es = keras.callbacks.EarlyStopping(patience=50, restore_best_weights=True)
    backup_cb = RunBackup(backup, track=[es], delete_on_train_end=False)
    model.fit(x, y, validation_split=0.25, epochs=epochs, verbose=0, callbacks=[es, backup_cb])


def test_weights_overwritten_inside_a_valid_backup_file_are_refused(tmp_path, digits_xy):
    backup = tmp_path / "backup"
    _backed_up_fit(backup, digits_xy, 2)
    state = json.loads((backup / "state.json").read_text())
    weights = backup / state["weights"]
    with np.load(weights, allow_pickle=False) as saved:
        arrays = {name: saved[name] for name in saved.files}
    kernel = next(name for name, value in arrays.items() if value.ndim == 2)
    arrays[kernel] = np.full_like(arrays[kernel], 1e4)
    with open(weights, "wb") as f:  # still a perfectly valid .npz of the right shapes
        np.savez(f, **arrays)
    with pytest.raises(KerasdiagError) as info:
        _backed_up_fit(backup, digits_xy, 4)
    message = str(info.value)
    assert "\n" not in message and f"backup file {weights} is corrupt" in message
    assert f"Delete {backup}" in message


def test_a_backup_of_another_model_is_refused_naming_the_variable(tmp_path, digits_xy):
    backup = tmp_path / "backup"
    _backed_up_fit(backup, digits_xy, 2)
    with pytest.raises(KerasdiagError) as info:  # the same layers, 32 units instead of 16
        _backed_up_fit(backup, digits_xy, 4, units=32)
    message = str(info.value)
    assert "\n" not in message and "cannot resume from backup" in message
    assert "has shape (64, 32), (64, 16) in the backup" in message


def test_a_subclassed_model_without_variables_yet_is_told_to_create_them(tmp_path, digits_xy):
    import keras

    from kerasdiag.callbacks.run_backup import RunBackup

    class Classifier(keras.Model):  # creates its variables at its first call
        def __init__(self):
            super().__init__()
            self.hidden, self.out = (
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dense(10),
            )

        def call(self, x):
            return self.out(self.hidden(x))

    x, y = digits_xy
    backup = tmp_path / "backup"
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    first, model = Classifier(), Classifier()
    first.compile("adam", loss)
    first.fit(x, y, epochs=2, verbose=0, callbacks=[RunBackup(backup, delete_on_train_end=False)])
    model.compile("adam", loss)
    with pytest.raises(KerasdiagError) as info:  # resumes before its first call
        model.fit(x, y, epochs=4, verbose=0, callbacks=[RunBackup(backup)])
    message = str(info.value)
    assert "\n" not in message and "cannot resume from backup" in message
    assert "call it on a batch of inputs before fit" in message
    model(x[:1])  # created: now it resumes, with the first model's weights (that fit had ended)
    model.fit(x, y, epochs=4, verbose=0, callbacks=[RunBackup(backup)])
    for mine, theirs in zip(model.weights, first.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_a_truncated_early_stopping_npz_is_refused_in_one_line(tmp_path, digits_xy):
    backup = tmp_path / "backup"
    _backed_up_fit(backup, digits_xy, 2)
    npz = next(backup.glob("*best_weights.npz"))
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(KerasdiagError, match=f"backup file {npz} is corrupt"):
        _backed_up_fit(backup, digits_xy, 4)


def test_an_intact_backup_resumes(tmp_path, digits_xy):
    backup = tmp_path / "backup"
    _backed_up_fit(backup, digits_xy, 2)
    state = json.loads((backup / "state.json").read_text())
    assert len(state["checksums"]) == 2 and all(len(v) == 64 for v in state["checksums"].values())
    # As if killed after epoch 2 of 3 (the fit above ended, which marks the backup finished):
    # the state before that mark, committed with its manifest (an edit by hand is refused).
    from kerasdiag.callbacks.run_backup import _commit

    _commit(backup, {**state, "finished": False})
    _backed_up_fit(backup, digits_xy, 3)
    assert json.loads((backup / "state.json").read_text())["epoch"] == 3


# -- disk full, read-only ----------------------------------------------------------------------


# Set by .ci/run: there the disk-fault tests must run, so a tmpfs that cannot be mounted is a
# failure; elsewhere (an ordinary account) they are skipped with the reason.
REQUIRE_ROOT_TESTS = "KERASDIAG_REQUIRE_ROOT_TESTS"


def _mount_tmpfs(where: Path, size: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)  # fmt: skip


def tmpfs_refusal() -> str | None:
    """Why a tmpfs cannot be mounted here, or None when it can: a real mount (and unmount) of
    a tiny one in a scratch folder, the same call the disk-fault tests make."""
    with tempfile.TemporaryDirectory() as scratch:
        try:
            mounted = _mount_tmpfs(Path(scratch), "64k")
        except FileNotFoundError:
            return "no mount command"
        if mounted.returncode != 0:
            return " ".join(mounted.stderr.split()) or f"mount exited with {mounted.returncode}"
        subprocess.run(["umount", "-l", scratch], check=False)
    return None


def tmpfs_skip_reason(refusal: str | None, required: bool) -> str | None:
    """Why the disk-fault tests are skipped here, or None when they run: they run where a
    tmpfs can be mounted, and where the environment requires them (CI runs as root: a skip
    there would lose them silently, so a mount that fails fails the test instead)."""
    if refusal is None or required:
        return None
    return (
        f"cannot mount a tmpfs for the disk-fault tests (needs root with CAP_SYS_ADMIN): {refusal}"
    )


_SKIP_REASON = tmpfs_skip_reason(
    tmpfs_refusal(), os.environ.get(REQUIRE_ROOT_TESTS, "") not in ("", "0")
)
needs_tmpfs = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str) -> Path:
    """A real tmpfs of ``size``, mounted at ``where`` (root with CAP_SYS_ADMIN only). A mount
    that fails here fails the test: it is marked :data:`needs_tmpfs`, so it runs only where
    a tmpfs could be mounted or where these tests are required."""
    where.mkdir()
    try:
        mounted = _mount_tmpfs(where, size)
    except FileNotFoundError:
        pytest.fail(f"cannot mount a tmpfs at {where}: no mount command")
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {where}: {' '.join(mounted.stderr.split())}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@needs_tmpfs
def test_a_full_disk_is_one_line_exit_4_and_no_half_written_file(tmp_path):
    from kerasdiag.modeling.safe_load import load_model_safely

    with tiny_tmpfs(tmp_path / "disk", "300k") as disk:
        run_dir = disk / "run"
        proc = run_train(*FAST, "trainer.epochs=40", "trainer.early_stopping.enabled=false",
                         "model.hidden_units=[256]", f"hydra.run.dir={run_dir}")  # fmt: skip
        assert proc.returncode == 4, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        [line] = _errors(proc)
        assert "No space left on device" in line and str(run_dir) in line
        assert not [p for p in run_dir.rglob("*") if p.name.startswith(TMP_PREFIX)]
        for path in run_dir.rglob("*.keras"):
            load_model_safely(path)  # every file there is whole
        for path in run_dir.rglob("*.json"):
            json.loads(path.read_text())


@needs_tmpfs
@pytest.mark.parametrize("size", ["8k", "16k"])
def test_a_disk_too_full_to_start_is_one_line_before_anything_is_written(tmp_path, size):
    with tiny_tmpfs(tmp_path / "disk", size) as disk:
        run_dir = disk / "run"
        proc = run_train(*FAST, f"hydra.run.dir={run_dir}")
        assert proc.returncode == 4 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        [line] = _errors(proc)
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        assert line.startswith(f"error: cannot write or read {run_dir}: No space left on "
                               f"device ({free} bytes free"), line  # fmt: skip
        assert not list(disk.iterdir())  # nothing written, not even the run directory


def test_without_a_tmpfs_the_disk_tests_skip_or_run_as_the_environment_says():
    # What an ordinary account meets (mount refused): skipped with the reason, unless CI's
    # variable says these tests must run (they then run, and the failed mount fails them).
    refused = "mount: must be superuser to use mount"
    reason = tmpfs_skip_reason(refused, required=False)
    assert reason is not None and "needs root with CAP_SYS_ADMIN" in reason and refused in reason
    assert tmpfs_skip_reason(refused, required=True) is None
    assert tmpfs_skip_reason(None, required=False) is None  # a tmpfs can be mounted: they run


@needs_tmpfs
def test_a_read_only_run_directory_is_one_line_exit_4(tmp_path):
    with tiny_tmpfs(tmp_path / "ro", "1m") as mount:
        (mount / "old").mkdir()  # an existing directory, and a new one, on a read-only disk
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        for run_dir in (mount / "new", mount / "old"):
            proc = run_train(*FAST, f"hydra.run.dir={run_dir}")
            assert proc.returncode == 4 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
            [line] = _errors(proc)
            assert "Read-only file system" in line and str(run_dir) in line


# -- claiming a run directory ------------------------------------------------------------------


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process holding the run directory's lock (as a winner that is loading data)."""
    code = ("import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir / RunLayout.LOCK)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.parametrize("made_here", [False, True])
def test_a_refused_process_never_removes_a_directory_another_one_uses(tmp_path, monkeypatch,
                                                                      made_here):  # fmt: skip
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("winner: true\n")
    holder = _hold_lock(run_dir)
    try:
        # Refused after its preflight passed (the winner took the lock in between): whether it
        # found the directory or made it, the directory is the winner's now.
        monkeypatch.setattr(cli, "_made_run_dir", made_here)
        with pytest.raises(SystemExit) as exit_info:
            with cli.exit_on_user_error(run_dir):
                raise KerasdiagError(f"run directory {run_dir} is in use by another process")
        assert exit_info.value.code == 2
        assert (run_dir / ".hydra" / "config.yaml").read_text() == "winner: true\n"
        assert (run_dir / RunLayout.LOCK).exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_refused_process_removes_only_an_empty_directory_it_made(tmp_path, monkeypatch):
    found, made = tmp_path / "found", tmp_path / "made"
    for run_dir, mine in ((found, False), (made, True)):
        (run_dir / ".hydra").mkdir(parents=True)
        monkeypatch.setattr(cli, "_made_run_dir", mine)
        with pytest.raises(SystemExit):
            with cli.exit_on_user_error(run_dir):
                raise KerasdiagError("bad input")
    assert found.is_dir() and not made.exists()


def test_two_processes_started_on_one_new_directory_one_runs_one_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, str(Path(cli.__file__).parents[2] / "scripts" / "train.py"),
               *FAST, "trainer.epochs=2", f"hydra.run.dir={run_dir}"]  # fmt: skip
    # Differing overrides: the directory's .hydra/ files must be the winner's alone.
    overrides = ["data.seed=1", "data.seed=2"]
    procs = [subprocess.Popen([*command, seed], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in overrides]  # fmt: skip
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "in use by another kerasdiag process" in refused or "already holds" in refused
    assert (run_dir / "test_metrics.json").is_file() and (run_dir / "metrics.csv").is_file()
    winner = overrides[[code for code, _ in results].index(0)]
    assert winner in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").data.seed == int(winner[-1])
    assert "in use by another" not in (run_dir / "train.log").read_text()


def test_file_errors_read_as_one_line_naming_the_path_and_the_cause(tmp_path):
    with pytest.raises(IsADirectoryError) as info:
        open(tmp_path)  # a directory where a file is expected: a real EISDIR
    line = cli.os_error_line(info.value)
    assert line == (f"cannot write or read {tmp_path}: Is a directory; a directory stands where "
                    "a file is expected: move it away")  # fmt: skip
    # h5py reports its errno in the text only
    h5 = OSError("Unable to synchronously create file (file write failed: errno = 28, "
                 "error message = 'No space left on device', name = '/r/backup/w.weights.h5')")  # fmt: skip
    assert cli.os_error_line(h5).startswith(
        "cannot write or read /r/backup/w.weights.h5: No space left on device; the disk is full"
    )
