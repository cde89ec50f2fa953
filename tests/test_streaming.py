"""Image folders streamed from disk by tf.data: a folder of PNGs written from the CIFAR-10
sample trains end to end, its splits are recorded and read back on resume, undecodable files
are skipped and counted or refused, and the checks read the whole set in one streaming pass."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kerasdiag.config import load_config
from kerasdiag.core.errors import DataError
from kerasdiag.core.rundir import RunLayout
from kerasdiag.data import load_dataset
from kerasdiag.data.cifar import CIFAR10_CLASSES
from kerasdiag.data.stream import StreamedDataset

from conftest import REPO, run_train

PER_CLASS = 60  # three classes: 180 PNGs
SMALL = ["recipe=cifar_softmax", "model.conv_filters=[8]", "model.dense_units=[16]",
         "trainer.verbose=0", "trainer.tensorboard=false"]  # fmt: skip


pytestmark = pytest.mark.usefixtures("hydra_conf")  # conftest: Hydra on conf/, per module


def write_folder(root, x, y, per_class=PER_CLASS):
    for c in (0, 1, 2):
        (root / CIFAR10_CLASSES[c]).mkdir(parents=True)
        for i in np.flatnonzero(y == c)[:per_class]:
            (root / CIFAR10_CLASSES[c] / f"{i:05d}.png").write_bytes(tf.io.encode_png(x[i]).numpy())
    return root


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, cifar_arrays):
    x, y, _, _ = cifar_arrays
    return write_folder(tmp_path_factory.mktemp("images") / "folder", x, y)


def _folder_cfg(folder, *overrides):
    return load_config([*SMALL, "data=image_folder", f"data.path={folder}", *overrides])


def test_the_stream_reads_the_images_exactly_and_normalises_from_training_data(
    image_folder, cifar_arrays
):
    data = load_dataset(_folder_cfg(image_folder, "data.batch_size=16").data)
    assert isinstance(data, StreamedDataset) and data.input_shape == (32, 32, 3)
    x, y, _, _ = cifar_arrays
    sample = data.sample()
    # PNG is lossless: each sampled test image is one of the sample's images of its class
    raw = sample.x_test * data.std + data.mean
    for image, label in zip(raw[:5], sample.y_test[:5], strict=True):
        assert np.abs(x[y == label].astype(np.float32) - image).max(axis=(1, 2, 3)).min() < 1e-3
    # normalised with the training split's statistics (the streaming pass, all of it)
    batches = list(data.split_batches("val", 16).as_numpy_iterator())
    assert sum(len(b[1]) for b in batches) == len(data.y_val)
    train = np.concatenate([b[0] for b in data.split_batches("train", 64).as_numpy_iterator()])
    assert np.abs(train.mean(axis=(0, 1, 2))).max() < 1e-3
    assert np.abs(train.std(axis=(0, 1, 2)) - 1).max() < 1e-3
    # each epoch of the training stream is a permutation of the training split
    stream = data.training_batches(16, epochs=2, seed=3)
    labels = np.concatenate([b[1] for b in stream.as_numpy_iterator()])
    n = len(data.y_train)
    assert len(labels) == 2 * n
    assert np.bincount(labels[:n]).tolist() == np.bincount(data.y_train).tolist()
    assert not np.array_equal(labels[:n], labels[n:])  # a different order each epoch


def test_a_streamed_run_trains_tests_and_records_its_splits(image_folder, tmp_path):
    run = tmp_path / "run"
    done = run_train(*SMALL, "data=image_folder", f"data.path={image_folder}", "trainer.epochs=2",
                     "sanity.gradcheck=false", f"hydra.run.dir={run}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / RunLayout.DATA).read_text())
    assert summary["streamed"] and summary["skipped_files"] == 0
    record = json.loads((run / RunLayout.DATA_SPLITS).read_text())
    assert sum(len(f) for f in record["files"].values()) == 3 * PER_CLASS
    assert len(record["files"]["test"]) == summary["test"] == round(0.2 * 3 * PER_CLASS)
    confusion = json.loads((run / RunLayout.TEST_CONFUSION).read_text())
    assert np.sum(confusion["matrix"]) == summary["test"]  # the whole test split, streamed
    stages = {s["name"]: s for s in json.loads((run / RunLayout.SANITY).read_text())}
    for name in ("initial_loss", "overfit", "leakage", "split_shift", "input_baseline"):
        assert stages[name]["status"] == "pass", stages[name]
    # leakage compared the whole splits, not the sample
    assert stages["leakage"]["details"]["train/test"]["of"] == summary["test"]
    assert "streamed from disk" in (run / RunLayout.REPORT).read_text()


def _train(run, folder, *extra, kill_at=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    env.pop("KERASDIAG_KILL_AT", None)
    if kill_at:
        env["KERASDIAG_KILL_AT"] = kill_at
    args = [*SMALL, "data=image_folder", f"data.path={folder}", "sanity=off", "monitors=off",
            "trainer.deterministic=true", "trainer.epochs=4", "data.augment.flip=true",
            "trainer.early_stopping.patience=100", *extra, f"hydra.run.dir={run}"]  # fmt: skip
    command = [sys.executable, str(REPO / "scripts" / "train.py"), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_a_resumed_streamed_run_keeps_its_splits_and_equals_the_uninterrupted_one(
    tmp_path, cifar_arrays
):
    x, y, _, _ = cifar_arrays
    folder = write_folder(tmp_path / "folder", x, y, per_class=40)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert _train(whole, folder).returncode == 0
    killed = _train(resumed, folder, kill_at="epoch:2")
    assert killed.returncode != 0 and (resumed / RunLayout.DATA_SPLITS).is_file()
    # images added to the folder after the start: the resumed run still trains on the
    # splits it started with
    extra = folder / CIFAR10_CLASSES[0] / "zz-added.png"
    extra.write_bytes(tf.io.encode_png(x[np.flatnonzero(y == 0)[-1]]).numpy())
    again = _train(resumed, folder)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after epoch" in again.stdout
    for name in (RunLayout.METRICS, RunLayout.DATA_SPLITS, RunLayout.TEST_CONFUSION):
        assert (resumed / name).read_text() == (whole / name).read_text(), name
    assert "zz-added" not in (resumed / RunLayout.DATA_SPLITS).read_text()


def test_undecodable_images_are_skipped_and_counted_or_refused(tmp_path, image_folder):
    folder = tmp_path / "folder"
    shutil.copytree(image_folder, folder)
    bad = sorted((folder / "bird").iterdir())[3]
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    data = load_dataset(_folder_cfg(folder, "data.on_bad_file=skip").data)
    data.prepare()
    assert [s["file"] for s in data.skipped] == [str(bad)]
    assert "PNG" in data.skipped[0]["reason"]
    assert sum(len(data.files[s]) for s in ("train", "val", "test")) == 3 * PER_CLASS - 1
    assert str(bad) not in sum(data.files.values(), [])
    with pytest.raises(DataError, match=f"cannot decode image {bad}: .*data.on_bad_file=skip"):
        load_dataset(_folder_cfg(folder).data).prepare()

    run = tmp_path / "run"
    done = run_train(*SMALL, "data=image_folder", f"data.path={folder}", "data.on_bad_file=skip",
                     "trainer.epochs=1", "sanity=off", "monitors=off", f"hydra.run.dir={run}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"skipped cannot decode image {bad}" in done.stdout
    assert json.loads((run / RunLayout.DATA).read_text())["skipped_files"] == 1
    assert "undecodable files skipped" in (run / RunLayout.REPORT).read_text()


def test_the_streamed_leakage_check_finds_a_test_image_copied_from_training(tmp_path, image_folder):
    from kerasdiag.checks.data import check_leakage, check_split_shift

    for split, part in (("train", slice(0, 40)), ("test", slice(40, None))):
        for cls in ("airplane", "bird"):
            (tmp_path / split / cls).mkdir(parents=True)
            for f in sorted((image_folder / cls).iterdir())[part]:
                shutil.copy(f, tmp_path / split / cls / f.name)
    copied = sorted((tmp_path / "train" / "bird").iterdir())[0]
    shutil.copy(copied, tmp_path / "test" / "bird" / "copy.png")
    data = load_dataset(_folder_cfg(tmp_path).data)
    result = check_leakage(data.sample())
    assert result.status == "fail"
    assert result.details["train/test"]["count"] == 1
    assert result.details["train/test"]["of"] == len(data.y_test) == 41
    shift = check_split_shift(data.sample())
    assert shift.details["val"] == len(data.y_val) and shift.details["test"] == 41


def write_shards(root, x, y, shards=3, per_class=PER_CLASS):
    """The sample's first images of three classes as ``tf.train.Example`` records (an
    encoded PNG under ``image``, the class under ``label``), over ``shards`` files."""
    picked = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in (0, 1, 2)])
    writers = [tf.io.TFRecordWriter(str(root / f"train-{k:02d}.tfrecord")) for k in range(shards)]
    for n, i in enumerate(picked):
        feature = {
            "image": tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[tf.io.encode_png(x[i]).numpy()])
            ),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[i])])),
        }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        writers[n % shards].write(example.SerializeToString())
    for w in writers:
        w.close()
    return picked


def test_tfrecord_shards_stream_and_train(tmp_path, cifar_arrays):
    x, y, _, _ = cifar_arrays
    write_shards(tmp_path, x, y)
    pattern = str(tmp_path / "train-*.tfrecord")
    data = load_dataset(load_config([*SMALL, "data=tfrecord", f"data.path={pattern}"]).data)
    assert data.class_names == ["0", "1", "2"] and data.input_shape == (32, 32, 3)
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 3 * PER_CLASS
    raw = data.sample().x_test * data.std + data.mean  # decoded exactly (PNG is lossless)
    for image, label in zip(raw[:3], data.sample().y_test[:3], strict=True):
        assert np.abs(x[y == label].astype(np.float32) - image).max(axis=(1, 2, 3)).min() < 1e-3
    run = tmp_path / "run"
    done = run_train(*SMALL, "data=tfrecord", f"data.path={pattern}", "trainer.epochs=2",
                     "sanity=off", "monitors=off", f"hydra.run.dir={run}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    confusion = json.loads((run / RunLayout.TEST_CONFUSION).read_text())
    assert np.sum(confusion["matrix"]) == len(data.y_test)
    nothing = run_train("data=tfrecord", f"data.path={tmp_path / 'none-*.tfrecord'}")
    assert nothing.returncode == 2 and "matches no file" in nothing.stderr
