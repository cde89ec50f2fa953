"""The histograms of a run's TensorBoard event files, read without importing TensorFlow.

The report rebuilds in seconds from a run directory (``python scripts/report.py RUN_DIR``)
because it imports no TensorFlow; TensorBoard's event reader would import it unless told
not to (see :func:`read_histograms`).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np


def read_histograms(log_dir: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """{tag: [(step, buckets (k, 3)), ...]} of the histogram summaries in one TensorBoard run."""
    if not log_dir.is_dir():
        return {}
    if "tensorflow" not in sys.modules:
        # TensorBoard reads event files with its own TensorFlow stub when this module
        # exists; without it, it imports TensorFlow (seconds) just to read the histograms.
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("notf"))
    # Imported after the stub above is in place (and only when a run has histograms).
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    acc = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    out: dict[str, list[tuple[int, np.ndarray]]] = {}
    for tag in acc.Tags().get(event_accumulator.TENSORS, []):
        if acc.SummaryMetadata(tag).plugin_data.plugin_name != "histograms":
            continue
        events = sorted(acc.Tensors(tag), key=lambda e: e.step)
        arrays = [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in events]
        arrays = [(s, a) for s, a in arrays if a.ndim == 2 and a.shape[1] == 3]
        if arrays:
            out[tag] = arrays
    return out
