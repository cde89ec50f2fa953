"""kerasdiag's default run against the plain Keras script doing the same training.

    python benchmarks/bench_default_run.py [--pairs 7] [-- OVERRIDES...]

Whole processes side by side, alternated (kerasdiag first in odd pairs, the plain script first in
even ones): ``python scripts/train.py`` (every check, monitor, the doctor, the report) against
``benchmarks/plain_keras_digits.py`` (same data, split sizes, MLP, optimizer, 20 epochs, best
checkpoint, test). For each it takes the wall time and the CPU time of the process (user +
system, all threads, from the children's resource usage), prints every pair and the medians of
the per-pair ratios, and the default run's own breakdown by stage (``timings.jsonl`` of its run
directory, also in the report's footer).

Seven pairs by default: on the 2-core VM one pair's ratio moved between 1.03 and 1.42 within
minutes (the plain script alone between 8.5 s and 13 s), so the median of three could land
0.2 apart from one call to the next.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kerasdiag.core.rundir import RunLayout
from kerasdiag.core.timings import PART_SEPARATOR, read_timings, stage_totals

ROOT = Path(__file__).resolve().parents[1]
# this checkout's kerasdiag, whatever is installed
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one child process run to its end (it must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(
            f"{' '.join(command[1:3])} failed (exit {done.returncode}):\n{done.stderr[-2000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def stage_table(run_dir: Path) -> str:
    """The run's own breakdown (``timings.jsonl``), one stage a line."""
    totals = stage_totals(read_timings(run_dir / RunLayout.TIMINGS))
    if not totals:
        return f"(no {RunLayout.TIMINGS} in the run directory)"
    whole = sum(seconds for stage, seconds in totals if PART_SEPARATOR not in stage)
    return "\n".join(
        f"  {stage:<28}{seconds:>8.2f} s  {seconds / whole:>6.1%}" for stage, seconds in totals
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("overrides", nargs="*", help="extra overrides for scripts/train.py")
    args = parser.parse_args()
    walls, cpus, last_run = [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            run_dir = Path(tmp) / f"kerasdiag{pair}"
            sides = {
                "kerasdiag": [sys.executable, "scripts/train.py", f"hydra.run.dir={run_dir}",
                              *args.overrides],
                "plain": [sys.executable, "benchmarks/plain_keras_digits.py",
                          str(Path(tmp) / f"plain{pair}")],
            }  # fmt: skip
            order = list(sides) if pair % 2 == 0 else list(sides)[::-1]
            result = {name: timed(sides[name]) for name in order}
            (kd_wall, kd_cpu), (plain_wall, plain_cpu) = result["kerasdiag"], result["plain"]
            walls.append(kd_wall / plain_wall)
            cpus.append(kd_cpu / plain_cpu)
            print(f"pair {pair + 1}: kerasdiag {kd_wall:.1f} s wall / {kd_cpu:.1f} s CPU, plain "
                  f"{plain_wall:.1f} s / {plain_cpu:.1f} s: wall {walls[-1]:.3f}, CPU "
                  f"{cpus[-1]:.3f}", flush=True)  # fmt: skip
            last_run = run_dir
        print(f"\nmedian of {args.pairs} pairs: wall {statistics.median(walls):.3f} "
              f"(target <= 1.15), CPU {statistics.median(cpus):.3f} (target <= 1.25)")  # fmt: skip
        print("\nthe last kerasdiag run by stage:")
        print(stage_table(last_run))


if __name__ == "__main__":
    main()
