"""Mutation testing of the modules whose arithmetic decides verdicts, with mutmut.

    pip install -e ".[dev,mutation]"
    python scripts/mutation_test.py                       # every module below (hours on 2 cores)
    python scripts/mutation_test.py --modules verdict expected cifar

Each module is mutated on its own (mutmut's operators: flipped comparisons and arithmetic,
changed constants and strings, dropped arguments...) and only the tests written for it run
against each mutant; a mutant is killed when a test fails. The score per module is
``killed / (mutants - mutants no test reaches)``; timeouts count as killed (the mutant broke
the behaviour badly enough to hang), and mutants no test reaches are listed with the
survivors, since an unreached line is untested too.

Why not in CI: every mutant pays a TensorFlow import (~5 s) plus its tests, so even the fast
modules take tens of minutes on 2 cores. Why a forkserver: mutmut forks one process per
mutant, and a process forked after TensorFlow ran an op deadlocks in TF's thread pools; the
forkserver only imports TensorFlow (no op has run) before it forks.

The run happens in a temporary copy of the tracked tree; ``--keep DIR`` keeps it so that
``cd DIR && mutmut show NAME`` prints the diff of a surviving mutant.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# module -> the tests that pin its behaviour (independent expectations, planted faults)
MODULE_TESTS: dict[str, tuple[str, list[str]]] = {
    "verdict": ("kerasdiag/checks/gradcheck/verdict.py", ["test_gradcheck_verdict.py"]),
    "finite_diff": ("kerasdiag/checks/gradcheck/finite_diff.py", ["test_gradcheck_finite_diff.py"]),
    "kinks": ("kerasdiag/checks/gradcheck/kinks.py", ["test_gradcheck_kinks.py"]),
    "expected": ("kerasdiag/checks/sanity/expected.py", ["test_sanity_expected.py"]),
    "cifar": (
        "kerasdiag/data/cifar.py",
        ["test_cifar_format.py", "test_security.py"],
    ),
    "diagnosis": ("kerasdiag/diagnosis/run_dir.py", ["test_diagnosis.py"]),
    "rundir": ("kerasdiag/core/rundir.py", ["test_rundir.py"]),
}
# the doctor's rules, one module per symptom family: pure functions, their tests run in
# seconds without TensorFlow
for _family in sorted((REPO / "kerasdiag" / "diagnosis" / "rules").glob("[a-z]*.py")):
    MODULE_TESTS[f"rules_{_family.stem}"] = (
        f"kerasdiag/diagnosis/rules/{_family.name}",
        ["test_doctor_rules.py"],
    )

# mutmut's exit codes (mutmut.stats.status_by_exit_code) folded into three outcomes
KILLED = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout",
          152: "timeout", 255: "timeout", -9: "killed", -11: "killed"}  # fmt: skip
UNREACHED = {5: "no tests", 33: "no tests"}


def tracked_copy(dest: Path) -> None:
    """The files git tracks (plus untracked, not ignored ones) copied to ``dest``."""
    names = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in names:
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def mutmut_config(module: str, tests: list[str]) -> str:
    return "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["kerasdiag"]',
            f'only_mutate = ["{module}"]',
            "pytest_add_cli_args_test_selection = " + json.dumps([f"tests/{t}" for t in tests]),
            'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
            'process_isolation = "forkserver"',
            'forkserver_warmup = "import"',
            'preload_modules_file = "mutation_preload.txt"',
            "",
        ]
    )


def run_module(name: str, workdir: Path, max_children: int) -> dict:
    module, tests = MODULE_TESTS[name]
    work = workdir / name
    work.mkdir(parents=True)
    tracked_copy(work)
    with open(work / "pyproject.toml", "a") as f:
        f.write(mutmut_config(module, tests))
    (work / "mutation_preload.txt").write_text("numpy\ntensorflow\nkeras\n")
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERASDIAG_CIFAR_SAMPLE": str(cifar_sample()),
        # mutmut runs the tests in mutants/, a copy of the package and tests only
        "KERASDIAG_CONF": str(work / "conf"),
        # a mutant of the CIFAR download must not leave files in the real Keras cache
        "KERAS_HOME": str(work / "keras_home"),
        "HOME": str(work / "home"),
    }
    start = time.perf_counter()
    log = work / "mutmut.log"
    with open(log, "w") as out:
        subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    meta = work / "mutants" / f"{module}.meta"
    if not meta.is_file():
        return {"name": name, "module": module, "error": f"no results; see {log}"}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    outcome = {
        key: KILLED.get(code) or UNREACHED.get(code) or ("survived" if code == 0 else str(code))
        for key, code in codes.items()
    }
    counts = Counter(outcome.values())
    reached = len(outcome) - counts["no tests"]
    detected = counts["killed"] + counts["timeout"]
    return {
        "name": name,
        "module": module,
        "mutants": len(outcome),
        "killed": counts["killed"],
        "timeout": counts["timeout"],
        "survived": counts["survived"],
        "no tests": counts["no tests"],
        "score": detected / len(outcome) if outcome else float("nan"),
        "score_reached": detected / reached if reached else float("nan"),
        "survivors": sorted(k for k, v in outcome.items() if v in ("survived", "no tests")),
        "seconds": round(time.perf_counter() - start),
    }


def cifar_sample() -> Path:
    default = REPO.parent / "shared" / "data" / "cifar10-sample" / "cifar-10-batches-py"
    return Path(os.environ.get("KERASDIAG_CIFAR_SAMPLE", default)).resolve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", choices=sorted(MODULE_TESTS),
                        default=sorted(MODULE_TESTS))  # fmt: skip
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", type=Path, help="keep the mutated copies in this folder")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if shutil.which("mutmut") is None:
        print('error: mutmut is not installed: pip install -e ".[mutation]"', file=sys.stderr)
        return 2
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="kerasdiag-mutation-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.modules:
        result = run_module(name, workdir, args.max_children)
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "survivors"}), flush=True)
    print()
    print(f"{'module':<38} {'mutants':>7} {'killed':>6} {'timeout':>7} {'survived':>8} "
          f"{'no test':>7} {'score':>6} {'seconds':>7}")  # fmt: skip
    for r in results:
        if "error" in r:
            print(f"{r['module']:<38} {r['error']}")
            continue
        print(f"{r['module']:<38} {r['mutants']:>7} {r['killed']:>6} {r['timeout']:>7} "
              f"{r['survived']:>8} {r['no tests']:>7} {r['score']:>6.1%} {r['seconds']:>7}")  # fmt: skip
    for r in results:
        if r.get("survivors"):
            print(f"\nsurvivors in {r['module']} (cd {workdir / r['name']}"
                  " && mutmut show NAME):")  # fmt: skip
            for name in r["survivors"]:
                print(f"  {name}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
