"""Worker-process designs of a search side by side: wall time and the whole process tree's memory.

    python benchmarks/bench_search_workers.py [--trials 12 40] [--designs one fresh ahead memory]

Runs ``scripts/train.py tuner=random`` on digits (1 epoch per trial, the default MLP) once per
design and number of trials:

- ``one``: every trial in the search's own process (``tuner.trials_per_process=0``);
- ``fresh``: worker processes of 5 trials each, each started when the previous one has ended;
- ``ahead``: the same, the next one started while the previous one trains its last trial
  (``tuner.start_ahead=true``);
- ``memory``: one worker process that stays across trials and is replaced only once its
  resident memory has grown by more than ``--memory-mb`` (``tuner.worker_memory_mb``).

While a search runs, the script reads its ledger (one line per trial end) and, from /proc, the
memory of the whole process tree (the search process and every process below it): the sum of
RSS, and the sum of PSS (shared pages counted once, split between the processes sharing them).
It prints each design's wall time, its ratio to ``one`` over the same trials, and the tree's
memory when trial 10 and trial 40 ended. Target: a worker design within 1.15x of ``one`` over
12 trials, its tree's memory at trial 40 no more than at trial 10 (flat; ``one`` grows).
The designs run in turn, ``--repeats`` times alternated, on a loaded machine too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search_memory import children, ended_trials, proc_mb, rss_mb  # noqa: E402 - a sibling script

DESIGNS = {
    "one": ["tuner.trials_per_process=0"],
    "fresh": ["tuner.trials_per_process=5", "tuner.worker_memory_mb=0", "tuner.start_ahead=false"],
    "ahead": ["tuner.trials_per_process=5", "tuner.worker_memory_mb=0", "tuner.start_ahead=true"],
    "memory": ["tuner.trials_per_process=1000", "tuner.start_ahead=false"],  # + worker_memory_mb
}
MARKS = (10, 40)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (Linux /proc)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue += children(current)
    return found


def pss_mb(pid: int) -> float:
    """Proportional set size: shared pages split between the processes sharing them."""
    return proc_mb(pid, "smaps_rollup", "Pss:")


def measure(design: str, trials: int, memory_mb: float, folder: Path) -> dict[str, float]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{design}-{trials}-", dir=folder))
    overrides = DESIGNS[design] + (
        [f"tuner.worker_memory_mb={memory_mb}"] if design == "memory" else []
    )
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "tuner=random",
               f"tuner.stages=[{{trials:{trials},epochs:1}}]", *overrides,
               "trainer.verbose=0", f"hydra.run.dir={run_dir}"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out: dict[str, float] = {"peak_rss": 0.0, "peak_pss": 0.0}
    started = time.perf_counter()
    with open(run_dir.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    pids: set[int] = set()
    while proc.poll() is None:
        tree = descendants(proc.pid)
        pids.update(tree)
        rss = sum(rss_mb(p) for p in tree)
        pss = sum(pss_mb(p) for p in tree)
        out["peak_rss"], out["peak_pss"] = max(out["peak_rss"], rss), max(out["peak_pss"], pss)
        done = ended_trials(run_dir)
        for mark in MARKS:
            if done >= mark and f"rss_at_{mark}" not in out:
                out[f"rss_at_{mark}"], out[f"pss_at_{mark}"] = rss, pss
        time.sleep(0.1)
    out["seconds"] = time.perf_counter() - started
    out["processes"] = len(pids)
    if proc.returncode != 0:
        raise SystemExit(f"{design} search failed (exit {proc.returncode}); see {log.name}")
    out["trials"] = ended_trials(run_dir)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[12, 40])
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    parser.add_argument("--memory-mb", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-search-workers-"))
    for trials in args.trials:
        seconds: dict[str, list[float]] = {d: [] for d in args.designs}
        results: dict[str, dict[str, float]] = {}
        for _ in range(args.repeats):
            for design in args.designs:
                r = measure(design, trials, args.memory_mb, folder)
                seconds[design].append(r["seconds"])
                results[design] = r
                print(json.dumps({"design": design, "trials": trials, **r}), flush=True)
        print(f"\n{trials} trials x 1 epoch on digits, median of {args.repeats}; memory of the "
              "whole process tree in MB, RSS / PSS")  # fmt: skip
        print("design |  seconds | x one | at trial 10  | at trial 40  | peak        | processes")
        one = statistics.median(seconds["one"]) if "one" in seconds else float("nan")
        for design in args.designs:
            r, wall = results[design], statistics.median(seconds[design])
            marks = " | ".join(
                f"{r.get(f'rss_at_{m}', 0):5.0f} / {r.get(f'pss_at_{m}', 0):4.0f}" for m in MARKS
            )
            print(f"{design:>6} | {wall:8.1f} | {wall / one:5.2f} | {marks} | "
                  f"{r['peak_rss']:5.0f} / {r['peak_pss']:4.0f} | {r['processes']:.0f}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
