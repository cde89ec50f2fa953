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
