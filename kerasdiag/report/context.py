"""What every section of the report reads: one run directory, its files read once.

Sections are plain functions of a :class:`RunContext`; none of them keeps state or writes
anything, so each can be built (and tested) on its own and a section that fails does not
take the page down with it.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerasdiag.core.rundir import RunFiles, RunLayout

# Test-metrics fields that describe the scored model rather than score it.
_MODEL_FIELDS = ("model", "weights_epoch", "monitor", "monitor_value", "ema_model")
# test_metrics.json's scores of the same model on training examples (pipeline.evaluate_train_sample)
_TRAIN_PREFIX = "train_"


@dataclass(frozen=True)
class RunContext:
    """A run directory as the report reads it: the files every section shares, and the
    epoch axis (monitors count optimizer steps; the page counts epochs).

    Example:
        >>> run = RunContext.read("outputs/run")  # doctest: +SKIP
        >>> run.kept_epoch, run.epoch_x(390)  # doctest: +SKIP
        (17, 10.0)
    """

    files: RunFiles
    config: Mapping[str, Any]
    bayes_error: float | None  # the command line's, else the config's
    history: Mapping[str, list[float]]  # metrics.csv by column
    data: Mapping[str, Any] | None
    doctor: Mapping[str, Any] | None
    test: Mapping[str, Any] | None
    nan: Mapping[str, Any] | None
    stages: list[dict[str, Any]] | None  # sanity.json; None when the run has none
    confusion: Mapping[str, Any] | None

    @classmethod
    def read(
        cls, run_dir: str | os.PathLike | RunFiles, bayes_error: float | None = None
    ) -> RunContext:
        """Read the shared files of ``run_dir``; ``bayes_error`` overrides the config's."""
        files = run_dir if isinstance(run_dir, RunFiles) else RunFiles(run_dir)
        config = files.config() or {}
        return cls(
            files=files,
            config=config,
            bayes_error=config.get("bayes_error") if bayes_error is None else bayes_error,
            history=files.history(),
            data=files.json(RunLayout.DATA),
            doctor=files.json(RunLayout.DOCTOR),
            test=files.json(RunLayout.TEST_METRICS),
            nan=files.json(RunLayout.NAN),
            stages=files.json(RunLayout.SANITY),
            confusion=files.json(RunLayout.TEST_CONFUSION),
        )

    @property
    def path(self) -> Path:
        return self.files.path

    @property
    def kept_epoch(self) -> int | None:
        """The epoch whose weights the run kept and scored on the test split (from 1)."""
        return (self.test or {}).get("weights_epoch")

    @functools.cached_property
    def steps_per_epoch(self) -> int | None:
        """Optimizer steps per epoch: from the batch size and the training split, else from
        the steps learning_rate.csv records at the start of each epoch; None if unknown."""
        batch = (self.config.get("data") or {}).get("batch_size")
        train = (self.data or {}).get("train")
        if batch and train:
            return max(1, math.ceil(int(train) / int(batch)))
        rows = self.files.csv_rows(RunLayout.LEARNING_RATE)  # epoch, step at the epoch's start
        if len(rows) >= 2:
            return max(1, int(rows[1][1]) - int(rows[0][1]))
        return None

    def epoch_x(self, step: float) -> float:
        """Where optimizer step ``step`` falls on the page's epoch axis (steps if unknown)."""
        return float(step) / (self.steps_per_epoch or 1)

    def test_scores(self) -> dict[str, Any]:
        """test_metrics.json's scores on the test split, without the fields that say which
        model was scored and without its scores on training examples."""
        return {
            k: v
            for k, v in (self.test or {}).items()
            if k not in _MODEL_FIELDS and not k.startswith(_TRAIN_PREFIX)
        }

    def train_scores(self) -> dict[str, Any]:
        """The kept model's scores on training examples, scored as the test split is."""
        prefix = len(_TRAIN_PREFIX)
        return {
            k[prefix:]: v
            for k, v in (self.test or {}).items()
            if k.startswith(_TRAIN_PREFIX) and k != "train_examples"
        }
