"""Checkpoint files that carry their validation score in the name, and the best k of them.

Both writers of kerasdiag name checkpoints this way: the search's trials
(``trials/stage1-trial003-val_accuracy0.9123.keras``) and
:class:`~kerasdiag.callbacks.BestCheckpoint` (``epoch003-val_accuracy0.8123.keras``). Reading
the score from the name picks the top-k models without loading any of them.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kerasdiag.core.errors import DataError
from kerasdiag.core.metrics import metric_mode
from kerasdiag.core.rundir import RunLayout

# "<label>-<metric><score>.keras": the metric is a name (letters, digits, "_"), the score
# the decimal number that ends the stem (both writers format it as "{:.4f}"; requiring the
# point keeps "stage1-trial003.keras" from reading as trial=3). The lazy metric makes
# "top5_accuracy0.9" split as ("top5_accuracy", 0.9): only there is the rest a number.
_SCORED = re.compile(
    r"(?:^|-)(?P<metric>[A-Za-z_]\w*?)(?P<score>\d+\.\d+(?:[eE][-+]?\d+)?|nan|inf)$"
)


@dataclass(frozen=True)
class CheckpointScore:
    """A checkpoint file and the validation score its name records."""

    path: Path
    label: str  # the name without "-<metric><score>", e.g. "stage1-trial003"
    metric: str  # e.g. "val_accuracy"
    score: float

    @property
    def mode(self) -> str:
        """Whether a lower (min) or higher (max) score is better: losses and errors are min."""
        return metric_mode(self.metric)


def parse_checkpoint_name(path: str | os.PathLike) -> CheckpointScore | None:
    """The score in a ``.keras`` file's name, or None when the name carries none.

    Example:
        >>> s = parse_checkpoint_name("trials/stage1-trial003-val_accuracy0.9123.keras")
        >>> s.label, s.metric, s.score
        ('stage1-trial003', 'val_accuracy', 0.9123)
    """
    path = Path(path)
    if path.suffix != ".keras":
        return None
    match = _SCORED.search(path.stem)
    if match is None:
        return None
    label = path.stem[: match.start()] or match.group("metric")
    return CheckpointScore(path, label, match.group("metric"), float(match.group("score")))


def best_checkpoints(paths: Iterable[str | os.PathLike], k: int) -> list[CheckpointScore]:
    """The ``k`` best-scored checkpoints among ``paths``, best first.

    Files without a score in their name, temporary files (a leading ".") and non-finite
    scores (diverged trials) are left out. All scored files must name the same metric: a
    val_loss cannot be ranked against a val_accuracy. Ties are broken by file name so the
    choice is repeatable. Fewer than ``k`` files give all of them.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scored = [
        s
        for s in (parse_checkpoint_name(p) for p in paths if not Path(p).name.startswith("."))
        if s is not None and math.isfinite(s.score)
    ]
    metrics = sorted({s.metric for s in scored})
    if len(metrics) > 1:
        raise DataError(f"checkpoints score different metrics ({', '.join(metrics)}): cannot rank")
    sign = -1.0 if scored and scored[0].mode == "max" else 1.0
    return sorted(scored, key=lambda s: (sign * s.score, s.path.name))[:k]


def source_checkpoints(source: str | os.PathLike) -> list[Path]:
    """The ``.keras`` files of a search run directory (its ``trials/``) or of a plain folder."""
    source = Path(source).expanduser()
    folder = source / RunLayout.TRIALS if (source / RunLayout.TRIALS).is_dir() else source
    if not folder.is_dir():
        raise DataError(f"ensemble source {source} is not a directory")
    return sorted(folder.glob("*.keras"))
