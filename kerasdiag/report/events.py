"""The histograms of a run's TensorBoard event files, read without importing TensorFlow.

The report rebuilds in seconds from a run directory (``python scripts/report.py RUN_DIR``)
because it imports no TensorFlow; TensorBoard's event reader would import it unless told
not to (see :func:`read_histograms`).

A resumed run writes a new event file beside the interrupted one's (Keras' TensorBoard and
the monitors' writers each open a new file per process), and the steps the interrupted
process recorded after its last backup are recorded again by the resume. Event files are
append-only logs: rather than rewrite the earlier file, the reader keeps the last record of
each step, in the files' order (their names start with the time they were opened).
TensorBoard itself drops the earlier records only when a restart's steps go back before the
last one it read; a step recorded again at the very same number shows twice there (with the
same values in a deterministic run). Writing the records after the backup instead would lose
an epoch to a kill between the two, which is worse than repeating one.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np


def read_histograms(log_dir: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """{tag: [(step, buckets (k, 3)), ...]} of the histogram summaries in one TensorBoard run:
    each step once, its last record (a resumed run's) when several files hold it."""
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
        last = {e.step: e for e in acc.Tensors(tag)}  # in the files' order: the resume's wins
        events = [last[step] for step in sorted(last)]
        arrays = [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in events]
        arrays = [(s, a) for s, a in arrays if a.ndim == 2 and a.shape[1] == 3]
        if arrays:
            out[tag] = arrays
    return out
