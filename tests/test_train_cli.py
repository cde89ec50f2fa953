"""scripts/train.py end to end: the run directory, multirun, and one-line errors for bad input."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

from conftest import run_train

FAST = ["sanity=off", "monitors=off", "trainer.verbose=0"]


def error_lines(proc) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


def assert_one_line_error(proc, needle: str, run_dir=None) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and needle in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    if run_dir is not None:
        assert not run_dir.exists(), (
            f"half-written run left in {run_dir}: {list(run_dir.iterdir())}"
        )


def test_default_run_writes_every_run_file(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train("trainer.epochs=3", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("config.yaml", "metrics.csv", "test_metrics.json", "summary.txt", "data.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy,learning_rate")
    assert [ln.split(",")[0] for ln in lines[1:]] == ["1", "2", "3"]
    (best,) = (run_dir / "checkpoints").glob("best-epoch*-val_accuracy*.keras")
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    test = json.loads((run_dir / "test_metrics.json").read_text())
    assert test["accuracy"] > 0.86  # 3 epochs of an MLP on real digits: 0.900
    assert "hidden1_dense" in (run_dir / "summary.txt").read_text()
    assert "test accuracy" in proc.stdout


def test_multirun_sweeps_optimizers(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_train("-m", "optimizer=adam,nesterov", "trainer.epochs=1", *FAST,
                     f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    configs = sorted(sweep.glob("*/config.yaml"))
    assert len(configs) == 2
    assert "nesterov: true" in configs[1].read_text()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer=foo", "optimizer/foo"),
        ("recipe=nope", "recipe/nope"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("optimizer.lrr=0.1", "lrr"),
        ("recipe=cifar_softmax data.path=/no/such/dir", "data.path"),
    ],
)
def test_bad_config_is_one_line_exit_2_and_no_run_dir(tmp_path, override, needle):
    run_dir = tmp_path / "run"
    proc = run_train(*override.split(), f"hydra.run.dir={run_dir}", timeout=120)
    assert_one_line_error(proc, needle, run_dir)


def _cifar_copy(cifar_dir, tmp_path):
    folder = tmp_path / "cifar"
    shutil.copytree(cifar_dir, folder)
    for f in folder.iterdir():
        f.chmod(0o644)
    return folder


def test_hostile_pickle_in_data_path(tmp_path, cifar_dir):
    folder = _cifar_copy(cifar_dir, tmp_path)
    target = tmp_path / "payload-ran"
    payload = pickle.dumps({b"data": _Evil(str(target)), b"labels": [1]}, protocol=2)
    (folder / "data_batch_3").write_bytes(payload)
    run_dir = tmp_path / "run"
    proc = run_train(
        "recipe=cifar_softmax", f"data.path={folder}", f"hydra.run.dir={run_dir}", *FAST
    )
    assert_one_line_error(proc, "data_batch_3", run_dir)
    assert not target.exists()


def test_corrupt_pickle_in_data_path(tmp_path, cifar_dir):
    folder = _cifar_copy(cifar_dir, tmp_path)
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00garbage")
    run_dir = tmp_path / "run"
    proc = run_train(
        "recipe=cifar_softmax", f"data.path={folder}", f"hydra.run.dir={run_dir}", *FAST
    )
    assert_one_line_error(proc, "test_batch", run_dir)


def test_labels_out_of_range_in_cifar_batch(tmp_path, cifar_dir):
    folder = _cifar_copy(cifar_dir, tmp_path)
    batch = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 12, 3],
             b"batch_label": b"x", b"filenames": [b"a"] * 4}  # fmt: skip
    (folder / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
    run_dir = tmp_path / "run"
    proc = run_train(
        "recipe=cifar_softmax", f"data.path={folder}", f"hydra.run.dir={run_dir}", *FAST
    )
    assert_one_line_error(proc, "label 12 out of range", run_dir)


def test_nan_inputs_in_npz(tmp_path):
    x = np.random.default_rng(0).normal(size=(60, 8)).astype("float32")
    y = np.arange(60) % 3
    x[7, 3] = np.nan
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    run_dir = tmp_path / "run"
    proc = run_train(
        "data=npz", f"data.path={tmp_path / 'd.npz'}", f"hydra.run.dir={run_dir}", *FAST
    )
    assert_one_line_error(proc, "NaN", run_dir)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))
