"""What resumability costs: the run callbacks with ``trainer.resume`` (a RunBackup every epoch)
against the same callbacks without it, side by side in one process.

    python benchmarks/bench_reliability.py [--epochs 4] [--repetitions 3]

Both sides train the cifar_softmax convnet on the CIFAR-10 sample with kerasdiag's run
callbacks (NaNStop, metrics.csv, best checkpoint, TensorBoard, early stopping); one adds the
per-epoch backup (weights and optimizer state written under a temporary name, renamed, then
state.json). The first epoch of each fit (tracing) is dropped. Target: epoch ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _timing import CIFAR_SAMPLE, EpochTimer, alternate, report  # noqa: E402

from kerasdiag.config import load_config  # noqa: E402
from kerasdiag.data import load_dataset  # noqa: E402
from kerasdiag.modeling.factory import build_model  # noqa: E402
from kerasdiag.training.pipeline import fit, training_callbacks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", default=str(CIFAR_SAMPLE))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()

    base = ["recipe=cifar_softmax", f"data.path={args.data_path}", f"trainer.epochs={args.epochs}",
            "trainer.verbose=0", "sanity=off", "monitors=off",
            "trainer.early_stopping.patience=1000"]  # fmt: skip
    configs = {
        "run callbacks, no backup": load_config([*base, "trainer.resume=false"]),
        "run callbacks + RunBackup": load_config([*base, "trainer.resume=true"]),
    }
    data = load_dataset(configs["run callbacks, no backup"].data)

    def variant(cfg):
        def run(timer: EpochTimer) -> None:
            with tempfile.TemporaryDirectory() as run_dir:
                model = build_model(cfg, data)
                callbacks = training_callbacks(cfg, Path(run_dir), data, keep_backup=True)
                fit(cfg, model, data, [*callbacks, timer])

        return run

    timers = alternate({name: variant(cfg) for name, cfg in configs.items()}, args.repetitions)
    ratios = report(timers, baseline="run callbacks, no backup")
    print(f"\nRunBackup epoch-time ratio: {ratios['run callbacks + RunBackup'][1]:.3f} "
          "(target <= 1.05)")  # fmt: skip


if __name__ == "__main__":
    main()
