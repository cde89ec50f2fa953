"""Where a run's time went: seconds per stage, one JSON line appended as each stage ends.

The pipeline times its stages (start-up and imports, data, model, sanity, training, test,
diagnosis, report) with a :class:`StageClock`; the report's last section and
``benchmarks/bench_default_run.py`` read them back with :func:`read_timings`. A line is
appended, never rewritten, so a resumed run keeps its first process's lines and adds its own
(each line carries its process id); a line cut short by a kill is skipped when read.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "timings.jsonl"
    >>> clock = StageClock(path)
    >>> with clock.stage("data"):
    ...     pass
    >>> clock.record("training: probes", 0.25)
    >>> [(t["stage"], round(t["seconds"], 2)) for t in read_timings(path)]
    [('data', 0.0), ('training: probes', 0.25)]
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# A stage that holds others: "training: probes" is part of "training" (its name's prefix).
PART_SEPARATOR = ": "


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MB. Recorded with each stage: the
    stage that raised it is the one whose line first shows the higher figure.

    Linux's ``VmHWM`` (the high-water mark of this process's own memory) where there is one:
    ``getrusage``'s ``ru_maxrss`` keeps across ``exec`` the peak of the process that forked
    it, so a search worker started by a 2 GB parent would report 2 GB from its first line.
    """
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:", 1)[1].split()[0]) / 1024  # kB
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS


def process_age() -> float | None:
    """Seconds since this process started (interpreter start-up and imports included), or
    None where the system does not say (only Linux's /proc is read)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


class StageClock:
    """Times named stages into a JSON-lines file (``RunLayout.TIMINGS`` of a run)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._held: list[tuple[str, float]] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block; the line is written when it completes. A stage that raises writes
        nothing: a run refused for bad data leaves no file of its own behind, and a killed
        or failed stage is timed again by the process that completes it."""
        start = time.perf_counter()
        yield
        self.record(name, time.perf_counter() - start)

    def record(self, name: str, seconds: float) -> None:
        """Append one stage's seconds (a part of another: ``"training: probes"``), after
        any held by :meth:`hold`."""
        entries, self._held = [*self._held, (name, seconds)], []
        peak = round(peak_memory_mb(), 1)
        lines = [json.dumps({"stage": n, "seconds": round(float(s), 4), "pid": os.getpid(),
                             "peak_rss_mb": peak}) for n, s in entries]  # fmt: skip
        with open(self.path, "a") as out:
            out.write("".join(line + "\n" for line in lines))

    def hold(self, name: str, seconds: float) -> None:
        """Record ``name`` with the next stage that completes, not now: what the process
        spent before the run (start-up) is written only once the run has done something."""
        self._held.append((name, seconds))


def read_timings(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The stages in the order they ended; ``[]`` when there is no file. Lines that do not
    parse (one cut short by a kill) are left out."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            found.append({"stage": str(entry["stage"]), "seconds": float(entry["seconds"]),
                          "pid": entry.get("pid"), "peak_rss_mb": entry.get("peak_rss_mb")})  # fmt: skip
        except (ValueError, KeyError, TypeError):
            continue
    return found


def stage_totals(timings: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Seconds per stage summed over the run's processes, in first-seen order."""
    totals: dict[str, float] = {}
    for entry in timings:
        totals[entry["stage"]] = totals.get(entry["stage"], 0.0) + entry["seconds"]
    return list(totals.items())
