"""An ensemble of a streamed image folder scores its members and itself on the test split
read from disk (the split's batches, not arrays the set does not hold)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from kerasdiag.config import load_config
from kerasdiag.core.rundir import RunLayout
from kerasdiag.ensemble import run_ensemble


def test_a_seed_ensemble_of_a_streamed_folder(tmp_path):
    digits = load_digits()
    folder = tmp_path / "digits"
    for i, (image, label) in enumerate(zip(digits.images[:300], digits.target[:300], strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 16).astype(np.uint8)).save(folder / str(label) / f"{i}.png")
    cfg = load_config(
        [
            "data=image_folder",
            f"data.path={folder}",
            "data.image_size=[8,8]",
            "data.color_mode=grayscale",
            "ensemble=seeds",
            "ensemble.members=2",
            "trainer.epochs=2",
            "trainer.verbose=0",
            "sanity=off",
            "monitors=off",
        ]
    )
    run_ensemble(cfg, tmp_path / "run")
    record = json.loads((tmp_path / "run" / RunLayout.ENSEMBLE).read_text())
    assert json.loads((tmp_path / "run" / "members" / "seed0" / RunLayout.DATA).read_text())[
        "streamed"
    ]
    assert record["test_examples"] == 60  # 20% of 300 held out, read back from disk
    assert [m["name"] for m in record["members"]] == ["seed0", "seed1"]
    for member in record["members"]:
        assert 0.1 < member["test_accuracy"] <= 1.0  # above chance after 2 epochs
    assert 0.1 < record["ensemble"]["test_accuracy"] <= 1.0
