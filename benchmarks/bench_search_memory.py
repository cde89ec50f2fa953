"""Memory of a long search: resident set size (RSS) after 5 trials and after the last one.

    python benchmarks/bench_search_memory.py [--trials 55] [--per-process 0 5]

Runs ``scripts/train.py tuner=random`` on digits (1 epoch per trial) once per value of
``tuner.trials_per_process``: 0 trains every trial in the search's own process (RSS grows with
every model, keras-tuner #395/#873), N > 0 in worker processes that each end after N trials
(or sooner, once grown by ``tuner.worker_memory_mb``; ``bench_search_workers.py`` compares
the worker designs on wall time too).
While the search runs, the script reads the search's ledger (one line per trial end) and each
process's VmRSS from /proc: the search process and every worker process below it. It prints,
after 5 trials and after the last one, the search process's RSS and the largest worker's,
each side's peak over the whole search, and the peak of the first and of the last worker
process. Target: flat (the search process's RSS and each worker's peak the same after 55 trials
as after 5).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def proc_mb(pid: int, file: str = "status", key: str = "VmRSS:") -> float:
    """One kB figure of /proc/PID/FILE, in MB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def rss_mb(pid: int) -> float:
    return proc_mb(pid)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def ended_trials(run_dir: Path) -> int:
    path = run_dir / "search" / "ledger.jsonl"
    if not path.is_file():
        return 0
    return sum('"event": "end"' in line for line in path.read_text().splitlines())


def measure(trials: int, per_process: int, folder: Path) -> dict[str, float]:
    run_dir = folder / f"per_process{per_process}"
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "tuner=random",
               f"tuner.stages=[{{trials:{trials},epochs:1}}]",
               f"tuner.trials_per_process={per_process}", "trainer.verbose=0",
               f"hydra.run.dir={run_dir}"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.time()
    with open(folder / f"per_process{per_process}.log", "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    out: dict[str, float] = {"peak_search": 0.0, "peak_worker": 0.0}
    peaks: dict[int, float] = {}  # worker pid -> its peak RSS, in start order
    while proc.poll() is None:
        search = rss_mb(proc.pid)
        sizes = {c: rss_mb(c) for c in children(proc.pid)}
        for pid, size in sizes.items():
            peaks[pid] = max(peaks.get(pid, 0.0), size)
        worker = max(sizes.values(), default=0.0)
        out["peak_search"] = max(out["peak_search"], search)
        out["peak_worker"] = max(out["peak_worker"], worker)
        done = ended_trials(run_dir)
        for mark in (5, trials):
            if done >= mark and f"search_at_{mark}" not in out:
                out[f"search_at_{mark}"], out[f"worker_at_{mark}"] = search, worker
        time.sleep(0.1)
    out["seconds"] = time.time() - started
    if peaks:
        ordered = list(peaks.values())
        out["workers"] = len(ordered)
        out["first_worker_peak"], out["last_worker_peak"] = ordered[0], ordered[-1]
    if proc.returncode != 0:
        raise SystemExit(f"search failed (exit {proc.returncode}); see {log.name}")
    out["trials"] = ended_trials(run_dir)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=55)
    parser.add_argument("--per-process", type=int, nargs="+", default=[0, 5])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-search-memory-"))
    print(f"{args.trials} trials x 1 epoch on digits; RSS in MB (search process / largest worker)")
    print("trials_per_process | after 5 trials | after the last | peak over the search | seconds")
    for per_process in args.per_process:
        r = measure(args.trials, per_process, folder)
        last = args.trials
        print(
            f"{per_process:>18} | {r.get('search_at_5', 0):6.0f} / {r.get('worker_at_5', 0):4.0f} "
            f"| {r.get(f'search_at_{last}', 0):6.0f} / {r.get(f'worker_at_{last}', 0):4.0f} "
            f"| {r['peak_search']:6.0f} / {r['peak_worker']:4.0f} | {r['seconds']:.0f}",
            flush=True,
        )
        if "workers" in r:
            print(
                f"{'':>18}   {r['workers']:.0f} worker processes: peak RSS of the first "
                f"{r['first_worker_peak']:.0f} MB, of the last {r['last_worker_peak']:.0f} MB"
            )
        print(json.dumps({"trials_per_process": per_process, **r}), flush=True)


if __name__ == "__main__":
    main()
