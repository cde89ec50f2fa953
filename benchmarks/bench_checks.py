"""What each check beyond the notes costs, in seconds, next to a training epoch.

    python benchmarks/bench_checks.py [--recipes digits_softmax cifar_softmax] [--repeat 2]

First the leakage check on CIFAR-10-sized splits (50,000 + 10,000 rows). Then, for each
recipe (its data, model and batch size): the leakage and split-shift data checks, the
input-independent baseline, batch independence, the learning-rate range test and the
TrainingDoctor's init-scale judgement without probe data, each timed as a run calls it
(copies and tracing included), the best of ``--repeat``; and one training epoch of the
recipe (the median of epochs 2-3) for scale.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _timing import CIFAR_SAMPLE, EpochTimer  # noqa: E402

from kerasdiag.callbacks.weight_checks import init_scale_findings  # noqa: E402
from kerasdiag.checks.data import check_leakage, check_split_shift  # noqa: E402
from kerasdiag.checks.lr_range import find_learning_rate  # noqa: E402
from kerasdiag.checks.sanity.baseline import check_input_dependence  # noqa: E402
from kerasdiag.checks.sanity.batch_independence import check_batch_independence  # noqa: E402
from kerasdiag.config import load_config  # noqa: E402
from kerasdiag.data import load_dataset  # noqa: E402
from kerasdiag.modeling.factory import build_model  # noqa: E402
from kerasdiag.training.pipeline import fit  # noqa: E402


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["digits_softmax", "cifar_softmax"])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x_train = rng.random((50000, 32, 32, 3), dtype=np.float32)
    x_test = rng.random((10000, 32, 32, 3), dtype=np.float32)
    seconds = best_of(args.repeat, lambda: check_leakage(x_train=x_train, x_test=x_test))
    print(f"leakage check at CIFAR-10 scale (50,000 + 10,000 float32 rows): {seconds:.2f} s")
    rows = []
    for recipe in args.recipes:
        rows.append(measure(recipe, args.repeat))
        print_table(rows)


def measure(recipe: str, repeat: int) -> tuple:
    """(recipe, seconds per epoch, epochs, {check: seconds}) for one recipe."""
    overrides = [f"recipe={recipe}", "trainer.verbose=0", "trainer.epochs=3"]
    if recipe.startswith("cifar"):
        overrides.append(f"data.path={CIFAR_SAMPLE}")
    cfg = load_config(overrides)
    data = load_dataset(cfg.data)
    model = build_model(cfg, data)
    batch = int(cfg.data.batch_size)
    costs = {
        "leakage": best_of(repeat, lambda: check_leakage(data)),
        "split_shift": best_of(repeat, lambda: check_split_shift(data)),
        "input_baseline": best_of(repeat, lambda: check_input_dependence(model, data)),
        "batch_independence": best_of(repeat, lambda: check_batch_independence(model, data)),
        "lr_range": best_of(repeat, lambda: find_learning_rate(model, data, batch_size=batch)),
        "doctor_init_scale": best_of(repeat, lambda: init_scale_findings(model)),
    }
    timer = EpochTimer()
    fit(cfg, build_model(cfg, data), data, [timer])
    return recipe, statistics.median(timer.epochs[1:]), int(cfg.trainer.epochs), costs


def print_table(rows) -> None:
    names = list(rows[0][3])
    print("\ncheck                 " + "  ".join(f"{r[0]:>22s}" for r in rows))
    for name in names:
        cells = []
        for _recipe, epoch, _epochs, costs in rows:
            cells.append(f"{costs[name]:8.3f} s ({costs[name] / epoch:5.2f} ep)")
        print(f"{name:20s}  " + "  ".join(f"{c:>22s}" for c in cells))
    print("one epoch             " + "  ".join(f"{r[1]:20.2f} s" for r in rows))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
