"""Named symptoms with concrete fixes, judged from numbers alone (no TensorFlow).

- ``symptoms``: every symptom's name, title and fix, and :class:`Finding`;
- ``rules``: every rule that names a symptom from measured numbers, with every threshold
  (:class:`Thresholds`), shared by the live doctor and the diagnosis of a finished run;
- ``run_dir``: :func:`diagnose`, which reads a run directory and writes ``diagnosis.json``.
"""

from __future__ import annotations

from kerasdiag.diagnosis.rules import (
    Thresholds,
    accuracies_at,
    bias_variance,
    curve_findings,
    loss_shape,
    oscillation_index,
)
from kerasdiag.diagnosis.run_dir import (
    SYMPTOMS,
    confusion_summary,
    diagnose,
    failed_stages,
    nan_stop_finding,
    restores_best_epoch,
    sanity_findings,
)
from kerasdiag.diagnosis.symptoms import (
    CURVE_SYMPTOMS,
    SANITY_SYMPTOMS,
    TRAINING_SYMPTOMS,
    Finding,
    make_finding,
)

__all__ = [
    "CURVE_SYMPTOMS",
    "Finding",
    "SANITY_SYMPTOMS",
    "SYMPTOMS",
    "TRAINING_SYMPTOMS",
    "Thresholds",
    "accuracies_at",
    "bias_variance",
    "confusion_summary",
    "curve_findings",
    "diagnose",
    "failed_stages",
    "loss_shape",
    "make_finding",
    "nan_stop_finding",
    "oscillation_index",
    "restores_best_epoch",
    "sanity_findings",
]
