"""What ``scripts/train.py`` runs once the config is valid and the data loaded: a search, an
ensemble or one training. Importing this module starts TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from kerasdiag.core.timings import process_age
from kerasdiag.data import Dataset
from kerasdiag.search.launch import PrestartedWorkers
from kerasdiag.training.pipeline import run_training


def run(
    cfg: DictConfig,
    run_dir: str | Path,
    data: Dataset | None = None,
    workers: PrestartedWorkers | None = None,
) -> dict[str, Any]:
    """What ``scripts/train.py`` runs: a search (``tuner``; with the worker processes
    :func:`~kerasdiag.search.launch.prestart_workers` started), an ensemble, or one training
    (of ``data`` when it is already loaded)."""
    # A search's and an ensemble's modules load only for them: keras-tuner and gRPC
    # (~0.07 s) are no part of one training.
    if cfg.tuner.name != "none":
        from kerasdiag.search import run_search

        return run_search(cfg, Path(run_dir), workers=workers)
    if cfg.ensemble.name != "none":
        from kerasdiag.ensemble import run_ensemble

        return run_ensemble(cfg, Path(run_dir))
    return run_training(cfg, run_dir, data=data, startup_seconds=process_age())
