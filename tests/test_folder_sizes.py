"""Verdicts that fit the size of the data: the same image folder at 300 and 3000 images.

A user's first run is often a few hundred images for a few epochs. On 24 validation images no
gap of a few points is proven, so such a run must end with no FAIL and no warning the numbers
cannot support; at ten times the images and 20 epochs, the warnings that are true (the model
overfits) must be named. The images are the CIFAR-10 sample's, eight classes, written as PNGs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from kerasdiag.core.rundir import RunLayout
from kerasdiag.data.cifar import CIFAR10_CLASSES

from conftest import run_train

CLASSES = 8
# Warnings about the fit compare error rates measured on finite splits: each must clear its
# threshold by this many standard errors of the splits it reads (a 95% two-sided interval).
Z = 1.96


def _folder(root, x, y, total: int):
    for c in range(CLASSES):
        (root / CIFAR10_CLASSES[c]).mkdir(parents=True)
        for i in np.flatnonzero(y == c)[: total // CLASSES]:
            (root / CIFAR10_CLASSES[c] / f"{i:05d}.png").write_bytes(tf.io.encode_png(x[i]).numpy())
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory, cifar_arrays):
    x, y, _, _ = cifar_arrays
    base = tmp_path_factory.mktemp("folders")
    return {n: _folder(base / str(n), x, y, n) for n in (300, 3000)}


def _run(folder, out, epochs: int):
    proc = run_train(
        "recipe=cifar_softmax",
        "data=image_folder",
        f"data.path={folder}",
        f"trainer.epochs={epochs}",
        "trainer.deterministic=true",
        f"hydra.run.dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sanity = json.loads((out / RunLayout.SANITY).read_text())
    findings = json.loads((out / RunLayout.DIAGNOSIS).read_text())
    sizes = json.loads((out / RunLayout.DATA).read_text())
    return sanity, findings, sizes


def _se(error: float, n: int) -> float:
    return math.sqrt(max(error * (1 - error), 1.0 / n) / n)


def _supported(finding: dict, sizes: dict) -> bool:
    """Whether a bias or variance warning's gap clears its threshold beyond sampling noise."""
    ev = finding["evidence"]
    if finding["symptom"] == "underfitting":
        gap, threshold = ev["avoidable_bias"], ev["bias_threshold"]
        se = _se(ev["train_error"], sizes["train"])
    elif finding["symptom"] == "overfitting" and "variance" in ev:
        gap, threshold = ev["variance"], ev["variance_threshold"]
        se = math.hypot(_se(ev["train_error"], sizes["train"]), _se(ev["dev_error"], sizes["val"]))
    else:
        return True  # not a comparison of split error rates
    return gap - threshold > Z * se


def test_300_images_for_3_epochs_get_no_failure_and_no_unsupported_warning(folders, tmp_path):
    sanity, findings, sizes = _run(folders[300], tmp_path / "run", epochs=3)
    assert sizes["val"] < 40  # the small validation split the verdicts must respect
    failed = [s["name"] for s in sanity if s["status"] == "fail"]
    assert failed == [], failed
    # 24 validation images cannot prove an input is ignored: undecided, or shown to be used
    baseline = next(s for s in sanity if s["name"] == "input_baseline")
    assert baseline["status"] in ("pass", "inconclusive"), baseline["message"]
    # a rate needs steps, a gap needs examples: neither of these may come from a 3-epoch run
    symptoms = {f["symptom"] for f in findings}
    assert not symptoms & {"slow_convergence", "overfitting"}, findings
    for finding in findings:
        assert _supported(finding, sizes), finding["message"]


def test_3000_images_for_20_epochs_get_the_warnings_that_are_true(folders, tmp_path):
    sanity, findings, sizes = _run(folders[3000], tmp_path / "run", epochs=20)
    assert [s["name"] for s in sanity if s["status"] == "fail"] == []
    baseline = next(s for s in sanity if s["name"] == "input_baseline")
    assert baseline["status"] == "pass", baseline["message"]  # 240 images decide it
    by_symptom = {f["symptom"]: f for f in findings}
    # This convnet memorises 2400 images far faster than it generalises: the gap is real.
    assert "overfitting" in by_symptom, [f["message"] for f in findings]
    overfit = by_symptom["overfitting"]["evidence"]
    assert overfit["final_val_loss"] > overfit["min_val_loss"]
    for finding in findings:
        assert _supported(finding, sizes), finding["message"]
