"""A streamed file that breaks after the run's checking pass ends the run with one line, and
the same command finishes the run once the file is put back."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from test_kill_points import _train as train


def test_a_file_broken_between_kill_and_resume_is_one_line_then_resumes(tmp_path):
    digits = load_digits()
    folder = tmp_path / "digits"
    files = []
    for i, (image, label) in enumerate(zip(digits.images[:200], digits.target[:200], strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        files.append(folder / str(label) / f"{i}.png")
        Image.fromarray((image * 16).astype(np.uint8)).save(files[-1])
    args = ["data=image_folder", f"data.path={folder}", "data.image_size=[8,8]",
            "data.color_mode=grayscale", "trainer.epochs=2", "sanity=off", "monitors=off",
            "trainer.verbose=0"]  # fmt: skip
    run_dir = tmp_path / "run"
    killed = train(run_dir, "epoch:1", args)
    assert killed.returncode == -9, killed.stderr[-2000:]
    # every file of the training split is read each epoch: break one of them
    recorded = json.loads((run_dir / "data_splits.json").read_text())["files"]["train"][0]
    good = open(recorded, "rb").read()
    open(recorded, "wb").write(good[:20])  # truncated: no longer a PNG

    broken = train(run_dir, None, args)
    assert broken.returncode == 2, broken.stderr[-2000:]
    last = broken.stderr.strip().splitlines()[-1]
    assert "a file could not be read during the run" in last and "Traceback" not in broken.stderr
    assert not (run_dir / "test_metrics.json").exists()

    open(recorded, "wb").write(good)
    finished = train(run_dir, None, args)
    assert finished.returncode == 0, finished.stderr[-2000:]
    rows = (run_dir / "metrics.csv").read_text().strip().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2"]  # epoch 1 kept, epoch 2 trained once


def test_a_file_cache_decodes_each_split_once_and_trains_the_same(tmp_path):
    """data.cache=FOLDER: the decoded splits in memory-mapped files, written once and reused;
    training reads the same pixels as from the PNGs."""
    from kerasdiag.config import load_config
    from kerasdiag.data import load_dataset
    from kerasdiag.data.stream import StreamedDataset

    digits = load_digits()
    folder = tmp_path / "digits"
    for i, (image, label) in enumerate(zip(digits.images[:150], digits.target[:150], strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 16).astype(np.uint8)).save(folder / str(label) / f"{i}.png")
    base = ["data=image_folder", f"data.path={folder}", "data.image_size=[8,8]",
            "data.color_mode=grayscale"]  # fmt: skip
    cache = tmp_path / "cache"
    plain = load_dataset(load_config(base).data)
    cached = load_dataset(load_config([*base, f"data.cache={cache}"]).data)
    assert isinstance(cached, StreamedDataset)
    batches = [list(d.split_batches("test", 16).as_numpy_iterator()) for d in (plain, cached)]
    for (x1, y1), (x2, y2) in zip(*batches, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    written = sorted(p.name for p in cache.iterdir())
    assert [name.split("-")[0] for name in written] == ["test"]  # only what was read
    stamp = (cache / written[0]).stat().st_mtime_ns
    list(cached.split_batches("test", 16).as_numpy_iterator())  # read again: from the file
    assert (cache / written[0]).stat().st_mtime_ns == stamp
    assert np.load(cache / written[0], mmap_mode="r").shape == (len(cached.y_test), 8, 8, 1)
