"""``cifar_fast`` against ``cifar_softmax`` on the CIFAR-10 sample: test accuracy per wall time.

    python benchmarks/bench_fast_recipe.py [--pairs 3] [-- OVERRIDES...]

Whole ``scripts/train.py`` runs side by side, alternated (``cifar_softmax`` first in odd
pairs, ``cifar_fast`` first in even ones), each with its recipe's epochs, ``sanity=off
monitors=off`` (the checks cost both the same) and the sample as ``data.path``. For each it
prints the wall and CPU time of the process and the test accuracy from ``test_metrics.json``
(``cifar_fast`` also its flip-averaged accuracy, the score its test-time flip reports), then
the medians. The claim it checks: the fast recipe scores higher in no more wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import CIFAR_SAMPLE  # noqa: E402 - a sibling module
from bench_default_run import timed  # noqa: E402

from kerasdiag.core.rundir import RunLayout  # noqa: E402

RECIPES = ("cifar_softmax", "cifar_fast")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="extra overrides for both recipes")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, float, float | None]]] = {r: [] for r in RECIPES}
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            for recipe in RECIPES if pair % 2 == 0 else RECIPES[::-1]:
                run_dir = Path(tmp) / f"{recipe}{pair}"
                wall, cpu = timed([sys.executable, "scripts/train.py", f"recipe={recipe}",
                                   f"data.path={CIFAR_SAMPLE}", "sanity=off", "monitors=off",
                                   f"hydra.run.dir={run_dir}", *args.overrides])  # fmt: skip
                scores = json.loads((run_dir / RunLayout.TEST_METRICS).read_text())
                flip = (scores.get("flip") or {}).get("accuracy")
                results[recipe].append((wall, cpu, scores["accuracy"], flip))
                print(f"pair {pair + 1} {recipe:<14} {wall:6.1f} s wall {cpu:6.1f} s CPU  test "
                      f"accuracy {scores['accuracy']:.4f}"
                      + (f" (flip-averaged {flip:.4f})" if flip is not None else ""), flush=True)  # fmt: skip
    print(f"\nmedian of {args.pairs} runs each:")
    for recipe, rows in results.items():
        wall, cpu, accuracy = (statistics.median(r[i] for r in rows) for i in range(3))
        flips = [r[3] for r in rows if r[3] is not None]
        flip = f", flip-averaged {statistics.median(flips):.4f}" if flips else ""
        print(f"  {recipe:<14} wall {wall:6.1f} s, CPU {cpu:6.1f} s, test accuracy "
              f"{accuracy:.4f}{flip}")  # fmt: skip
    fast, base = (
        statistics.median(r[0] for r in results[k]) for k in ("cifar_fast", "cifar_softmax")
    )
    print(f"  wall time cifar_fast / cifar_softmax: {fast / base:.3f}")


if __name__ == "__main__":
    main()
