"""Shared fixtures: the real data on this machine and a way to run scripts/train.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
# CI and developers have ../shared beside the clone; KERASDIAG_CIFAR_SAMPLE points elsewhere.
CIFAR_SAMPLE = Path(
    os.environ.get(
        "KERASDIAG_CIFAR_SAMPLE",
        REPO.parent / "shared" / "data" / "cifar10-sample" / "cifar-10-batches-py",
    )
)


@pytest.fixture(scope="module")
def hydra_conf():
    """Hydra initialised on conf/ for a module whose tests compose or instantiate with it."""
    from hydra import initialize_config_dir

    from kerasdiag.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        yield


@pytest.fixture(scope="session")
def cifar_arrays(cifar_dir):
    """The CIFAR-10 sample's arrays: x_train, y_train, x_test, y_test (uint8 images)."""
    from kerasdiag.data.cifar import load_cifar10_folder

    return load_cifar10_folder(cifar_dir)


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """The real CIFAR-10 sample (5000 train / 1000 test images, official format)."""
    assert (CIFAR_SAMPLE / "test_batch").is_file(), f"CIFAR-10 sample not found at {CIFAR_SAMPLE}"
    return CIFAR_SAMPLE


def run_train(
    *overrides: str, cwd: Path = REPO, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``python scripts/train.py OVERRIDES...`` and return the finished process."""
    # This checkout's kerasdiag, whatever is installed (a worktree, a mutation-testing copy).
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
