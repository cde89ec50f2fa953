"""Seconds per stage: appended as each stage ends, read back whole, shown in the report."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from kerasdiag.core.rundir import RunLayout
from kerasdiag.core.timings import (
    StageClock,
    peak_memory_mb,
    process_age,
    read_timings,
    stage_totals,
)
from kerasdiag.report.builder import render
from kerasdiag.report.context import RunContext

from conftest import REPO


def test_a_stage_is_timed_when_it_completes_and_a_failed_one_writes_nothing(tmp_path):
    clock = StageClock(tmp_path / RunLayout.TIMINGS)
    clock.hold("start-up", 3.0)  # written with the first stage that completes
    with pytest.raises(RuntimeError), clock.stage("data"):
        raise RuntimeError("bad data: the refused run must leave no file of its own")
    assert not (tmp_path / RunLayout.TIMINGS).exists()
    with clock.stage("data"):
        time.sleep(0.05)
    timings = read_timings(tmp_path / RunLayout.TIMINGS)
    assert [t["stage"] for t in timings] == ["start-up", "data"]
    assert timings[0]["seconds"] == 3.0 and 0.05 <= timings[1]["seconds"] < 1.0
    assert {t["pid"] for t in timings} == {os.getpid()}


def test_a_resumed_run_appends_and_a_torn_line_is_skipped(tmp_path):
    path = tmp_path / RunLayout.TIMINGS
    StageClock(path).record("training", 2.0)
    first = path.read_bytes()
    with open(path, "a") as out:  # a process killed in the middle of its line
        out.write('{"stage": "test", "seco')
    out_of_process = [sys.executable, "-c",
                      "import sys; from kerasdiag.core.timings import StageClock; "
                      "StageClock(sys.argv[1]).record('training', 3.0)", str(path)]  # fmt: skip
    # the torn line ends where the next process starts its own: only that line is lost
    with open(path, "a") as out:
        out.write("\n")
    subprocess.run(out_of_process, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert path.read_bytes().startswith(first)  # nothing recorded is rewritten
    timings = read_timings(path)
    assert [t["seconds"] for t in timings] == [2.0, 3.0]
    assert stage_totals(timings) == [("training", 5.0)]
    assert len({t["pid"] for t in timings}) == 2


def test_process_age_counts_from_the_process_start():
    age = process_age()
    assert age is not None and 0.0 < age < 3600  # this pytest process started this session


def test_the_report_shows_each_stage_and_its_share(tmp_path):
    clock = StageClock(tmp_path / RunLayout.TIMINGS)
    for stage, seconds in [("start-up", 4.0), ("training", 12.0), ("training: probes", 1.0),
                           ("test", 4.0)]:  # fmt: skip
        clock.record(stage, seconds)
    html = render(RunContext.read(tmp_path))
    section = html[html.index('id="time"') :]
    for cell in ("start-up", "4.00", "20.0%", "training: probes", "1.00", "5.0%", "60.0%"):
        assert cell in section, cell


def test_each_stage_records_the_peak_memory_it_ended_with(tmp_path):
    # In a fresh process: this one's peak is whatever earlier tests reached.
    script = (
        "import sys; from kerasdiag.core.timings import StageClock, peak_memory_mb\n"
        "clock = StageClock(sys.argv[1])\n"
        "with clock.stage('data'): pass\n"
        "with clock.stage('sanity'):\n"
        "    held = bytearray(300 * 2**20)\n"
        "    held[::4096] = b'x' * len(held[::4096])  # touched: resident\n"
        "print(peak_memory_mb())\n"
    )
    path = tmp_path / RunLayout.TIMINGS
    done = subprocess.run([sys.executable, "-c", script, str(path)], check=True, text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    before, after = (t["peak_rss_mb"] for t in read_timings(path))
    assert after >= before + 250 and after == pytest.approx(float(done.stdout), abs=5)
    assert peak_memory_mb() > 0
    section = render(RunContext.read(tmp_path))
    section = section[section.index('id="time"') :]
    assert "peak memory" in section and f"{after:.0f} MB" in section


def test_a_run_without_timings_says_so(tmp_path):
    html = render(RunContext.read(tmp_path))
    assert f"no {RunLayout.TIMINGS}" in html[html.index('id="time"') :]
