"""Recipe training vs a plain hand-written ``model.fit`` of the same model and data.

    python benchmarks/bench_pipeline.py [--epochs 4] [--repetitions 3]

Both sides train the cifar_softmax convnet on the CIFAR-10 sample (or any recipe given with
``--recipe``) for the same epochs; the recipe side runs kerasdiag's tf.data pipeline and its
run callbacks (metrics.csv, best checkpoint, TensorBoard, early stopping, TerminateOnNaN),
without the sanity stages and monitors (benchmarked in bench_monitors.py). The first epoch of
each fit (tracing) is dropped. Target: ratio <= 1.05.
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
    parser.add_argument("--recipe", default="cifar_softmax")
    parser.add_argument("--data-path", default=str(CIFAR_SAMPLE))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()

    overrides = [f"recipe={args.recipe}", f"trainer.epochs={args.epochs}", "trainer.verbose=0",
                 "sanity=off", "monitors=off", "trainer.early_stopping.patience=1000"]  # fmt: skip
    if args.recipe.startswith("cifar"):
        overrides.append(f"data.path={args.data_path}")
    cfg = load_config(overrides)
    data = load_dataset(cfg.data)

    def recipe_fit(timer: EpochTimer) -> None:
        with tempfile.TemporaryDirectory() as run_dir:
            model = build_model(cfg, data)
            fit(cfg, model, data, [*training_callbacks(cfg, Path(run_dir), data), timer])

    def recipe_pipeline_only(timer: EpochTimer) -> None:
        fit(cfg, build_model(cfg, data), data, [timer])

    def plain_fit(timer: EpochTimer) -> None:
        model = build_model(cfg, data)  # same architecture, optimizer and loss
        model.fit(
            data.x_train, data.y_train, batch_size=int(cfg.data.batch_size),
            epochs=args.epochs, validation_data=(data.x_val, data.y_val),
            callbacks=[timer], verbose=0,
        )  # fmt: skip

    print(f"{args.recipe}: {len(data.y_train)} training images, batch {cfg.data.batch_size}, "
          f"{args.epochs} epochs x {args.repetitions} repetitions (first epoch dropped)")  # fmt: skip
    variants = {
        "plain model.fit": plain_fit,
        "recipe (tf.data, no callbacks)": recipe_pipeline_only,
        "recipe (all run callbacks)": recipe_fit,
    }
    ratios = report(alternate(variants, args.repetitions), baseline="plain model.fit")
    steps_ratio, epoch_ratio = ratios["recipe (all run callbacks)"]
    print(
        f"\ntraining steps ratio {steps_ratio:.3f} (target <= 1.05); whole epochs incl. "
        f"validation and checkpoint writes {epoch_ratio:.3f}"
    )


if __name__ == "__main__":
    main()
