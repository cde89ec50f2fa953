"""Bad input named by its real cause: a device, a directory or a symlink loop where a file is
expected, a 10 kB value, a batch larger than the training split, an image that does not
decode, a search trial whose result came in too late. Each is one ``error:`` line, exit 2,
and no run directory left behind; config-only refusals end before TensorFlow starts."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kerasdiag.config.checks import path_problem
from kerasdiag.core.errors import ConfigError, shorten

from conftest import run_train


def _refused(proc, run_dir: Path) -> str:
    """The one error line of a process refused as bad input that left no run directory."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert not run_dir.exists()
    return line


# -- a path that is something else than the file or directory expected -----------------------


@pytest.fixture
def odd_paths(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file.csv").write_text("x,label\n1,a\n")
    return tmp_path


@pytest.mark.parametrize(
    ("data", "path", "cause"),
    [
        ("npz", "/dev/zero", "is a device, not a file"),
        ("npz", "a_dir", "is a directory, not a file"),
        ("csv", "a_dir", "is a directory, not a file"),
        ("npz", "loop", "is a symlink loop"),
        ("image_folder", "a_file.csv", "is a file, not a directory"),
        ("npz", "missing.npz", "no such file"),
    ],
)
def test_a_path_is_refused_with_what_it_really_is(odd_paths, data, path, cause):
    full = path if path.startswith("/") else str(odd_paths / path)
    run_dir = odd_paths / "run"
    proc = run_train(f"data={data}", f"data.path={full}", "data.target=label",
                     f"hydra.run.dir={run_dir}")  # fmt: skip
    line = _refused(proc, run_dir)
    assert line.startswith(f"error: invalid config: data.path={full!r}: {cause}"), line


def test_path_problem_names_pipes_and_broken_links(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    broken = tmp_path / "broken"
    broken.symlink_to(tmp_path / "gone")
    assert path_problem(fifo, "file") == "is a named pipe, not a file"
    assert "broken symlink" in path_problem(broken, "file")
    assert path_problem(tmp_path, "directory") is None
    assert path_problem(tmp_path / "x" / "y", "file") == "no such file"


# -- long values ---------------------------------------------------------------------------------


def test_a_long_value_is_shortened_in_the_error_line(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train("optimizer.name=" + "x" * 10_000, f"hydra.run.dir={run_dir}")
    line = _refused(proc, run_dir)
    assert len(line) < 300 and "… (10002 characters)" in line, line
    assert line.startswith("error: invalid config: optimizer.name='xxx")


def test_config_errors_shorten_the_value_they_echo():
    error = ConfigError("data.path", "y" * 5000, "no such file")
    assert len(str(error)) < 200 and error.value == "y" * 5000  # whole for the code
    assert shorten("short") == "short" and shorten("a\n b") == "a b"


# -- sizes that cannot work --------------------------------------------------------------------


def test_a_batch_larger_than_the_training_split_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train("data.batch_size=100000000", f"hydra.run.dir={run_dir}")
    line = _refused(proc, run_dir)
    assert line.startswith("error: invalid config: data.batch_size=100000000: is larger than "
                           "the training split ("), line  # fmt: skip
    assert "examples)" in line


# -- images that do not decode -----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_an_image_that_does_not_decode_is_named(tmp_path, damage):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(20):
            image = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            (root / name / f"{i:02d}.png").write_bytes(tf.io.encode_png(image).numpy())
    bad = root / "dog" / "07.png"
    data = bad.read_bytes()
    bad.write_bytes(
        data[: len(data) // 2] if damage == "truncated" else b"\x89PNG\r\n\x1a\n" + bytes(64)
    )
    run_dir = tmp_path / "run"
    proc = run_train("data=image_folder", f"data.path={root}", "data.batch_size=8",
                     "data.image_size=[8,8]", f"hydra.run.dir={run_dir}")  # fmt: skip
    line = _refused(proc, run_dir)
    assert line.startswith(f"error: cannot decode image {bad}: Invalid PNG"), line
    assert "{{" not in line and "[Op:" not in line


# -- a search result that comes in late ----------------------------------------------------------


def test_a_late_result_says_why_it_is_ignored():
    from kerasdiag.search.distributed import RUNNING, LeaseMixin

    oracle = SimpleNamespace(lease_seconds=3.0, from_ledger={"1"}, trials={},
                             ongoing_trials={"tuner1": SimpleNamespace(trial_id="2")})  # fmt: skip
    why = LeaseMixin._why_not_held
    assert "already recorded from search/ledger.jsonl" in why(oracle, "1")
    assert "lease expired" not in why(oracle, "1")
    assert why(oracle, "2") == "its lease expired (no word for 3 s) and tuner1 runs it now"
    oracle.trials["3"] = SimpleNamespace(status="COMPLETED")
    assert why(oracle, "3") == "it is already recorded (COMPLETED), once"
    assert RUNNING == "RUNNING"


def test_a_failed_trial_keeps_its_one_line_not_keras_tuners_traceback():
    import keras_tuner
    from keras_tuner.src.engine import trial as trial_module

    from kerasdiag.search.tuner import TrialTuner

    class LostLease(TrialTuner):
        def __init__(self):  # no oracle, no data: only the failure path is exercised
            pass

        def _run_and_update_trial(self, trial, *args, **kwargs):
            raise keras_tuner.errors.FailedTrialError("trial 3 abandoned: this worker's lease")

    trial = trial_module.Trial(keras_tuner.HyperParameters(), trial_id="3")
    LostLease()._try_run_and_update_trial(trial)
    assert trial.status == trial_module.TrialStatus.FAILED
    assert trial.message == "trial 3 abandoned: this worker's lease"


def test_a_run_refused_before_training_leaves_no_empty_outputs_folder(tmp_path):
    # Hydra's default run directory (outputs/<recipe>/<time>) with its parents made for it: a
    # refusal removes the folders this process made, and none that were there before.
    proc = run_train("data.batch_size=100000000", cwd=tmp_path)
    assert proc.returncode == 2 and "data.batch_size=100000000" in proc.stderr
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "outputs" / "theirs").mkdir(parents=True)
    proc = run_train("data.batch_size=100000000", cwd=tmp_path)
    assert proc.returncode == 2
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "outputs",
        "outputs/theirs",
    ]
